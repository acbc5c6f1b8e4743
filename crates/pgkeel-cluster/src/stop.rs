//! `pgkeel down` and `pgkeel destroy`.

use pgkeel_core::status::Role;
use pgkeel_pg::pgctl::{StopMode, is_standby, running_pid, stop};

use crate::{Cluster, ClusterError};

impl Cluster {
    /// Stops every running node cleanly: the primary first, so its WAL
    /// senders ship all remaining WAL (including the shutdown checkpoint)
    /// to the standbys before they stop. Returns the nodes it stopped.
    pub async fn down(&self) -> Result<Vec<String>, ClusterError> {
        let mut order: Vec<_> = self.nodes().iter().collect();
        order.sort_by_key(|n| {
            let standby = is_standby(&self.layout.data_dir(n.name.as_str()));
            if standby {
                Role::Replica as u8
            } else {
                Role::Primary as u8
            }
        });
        let mut stopped = vec![];
        for node in order {
            let name = node.name.as_str();
            let data = self.layout.data_dir(name);
            if running_pid(&data).is_some() {
                stop(&self.runner, name, &data, StopMode::Fast).await?;
                stopped.push(name.to_string());
            }
        }
        Ok(stopped)
    }

    /// Stops every node (forcefully if a clean stop fails) and removes the
    /// data root. Only a directory holding pgkeel's `cluster.toml` is ever
    /// removed.
    pub async fn destroy(&self) -> Result<(), ClusterError> {
        if self.down().await.is_err() {
            for node in self.nodes() {
                let data = self.layout.data_dir(node.name.as_str());
                if running_pid(&data).is_some() {
                    stop(&self.runner, node.name.as_str(), &data, StopMode::Immediate).await?;
                }
            }
        }
        let root = self.layout.root();
        if !self.layout.cluster_file().exists() {
            return Err(ClusterError::NoCluster {
                dir: root.to_path_buf(),
            });
        }
        std::fs::remove_dir_all(root).map_err(|e| ClusterError::io("remove", root, e))
    }
}

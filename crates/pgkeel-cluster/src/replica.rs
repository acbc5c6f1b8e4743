//! Making a node a streaming replica: slot on the primary, clone, config.

use std::sync::Arc;

use pgkeel_core::NodeConfig;
use pgkeel_pg::basebackup::{CloneSource, clone_from};
use pgkeel_pg::fsutil::ensure_dir;
use pgkeel_pg::pgctl::is_data_dir;

use crate::render::NodeRole;
use crate::{Cluster, ClusterError, Progress};

impl Cluster {
    /// Creates the node's own directory and private socket directory.
    pub fn ensure_node_dirs(&self, node: &str) -> Result<(), ClusterError> {
        let owner = self.os_user();
        ensure_dir(&self.layout.node_dir(node), owner, 0o700)?;
        ensure_dir(&self.layout.socket_dir(node), owner, 0o700)?;
        Ok(())
    }

    /// Removes what an interrupted build of `node`'s data left behind. Only
    /// called for nodes whose data is not complete, inside pgkeel's own root.
    pub fn discard_incomplete(&self, node: &str) -> Result<(), ClusterError> {
        let partial = self.layout.partial_dir(node);
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .map_err(|e| ClusterError::io("remove", &partial, e))?;
        }
        let new = self.layout.initdb_dir(node);
        if new.exists() {
            std::fs::remove_dir_all(&new).map_err(|e| ClusterError::io("remove", &new, e))?;
        }
        let data = self.layout.data_dir(node);
        if data.exists() && !is_data_dir(&data) {
            std::fs::remove_dir_all(&data).map_err(|e| ClusterError::io("remove", &data, e))?;
        }
        Ok(())
    }

    /// Clones `node` from `primary` unless it already has complete data.
    /// The copy is built in `data.partial` and renamed to `data` only once
    /// it is complete and configured, so an interrupted clone never leaves a
    /// node that looks healthy: the next `up` discards it and clones again.
    /// Returns whether a clone was made.
    pub async fn ensure_replica_data(
        &self,
        node: &NodeConfig,
        primary: &NodeConfig,
        progress: Arc<dyn Progress>,
    ) -> Result<bool, ClusterError> {
        let name = node.name.as_str();
        let data = self.layout.data_dir(name);
        if is_data_dir(&data) {
            return Ok(false);
        }
        self.discard_incomplete(name)?;
        self.ensure_node_dirs(name)?;
        let partial = self.layout.partial_dir(name);
        let passfile = self.layout.replication_passfile();
        progress.step(name, &format!("cloning from {}", primary.name));
        let source = CloneSource {
            host: &primary.host,
            port: primary.port,
            user: &self.config.roles.replication,
            passfile: &passfile,
            slot: name,
            application_name: &format!("{name}_clone"),
        };
        let reporter = progress.clone();
        clone_from(&self.runner, name, &source, &partial, move |done, total| {
            reporter.clone_progress(name, done, total)
        })
        .await?;
        progress.clone_done(name);
        self.write_node_config(
            node,
            &partial,
            NodeRole::Standby {
                upstream: Some(primary),
            },
        )?;
        std::fs::rename(&partial, &data)
            .map_err(|e| ClusterError::io("rename into place", &data, e))?;
        Ok(true)
    }
}

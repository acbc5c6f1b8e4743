//! A new cluster's first data directory: initdb, pgkeel's configuration,
//! and the roles and database every node then inherits.

use pgkeel_core::NodeConfig;
use pgkeel_pg::basebackup::{CloneSource, clone_from};
use pgkeel_pg::pgctl::{initdb, is_data_dir};
use pgkeel_pg::secrets::read_password;

use crate::layout::Secret;
use crate::render::NodeRole;
use crate::{Cluster, ClusterError};

impl Cluster {
    /// Runs initdb for `node` into `data.partial`, writes its configuration
    /// as a primary, then renames it to `data.new`: a complete directory
    /// that is not yet the node's data (the agents record its system
    /// identifier in etcd first). Discards any earlier attempt.
    pub async fn initdb_new(&self, node: &NodeConfig) -> Result<(), ClusterError> {
        let name = node.name.as_str();
        self.discard_incomplete(name)?;
        self.ensure_node_dirs(name)?;
        let partial = self.layout.partial_dir(name);
        self.with_initdb_password(|pwfile| async move {
            initdb(&self.runner, name, &partial, &self.superuser, &pwfile).await?;
            Ok(())
        })
        .await?;
        let partial = self.layout.partial_dir(name);
        self.write_node_config(node, &partial, NodeRole::Primary { sync_names: "" })?;
        let new = self.layout.initdb_dir(name);
        std::fs::rename(&partial, &new).map_err(|e| ClusterError::io("rename into place", &new, e))
    }

    /// A standby cluster's first data: a copy of the primary cluster it
    /// follows (`pg_basebackup` from `[standby_cluster]`, no slot there),
    /// configured as a standby of it, in `data.new` like an initdb's.
    pub async fn clone_source_new(&self, node: &NodeConfig) -> Result<(), ClusterError> {
        let source = self
            .standby_source()
            .ok_or_else(|| ClusterError::NoPrimary {
                detail: "not a standby cluster: [standby_cluster] is not configured".into(),
            })?;
        let name = node.name.as_str();
        self.discard_incomplete(name)?;
        self.ensure_node_dirs(name)?;
        let partial = self.layout.partial_dir(name);
        let passfile = self.layout.replication_passfile();
        let from = CloneSource {
            host: &source.host,
            port: source.port,
            user: &self.config.roles.replication,
            passfile: &passfile,
            slot: None,
            application_name: &format!("{name}_clone"),
        };
        clone_from(&self.runner, name, &from, &partial, |_, _| {}).await?;
        self.write_node_config(
            node,
            &partial,
            NodeRole::Standby {
                upstream: Some(&source),
            },
        )?;
        let new = self.layout.initdb_dir(name);
        std::fs::rename(&partial, &new).map_err(|e| ClusterError::io("rename into place", &new, e))
    }

    /// Makes `data.new` the node's data.
    pub fn move_initdb_into_place(&self, node: &NodeConfig) -> Result<(), ClusterError> {
        let name = node.name.as_str();
        let new = self.layout.initdb_dir(name);
        let data = self.layout.data_dir(name);
        if !is_data_dir(&new) {
            return Err(ClusterError::io(
                "move into place",
                &new,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no complete initdb there"),
            ));
        }
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| ClusterError::io("remove", &data, e))?;
        }
        std::fs::rename(&new, &data).map_err(|e| ClusterError::io("rename into place", &data, e))
    }

    /// Roles with their generated passwords, the application database, and
    /// one slot per other member, on the running primary. Idempotent.
    pub async fn prepare_primary(&self, primary: &NodeConfig) -> Result<(), ClusterError> {
        let conn = self.connect(primary).await?;
        let roles = &self.config.roles;
        let layout = &self.layout;
        let repl_password = read_password(&layout.password_file(Secret::Replication))?;
        let app_password = read_password(&layout.password_file(Secret::App))?;
        conn.ensure_login_role(&roles.replication, &repl_password, "REPLICATION")
            .await?;
        conn.ensure_login_role(
            &roles.app,
            &app_password,
            "NOSUPERUSER NOCREATEDB NOCREATEROLE",
        )
        .await?;
        conn.ensure_database(&roles.database, &roles.app).await?;
        for node in self.nodes().iter().filter(|n| n.name != primary.name) {
            conn.ensure_physical_slot(node.name.as_str()).await?;
        }
        self.prepare_backup_repository(primary).await
    }
}

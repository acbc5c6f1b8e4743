//! Making a node a streaming replica: its data restored from the backup
//! repository or cloned from the primary, then its configuration.

use std::path::Path;
use std::sync::Arc;

use pgkeel_backup::{BackupEngine, RestoreTarget};
use pgkeel_core::NodeConfig;
use pgkeel_core::config::STANDBY_SOURCE;
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
        self.discard_leftovers(node, false)
    }

    /// Removes an unfinished initdb, an incomplete data directory and,
    /// unless `keep_partial_data` and it holds a data directory (a delta
    /// restore reuses its files), `data.partial`.
    fn discard_leftovers(&self, node: &str, keep_partial_data: bool) -> Result<(), ClusterError> {
        let partial = self.layout.partial_dir(node);
        if partial.exists() && !(keep_partial_data && partial.join("PG_VERSION").is_file()) {
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

    /// Moves `node`'s stopped data directory aside as the starting point
    /// of its rebuild: a restore from the repository then rewrites only the
    /// files that differ (delta). A stale `postmaster.pid` left by a crash
    /// goes (the server is stopped: the caller fenced it). With no data
    /// directory, what was set aside before stays.
    pub fn set_aside_for_rebuild(&self, node: &str) -> Result<(), ClusterError> {
        let data = self.layout.data_dir(node);
        if !data.exists() {
            return Ok(());
        }
        let partial = self.layout.partial_dir(node);
        if partial.exists() {
            std::fs::remove_dir_all(&partial)
                .map_err(|e| ClusterError::io("remove", &partial, e))?;
        }
        std::fs::rename(&data, &partial)
            .map_err(|e| ClusterError::io("set aside for rebuild", &partial, e))?;
        let pid = partial.join("postmaster.pid");
        if pid.exists() {
            std::fs::remove_file(&pid).map_err(|e| ClusterError::io("remove", &pid, e))?;
        }
        Ok(())
    }

    /// Builds `node`'s data as a replica of `primary` unless it already has
    /// complete data. With `from_repository` (the caller flushed the
    /// primary's newest WAL into the archive: see
    /// [`crate::archive_flush`]), from the backup repository when it holds
    /// a backup (the primary reads nothing; the replica replays the
    /// archive, then streams); else, or when the repository cannot serve,
    /// with pg_basebackup from the primary. The copy is built in `data.partial`
    /// and renamed to `data` only once it is complete and configured, so an
    /// interrupted build never leaves a node that looks healthy: the next
    /// attempt starts again (reusing what it can). Returns how the data was
    /// built, `None` when it already existed.
    pub async fn ensure_replica_data(
        &self,
        node: &NodeConfig,
        primary: &NodeConfig,
        from_repository: bool,
        progress: Arc<dyn Progress>,
    ) -> Result<Option<ReplicaSource>, ClusterError> {
        let name = node.name.as_str();
        let data = self.layout.data_dir(name);
        if is_data_dir(&data) {
            return Ok(None);
        }
        self.discard_leftovers(name, true)?;
        self.ensure_node_dirs(name)?;
        let partial = self.layout.partial_dir(name);
        let restored = if from_repository {
            self.restore_replica(name, &partial, progress.as_ref())
                .await?
        } else {
            None
        };
        let source = match restored {
            Some((label, delta)) => ReplicaSource::Repository { label, delta },
            None => {
                self.clone_replica(node, primary, &partial, progress)
                    .await?;
                ReplicaSource::Primary
            }
        };
        self.write_node_config(
            node,
            &partial,
            NodeRole::Standby {
                upstream: Some(primary),
            },
        )?;
        std::fs::rename(&partial, &data)
            .map_err(|e| ClusterError::io("rename into place", &data, e))?;
        Ok(Some(source))
    }

    /// Restores the repository's newest backup into `partial` as a standby
    /// (a delta restore when `partial` already holds a data directory).
    /// Returns the backup's label and whether the restore was a delta;
    /// `None` when there is no repository or backup, or the restore failed
    /// (logged: the caller clones instead).
    async fn restore_replica(
        &self,
        name: &str,
        partial: &Path,
        progress: &dyn Progress,
    ) -> Result<Option<(String, bool)>, ClusterError> {
        let Some(engine) = self.backup_engine()? else {
            return Ok(None);
        };
        let newest = match engine.info().await {
            Ok(info) => info.newest(None).map(|b| b.label.clone()),
            Err(e) => {
                tracing::warn!(node = name, error = %e, "backup repository unreadable: cloning from the primary");
                None
            }
        };
        let Some(label) = newest else {
            tracing::info!(
                node = name,
                "no backup in the repository yet: cloning from the primary"
            );
            return Ok(None);
        };
        let delta = partial.join("PG_VERSION").is_file();
        ensure_dir(partial, self.os_user(), 0o700)?;
        progress.step(
            name,
            &format!(
                "restoring backup {label} from the repository{}",
                if delta {
                    " (delta: unchanged files kept)"
                } else {
                    ""
                }
            ),
        );
        match engine
            .restore(name, &label, &RestoreTarget::Standby, partial, delta)
            .await
        {
            Ok(()) => {
                tracing::info!(node = name, backup = %label, delta, "replica restored from the repository");
                Ok(Some((label, delta)))
            }
            Err(e) => {
                tracing::warn!(node = name, backup = %label, error = %e, "restore from the repository failed: cloning from the primary");
                progress.step(
                    name,
                    "the repository could not serve: cloning from the primary",
                );
                std::fs::remove_dir_all(partial)
                    .map_err(|e| ClusterError::io("remove", partial, e))?;
                Ok(None)
            }
        }
    }

    /// pg_basebackup from `primary` into the empty `partial`.
    async fn clone_replica(
        &self,
        node: &NodeConfig,
        primary: &NodeConfig,
        partial: &Path,
        progress: Arc<dyn Progress>,
    ) -> Result<(), ClusterError> {
        let name = node.name.as_str();
        if partial.exists() {
            std::fs::remove_dir_all(partial).map_err(|e| ClusterError::io("remove", partial, e))?;
        }
        let passfile = self.layout.replication_passfile();
        progress.step(name, &format!("cloning from {}", primary.name));
        let source = CloneSource {
            host: &primary.host,
            port: primary.port,
            user: &self.config.roles.replication,
            passfile: &passfile,
            // Another cluster keeps no slot for this one's leader.
            slot: (primary.name.as_str() != STANDBY_SOURCE).then_some(name),
            application_name: &format!("{name}_clone"),
        };
        let reporter = progress.clone();
        clone_from(&self.runner, name, &source, partial, move |done, total| {
            reporter.clone_progress(name, done, total)
        })
        .await?;
        progress.clone_done(name);
        Ok(())
    }
}

/// Where a replica's data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaSource {
    /// Restored from this backup in the repository.
    Repository {
        /// The backup's label.
        label: String,
        /// Files the node already had were kept where they matched.
        delta: bool,
    },
    /// Cloned from the primary with pg_basebackup.
    Primary,
}

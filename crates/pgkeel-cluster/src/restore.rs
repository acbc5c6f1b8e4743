//! Point-in-time recovery into a new cluster: a backup of one cluster,
//! restored and replayed to a target as the first node of another, which
//! then gets a system identifier of its own. The new cluster's agents
//! adopt it as their primary and clone its replicas; nothing of the new
//! cluster ever writes into the old cluster's archive or etcd keys.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgkeel_backup::{BackupEngine, BackupInfo, RestoreTarget};
use pgkeel_core::NodeConfig;
use pgkeel_pg::control::{give_new_system_identifier, read_system_identifier};
use pgkeel_pg::fsutil::{ensure_dir, write_owned};
use pgkeel_pg::pgctl::{self, StopMode, running_pid};
use pgkeel_pg::run::tail;
use serde::Serialize;

use crate::archive_flush::flush_archive_on;
use crate::render::NodeRole;
use crate::skeleton::{BACKUP_CIPHER, S3_KEY, S3_KEY_SECRET};
use crate::{Cluster, ClusterError, Progress};

/// What a restore into a new cluster did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub label: String,
    /// The target as PostgreSQL read it (`latest`, a time, an LSN).
    pub target: String,
    /// The node that holds the restored data (the new primary).
    pub node: String,
    /// The source cluster's system identifier.
    pub source_system_id: Option<u64>,
    /// The new cluster's own.
    pub system_id: u64,
    /// Seconds from the start of the restore to a promoted copy.
    pub restore_seconds: f64,
    /// The newest commit replayed (seconds since the epoch), when WAL
    /// beyond the backup was replayed.
    pub newest_commit: Option<f64>,
    /// Where the copy's history ends.
    pub end_lsn: String,
}

impl Cluster {
    /// Makes the running `primary`'s newest WAL restorable
    /// ([`flush_archive_on`]).
    pub async fn flush_archive(&self, primary: &NodeConfig) -> Result<(), ClusterError> {
        let conn = self.connect(primary).await?;
        flush_archive_on(&conn, primary.name.as_str()).await
    }

    /// Restores `backup` from `engine` (the source cluster's repository)
    /// to `target` as this new cluster's first node: replayed and promoted
    /// on a private socket with archiving off, stopped cleanly, given a new
    /// system identifier and pgkeel's configuration for this cluster, then
    /// moved into place. The cluster's skeleton (secrets, `cluster.toml`)
    /// exists; its agents start afterwards and adopt the data.
    pub async fn restore_as_new_primary<E: BackupEngine + Sync>(
        &self,
        engine: &E,
        backup: &BackupInfo,
        target: &RestoreTarget,
        progress: &dyn Progress,
    ) -> Result<RestoreReport, ClusterError> {
        let node = self
            .config
            .bootstrap_primary()
            .ok_or_else(|| ClusterError::NoPrimary {
                detail: "the configuration lists no nodes".into(),
            })?;
        let name = node.name.as_str();
        self.discard_incomplete(name)?;
        self.ensure_node_dirs(name)?;
        let partial = self.layout.partial_dir(name);
        ensure_dir(&partial, self.os_user(), 0o700)?;
        let recovered = self
            .recover_privately(engine, node, &partial, backup, target, false, progress)
            .await?;
        progress.step(name, "giving the copy a system identifier of its own");
        let source_system_id = read_system_identifier(&partial)?;
        let system_id = give_new_system_identifier(&self.runner, name, &partial).await?;
        self.write_node_config(node, &partial, NodeRole::Primary { sync_names: "" })?;
        let data = self.layout.data_dir(name);
        std::fs::rename(&partial, &data)
            .map_err(|e| ClusterError::io("rename into place", &data, e))?;
        Ok(recovered.report(backup, target, name, source_system_id, system_id))
    }

    /// Takes this (stopped) cluster back to `target`: the primary's data
    /// directory restored from `backup` with a delta (unchanged files
    /// kept), replayed and promoted onto a new timeline on a private
    /// socket, stopped cleanly, the new timeline's history file archived;
    /// every replica's data set aside for its agent to rebuild (a delta
    /// restore from the repository). The system identifier stays: the
    /// cluster keeps its etcd identity and its stanza, and the discarded
    /// history stays in the archive on its old timeline.
    pub async fn restore_in_place<E: BackupEngine + Sync>(
        &self,
        engine: &E,
        primary: &NodeConfig,
        backup: &BackupInfo,
        target: &RestoreTarget,
        progress: &dyn Progress,
    ) -> Result<RestoreReport, ClusterError> {
        let running: Vec<String> = self
            .nodes()
            .iter()
            .filter(|n| running_pid(&self.layout.data_dir(n.name.as_str())).is_some())
            .map(|n| n.name.to_string())
            .collect();
        if !running.is_empty() {
            return Err(ClusterError::StillRunning {
                nodes: running.join(", "),
            });
        }
        for node in self.nodes().iter().filter(|n| n.name != primary.name) {
            progress.step(
                node.name.as_str(),
                "data set aside: rebuilt when the agents start",
            );
            self.set_aside_for_rebuild(node.name.as_str())?;
        }
        let name = primary.name.as_str();
        let data = self.layout.data_dir(name);
        let stale = data.join("postmaster.pid");
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| ClusterError::io("remove", &stale, e))?;
        }
        let recovered = self
            .recover_privately(engine, primary, &data, backup, target, true, progress)
            .await?;
        // Promoted with archiving off: the new timeline's history file is
        // pushed by hand, or a later restore could not follow it.
        let history = newest_history_file(&data.join("pg_wal"))?;
        if let Some(file) = &history {
            progress.step(name, "archiving the new timeline's history file");
            engine.archive_push(&self.pg_target(primary), file).await?;
        }
        self.write_node_config(primary, &data, NodeRole::Primary { sync_names: "" })?;
        let system_id = read_system_identifier(&data)?.unwrap_or_default();
        Ok(recovered.report(backup, target, name, Some(system_id), system_id))
    }

    /// Restores `backup` into `dir` for `node` (`delta`: over an existing
    /// data directory), starts it on the node's private socket with no TCP
    /// and archiving off (the restored `postgresql.conf` may be another
    /// cluster's: its port, its archive), waits until it has reached
    /// `target` and promoted, and stops it cleanly.
    #[allow(clippy::too_many_arguments)]
    async fn recover_privately<E: BackupEngine + Sync>(
        &self,
        engine: &E,
        node: &NodeConfig,
        dir: &Path,
        backup: &BackupInfo,
        target: &RestoreTarget,
        delta: bool,
        progress: &dyn Progress,
    ) -> Result<Recovered, ClusterError> {
        let name = node.name.as_str();
        let started = Instant::now();
        progress.step(
            name,
            &format!(
                "restoring backup {} ({} MB of data{})",
                backup.label,
                backup.database_bytes / (1024 * 1024),
                if delta { ", delta" } else { "" }
            ),
        );
        engine
            .restore(name, &backup.label, target, dir, delta)
            .await?;
        let options = [
            "-c listen_addresses=''".to_string(),
            format!("-c port={}", node.port),
            format!(
                "-c unix_socket_directories='{}'",
                self.layout.socket_dir(name).display()
            ),
            "-c archive_mode=off".into(),
            "-c synchronous_standby_names=''".into(),
            format!("-c cluster_name='{}'", self.config.cluster.name),
        ]
        .join(" ");
        progress.step(name, "replaying WAL to the target");
        let log = self.layout.log_file(name);
        pgctl::start_with_options(&self.runner, name, dir, &log, &options).await?;
        let replayed = self.wait_promoted(node, dir).await;
        let stopped = pgctl::stop(&self.runner, name, dir, StopMode::Fast).await;
        let (newest_commit, end_lsn) = replayed?;
        stopped?;
        Ok(Recovered {
            seconds: started.elapsed().as_secs_f64(),
            newest_commit,
            end_lsn,
        })
    }

    /// Waits until the restored `node` has reached its target and
    /// promoted itself; returns its newest replayed commit and its end of
    /// WAL. A server that stops instead (the target could not be reached)
    /// is an error carrying its log.
    async fn wait_promoted(
        &self,
        node: &NodeConfig,
        data: &Path,
    ) -> Result<(Option<f64>, String), ClusterError> {
        let name = node.name.as_str();
        let sql = |what| sql_error(name, what);
        loop {
            if running_pid(data).is_none() {
                return Err(ClusterError::RecoveryFailed {
                    node: name.to_string(),
                    log: self.layout.log_file(name),
                    tail: std::fs::read_to_string(self.layout.log_file(name))
                        .map(|text| tail(&text, 12))
                        .unwrap_or_default(),
                });
            }
            // The server may be stopping because the target is out of reach:
            // the check above then names that.
            let Ok(conn) = self.connect(node).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let recovering: bool = conn
                .client()
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(sql("recovery state"))?
                .get(0);
            if !recovering {
                let row = conn
                    .client()
                    .query_one(
                        "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8, \
                                pg_current_wal_lsn()::text",
                        &[],
                    )
                    .await
                    .map_err(sql("end of recovery"))?;
                return Ok((row.get(0), row.get(1)));
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a private recovery gave.
struct Recovered {
    seconds: f64,
    newest_commit: Option<f64>,
    end_lsn: String,
}

impl Recovered {
    fn report(
        self,
        backup: &BackupInfo,
        target: &RestoreTarget,
        node: &str,
        source_system_id: Option<u64>,
        system_id: u64,
    ) -> RestoreReport {
        RestoreReport {
            label: backup.label.clone(),
            target: target_text(target),
            node: node.to_string(),
            source_system_id,
            system_id,
            restore_seconds: self.seconds,
            newest_commit: self.newest_commit,
            end_lsn: self.end_lsn,
        }
    }
}

/// The newest timeline history file (`00000003.history`) in `pg_wal`.
fn newest_history_file(pg_wal: &Path) -> Result<Option<PathBuf>, ClusterError> {
    let entries = std::fs::read_dir(pg_wal).map_err(|e| ClusterError::io("read", pg_wal, e))?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 16 && n.ends_with(".history"))
        })
        .max())
}

/// A query on `node` failed while doing `what`.
fn sql_error(node: &str, what: &'static str) -> impl Fn(tokio_postgres::Error) -> ClusterError {
    move |source| {
        ClusterError::Pg(pgkeel_pg::PgError::Sql {
            node: node.to_string(),
            what,
            source,
        })
    }
}

/// The target as the report shows it.
fn target_text(target: &RestoreTarget) -> String {
    match target {
        RestoreTarget::EndOfBackup => "end of backup".into(),
        RestoreTarget::Latest => "latest".into(),
        RestoreTarget::Time(t) => t.clone(),
        RestoreTarget::Lsn(l) => l.clone(),
        RestoreTarget::Standby => "standby".into(),
    }
}

/// The secrets a restored copy shares with its source: the roles'
/// passwords (their verifiers are in the restored catalog) and the
/// repository's keys (the same repository). The API token and etcd's
/// certificates are the new cluster's own.
const SHARED_SECRETS: [&str; 6] = [
    "superuser.password",
    "replication.password",
    "app.password",
    BACKUP_CIPHER,
    S3_KEY,
    S3_KEY_SECRET,
];

impl Cluster {
    /// Copies into this (new) cluster's secrets directory the secrets its
    /// data shares with `source` (0600, owned by the OS user); the others
    /// are generated by `ensure_skeleton`.
    pub fn copy_shared_secrets(&self, source: &Cluster) -> Result<(), ClusterError> {
        let to = self.layout.secrets_dir();
        ensure_dir(&to, self.os_user(), 0o700)?;
        for name in SHARED_SECRETS {
            let from = source.layout.secrets_dir().join(name);
            match std::fs::read_to_string(&from) {
                Ok(value) => write_owned(&to.join(name), &value, self.os_user(), 0o600)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ClusterError::io("read", &from, e)),
            }
        }
        Ok(())
    }
}

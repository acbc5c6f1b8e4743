//! Point-in-time recovery into a new cluster: a backup of one cluster,
//! restored and replayed to a target as the first node of another, which
//! then gets a system identifier of its own. The new cluster's agents
//! adopt it as their primary and clone its replicas; nothing of the new
//! cluster ever writes into the old cluster's archive or etcd keys.

use std::time::{Duration, Instant};

use pgkeel_backup::{BackupEngine, BackupInfo, RestoreTarget};
use pgkeel_core::NodeConfig;
use pgkeel_pg::control::{give_new_system_identifier, read_system_identifier};
use pgkeel_pg::fsutil::{ensure_dir, write_owned};
use pgkeel_pg::pgctl::{self, StopMode, running_pid};
use pgkeel_pg::run::tail;
use serde::Serialize;

use crate::render::NodeRole;
use crate::skeleton::{BACKUP_CIPHER, S3_KEY, S3_KEY_SECRET};
use crate::{Cluster, ClusterError, Progress};

/// Longest wait for the primary's newest WAL to reach the archive.
const ARCHIVE_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// Makes the running `primary`'s newest WAL restorable: a commit
    /// stamped now (so a restore to any earlier time finds the commit that
    /// ends it), a switch to a new segment, then a wait until the archiver
    /// has taken the finished one.
    pub async fn flush_archive(&self, primary: &NodeConfig) -> Result<(), ClusterError> {
        let name = primary.name.as_str();
        let conn = self.connect(primary).await?;
        let sql = |what| sql_error(name, what);
        conn.client()
            .batch_execute("SELECT pg_current_xact_id()")
            .await
            .map_err(sql("a commit stamped now"))?;
        let segment: String = conn
            .client()
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .await
            .map_err(sql("WAL switch"))?
            .get(0);
        let ready = self
            .layout
            .data_dir(name)
            .join("pg_wal/archive_status")
            .join(format!("{segment}.ready"));
        let started = Instant::now();
        while ready.exists() {
            if started.elapsed() > ARCHIVE_FLUSH_TIMEOUT {
                return Err(ClusterError::ArchiveBehind {
                    node: name.to_string(),
                    segment,
                    waited: ARCHIVE_FLUSH_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
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
        let started = Instant::now();
        progress.step(
            name,
            &format!(
                "restoring backup {} ({} MB of data)",
                backup.label,
                backup.database_bytes / (1024 * 1024)
            ),
        );
        engine
            .restore(name, &backup.label, target, &partial, false)
            .await?;
        // The restored postgresql.conf is the source node's: its port,
        // its archive. Overridden until pgkeel writes this cluster's own.
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
        pgctl::start_with_options(&self.runner, name, &partial, &log, &options).await?;
        let replayed = self.wait_promoted(node).await;
        let stopped = pgctl::stop(&self.runner, name, &partial, StopMode::Fast).await;
        let (newest_commit, end_lsn) = replayed?;
        stopped?;
        let restore_seconds = started.elapsed().as_secs_f64();
        progress.step(name, "giving the copy a system identifier of its own");
        let source_system_id = read_system_identifier(&partial)?;
        let system_id = give_new_system_identifier(&self.runner, name, &partial).await?;
        self.write_node_config(node, &partial, NodeRole::Primary { sync_names: "" })?;
        let data = self.layout.data_dir(name);
        std::fs::rename(&partial, &data)
            .map_err(|e| ClusterError::io("rename into place", &data, e))?;
        Ok(RestoreReport {
            label: backup.label.clone(),
            target: target_text(target),
            node: name.to_string(),
            source_system_id,
            system_id,
            restore_seconds,
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
    ) -> Result<(Option<f64>, String), ClusterError> {
        let name = node.name.as_str();
        let data = self.layout.partial_dir(name);
        let sql = |what| sql_error(name, what);
        loop {
            if running_pid(&data).is_none() {
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

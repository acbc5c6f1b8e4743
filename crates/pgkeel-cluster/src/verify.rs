//! Backups proven restorable. Each backup pgkeel takes carries a
//! fingerprint: a random marker row written on the primary just before the
//! backup starts (so every restore of it must contain that row) and
//! recorded as the backup's annotation. `verify` restores a backup into a
//! scratch directory, starts it on a private socket with archiving off,
//! checks the marker, runs `pg_amcheck` on every database, measures the
//! restore time and the newest restorable commit, and removes the copy.
//!
//! User tables are not compared: a backup is taken while writes go on, so
//! no count read on the primary matches the restored state exactly; the
//! marker, which nobody else writes, does.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pgkeel_backup::{BackupEngine, BackupError, BackupInfo, BackupKind, PgTarget, RestoreTarget};
use pgkeel_core::NodeConfig;
use pgkeel_pg::fsutil::ensure_dir;
use pgkeel_pg::pgctl::{self, StopMode};
use pgkeel_pg::probe::connect;
use pgkeel_pg::secrets::generate_password;
use serde::{Deserialize, Serialize};

use crate::{Cluster, ClusterError, Progress};

/// The annotation holding a backup's marker.
pub const MARKER_ANNOTATION: &str = "pgkeel-marker";

/// Markers kept in the table (older ones are deleted).
const MARKERS_KEPT: i64 = 100;

const MARKER_TABLE: &str = "CREATE TABLE IF NOT EXISTS public.pgkeel_backup_marker (
    token text PRIMARY KEY,
    taken_at timestamptz NOT NULL DEFAULT now())";

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The backup restored.
    pub label: String,
    /// Full, diff or incr.
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// Replayed to the end of the backup, or through all archived WAL.
    pub to_latest: bool,
    /// The copy was restored and started (false when the repository's
    /// files were found damaged first).
    pub restored: bool,
    /// Seconds from the start of the restore to a running, promoted copy
    /// (the recovery time objective this backup gives).
    pub restore_seconds: f64,
    /// The newest commit the copy holds (seconds since the epoch).
    pub newest_commit: i64,
    /// Seconds between that commit and the verification (the recovery
    /// point objective it gives).
    pub rpo_seconds: f64,
    /// The copy holds the marker written before the backup started.
    pub marker_found: bool,
    /// `pg_amcheck` found nothing in any database.
    pub amcheck_ok: bool,
    /// Databases checked.
    pub databases: Vec<String>,
    /// User tables in the copy, over all databases.
    pub tables: u64,
    /// Their rows as the catalog estimates them (`pg_class.reltuples`, as
    /// of the last VACUUM or ANALYZE): counting exactly would read every
    /// table once more.
    pub rows_estimate: u64,
    /// When the verification ended (seconds since the epoch).
    pub verified_at: i64,
    /// What failed (`None`: the backup is proven restorable).
    pub problem: Option<String>,
}

impl VerifyReport {
    /// Whether the backup restored and checked clean.
    pub fn ok(&self) -> bool {
        self.problem.is_none()
    }
}

fn epoch_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Bytes a restore of `backup` needs in its scratch directory: the
/// database, the WAL it replays, and a margin.
pub fn restore_space_needed(backup: &BackupInfo) -> u64 {
    backup.database_bytes + backup.database_bytes / 10 + 256 * 1024 * 1024
}

/// Removes the scratch copy however verification ends.
struct Scratch {
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    /// Records `report` as this host's last verification (read by
    /// `/metrics` and `backup list`).
    pub fn record_verification(&self, report: &VerifyReport) -> Result<(), ClusterError> {
        let text = serde_json::to_string_pretty(report).map_err(|e| {
            ClusterError::io(
                "serialize",
                self.layout.last_verification_file(),
                std::io::Error::other(e.to_string()),
            )
        })?;
        pgkeel_pg::fsutil::write_owned(
            &self.layout.last_verification_file(),
            &text,
            self.os_user(),
            0o644,
        )?;
        Ok(())
    }

    /// This host's last verification, if any.
    pub fn last_verification(&self) -> Option<VerifyReport> {
        let text = std::fs::read_to_string(self.layout.last_verification_file()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Takes a backup with pgkeel's fingerprint: a marker row written on
    /// `primary` (on this host) just before it starts, recorded as the
    /// backup's annotation. Returns the new backup's label.
    pub async fn backup_with_marker<E: BackupEngine + Sync>(
        &self,
        engine: &E,
        kind: BackupKind,
        primary: &NodeConfig,
        standby: Option<&PgTarget>,
        progress: &(dyn Fn(f64) + Send + Sync),
    ) -> Result<String, ClusterError> {
        let token = generate_password(24)?;
        let conn = self.connect(primary).await?;
        let client = conn.client();
        let sql_error = |e: tokio_postgres::Error| {
            ClusterError::Pg(pgkeel_pg::PgError::Sql {
                node: primary.name.to_string(),
                what: "backup marker",
                source: e,
            })
        };
        client
            .batch_execute(MARKER_TABLE)
            .await
            .map_err(sql_error)?;
        client
            .execute(
                "INSERT INTO public.pgkeel_backup_marker (token) VALUES ($1)",
                &[&token],
            )
            .await
            .map_err(sql_error)?;
        client
            .execute(
                "DELETE FROM public.pgkeel_backup_marker WHERE token NOT IN \
                 (SELECT token FROM public.pgkeel_backup_marker ORDER BY taken_at DESC LIMIT $1)",
                &[&MARKERS_KEPT],
            )
            .await
            .map_err(sql_error)?;
        let annotations = [(MARKER_ANNOTATION.to_string(), token)];
        Ok(engine
            .backup(
                kind,
                &self.pg_target(primary),
                standby,
                &annotations,
                progress,
            )
            .await?)
    }

    /// Restores backup `label` (the newest when `None`) into a directory
    /// under `scratch`, checks it and removes it. A problem found in the
    /// copy is reported in [`VerifyReport::problem`]; an error means the
    /// verification itself could not run (no backup, no room, the restore
    /// failed: pgBackRest names a corrupted file).
    pub async fn verify_backup<E: BackupEngine + Sync>(
        &self,
        engine: &E,
        label: Option<&str>,
        to_latest: bool,
        scratch: &Path,
        progress: &dyn Progress,
    ) -> Result<VerifyReport, ClusterError> {
        let info = engine.info().await?;
        let backup = match label {
            Some(l) => info.backups.iter().find(|b| b.label == l).ok_or_else(|| {
                BackupError::NoSuchBackup(format!(
                    "no backup labelled `{l}` in the repository: `pgkeel backup list` shows the labels"
                ))
            })?,
            None => info.newest(None).ok_or_else(|| {
                BackupError::NoSuchBackup(
                    "the repository holds no backup yet: take one with `pgkeel backup`".into(),
                )
            })?,
        };
        // The repository first: a damaged file is named here, where a
        // restore would only fail with a decompression error.
        progress.step(
            "verify",
            &format!("checking the repository files of backup {}", backup.label),
        );
        let damaged = engine.damaged_files(&backup.label).await?;
        if !damaged.is_empty() {
            return Ok(VerifyReport {
                label: backup.label.clone(),
                kind: backup.kind,
                to_latest,
                restored: false,
                restore_seconds: 0.0,
                newest_commit: backup.stop,
                rpo_seconds: 0.0,
                marker_found: false,
                amcheck_ok: false,
                databases: vec![],
                tables: 0,
                rows_estimate: 0,
                verified_at: epoch_now(),
                problem: Some(format!(
                    "the repository's copy is damaged, so the backup cannot be restored: {}",
                    damaged.join(", ")
                )),
            });
        }
        let owner = self.os_user();
        ensure_dir(scratch, owner, 0o700)?;
        let need = restore_space_needed(backup);
        let free = free_bytes(scratch).unwrap_or(u64::MAX);
        if free < need {
            return Err(BackupError::ScratchSpace {
                dir: scratch.to_path_buf(),
                label: backup.label.clone(),
                need,
                free,
            }
            .into());
        }
        let dir = scratch.join(format!("verify-{}", backup.label));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| ClusterError::io("remove", &dir, e))?;
        }
        let scratch_copy = Scratch { dir: dir.clone() };
        let data = dir.join("data");
        let run = dir.join("run");
        for d in [&dir, &data, &run] {
            ensure_dir(d, owner, 0o700)?;
        }
        let node = format!("verify-{}", backup.label);
        let target = if to_latest {
            RestoreTarget::Latest
        } else {
            RestoreTarget::EndOfBackup
        };
        let started = Instant::now();
        progress.step(
            &node,
            &format!("restoring backup {} into {}", backup.label, data.display()),
        );
        engine
            .restore(&node, &backup.label, &target, &data, false)
            .await?;
        // A private socket, no TCP, archiving off, small memory: the copy
        // must not disturb the cluster, its port or its archive.
        let port = self.nodes().first().map_or(5432, |n| n.port);
        let options = [
            "-c listen_addresses=''".to_string(),
            format!("-c port={port}"),
            format!("-c unix_socket_directories='{}'", run.display()),
            "-c archive_mode=off".into(),
            "-c shared_buffers=64MB".into(),
            "-c synchronous_standby_names=''".into(),
            format!("-c cluster_name='{node}'"),
        ]
        .join(" ");
        let log = dir.join("postgresql.log");
        progress.step(&node, "starting the copy and replaying WAL");
        pgctl::start_with_options(&self.runner, &node, &data, &log, &options).await?;
        let result = self
            .check_copy(
                &node,
                backup,
                &run,
                port,
                &info_marker(backup),
                started,
                to_latest,
                progress,
            )
            .await;
        let _ = pgctl::stop(&self.runner, &node, &data, StopMode::Immediate).await;
        drop(scratch_copy);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn check_copy(
        &self,
        node: &str,
        backup: &BackupInfo,
        run: &Path,
        port: u16,
        marker: &Option<String>,
        started: Instant,
        to_latest: bool,
        progress: &dyn Progress,
    ) -> Result<VerifyReport, ClusterError> {
        let conn = connect(node, run, port, &self.superuser).await?;
        let client = conn.client();
        let sql = |what: &'static str| {
            let node = node.to_string();
            move |e: tokio_postgres::Error| {
                ClusterError::Pg(pgkeel_pg::PgError::Sql {
                    node: node.clone(),
                    what,
                    source: e,
                })
            }
        };
        // The copy promotes itself at its target; wait for it.
        loop {
            let recovering: bool = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(sql("recovery state"))?
                .get(0);
            if !recovering {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let restore_seconds = started.elapsed().as_secs_f64();
        let replayed: Option<f64> = client
            .query_one(
                "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8",
                &[],
            )
            .await
            .map_err(sql("newest commit"))?
            .get(0);
        // No transaction replayed: the copy is as of the backup's end.
        let newest_commit = replayed.map_or(backup.stop, |t| t as i64);
        let mut problem = None;
        let marker_found = match marker {
            Some(token) => {
                let found: i64 = client
                    .query_one(
                        "SELECT count(*) FROM public.pgkeel_backup_marker WHERE token = $1",
                        &[token],
                    )
                    .await
                    .map_err(sql("marker"))?
                    .get(0);
                if found != 1 {
                    problem = Some(format!(
                        "the copy lacks the marker row written before backup {} started: it does not hold the data the backup should",
                        backup.label
                    ));
                }
                found == 1
            }
            None => false,
        };
        let databases: Vec<String> = client
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
                &[],
            )
            .await
            .map_err(sql("databases"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (mut tables, mut rows) = (0u64, 0u64);
        for db in &databases {
            let (t, r) = table_sizes(node, run, port, &self.superuser, db).await?;
            tables += t;
            rows += r;
        }
        progress.step(node, "pg_amcheck on every database");
        let amcheck = self
            .runner
            .run(
                node,
                "pg_amcheck",
                [
                    "--all".to_string(),
                    "--install-missing".into(),
                    "--no-password".into(),
                    "-h".into(),
                    run.display().to_string(),
                    "-p".into(),
                    port.to_string(),
                    "-U".into(),
                    self.superuser.clone(),
                ],
                &[],
            )
            .await;
        let amcheck_ok = match amcheck {
            Ok(_) => true,
            Err(pgkeel_pg::PgError::Command { stderr, .. }) => {
                problem.get_or_insert(format!("pg_amcheck found corruption:\n{stderr}"));
                false
            }
            Err(e) => return Err(e.into()),
        };
        let verified_at = epoch_now();
        Ok(VerifyReport {
            label: backup.label.clone(),
            kind: backup.kind,
            to_latest,
            restored: true,
            restore_seconds,
            newest_commit,
            rpo_seconds: (verified_at - newest_commit).max(0) as f64,
            marker_found,
            amcheck_ok,
            databases,
            tables,
            rows_estimate: rows,
            verified_at,
            problem,
        })
    }
}

/// The marker token recorded with `backup`, if pgkeel took it.
fn info_marker(backup: &BackupInfo) -> Option<String> {
    backup.annotations.get(MARKER_ANNOTATION).cloned()
}

/// User tables and their estimated rows in one database of the copy.
async fn table_sizes(
    node: &str,
    run: &Path,
    port: u16,
    user: &str,
    db: &str,
) -> Result<(u64, u64), ClusterError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(run)
        .port(port)
        .user(user)
        .dbname(db)
        .application_name("pgkeel-verify");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|source| {
            ClusterError::Pg(pgkeel_pg::PgError::Sql {
                node: node.to_string(),
                what: "connect to a database of the copy",
                source,
            })
        })?;
    let task = tokio::spawn(connection);
    let sql = |source| {
        ClusterError::Pg(pgkeel_pg::PgError::Sql {
            node: node.to_string(),
            what: "user tables",
            source,
        })
    };
    let row = client
        .query_one(
            "SELECT count(*), coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'p') \
                AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                AND n.nspname NOT LIKE 'pg_toast%'",
            &[],
        )
        .await
        .map_err(sql)?;
    let (tables, rows): (i64, i64) = (row.get(0), row.get(1));
    drop(client);
    let _ = task.await;
    Ok((
        u64::try_from(tables).unwrap_or(0),
        u64::try_from(rows).unwrap_or(0),
    ))
}

/// Free bytes for an unprivileged user in the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

//! Scheduled backups. The leader's agent looks every minute at the
//! repository and the schedules (`pgkeel_backup::schedule::due`) and takes
//! the backup that is due, from the streaming replica furthest along on
//! this host (the primary when none streams), then restores and checks
//! the newest backup when `verify_schedule` says so. A failure is retried
//! after [`RETRY_AFTER`], not every minute.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgkeel_backup::schedule::due;
use pgkeel_backup::source::choose;
use pgkeel_backup::{BackupEngine, BackupKind, PgBackRest, RepositoryInfo};
use pgkeel_cluster::Cluster;

use crate::execute::tracing_line;
use crate::shared::{BackupsSeen, Shared};

/// How often the leader checks whether a backup is due.
const CHECK_EVERY: Duration = Duration::from_secs(60);
/// The first check after the agent starts (a new cluster's replicas are
/// streaming by then, so its first full backup reads from one).
const FIRST_CHECK: Duration = Duration::from_secs(10);
/// A failed scheduled backup is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Starts the scheduler when `[backup]` has a repository.
pub fn spawn(cluster: Cluster, shared: Arc<Shared>) {
    let engine = match cluster.backup_engine() {
        Ok(Some(engine)) => engine,
        Ok(None) => return,
        Err(e) => {
            tracing_line(&format!("{}: backups not scheduled: {e}", shared.node));
            return;
        }
    };
    tokio::spawn(async move {
        let mut retry_at: Option<Instant> = None;
        tokio::time::sleep(FIRST_CHECK).await;
        loop {
            // A standby cluster's leader has nothing of its own to back
            // up: the primary cluster's backups cover the data.
            let due_here = shared.leader() && !shared.following();
            if due_here && retry_at.is_none_or(|t| Instant::now() >= t) {
                let failed = check(&cluster, &engine, &shared).await
                    || verify_if_due(&cluster, &engine, &shared).await;
                retry_at = failed.then(|| Instant::now() + RETRY_AFTER);
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    });
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn record(shared: &Shared, info: &RepositoryInfo, error: Option<String>) {
    if let Ok(mut seen) = shared.backups.lock() {
        *seen = Some(BackupsSeen {
            newest_start: info.newest(None).map(|b| b.start),
            newest_full_start: info.newest(Some(BackupKind::Full)).map(|b| b.start),
            last_error: error,
        });
    }
}

/// One look: takes the backup that is due, if any. Returns whether a
/// backup was due and failed.
async fn check(cluster: &Cluster, engine: &PgBackRest, shared: &Shared) -> bool {
    let me = shared.node.as_str();
    let info = match engine.info().await {
        Ok(info) => info,
        Err(e) => {
            tracing_line(&format!("{me}: cannot read the backup repository: {e}"));
            return true;
        }
    };
    record(shared, &info, None);
    let Some(kind) = due(&cluster.config.backup, &info, now()) else {
        return false;
    };
    // pgBackRest reads the data directories of this host's nodes only.
    let mut status = cluster.status().await;
    status
        .nodes
        .retain(|n| cluster.layout.data_dir(&n.name).is_dir());
    let nodes = match choose(&status, cluster.config.backup.from) {
        Ok(nodes) => nodes,
        Err(why) => {
            tracing_line(&format!("{me}: scheduled {kind} backup not taken: {why}"));
            return true;
        }
    };
    let standby = nodes
        .standby
        .as_deref()
        .and_then(|name| cluster.config.node(name))
        .map(|n| cluster.pg_target(n));
    let Some(primary) = cluster.config.node(&nodes.primary) else {
        return true;
    };
    let source = standby
        .as_ref()
        .map_or(nodes.primary.as_str(), |s| s.node.as_str());
    tracing_line(&format!(
        "{me}: scheduled {kind} backup starting (files from {source})"
    ));
    let started = Instant::now();
    let result = cluster
        .backup_with_marker(engine, kind, primary, standby.as_ref(), &|_| {})
        .await;
    let info = engine.info().await.unwrap_or(info);
    match result {
        Ok(label) => {
            tracing_line(&format!(
                "{me}: scheduled {kind} backup {label} done in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            record(shared, &info, None);
            false
        }
        Err(e) => {
            tracing_line(&format!(
                "{me}: scheduled {kind} backup failed (next try in {} min): {e}",
                RETRY_AFTER.as_secs() / 60
            ));
            record(shared, &info, Some(e.to_string()));
            true
        }
    }
}

/// Verifies the newest backup when the verify schedule came round since
/// this host's last verification. Returns whether a due verification could
/// not run or found a problem.
async fn verify_if_due(cluster: &Cluster, engine: &PgBackRest, shared: &Shared) -> bool {
    let me = shared.node.as_str();
    let last = cluster.last_verification().map(|r| r.verified_at);
    if !cluster.config.backup.verify_schedule.is_due(last, now()) {
        return false;
    }
    tracing_line(&format!(
        "{me}: scheduled verification of the newest backup starting"
    ));
    let scratch = cluster.layout.verify_scratch_dir();
    match cluster
        .verify_backup(
            engine,
            None,
            false,
            &scratch,
            &pgkeel_cluster::SilentProgress,
        )
        .await
    {
        Ok(report) => {
            if let Err(e) = cluster.record_verification(&report) {
                tracing_line(&format!("{me}: cannot record the verification: {e}"));
            }
            match &report.problem {
                None => {
                    tracing_line(&format!(
                        "{me}: backup {} verified: restorable in {:.1}s",
                        report.label, report.restore_seconds
                    ));
                    false
                }
                Some(problem) => {
                    tracing_line(&format!(
                        "{me}: backup {} FAILED verification: {problem}",
                        report.label
                    ));
                    true
                }
            }
        }
        // Nothing to verify yet (no backup schedule has run).
        Err(pgkeel_cluster::ClusterError::Backup(pgkeel_backup::BackupError::NoSuchBackup(_))) => {
            false
        }
        Err(e) => {
            tracing_line(&format!("{me}: scheduled verification could not run: {e}"));
            true
        }
    }
}

//! Waiting until replication is really working, not just until processes
//! exist.

use std::time::{Duration, Instant};

use pgkeel_core::{NodeConfig, ReplicationMode};
use pgkeel_pg::probe::ReplicationRow;

use crate::{Cluster, ClusterError};

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// Whether `rows` (the primary's `pg_stat_replication`) show every standby
/// streaming with the sync state `mode` calls for. `Err` holds what is still
/// missing, for progress and timeout messages.
pub fn replication_ready(
    rows: &[ReplicationRow],
    standbys: &[&str],
    mode: ReplicationMode,
    sync_count: usize,
) -> Result<(), String> {
    let mut missing = vec![];
    let mut sync = 0;
    for name in standbys {
        match rows.iter().find(|r| r.application_name == *name) {
            None => missing.push(format!("{name}: not connected")),
            Some(row) => {
                let state = row.state.as_deref().unwrap_or("?");
                let sync_state = row.sync_state.as_deref().unwrap_or("?");
                if state != "streaming" {
                    missing.push(format!("{name}: {state}"));
                }
                let expected = match mode {
                    ReplicationMode::Async => sync_state == "async",
                    ReplicationMode::Quorum => sync_state == "quorum",
                    ReplicationMode::Sync => matches!(sync_state, "sync" | "potential"),
                };
                if !expected {
                    missing.push(format!("{name}: sync_state {sync_state}"));
                }
                if sync_state == "sync" {
                    sync += 1;
                }
            }
        }
    }
    if mode == ReplicationMode::Sync && sync < sync_count.min(standbys.len()) && missing.is_empty()
    {
        missing.push(format!("{sync} of {sync_count} synchronous standbys"));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

impl Cluster {
    /// Waits until every other node streams from `primary` in the state the
    /// replication mode calls for.
    pub async fn wait_replication(
        &self,
        primary: &NodeConfig,
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let standbys: Vec<&str> = self
            .nodes()
            .iter()
            .filter(|n| n.name != primary.name)
            .map(|n| n.name.as_str())
            .collect();
        let repl = &self.config.replication;
        let conn = self.connect(primary).await?;
        let start = Instant::now();
        loop {
            let rows = conn.replication().await?;
            let last = match replication_ready(&rows, &standbys, repl.mode, repl.sync_count) {
                Ok(()) => return Ok(()),
                Err(missing) => missing,
            };
            if start.elapsed() > timeout {
                return Err(ClusterError::Timeout {
                    what: format!("replicas to stream from {}", primary.name),
                    seconds: timeout.as_secs(),
                    detail: last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, state: &str, sync_state: &str) -> ReplicationRow {
        ReplicationRow {
            application_name: name.into(),
            client_addr: None,
            state: Some(state.into()),
            sent_lsn: None,
            write_lsn: None,
            flush_lsn: None,
            replay_lsn: None,
            write_lag: None,
            flush_lag: None,
            replay_lag: None,
            sync_state: Some(sync_state.into()),
            sync_priority: None,
        }
    }

    #[test]
    fn quorum_needs_every_standby_in_quorum_state() {
        let rows = [
            row("r1", "streaming", "quorum"),
            row("r2", "streaming", "async"),
        ];
        let err = replication_ready(&rows, &["r1", "r2"], ReplicationMode::Quorum, 1)
            .expect_err("r2 async");
        assert!(err.contains("r2: sync_state async"), "{err}");
        let rows = [
            row("r1", "streaming", "quorum"),
            row("r2", "streaming", "quorum"),
        ];
        assert!(replication_ready(&rows, &["r1", "r2"], ReplicationMode::Quorum, 1).is_ok());
    }

    #[test]
    fn sync_needs_enough_sync_standbys() {
        let rows = [
            row("r1", "streaming", "potential"),
            row("r2", "streaming", "potential"),
        ];
        let err = replication_ready(&rows, &["r1", "r2"], ReplicationMode::Sync, 1)
            .expect_err("none sync");
        assert!(err.contains("0 of 1"), "{err}");
        let rows = [
            row("r1", "streaming", "sync"),
            row("r2", "streaming", "potential"),
        ];
        assert!(replication_ready(&rows, &["r1", "r2"], ReplicationMode::Sync, 1).is_ok());
    }

    #[test]
    fn missing_and_catching_up_standbys_are_named() {
        let rows = [row("r1", "catchup", "async")];
        let err = replication_ready(&rows, &["r1", "r2"], ReplicationMode::Async, 0)
            .expect_err("not ready");
        assert!(err.contains("r1: catchup"), "{err}");
        assert!(err.contains("r2: not connected"), "{err}");
    }
}

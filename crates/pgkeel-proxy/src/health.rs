//! Health checks: one loop per node asks `pg_is_in_recovery()` and its WAL
//! position every interval and records the answer in the [`Topology`] at
//! once. Each node has its own loop so that a vanished host, whose check
//! only ends at its timeout, delays nothing about the others; the node the
//! leader key names is asked every [`PROMOTION_POLL`] until it is seen
//! writable, so writes resume within that of its promotion.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::config::{Backend, ProxyConfig};
use crate::topology::{NodeHealth, NodeRole, Topology};

/// How often the node that holds the leader key, but is not writable yet
/// (a promotion in progress), is asked again.
pub const PROMOTION_POLL: Duration = Duration::from_millis(100);

/// Shortest bound on one check: a loaded server may take a moment to
/// answer, and a check that times out marks the node down.
const MIN_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What one health check saw on a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Its WAL position in bytes (current on a primary, replayed on a
    /// standby).
    pub wal: f64,
    /// Seconds since the last replayed transaction while the standby is
    /// behind (0 when it has replayed all it received).
    pub lag_seconds: f64,
}

/// The newest WAL position among the nodes last seen writable.
pub fn newest_primary_wal(seen: &[Option<Observation>]) -> Option<f64> {
    seen.iter()
        .flatten()
        .filter(|o| !o.in_recovery)
        .map(|o| o.wal)
        .fold(None, |acc: Option<f64>, w| {
            Some(acc.map_or(w, |a| a.max(w)))
        })
}

/// A node's health from its last observation, its byte lag measured
/// against `primary_wal`.
pub fn health_of(seen: Option<Observation>, primary_wal: Option<f64>) -> NodeHealth {
    match seen {
        None => NodeHealth::DOWN,
        Some(o) if !o.in_recovery => NodeHealth {
            role: NodeRole::Primary,
            lag_bytes: Some(0),
            lag_seconds: Some(0.0),
        },
        Some(o) => NodeHealth {
            role: NodeRole::Replica,
            lag_bytes: primary_wal.map(|p| lag_bytes(p, o.wal)),
            lag_seconds: Some(o.lag_seconds.max(0.0)),
        },
    }
}

/// Bytes from `replica_wal` to `primary_wal` (never negative: the two
/// were read at slightly different times).
pub fn lag_bytes(primary_wal: f64, replica_wal: f64) -> u64 {
    (primary_wal - replica_wal).max(0.0) as u64
}

const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), \
    ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END) - '0/0'::pg_lsn)::float8, \
    CASE WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn() \
         THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 ELSE 0 END";

/// One node's checking connection, kept between checks.
struct Checker {
    client: Option<tokio_postgres::Client>,
}

impl Checker {
    async fn check(
        &mut self,
        backend: &Backend,
        config: &ProxyConfig,
        password: &str,
        timeout: Duration,
    ) -> Option<Observation> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host(backend.addr.ip().to_string())
                .port(backend.addr.port())
                .user(&config.health_user)
                .password(password)
                .dbname(&config.health_database)
                .application_name("pgkeel-proxy-health")
                .connect_timeout(timeout);
            let (client, conn) = tokio::time::timeout(timeout, cfg.connect(NoTls))
                .await
                .ok()?
                .ok()?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.client = Some(client);
        }
        let client = self.client.as_ref()?;
        let row = match tokio::time::timeout(timeout, client.query_one(CHECK_SQL, &[])).await {
            Ok(Ok(row)) => row,
            _ => {
                self.client = None;
                return None;
            }
        };
        Some(Observation {
            in_recovery: row.try_get(0).ok()?,
            wal: row.try_get(1).ok()?,
            lag_seconds: row.try_get::<_, Option<f64>>(2).ok()?.unwrap_or(0.0),
        })
    }
}

/// Runs every node's health checks forever (until the task is aborted).
pub async fn run_health_checks(topology: Arc<Topology>, config: Arc<ProxyConfig>) {
    let password = config
        .users
        .get(&config.health_user)
        .map(|u| u.password.clone())
        .unwrap_or_default();
    let loops =
        (0..topology.backends.len()).map(|node| check_node(&topology, &config, &password, node));
    futures_util::future::join_all(loops).await;
}

/// One node's loop: check, record, wait for the interval or a recheck.
async fn check_node(topology: &Topology, config: &ProxyConfig, password: &str, node: usize) {
    let Some(backend) = topology.backends.get(node) else {
        return;
    };
    let timeout = config.health_interval.max(MIN_CHECK_TIMEOUT);
    let mut checker = Checker { client: None };
    let mut rechecks = topology.rechecks();
    loop {
        rechecks.mark_unchanged();
        let seen = checker.check(backend, config, password, timeout).await;
        topology.record(node, seen);
        let pause = if topology.awaits_promotion(node) {
            PROMOTION_POLL.min(config.health_interval)
        } else {
            config.health_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            changed = rechecks.changed() => {
                if changed.is_err() {
                    // The topology is being dropped with the proxy.
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(in_recovery: bool, wal: f64) -> Option<Observation> {
        Some(Observation {
            in_recovery,
            wal,
            lag_seconds: 0.5,
        })
    }

    #[test]
    fn byte_lag_is_measured_against_the_newest_writable_node() {
        let all = [seen(false, 1000.0), seen(true, 400.0), None];
        let primary = newest_primary_wal(&all);
        assert_eq!(primary, Some(1000.0));
        let h = health_of(all[1], primary);
        assert_eq!(h.role, NodeRole::Replica);
        assert_eq!(h.lag_bytes, Some(600));
        assert_eq!(h.lag_seconds, Some(0.5));
        assert_eq!(health_of(all[0], primary).role, NodeRole::Primary);
        assert_eq!(health_of(None, primary), NodeHealth::DOWN);
    }

    #[test]
    fn without_a_writable_node_a_replica_has_no_byte_lag() {
        let all = [seen(true, 10.0), None];
        assert_eq!(newest_primary_wal(&all), None);
        assert_eq!(health_of(all[0], None).lag_bytes, None);
    }

    #[test]
    fn a_replica_read_after_the_primary_is_never_negative_lag() {
        assert_eq!(lag_bytes(100.0, 180.0), 0);
        assert_eq!(lag_bytes(180.0, 100.0), 80);
    }
}

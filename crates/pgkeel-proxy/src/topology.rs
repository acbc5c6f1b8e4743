//! Which node is the primary and which replicas may take reads, found by
//! health checks (`pg_is_in_recovery()`, replay position) every interval,
//! so the proxy follows a role change without being told.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::config::{Backend, NoReplica, ProxyConfig, ReplicaChoice};

/// A node's role as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// Accepts writes.
    Primary,
    /// In recovery (streaming standby).
    Replica,
    /// Unreachable or failing checks.
    Down,
}

/// One node's last health-check result.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    /// Role.
    pub role: NodeRole,
    /// Bytes of WAL the replica has not replayed yet (vs the primary).
    pub lag_bytes: Option<u64>,
    /// Seconds since the last replayed transaction, when behind at all.
    pub lag_seconds: Option<f64>,
}

impl NodeHealth {
    /// Not checked yet or unreachable.
    pub const DOWN: NodeHealth = NodeHealth {
        role: NodeRole::Down,
        lag_bytes: None,
        lag_seconds: None,
    };
}

/// Live view of the backends shared by every session.
#[derive(Debug)]
pub struct Topology {
    /// The configured backends, in order (indexes are node ids).
    pub backends: Vec<Backend>,
    health: RwLock<Vec<NodeHealth>>,
    /// Bumped for a node when it goes down or changes role: pooled
    /// connections from an older generation are dropped, not reused.
    generations: Vec<AtomicU64>,
    /// Statements in flight per node (for least-outstanding choice).
    pub outstanding: Vec<AtomicUsize>,
    round_robin: AtomicUsize,
}

/// The routing rules the chooser needs.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaRules {
    /// Selection among usable replicas.
    pub choice: ReplicaChoice,
    /// Byte lag limit.
    pub max_lag_bytes: Option<u64>,
    /// Time lag limit.
    pub max_lag: Option<Duration>,
    /// Fallback.
    pub no_replica: NoReplica,
}

/// Whether `h` may take reads under `rules`.
pub fn replica_usable(h: &NodeHealth, rules: &ReplicaRules) -> bool {
    if h.role != NodeRole::Replica {
        return false;
    }
    if let (Some(max), Some(lag)) = (rules.max_lag_bytes, h.lag_bytes)
        && lag > max
    {
        return false;
    }
    if let (Some(max), Some(lag)) = (rules.max_lag, h.lag_seconds)
        && lag > max.as_secs_f64()
    {
        return false;
    }
    // Unknown lag (primary unreachable) is accepted: a replica that can
    // answer is better than none, and the byte limit applies once known.
    true
}

/// Picks a node for a read: a usable replica by the rules, else the
/// primary (or `None` when the rules say error, or nothing is up).
pub fn choose_read(
    health: &[NodeHealth],
    outstanding: impl Fn(usize) -> usize,
    turn: usize,
    rules: &ReplicaRules,
) -> Option<usize> {
    // No allocation: this runs for every routed read.
    let usable = |i: &usize| replica_usable(&health[*i], rules);
    let count = (0..health.len()).filter(usable).count();
    if count > 0 {
        let nth = |k: usize| (0..health.len()).filter(usable).nth(k % count);
        return match rules.choice {
            ReplicaChoice::RoundRobin => nth(turn),
            ReplicaChoice::LeastOutstanding => {
                // Ties go round-robin.
                (0..count)
                    .filter_map(|k| nth(turn + k))
                    .min_by_key(|&i| outstanding(i))
            }
        };
    }
    match rules.no_replica {
        NoReplica::Primary => choose_primary(health),
        NoReplica::Error => None,
    }
}

/// The primary, if exactly one node claims to be it (two would be split
/// brain: then nothing is written).
pub fn choose_primary(health: &[NodeHealth]) -> Option<usize> {
    let mut primaries = (0..health.len()).filter(|&i| health[i].role == NodeRole::Primary);
    let first = primaries.next()?;
    if primaries.next().is_some() {
        return None;
    }
    Some(first)
}

impl Topology {
    /// All nodes down until the first check.
    pub fn new(backends: Vec<Backend>) -> Self {
        let n = backends.len();
        Topology {
            backends,
            health: RwLock::new(vec![NodeHealth::DOWN; n]),
            generations: (0..n).map(|_| AtomicU64::new(0)).collect(),
            outstanding: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            round_robin: AtomicUsize::new(0),
        }
    }

    /// A copy of the current health of every node.
    pub fn snapshot(&self) -> Vec<NodeHealth> {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Node for a read.
    pub fn read_node(&self, rules: &ReplicaRules) -> Option<usize> {
        self.route(true, rules).map(|(node, _)| node)
    }

    /// Node for a unit (a read, or anything for the primary) and whether
    /// it is the primary, from one look at the health table (this runs
    /// for every routed unit).
    pub fn route(&self, read: bool, rules: &ReplicaRules) -> Option<(usize, bool)> {
        let turn = if read {
            self.round_robin.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let health = self.health.read().ok()?;
        let primary = choose_primary(&health);
        let node = if read {
            choose_read(
                &health,
                |i| {
                    self.outstanding
                        .get(i)
                        .map(|o| o.load(Ordering::Relaxed))
                        .unwrap_or(0)
                },
                turn,
                rules,
            )?
        } else {
            primary?
        };
        Some((node, primary == Some(node)))
    }

    /// Node for a write.
    pub fn primary(&self) -> Option<usize> {
        choose_primary(&self.health.read().ok()?)
    }

    /// Current generation of a node.
    pub fn generation(&self, node: usize) -> u64 {
        self.generations
            .get(node)
            .map(|g| g.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Records a check result; a role change or outage starts a new
    /// generation.
    pub fn update(&self, node: usize, new: NodeHealth) {
        if let Ok(mut h) = self.health.write()
            && let Some(slot) = h.get_mut(node)
        {
            if slot.role != new.role
                && let Some(g) = self.generations.get(node)
            {
                g.fetch_add(1, Ordering::Relaxed);
                tracing::info!(node = %self.backends[node].name, from = ?slot.role, to = ?new.role, "node role changed");
            }
            *slot = new;
        }
    }
}

struct Checker {
    client: Option<tokio_postgres::Client>,
}

const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), \
    ((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END) - '0/0'::pg_lsn)::float8, \
    CASE WHEN pg_is_in_recovery() AND pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn() \
         THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 ELSE 0 END";

impl Checker {
    async fn check(
        &mut self,
        backend: &Backend,
        user: &str,
        password: &str,
        database: &str,
        timeout: Duration,
    ) -> Option<(bool, f64, f64)> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host(backend.addr.ip().to_string())
                .port(backend.addr.port())
                .user(user)
                .password(password)
                .dbname(database)
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
        let recovery: bool = row.try_get(0).ok()?;
        let lsn: f64 = row.try_get(1).ok()?;
        let lag_seconds: f64 = row.try_get::<_, Option<f64>>(2).ok()?.unwrap_or(0.0);
        Some((recovery, lsn, lag_seconds))
    }
}

/// Runs health checks forever (until the task is aborted).
pub async fn run_health_checks(topology: Arc<Topology>, config: Arc<ProxyConfig>) {
    let password = config
        .users
        .get(&config.health_user)
        .map(|u| u.password.clone())
        .unwrap_or_default();
    let mut checkers: Vec<Checker> = topology
        .backends
        .iter()
        .map(|_| Checker { client: None })
        .collect();
    let timeout = config.health_interval.max(Duration::from_secs(2));
    loop {
        let results = futures_join(
            &mut checkers,
            &topology.backends,
            &config,
            &password,
            timeout,
        )
        .await;
        let primary_lsn = results
            .iter()
            .filter_map(|r| r.filter(|(rec, _, _)| !rec).map(|(_, lsn, _)| lsn))
            .fold(None, |acc: Option<f64>, l| {
                Some(acc.map_or(l, |a| a.max(l)))
            });
        for (i, r) in results.into_iter().enumerate() {
            let health = match r {
                None => NodeHealth::DOWN,
                Some((false, _, _)) => NodeHealth {
                    role: NodeRole::Primary,
                    lag_bytes: Some(0),
                    lag_seconds: Some(0.0),
                },
                Some((true, lsn, secs)) => NodeHealth {
                    role: NodeRole::Replica,
                    lag_bytes: primary_lsn.map(|p| (p - lsn).max(0.0) as u64),
                    lag_seconds: Some(secs.max(0.0)),
                },
            };
            topology.update(i, health);
        }
        tokio::time::sleep(config.health_interval).await;
    }
}

async fn futures_join(
    checkers: &mut [Checker],
    backends: &[Backend],
    config: &ProxyConfig,
    password: &str,
    timeout: Duration,
) -> Vec<Option<(bool, f64, f64)>> {
    let futs = checkers.iter_mut().zip(backends).map(|(c, b)| {
        c.check(
            b,
            &config.health_user,
            password,
            &config.health_database,
            timeout,
        )
    });
    futures_util::future::join_all(futs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(lag_bytes: u64, secs: f64) -> NodeHealth {
        NodeHealth {
            role: NodeRole::Replica,
            lag_bytes: Some(lag_bytes),
            lag_seconds: Some(secs),
        }
    }

    fn primary() -> NodeHealth {
        NodeHealth {
            role: NodeRole::Primary,
            lag_bytes: Some(0),
            lag_seconds: Some(0.0),
        }
    }

    fn rules(choice: ReplicaChoice, no_replica: NoReplica) -> ReplicaRules {
        ReplicaRules {
            choice,
            max_lag_bytes: Some(1000),
            max_lag: Some(Duration::from_secs(5)),
            no_replica,
        }
    }

    #[test]
    fn round_robin_skips_lagging_and_down_replicas() {
        let h = vec![
            primary(),
            replica(10, 0.0),
            NodeHealth::DOWN,
            replica(5000, 0.0),
            replica(0, 0.0),
        ];
        let r = rules(ReplicaChoice::RoundRobin, NoReplica::Primary);
        let picks: Vec<_> = (0..4).map(|t| choose_read(&h, |_| 0, t, &r)).collect();
        assert_eq!(picks, vec![Some(1), Some(4), Some(1), Some(4)]);
        let slow = vec![primary(), replica(0, 60.0)];
        assert_eq!(choose_read(&slow, |_| 0, 0, &r), Some(0));
    }

    #[test]
    fn least_outstanding_prefers_idle_replica() {
        let h = vec![primary(), replica(0, 0.0), replica(0, 0.0)];
        let r = rules(ReplicaChoice::LeastOutstanding, NoReplica::Primary);
        assert_eq!(choose_read(&h, |i| [0, 5, 1][i], 0, &r), Some(2));
        assert_eq!(choose_read(&h, |i| [0, 0, 3][i], 1, &r), Some(1));
    }

    #[test]
    fn no_replica_falls_back_or_fails_as_configured() {
        let h = vec![primary(), NodeHealth::DOWN];
        assert_eq!(
            choose_read(
                &h,
                |_| 0,
                0,
                &rules(ReplicaChoice::RoundRobin, NoReplica::Primary)
            ),
            Some(0)
        );
        assert_eq!(
            choose_read(
                &h,
                |_| 0,
                0,
                &rules(ReplicaChoice::RoundRobin, NoReplica::Error)
            ),
            None
        );
    }

    #[test]
    fn two_primaries_mean_no_primary() {
        assert_eq!(choose_primary(&[primary(), primary()]), None);
        assert_eq!(choose_primary(&[NodeHealth::DOWN, primary()]), Some(1));
    }
}

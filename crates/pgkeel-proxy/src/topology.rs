//! Which node is the primary and which replicas may take reads, found by
//! health checks (`pg_is_in_recovery()`, replay position) every interval,
//! so the proxy follows a role change without being told.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::{Backend, NoReplica, ReplicaChoice};
use crate::health::{Observation, health_of, lag_bytes, newest_primary_wal};

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
    /// Clients whose reads stick to each node (for the sticky choice;
    /// kept by [`crate::affinity::ReadAffinity`]).
    pub readers: Vec<AtomicUsize>,
    round_robin: AtomicUsize,
    leader: RwLock<Leader>,
    /// Woken on every role or leader change (writers waiting for a
    /// primary during a failover).
    changed: Notify,
    /// Bumped when the leader changes or a node is suspected, so every
    /// node's health check runs at once instead of at its next interval.
    recheck: watch::Sender<u64>,
    /// Each node's last health-check observation (for byte lag).
    observed: Mutex<Vec<Option<Observation>>>,
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
///
/// `load` is what the choice balances: statements in flight for
/// least-outstanding, clients reading from the node for sticky. `current`
/// is the client's replica under the sticky choice, kept while usable.
pub fn choose_read(
    health: &[NodeHealth],
    leader: Leader,
    load: impl Fn(usize) -> usize,
    turn: usize,
    rules: &ReplicaRules,
    current: Option<usize>,
) -> Option<usize> {
    // No allocation: this runs for every routed read.
    let usable = |i: &usize| *i < health.len() && replica_usable(&health[*i], rules);
    if rules.choice == ReplicaChoice::Sticky
        && let Some(c) = current.filter(usable)
    {
        return Some(c);
    }
    let count = (0..health.len()).filter(usable).count();
    if count > 0 {
        let nth = |k: usize| (0..health.len()).filter(usable).nth(k % count);
        return match rules.choice {
            ReplicaChoice::RoundRobin => nth(turn),
            ReplicaChoice::LeastOutstanding | ReplicaChoice::Sticky => {
                // Ties go round-robin.
                (0..count)
                    .filter_map(|k| nth(turn + k))
                    .min_by_key(|&i| load(i))
            }
        };
    }
    match rules.no_replica {
        NoReplica::Primary => choose_primary(health, leader),
        NoReplica::Error => None,
    }
}

/// Who holds the leader key in etcd, as the proxy last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leader {
    /// No leader source (a cluster without agents), or etcd cannot be
    /// reached: the health checks alone decide (the agents' failsafe keeps
    /// a primary writable only while every member confirms it).
    Unknown,
    /// The key is vacant: a failover is under way; nothing is written.
    Vacant,
    /// This node holds it.
    Node(usize),
}

/// The primary: the one node that is writable by its health check and,
/// when the leader key is known, holds it. A writable node that is not
/// the leader is an old primary about to be demoted; two writable nodes
/// without a leader to tell them apart would be split brain. Either way
/// nothing is written there.
pub fn choose_primary(health: &[NodeHealth], leader: Leader) -> Option<usize> {
    let writable = |i: &usize| health[*i].role == NodeRole::Primary;
    match leader {
        Leader::Node(i) => (i < health.len() && writable(&i)).then_some(i),
        Leader::Vacant => None,
        Leader::Unknown => {
            let mut primaries = (0..health.len()).filter(writable);
            let first = primaries.next()?;
            primaries.next().is_none().then_some(first)
        }
    }
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
            readers: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            round_robin: AtomicUsize::new(0),
            leader: RwLock::new(Leader::Unknown),
            changed: Notify::new(),
            recheck: watch::Sender::new(0),
            observed: Mutex::new(vec![None; n]),
        }
    }

    /// The leader as last seen.
    pub fn leader(&self) -> Leader {
        self.leader.read().map(|l| *l).unwrap_or(Leader::Unknown)
    }

    /// Records who holds the leader key (by node name; a name that is not
    /// a backend counts as vacant: nothing of ours may be written).
    pub fn set_leader(&self, name: Option<&str>, known: bool) {
        let new = match (known, name) {
            (false, _) => Leader::Unknown,
            (true, None) => Leader::Vacant,
            (true, Some(n)) => self
                .backends
                .iter()
                .position(|b| b.name == n)
                .map_or(Leader::Vacant, Leader::Node),
        };
        let old = match self.leader.write() {
            Ok(mut l) => std::mem::replace(&mut *l, new),
            Err(_) => return,
        };
        if old != new {
            tracing::info!(from = ?old, to = ?new, "leader changed");
            self.recheck.send_modify(|n| *n = n.wrapping_add(1));
            self.changed.notify_waiters();
        }
    }

    /// Marks `node` down after a failed connection (its pooled
    /// connections are dropped) and runs the health checks at once: they
    /// restore it if it answers.
    pub fn suspect(&self, node: usize) {
        self.update(node, NodeHealth::DOWN);
        self.recheck.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The primary, waiting up to `timeout` for one to appear (a
    /// failover in progress) before giving up.
    pub async fn wait_primary(&self, timeout: Duration) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some(p) = self.primary() {
                return Some(p);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.primary();
            }
        }
    }

    /// A copy of the current health of every node.
    pub fn snapshot(&self) -> Vec<NodeHealth> {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Node for a read.
    pub fn read_node(&self, rules: &ReplicaRules) -> Option<usize> {
        self.route(true, rules, None).map(|(node, _)| node)
    }

    /// Node for a unit (a read, or anything for the primary) and whether
    /// it is the primary, from one look at the health table (this runs
    /// for every routed unit). `current` is the client's sticky replica.
    pub fn route(
        &self,
        read: bool,
        rules: &ReplicaRules,
        current: Option<usize>,
    ) -> Option<(usize, bool)> {
        let turn = if read {
            self.round_robin.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let leader = self.leader();
        let health = self.health.read().ok()?;
        let primary = choose_primary(&health, leader);
        let node = if read {
            let counts = match rules.choice {
                ReplicaChoice::Sticky => &self.readers,
                _ => &self.outstanding,
            };
            choose_read(
                &health,
                leader,
                |i| {
                    counts
                        .get(i)
                        .map(|o| o.load(Ordering::Relaxed))
                        .unwrap_or(0)
                },
                turn,
                rules,
                current,
            )?
        } else {
            primary?
        };
        Some((node, primary == Some(node)))
    }

    /// Node for a write.
    pub fn primary(&self) -> Option<usize> {
        let leader = self.leader();
        choose_primary(&self.health.read().ok()?, leader)
    }

    /// Current generation of a node.
    pub fn generation(&self, node: usize) -> u64 {
        self.generations
            .get(node)
            .map(|g| g.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// A receiver woken when every node should be checked at once.
    pub fn rechecks(&self) -> watch::Receiver<u64> {
        self.recheck.subscribe()
    }

    /// Whether `node` holds the leader key but was not seen writable yet:
    /// its promotion is in progress and it is worth asking again soon.
    pub fn awaits_promotion(&self, node: usize) -> bool {
        self.leader() == Leader::Node(node)
            && self
                .health
                .read()
                .ok()
                .and_then(|h| h.get(node).map(|n| n.role != NodeRole::Primary))
                .unwrap_or(false)
    }

    /// Records what a health check of `node` saw (`None`: no answer). A
    /// writable node's new WAL position also refreshes every replica's
    /// byte lag.
    pub fn record(&self, node: usize, seen: Option<Observation>) {
        let (health, replicas) = {
            let Ok(mut observed) = self.observed.lock() else {
                return;
            };
            if let Some(slot) = observed.get_mut(node) {
                *slot = seen;
            }
            let primary_wal = newest_primary_wal(&observed);
            let replicas: Vec<(usize, u64)> = match (seen, primary_wal) {
                (Some(o), Some(p)) if !o.in_recovery => observed
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        let r = (*r)?;
                        (i != node && r.in_recovery).then(|| (i, lag_bytes(p, r.wal)))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            (health_of(seen, primary_wal), replicas)
        };
        self.update(node, health);
        if let Ok(mut h) = self.health.write() {
            for (i, bytes) in replicas {
                if let Some(slot) = h.get_mut(i).filter(|s| s.role == NodeRole::Replica) {
                    slot.lag_bytes = Some(bytes);
                }
            }
        }
    }

    /// Records a check result; a role change or outage starts a new
    /// generation.
    pub fn update(&self, node: usize, new: NodeHealth) {
        if let Ok(mut h) = self.health.write()
            && let Some(slot) = h.get_mut(node)
        {
            let changed = slot.role != new.role;
            if changed && let Some(g) = self.generations.get(node) {
                g.fetch_add(1, Ordering::Relaxed);
                tracing::info!(node = %self.backends[node].name, from = ?slot.role, to = ?new.role, "node role changed");
            }
            *slot = new;
            drop(h);
            if changed {
                self.changed.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        let picks: Vec<_> = (0..4)
            .map(|t| choose_read(&h, Leader::Unknown, |_| 0, t, &r, None))
            .collect();
        assert_eq!(picks, vec![Some(1), Some(4), Some(1), Some(4)]);
        let slow = vec![primary(), replica(0, 60.0)];
        assert_eq!(
            choose_read(&slow, Leader::Unknown, |_| 0, 0, &r, None),
            Some(0)
        );
    }

    #[test]
    fn least_outstanding_prefers_idle_replica() {
        let h = vec![primary(), replica(0, 0.0), replica(0, 0.0)];
        let r = rules(ReplicaChoice::LeastOutstanding, NoReplica::Primary);
        assert_eq!(
            choose_read(&h, Leader::Unknown, |i| [0, 5, 1][i], 0, &r, None),
            Some(2)
        );
        assert_eq!(
            choose_read(&h, Leader::Unknown, |i| [0, 0, 3][i], 1, &r, None),
            Some(1)
        );
    }

    #[test]
    fn sticky_keeps_a_usable_replica_and_balances_new_clients() {
        let h = vec![primary(), replica(0, 0.0), replica(0, 0.0)];
        let r = rules(ReplicaChoice::Sticky, NoReplica::Primary);
        // A new client goes where the fewest clients read.
        assert_eq!(
            choose_read(&h, Leader::Unknown, |i| [0, 3, 1][i], 0, &r, None),
            Some(2)
        );
        // A client keeps its replica even when it has more readers.
        assert_eq!(
            choose_read(&h, Leader::Unknown, |i| [0, 3, 1][i], 0, &r, Some(1)),
            Some(1)
        );
        // ... until it lags too far or goes down: then it moves.
        let lagging = vec![primary(), replica(5000, 0.0), replica(0, 0.0)];
        assert_eq!(
            choose_read(&lagging, Leader::Unknown, |_| 0, 0, &r, Some(1)),
            Some(2)
        );
        let down = vec![primary(), NodeHealth::DOWN, NodeHealth::DOWN];
        assert_eq!(
            choose_read(&down, Leader::Unknown, |_| 0, 0, &r, Some(1)),
            Some(0)
        );
        // A stale node id (the node list shrank) is ignored.
        assert_eq!(
            choose_read(&h, Leader::Unknown, |_| 0, 1, &r, Some(9)),
            Some(2)
        );
    }

    #[test]
    fn no_replica_falls_back_or_fails_as_configured() {
        let h = vec![primary(), NodeHealth::DOWN];
        assert_eq!(
            choose_read(
                &h,
                Leader::Unknown,
                |_| 0,
                0,
                &rules(ReplicaChoice::RoundRobin, NoReplica::Primary),
                None
            ),
            Some(0)
        );
        assert_eq!(
            choose_read(
                &h,
                Leader::Unknown,
                |_| 0,
                0,
                &rules(ReplicaChoice::RoundRobin, NoReplica::Error),
                None
            ),
            None
        );
    }

    #[test]
    fn two_primaries_mean_no_primary() {
        assert_eq!(
            choose_primary(&[primary(), primary()], Leader::Unknown),
            None
        );
        assert_eq!(
            choose_primary(&[NodeHealth::DOWN, primary()], Leader::Unknown),
            Some(1)
        );
    }

    #[test]
    fn the_leader_key_decides_between_writable_nodes() {
        // Two writable nodes: the leader is the primary, the other is an
        // old primary about to be demoted.
        let both = [primary(), primary()];
        assert_eq!(choose_primary(&both, Leader::Node(1)), Some(1));
        // The new leader is still promoting: wait, never the old one.
        let promoting = [primary(), replica(0, 0.0)];
        assert_eq!(choose_primary(&promoting, Leader::Node(1)), None);
        // Vacant key: a failover is under way.
        assert_eq!(choose_primary(&promoting, Leader::Vacant), None);
        // Reads falling back to "the primary" follow the same rule, and a
        // stale old primary never serves reads.
        let r = rules(ReplicaChoice::RoundRobin, NoReplica::Primary);
        assert_eq!(
            choose_read(&both, Leader::Node(1), |_| 0, 0, &r, None),
            Some(1)
        );
        assert_eq!(
            choose_read(&promoting, Leader::Vacant, |_| 0, 0, &r, None),
            Some(1)
        );
        let down_replica = [primary(), NodeHealth::DOWN];
        assert_eq!(
            choose_read(&down_replica, Leader::Vacant, |_| 0, 0, &r, None),
            None
        );
    }

    #[test]
    fn leader_names_map_to_backends() {
        let t = Topology::new(vec![
            Backend {
                name: "a".into(),
                addr: ([127, 0, 0, 1], 1).into(),
                socket: None,
            },
            Backend {
                name: "b".into(),
                addr: ([127, 0, 0, 1], 2).into(),
                socket: None,
            },
        ]);
        assert_eq!(t.leader(), Leader::Unknown);
        t.set_leader(Some("b"), true);
        assert_eq!(t.leader(), Leader::Node(1));
        t.set_leader(Some("elsewhere"), true);
        assert_eq!(t.leader(), Leader::Vacant);
        t.set_leader(None, true);
        assert_eq!(t.leader(), Leader::Vacant);
        t.set_leader(Some("a"), false);
        assert_eq!(t.leader(), Leader::Unknown);
    }

    #[tokio::test]
    async fn writers_wait_for_a_primary_to_appear() {
        let t = Arc::new(Topology::new(vec![Backend {
            name: "a".into(),
            addr: ([127, 0, 0, 1], 1).into(),
            socket: None,
        }]));
        assert_eq!(t.wait_primary(Duration::from_millis(10)).await, None);
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.wait_primary(Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        t.update(0, primary());
        assert_eq!(waiter.await.ok().flatten(), Some(0));
    }
}

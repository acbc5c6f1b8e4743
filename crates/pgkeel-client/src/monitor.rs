//! The background health check: every `health_interval` each member is
//! probed over its own long-lived session (reachability, role, WAL
//! position); replicas are marked up, down or lagging, and a role that
//! contradicts the topology triggers a rediscovery.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use futures_util::future::join_all;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

use crate::inner::Inner;
use crate::lag::LagTracker;
use crate::node::{Node, Seen};
use crate::probe::{Probe, connect, probe};
use crate::topology::Role;
use crate::{NodeAddr, PoolConfig, Result};

/// Starts the monitor of `inner`; it stops when the pool is dropped.
pub(crate) fn spawn(inner: &Arc<Inner>) -> JoinHandle<()> {
    let weak = Arc::downgrade(inner);
    let config = inner.config.clone();
    tokio::spawn(run(weak, config))
}

async fn run(weak: Weak<Inner>, config: PoolConfig) {
    let mut sessions: HashMap<NodeAddr, Client> = HashMap::new();
    let mut lag = LagTracker::new(config.max_replica_lag * 2 + config.health_interval);
    let mut primary_seen: Option<NodeAddr> = None;
    // Discovery has just probed every node: the first check can wait.
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + config.health_interval,
        config.health_interval,
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let (view, members) = inner.members();
        let results = join_all(members.iter().map(|(node, _)| {
            let session = sessions.remove(&node.addr);
            probe_node(&config, node.addr.clone(), session)
        }))
        .await;
        let now = Instant::now();
        let mut contradiction = false;
        let mut probes: Vec<Option<Probe>> = Vec::with_capacity(results.len());
        for ((node, _), (session, result)) in members.iter().zip(results) {
            if let Some(session) = session {
                sessions.insert(node.addr.clone(), session);
            }
            match result {
                Ok(p) => {
                    node.mark_up();
                    probes.push(Some(p));
                }
                Err(e) => {
                    node.mark_down(&e);
                    probes.push(None);
                }
            }
        }
        for ((node, role), probe) in members.iter().zip(&probes) {
            node.set_seen(Seen::of(probe.as_ref()));
            contradiction |= contradicts(*role, probe.as_ref());
            if *role == Role::Primary {
                if primary_seen.as_ref() != Some(&node.addr) {
                    lag.clear();
                    primary_seen = Some(node.addr.clone());
                }
                if let Some(pos) = probe.and_then(|p| p.position) {
                    lag.record(now, pos);
                }
            }
        }
        for ((node, role), probe) in members.iter().zip(&probes) {
            if *role == Role::Replica {
                update_replica(node, probe.as_ref(), &lag, now, &config);
            }
        }
        sessions.retain(|addr, _| members.iter().any(|(n, _)| &n.addr == addr));
        if contradiction {
            let _ = inner.rediscover(Some(view.generation)).await;
        }
    }
}

/// Reuses `session` or opens one, then probes. Returns the session when it
/// is still usable.
async fn probe_node(
    config: &PoolConfig,
    addr: NodeAddr,
    session: Option<Client>,
) -> (Option<Client>, Result<Probe>) {
    let client = match session {
        Some(c) if !c.is_closed() => c,
        _ => match connect(&config.pg_config(&addr), &addr, config.connect_timeout).await {
            Ok(c) => c,
            Err(e) => return (None, Err(e)),
        },
    };
    let result = probe(&client, &addr, config.connect_timeout).await;
    let keep = result.is_ok().then_some(client);
    (keep, result)
}

/// True when what a node answered does not fit the role the topology
/// gives it.
pub(crate) fn contradicts(role: Role, probe: Option<&Probe>) -> bool {
    match (role, probe) {
        (Role::Primary, None) => true,
        (Role::Primary, Some(p)) => !p.writable(),
        (Role::Replica, Some(p)) => !p.in_recovery,
        (Role::Replica, None) => false,
        (Role::Unknown, Some(p)) => p.in_recovery || p.writable(),
        (Role::Unknown, None) => false,
    }
}

fn update_replica(
    node: &Node,
    probe: Option<&Probe>,
    lag: &LagTracker,
    now: Instant,
    config: &PoolConfig,
) {
    let Some(pos) = probe.and_then(|p| p.position) else {
        return;
    };
    node.saw_replayed(pos);
    node.set_lagging(lag.lag(pos, now) > config.max_replica_lag);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgkeel_core::Lsn;

    const PRIMARY: Probe = Probe {
        in_recovery: false,
        read_only: false,
        position: Some(Lsn(1)),
        timeline: Some(1),
    };
    const STANDBY: Probe = Probe {
        in_recovery: true,
        read_only: true,
        position: Some(Lsn(1)),
        timeline: None,
    };
    const FENCED: Probe = Probe {
        read_only: true,
        ..PRIMARY
    };

    #[test]
    fn role_contradictions() {
        assert!(!contradicts(Role::Primary, Some(&PRIMARY)));
        assert!(contradicts(Role::Primary, None));
        assert!(contradicts(Role::Primary, Some(&STANDBY)));
        assert!(contradicts(Role::Primary, Some(&FENCED)));
        assert!(!contradicts(Role::Replica, Some(&STANDBY)));
        assert!(!contradicts(Role::Replica, None));
        assert!(contradicts(Role::Replica, Some(&PRIMARY)));
        assert!(!contradicts(Role::Unknown, None));
        assert!(!contradicts(Role::Unknown, Some(&FENCED)));
        assert!(contradicts(Role::Unknown, Some(&STANDBY)));
        assert!(contradicts(Role::Unknown, Some(&PRIMARY)));
    }
}

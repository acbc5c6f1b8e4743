//! The decision rules.

use pgkeel_core::Lsn;
use pgkeel_core::config::STANDBY_SOURCE;

use crate::state::{Action, DataState, HaConfig, Local, LocalPg, Peer, View};

/// Decides what this agent does now.
pub fn decide(view: &View, local: &Local, cfg: &HaConfig) -> Vec<Action> {
    let me = local.name.as_str();
    let running_primary = matches!(
        local.pg,
        LocalPg::Running {
            in_recovery: false,
            ..
        }
    );
    if !local.dcs_ok {
        // Without a lease nothing may be decided; a primary must stop
        // accepting writes before its lease can expire and someone else
        // can win the key, unless every member promised not to take it
        // (failsafe): that cover also spans etcd coming back, from the
        // lease found expired until a new one lets it take the key again.
        return if running_primary && local.failsafe_ok {
            vec![Action::Wait(
                "no lease (etcd unreachable or lease expired): every member confirms this primary (failsafe)".into(),
            )]
        } else if running_primary && local.lease_valid {
            vec![Action::Wait(
                "etcd unreachable: lease still valid, asking members to confirm".into(),
            )]
        } else if running_primary {
            vec![Action::Fence]
        } else {
            vec![Action::Wait(
                "etcd unreachable: keeping PostgreSQL as it is".into(),
            )]
        };
    }
    if view.paused {
        return vec![Action::Wait("paused: no automatic action".into())];
    }
    match view.leader.as_deref() {
        Some(leader) if leader == me => as_leader(view, local, cfg),
        Some(leader) => as_follower(leader, local),
        None => without_leader(view, local, cfg),
    }
}

fn as_leader(view: &View, local: &Local, cfg: &HaConfig) -> Vec<Action> {
    if view.standby_cluster {
        return as_standby_leader(local);
    }
    match &local.pg {
        LocalPg::Running {
            in_recovery: true, ..
        } => vec![Action::Promote],
        LocalPg::Stopped => match local.data {
            DataState::Missing => vec![Action::ReleaseLeader],
            _ => vec![Action::StartPrimary],
        },
        LocalPg::Running {
            in_recovery: false,
            healthy_standbys,
            sync_standbys,
            lsn,
            ..
        } => {
            let mut actions = vec![Action::PublishOptime, Action::EnsureSlots];
            if view.failover_to.is_some() {
                actions.push(Action::ClearHandover);
            }
            if let Some((from, to)) = &view.switchover {
                if from.as_deref().is_some_and(|f| f != local.name)
                    || to.as_deref() == Some(local.name.as_str())
                {
                    // Done (this node is the target), or stale.
                    actions.push(Action::ClearHandover);
                } else if handover_ready(view, cfg, to.as_deref(), *lsn, healthy_standbys) {
                    return vec![
                        Action::PublishOptime,
                        Action::Demote { clean: true },
                        Action::ReleaseLeader,
                    ];
                } else {
                    actions.push(Action::Wait(
                        "switchover: waiting for the target to catch up".into(),
                    ));
                }
            }
            if cfg.mode.is_synchronous() {
                let names: Vec<String> = healthy_standbys.iter().map(|(n, _)| n.clone()).collect();
                let (standbys, quorum) = sync_plan(cfg, &names);
                let premature_degrade =
                    standbys.is_empty() && !sync_standbys.is_empty() && !local.degrade_allowed;
                if premature_degrade {
                    actions.push(Action::Wait(
                        "no synchronous standby streaming yet: keeping the set".into(),
                    ));
                } else if &standbys != sync_standbys {
                    actions.push(Action::SetSyncStandbys { standbys, quorum });
                } else if view.sync.is_none() && !sync_standbys.is_empty() {
                    // PostgreSQL already names them (bootstrap): publish.
                    actions.push(Action::NarrowSync { standbys, quorum });
                } else if let Some((published, _)) = &view.sync
                    && published != sync_standbys
                    && !sync_standbys.is_empty()
                {
                    // Never narrowed to nothing: while degraded (no healthy
                    // synchronous standby) the last set stays published, as
                    // it alone may hold what was acknowledged before.
                    let caught_up = healthy_standbys
                        .iter()
                        .filter(|(n, flushed)| {
                            sync_standbys.contains(n) && lsn_at_least(*flushed, view.sync_since)
                        })
                        .count();
                    if caught_up >= quorum {
                        actions.push(Action::NarrowSync { standbys, quorum });
                    }
                }
            }
            actions
        }
    }
}

/// The leader of a standby cluster: a standby that follows the primary
/// cluster (its members cascade from it), never promoted until the cluster
/// is (`promote-cluster`). A leader holding primary data (the cluster was
/// just demoted) stops and rewinds onto the primary cluster.
fn as_standby_leader(local: &Local) -> Vec<Action> {
    let source = STANDBY_SOURCE;
    match (&local.pg, local.data) {
        (
            LocalPg::Running {
                in_recovery: true, ..
            },
            _,
        ) => {
            let follow = if local.upstream.as_deref() == Some(source) {
                Action::Wait("standby leader: following the primary cluster".into())
            } else {
                Action::Repoint {
                    leader: source.into(),
                }
            };
            vec![Action::EnsureSlots, follow]
        }
        (LocalPg::Stopped, DataState::Missing) => vec![Action::ReleaseLeader],
        (LocalPg::Stopped, DataState::Standby) => vec![Action::StartStandby {
            leader: Some(source.into()),
        }],
        // A primary cluster made to follow another (`demote-cluster`):
        // stop cleanly, rewind onto the other cluster's history (cloning
        // when that fails), follow it.
        (
            LocalPg::Running {
                in_recovery: false, ..
            },
            _,
        ) => vec![Action::Demote { clean: true }],
        (LocalPg::Stopped, DataState::Primary) => vec![Action::Rewind {
            leader: source.into(),
        }],
    }
}

/// A switchover target is ready when it streams from this primary (live
/// `pg_stat_replication`) and is close behind: the clean stop that follows
/// ships the rest, since a fast shutdown waits until connected standbys
/// have flushed all WAL.
fn handover_ready(
    view: &View,
    cfg: &HaConfig,
    to: Option<&str>,
    primary_lsn: Option<Lsn>,
    streaming: &[(String, Option<Lsn>)],
) -> bool {
    let close = |name: &str| {
        streaming.iter().any(|(n, flushed)| {
            n == name
                && match (primary_lsn, flushed) {
                    (Some(p), Some(f)) => p.bytes_after(*f) <= cfg.maximum_lag_on_failover,
                    _ => false,
                }
        })
    };
    let eligible = |p: &Peer| p.running_replica && !p.nofailover && close(&p.name);
    match to {
        Some(target) => view
            .peers
            .iter()
            .any(|p| p.name == target && p.running_replica && close(target)),
        None => view.peers.iter().any(eligible),
    }
}

/// The synchronous standbys a primary should name: the healthy ones in
/// configuration order, quorum capped by how many there are. With none
/// healthy: every configured standby (strict: commits block) or none
/// (commits proceed alone).
pub fn sync_plan(cfg: &HaConfig, healthy: &[String]) -> (Vec<String>, usize) {
    let healthy: Vec<String> = cfg
        .members
        .iter()
        .filter(|m| healthy.contains(m))
        .cloned()
        .collect();
    if healthy.is_empty() {
        if cfg.strict_sync {
            return (cfg.members.clone(), cfg.sync_count);
        }
        return (vec![], 0);
    }
    let quorum = cfg.sync_count.min(healthy.len());
    (healthy, quorum)
}

fn as_follower(leader: &str, local: &Local) -> Vec<Action> {
    match (&local.pg, local.data) {
        (
            LocalPg::Running {
                in_recovery: false, ..
            },
            _,
        ) => vec![Action::Demote { clean: false }],
        (
            LocalPg::Running {
                in_recovery: true, ..
            },
            _,
        ) => {
            if local.diverged {
                // A replica's data is redundant: rebuild it from the leader.
                vec![Action::Reclone {
                    leader: leader.into(),
                }]
            } else if local.upstream.as_deref() == Some(leader) {
                vec![Action::Wait(format!("following {leader}"))]
            } else {
                vec![Action::Repoint {
                    leader: leader.into(),
                }]
            }
        }
        (LocalPg::Stopped, DataState::Missing) => vec![Action::Reclone {
            leader: leader.into(),
        }],
        (LocalPg::Stopped, DataState::Primary) => vec![Action::Rewind {
            leader: leader.into(),
        }],
        (LocalPg::Stopped, DataState::Standby) => vec![Action::StartStandby {
            leader: Some(leader.into()),
        }],
    }
}

fn without_leader(view: &View, local: &Local, cfg: &HaConfig) -> Vec<Action> {
    let me = local.name.as_str();
    // A requested handover names who leads next; the node handing over
    // (or any node not named) must not take the key back meanwhile.
    let handover_elsewhere = view.switchover.as_ref().is_some_and(|(from, to)| {
        from.as_deref() == Some(me) || to.as_deref().is_some_and(|t| t != me)
    }) || view.failover_to.as_deref().is_some_and(|t| t != me);
    match (&local.pg, local.data) {
        (
            LocalPg::Running {
                in_recovery: false, ..
            },
            _,
        ) if handover_elsewhere => {
            vec![Action::Demote { clean: true }]
        }
        (LocalPg::Stopped, DataState::Primary) if handover_elsewhere => {
            vec![Action::Wait(
                "handover in progress: waiting for the new leader".into(),
            )]
        }
        // A primary without the key (bootstrap, or agent restart): take it;
        // if another node wins, the next loop demotes this one.
        (
            LocalPg::Running {
                in_recovery: false, ..
            },
            _,
        ) => vec![Action::AcquireLeader],
        (
            LocalPg::Running {
                in_recovery: true, ..
            },
            _,
        ) => {
            if local.failsafe_hold {
                vec![Action::Wait(
                    "no leader key, but the primary confirmed itself alive (failsafe)".into(),
                )]
            } else if view.peers.iter().any(|p| p.running_primary) {
                vec![Action::Wait(
                    "no leader, but a primary is running: waiting for it to take the key".into(),
                )]
            } else if !view.vacancy_confirmed
                && !view.standby_cluster
                && view.failover_to.is_none()
                && view.switchover.is_none()
            {
                vec![Action::Wait(
                    "no leader: waiting one TTL before an election".into(),
                )]
            } else if is_candidate(view, local, cfg) {
                vec![Action::AcquireLeader]
            } else {
                vec![Action::Wait(
                    "no leader; another member is the better candidate".into(),
                )]
            }
        }
        (LocalPg::Stopped, DataState::Missing) => {
            vec![Action::Wait("no leader to clone from".into())]
        }
        // The last leader restarting with its own data: nobody promoted
        // since (no one else held the key), so its data is the newest.
        (LocalPg::Stopped, DataState::Primary)
            if view.optime_leader.as_deref() == Some(local.name.as_str()) =>
        {
            vec![Action::AcquireLeader]
        }
        // Anything else starts read-only, following the last known leader
        // (if it is alive, streaming from it keeps this node from taking
        // over); it may then win an election.
        (LocalPg::Stopped, _) => vec![Action::StartStandby {
            leader: view.optime_leader.clone().filter(|l| l != &local.name),
        }],
    }
}

/// Whether this running standby should take the leader key now.
fn is_candidate(view: &View, local: &Local, cfg: &HaConfig) -> bool {
    let LocalPg::Running { lsn, streaming, .. } = &local.pg else {
        return false;
    };
    let me = local.name.as_str();
    // An explicit request names the node.
    if let Some(target) = view.failover_to.as_deref() {
        return target == me;
    }
    if let Some((_, to)) = &view.switchover {
        return match to.as_deref() {
            Some(target) => target == me && lsn_at_least(*lsn, view.optime),
            None => rank_first(view, local, cfg, *lsn, true),
        };
    }
    // A standby still receiving WAL proves the primary is alive, unless it
    // streams from the primary cluster (a standby cluster's members race
    // no primary of their own: two standby leaders would only both follow).
    let from_member = local.upstream.as_deref() != Some(STANDBY_SOURCE);
    if local.nofailover || (*streaming && from_member) {
        return false;
    }
    if !cfg.mode.is_synchronous() || view.sync.as_ref().is_none_or(|(set, _)| set.is_empty()) {
        if let (Some(optime), Some(mine)) = (view.optime, *lsn)
            && optime.bytes_after(mine) > cfg.maximum_lag_on_failover
        {
            return false;
        }
        return rank_first(view, local, cfg, *lsn, false);
    }
    // sync/quorum: only a member of the synchronous set, and only when enough
    // of the set is visible that the most advanced visible one must hold
    // every acknowledged commit.
    let Some((set, quorum)) = &view.sync else {
        return false;
    };
    if !set.iter().any(|s| s == me) {
        return false;
    }
    let visible = set
        .iter()
        .filter(|s| {
            *s == me
                || view
                    .peers
                    .iter()
                    .any(|p| &p.name == *s && p.running_replica)
        })
        .count();
    let needed = set.len().saturating_sub(*quorum) + 1;
    visible >= needed && rank_first(view, local, cfg, *lsn, false)
}

fn lsn_at_least(lsn: Option<Lsn>, optime: Option<Lsn>) -> bool {
    match (lsn, optime) {
        (Some(l), Some(o)) => l >= o,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Whether this node ranks first among the eligible standbys: highest WAL
/// position, ties broken by configuration order.
fn rank_first(
    view: &View,
    local: &Local,
    cfg: &HaConfig,
    lsn: Option<Lsn>,
    switchover: bool,
) -> bool {
    let sync_set = if cfg.mode.is_synchronous() && !switchover {
        view.sync
            .as_ref()
            .filter(|(s, _)| !s.is_empty())
            .map(|(s, _)| s.clone())
    } else {
        None
    };
    let eligible = |name: &str| {
        sync_set
            .as_ref()
            .is_none_or(|s| s.iter().any(|n| n == name))
    };
    let mine = candidate_rank(cfg, &local.name, lsn);
    view.peers
        .iter()
        .filter(|p| p.running_replica && !p.nofailover && eligible(&p.name))
        .all(|p| candidate_rank(cfg, &p.name, p.lsn) < mine)
}

/// Orders candidates: by WAL position, then earlier in the configuration.
pub fn candidate_rank(cfg: &HaConfig, name: &str, lsn: Option<Lsn>) -> (Lsn, usize) {
    let position = cfg
        .members
        .iter()
        .position(|m| m == name)
        .unwrap_or(usize::MAX);
    (lsn.unwrap_or_default(), usize::MAX - position)
}

#[cfg(test)]
mod tests;

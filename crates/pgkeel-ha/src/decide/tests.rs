//! Table tests, one per transition.

use pgkeel_core::config::STANDBY_SOURCE;
use pgkeel_core::{Lsn, ReplicationMode};

use super::*;
use crate::state::{Action, DataState, HaConfig, Local, LocalPg, Peer, View};

pub(crate) fn cfg(mode: ReplicationMode) -> HaConfig {
    HaConfig {
        mode,
        sync_count: 1,
        strict_sync: false,
        maximum_lag_on_failover: 1000,
        members: vec!["a".into(), "b".into(), "c".into()],
    }
}

fn primary(lsn: u64, healthy: &[&str], sync: &[&str]) -> LocalPg {
    LocalPg::Running {
        in_recovery: false,
        lsn: Some(Lsn(lsn)),
        timeline: Some(1),
        streaming: false,
        healthy_standbys: healthy
            .iter()
            .map(|s| (s.to_string(), Some(Lsn(lsn))))
            .collect(),
        sync_standbys: sync.iter().map(|s| s.to_string()).collect(),
    }
}

fn replica(lsn: u64, streaming: bool) -> LocalPg {
    LocalPg::Running {
        in_recovery: true,
        lsn: Some(Lsn(lsn)),
        timeline: Some(1),
        streaming,
        healthy_standbys: vec![],
        sync_standbys: vec![],
    }
}

fn local(name: &str, pg: LocalPg, data: DataState) -> Local {
    Local {
        name: name.into(),
        pg,
        data,
        dcs_ok: true,
        lease_valid: false,
        nofailover: false,
        failsafe_ok: false,
        failsafe_hold: false,
        degrade_allowed: true,
        upstream: None,
        diverged: false,
    }
}

fn peer(name: &str, lsn: u64) -> Peer {
    Peer {
        name: name.into(),
        running_replica: true,
        running_primary: false,
        lsn: Some(Lsn(lsn)),
        nofailover: false,
    }
}

fn view(leader: Option<&str>, peers: Vec<Peer>) -> View {
    View {
        leader: leader.map(Into::into),
        peers,
        vacancy_confirmed: true,
        ..Default::default()
    }
}

#[test]
fn no_election_before_the_vacancy_is_confirmed() {
    let c = cfg(ReplicationMode::Async);
    let me = local("b", replica(50, false), DataState::Standby);
    let mut v = view(None, vec![]);
    v.vacancy_confirmed = false;
    assert!(matches!(decide(&v, &me, &c)[0], Action::Wait(_)));
    v.vacancy_confirmed = true;
    assert_eq!(decide(&v, &me, &c), vec![Action::AcquireLeader]);
}

#[test]
fn leader_primary_keeps_duties_and_names_healthy_sync_standbys() {
    let c = cfg(ReplicationMode::Quorum);
    let me = local("a", primary(100, &["b"], &["b", "c"]), DataState::Primary);
    let actions = decide(&view(Some("a"), vec![]), &me, &c);
    assert!(actions.contains(&Action::PublishOptime));
    assert!(actions.contains(&Action::EnsureSlots));
    assert!(actions.contains(&Action::SetSyncStandbys {
        standbys: vec!["b".into()],
        quorum: 1
    }));
}

#[test]
fn no_sync_change_when_already_right_and_none_in_async() {
    let me = local(
        "a",
        primary(100, &["b", "c"], &["b", "c"]),
        DataState::Primary,
    );
    let actions = decide(&view(Some("a"), vec![]), &me, &cfg(ReplicationMode::Quorum));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SetSyncStandbys { .. }))
    );
    let me = local("a", primary(100, &["b"], &[]), DataState::Primary);
    let actions = decide(&view(Some("a"), vec![]), &me, &cfg(ReplicationMode::Async));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SetSyncStandbys { .. }))
    );
}

#[test]
fn published_sync_set_narrows_only_after_new_members_caught_up() {
    let c = cfg(ReplicationMode::Quorum);
    let mut me = local("a", primary(100, &["c"], &["c"]), DataState::Primary);
    let mut v = view(Some("a"), vec![]);
    v.sync = Some((vec!["b".into(), "c".into()], 1));
    v.sync_since = Some(Lsn(100));
    if let LocalPg::Running {
        healthy_standbys, ..
    } = &mut me.pg
    {
        healthy_standbys[0].1 = Some(Lsn(90));
    }
    assert!(
        !decide(&v, &me, &c)
            .iter()
            .any(|a| matches!(a, Action::NarrowSync { .. }))
    );
    if let LocalPg::Running {
        healthy_standbys, ..
    } = &mut me.pg
    {
        healthy_standbys[0].1 = Some(Lsn(100));
    }
    assert!(decide(&v, &me, &c).contains(&Action::NarrowSync {
        standbys: vec!["c".into()],
        quorum: 1
    }));
}

#[test]
fn no_degrade_before_standbys_had_a_ttl_to_reconnect() {
    let c = cfg(ReplicationMode::Quorum);
    let mut me = local("a", primary(100, &[], &["b", "c"]), DataState::Primary);
    me.degrade_allowed = false;
    let actions = decide(&view(Some("a"), vec![]), &me, &c);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::SetSyncStandbys { .. })),
        "{actions:?}"
    );
    me.degrade_allowed = true;
    assert!(
        decide(&view(Some("a"), vec![]), &me, &c).contains(&Action::SetSyncStandbys {
            standbys: vec![],
            quorum: 0
        })
    );
}

#[test]
fn sync_plan_degrades_or_blocks() {
    let mut c = cfg(ReplicationMode::Sync);
    assert_eq!(sync_plan(&c, &[]), (vec![], 0));
    c.strict_sync = true;
    assert_eq!(sync_plan(&c, &[]).1, 1);
    assert_eq!(
        sync_plan(&c, &["c".into(), "b".into()]),
        (vec!["b".into(), "c".into()], 1)
    );
}

#[test]
fn lost_lease_fences_a_primary_and_leaves_a_replica_alone() {
    let mut me = local("a", primary(1, &[], &[]), DataState::Primary);
    me.dcs_ok = false;
    assert_eq!(
        decide(&view(Some("a"), vec![]), &me, &cfg(ReplicationMode::Async)),
        vec![Action::Fence]
    );
    let mut me = local("b", replica(1, true), DataState::Standby);
    me.dcs_ok = false;
    assert!(matches!(
        decide(&view(None, vec![]), &me, &cfg(ReplicationMode::Async))[0],
        Action::Wait(_)
    ));
}

#[test]
fn failsafe_keeps_a_confirmed_primary_and_holds_back_replicas() {
    let c = cfg(ReplicationMode::Async);
    let mut me = local("a", primary(1, &[], &[]), DataState::Primary);
    me.dcs_ok = false;
    me.lease_valid = true;
    assert!(matches!(
        decide(&view(Some("a"), vec![]), &me, &c)[0],
        Action::Wait(_)
    ));
    me.lease_valid = false;
    me.failsafe_ok = true;
    assert!(matches!(
        decide(&view(Some("a"), vec![]), &me, &c)[0],
        Action::Wait(_)
    ));
    let mut b = local("b", replica(50, false), DataState::Standby);
    b.failsafe_hold = true;
    assert!(matches!(
        decide(&view(None, vec![]), &b, &c)[0],
        Action::Wait(_)
    ));
}

/// etcd back after a partition that cut the primary from etcd alone: its
/// lease expired meanwhile (the key is vacant), no new lease yet, but every
/// member's failsafe promise still covers it. It must wait for the new
/// lease and take the key back, not fence: fencing there stopped a healthy
/// primary exactly when the partition healed (found by
/// `tests/partition.rs`).
#[test]
fn etcd_back_with_the_lease_expired_a_failsafe_primary_waits_and_retakes_the_key() {
    let c = cfg(ReplicationMode::Quorum);
    let streaming = vec![peer("b", 100), peer("c", 100)];
    let mut me = local(
        "a",
        primary(100, &["b", "c"], &["b", "c"]),
        DataState::Primary,
    );
    me.dcs_ok = false;
    me.lease_valid = false;
    me.failsafe_ok = true;
    let actions = decide(&view(None, streaming.clone()), &me, &c);
    assert!(matches!(actions[..], [Action::Wait(_)]), "{actions:?}");
    // Uncovered, the same primary fences.
    me.failsafe_ok = false;
    assert_eq!(
        decide(&view(None, streaming.clone()), &me, &c),
        vec![Action::Fence]
    );
    // The new lease: it takes the vacant key again.
    me.dcs_ok = true;
    me.lease_valid = true;
    assert_eq!(
        decide(&view(None, streaming), &me, &c),
        vec![Action::AcquireLeader]
    );
}

#[test]
fn leader_key_holder_in_recovery_promotes_and_stopped_one_starts() {
    let c = cfg(ReplicationMode::Async);
    let me = local("b", replica(5, false), DataState::Standby);
    assert_eq!(
        decide(&view(Some("b"), vec![]), &me, &c),
        vec![Action::Promote]
    );
    let me = local("a", LocalPg::Stopped, DataState::Primary);
    assert_eq!(
        decide(&view(Some("a"), vec![]), &me, &c),
        vec![Action::StartPrimary]
    );
    let me = local("a", LocalPg::Stopped, DataState::Missing);
    assert_eq!(
        decide(&view(Some("a"), vec![]), &me, &c),
        vec![Action::ReleaseLeader]
    );
}

#[test]
fn primary_that_sees_another_leader_demotes_and_rejoins_by_rewind() {
    let c = cfg(ReplicationMode::Async);
    let me = local("a", primary(9, &[], &[]), DataState::Primary);
    assert_eq!(
        decide(&view(Some("b"), vec![]), &me, &c),
        vec![Action::Demote { clean: false }]
    );
    let me = local("a", LocalPg::Stopped, DataState::Primary);
    assert_eq!(
        decide(&view(Some("b"), vec![]), &me, &c),
        vec![Action::Rewind { leader: "b".into() }]
    );
    let me = local("a", LocalPg::Stopped, DataState::Missing);
    assert_eq!(
        decide(&view(Some("b"), vec![]), &me, &c),
        vec![Action::Reclone { leader: "b".into() }]
    );
    let me = local("a", LocalPg::Stopped, DataState::Standby);
    assert_eq!(
        decide(&view(Some("b"), vec![]), &me, &c),
        vec![Action::StartStandby {
            leader: Some("b".into())
        }]
    );
}

#[test]
fn standby_follows_the_leader() {
    let c = cfg(ReplicationMode::Async);
    let mut me = local("c", replica(5, true), DataState::Standby);
    me.upstream = Some("a".into());
    assert_eq!(
        decide(&view(Some("b"), vec![]), &me, &c),
        vec![Action::Repoint { leader: "b".into() }]
    );
    me.upstream = Some("b".into());
    assert!(matches!(
        decide(&view(Some("b"), vec![]), &me, &c)[0],
        Action::Wait(_)
    ));
}

#[test]
fn most_advanced_standby_wins_ties_by_config_order() {
    let c = cfg(ReplicationMode::Async);
    let b = local("b", replica(50, false), DataState::Standby);
    let c_node = local("c", replica(60, false), DataState::Standby);
    assert!(matches!(
        decide(&view(None, vec![peer("c", 60)]), &b, &c)[0],
        Action::Wait(_)
    ));
    assert_eq!(
        decide(&view(None, vec![peer("b", 50)]), &c_node, &c),
        vec![Action::AcquireLeader]
    );
    // Tie: b comes first in the configuration.
    let c_tie = local("c", replica(50, false), DataState::Standby);
    assert!(matches!(
        decide(&view(None, vec![peer("b", 50)]), &c_tie, &c)[0],
        Action::Wait(_)
    ));
    assert_eq!(
        decide(&view(None, vec![peer("c", 50)]), &b, &c),
        vec![Action::AcquireLeader]
    );
}

#[test]
fn streaming_standby_or_nofailover_never_takes_over() {
    let c = cfg(ReplicationMode::Async);
    let me = local("b", replica(50, true), DataState::Standby);
    assert!(matches!(
        decide(&view(None, vec![]), &me, &c)[0],
        Action::Wait(_)
    ));
    let mut me = local("b", replica(50, false), DataState::Standby);
    me.nofailover = true;
    assert!(matches!(
        decide(&view(None, vec![]), &me, &c)[0],
        Action::Wait(_)
    ));
}

#[test]
fn async_lag_limit_blocks_a_far_behind_standby() {
    let c = cfg(ReplicationMode::Async);
    let me = local("b", replica(10, false), DataState::Standby);
    let mut v = view(None, vec![]);
    v.optime = Some(Lsn(5000));
    assert!(matches!(decide(&v, &me, &c)[0], Action::Wait(_)));
    v.optime = Some(Lsn(500));
    assert_eq!(decide(&v, &me, &c), vec![Action::AcquireLeader]);
}

#[test]
fn quorum_needs_the_set_visible_and_membership() {
    let c = cfg(ReplicationMode::Quorum);
    let me = local("b", replica(50, false), DataState::Standby);
    let mut v = view(None, vec![]);
    v.sync = Some((vec!["b".into(), "c".into()], 1));
    // c is not visible: c may hold a commit b lacks.
    assert!(matches!(decide(&v, &me, &c)[0], Action::Wait(_)));
    v.peers = vec![peer("c", 40)];
    assert_eq!(decide(&v, &me, &c), vec![Action::AcquireLeader]);
    // Not in the set: never.
    v.sync = Some((vec!["c".into()], 1));
    assert!(matches!(decide(&v, &me, &c)[0], Action::Wait(_)));
}

#[test]
fn sync_first_set_member_may_win_alone() {
    let c = cfg(ReplicationMode::Sync);
    let me = local("b", replica(50, false), DataState::Standby);
    let mut v = view(None, vec![peer("c", 99)]);
    v.sync = Some((vec!["b".into()], 1));
    // c is further ahead but not synchronous; b holds every acknowledged commit.
    assert_eq!(decide(&v, &me, &c), vec![Action::AcquireLeader]);
}

#[test]
fn stopped_nodes_without_leader() {
    let c = cfg(ReplicationMode::Async);
    let mut v = view(None, vec![]);
    v.optime_leader = Some("a".into());
    let a = local("a", LocalPg::Stopped, DataState::Primary);
    assert_eq!(decide(&v, &a, &c), vec![Action::AcquireLeader]);
    let b = local("b", LocalPg::Stopped, DataState::Primary);
    assert_eq!(
        decide(&v, &b, &c),
        vec![Action::StartStandby {
            leader: Some("a".into())
        }]
    );
    // A running primary without the key holds everyone else back.
    let mut v = view(None, vec![]);
    v.peers.push(Peer {
        running_replica: false,
        running_primary: true,
        ..peer("a", 10)
    });
    let b = local("b", replica(50, false), DataState::Standby);
    assert!(matches!(decide(&v, &b, &c)[0], Action::Wait(_)));
    let running = local("a", primary(1, &[], &[]), DataState::Primary);
    assert_eq!(
        decide(&view(None, vec![]), &running, &c),
        vec![Action::AcquireLeader]
    );
}

#[test]
fn switchover_waits_for_target_then_hands_over_and_target_wins() {
    let c = cfg(ReplicationMode::Quorum);
    let mut me = local(
        "a",
        primary(100_000, &["b", "c"], &["b", "c"]),
        DataState::Primary,
    );
    if let LocalPg::Running {
        healthy_standbys, ..
    } = &mut me.pg
    {
        healthy_standbys[0].1 = Some(Lsn(10));
    }
    let mut v = view(Some("a"), vec![peer("b", 90), peer("c", 100)]);
    v.switchover = Some((Some("a".into()), Some("b".into())));
    // b streams but is far behind (more than maximum_lag_on_failover).
    assert!(
        decide(&v, &me, &c)
            .iter()
            .any(|a| matches!(a, Action::Wait(_)))
    );
    if let LocalPg::Running {
        healthy_standbys, ..
    } = &mut me.pg
    {
        healthy_standbys[0].1 = Some(Lsn(99_500));
    }
    assert_eq!(
        decide(&v, &me, &c),
        vec![
            Action::PublishOptime,
            Action::Demote { clean: true },
            Action::ReleaseLeader
        ]
    );
    // After the key is released only the target takes it.
    let mut v = view(None, vec![peer("b", 100)]);
    v.switchover = Some((Some("a".into()), Some("b".into())));
    v.optime = Some(Lsn(100));
    let b = local("b", replica(100, false), DataState::Standby);
    let cn = local("c", replica(100, false), DataState::Standby);
    assert_eq!(decide(&v, &b, &c), vec![Action::AcquireLeader]);
    assert!(matches!(decide(&v, &cn, &c)[0], Action::Wait(_)));
}

#[test]
fn node_handing_over_never_takes_the_key_back() {
    let c = cfg(ReplicationMode::Sync);
    let mut v = view(None, vec![peer("b", 100)]);
    v.switchover = Some((Some("a".into()), Some("b".into())));
    v.optime_leader = Some("a".into());
    let stopped = local("a", LocalPg::Stopped, DataState::Primary);
    assert!(matches!(decide(&v, &stopped, &c)[0], Action::Wait(_)));
    let running = local("a", primary(100, &[], &[]), DataState::Primary);
    assert_eq!(
        decide(&v, &running, &c),
        vec![Action::Demote { clean: true }]
    );
}

#[test]
fn manual_failover_target_only_and_paused_does_nothing() {
    let c = cfg(ReplicationMode::Async);
    let mut v = view(None, vec![peer("c", 100)]);
    v.failover_to = Some("b".into());
    let b = local("b", replica(10, false), DataState::Standby);
    assert_eq!(decide(&v, &b, &c), vec![Action::AcquireLeader]);
    v.paused = true;
    assert!(matches!(decide(&v, &b, &c)[0], Action::Wait(_)));
}

mod random;

fn standby_view(leader: &str) -> View {
    View {
        standby_cluster: true,
        ..view(Some(leader), vec![peer("b", 10)])
    }
}

#[test]
fn a_standby_leader_follows_the_primary_cluster_and_is_never_promoted() {
    let c = cfg(ReplicationMode::Quorum);
    let mut me = local("a", replica(100, true), DataState::Standby);
    assert_eq!(
        decide(&standby_view("a"), &me, &c),
        vec![
            Action::EnsureSlots,
            Action::Repoint {
                leader: STANDBY_SOURCE.into()
            }
        ]
    );
    me.upstream = Some(STANDBY_SOURCE.into());
    assert!(matches!(
        decide(&standby_view("a"), &me, &c).as_slice(),
        [Action::EnsureSlots, Action::Wait(_)]
    ));
    // Once the cluster is promoted, the same leader is.
    let promoted = View {
        standby_cluster: false,
        ..standby_view("a")
    };
    assert_eq!(decide(&promoted, &me, &c), vec![Action::Promote]);
}

#[test]
fn a_stopped_standby_leader_starts_following_the_primary_cluster() {
    let c = cfg(ReplicationMode::Async);
    let me = local("a", LocalPg::Stopped, DataState::Standby);
    assert_eq!(
        decide(&standby_view("a"), &me, &c),
        vec![Action::StartStandby {
            leader: Some(STANDBY_SOURCE.into())
        }]
    );
    let lost = local("a", LocalPg::Stopped, DataState::Missing);
    assert_eq!(
        decide(&standby_view("a"), &lost, &c),
        vec![Action::ReleaseLeader]
    );
    // A demoted cluster's leader: stops cleanly, then rewinds onto the
    // primary cluster's history.
    let running_primary = local("a", primary(10, &[], &[]), DataState::Primary);
    assert_eq!(
        decide(&standby_view("a"), &running_primary, &c),
        vec![Action::Demote { clean: true }]
    );
    let stopped_primary = local("a", LocalPg::Stopped, DataState::Primary);
    assert_eq!(
        decide(&standby_view("a"), &stopped_primary, &c),
        vec![Action::Rewind {
            leader: STANDBY_SOURCE.into()
        }]
    );
}

#[test]
fn standby_cluster_members_cascade_from_its_leader_and_elect_a_new_one() {
    let c = cfg(ReplicationMode::Quorum);
    let member = local("b", replica(100, true), DataState::Standby);
    assert_eq!(
        decide(&standby_view("a"), &member, &c),
        vec![Action::Repoint { leader: "a".into() }]
    );
    // The leader is gone: the most advanced member takes the key (and then
    // follows the primary cluster, as above).
    let orphan = local("b", replica(100, false), DataState::Standby);
    let leaderless = View {
        standby_cluster: true,
        ..view(None, vec![peer("c", 50)])
    };
    assert_eq!(
        decide(&leaderless, &orphan, &c),
        vec![Action::AcquireLeader]
    );
}

#[test]
fn a_standby_cluster_elects_at_once_a_member_streaming_from_the_primary_cluster() {
    let c = cfg(ReplicationMode::Async);
    // Bootstrap: the first member, a copy of the primary cluster, streams
    // from it and takes the key without waiting a TTL.
    let mut first = local("a", replica(100, true), DataState::Standby);
    first.upstream = Some(STANDBY_SOURCE.into());
    let fresh = View {
        standby_cluster: true,
        vacancy_confirmed: false,
        ..view(None, vec![])
    };
    assert_eq!(decide(&fresh, &first, &c), vec![Action::AcquireLeader]);
    // In a primary cluster the same stream proves a primary alive.
    let plain = View {
        standby_cluster: false,
        ..fresh.clone()
    };
    assert!(matches!(
        decide(&plain, &first, &c).as_slice(),
        [Action::Wait(_)]
    ));
}

#[test]
fn a_replica_that_diverged_from_the_leaders_history_is_rebuilt() {
    let c = cfg(ReplicationMode::Async);
    let mut me = local("b", replica(100, false), DataState::Standby);
    me.upstream = Some("a".into());
    assert!(matches!(
        decide(&view(Some("a"), vec![]), &me, &c).as_slice(),
        [Action::Wait(_)]
    ));
    me.diverged = true;
    assert_eq!(
        decide(&view(Some("a"), vec![]), &me, &c),
        vec![Action::Reclone { leader: "a".into() }]
    );
}

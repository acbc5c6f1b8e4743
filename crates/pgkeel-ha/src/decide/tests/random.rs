//! Randomised event sequences against a model cluster, checking the
//! invariants after every step:
//! - at most one leader key holder, and at most one writable primary;
//! - a node only starts as primary or promotes while holding the key;
//! - in sync/quorum mode, a promoted node holds every acknowledged commit.

use pgkeel_core::{Lsn, ReplicationMode};

use super::cfg;
use crate::decide;
use crate::state::{Action, DataState, Local, LocalPg, Peer, View};

/// A tiny deterministic PRNG (xorshift) so failures reproduce by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
struct Node {
    name: String,
    agent: bool,
    pg: bool,
    recovery: bool,
    data: DataState,
    lsn: u64,
    upstream: Option<usize>,
    cut_off: bool,
    /// The agent ran at least once since being cut off (so it fenced).
    ran_since_cut: bool,
    /// The last leader this agent saw.
    seen_leader: Option<usize>,
    /// This agent saw the leader seat become empty, or has waited long.
    vacancy: bool,
    /// Own loops run while no leader was seen.
    leaderless_loops: u32,
    sync: Vec<String>,
}

struct Model {
    nodes: Vec<Node>,
    leader: Option<usize>,
    optime: Option<(String, u64)>,
    sync: Option<(Vec<String>, usize)>,
    sync_since: Option<u64>,
    acked: u64,
    mode: ReplicationMode,
}

impl Model {
    fn new(mode: ReplicationMode) -> Self {
        let mut nodes: Vec<Node> = ["a", "b", "c"]
            .iter()
            .map(|n| Node {
                name: n.to_string(),
                agent: true,
                pg: true,
                recovery: true,
                data: DataState::Standby,
                lsn: 0,
                upstream: Some(0),
                cut_off: false,
                ran_since_cut: false,
                seen_leader: None,
                vacancy: false,
                leaderless_loops: 0,
                sync: vec![],
            })
            .collect();
        nodes[0].recovery = false;
        nodes[0].data = DataState::Primary;
        nodes[0].upstream = None;
        Model {
            nodes,
            leader: None,
            optime: None,
            sync: None,
            sync_since: None,
            acked: 0,
            mode,
        }
    }

    fn streaming(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.pg && n.recovery
            && n.upstream.is_some_and(|u| {
                let up = &self.nodes[u];
                up.pg && !up.recovery
            })
    }

    fn local(&self, i: usize) -> Local {
        let n = &self.nodes[i];
        let healthy: Vec<(String, Option<Lsn>)> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].upstream == Some(i) && self.streaming(j))
            .map(|j| (self.nodes[j].name.clone(), Some(Lsn(self.nodes[j].lsn))))
            .collect();
        Local {
            name: n.name.clone(),
            pg: if n.pg {
                LocalPg::Running {
                    in_recovery: n.recovery,
                    lsn: Some(Lsn(n.lsn)),
                    timeline: Some(1),
                    streaming: self.streaming(i),
                    healthy_standbys: healthy,
                    sync_standbys: n.sync.clone(),
                }
            } else {
                LocalPg::Stopped
            },
            data: n.data,
            dcs_ok: !n.cut_off,
            lease_valid: !n.cut_off,
            nofailover: false,
            failsafe_ok: false,
            failsafe_hold: false,
            degrade_allowed: true,
            upstream: n.upstream.map(|u| self.nodes[u].name.clone()),
            diverged: false,
        }
    }

    fn view(&self, i: usize) -> View {
        View {
            leader: self.leader.map(|l| self.nodes[l].name.clone()),
            // Member states come from the DCS and agents; whether a node
            // runs as primary is also probed directly.
            peers: (0..self.nodes.len())
                .filter(|&j| j != i)
                .map(|j| Peer {
                    name: self.nodes[j].name.clone(),
                    running_replica: self.nodes[j].agent
                        && !self.nodes[j].cut_off
                        && self.nodes[j].pg
                        && self.nodes[j].recovery,
                    running_primary: self.nodes[j].pg && !self.nodes[j].recovery,
                    lsn: Some(Lsn(self.nodes[j].lsn)),
                    nofailover: false,
                })
                .collect(),
            optime: self.optime.as_ref().map(|(_, l)| Lsn(*l)),
            optime_leader: self.optime.as_ref().map(|(n, _)| n.clone()),
            sync: self.sync.clone(),
            sync_since: self.sync_since.map(Lsn),
            vacancy_confirmed: self.nodes[i].vacancy,
            ..Default::default()
        }
    }

    /// Runs node `i`'s agent once.
    fn step_agent(&mut self, i: usize, seed: u64) {
        if !self.nodes[i].agent {
            return;
        }
        if self.nodes[i].cut_off {
            self.nodes[i].ran_since_cut = true;
        } else {
            let n = &mut self.nodes[i];
            match self.leader {
                Some(l) => {
                    n.seen_leader = Some(l);
                    n.vacancy = false;
                    n.leaderless_loops = 0;
                }
                None => {
                    n.leaderless_loops += 1;
                    // Saw the key vanish, or waited a TTL (3 loops).
                    n.vacancy = n.seen_leader.is_some() || n.leaderless_loops >= 3;
                }
            }
        }
        let cfg = cfg(self.mode);
        let actions = decide(&self.view(i), &self.local(i), &cfg);
        if std::env::var("HA_TRACE").is_ok() {
            eprintln!(
                "{} leader={:?} -> {:?}",
                self.nodes[i].name, self.leader, actions
            );
        }
        for action in actions {
            let me = &self.nodes[i].name.clone();
            match action {
                Action::Fence | Action::Demote { .. } => self.nodes[i].pg = false,
                Action::AcquireLeader => {
                    if self.leader.is_none() && !self.nodes[i].cut_off {
                        self.leader = Some(i);
                    }
                }
                Action::ReleaseLeader => {
                    if self.leader == Some(i) {
                        self.leader = None;
                    }
                }
                Action::StartPrimary => {
                    assert_eq!(
                        self.leader,
                        Some(i),
                        "seed {seed}: {me} started as primary without the key"
                    );
                    self.nodes[i].pg = true;
                    self.nodes[i].recovery = self.nodes[i].data == DataState::Standby;
                }
                Action::StartStandby { leader } => {
                    let n = &mut self.nodes[i];
                    n.pg = true;
                    n.recovery = true;
                    n.data = DataState::Standby;
                    n.upstream = leader.and_then(|l| ["a", "b", "c"].iter().position(|x| *x == l));
                }
                Action::Promote => {
                    assert_eq!(
                        self.leader,
                        Some(i),
                        "seed {seed}: {me} promoted without the key"
                    );
                    if self.mode.is_synchronous() {
                        assert!(
                            self.nodes[i].lsn >= self.acked,
                            "seed {seed}: {me} promoted at {} behind acknowledged {}",
                            self.nodes[i].lsn,
                            self.acked
                        );
                    }
                    let n = &mut self.nodes[i];
                    n.recovery = false;
                    n.data = DataState::Primary;
                    n.upstream = None;
                }
                Action::Rewind { leader } | Action::Reclone { leader } => {
                    let l = ["a", "b", "c"]
                        .iter()
                        .position(|x| *x == leader)
                        .unwrap_or(0);
                    let lsn = self.nodes[l].lsn;
                    let n = &mut self.nodes[i];
                    n.data = DataState::Standby;
                    n.lsn = lsn.min(n.lsn.max(lsn));
                    n.pg = true;
                    n.recovery = true;
                    n.upstream = Some(l);
                }
                Action::Repoint { leader } => {
                    self.nodes[i].upstream = ["a", "b", "c"].iter().position(|x| *x == leader);
                }
                Action::SetSyncStandbys { standbys, quorum } => {
                    // Union first, then PostgreSQL, as the runner does.
                    let (mut union, old_quorum) = self.sync.clone().unwrap_or_default();
                    for s in &standbys {
                        if !union.contains(s) {
                            union.push(s.clone());
                        }
                    }
                    let q = if union.len() > standbys.len() {
                        old_quorum.min(quorum).max(1)
                    } else {
                        quorum
                    };
                    self.sync = Some((union, q));
                    self.nodes[i].sync = standbys;
                    self.sync_since = Some(self.nodes[i].lsn);
                }
                Action::NarrowSync { standbys, quorum } => self.sync = Some((standbys, quorum)),
                Action::PublishOptime => self.optime = Some((me.clone(), self.nodes[i].lsn)),
                Action::EnsureSlots | Action::ClearHandover | Action::Wait(_) => {}
            }
        }
    }

    /// A client commits on every writable primary; acknowledged when the
    /// primary's synchronous standbys have it (sync modes) or at once.
    fn commit(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].pg || self.nodes[i].recovery {
                continue;
            }
            self.nodes[i].lsn += 1;
            let lsn = self.nodes[i].lsn;
            let sync = self.nodes[i].sync.clone();
            let confirmed = sync
                .iter()
                .filter(|s| {
                    self.nodes
                        .iter()
                        .position(|n| &n.name == *s)
                        .is_some_and(|j| self.streaming(j) && self.nodes[j].upstream == Some(i))
                })
                .count();
            let synchronous = self.mode.is_synchronous() && !sync.is_empty();
            if !synchronous || confirmed >= 1 {
                // Replication to the confirming standbys happens with the ack.
                for j in 0..self.nodes.len() {
                    if self.nodes[j].upstream == Some(i)
                        && self.streaming(j)
                        && sync.contains(&self.nodes[j].name)
                    {
                        self.nodes[j].lsn = lsn;
                    }
                }
                // Only synchronously confirmed commits are promised to
                // survive a failover; with no synchronous standby left
                // (non-strict degrade) the primary commits alone.
                if synchronous && self.leader == Some(i) {
                    self.acked = self.acked.max(lsn);
                }
            }
        }
    }

    fn replicate(&mut self) {
        for j in 0..self.nodes.len() {
            if self.streaming(j)
                && let Some(u) = self.nodes[j].upstream
            {
                self.nodes[j].lsn = self.nodes[j].lsn.max(self.nodes[u].lsn);
            }
        }
    }

    fn check(&self, seed: u64) {
        let writable = self.nodes.iter().filter(|n| n.pg && !n.recovery).count();
        assert!(
            writable <= 1,
            "seed {seed}: {writable} writable primaries: {:?}",
            self.nodes
        );
    }
}

fn run(mode: ReplicationMode, seeds: std::ops::Range<u64>) {
    let only: Option<u64> = std::env::var("HA_SEED").ok().and_then(|s| s.parse().ok());
    for seed in seeds.filter(|s| only.is_none_or(|o| o == *s)) {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut m = Model::new(mode);
        for _ in 0..300 {
            match rng.below(10) {
                0..=3 => {
                    let i = rng.below(3) as usize;
                    m.step_agent(i, seed);
                }
                4 | 5 => m.commit(),
                6 => m.replicate(),
                7 => {
                    // Failure or repair of one node.
                    let i = rng.below(3) as usize;
                    match rng.below(5) {
                        0 => {
                            // Host crash: PostgreSQL and agent gone.
                            m.nodes[i].pg = false;
                            m.nodes[i].agent = false;
                        }
                        1 => m.nodes[i].pg = false, // PostgreSQL alone crashes
                        2 => {
                            m.nodes[i].cut_off = true;
                            m.nodes[i].ran_since_cut = false;
                        }
                        _ => {
                            if !m.nodes[i].agent {
                                // A restarted agent remembers nothing.
                                m.nodes[i].seen_leader = None;
                                m.nodes[i].vacancy = false;
                                m.nodes[i].leaderless_loops = 0;
                            }
                            m.nodes[i].agent = true;
                            m.nodes[i].cut_off = false;
                        }
                    }
                }
                _ => {
                    // The leader lease expires only once its holder's agent
                    // is dead or has run since being cut off (the TTL is
                    // longer than a loop plus the fencing margin).
                    if let Some(l) = m.leader {
                        let n = &m.nodes[l];
                        if !n.agent || (n.cut_off && n.ran_since_cut) {
                            m.leader = None;
                        }
                    }
                }
            }
            if std::env::var("HA_TRACE").is_ok() {
                eprintln!(
                    "  state: {:?}",
                    m.nodes
                        .iter()
                        .map(|n| (
                            n.name.as_str(),
                            n.agent,
                            n.pg,
                            n.recovery,
                            n.lsn,
                            n.upstream,
                            n.cut_off
                        ))
                        .collect::<Vec<_>>()
                );
            }
            m.check(seed);
        }
    }
}

#[test]
fn random_schedules_async() {
    run(ReplicationMode::Async, 1..3000);
}

#[test]
fn random_schedules_quorum() {
    run(ReplicationMode::Quorum, 1..3000);
}

#[test]
fn random_schedules_sync() {
    run(ReplicationMode::Sync, 1..3000);
}

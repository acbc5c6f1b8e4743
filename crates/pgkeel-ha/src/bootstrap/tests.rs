//! The bootstrap decision: a table of its cases, and random schedules of
//! three agents racing to bootstrap, killed at any moment between any two
//! steps, whose claims expire with their leases. After every event: no two
//! complete data directories hold different clusters, and never is a
//! second identifier recorded while data of the first exists. Hosts are
//! also replaced (their disk wiped) while another node holds their data.
//! Once the chaos stops, every node converges onto one cluster.

use pgkeel_core::ClusterIdentity;

use super::{BootstrapStep, LocalData, bootstrap_step};

fn id(node: &str, system_id: Option<u64>, done: bool) -> ClusterIdentity {
    ClusterIdentity {
        node: node.into(),
        system_id,
        done,
    }
}

#[test]
fn empty_cluster_is_claimed_except_by_nofailover_nodes() {
    assert_eq!(
        bootstrap_step("a", false, None, LocalData::Empty),
        BootstrapStep::Claim
    );
    assert!(matches!(
        bootstrap_step("a", true, None, LocalData::Empty),
        BootstrapStep::Wait(_)
    ));
}

#[test]
fn existing_data_without_identity_is_adopted() {
    assert_eq!(
        bootstrap_step("a", true, None, LocalData::Complete { system_id: 9 }),
        BootstrapStep::Adopt { system_id: 9 }
    );
}

#[test]
fn the_claimer_runs_initdb_records_moves_and_finishes() {
    let claim = id("a", None, false);
    assert_eq!(
        bootstrap_step("a", false, Some(&claim), LocalData::Empty),
        BootstrapStep::InitDb
    );
    assert_eq!(
        bootstrap_step(
            "a",
            false,
            Some(&claim),
            LocalData::Initialised { system_id: 5 }
        ),
        BootstrapStep::Record { system_id: 5 }
    );
    let recorded = id("a", Some(5), false);
    assert_eq!(
        bootstrap_step(
            "a",
            false,
            Some(&recorded),
            LocalData::Initialised { system_id: 5 }
        ),
        BootstrapStep::MoveIntoPlace
    );
    assert_eq!(
        bootstrap_step(
            "a",
            false,
            Some(&recorded),
            LocalData::Complete { system_id: 5 }
        ),
        BootstrapStep::Finish
    );
    assert_eq!(
        bootstrap_step(
            "a",
            false,
            Some(&id("a", Some(5), true)),
            LocalData::Complete { system_id: 5 }
        ),
        BootstrapStep::Proceed
    );
}

#[test]
fn a_lost_recorded_initialisation_is_reset() {
    let recorded = id("a", Some(5), false);
    assert_eq!(
        bootstrap_step("a", false, Some(&recorded), LocalData::Empty),
        BootstrapStep::Reset
    );
    assert_eq!(
        bootstrap_step(
            "a",
            false,
            Some(&recorded),
            LocalData::Initialised { system_id: 6 }
        ),
        BootstrapStep::Reset
    );
}

#[test]
fn others_wait_until_done_then_proceed_to_clone() {
    for local in [LocalData::Empty, LocalData::Initialised { system_id: 3 }] {
        assert!(matches!(
            bootstrap_step("b", false, Some(&id("a", Some(5), false)), local),
            BootstrapStep::Wait(_)
        ));
        assert_eq!(
            bootstrap_step("b", false, Some(&id("a", Some(5), true)), local),
            BootstrapStep::Proceed
        );
    }
}

#[test]
fn data_of_another_cluster_is_refused_naming_both_identifiers() {
    let step = bootstrap_step(
        "b",
        false,
        Some(&id("a", Some(5), true)),
        LocalData::Complete { system_id: 7 },
    );
    let BootstrapStep::Refuse(why) = step else {
        panic!("expected a refusal, got {step:?}");
    };
    assert!(
        why.contains('5') && why.contains('7') && why.contains("`a`"),
        "{why}"
    );
}

#[test]
fn data_during_someone_elses_initialisation_waits() {
    assert!(matches!(
        bootstrap_step(
            "b",
            false,
            Some(&id("a", None, false)),
            LocalData::Complete { system_id: 7 }
        ),
        BootstrapStep::Wait(_)
    ));
}

/// A tiny deterministic PRNG (xorshift) so failures reproduce by seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The `initialize` key: its value, the incarnation whose lease holds it
/// (`None`: persistent) and its modification revision.
#[derive(Clone, Debug)]
struct Key {
    identity: ClusterIdentity,
    lease: Option<(usize, u32)>,
    revision: u64,
}

#[derive(Clone, Debug, Default)]
struct Node {
    alive: bool,
    incarnation: u32,
    /// Killed incarnation whose lease has not expired yet, and ticks left.
    dying_lease: Option<(u32, u32)>,
    /// `data`: the system identifier of a complete data directory.
    data: Option<u64>,
    /// `data.new`: a finished initdb waiting to be recorded.
    new: Option<u64>,
    /// A step decided on the key at a revision, not carried out yet.
    pending: Option<(BootstrapStep, Option<u64>)>,
    proceeded: bool,
}

struct World {
    key: Option<Key>,
    revision: u64,
    next_system_id: u64,
    nodes: Vec<Node>,
}

const NAMES: [&str; 3] = ["a", "b", "c"];

impl World {
    fn new() -> Self {
        World {
            key: None,
            revision: 0,
            next_system_id: 100,
            nodes: (0..3)
                .map(|_| Node {
                    alive: true,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn local(&self, i: usize) -> LocalData {
        let n = &self.nodes[i];
        match (n.data, n.new) {
            (Some(system_id), _) => LocalData::Complete { system_id },
            (None, Some(system_id)) => LocalData::Initialised { system_id },
            (None, None) => LocalData::Empty,
        }
    }

    fn kill(&mut self, i: usize, lease_ticks: u32) {
        let n = &mut self.nodes[i];
        if n.alive {
            n.alive = false;
            n.pending = None;
            n.dying_lease = Some((n.incarnation, lease_ticks));
        }
    }

    /// A killed node's host is replaced (its disk is empty), as long as
    /// another node still holds its complete data (else the cluster would
    /// be lost, which no bootstrap can repair).
    fn wipe(&mut self, i: usize) {
        let n = &self.nodes[i];
        let survives = n.data.is_none()
            || self
                .nodes
                .iter()
                .enumerate()
                .any(|(j, o)| j != i && o.data == n.data);
        if !n.alive && survives {
            let n = &mut self.nodes[i];
            n.data = None;
            n.new = None;
        }
    }

    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.alive = true;
        n.incarnation += 1;
        n.proceeded = false;
    }

    /// Leases of killed incarnations run out; keys on them vanish.
    fn expire_leases(&mut self) {
        for i in 0..self.nodes.len() {
            let Some((incarnation, left)) = self.nodes[i].dying_lease else {
                continue;
            };
            if left > 0 {
                self.nodes[i].dying_lease = Some((incarnation, left - 1));
                continue;
            }
            self.nodes[i].dying_lease = None;
            if self
                .key
                .as_ref()
                .is_some_and(|k| k.lease == Some((i, incarnation)))
            {
                self.key = None;
                self.bump();
            }
        }
    }

    fn cas(&self, seen: Option<u64>) -> bool {
        self.key.as_ref().map(|k| k.revision) == seen
    }

    /// One move of node `i`: decide on what it sees, or carry out what it
    /// decided earlier (etcd may have changed in between).
    fn act(&mut self, i: usize) -> Result<(), String> {
        if !self.nodes[i].alive || self.nodes[i].proceeded {
            return Ok(());
        }
        let Some((step, seen)) = self.nodes[i].pending.take() else {
            let identity = self.key.as_ref().map(|k| k.identity.clone());
            let step = bootstrap_step(NAMES[i], false, identity.as_ref(), self.local(i));
            self.nodes[i].pending = Some((step, self.key.as_ref().map(|k| k.revision)));
            return Ok(());
        };
        let me = NAMES[i];
        match step {
            BootstrapStep::Claim => {
                if self.key.is_none() {
                    let revision = self.bump();
                    self.key = Some(Key {
                        identity: ClusterIdentity::claim(me),
                        lease: Some((i, self.nodes[i].incarnation)),
                        revision,
                    });
                }
            }
            BootstrapStep::InitDb => {
                self.next_system_id += 1;
                self.nodes[i].new = Some(self.next_system_id);
            }
            BootstrapStep::Record { system_id } => {
                if self.cas(seen) {
                    let revision = self.bump();
                    self.key = Some(Key {
                        identity: ClusterIdentity {
                            node: me.into(),
                            system_id: Some(system_id),
                            done: false,
                        },
                        lease: None,
                        revision,
                    });
                }
            }
            BootstrapStep::MoveIntoPlace => {
                let n = &mut self.nodes[i];
                n.data = n.new.take();
            }
            BootstrapStep::Finish => {
                if self.cas(seen) {
                    let revision = self.bump();
                    if let Some(key) = &mut self.key {
                        key.identity.done = true;
                        key.revision = revision;
                    }
                }
            }
            BootstrapStep::Reset => {
                if self.cas(seen) {
                    self.key = None;
                    self.bump();
                }
            }
            BootstrapStep::Adopt { system_id } => {
                if self.key.is_none() {
                    let revision = self.bump();
                    self.key = Some(Key {
                        identity: ClusterIdentity {
                            node: me.into(),
                            system_id: Some(system_id),
                            done: true,
                        },
                        lease: None,
                        revision,
                    });
                }
            }
            BootstrapStep::Wait(_) => {}
            BootstrapStep::Refuse(why) => return Err(format!("{me} refused: {why}")),
            BootstrapStep::Proceed => {
                // The HA loop clones a node without data from one that has
                // the cluster's (the leader).
                let cluster = self.key.as_ref().and_then(|k| k.identity.system_id);
                let n = &self.nodes[i];
                if n.data.is_none() {
                    if let Some(sid) = cluster
                        && self.nodes.iter().any(|o| o.data == Some(sid))
                    {
                        let n = &mut self.nodes[i];
                        n.new = None;
                        n.data = Some(sid);
                        n.proceeded = true;
                    }
                } else {
                    self.nodes[i].proceeded = true;
                }
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        let mut clusters: Vec<u64> = self.nodes.iter().filter_map(|n| n.data).collect();
        clusters.dedup();
        clusters.sort_unstable();
        clusters.dedup();
        if clusters.len() > 1 {
            return Err(format!("two clusters on disk: {clusters:?}"));
        }
        if let (Some(&on_disk), Some(key)) = (clusters.first(), &self.key)
            && key.identity.system_id.is_some_and(|r| r != on_disk)
        {
            return Err(format!(
                "identity {:?} recorded while data of {on_disk} exists",
                key.identity
            ));
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        let first = self.nodes[0].data;
        first.is_some()
            && self.nodes.iter().all(|n| n.data == first && n.proceeded)
            && self.key.as_ref().is_some_and(|k| k.identity.done)
    }
}

#[test]
fn random_schedules_with_kills_never_make_two_clusters_and_converge() {
    for seed in 1..=3000u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut world = World::new();
        let chaos_ticks = 10 + rng.below(60);
        for tick in 0..2000u64 {
            world.expire_leases();
            let i = rng.below(3) as usize;
            if tick < chaos_ticks && rng.below(8) == 0 {
                world.kill(i, rng.below(6) as u32);
            } else if tick < chaos_ticks && rng.below(20) == 0 {
                world.wipe(i);
            } else if !world.nodes[i].alive {
                if rng.below(3) == 0 {
                    world.restart(i);
                }
            } else if let Err(e) = world.act(i) {
                panic!("seed {seed}, tick {tick}: {e}");
            }
            if let Err(e) = world.check() {
                panic!("seed {seed}, tick {tick}: {e}");
            }
            if tick > chaos_ticks && world.converged() {
                break;
            }
        }
        assert!(
            world.converged(),
            "seed {seed}: no convergence: key {:?}, nodes {:?}",
            world.key,
            world.nodes
        );
    }
}

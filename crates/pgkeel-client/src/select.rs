//! Which replica serves a read: round-robin order and the rule that keeps
//! down, lagging or not-yet-caught-up replicas out. No I/O here.

use pgkeel_core::Lsn;

/// What the pool believes about one replica right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplicaState {
    /// Reachable at the last probe or use.
    pub up: bool,
    /// Further behind the primary than `max_replica_lag`.
    pub lagging: bool,
    /// Highest replay position seen on it (replay only moves forward, so
    /// this is a safe lower bound).
    pub replayed: Lsn,
}

/// How a replica may be used for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not at all.
    Skip,
    /// Yes, without asking it anything.
    Use,
    /// Only after it confirms it has replayed the required position.
    Ask,
}

/// The verdict for a replica in `state`, for a read that must see
/// everything up to `need` (or anything, for `None`).
pub(crate) fn judge(state: ReplicaState, need: Option<Lsn>) -> Verdict {
    if !state.up || state.lagging {
        return Verdict::Skip;
    }
    match need {
        None => Verdict::Use,
        Some(lsn) if state.replayed >= lsn => Verdict::Use,
        Some(_) => Verdict::Ask,
    }
}

/// The replicas to try for one read, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Replicas to use as they are.
    pub use_now: Vec<usize>,
    /// Replicas to ask whether they have replayed the required position.
    pub ask: Vec<usize>,
}

/// Orders the replicas with `verdicts` for the read number `start`: each
/// group is rotated by `start`, so successive reads spread evenly over the
/// usable replicas (a skipped replica's share is split among the others,
/// not handed to its neighbour), and the later entries are the fallbacks
/// when a connection cannot be had.
pub(crate) fn plan(verdicts: &[Verdict], start: usize) -> Plan {
    let pick = |wanted: Verdict| {
        let matching: Vec<usize> = (0..verdicts.len())
            .filter(|&i| verdicts[i] == wanted)
            .collect();
        let k = matching.len();
        (0..k)
            .map(|i| matching[(start % k.max(1) + i) % k])
            .collect()
    };
    Plan {
        use_now: pick(Verdict::Use),
        ask: pick(Verdict::Ask),
    }
}

/// The replica for read number `start` among those whose verdict is
/// `Use`, in the same order [`plan`] would try first, without allocating:
/// the hot path of every plain read.
pub(crate) fn pick<I>(verdicts: I, start: usize) -> Option<usize>
where
    I: Iterator<Item = Verdict> + Clone,
{
    let usable = verdicts.clone().filter(|v| *v == Verdict::Use).count();
    if usable == 0 {
        return None;
    }
    verdicts
        .enumerate()
        .filter(|(_, v)| *v == Verdict::Use)
        .nth(start % usable)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: ReplicaState = ReplicaState {
        up: true,
        lagging: false,
        replayed: Lsn(100),
    };

    #[test]
    fn down_or_lagging_replicas_are_skipped() {
        let down = ReplicaState { up: false, ..UP };
        let late = ReplicaState {
            lagging: true,
            ..UP
        };
        for need in [None, Some(Lsn(1))] {
            assert_eq!(judge(down, need), Verdict::Skip);
            assert_eq!(judge(late, need), Verdict::Skip);
        }
        assert_eq!(judge(UP, None), Verdict::Use);
    }

    #[test]
    fn read_your_writes_needs_the_position() {
        assert_eq!(judge(UP, Some(Lsn(100))), Verdict::Use);
        assert_eq!(judge(UP, Some(Lsn(99))), Verdict::Use);
        assert_eq!(judge(UP, Some(Lsn(101))), Verdict::Ask);
    }

    #[test]
    fn plan_rotates_each_group() {
        use Verdict::*;
        let v = [Use, Skip, Ask, Use, Ask];
        assert_eq!(
            plan(&v, 0),
            Plan {
                use_now: vec![0, 3],
                ask: vec![2, 4]
            }
        );
        assert_eq!(
            plan(&v, 1),
            Plan {
                use_now: vec![3, 0],
                ask: vec![4, 2]
            }
        );
        assert_eq!(plan(&[], 5), Plan::default());
        assert_eq!(plan(&[Skip, Skip], usize::MAX), Plan::default());
    }

    #[test]
    fn pick_agrees_with_the_plan() {
        use Verdict::*;
        let v = [Use, Skip, Ask, Use, Use];
        for start in 0..10 {
            assert_eq!(
                pick(v.iter().copied(), start),
                plan(&v, start).use_now.first().copied()
            );
        }
        assert_eq!(pick([Skip, Ask].into_iter(), 3), None);
    }

    #[test]
    fn successive_reads_spread_evenly_and_skip_a_down_replica() {
        let states = [UP, ReplicaState { up: false, ..UP }, UP];
        let verdicts: Vec<Verdict> = states.iter().map(|&s| judge(s, None)).collect();
        let mut counts = [0usize; 3];
        for start in 0..300 {
            if let Some(&i) = plan(&verdicts, start).use_now.first() {
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [150, 0, 150]);
    }
}

//! `currval()` and `lastval()` under transaction pooling.
//!
//! PostgreSQL keeps the values of a session's `nextval()` calls (also the
//! implicit ones of `serial` and identity columns) in the backend that ran
//! them. A pooled client's next statement may get another backend, where
//! `lastval()` answers with another client's id and `currval()` with
//! another client's value. An application that reads back the id of its
//! insert that way (PHP PDO's `lastInsertId()`, Doctrine DBAL, an `INSERT
//! ... VALUES (currval('parent_id_seq'))` after the parent's insert) would
//! then link rows to the wrong parent, silently.
//!
//! So the values on a primary connection belong to one client at most:
//! the connection holds an [`Owner`] token, and the client whose unit ran
//! there last a weak reference to it. Before a client's unit runs on a
//! connection holding another client's values (its first unit there
//! outside a transaction), those are discarded (`DISCARD SEQUENCES`,
//! pipelined ahead) and the token replaced, which tells the old owner its
//! values are gone; whatever runs there then is the new owner's (a view
//! may call `nextval()`). A plain SET or a reset calls no `nextval()` and
//! leaves the values alone. A client's units on the primary are given its
//! own connection when it is idle (a unit reading the values waits for it
//! while another client's unit runs there); others take connections
//! holding nobody's values first, or a new one while the pool has room.
//! What a client reads is then its own value, or PostgreSQL's 55000 ("not
//! yet defined in this session") when its values are gone, with a notice
//! saying why: never another client's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use pgkeel_sql::StatementKind;

/// A client's ownership of a connection's sequence values.
#[derive(Debug)]
pub struct Owner {
    /// When the client last ran something there (see [`tick`]): the
    /// connection used longest ago is the one least likely still wanted.
    used: AtomicU64,
    /// The node of the connection: after a failover the client's values
    /// are on a node that is no longer the primary.
    node: usize,
}

/// A connection's token (see [`Owner`]).
pub type Values = Arc<Owner>;

impl Owner {
    /// A token for a connection to `node`, used now.
    pub fn new(node: usize) -> Values {
        Arc::new(Owner {
            used: AtomicU64::new(tick()),
            node,
        })
    }

    /// The owner ran something there again.
    pub fn touch(&self) {
        self.used.store(tick(), Ordering::Relaxed);
    }
}

/// The hidden query run ahead of a unit on a connection that holds
/// another client's values.
pub const DISCARD: &str = "DISCARD SEQUENCES";

/// Sent to a client whose unit reads sequence values where its own are
/// not (they were discarded, or their connection closed): PostgreSQL's
/// answer is then 55000, or a value of this unit's own `nextval()`.
pub const LOST_NOTICE: &str = "pgkeel: the nextval() values of this client were on a server \
     connection another client has written on since, or that closed (transaction pooling): \
     currval() and lastval() see only nextval() calls made from this statement on; call them \
     in the same transaction (or query string) as the INSERT or nextval() they refer to, or \
     use INSERT ... RETURNING";

/// A new write time: later writes get larger ones, never 0.
pub fn tick() -> u64 {
    static TICKS: AtomicU64 = AtomicU64::new(1);
    TICKS.fetch_add(1, Ordering::Relaxed)
}

/// When the owner of `values` (a connection's) last used it; 0 when
/// nobody's values are there or their owner has gone (disconnected).
pub fn written(values: Option<&Values>) -> u64 {
    values
        .filter(|v| Arc::weak_count(v) > 0)
        .map_or(0, |v| v.used.load(Ordering::Relaxed))
}

/// Whether a connection's `values` are the ones `mine` (a client's) refers
/// to.
pub fn is_mine(values: Option<&Values>, mine: &Weak<Owner>) -> bool {
    values.is_some_and(|v| std::ptr::eq(Arc::as_ptr(v), mine.as_ptr()))
}

/// Whether the client holding `mine` ever ran something on the primary
/// (its values may be gone).
pub fn ever_wrote(mine: &Weak<Owner>) -> bool {
    !Weak::ptr_eq(mine, &Weak::new())
}

/// The node holding the values `mine` refers to, while they live.
pub fn node_of(mine: &Weak<Owner>) -> Option<usize> {
    mine.upgrade().map(|v| v.node)
}

/// Whether a unit of `kind` reads sequence values (`currval()`,
/// `lastval()`).
pub fn reads_values(kind: StatementKind) -> bool {
    matches!(kind, StatementKind::SequenceValue { .. })
}

/// What a client asks of the pool for its sequence values (see
/// [`pick`]).
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// The client's values, wherever they are.
    pub mine: Option<&'a Weak<Owner>>,
    /// The unit will run something: it takes a new connection rather than
    /// discard another client's values.
    pub will_write: bool,
    /// How long a wait for a free connection may last, in milliseconds
    /// (`u32::MAX`: the queue wait); small, since every session's future
    /// holds it.
    pub wait_ms: u32,
}

impl Default for Want<'_> {
    fn default() -> Self {
        Want {
            mine: None,
            will_write: false,
            wait_ms: u32::MAX,
        }
    }
}

/// Which connection the pool hands a client (see [`pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The idle one at this index.
    Idle(usize),
    /// The one released last (it is warm), or a new one if none is idle.
    Last,
    /// A new one, though some are idle: each holds another client's
    /// values.
    New,
}

/// Which connection a client gets, from the idle ones (`(mine,
/// written)`: whether its values are the client's, and when they were
/// last written, 0 for nobody's; most recently released last): its own
/// wherever it is. Otherwise the one used longest ago (nobody's first: a
/// client reads its values back just after writing, so those are the
/// least likely still wanted), unless the one released last is as good
/// (it is warm); but a unit that `will_write` (runs something, which would
/// discard the values there) takes a new one when every idle one holds
/// someone's values and the pool has `room`.
pub fn pick(
    idle: impl ExactSizeIterator<Item = (bool, u64)>,
    will_write: bool,
    room: bool,
) -> Pick {
    let Some(last) = idle.len().checked_sub(1) else {
        return Pick::Last;
    };
    // The least recently written; among equals, the one released last.
    let mut oldest = (last, u64::MAX);
    let mut last_written = 0;
    for (i, (mine, written)) in idle.enumerate() {
        if mine {
            return Pick::Idle(i);
        }
        if written <= oldest.1 {
            oldest = (i, written);
        }
        if i == last {
            last_written = written;
        }
    }
    let (at, written) = oldest;
    if will_write && written != 0 && room {
        Pick::New
    } else if at != last && written < last_written {
        Pick::Idle(at)
    } else {
        Pick::Last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_of_currval_and_lastval_read_values() {
        assert!(reads_values(StatementKind::SequenceValue { writes: false }));
        assert!(reads_values(StatementKind::SequenceValue { writes: true }));
        assert!(!reads_values(StatementKind::Write));
        assert!(!reads_values(StatementKind::Read));
    }

    #[test]
    fn ownership_follows_the_token() {
        let mut mine = Weak::new();
        assert!(!ever_wrote(&mine));
        assert!(!is_mine(None, &mine));
        let values = Owner::new(3);
        assert!(!is_mine(Some(&values), &mine));
        // Nobody holds it: the owner is gone.
        assert_eq!(written(Some(&values)), 0);
        mine = Arc::downgrade(&values);
        assert!(is_mine(Some(&values), &mine));
        assert!(written(Some(&values)) > 0);
        assert_eq!(node_of(&mine), Some(3));
        assert_eq!(written(None), 0);
        let before = written(Some(&values));
        values.touch();
        assert!(written(Some(&values)) > before);
        // Taken over: the old owner sees it.
        let other = Owner::new(3);
        assert!(!is_mine(Some(&other), &mine));
        drop(values);
        assert_eq!(mine.strong_count(), 0);
        assert_eq!(node_of(&mine), None);
        assert!(ever_wrote(&mine));
        assert!(tick() < tick());
    }

    #[test]
    fn the_pool_hands_out_the_clients_own_else_one_nobody_wants() {
        let idle = [(false, 5), (false, 0), (true, 9), (false, 7)];
        for (w, room) in [(false, false), (true, true)] {
            // The client's own, wherever it is.
            assert_eq!(pick(idle.into_iter(), w, room), Pick::Idle(2));
            // Else the one holding nobody's values.
            let others = [(false, 5), (false, 0), (false, 9), (false, 7)];
            assert_eq!(pick(others.into_iter(), w, room), Pick::Idle(1));
            assert_eq!(pick(std::iter::empty(), w, room), Pick::Last);
        }
        // All hold someone's values: a write makes a new one while it
        // can, else takes the one written on longest ago; another unit
        // takes that.
        let owned = [(false, 5), (false, 9), (false, 7)];
        assert_eq!(pick(owned.into_iter(), true, true), Pick::New);
        assert_eq!(pick(owned.into_iter(), true, false), Pick::Idle(0));
        assert_eq!(pick(owned.into_iter(), false, true), Pick::Idle(0));
        // Nobody's values anywhere (replicas): the warm one.
        let clean = [(false, 0), (false, 0)];
        assert_eq!(pick(clean.into_iter(), true, true), Pick::Last);
        assert_eq!(pick(clean.into_iter(), false, true), Pick::Last);
        // The one released last was written on longest ago.
        assert_eq!(
            pick([(false, 6), (false, 5)].into_iter(), false, true),
            Pick::Last
        );
    }

    #[test]
    fn the_notice_names_the_fix() {
        assert!(LOST_NOTICE.contains("RETURNING"));
        assert!(DISCARD.starts_with("DISCARD"));
    }
}

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
//! the connection holds a [`Values`] token, and the client whose write ran
//! there last holds a weak reference to it. Before another client's unit
//! that may call `nextval()` (or reads the values) runs there, the old
//! owner's values are discarded (`DISCARD SEQUENCES`, pipelined ahead) and
//! the token replaced, which tells the old owner its values are gone. A
//! client's units on the primary are given its own connection when it is
//! idle (a unit reading the values waits for it while another client's
//! unit runs there); writers take connections that hold nobody's values
//! first. What a client reads is then its own value, or PostgreSQL's 55000
//! ("not yet defined in this session") when its values are gone, with a
//! notice saying why: never another client's.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use pgkeel_sql::StatementKind;

/// A client's ownership of a connection's sequence values; the number is
/// when the client last wrote there (see [`tick`]), which decides the
/// connection least likely still wanted.
pub type Values = Arc<AtomicU64>;

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

/// When `values` (a connection's) were last written (0: nobody's).
pub fn written(values: Option<&Values>) -> u64 {
    values.map_or(0, |v| v.load(Ordering::Relaxed))
}

/// Whether a connection's `values` are the ones `mine` (a client's) refers
/// to.
pub fn is_mine(values: Option<&Values>, mine: &Weak<AtomicU64>) -> bool {
    values.is_some_and(|v| std::ptr::eq(Arc::as_ptr(v), mine.as_ptr()))
}

/// Whether the client holding `mine` ever wrote (its values may be gone).
pub fn ever_wrote(mine: &Weak<AtomicU64>) -> bool {
    !Weak::ptr_eq(mine, &Weak::new())
}

/// Whether a unit of `kind` may call `nextval()` when it runs: it makes
/// its connection hold its client's values.
pub fn changes_values(kind: StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Write
            | StatementKind::SessionState
            | StatementKind::SequenceValue { writes: true }
    )
}

/// Whether a unit of `kind` reads sequence values (`currval()`,
/// `lastval()`).
pub fn reads_values(kind: StatementKind) -> bool {
    matches!(kind, StatementKind::SequenceValue { .. })
}

/// Whether a unit of `kind` will likely write on the connection it gets
/// (it may call `nextval()`, or opens a read-write transaction): the pool
/// gives it one holding nobody's values if it can (see [`pick`]).
pub fn will_write(kind: StatementKind) -> bool {
    changes_values(kind)
        || matches!(
            kind,
            StatementKind::Begin { read_only: false } | StatementKind::TransactionControl
        )
}

/// What a client asks of the pool for its sequence values (see
/// [`pick`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Want<'a> {
    /// The client's values, wherever they are.
    pub mine: Option<&'a Weak<AtomicU64>>,
    /// The unit will likely write (see [`will_write`]).
    pub will_write: bool,
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
/// wherever it is. Otherwise the one written on longest ago (nobody's
/// first: a client reads its values back just after writing, so those
/// are the least likely still wanted), unless the one released last is
/// as good (it is warm); but a unit that `will_write` takes a new one
/// when every idle one holds someone's values and the pool has `room`.
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
    fn only_units_that_may_call_nextval_change_values() {
        assert!(changes_values(StatementKind::Write));
        assert!(changes_values(StatementKind::SequenceValue {
            writes: true
        }));
        assert!(!changes_values(StatementKind::SequenceValue {
            writes: false
        }));
        assert!(reads_values(StatementKind::SequenceValue { writes: false }));
        assert!(!reads_values(StatementKind::Write));
        assert!(changes_values(StatementKind::SessionState));
        for k in [
            StatementKind::Read,
            StatementKind::Empty,
            StatementKind::TransactionControl,
            StatementKind::Begin { read_only: false },
            StatementKind::Begin { read_only: true },
        ] {
            assert!(!changes_values(k), "{k:?}");
        }
        assert!(will_write(StatementKind::Begin { read_only: false }));
        assert!(will_write(StatementKind::TransactionControl));
        assert!(!will_write(StatementKind::Begin { read_only: true }));
        assert!(!will_write(StatementKind::Read));
    }

    #[test]
    fn ownership_follows_the_token() {
        let mut mine = Weak::new();
        assert!(!ever_wrote(&mine));
        assert!(!is_mine(None, &mine));
        let values: Values = Arc::new(AtomicU64::new(tick()));
        assert!(!is_mine(Some(&values), &mine));
        mine = Arc::downgrade(&values);
        assert!(is_mine(Some(&values), &mine));
        assert!(written(Some(&values)) > 0);
        assert_eq!(written(None), 0);
        // Taken over: the old owner sees it.
        let other: Values = Arc::new(AtomicU64::new(tick()));
        assert!(!is_mine(Some(&other), &mine));
        drop(values);
        assert_eq!(mine.strong_count(), 0);
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

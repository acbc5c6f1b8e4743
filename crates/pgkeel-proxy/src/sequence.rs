//! `currval()` and `lastval()` under transaction pooling.
//!
//! PostgreSQL keeps the values of a session's `nextval()` calls (also the
//! implicit ones of `serial` and identity columns) in the backend that ran
//! them. A pooled client's next statement may get another backend, where
//! `lastval()` answers with another client's id and `currval()` with
//! another client's value, or 55000. An application that reads back the id
//! of its insert that way (PHP PDO's `lastInsertId()`, Doctrine DBAL, an
//! `INSERT ... VALUES (currval('parent_id_seq'))` after the parent's
//! insert) would then link rows to the wrong parent, silently.
//!
//! So every write (a unit that may call `nextval()`) gets a proxy-wide
//! tick, kept by its client and by the connection it ran on: while the
//! two are equal, the client wrote there last and nobody has written
//! there since (reads by others do not touch the values). A client's next
//! unit on the primary is given that connection when it is free; a unit
//! that reads the values runs only where the ticks match, and is
//! otherwise refused with 55000 instead of a wrong value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pgkeel_sql::StatementKind;

/// How long a unit that reads sequence values waits for the connection
/// that holds them while another client uses it, before it is refused.
pub const BUSY_WAIT: Duration = Duration::from_secs(1);

/// A new write tick for [`crate::server::ServerConn::written`]: unique,
/// later writes get larger ones, never 0.
pub fn tick() -> u64 {
    static TICKS: AtomicU64 = AtomicU64::new(1);
    TICKS.fetch_add(1, Ordering::Relaxed)
}

/// What a client asks of the pool, for its sequence values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Want {
    /// The tick of its last write (0: none): its connection is the one
    /// with that [`crate::server::ServerConn::written`].
    pub prefer: u64,
    /// The unit may call `nextval()`.
    pub writes: bool,
}

/// Which connection the pool hands a client (see [`pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The idle one at this index.
    Idle(usize),
    /// The one released last (it is warm), or a new one if none is idle.
    Last,
    /// A new one, though some are idle: each of those holds values
    /// another client may still want.
    New,
}

/// Which connection a client gets, from the idle ones (their write ticks,
/// most recently released last): its own last write connection (the one
/// whose tick is `prefer`) wherever it is. Otherwise a unit that `writes`
/// (and will make a connection hold its values) takes one that holds
/// nobody's, else a new one while the pool has `room`, else the one
/// written on longest ago (a client reads its values back just after
/// writing, so those are the least likely still wanted); other units
/// leave the connections written on recently to their writers the same
/// way, and otherwise take the warm one released last.
pub fn pick(
    idle: impl ExactSizeIterator<Item = u64>,
    prefer: u64,
    writes: bool,
    room: bool,
) -> Pick {
    let Some(last) = idle.len().checked_sub(1) else {
        return Pick::Last;
    };
    // The least recently written; among those never written, the one
    // released last.
    let mut oldest = (last, u64::MAX);
    let mut last_written = 0;
    for (i, written) in idle.enumerate() {
        if prefer != 0 && written == prefer {
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
    if writes && written != 0 && room {
        Pick::New
    } else if at != last && written < last_written {
        Pick::Idle(at)
    } else {
        Pick::Last
    }
}

/// Whether a unit of `kind` may call `nextval()`: it may change the
/// values its connection holds for its client.
pub fn changes_values(kind: StatementKind) -> bool {
    matches!(
        kind,
        StatementKind::Write | StatementKind::SessionState | StatementKind::SequenceValue
    )
}

/// Whether a connection last written on at tick `written` holds the
/// sequence values of a client whose last write had tick `last_write`
/// (0: none since it connected).
pub fn holds_values(written: u64, last_write: u64) -> bool {
    last_write != 0 && written == last_write
}

/// Why a unit reading sequence values cannot run: the client has not
/// written yet (`wrote` false) or its values are gone.
pub fn refusal(wrote: bool) -> &'static str {
    if wrote {
        "currval()/lastval() cannot be answered: the values of the nextval() calls of this \
         client are held by the server connection of its last write, and under transaction \
         pooling another client has written on that connection since (or it was closed)"
    } else {
        "currval()/lastval() have no value yet: this client has not written anything since it \
         connected"
    }
}

/// What to do instead of reading sequence values later.
pub const REFUSAL_HINT: &str = "call currval()/lastval() in the same transaction (or query \
     string) as the INSERT or nextval() they refer to, or use INSERT ... RETURNING";

/// A simple Query that fails on the server with 55000 and `refusal`: the
/// answer the client gets instead of a wrong value, from the server so
/// that a transaction it runs in fails as PostgreSQL's own error would
/// make it fail. The texts hold no quote or dollar sign.
pub fn refusal_query(wrote: bool) -> String {
    format!(
        "DO $pgkeel$BEGIN RAISE EXCEPTION USING ERRCODE = '55000', MESSAGE = '{}', HINT = '{}'; \
         END$pgkeel$",
        refusal(wrote),
        REFUSAL_HINT
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_units_that_may_call_nextval_change_values() {
        assert!(changes_values(StatementKind::Write));
        assert!(changes_values(StatementKind::SequenceValue));
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
    }

    #[test]
    fn values_are_held_only_where_the_client_wrote_last() {
        assert!(holds_values(7, 7));
        // Someone wrote there since, or the client wrote elsewhere since.
        assert!(!holds_values(8, 7));
        assert!(!holds_values(7, 8));
        // Never wrote.
        assert!(!holds_values(0, 0));
    }

    #[test]
    fn the_pool_hands_out_the_clients_own_else_one_nobody_wants() {
        let idle = [5, 0, 9, 7];
        for writes in [false, true] {
            // The client's own, wherever it is (last too).
            assert_eq!(pick(idle.into_iter(), 5, writes, true), Pick::Idle(0));
            assert_eq!(pick(idle.into_iter(), 7, writes, true), Pick::Idle(3));
            // Not there (closed, busy, written on since): the one never
            // written on.
            assert_eq!(pick(idle.into_iter(), 8, writes, true), Pick::Idle(1));
            assert_eq!(pick(idle.into_iter(), 0, writes, false), Pick::Idle(1));
            assert_eq!(pick(std::iter::empty(), 3, writes, true), Pick::Last);
        }
        // All hold values: a write makes a new one while it can, else
        // takes the one written on longest ago; another unit takes that.
        let owned = [5, 9, 7];
        assert_eq!(pick(owned.into_iter(), 0, true, true), Pick::New);
        assert_eq!(pick(owned.into_iter(), 0, true, false), Pick::Idle(0));
        assert_eq!(pick(owned.into_iter(), 0, false, true), Pick::Idle(0));
        // Nobody's values anywhere (replicas): the warm one.
        assert_eq!(pick([0, 0].into_iter(), 0, true, true), Pick::Last);
        assert_eq!(pick([0, 0].into_iter(), 0, false, true), Pick::Last);
        // The one released last was written on longest ago.
        assert_eq!(pick([6, 5].into_iter(), 0, false, true), Pick::Last);
        assert!(tick() < tick());
    }

    #[test]
    fn the_refusal_is_one_literal() {
        for wrote in [true, false] {
            let text = format!("{}{}", refusal(wrote), REFUSAL_HINT);
            assert!(!text.contains('\'') && !text.contains('$'), "{text}");
            assert!(refusal_query(wrote).contains("'55000'"));
        }
    }
}

//! Moving a read-only transaction from a replica to the primary before it
//! has read anything.
//!
//! `BEGIN READ ONLY` may run on a replica. A hot standby refuses
//! serializable isolation (0A000): at `SET TRANSACTION ISOLATION LEVEL
//! SERIALIZABLE`, or, with `default_transaction_isolation = serializable`
//! (a role's or a client's), at the transaction's first snapshot. The
//! primary runs it. Up to that point the transaction has read nothing, so
//! the proxy keeps the statements that opened it (simple queries that
//! take no snapshot: `BEGIN`, `SET TRANSACTION`, `SET LOCAL`, ...) and, on
//! the refusal, closes the replica connection (which ends the transaction
//! there), runs them again on a primary connection, their answers hidden
//! (the client has them), and then the refused statement, whose answers
//! were held back. Once a statement that may take a snapshot has run, the
//! transaction stays where it is.

use bytes::Bytes;
use pgkeel_sql::snapshot::takes_no_snapshot;
use pgkeel_wire::FrontendMessage;

use crate::io::frames;

/// Most statements kept from a transaction's start: beyond them (a client
/// that sets a great many things before reading) it is not moved.
const MAX_UNITS: usize = 16;

/// The statements that opened the read-only transaction on the attached
/// replica, all answered, none of which took a snapshot.
#[derive(Debug, Default)]
pub struct TxStart {
    units: Vec<Bytes>,
    /// The transaction is being moved: the units run first on the
    /// primary connection attached next.
    replay: bool,
}

impl TxStart {
    /// Adds a unit the replica answered within the transaction; false
    /// when the transaction can no longer be moved (the unit may have
    /// taken a snapshot, or too many were kept).
    pub fn push(&mut self, unit: &Bytes) -> bool {
        if self.units.len() >= MAX_UNITS || !opens_without_snapshot(unit) {
            return false;
        }
        self.units.push(unit.clone());
        true
    }

    /// Marks the transaction as moving: its units are to be replayed on
    /// the primary.
    pub fn set_replay(&mut self) {
        self.replay = true;
    }

    /// True while the units wait to be replayed (not kept for a
    /// transaction still on its replica).
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// The units, in the order they ran.
    pub fn units(&self) -> &[Bytes] {
        &self.units
    }
}

/// True when `unit` is one simple Query whose statements take no
/// snapshot (see [`takes_no_snapshot`]): it can run again elsewhere
/// with the same effect, its answer being only command tags.
pub fn opens_without_snapshot(unit: &[u8]) -> bool {
    let mut all = frames(unit);
    let (Some(frame), None) = (all.next(), all.next()) else {
        return false;
    };
    matches!(FrontendMessage::decode(frame), Ok(FrontendMessage::Query(q)) if takes_no_snapshot(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Bytes {
        let mut v = Vec::new();
        FrontendMessage::Query(sql.as_bytes()).encode(&mut v);
        v.into()
    }

    #[test]
    fn only_simple_queries_without_a_snapshot_are_kept() {
        let mut start = TxStart::default();
        assert!(start.push(&query("BEGIN READ ONLY")));
        assert!(start.push(&query("SET LOCAL work_mem = '8MB'")));
        assert!(!start.push(&query("SELECT 1")));
        let mut two = query("BEGIN READ ONLY").to_vec();
        two.extend_from_slice(&query("SHOW work_mem"));
        assert!(!start.push(&Bytes::from(two)), "two messages");
        let mut parse = Vec::new();
        FrontendMessage::Parse {
            name: b"",
            query: b"BEGIN READ ONLY",
            param_types: vec![],
        }
        .encode(&mut parse);
        assert!(!start.push(&Bytes::from(parse)), "extended protocol");
        assert_eq!(start.units().len(), 2);
        assert!(!start.is_replay());
        start.set_replay();
        assert!(start.is_replay());
    }

    #[test]
    fn a_long_start_is_not_kept() {
        let mut start = TxStart::default();
        for _ in 0..MAX_UNITS {
            assert!(start.push(&query("SET LOCAL a.b = 1")));
        }
        assert!(!start.push(&query("SET LOCAL a.b = 1")));
    }
}

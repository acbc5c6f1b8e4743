//! Statements that run without taking a snapshot.
//!
//! A transaction's first snapshot is where a hot standby refuses
//! serializable isolation (`default_transaction_isolation =
//! serializable`), and where what the transaction reads is fixed. Until
//! then a transaction that only ran `BEGIN`, `SET TRANSACTION`, `SET
//! LOCAL` and the like has read nothing, so it can be started again on
//! another node with the same effect. This scanner tells, on the bytes
//! the client sent, whether a string of statements is made only of such
//! statements; it is conservative: anything it cannot read with
//! certainty (dollar quoting, backslash escapes, an unterminated quote or
//! comment) counts as taking a snapshot.

use crate::block_exit::skip_block_comment;

/// First keywords of statements that take no snapshot: transaction
/// control that starts or marks a transaction, and settings. Not `SHOW`:
/// it takes none, but its answer may be the node's own (`in_hot_standby`,
/// `port`), which the same transaction would then contradict elsewhere.
const NO_SNAPSHOT: [&[u8]; 6] = [
    b"begin",
    b"start",
    b"set",
    b"reset",
    b"savepoint",
    b"release",
];

/// True when every statement of `sql` (at least one) starts with a
/// keyword of [`NO_SNAPSHOT`], so running it took no snapshot.
pub fn takes_no_snapshot(sql: &[u8]) -> bool {
    let mut statements = 0;
    let mut i = 0;
    // At the start of a statement: its first word decides.
    let mut at_start = true;
    while i < sql.len() {
        match sql[i] {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => i += 1,
            b';' => {
                at_start = true;
                i += 1;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                match sql[i..].iter().position(|c| *c == b'\n' || *c == b'\r') {
                    Some(p) => i += p,
                    None => i = sql.len(),
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => match skip_block_comment(sql, i) {
                Some(end) => i = end,
                None => return false,
            },
            b'$' | b'\\' => return false,
            quote @ (b'\'' | b'"') => {
                if at_start {
                    return false;
                }
                i += 1;
                loop {
                    match sql.get(i) {
                        None | Some(b'\\') => return false,
                        Some(c) if *c == quote && sql.get(i + 1) == Some(&quote) => i += 2,
                        Some(c) if *c == quote => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            _ if at_start => {
                let len = sql[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80))
                    .unwrap_or(sql.len() - i);
                let word = &sql[i..i + len];
                if !NO_SNAPSHOT.iter().any(|k| word.eq_ignore_ascii_case(k)) {
                    return false;
                }
                statements += 1;
                at_start = false;
                i += len.max(1);
            }
            _ => i += 1,
        }
    }
    statements > 0
}

#[cfg(test)]
mod tests {
    use super::takes_no_snapshot;

    #[test]
    fn transaction_starts_and_settings_take_no_snapshot() {
        for sql in [
            "BEGIN READ ONLY",
            "begin transaction read only;",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "BEGIN READ ONLY; SET LOCAL statement_timeout = '5s'",
            "-- a comment\nSET LOCAL search_path = 'a;b', \"x\"\"y\"",
            "/* c /* nested */ */ RESET work_mem",
            "SAVEPOINT a; RELEASE a;;",
        ] {
            assert!(takes_no_snapshot(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn anything_else_or_unsure_takes_one() {
        for sql in [
            "",
            ";",
            "-- only a comment",
            "SELECT 1",
            "BEGIN READ ONLY; SELECT 1",
            "BEGIN; SET x = 'a'; SELECT 1",
            "beginning()",
            "SET x = $$a;b$$",
            "SET x = E'a\\'; SELECT 1'",
            "SET x = 'open",
            "/* never closed",
            "(SELECT 1)",
            "SHOWS",
            "SHOW in_hot_standby",
            "begin1",
            "\"SET\"",
            "\u{e9}t\u{e9}",
        ] {
            assert!(!takes_no_snapshot(sql.as_bytes()), "{sql}");
        }
    }
}

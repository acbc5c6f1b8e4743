//! Which statements PostgreSQL still runs in an aborted transaction block.
//!
//! In a block that failed, every statement is refused (25P02) except the
//! ones that end it: `COMMIT`/`END`, `ROLLBACK`/`ABORT` (also `ROLLBACK
//! TO`) and `PREPARE TRANSACTION`. So whatever the proxy sends after a
//! statement that may have failed (its hidden settings query) runs only
//! if the client's first statement is one of those: this small scanner
//! tells, on the bytes the client sent (keywords are ASCII in every
//! client encoding).

/// True when the first statement of `sql` may end a transaction block
/// (and so run after a failed one): its first keyword, past white space,
/// comments and empty statements, is `COMMIT`, `END`, `ROLLBACK`,
/// `ABORT` or `PREPARE` (`PREPARE name AS ...` too: a false positive
/// only costs the caller a round trip). Unterminated comments count as
/// "may": the scanner never guesses in the unsafe direction.
pub fn may_end_block(sql: &[u8]) -> bool {
    let Some(start) = first_token(sql) else {
        // Only white space, comments and semicolons, or a comment left
        // open: nothing that ends a block, unless unsure.
        return unterminated_comment(sql);
    };
    let word: &[u8] = {
        let rest = &sql[start..];
        let len = rest
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$' || *c >= 0x80))
            .unwrap_or(rest.len());
        &rest[..len]
    };
    [&b"commit"[..], b"end", b"rollback", b"abort", b"prepare"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Offset of the first byte that is not white space, a comment or a
/// statement separator.
fn first_token(sql: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b';' => i += 1,
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                i = sql[i..]
                    .iter()
                    .position(|c| *c == b'\n' || *c == b'\r')
                    .map_or(sql.len(), |p| i + p);
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => i = skip_block_comment(sql, i)?,
            _ => return Some(i),
        }
    }
    None
}

/// End of the (nesting, as in PostgreSQL) block comment starting at `i`,
/// or `None` when it is never closed.
pub(crate) fn skip_block_comment(sql: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < sql.len() {
        if sql[i] == b'/' && sql.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if sql[i] == b'*' && sql.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn unterminated_comment(sql: &[u8]) -> bool {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                match sql[i..].iter().position(|c| *c == b'\n' || *c == b'\r') {
                    Some(p) => i += p,
                    None => return false,
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => match skip_block_comment(sql, i) {
                Some(end) => i = end,
                None => return true,
            },
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::may_end_block;

    #[test]
    fn statements_that_end_a_block_are_found_first() {
        for sql in [
            "ROLLBACK; INSERT INTO t VALUES (1)",
            "rollback to savepoint a",
            "  abort",
            "COMMIT",
            "end;",
            "\n-- a comment\nCommit; COPY t FROM STDIN",
            "/* outer /* nested */ still */ ROLLBACK",
            ";; ROLLBACK",
            "PREPARE TRANSACTION 'x'",
            "/* never closed",
        ] {
            assert!(may_end_block(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn other_first_statements_cannot_run_in_a_failed_block() {
        for sql in [
            "SELECT 1; ROLLBACK; INSERT INTO t VALUES (1)",
            "INSERT INTO rollback_log VALUES (1)",
            "rollbacks",
            "committed",
            "endless()",
            "",
            ";",
            "-- only a comment",
            "/* ROLLBACK */ SELECT 1",
            "-- ROLLBACK\nSELECT 1",
            "(SELECT 1)",
            "\u{e9}t\u{e9}",
        ] {
            assert!(!may_end_block(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn bytes_in_any_encoding_are_scanned_without_panicking() {
        assert!(!may_end_block(&[0xff, 0xfe, b' ', b'x']));
        assert!(may_end_block(&[b' ', b'E', b'N', b'D', 0x00]));
        assert!(!may_end_block(&[b'E', b'N', b'D', 0xe9]));
    }
}

//! Session state set on a replica, and moving it to the primary.
//!
//! Session state pins a client to its server connection, normally on the
//! primary (statements that change it are routed there). Inside
//! `BEGIN READ ONLY`, which may run on a replica, a `SET` lands on the
//! replica instead and pins the client there, where its later writes
//! cannot run. So settings made on a replica are remembered, and when the
//! client next needs the primary (outside a transaction) they are applied
//! again on a primary connection before its statement, and the client is
//! pinned there. Only plain `SET`/`RESET` statements are re-applied (their
//! effect does not depend on where they ran); anything else (a `PREPARE`,
//! a `WITH HOLD` cursor, `DISCARD`) cannot be moved, and the write gets a
//! clear error instead of a puzzling 25006 from the replica.

use bytes::Bytes;
use pgkeel_wire::{FrontendMessage, MAX_MESSAGE_LEN, split_message};

use crate::ProxyError;
use crate::server::ServerConn;

/// What a client changed while pinned to a replica.
#[derive(Debug, Default)]
pub struct ReplicaState {
    /// `SET`/`RESET` units, in order, to run again on the primary.
    pub replayable: Vec<Bytes>,
    /// The first statement that cannot be moved, if any.
    pub stuck: Option<String>,
    /// The session-state unit sent and not yet answered: it counts once
    /// it succeeded (a `DISCARD ALL` the replica refused, 25001, changed
    /// nothing, and must not hold the client there).
    pending: Option<Bytes>,
    /// The pending unit got an error.
    pending_failed: bool,
}

impl ReplicaState {
    /// Notes a session-state unit sent to a replica; it is recorded by
    /// [`ReplicaState::settle`] if it succeeds (one pipelined behind it
    /// counts the first as succeeded).
    pub fn record(&mut self, unit: &Bytes) {
        self.settle();
        self.pending = Some(unit.clone());
    }

    /// The pending unit got an error: it changed nothing.
    pub fn failed(&mut self) {
        self.pending_failed = true;
    }

    /// The pending unit's answers are all in: it is recorded unless it
    /// failed.
    pub fn settle(&mut self) {
        let failed = std::mem::take(&mut self.pending_failed);
        if let Some(unit) = self.pending.take()
            && !failed
        {
            self.keep(&unit);
        }
    }

    fn keep(&mut self, unit: &Bytes) {
        match replayable(unit) {
            Ok(()) => self.replayable.push(unit.clone()),
            Err(text) => {
                if self.stuck.is_none() {
                    self.stuck = Some(text);
                }
            }
        }
    }
}

/// Skips leading whitespace and `--`/`/* */` comments.
fn skip_noise(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return s;
        }
    }
}

/// Whether one statement is a plain `SET`/`RESET` of a setting.
fn is_plain_set(statement: &str) -> bool {
    let s = skip_noise(statement);
    let mut words = s.split_whitespace();
    let first = words.next().unwrap_or("");
    let second = words.next().unwrap_or("");
    let setting = first.eq_ignore_ascii_case("set")
        && !second.eq_ignore_ascii_case("local")
        && !second.eq_ignore_ascii_case("transaction");
    setting || first.eq_ignore_ascii_case("reset")
}

/// `Ok` when `unit` is one simple Query made only of plain `SET`/`RESET`
/// statements; otherwise the text to name in the error. Conservative:
/// a `;` inside a quoted value makes it not replayable.
pub fn replayable(unit: &[u8]) -> Result<(), String> {
    let query = match split_message(unit, MAX_MESSAGE_LEN) {
        Ok(Some((b'Q', len))) if len == unit.len() => match FrontendMessage::decode(unit) {
            Ok(FrontendMessage::Query(q)) => q,
            _ => return Err("(an undecodable statement)".into()),
        },
        _ => return Err("(a statement sent with the extended protocol)".into()),
    };
    // Session state is only found in text the classifier could read, so
    // this is UTF-8; anything else is named, not replayed.
    let query = std::str::from_utf8(query).map_err(|_| {
        String::from_utf8_lossy(query)
            .chars()
            .take(200)
            .collect::<String>()
    })?;
    let all_set = query
        .split(';')
        .filter(|s| !skip_noise(s).is_empty())
        .all(is_plain_set);
    if all_set {
        Ok(())
    } else {
        Err(query.chars().take(200).collect())
    }
}

/// Runs the recorded units on `conn` (a fresh primary connection), reading
/// every answer. An error from the server (a setting that exists only on
/// the replica's version, say) is returned as its message.
pub async fn replay(conn: &mut ServerConn, units: &[Bytes]) -> Result<(), ProxyError> {
    match run_units(conn, units).await? {
        Some(message) => Err(ProxyError::StateNotMoved(message)),
        None => Ok(()),
    }
}

/// Runs `units` (simple queries) on `conn` one after the other, reading
/// every answer; the message of the first error the server gives, if
/// any (the units after it are not sent).
pub async fn run_units(
    conn: &mut ServerConn,
    units: &[Bytes],
) -> Result<Option<String>, ProxyError> {
    for unit in units {
        if let Some(e) = conn.run(unit).await?.error {
            let message = pgkeel_wire::backend::error_message(e.get(5..).unwrap_or_default());
            return Ok(Some(message.unwrap_or("the server refused it").to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Vec<u8> {
        let mut v = Vec::new();
        FrontendMessage::Query(sql.as_bytes()).encode(&mut v);
        v
    }

    #[test]
    fn only_plain_settings_are_replayable() {
        for ok in [
            "SET statement_timeout = '5min'",
            "set search_path to app, public;",
            "  -- why\n RESET work_mem",
            "SET a.b = 1; SET c.d = 2",
            "/* c */ SET ROLE app",
        ] {
            assert_eq!(replayable(&query(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "PREPARE p AS SELECT 1",
            "SET a.b = 1; LISTEN x",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "DISCARD ALL",
            "SET LOCAL work_mem = '1MB'",
            "SET application_name = 'a;b'",
        ] {
            assert!(replayable(&query(bad)).is_err(), "{bad}");
        }
        // The extended protocol is not replayed.
        let mut parse = Vec::new();
        FrontendMessage::Parse {
            name: b"",
            query: b"SET a.b = 1",
            param_types: vec![],
        }
        .encode(&mut parse);
        FrontendMessage::Sync.encode(&mut parse);
        assert!(replayable(&parse).is_err());
    }

    #[test]
    fn the_first_unmovable_statement_is_kept() {
        let mut s = ReplicaState::default();
        s.record(&Bytes::from(query("SET a.b = 1")));
        s.record(&Bytes::from(query("PREPARE p AS SELECT 1")));
        s.record(&Bytes::from(query("DISCARD ALL")));
        assert_eq!(s.replayable.len(), 1);
        assert_eq!(s.stuck.as_deref(), Some("PREPARE p AS SELECT 1"));
    }

    /// A statement the replica refused changed nothing: it neither
    /// moves nor holds the client there.
    #[test]
    fn a_failed_statement_is_not_recorded() {
        let mut s = ReplicaState::default();
        s.record(&Bytes::from(query("DISCARD ALL")));
        s.failed();
        s.settle();
        s.record(&Bytes::from(query("SET a.b = 1")));
        s.settle();
        assert_eq!((s.replayable.len(), s.stuck.as_deref()), (1, None));
    }
}

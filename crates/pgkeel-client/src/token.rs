//! Read-your-writes tokens: the WAL position a committed write reached on
//! the primary, and the rule that turns the primary's positions after a
//! commit into that token.

use std::fmt;
use std::str::FromStr;

use pgkeel_core::Lsn;

use crate::{Error, Result};

/// Proof of a committed write: the primary's WAL position right after the
/// commit. A replica whose `pg_last_wal_replay_lsn()` is at or past it has
/// the write, so [`read_after`](crate::ReplicatedPool::read_after) may read
/// there. Tokens are plain data: keep the newest one per user session, send
/// it to other processes as text (`Display`/`FromStr`, PostgreSQL's `X/X`
/// LSN form), combine them with `max`.
///
/// ```
/// use pgkeel_client::WriteToken;
///
/// let a: WriteToken = "0/3000148".parse()?;
/// let b: WriteToken = "0/3000200".parse()?;
/// assert_eq!(a.max(b).to_string(), "0/3000200");
/// # Ok::<(), pgkeel_client::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteToken(Lsn);

impl WriteToken {
    /// A token for a known WAL position (for example one read from the
    /// primary with `pg_current_wal_flush_lsn()`).
    pub fn new(lsn: Lsn) -> Self {
        WriteToken(lsn)
    }

    /// The WAL position a replica must have replayed.
    pub fn lsn(&self) -> Lsn {
        self.0
    }
}

impl fmt::Display for WriteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WriteToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        s.parse::<Lsn>().map(WriteToken).map_err(|_| {
            Error::config(format!(
                "`{s}` is not a write token: expected a WAL position such as `0/3000148`, as printed by a WriteToken"
            ))
        })
    }
}

/// Size of a WAL page header: 24 bytes normally, 40 on a segment's first
/// page (64-bit builds, `MAXALIGN` 8).
const SHORT_PAGE_HEADER: u64 = 24;
const LONG_PAGE_HEADER: u64 = 40;

/// The primary's positions read in the same session right after COMMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AfterCommit {
    /// `synchronous_commit` in force for the transaction.
    pub synchronous_commit: String,
    /// `pg_current_wal_flush_lsn()`.
    pub flush: Lsn,
    /// `pg_current_wal_insert_lsn()`.
    pub insert: Lsn,
    /// `wal_block_size` in bytes.
    pub block_size: u64,
    /// `wal_segment_size` in bytes.
    pub segment_size: u64,
}

impl AfterCommit {
    /// The smallest position known to cover the commit. A commit that
    /// waited for its local flush (every `synchronous_commit` but `off`) is
    /// covered by the flush position, which is also exactly what standbys
    /// are sent. With `off` the commit may not be flushed yet: the insert
    /// position covers it; when it sits just after a page header (the last
    /// record ended on the page boundary) it is moved back to that boundary,
    /// the form `pg_last_wal_replay_lsn()` reports, or a replica would never
    /// seem to reach it on an idle primary.
    pub fn token(&self) -> WriteToken {
        if self.synchronous_commit.trim() != "off" {
            return WriteToken(self.flush);
        }
        let pos = self.insert.0;
        let block = self.block_size.max(1);
        let segment = self.segment_size.max(1);
        let end = if pos % segment == LONG_PAGE_HEADER {
            pos - LONG_PAGE_HEADER
        } else if pos % block == SHORT_PAGE_HEADER {
            pos - SHORT_PAGE_HEADER
        } else {
            pos
        };
        WriteToken(Lsn(end.max(self.flush.0)))
    }
}

/// A size as `current_setting()` shows it (`8192`, `16MB`, `1GB`): the
/// same syntax as `postgresql.conf`, parsed by pgkeel-core.
pub(crate) fn parse_setting_bytes(text: &str) -> Option<u64> {
    pgkeel_core::size::parse_pg_size(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn after(sync: &str, flush: u64, insert: u64) -> AfterCommit {
        AfterCommit {
            synchronous_commit: sync.into(),
            flush: Lsn(flush),
            insert: Lsn(insert),
            block_size: 8192,
            segment_size: SEG,
        }
    }

    #[test]
    fn flushed_commits_use_the_flush_position() {
        for sync in ["on", "local", "remote_write", "remote_apply"] {
            assert_eq!(after(sync, 1000, 5000).token(), WriteToken(Lsn(1000)));
        }
    }

    #[test]
    fn unflushed_commits_use_the_insert_position_in_end_form() {
        assert_eq!(after("off", 1000, 5000).token().lsn(), Lsn(5000));
        // Just past a short page header: back to the page boundary.
        assert_eq!(
            after("off", 1000, 3 * 8192 + 24).token().lsn(),
            Lsn(3 * 8192)
        );
        // Just past a segment's long header.
        assert_eq!(after("off", 0, 2 * SEG + 40).token().lsn(), Lsn(2 * SEG));
        // Offset 40 inside an ordinary page is a real position.
        assert_eq!(
            after("off", 0, 3 * 8192 + 40).token().lsn(),
            Lsn(3 * 8192 + 40)
        );
    }

    #[test]
    fn token_text_round_trip() -> Result<()> {
        let t: WriteToken = "16/B374D848".parse()?;
        assert_eq!(t.lsn(), Lsn(0x16_B374_D848));
        assert_eq!(t.to_string(), "16/B374D848");
        let e = "nope".parse::<WriteToken>().err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("0/3000148")));
        Ok(())
    }

    #[test]
    fn setting_sizes() {
        assert_eq!(parse_setting_bytes("8192"), Some(8192));
        assert_eq!(parse_setting_bytes("16MB"), Some(SEG));
        assert_eq!(parse_setting_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_setting_bytes("64kB"), Some(65536));
        assert_eq!(parse_setting_bytes("lots"), None);
        assert_eq!(parse_setting_bytes("5XB"), None);
    }
}

//! Pushing a primary's newest WAL into the archive now: a commit stamped
//! now, a switch to a new segment, and a wait until the archiver has taken
//! the finished one. A restore to `latest` (or to a recent time) needs it,
//! and so does a replica restored from the repository right after a
//! promotion: the new timeline's first segment must be in the archive, or
//! recovery reads the old timeline's copy of that segment, with the
//! writes after the fork, and diverges.

use std::time::{Duration, Instant};

use pgkeel_pg::probe::NodeConn;

use crate::ClusterError;

/// Longest wait for the archiver.
const ARCHIVE_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `last_archived` (`pg_stat_archiver.last_archived_wal`: a
/// segment, possibly with a `.partial` or `.backup` suffix, or a timeline
/// history file) shows that `segment` and every one before it is
/// archived. Segments are archived in order, and their names sort as their
/// timelines and positions do.
pub fn archived_through(last_archived: Option<&str>, segment: &str) -> bool {
    let Some(last) = last_archived else {
        return false;
    };
    match last.get(..24) {
        Some(name) if name.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let partial = last.ends_with(".partial");
            if partial {
                name > segment
            } else {
                name >= segment
            }
        }
        _ => false,
    }
}

/// Flushes the newest WAL of the primary `node` (reached through `conn`)
/// into the archive; fails when the archiver has not taken it within a
/// minute.
pub async fn flush_archive_on(conn: &NodeConn, node: &str) -> Result<(), ClusterError> {
    let sql = |what: &'static str| {
        move |source| {
            ClusterError::Pg(pgkeel_pg::PgError::Sql {
                node: node.to_string(),
                what,
                source,
            })
        }
    };
    conn.client()
        .batch_execute("SELECT pg_current_xact_id()")
        .await
        .map_err(sql("a commit stamped now"))?;
    // The switch returns the end of the finished segment; its name is the
    // segment that must reach the archive (the previous one when there was
    // nothing to switch from).
    let segment: String = conn
        .client()
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .map_err(sql("WAL switch"))?
        .get(0);
    let started = Instant::now();
    loop {
        let last: Option<String> = conn
            .client()
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await
            .map_err(sql("archiver state"))?
            .get(0);
        if archived_through(last.as_deref(), &segment) {
            return Ok(());
        }
        if started.elapsed() > ARCHIVE_FLUSH_TIMEOUT {
            return Err(ClusterError::ArchiveBehind {
                node: node.to_string(),
                segment,
                waited: ARCHIVE_FLUSH_TIMEOUT.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_archived_once_it_or_a_later_one_was() {
        let seg = "000000020000000000000006";
        assert!(archived_through(Some(seg), seg));
        assert!(archived_through(Some("000000020000000000000007"), seg));
        assert!(archived_through(
            Some("000000020000000000000006.00000028.backup"),
            seg
        ));
        assert!(!archived_through(Some("000000020000000000000005"), seg));
        // The old timeline's copy of the segment is not the new one's.
        assert!(!archived_through(Some("000000010000000000000006"), seg));
        assert!(!archived_through(
            Some("000000020000000000000006.partial"),
            seg
        ));
        assert!(archived_through(Some("000000030000000000000001"), seg));
        assert!(!archived_through(Some("00000002.history"), seg));
        assert!(!archived_through(None, seg));
    }
}

//! WAL file names and the segments a new primary must archive itself.
//!
//! With `archive_mode = on` a standby archives nothing: the segments it
//! received by streaming are the old primary's to archive. When that
//! primary vanished before archiving its last segments, the promoted
//! standby holds the only copies, and PostgreSQL will not archive them
//! (only the last, partial one, as `.partial`). Left alone, the archive
//! would have a gap just before the new timeline.

use std::collections::BTreeSet;

/// A WAL segment's file name: 24 hex digits, 8 each for the timeline,
/// the log and the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    /// Timeline.
    pub timeline: u32,
    /// The segment's number on its timeline (log × segments per log + seg).
    pub log: u32,
    /// See `log`.
    pub seg: u32,
}

impl Segment {
    /// Parses a complete segment's file name (not `.partial`, `.history`
    /// or `.backup` files).
    pub fn parse(name: &str) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let part = |i: usize| u32::from_str_radix(&name[i..i + 8], 16).ok();
        Some(Segment {
            timeline: part(0)?,
            log: part(8)?,
            seg: part(16)?,
        })
    }

    /// The file name.
    pub fn name(&self) -> String {
        format!("{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }

    /// The archive directory that holds it (timeline and log: the first
    /// 16 digits, as pgBackRest and most archivers group segments).
    pub fn directory(&self) -> String {
        format!("{:08X}{:08X}", self.timeline, self.log)
    }
}

/// The newest timeline a `pg_wal` listing knows of (from its history
/// files; 1 without any).
pub fn current_timeline(names: &[String]) -> u32 {
    names
        .iter()
        .filter_map(|n| n.strip_suffix(".history"))
        .filter(|t| t.len() == 8)
        .filter_map(|t| u32::from_str_radix(t, 16).ok())
        .max()
        .unwrap_or(1)
}

/// The complete segments of the timeline just before `current` found in
/// a `pg_wal` listing, oldest first: what the promoted node may hold that
/// nobody archived.
pub fn previous_timeline_segments(names: &[String], current: u32) -> Vec<Segment> {
    let older: BTreeSet<Segment> = names
        .iter()
        .filter_map(|n| Segment::parse(n))
        .filter(|s| s.timeline < current)
        .collect();
    let Some(parent) = older.iter().map(|s| s.timeline).max() else {
        return Vec::new();
    };
    older.into_iter().filter(|s| s.timeline == parent).collect()
}

/// Which of `candidates` are not in `archived` (segment names), keeping
/// their order.
pub fn missing(candidates: &[Segment], archived: &BTreeSet<String>) -> Vec<Segment> {
    candidates
        .iter()
        .filter(|s| !archived.contains(&s.name()))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn segment_names_round_trip() {
        let s = Segment::parse("00000002000000010000003A").unwrap_or_else(|| panic!("parses"));
        assert_eq!((s.timeline, s.log, s.seg), (2, 1, 0x3A));
        assert_eq!(s.name(), "00000002000000010000003A");
        assert_eq!(s.directory(), "0000000200000001");
        for bad in [
            "00000002.history",
            "000000010000000000000005.partial",
            "archive_status",
            "00000001000000000000000G",
        ] {
            assert_eq!(Segment::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn after_a_promotion_the_parent_timelines_segments_are_found() {
        let listing = names(&[
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005.partial",
            "00000002.history",
            "000000020000000000000005",
            "archive_status",
        ]);
        assert_eq!(current_timeline(&listing), 2);
        let old = previous_timeline_segments(&listing, 2);
        let old: Vec<String> = old.iter().map(Segment::name).collect();
        assert_eq!(
            old,
            ["000000010000000000000003", "000000010000000000000004"]
        );
        assert!(previous_timeline_segments(&listing, 1).is_empty());
        assert_eq!(current_timeline(&names(&["000000010000000000000001"])), 1);
    }

    #[test]
    fn only_unarchived_segments_are_pushed() {
        let listing = names(&["000000010000000000000003", "000000010000000000000004"]);
        let old = previous_timeline_segments(&listing, 2);
        let archived: BTreeSet<String> = ["000000010000000000000003".to_string()].into();
        let left: Vec<String> = missing(&old, &archived).iter().map(Segment::name).collect();
        assert_eq!(left, ["000000010000000000000004"]);
    }
}

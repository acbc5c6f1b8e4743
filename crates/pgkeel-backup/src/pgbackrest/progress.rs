//! Progress of a running backup or restore from pgBackRest's
//! `--log-level-console=detail` lines, which end each copied file with its
//! size and the share done so far: `... backup file /d/base/5/1259 (96KB,
//! 41.52%) checksum ...`.

/// The percentage a detail line reports, if it reports one.
pub fn parse_percent(line: &str) -> Option<f64> {
    if !line.contains("DETAIL:") {
        return None;
    }
    let end = line.find("%)")?;
    let start = line[..end].rfind(", ")? + 2;
    let pct: f64 = line[start..end].trim().parse().ok()?;
    (0.0..=100.0).contains(&pct).then_some(pct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_lines_carry_the_share_done() {
        let line = "2026-12-07 20:00:00.123 P01 DETAIL: backup file /d/base/5/1259 (96KB, 41.52%) checksum 0a1b";
        assert_eq!(parse_percent(line), Some(41.52));
        let restore = "P02 DETAIL: restore file /d/base/1/2608 (456KB, 100.00%) checksum ff";
        assert_eq!(parse_percent(restore), Some(100.0));
    }

    #[test]
    fn other_lines_carry_nothing() {
        assert_eq!(parse_percent("P00 INFO: backup command begin 2.45"), None);
        assert_eq!(
            parse_percent("P01 DETAIL: match file from prior backup /d/x (8KB, bad%)"),
            None
        );
        assert_eq!(parse_percent("P00 WARN: (x, 300%)"), None);
    }
}

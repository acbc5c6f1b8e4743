//! Why archiving fails, read from the node's PostgreSQL log: PostgreSQL
//! logs only the exit code ("archive command failed with exit code 103"),
//! while the archive command's own error (pgBackRest's `ERROR: [103]:
//! unable to find a valid repository ...`) precedes it on stderr, which
//! pgkeel captures into the same file.

/// The last archive failure's reason in `log` (the tail of a node's log):
/// the archive command's error message when it printed one, else
/// PostgreSQL's line with the exit code.
pub fn archive_failure_reason(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let failed = lines
        .iter()
        .rposition(|l| l.contains("archive command failed"))?;
    let postgres_line = lines[failed];
    let exit = postgres_line
        .split_once("archive command failed")
        .map(|(_, rest)| format!("archive command failed{}", rest.trim_end()))
        .unwrap_or_else(|| postgres_line.trim().to_string());
    // The tool's error: the nearest ERROR line above, with its indented
    // continuation lines.
    // pgBackRest's errors carry their code (`ERROR: [103]:`); PostgreSQL's
    // own ERROR lines do not.
    let start = lines[..failed]
        .iter()
        .rposition(|l| l.contains("ERROR: ["))
        .filter(|&i| failed - i <= 20);
    let Some(start) = start else {
        return Some(exit);
    };
    let mut message = lines[start]
        .split_once("ERROR:")
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    for more in &lines[start + 1..failed] {
        if !more.starts_with(char::is_whitespace) {
            break;
        }
        message.push(' ');
        message.push_str(more.trim());
    }
    Some(format!("{message} ({exit})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tools_error_is_preferred_to_the_exit_code() {
        let log = "\
2026-12-07 20:43:26.083 UTC [9021] LOG:  checkpoint complete
ERROR: [103]: unable to find a valid repository:
       repo1: [PathMissingError] unable to list file info for missing path '/mnt/b/archive/pgkeel'
2026-12-07 20:43:27.100 UTC [9030] LOG:  archive command failed with exit code 103
2026-12-07 20:43:27.100 UTC [9030] DETAIL:  The failed archive command was: pgbackrest --stanza=pgkeel archive-push pg_wal/000000010000000000000003
";
        let reason = archive_failure_reason(log).unwrap_or_default();
        assert!(
            reason
                .starts_with("[103]: unable to find a valid repository: repo1: [PathMissingError]"),
            "{reason}"
        );
        assert!(
            reason.ends_with("(archive command failed with exit code 103)"),
            "{reason}"
        );
    }

    #[test]
    fn without_the_tools_message_the_exit_code_is_the_reason() {
        let log =
            "2026-12-07 20:43:27.100 UTC [9030] LOG:  archive command failed with exit code 1\n";
        assert_eq!(
            archive_failure_reason(log).as_deref(),
            Some("archive command failed with exit code 1")
        );
        assert_eq!(archive_failure_reason("all quiet\n"), None);
    }
}

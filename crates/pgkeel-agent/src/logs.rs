//! Reading the end of a daemon's log, for error messages that say why it
//! failed without sending the user to look.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from the end of a log at most.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last `n` lines of the text file at `path` (lossy UTF-8; only its
/// last 64 KiB are read).
pub fn tail_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let from = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0); // cut in the middle
    }
    Ok(lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("pgkeel-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("a.log");
        std::fs::write(&file, "one\ntwo\nthree\n")?;
        assert_eq!(tail_lines(&file, 2)?, ["two", "three"]);
        assert_eq!(tail_lines(&file, 10)?, ["one", "two", "three"]);
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&file, long)?;
        assert_eq!(tail_lines(&file, 1)?, ["line 19999"]);
        assert!(tail_lines(&dir.join("missing.log"), 3).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

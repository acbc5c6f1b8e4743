//! Cloning a standby with `pg_basebackup`, reporting progress as it goes.

use std::path::Path;
use std::process::Stdio;
use tokio::io::AsyncReadExt;

use crate::run::{check_output, describe};
use crate::{PgError, PgRunner};

/// Where to clone from.
#[derive(Debug, Clone)]
pub struct CloneSource<'a> {
    /// Primary host.
    pub host: &'a str,
    /// Primary port.
    pub port: u16,
    /// Replication role.
    pub user: &'a str,
    /// libpq password file holding that role's password.
    pub passfile: &'a Path,
    /// Slot to stream WAL through during the copy (already created);
    /// `None` for a source that keeps no slot for this copy.
    pub slot: Option<&'a str>,
    /// `application_name` for the backup connection.
    pub application_name: &'a str,
}

/// Parses one `pg_basebackup -P` progress line (`1234/5678 kB (21%), 0/1
/// tablespace`) into (done, total) kilobytes.
pub fn parse_progress(line: &str) -> Option<(u64, u64)> {
    let kb = line.find(" kB")?;
    let head = line[..kb].trim();
    let pair = head.rsplit(' ').next()?;
    let (done, total) = pair.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// Copies the primary into `target` (which must not exist or be empty),
/// streaming WAL alongside (`-X stream`) through `slot` with a fast
/// checkpoint, calling `progress(done_kb, total_kb)` as data arrives.
pub async fn clone_from(
    runner: &PgRunner,
    node: &str,
    source: &CloneSource<'_>,
    target: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), PgError> {
    let conninfo = format!(
        "host={} port={} user={} application_name={} connect_timeout=10",
        source.host, source.port, source.user, source.application_name
    );
    let target_dir = target.display().to_string();
    let mut args: Vec<std::ffi::OsString> = ["-d", &conninfo, "-D", &target_dir, "-X", "stream"]
        .iter()
        .map(Into::into)
        .collect();
    if let Some(slot) = source.slot {
        args.extend(["-S".into(), slot.into()]);
    }
    args.extend(["-c", "fast", "-P", "-w"].iter().map(Into::into));
    let line = describe("pg_basebackup", &args);
    let mut cmd = runner.command("pg_basebackup");
    cmd.args(&args)
        .env("PGPASSFILE", source.passfile)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| PgError::Spawn {
        node: node.to_string(),
        command: line.clone(),
        source,
    })?;
    let mut captured = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let mut buf = [0u8; 4096];
        let mut pending = String::new();
        loop {
            let n = stderr.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            captured.extend_from_slice(&buf[..n]);
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            // -P rewrites its line with '\r'; real messages end with '\n'.
            while let Some(pos) = pending.find(['\r', '\n']) {
                let piece: String = pending.drain(..=pos).collect();
                if let Some((done, total)) = parse_progress(&piece) {
                    progress(done, total);
                }
            }
        }
    }
    let status = child.wait().await.map_err(|source| PgError::Spawn {
        node: node.to_string(),
        command: line.clone(),
        source,
    })?;
    // Progress lines are noise in an error: keep only real messages.
    let messages: String = String::from_utf8_lossy(&captured)
        .split(['\r', '\n'])
        .filter(|l| parse_progress(l).is_none())
        .map(|l| format!("{l}\n"))
        .collect();
    check_output(
        node,
        &line,
        std::process::Output {
            status,
            stdout: Vec::new(),
            stderr: messages.into_bytes(),
        },
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_progress_lines() {
        assert_eq!(
            parse_progress("22830/22830 kB (100%), 1/1 tablespace"),
            Some((22830, 22830))
        );
        assert_eq!(
            parse_progress("    0/22830 kB (0%), 0/1 tablespace (...a/base/1/2619)"),
            Some((0, 22830))
        );
        assert_eq!(
            parse_progress("pg_basebackup: error: connection failed"),
            None
        );
        assert_eq!(parse_progress("waiting for checkpoint"), None);
    }
}

//! initdb and pg_ctl: creating, starting and stopping one data directory,
//! and telling from the directory alone whether it runs and as what.

use std::path::Path;

use crate::run::tail;
use crate::{PgError, PgRunner};

/// How long `pg_ctl` may wait for a start or stop.
pub const PG_CTL_TIMEOUT_SECS: u32 = 120;

/// Creates a data directory: data checksums (so corruption is detected and
/// `pg_rewind` works), UTF-8, SCRAM for TCP and peer for the socket, the
/// superuser's password taken from a 0600 file.
pub async fn initdb(
    runner: &PgRunner,
    node: &str,
    data: &Path,
    superuser: &str,
    password_file: &Path,
) -> Result<(), PgError> {
    let pwfile = format!("--pwfile={}", password_file.display());
    let args = [
        "-D",
        &data.display().to_string(),
        "-U",
        superuser,
        &pwfile,
        "--data-checksums",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
    ];
    runner.run(node, "initdb", args, &[]).await.map(drop)
}

/// Starts the server and waits until it accepts connections (a standby:
/// until it reached a consistent state). Its stderr goes to `log`. On
/// failure the error carries the end of that log, where PostgreSQL says why.
pub async fn start(runner: &PgRunner, node: &str, data: &Path, log: &Path) -> Result<(), PgError> {
    start_with_options(runner, node, data, log, "").await
}

/// [`start`] with extra server options (`-c name=value ...`, passed to
/// `postgres` through pg_ctl's `-o`; values quoted for its shell).
pub async fn start_with_options(
    runner: &PgRunner,
    node: &str,
    data: &Path,
    log: &Path,
    options: &str,
) -> Result<(), PgError> {
    let timeout = PG_CTL_TIMEOUT_SECS.to_string();
    let mut args = vec![
        "start".to_string(),
        "-D".into(),
        data.display().to_string(),
        "-l".into(),
        log.display().to_string(),
        "-w".into(),
        "-t".into(),
        timeout,
        "-s".into(),
    ];
    if !options.is_empty() {
        args.push("-o".into());
        args.push(options.to_string());
    }
    match runner.run(node, "pg_ctl", args, &[]).await {
        Ok(_) => Ok(()),
        Err(PgError::Command {
            node,
            command,
            status,
            stderr,
        }) => {
            let log_tail = std::fs::read_to_string(log)
                .map(|text| tail(&text, 15))
                .unwrap_or_default();
            Err(PgError::Command {
                node,
                command,
                status,
                stderr: format!("{stderr}\n  server log {}:\n{log_tail}", log.display()),
            })
        }
        Err(other) => Err(other),
    }
}

/// How to stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint, and (on a primary) wait until the WAL
    /// senders have shipped everything: a clean stop.
    Fast,
    /// Crash stop; recovery runs at next start.
    Immediate,
}

/// Stops the server and waits until it is gone.
pub async fn stop(
    runner: &PgRunner,
    node: &str,
    data: &Path,
    mode: StopMode,
) -> Result<(), PgError> {
    let timeout = PG_CTL_TIMEOUT_SECS.to_string();
    let mode = match mode {
        StopMode::Fast => "fast",
        StopMode::Immediate => "immediate",
    };
    let args = [
        "stop",
        "-D",
        &data.display().to_string(),
        "-m",
        mode,
        "-w",
        "-t",
        &timeout,
        "-s",
    ];
    runner.run(node, "pg_ctl", args, &[]).await.map(drop)
}

/// PID of the postmaster running on `data`, read from `postmaster.pid` and
/// confirmed against `/proc` so a stale file after a crash is not mistaken
/// for a live server.
pub fn running_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    // /proc/PID/exe of another user's process needs CAP_SYS_PTRACE, which a
    // root agent in a container lacks (Docker drops it); comm is readable.
    let name = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe.file_name()?.to_string_lossy().to_string(),
        Err(_) => std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?,
    };
    (name.starts_with("postgres") || name.starts_with("postmaster")).then_some(pid)
}

/// Whether the directory is set up to start as a standby.
pub fn is_standby(data: &Path) -> bool {
    data.join("standby.signal").exists()
}

/// Whether `data` looks like a complete PostgreSQL data directory.
pub fn is_data_dir(data: &Path) -> bool {
    data.join("PG_VERSION").is_file() && data.join("global").join("pg_control").is_file()
}

/// Promotes a standby and waits until it accepts writes.
pub async fn promote(runner: &PgRunner, node: &str, data: &Path) -> Result<(), PgError> {
    let timeout = PG_CTL_TIMEOUT_SECS.to_string();
    let args = [
        "promote",
        "-D",
        &data.display().to_string(),
        "-w",
        "-t",
        &timeout,
        "-s",
    ];
    runner.run(node, "pg_ctl", args, &[]).await.map(drop)
}

/// Rewinds a diverged former primary to `source` (a libpq conninfo of the
/// new primary, superuser). PostgreSQL 13+ runs crash recovery on the target
/// first when it was not shut down cleanly.
pub async fn rewind(
    runner: &PgRunner,
    node: &str,
    data: &Path,
    source: &str,
    passfile: &Path,
) -> Result<(), PgError> {
    let target = format!("--target-pgdata={}", data.display());
    let source = format!("--source-server={source}");
    runner
        .run(
            node,
            "pg_rewind",
            [target.as_str(), source.as_str()],
            &[("PGPASSFILE", passfile)],
        )
        .await
        .map(drop)
}

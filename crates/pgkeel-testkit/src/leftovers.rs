//! Cleaning up after test processes that died without running their
//! destructors (SIGKILL, an aborted `cargo test`, an OOM kill): their
//! servers would otherwise keep running, holding ports and memory, and
//! their directories (hundreds of MB each) would stay in the temp dir.
//!
//! Every [`crate::TestDir`] records its owner (PID and start time, so a
//! reused PID is not mistaken for the owner). The first `TestDir` of a
//! test process sweeps the temp dir: a directory whose owner is gone is
//! an orphan; every process recorded in a PID file under it whose command
//! line names that directory is stopped (agents and supervisors before
//! PostgreSQL, so nothing restarts it), and the directory is removed.
//! Directories kept on purpose (a failed test's, or
//! [`crate::KEEP_TEST_DIRS`]) carry a marker and are left alone.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::stop_pid;

/// Name prefix of test directories under the system temp dir.
pub const TEST_DIR_PREFIX: &str = "pgkeel-test-";

/// File recording which process owns a test directory.
const OWNER_FILE: &str = "owner";

/// Marker of a directory kept on purpose.
pub(crate) const KEPT_FILE: &str = "kept";

/// Start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), which tells a process apart from a later one that
/// got the same PID.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: the
    // fields after it start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Writes the owner record of `dir` for this process.
pub(crate) fn record_owner(dir: &Path) -> std::io::Result<()> {
    let pid = std::process::id();
    let since = start_time(pid).unwrap_or(0);
    std::fs::write(dir.join(OWNER_FILE), format!("{pid} {since}\n"))
}

/// Marks `dir` as kept on purpose (a sweep leaves it alone).
pub(crate) fn mark_kept(dir: &Path) {
    let _ = std::fs::write(dir.join(KEPT_FILE), "kept on purpose\n");
}

/// Whether the process recorded in `dir`'s owner file still runs. A
/// directory without a readable record (created by an older testkit, or
/// still being set up) counts as owned: it is never swept.
fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
        return true;
    };
    let mut fields = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(since))) = (
        fields.next().map(str::parse::<u32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return true;
    };
    start_time(pid).is_some_and(|now| now == since)
}

/// PID files under `dir` (not inside PostgreSQL or etcd data directories,
/// except each data directory's own `postmaster.pid`), agents' and
/// supervisors' first.
fn pid_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    collect_pid_files(dir, 0, &mut found);
    // Whatever restarts others goes first: agents, supervisors, proxies;
    // then the rest (etcd, postmasters).
    found.sort_by_key(|p| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        match name.as_deref() {
            Some("agent.pid" | "supervisor.pid") => 0,
            Some("postmaster.pid") => 2,
            _ => 1,
        }
    });
    found
}

fn collect_pid_files(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    if depth > 6 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_symlink() {
            continue;
        }
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "data") {
                let postmaster = path.join("postmaster.pid");
                if postmaster.is_file() {
                    found.push(postmaster);
                }
            } else {
                collect_pid_files(&path, depth + 1, found);
            }
        } else if path.extension().is_some_and(|e| e == "pid") {
            found.push(path);
        }
    }
}

/// The PID in `file` (its first line) if that process is alive and its
/// command line names `dir`: a PID file left by a dead test may name a PID
/// that now belongs to an unrelated process, which must not be touched.
fn owned_pid(file: &Path, dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // With the separator: `/tmp/pgkeel-test-ab` must not match a process
    // of `/tmp/pgkeel-test-abc`.
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    cmdline
        .windows(needle.len())
        .any(|w| w == needle.as_slice())
        .then_some(pid)
}

/// Stops what an orphaned test directory still runs and removes it.
/// Returns the PIDs it stopped.
pub fn sweep_dir(dir: &Path) -> Vec<u32> {
    let mut stopped = Vec::new();
    for file in pid_files(dir) {
        if let Some(pid) = owned_pid(&file, dir) {
            let signal = if file.ends_with("postmaster.pid") {
                // Immediate shutdown: the postmaster takes its backends
                // and shared memory with it (stop_pid escalates).
                Signal::SIGQUIT
            } else {
                Signal::SIGKILL
            };
            stop_pid(pid, signal);
            stopped.push(pid);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    stopped
}

/// Sweeps every orphaned test directory under `temp` (see the module
/// documentation). Returns the directories swept.
pub fn sweep_orphans_in(temp: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        let is_test_dir = path.is_dir()
            && !path.is_symlink()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(TEST_DIR_PREFIX));
        if !is_test_dir || path.join(KEPT_FILE).exists() || owner_alive(&path) {
            continue;
        }
        let stopped = sweep_dir(&path);
        eprintln!(
            "pgkeel-testkit: removed {} left by a test process that died (stopped {} process(es) it had started)",
            path.display(),
            stopped.len()
        );
        swept.push(path);
    }
    swept
}

/// Sweeps the system temp dir once per test process.
pub(crate) fn sweep_orphans_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        sweep_orphans_in(&std::env::temp_dir());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn owner_records_of_live_dead_and_reused_pids() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        // No record: never swept.
        assert!(owner_alive(dir.path()));
        record_owner(dir.path())?;
        assert!(owner_alive(dir.path()));
        // This PID with another start time: a reused PID, the owner is gone.
        let me = std::process::id();
        std::fs::write(dir.path().join(OWNER_FILE), format!("{me} 1\n"))?;
        assert!(!owner_alive(dir.path()));
        // A PID that does not exist.
        std::fs::write(dir.path().join(OWNER_FILE), format!("{} 1\n", u32::MAX))?;
        assert!(!owner_alive(dir.path()));
        // Garbage: left alone.
        std::fs::write(dir.path().join(OWNER_FILE), "not a record")?;
        assert!(owner_alive(dir.path()));
        Ok(())
    }

    /// A test process that died (SIGKILL) left a directory with a running
    /// "server": the sweep stops it and removes the directory, but never
    /// touches an unrelated process named by a stale PID file, a
    /// directory whose owner lives, or one kept on purpose.
    #[test]
    fn orphaned_dirs_are_swept_and_nothing_else() -> Result<(), Box<dyn std::error::Error>> {
        use std::process::{Command, Stdio};
        let root = tempfile::tempdir()?;
        let make = |name: &str| -> std::io::Result<PathBuf> {
            let dir = root.path().join(format!("{TEST_DIR_PREFIX}{name}"));
            std::fs::create_dir_all(dir.join("cluster/nodes/primary"))?;
            Ok(dir)
        };
        let orphan = make("orphan")?;
        let alive = make("alive")?;
        let kept = make("kept")?;
        let other = root.path().join("not-a-test-dir");
        std::fs::create_dir_all(&other)?;

        // The "test process" that will die, and what it started.
        let mut owner = Command::new("sleep").arg("600").spawn()?;
        let since = start_time(owner.id()).ok_or("no start time")?;
        for dir in [&orphan, &kept] {
            std::fs::write(dir.join(OWNER_FILE), format!("{} {since}\n", owner.id()))?;
        }
        mark_kept(&kept);
        record_owner(&alive)?;
        let log = orphan.join("cluster/nodes/primary/agent.log");
        std::fs::write(&log, "")?;
        let mut server = Command::new("tail")
            .arg("-f")
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()?;
        std::fs::write(
            orphan.join("cluster/nodes/primary/agent.pid"),
            format!("{}\n", server.id()),
        )?;
        // A stale PID file naming a process that is not the test's.
        let mut unrelated = Command::new("sleep").arg("600").spawn()?;
        std::fs::write(
            orphan.join("cluster/etcd.pid"),
            format!("{}\n", unrelated.id()),
        )?;

        let swept_early = sweep_orphans_in(root.path());
        owner.kill()?;
        owner.wait()?;
        let swept = sweep_orphans_in(root.path());

        let server_gone = server.try_wait()?.is_some();
        let unrelated_alive = unrelated.try_wait()?.is_none();
        let _ = server.kill();
        let _ = unrelated.kill();
        let _ = server.wait();
        let _ = unrelated.wait();
        assert!(
            swept_early.is_empty(),
            "swept while the owner lived: {swept_early:?}"
        );
        assert_eq!(swept, vec![orphan.clone()]);
        assert!(server_gone, "the orphan's server still runs");
        assert!(
            unrelated_alive,
            "a process named by a stale PID file was stopped"
        );
        assert!(!orphan.exists());
        assert!(alive.exists() && kept.exists() && other.exists());
        Ok(())
    }

    #[test]
    fn pid_files_put_restarters_first_and_skip_data_contents() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let node = dir.path().join("cluster/nodes/primary");
        std::fs::create_dir_all(node.join("data/base"))?;
        std::fs::write(node.join("data/postmaster.pid"), "1\n")?;
        std::fs::write(node.join("data/base/other.pid"), "1\n")?;
        std::fs::write(node.join("agent.pid"), "1\n")?;
        std::fs::create_dir_all(dir.path().join("cluster/etcd"))?;
        std::fs::write(dir.path().join("cluster/etcd/etcd.pid"), "1\n")?;
        let names: Vec<String> = pid_files(dir.path())
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .collect();
        assert_eq!(names, ["agent.pid", "etcd.pid", "postmaster.pid"]);
        Ok(())
    }
}

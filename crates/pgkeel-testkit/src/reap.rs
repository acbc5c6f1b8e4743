//! Stopping test servers by PID.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Stops every PostgreSQL server of the cluster rooted at `root` when
/// dropped: immediate shutdown (SIGQUIT) to the PID in each node's
/// `postmaster.pid`, SIGKILL if it is still there after 10 s.
#[derive(Debug)]
pub struct ClusterGuard {
    root: PathBuf,
}

impl ClusterGuard {
    /// Guards the cluster at `root`.
    pub fn new(root: &Path) -> Self {
        ClusterGuard {
            root: root.to_path_buf(),
        }
    }

    /// PIDs of the postmasters currently running under the root.
    pub fn running_pids(&self) -> Vec<u32> {
        let nodes = self.root.join("nodes");
        std::fs::read_dir(nodes)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| pgkeel_pg::pgctl::running_pid(&entry.path().join("data")))
            .collect()
    }
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        for pid in self.running_pids() {
            stop_pid(pid, Signal::SIGQUIT);
        }
    }
}

/// Sends `signal` to `pid` and waits (up to 10 s, then SIGKILL) until the
/// process is gone.
pub fn stop_pid(pid: u32, signal: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    let pid = Pid::from_raw(raw);
    if kill(pid, signal).is_err() {
        return;
    }
    let start = Instant::now();
    while kill(pid, None).is_ok() && Path::new(&format!("/proc/{raw}/exe")).exists() {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if start.elapsed() > Duration::from_secs(20) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Stopping test servers by PID.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Stops every process of the cluster rooted at `root` when dropped, by
/// the PIDs in its PID files: agents first (so nothing restarts
/// PostgreSQL), then each postmaster (immediate shutdown), then the local
/// etcd's supervisor and etcd itself. Escalates to SIGKILL.
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

    fn node_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// PIDs of the postmasters currently running under the root.
    pub fn running_pids(&self) -> Vec<u32> {
        self.node_dirs()
            .iter()
            .filter_map(|dir| pgkeel_pg::pgctl::running_pid(&dir.join("data")))
            .collect()
    }

    /// PIDs of the agents currently running.
    pub fn agent_pids(&self) -> Vec<u32> {
        self.node_dirs()
            .iter()
            .filter_map(|dir| pid_in(&dir.join("agent.pid")))
            .collect()
    }
}

/// The live PID recorded in `file`.
pub fn pid_in(file: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    let raw = i32::try_from(pid).ok()?;
    (kill(Pid::from_raw(raw), None).is_ok() && Path::new(&format!("/proc/{pid}/stat")).exists())
        .then_some(pid)
}

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.root.join("proxy").join("proxy.pid")) {
            stop_pid(pid, Signal::SIGKILL);
        }
        for pid in self.agent_pids() {
            stop_pid(pid, Signal::SIGKILL);
        }
        for pid in self.running_pids() {
            stop_pid(pid, Signal::SIGQUIT);
        }
        let etcd = self.root.join("etcd");
        for file in ["supervisor.pid", "etcd.pid"] {
            if let Some(pid) = pid_in(&etcd.join(file)) {
                stop_pid(pid, Signal::SIGKILL);
            }
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
    while kill(pid, None).is_ok() && !is_zombie(raw) {
        if start.elapsed() > Duration::from_secs(10) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if start.elapsed() > Duration::from_secs(20) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

//! PID files of the processes pgkeel starts (agents, the etcd supervisor),
//! so they are found and stopped by PID, never by name.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The PID in `path` if that process is alive.
pub fn alive_pid(path: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    pid_alive(pid).then_some(pid)
}

/// Whether `pid` runs (a zombie does not count: it has exited).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let alive = kill(Pid::from_raw(raw), None).is_ok();
    // A zombie still answers signals; its /proc status says so.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    alive && !zombie
}

/// Writes our own PID.
pub fn write_own(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, format!("{}\n", std::process::id()))
}

/// Sends `signal` to the process in `path` and waits up to `grace` for it
/// to exit, then SIGKILLs it. Returns whether a process was stopped.
pub async fn stop(path: &Path, signal: Signal, grace: Duration) -> bool {
    let Some(pid) = alive_pid(path) else {
        let _ = std::fs::remove_file(path);
        return false;
    };
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let pid = Pid::from_raw(raw);
    let _ = kill(pid, signal);
    let start = Instant::now();
    while alive_pid(path).is_some() {
        if start.elapsed() > grace {
            let _ = kill(pid, Signal::SIGKILL);
        }
        if start.elapsed() > grace * 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(path);
    true
}

//! Running the real `pgkeel` binary against clusters in temp directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgkeel_testkit::{ClusterGuard, TestDir, free_port_block};

pub mod repository;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs `pgkeel args...` from `cwd` with no inherited PGKEEL_* settings.
pub fn pgkeel(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgkeel"));
    cmd.args(args).current_dir(cwd);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PGKEEL_")) {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run pgkeel: {e}"),
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A cluster created with `pgkeel up`; its servers are stopped by PID when
/// it is dropped.
pub struct CliCluster {
    pub root: PathBuf,
    pub base_port: u16,
    _guard: ClusterGuard,
    pub dir: TestDir,
}

impl CliCluster {
    /// A fresh directory and port block, nothing started yet.
    pub fn new(ports: u16) -> TestResult<Self> {
        let dir = TestDir::new()?;
        let root = dir.path().join("cluster");
        Ok(CliCluster {
            _guard: ClusterGuard::new(&root),
            root,
            base_port: free_port_block(ports),
            dir,
        })
    }

    /// `pgkeel <cmd> --dir <root> args...`.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        self.run_env(cmd, args, &[])
    }

    pub fn run_env(&self, cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let root = self.root.display().to_string();
        let mut all = vec![cmd, "--dir", root.as_str()];
        all.extend_from_slice(args);
        pgkeel(self.dir.path(), &all, env)
    }

    /// `pgkeel up` on this cluster's ports; panics with the output if it fails.
    pub fn up(&self, args: &[&str]) -> Output {
        let port = self.base_port.to_string();
        let mut all = vec!["--base-port", port.as_str()];
        all.extend_from_slice(args);
        let out = self.run("up", &all);
        assert!(out.status.success(), "pgkeel up failed: {}", text(&out));
        out
    }

    /// `pgkeel status --json`, parsed.
    pub fn status(&self) -> TestResult<serde_json::Value> {
        let out = self.run("status", &["--json"]);
        if !out.status.success() {
            return Err(text(&out).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `pgkeel url ...`, trimmed.
    pub fn url(&self, args: &[&str]) -> TestResult<String> {
        let out = self.run("url", args);
        if !out.status.success() {
            return Err(text(&out).into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }
}

/// A plain HTTP/1.0 GET on loopback (status line, headers and body).
pub fn http_get(port: u16, path: &str) -> TestResult<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Polls `check` every 250 ms for up to `secs`: it answers `Ok(value)`
/// when done and `Err(state)` while not; the timeout error names `what`
/// and the last state.
pub async fn until<T>(
    what: &str,
    secs: u64,
    mut check: impl AsyncFnMut() -> TestResult<Result<T, String>>,
) -> TestResult<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let state = match check().await? {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        if std::time::Instant::now() > deadline {
            return Err(format!("{what} not within {secs} s: {state}").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Crashes the host of the cluster's primary: SIGKILL to its agent and its
/// PostgreSQL. Returns the primary's node from `status --json`.
pub fn crash_primary(cluster: &CliCluster) -> TestResult<serde_json::Value> {
    crash_node(cluster, |n| n["role"] == "primary")
}

/// Crashes the host of the first node `which` picks in `status --json`:
/// SIGKILL to its agent and its PostgreSQL. Returns that node.
pub fn crash_node(
    cluster: &CliCluster,
    which: impl Fn(&serde_json::Value) -> bool,
) -> TestResult<serde_json::Value> {
    let status = cluster.status()?;
    let node = status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| which(n)))
        .cloned()
        .ok_or_else(|| format!("no such node in {status}"))?;
    for pid in [&node["agent_pid"], &node["pid"]] {
        let pid = pid.as_i64().ok_or("no pid")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    Ok(node)
}

/// Sets `path`'s permission bits.
pub fn set_mode(path: &Path, mode: u32) -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A child process killed (and reaped) if the test ends before it does.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl KillOnDrop {
    /// Waits for the child and takes its output.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        match self.0.take() {
            Some(child) => child.wait_with_output(),
            None => Err(std::io::Error::other("the child was already taken")),
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! Running the real `pgkeel` binary against clusters in temp directories.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pgkeel_testkit::{ClusterGuard, TestDir, free_port_block};

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

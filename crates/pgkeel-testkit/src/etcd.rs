//! A real single-member etcd on free loopback ports, stopped by PID on
//! drop, for tests of code that reads etcd without a whole cluster.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{TestDir, TestResult, free_port_block, stop_pid};

/// A running etcd; its data lives in a temporary directory.
pub struct TempEtcd {
    /// Its client URL (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    child: Child,
    _dir: TestDir,
}

impl TempEtcd {
    /// Starts `etcd` from `PATH` and waits until its client port accepts
    /// connections (it may still be electing itself: retry the first
    /// request).
    pub fn start() -> TestResult<Self> {
        let dir = TestDir::new()?;
        let port = free_port_block(2);
        let client = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{}", port + 1);
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start etcd (is it installed?): {e}"))?;
        let etcd = TempEtcd {
            endpoint: client,
            child,
            _dir: dir,
        };
        // Recorded so that a sweep can stop it if this test process dies
        // without dropping it.
        std::fs::write(
            etcd._dir.path().join("etcd.pid"),
            format!("{}\n", etcd.child.id()),
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("etcd did not open its client port within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(etcd)
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it now (SIGTERM, by PID); dropping it later does nothing more.
    pub fn stop(&mut self) {
        stop_pid(self.child.id(), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for TempEtcd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

//! `pgkeel proxy --dir D --listen ADDR` as a process: serves reads from a
//! replica, exposes /metrics, and exits cleanly on SIGTERM.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{CliCluster, TestResult, http_get};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgkeel_testkit::{connect_url, free_port_block};

/// The proxy process, killed by PID if the test ends early.
struct ProxyProcess(Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn proxy_command_serves_and_stops_on_sigterm() -> TestResult {
    let c = CliCluster::new(3)?;
    c.up(&[]);
    let ports = free_port_block(2);
    let (port, admin) = (ports, ports + 1);
    let root = c.root.display().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_pgkeel"))
        .args(["proxy", "--dir", &root])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut proxy = ProxyProcess(child);

    // The primary's URL with the proxy's port.
    let direct = c.url(&[])?;
    let at = direct.rfind('@').ok_or("no @ in url")?;
    let slash = direct[at..].find('/').ok_or("no / in url")? + at;
    let url = format!("{}@127.0.0.1:{port}{}", &direct[..at], &direct[slash..]);

    let started = Instant::now();
    let client = loop {
        if let Ok(client) = connect_url(&url).await
            && client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .is_ok_and(|r| r.get::<_, bool>(0))
        {
            break client;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the proxy never served a read from a replica".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let row = client
        .query_one("SELECT current_setting('port')::int", &[])
        .await?;
    assert_ne!(
        row.get::<_, i32>(0),
        i32::from(c.base_port),
        "a read ran on the primary"
    );

    // The clients the loop above dropped (a read that still ran on the
    // primary) leave the proxy's count when it notices they are gone.
    let started = Instant::now();
    let metrics = loop {
        let metrics = http_get(admin, "/metrics")?;
        if metrics.contains("pgkeel_proxy_clients 1\n")
            || started.elapsed() > Duration::from_secs(30)
        {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.starts_with("HTTP/1.0 200"), "{metrics}");
    assert!(
        metrics.contains("pgkeel_proxy_routed_total{node=\"replica1\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("pgkeel_proxy_clients 1"), "{metrics}");
    assert!(
        metrics.contains("pgkeel_proxy_server_hold_seconds_count "),
        "{metrics}"
    );
    let pools = http_get(admin, "/pools")?;
    assert!(pools.contains("user\tdatabase\tnode"), "{pools}");
    let clients = http_get(admin, "/clients")?;
    assert!(clients.contains("\tapp\tapp\t127.0.0.1:"), "{clients}");
    let servers = http_get(admin, "/servers?json")?;
    let body = servers.split("\r\n\r\n").nth(1).ok_or("no body")?;
    let rows: serde_json::Value = serde_json::from_str(body)?;
    let roles: Vec<&str> = rows
        .as_array()
        .ok_or("not an array")?
        .iter()
        .filter_map(|r| r["role"].as_str())
        .collect();
    assert_eq!(roles, ["primary", "replica", "replica"], "{servers}");
    assert!(http_get(admin, "/nope")?.starts_with("HTTP/1.0 404"));
    drop(client);

    // [proxy] sched_batch (default): a batch task (SCHED_BATCH = 3).
    let sched = std::fs::read_to_string(format!("/proc/{}/sched", proxy.0.id()))?;
    let policy = sched
        .lines()
        .find_map(|l| l.strip_prefix("policy"))
        .and_then(|v| v.trim().trim_start_matches(':').trim().parse::<u32>().ok());
    assert_eq!(policy, Some(3), "{sched}");

    let pid = Pid::from_raw(i32::try_from(proxy.0.id())?);
    kill(pid, Signal::SIGTERM)?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proxy.0.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the proxy did not exit after SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    Ok(())
}

//! The cluster's proxy as a daemon: `pgkeel up` starts `pgkeel proxy`
//! detached with a PID file under `proxy/`, waits until a login through
//! it reaches the primary, and `down`/`destroy` stop it by that PID.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgkeel_cluster::Cluster;
use pgkeel_cluster::layout::Secret;
use pgkeel_cluster::preflight::check_proxy_ports;
use pgkeel_cluster::status::connect_host;
use pgkeel_pg::secrets::read_password;
use tokio_postgres::NoTls;

use crate::etcd_local::spawn_detached;
use crate::{AgentError, pidfile};

/// How long `up` waits for the proxy to route a first query.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `down` lets connected clients finish before the proxy is
/// killed (the proxy itself drains for up to 10 s on SIGTERM).
const STOP_GRACE: Duration = Duration::from_secs(12);

/// PID of the cluster's proxy, if it runs.
pub fn proxy_pid(cluster: &Cluster) -> Option<u32> {
    pidfile::alive_pid(&cluster.layout.proxy_pid_file())
}

/// Starts the proxy unless it is disabled or already running, and waits
/// until it answers a query on the primary through its own port. Returns
/// what was done, for `up`'s summary.
pub async fn start_proxy(cluster: &Cluster, exe: &Path) -> Result<Option<String>, AgentError> {
    if !cluster.config.proxy.enabled || proxy_pid(cluster).is_some() {
        return Ok(None);
    }
    check_proxy_ports(cluster)?;
    let dir = cluster.layout.proxy_dir();
    std::fs::create_dir_all(&dir).map_err(|e| AgentError::Process {
        action: format!("create {}", dir.display()),
        detail: e.to_string(),
    })?;
    let root = cluster.layout.root().display().to_string();
    let pid_file = cluster.layout.proxy_pid_file();
    let log = cluster.layout.proxy_log();
    let child = spawn_detached(
        exe,
        &[
            "proxy",
            "--dir",
            &root,
            "--pid-file",
            &pid_file.display().to_string(),
        ],
        &log,
    )?;
    wait_ready(cluster, child, &log).await?;
    Ok(Some(format!(
        "started proxy on port {}",
        cluster.config.proxy_port()
    )))
}

/// Waits until a login through the proxy runs a statement on the
/// primary; fails early (with the log's tail) if the process exits.
async fn wait_ready(cluster: &Cluster, child: u32, log: &Path) -> Result<(), AgentError> {
    let c = &cluster.config;
    let password = read_password(&cluster.layout.password_file(Secret::App))?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(connect_host(&c.proxy.host))
        .port(c.proxy_port())
        .user(&c.roles.app)
        .password(password)
        .dbname(&c.roles.database)
        .application_name("pgkeel-up")
        .connect_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if !pidfile::pid_alive(child) {
            return Err(AgentError::Process {
                action: "start the proxy".into(),
                detail: format!(
                    "it exited at once: {} (full log: {})",
                    log_tail(log),
                    log.display()
                ),
            });
        }
        // A standby cluster has no primary: its proxy serves reads.
        let probe = if c.standby_cluster.is_some() {
            "SELECT 1"
        } else {
            // A volatile function the classifier does not know as
            // read-only goes to the primary: this fails until the proxy
            // has found it.
            "SELECT pg_is_in_recovery() = false AND txid_current() > 0"
        };
        let last = match routed_probe(&config, probe).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(AgentError::Timeout {
                what: format!("the proxy to route `{probe}`"),
                seconds: READY_TIMEOUT.as_secs(),
                hint: format!("; last error: {last}; see {}", log.display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs in through the proxy and runs a statement that must reach the
/// primary (so health checks have found it).
async fn routed_probe(config: &tokio_postgres::Config, probe: &str) -> Result<(), String> {
    let (client, conn) = tokio::time::timeout(Duration::from_secs(3), config.connect(NoTls))
        .await
        .map_err(|_| "login timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = tokio::time::timeout(Duration::from_secs(3), client.simple_query(probe))
        .await
        .map_err(|_| "query timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map(|_| ());
    drop(client);
    let _ = task.await;
    result
}

fn log_tail(log: &Path) -> String {
    let lines = crate::logs::tail_lines(log, 3).unwrap_or_default();
    if lines.is_empty() {
        return "(empty log)".into();
    }
    lines.join(" | ")
}

/// Stops the proxy (SIGTERM: it stops accepting, lets clients finish,
/// then exits). Returns whether one was running.
pub async fn stop_proxy(cluster: &Cluster) -> bool {
    pidfile::stop(
        &cluster.layout.proxy_pid_file(),
        Signal::SIGTERM,
        STOP_GRACE,
    )
    .await
}

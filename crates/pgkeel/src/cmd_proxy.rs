//! `pgkeel proxy`: runs the read/write-splitting pooler in front of a
//! local cluster until SIGINT/SIGTERM, then drains clients.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pgkeel_proxy::reload::ReloadReport;
use pgkeel_proxy::{
    ClusterProxyOptions, PoolMode, ProxyConfig, TlsMode, config_for_cluster, spawn_for_cluster,
};
use tokio::signal::unix::{SignalKind, signal};

use pgkeel_cluster::Cluster;

use crate::cli::Target;

/// How long connected clients may finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Flags of `pgkeel proxy`. Every setting defaults to the cluster's
/// `[proxy]` section (see `pgkeel init`); a flag overrides it.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Address clients connect to [default: proxy.host:proxy.port, e.g.
    /// 127.0.0.1:6432]. With --listen, no admin endpoint is served unless
    /// --admin-listen is given too.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Serve Prometheus `/metrics` and the `/pools`, `/clients` and
    /// `/servers` listings (`?json` for JSON) over HTTP here [default:
    /// proxy.host:proxy.admin_port].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// transaction: a server per transaction, reads split to replicas;
    /// session: a primary connection per client [default: proxy.pool_mode].
    #[arg(long, value_enum)]
    pub pool_mode: Option<PoolModeArg>,
    /// Server connections per (user, database, node) [default:
    /// proxy.pool_size].
    #[arg(long, value_name = "N")]
    pub pool_size: Option<usize>,
    /// Threads serving clients (1: a single-threaded event loop, like
    /// PgBouncer) [default: proxy.threads].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Write this process's PID here while it runs (`pgkeel up` starts
    /// the proxy with the cluster's proxy/proxy.pid, which `status`,
    /// `down` and `destroy` use).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// PEM certificate chain (leaf first) offered to clients that ask for
    /// TLS (sslmode=prefer/require). Server connections stay plaintext (Unix
    /// socket for nodes on this machine, TCP otherwise).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// allow: plaintext logins still accepted; require: refused (FATAL
    /// 28000) so every client uses TLS.
    /// [default: proxy.tls_mode]
    #[arg(long, value_enum)]
    pub tls_mode: Option<TlsModeArg>,
    /// Let roles other than the application role log in: their secrets
    /// are looked up on the primary (as the superuser) and cached 30 s
    /// [default: proxy.auth_query].
    #[arg(long)]
    pub auth_query: bool,
    /// Ask roles whose stored password is an md5 hash for MD5 (default:
    /// SCRAM-SHA-256 only; md5 roles cannot log in) [default:
    /// proxy.allow_md5].
    #[arg(long)]
    pub allow_md5: bool,
}

/// `--tls-mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TlsModeArg {
    /// TLS offered, plaintext accepted.
    Allow,
    /// TLS required.
    Require,
}

/// `--pool-mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PoolModeArg {
    /// Server connection per transaction.
    Transaction,
    /// Server connection per client session.
    Session,
}

/// Runs the proxy for the cluster at `root` until a stop signal.
pub async fn run(args: &ProxyArgs, cluster: &Cluster) -> Result<()> {
    let root = cluster.layout.root();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let options = ClusterProxyOptions {
        listen: args.listen,
        admin_listen: args.admin_listen,
        pool_size: args.pool_size,
        pool_mode: args.pool_mode.map(|m| match m {
            PoolModeArg::Transaction => PoolMode::Transaction,
            PoolModeArg::Session => PoolMode::Session,
        }),
        tls: args.tls_cert.clone().zip(args.tls_key.clone()),
        tls_mode: args.tls_mode.map(|m| match m {
            TlsModeArg::Allow => TlsMode::Allow,
            TlsModeArg::Require => TlsMode::Require,
        }),
        auth_query: args.auth_query.then_some(true),
        allow_md5: args.allow_md5.then_some(true),
    };
    // The proxy runs on a runtime of its own; by default one thread (like
    // PgBouncer): no work stealing or cross-thread wake-ups on the
    // per-query path, and at most one core.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (control_tx, mut control_rx) = tokio::sync::mpsc::channel::<Control>(4);
    let dir = root.to_path_buf();
    let threads = args.threads.unwrap_or(cluster.config.proxy.threads);
    let thread_options = options.clone();
    let thread = std::thread::Builder::new()
        .name("pgkeel-proxy".into())
        .spawn(move || {
            let mut builder = if threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(threads);
                b
            };
            let runtime = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("cannot start a runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let proxy = match spawn_for_cluster(&dir, &thread_options).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e)
                            .context(format!("cannot start the proxy for {}", dir.display()))));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(proxy.local_addr()));
                while let Some(Control::Reload(config)) = control_rx.recv().await {
                    match proxy.shared().reload(*config) {
                        Ok(report) => log_reload(&report),
                        Err(e) => eprintln!("reload refused, the running settings stay: {e}"),
                    }
                }
                proxy.shutdown(DRAIN).await;
            });
        })
        .context("cannot start the proxy thread")?;
    let addr = ready_rx
        .await
        .context("the proxy thread ended before it started")??;
    eprintln!(
        "pgkeel proxy listening on {addr} (pid {}); SIGHUP reloads {}",
        std::process::id(),
        cluster.layout.cluster_file().display()
    );
    let _pid_file = match &args.pid_file {
        Some(path) => Some(OwnPidFile::write(path)?),
        None => None,
    };
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                // Re-read cluster.toml and the secrets; flags still win.
                match config_for_cluster(root, &options) {
                    Ok(config) => {
                        let _ = control_tx.send(Control::Reload(Box::new(config))).await;
                    }
                    Err(e) => eprintln!(
                        "reload refused, the running settings stay: {e} (fix {} and send SIGHUP again)",
                        cluster.layout.cluster_file().display()
                    ),
                }
            }
        }
    }
    eprintln!("stopping: letting clients finish for up to {DRAIN:?}");
    let _ = control_tx.send(Control::Stop).await;
    drop(control_tx);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("cannot wait for the proxy thread")?
        .map_err(|_| anyhow::anyhow!("the proxy thread panicked"))?;
    Ok(())
}

/// Requests to the proxy's thread.
enum Control {
    /// Apply a re-read configuration.
    Reload(Box<ProxyConfig>),
    /// Drain and stop.
    Stop,
}

fn log_reload(report: &ReloadReport) {
    if report.applied.is_empty() && report.needs_restart.is_empty() {
        eprintln!("reloaded: nothing changed");
        return;
    }
    if !report.applied.is_empty() {
        eprintln!("reloaded: {} now in effect", report.applied.join(", "));
    }
    if !report.needs_restart.is_empty() {
        eprintln!(
            "changed but only applied after a restart (`pgkeel down` then `pgkeel up`, or restart `pgkeel proxy`): {}",
            report.needs_restart.join(", ")
        );
    }
}

/// Our PID in a file for as long as we run; removed on exit unless
/// another process has taken the file over.
struct OwnPidFile(PathBuf);

impl OwnPidFile {
    fn write(path: &Path) -> Result<Self> {
        pgkeel_agent::pidfile::write_own(path)
            .with_context(|| format!("cannot write the PID file {}", path.display()))?;
        Ok(OwnPidFile(path.to_path_buf()))
    }
}

impl Drop for OwnPidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

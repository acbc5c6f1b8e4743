//! `pgkeel proxy`: runs the read/write-splitting pooler in front of a
//! local cluster until SIGINT/SIGTERM, then drains clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pgkeel_proxy::{ClusterProxyOptions, PoolMode, TlsMode, spawn_for_cluster};

use crate::cli::Target;

/// How long connected clients may finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Flags of `pgkeel proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Address clients connect to.
    #[arg(long, default_value = "127.0.0.1:6432", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Serve Prometheus `/metrics` and a `/pools` listing over HTTP here.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// transaction: a server per transaction, reads split to replicas;
    /// session: a primary connection per client.
    #[arg(long, value_enum, default_value = "transaction")]
    pub pool_mode: PoolModeArg,
    /// Server connections per (user, database, node).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub pool_size: usize,
    /// Threads serving clients (1: a single-threaded event loop, like
    /// PgBouncer).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,
    /// PEM certificate chain (leaf first) offered to clients that ask for
    /// TLS (sslmode=prefer/require). Server connections stay plaintext.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// allow: plaintext logins still accepted; require: refused (FATAL
    /// 28000) so every client uses TLS.
    #[arg(long, value_enum, default_value = "allow", requires = "tls_cert")]
    pub tls_mode: TlsModeArg,
    /// Let roles other than the application role log in: their secrets
    /// are looked up on the primary (as the superuser) and cached 30 s.
    #[arg(long)]
    pub auth_query: bool,
    /// Ask roles whose stored password is an md5 hash for MD5 (default:
    /// SCRAM-SHA-256 only; md5 roles cannot log in).
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
pub async fn run(args: &ProxyArgs, root: &Path) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let mut options = ClusterProxyOptions::new(args.listen);
    options.admin_listen = args.admin_listen;
    options.pool_size = args.pool_size;
    options.pool_mode = match args.pool_mode {
        PoolModeArg::Transaction => PoolMode::Transaction,
        PoolModeArg::Session => PoolMode::Session,
    };
    options.tls = args.tls_cert.clone().zip(args.tls_key.clone());
    options.tls_mode = match args.tls_mode {
        TlsModeArg::Allow => TlsMode::Allow,
        TlsModeArg::Require => TlsMode::Require,
    };
    options.auth_query = args.auth_query;
    options.allow_md5 = args.allow_md5;
    // The proxy runs on a runtime of its own; by default one thread (like
    // PgBouncer): no work stealing or cross-thread wake-ups on the
    // per-query path, and at most one core.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let dir = root.to_path_buf();
    let threads = args.threads;
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
                let proxy = match spawn_for_cluster(&dir, &options).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e)
                            .context(format!("cannot start the proxy for {}", dir.display()))));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(proxy.local_addr()));
                let _ = stop_rx.await;
                proxy.shutdown(DRAIN).await;
            });
        })
        .context("cannot start the proxy thread")?;
    let addr = ready_rx
        .await
        .context("the proxy thread ended before it started")??;
    eprintln!(
        "pgkeel proxy listening on {addr} (pid {})",
        std::process::id()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping: letting clients finish for up to {DRAIN:?}");
    let _ = stop_tx.send(());
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .context("cannot wait for the proxy thread")?
        .map_err(|_| anyhow::anyhow!("the proxy thread panicked"))?;
    Ok(())
}

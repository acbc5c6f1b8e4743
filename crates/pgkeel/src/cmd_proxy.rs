//! `pgkeel proxy`: runs the read/write-splitting pooler in front of a
//! local cluster until SIGINT/SIGTERM, then drains clients.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use pgkeel_proxy::{ClusterProxyOptions, PoolMode, spawn_for_cluster};

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
    let proxy = spawn_for_cluster(root, &options)
        .await
        .with_context(|| format!("cannot start the proxy for {}", root.display()))?;
    eprintln!(
        "pgkeel proxy listening on {} (pid {})",
        proxy.local_addr(),
        std::process::id()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping: letting clients finish for up to {DRAIN:?}");
    proxy.shutdown(DRAIN).await;
    Ok(())
}

//! Command line and environment of the users API.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use pgkeel_client::PoolConfig;

use crate::cluster_dir;

/// The replication guide's users API (FastAPI + SQLAlchemy) on
/// pgkeel-client: `POST /users` writes on the primary, `GET /users/{id}`
/// reads from a replica.
#[derive(Debug, Parser)]
#[command(name = "users-api")]
pub struct Args {
    /// Data directory of a local pgkeel cluster (reads its cluster.toml
    /// and app password). Without it the guide's POSTGRES_MASTER_HOST,
    /// POSTGRES_REPLICA1_HOST, ..., POSTGRES_USER, POSTGRES_PASSWORD and
    /// POSTGRES_DB variables are used.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Address to serve HTTP on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
}

/// Pool settings from `--dir` when given, else from the environment read
/// through `lookup`.
pub fn pool_config(
    args: &Args,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<PoolConfig, String> {
    match &args.dir {
        Some(dir) => cluster_dir::pool_config(dir),
        None => PoolConfig::from_env_with(lookup).map_err(|e| {
            format!("{e}; or pass --dir with the data directory of a local pgkeel cluster")
        }),
    }
}

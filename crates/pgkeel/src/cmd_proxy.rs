//! `pgkeel proxy`: runs the read/write-splitting pooler in front of a
//! local cluster until SIGINT/SIGTERM, then drains clients. The flags are
//! parsed (and documented) here; the proxy itself is the small
//! `pgkeel-proxy` executable this command turns into.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use crate::cli::Target;

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

/// Runs the proxy for `cluster` until a stop signal: replaces this process
/// with `pgkeel-proxy` (next to this executable; same PID, so PID files
/// and `up`'s readiness check see the proxy) with the flags given here.
/// Returns only if that executable cannot be started.
pub fn run(args: &ProxyArgs, source: &ProxySource) -> Result<()> {
    let exe = std::env::current_exe()
        .context("cannot locate the pgkeel binary")?
        .with_file_name(PROXY_EXE);
    let err = std::process::Command::new(&exe)
        .args(slim_args(args, source))
        .exec();
    Err(err).with_context(|| {
        format!(
            "cannot run {} (the proxy ships as a second executable next to pgkeel; install both)",
            exe.display()
        )
    })
}

/// The executable that runs the proxy.
const PROXY_EXE: &str = "pgkeel-proxy";

/// Where `pgkeel proxy` found the cluster.
pub enum ProxySource {
    /// A local cluster's data root (its `cluster.toml`).
    DataRoot(PathBuf),
    /// A multi-host cluster's shared config file (absolute), with this
    /// host's data root when --dir named one.
    ConfigFile(PathBuf, Option<PathBuf>),
}

/// The flags of `pgkeel-proxy` for `args`, with the cluster resolved (from
/// --dir, --config or the environment) here.
fn slim_args(args: &ProxyArgs, source: &ProxySource) -> Vec<OsString> {
    let mut out: Vec<OsString> = match source {
        ProxySource::DataRoot(root) => vec!["--dir".into(), root.into()],
        ProxySource::ConfigFile(file, root) => {
            let mut v: Vec<OsString> = vec!["--config".into(), file.into()];
            if let Some(root) = root {
                v.extend(["--dir".into(), root.into()]);
            }
            v
        }
    };
    let mut pair = |flag: &str, value: Option<OsString>| {
        if let Some(v) = value {
            out.push(flag.into());
            out.push(v);
        }
    };
    let text = |v: &dyn ToString| Some(OsString::from(v.to_string()));
    pair("--listen", args.listen.and_then(|a| text(&a)));
    pair("--admin-listen", args.admin_listen.and_then(|a| text(&a)));
    pair(
        "--pool-mode",
        args.pool_mode.map(|m| match m {
            PoolModeArg::Transaction => "transaction".into(),
            PoolModeArg::Session => "session".into(),
        }),
    );
    pair("--pool-size", args.pool_size.and_then(|n| text(&n)));
    pair("--threads", args.threads.and_then(|n| text(&n)));
    pair("--pid-file", args.pid_file.clone().map(Into::into));
    pair("--tls-cert", args.tls_cert.clone().map(Into::into));
    pair("--tls-key", args.tls_key.clone().map(Into::into));
    pair(
        "--tls-mode",
        args.tls_mode.map(|m| match m {
            TlsModeArg::Allow => "allow".into(),
            TlsModeArg::Require => "require".into(),
        }),
    );
    if args.auth_query {
        out.push("--auth-query".into());
    }
    if args.allow_md5 {
        out.push("--allow-md5".into());
    }
    out
}

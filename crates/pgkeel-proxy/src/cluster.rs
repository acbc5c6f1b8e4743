//! Fronting a pgkeel cluster: backends from its `cluster.toml` (a local
//! cluster) or its shared `pgkeel.toml` (multi-host), the application role
//! (password from its secrets) as the login users. This is what `pgkeel
//! proxy` and `pgkeel up` use.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgkeel_cluster::Cluster;
use pgkeel_cluster::Layout;
use pgkeel_cluster::layout::Secret;
use pgkeel_core::Config;
use pgkeel_core::config::{ConfigSources, ProxySection, load};
use pgkeel_core::size::parse_pg_size;
use pgkeel_pg::secrets::read_password;

use crate::config::{Backend, ProxyConfig, User};
use crate::leader::LeaderSource;
use crate::listener::{ProxyHandle, start};
use crate::{PoolMode, ProxyError, TlsMode};

/// Default client port of the proxy (for the default base port).
pub const DEFAULT_PORT: u16 = 6432;

/// Overrides of the cluster's `[proxy]` section (command-line flags,
/// tests); `None` keeps the section's value.
#[derive(Debug, Clone, Default)]
pub struct ClusterProxyOptions {
    /// Client listener; `None`: the section's `host:port`.
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listener (`/metrics`, `/pools`). `None`: the section's
    /// `host:admin_port` when `listen` is also `None`, else no admin
    /// endpoint.
    pub admin_listen: Option<SocketAddr>,
    /// Pool mode.
    pub pool_mode: Option<PoolMode>,
    /// Server connections per (user, database, node).
    pub pool_size: Option<usize>,
    /// PEM certificate chain and key for client TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether plaintext logins are still accepted with TLS configured.
    pub tls_mode: Option<TlsMode>,
    /// Ask md5-password roles (from the auth query) for MD5.
    pub allow_md5: Option<bool>,
    /// Let roles other than the application role log in, looked up on the
    /// primary as the cluster's superuser.
    pub auth_query: Option<bool>,
}

impl ClusterProxyOptions {
    /// Listens on `listen`, no admin endpoint, everything else from the
    /// cluster's `[proxy]` section.
    pub fn new(listen: SocketAddr) -> Self {
        ClusterProxyOptions {
            listen: Some(listen),
            ..Default::default()
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, ProxyError> {
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ProxyError::Config(format!("cannot resolve {host}:{port}")))
}

/// Where the proxy reads its cluster from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSource {
    /// A data root holding `cluster.toml` (`pgkeel up`'s clusters).
    DataRoot(PathBuf),
    /// A `pgkeel.toml` shared by the hosts of a multi-host cluster (its
    /// relative `secrets_dir` is relative to the file), with this host's
    /// data root if it differs from `cluster.data_dir`.
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// `--dir`: this host's data root.
        data_root: Option<PathBuf>,
    },
}

impl ClusterSource {
    /// The configuration and its paths.
    pub fn load(&self) -> Result<(Config, Layout), ProxyError> {
        match self {
            ClusterSource::DataRoot(dir) => Ok(Cluster::open_stored(dir)?),
            ClusterSource::ConfigFile { path, data_root } => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ProxyError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                let mut config = load(&ConfigSources {
                    file: Some((path.display().to_string(), text)),
                    ..Default::default()
                })
                .map_err(|e| ProxyError::Config(e.to_string()))?;
                config.anchor_secrets_dir(path.parent().unwrap_or(Path::new(".")));
                if let Some(root) = data_root {
                    config.cluster.data_dir = root.clone();
                }
                let layout = Cluster::layout_of(&config)?;
                Ok((config, layout))
            }
        }
    }

    /// The file a SIGHUP re-reads.
    pub fn file(&self) -> PathBuf {
        match self {
            ClusterSource::DataRoot(dir) => dir.join("cluster.toml"),
            ClusterSource::ConfigFile { path, .. } => path.clone(),
        }
    }
}

/// The `[proxy]` section of the cluster stored in `dir` (what must be
/// known before the proxy starts, such as its thread count).
pub fn proxy_section(dir: &Path) -> Result<ProxySection, ProxyError> {
    Ok(ClusterSource::DataRoot(dir.to_path_buf()).load()?.0.proxy)
}

/// The proxy configuration for the cluster stored in `dir`: backends and
/// the application role from the cluster, settings from its `[proxy]`
/// section, then `options`.
pub fn config_for_cluster(
    dir: &Path,
    options: &ClusterProxyOptions,
) -> Result<ProxyConfig, ProxyError> {
    config_for(&ClusterSource::DataRoot(dir.to_path_buf()), options)
}

/// The proxy configuration for the cluster `source` names.
pub fn config_for(
    source: &ClusterSource,
    options: &ClusterProxyOptions,
) -> Result<ProxyConfig, ProxyError> {
    let (c, layout) = source.load()?;
    let c = &c;
    // Pinned in cluster.toml when the cluster was created (and written by
    // `pgkeel init --node`); resolved like every other command does only
    // if a hand-written file left it out.
    let superuser = match (&c.roles.superuser, source) {
        (Some(name), _) => name.clone(),
        (None, ClusterSource::DataRoot(dir)) => Cluster::open(dir)?.superuser,
        (None, ClusterSource::ConfigFile { .. }) => "postgres".into(),
    };
    let section = &c.proxy;
    let backends = c
        .nodes
        .iter()
        .map(|n| {
            let name = n.name.to_string();
            // A node whose data directory is here listens on a Unix
            // socket the proxy can use instead of loopback TCP.
            let local = section.server_socket && layout.data_dir(&name).exists();
            Ok(Backend {
                socket: local.then(|| layout.socket_path(&name, n.port)),
                addr: resolve(&n.host, n.port)?,
                name,
            })
        })
        .collect::<Result<Vec<_>, ProxyError>>()?;
    let app = c.roles.app.clone();
    let password = read_password(&layout.password_file(Secret::App))?;
    let mut users = HashMap::new();
    users.insert(app.clone(), User::from_password(&password)?);
    let (listen, admin_listen) = match options.listen {
        Some(listen) => (listen, options.admin_listen),
        None => (
            resolve(&section.host, c.proxy_port())?,
            Some(match options.admin_listen {
                Some(a) => a,
                None => resolve(&section.host, c.proxy_admin_port())?,
            }),
        ),
    };
    let mut config = ProxyConfig::new(listen, backends, users);
    config.admin_listen = admin_listen;
    config.health_user = app;
    config.health_database = c.roles.database.clone();
    config.pool_mode = options.pool_mode.unwrap_or(section.pool_mode);
    config.pool_size = options.pool_size.unwrap_or(section.pool_size);
    config.max_clients = section.max_clients;
    config.queue_wait = Duration::from_secs_f64(section.queue_wait);
    config.login_timeout = Duration::from_secs_f64(section.login_timeout);
    let never_if_zero = |s: f64| (s > 0.0).then(|| Duration::from_secs_f64(s));
    config.server_idle_timeout = never_if_zero(section.server_idle_timeout);
    config.server_lifetime = never_if_zero(section.server_lifetime);
    config.idle_transaction_timeout = never_if_zero(section.idle_transaction_timeout);
    config.max_replica_lag_bytes =
        Some(parse_pg_size(&section.max_replica_lag).ok_or_else(|| {
            ProxyError::Config(format!(
                "`proxy.max_replica_lag` = \"{}\" is not a size",
                section.max_replica_lag
            ))
        })?);
    config.max_replica_lag = (section.max_replica_lag_seconds > 0.0)
        .then(|| Duration::from_secs_f64(section.max_replica_lag_seconds));
    config.replica_choice = section.replica_choice;
    config.no_replica = section.no_replica;
    config.read_only_functions = section.read_only_functions.clone();
    // A cluster with agents (an etcd of its own or configured): follow
    // their leader key.
    if !c.etcd.endpoints.is_empty() || !c.etcd.members.is_empty() || layout.etcd_dir().exists() {
        config.leader_source = Some(LeaderSource {
            endpoints: c.etcd_endpoints(),
            namespace: c.etcd.namespace.clone(),
            cluster: c.cluster.name.clone(),
            timeout: Duration::from_secs_f64(c.ha.retry_timeout.max(0.5)),
        });
    }
    if let Some((cert, key)) = &options.tls {
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
    } else {
        config.tls_cert = section.tls_cert.clone();
        config.tls_key = section.tls_key.clone();
    }
    config.tls_mode = options.tls_mode.unwrap_or(section.tls_mode);
    config.allow_md5 = options.allow_md5.unwrap_or(section.allow_md5);
    if options.auth_query.unwrap_or(section.auth_query) {
        // Reading pg_authid needs a superuser.
        let password = read_password(&layout.password_file(Secret::Superuser))?;
        config
            .users
            .insert(superuser.clone(), User::from_password(&password)?);
        config.auth_user = Some(superuser.clone());
    }
    Ok(config)
}

/// Starts a proxy in front of the cluster stored in `dir` (in the calling
/// Tokio runtime); stop it with [`ProxyHandle::shutdown`].
pub async fn spawn_for_cluster(
    dir: &Path,
    options: &ClusterProxyOptions,
) -> Result<ProxyHandle, ProxyError> {
    start(config_for_cluster(dir, options)?).await
}

/// Starts a proxy in front of the cluster `source` names.
pub async fn spawn_for(
    source: &ClusterSource,
    options: &ClusterProxyOptions,
) -> Result<ProxyHandle, ProxyError> {
    start(config_for(source, options)?).await
}

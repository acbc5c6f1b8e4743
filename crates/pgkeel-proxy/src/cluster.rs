//! Fronting a local pgkeel cluster: backends from its `cluster.toml`, the
//! application role (password from its secrets) as the login users. This
//! is what `pgkeel proxy --dir D` and `pgkeel up` use.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use pgkeel_cluster::Cluster;
use pgkeel_cluster::layout::Secret;
use pgkeel_pg::secrets::read_password;

use crate::config::{Backend, ProxyConfig, User};
use crate::listener::{ProxyHandle, start};
use crate::{PoolMode, ProxyError, TlsMode};

/// Default client port of the proxy.
pub const DEFAULT_PORT: u16 = 6432;

/// Options for a proxy in front of a local cluster.
#[derive(Debug, Clone)]
pub struct ClusterProxyOptions {
    /// Client listener.
    pub listen: SocketAddr,
    /// Admin HTTP listener (`/metrics`, `/pools`).
    pub admin_listen: Option<SocketAddr>,
    /// Pool mode.
    pub pool_mode: PoolMode,
    /// Server connections per (user, database, node).
    pub pool_size: usize,
    /// PEM certificate chain and key for client TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Whether plaintext logins are still accepted with TLS configured.
    pub tls_mode: TlsMode,
    /// Ask md5-password roles (from the auth query) for MD5.
    pub allow_md5: bool,
    /// Let roles other than the application role log in, looked up on the
    /// primary as the cluster's superuser.
    pub auth_query: bool,
}

impl ClusterProxyOptions {
    /// Transaction pooling, 20 connections per pool, no admin endpoint.
    pub fn new(listen: SocketAddr) -> Self {
        ClusterProxyOptions {
            listen,
            admin_listen: None,
            pool_mode: PoolMode::Transaction,
            pool_size: 20,
            tls: None,
            tls_mode: TlsMode::Allow,
            allow_md5: false,
            auth_query: false,
        }
    }
}

/// The proxy configuration for the cluster stored in `dir`.
pub fn config_for_cluster(
    dir: &Path,
    options: &ClusterProxyOptions,
) -> Result<ProxyConfig, ProxyError> {
    let cluster = Cluster::open(dir)?;
    let backends = cluster
        .config
        .nodes
        .iter()
        .map(|n| {
            let addr = (n.host.as_str(), n.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    ProxyError::Config(format!("cannot resolve {}:{}", n.host, n.port))
                })?;
            Ok(Backend {
                name: n.name.to_string(),
                addr,
            })
        })
        .collect::<Result<Vec<_>, ProxyError>>()?;
    let app = cluster.config.roles.app.clone();
    let password = read_password(&cluster.layout.password_file(Secret::App))?;
    let mut users = HashMap::new();
    users.insert(app.clone(), User::from_password(&password)?);
    let mut config = ProxyConfig::new(options.listen, backends, users);
    config.health_user = app;
    config.health_database = cluster.config.roles.database.clone();
    config.pool_mode = options.pool_mode;
    config.pool_size = options.pool_size;
    config.admin_listen = options.admin_listen;
    if let Some((cert, key)) = &options.tls {
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
    }
    config.tls_mode = options.tls_mode;
    config.allow_md5 = options.allow_md5;
    if options.auth_query {
        // Reading pg_authid needs a superuser.
        let password = read_password(&cluster.layout.password_file(Secret::Superuser))?;
        config
            .users
            .insert(cluster.superuser.clone(), User::from_password(&password)?);
        config.auth_user = Some(cluster.superuser.clone());
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

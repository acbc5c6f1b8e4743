//! libpq connection URLs for the cluster's nodes.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use pgkeel_core::status::{ClusterStatus, Role};
use pgkeel_core::{Config, NodeConfig};
use pgkeel_pg::secrets::read_password;

use crate::layout::Secret;
use crate::{Cluster, ClusterError, Layout};

/// Which node a URL should point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlTarget {
    /// The node currently running as primary.
    Primary,
    /// A running replica that is streaming (the first, in config order).
    Replica,
    /// A named node.
    Node(String),
    /// The cluster's proxy (reads split to replicas, writes to the
    /// primary, through failovers).
    Proxy,
}

/// Whose credentials go in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// The application role, on the application database.
    App,
    /// The superuser, on the `postgres` database.
    Superuser,
}

/// Builds `postgresql://user:password@host:port/db`.
pub fn format_url(user: &str, password: &str, host: &str, port: u16, database: &str) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    format!(
        "postgresql://{}:{}@{host}:{port}/{}",
        enc(user),
        enc(password),
        enc(database)
    )
}

impl UrlTarget {
    /// Whether choosing the node needs the cluster's live status.
    pub fn needs_status(&self) -> bool {
        matches!(self, UrlTarget::Primary | UrlTarget::Replica)
    }
}

impl Cluster {
    /// The URL for `target` with `creds`, the node chosen from a live
    /// status of this host's nodes.
    pub async fn url(
        &self,
        target: &UrlTarget,
        creds: Credentials,
    ) -> Result<String, ClusterError> {
        let status = if target.needs_status() {
            Some(self.status().await)
        } else {
            None
        };
        url_for(
            &UrlContext {
                config: &self.config,
                layout: &self.layout,
                superuser: &self.superuser,
            },
            status.as_ref(),
            target,
            creds,
        )
    }
}

/// What a URL is built from.
pub struct UrlContext<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// Where the secrets are.
    pub layout: &'a Layout,
    /// The superuser role.
    pub superuser: &'a str,
}

/// The URL for `target` with `creds`; a primary or replica is chosen from
/// `status` (required for those targets).
pub fn url_for(
    ctx: &UrlContext<'_>,
    status: Option<&ClusterStatus>,
    target: &UrlTarget,
    creds: Credentials,
) -> Result<String, ClusterError> {
    let config = ctx.config;
    let (host, port) = match target {
        UrlTarget::Proxy => {
            if !config.proxy.enabled {
                return Err(ClusterError::NoSuitableNode {
                    detail: "this cluster has no proxy (`proxy.enabled = false`)".into(),
                });
            }
            (
                crate::status::connect_host(&config.proxy.host),
                config.proxy_port(),
            )
        }
        _ => {
            let node = resolve_target(config, status, target)?;
            (node.host.clone(), node.port)
        }
    };
    let (user, secret, database) = match creds {
        Credentials::App => (
            config.roles.app.as_str(),
            Secret::App,
            config.roles.database.as_str(),
        ),
        Credentials::Superuser => (ctx.superuser, Secret::Superuser, "postgres"),
    };
    let password = read_password(&ctx.layout.password_file(secret))?;
    Ok(format_url(user, &password, &host, port, database))
}

fn resolve_target<'a>(
    config: &'a Config,
    status: Option<&ClusterStatus>,
    target: &UrlTarget,
) -> Result<&'a NodeConfig, ClusterError> {
    let node = |name: &str| crate::context::find_node(config, name);
    if let UrlTarget::Node(name) = target {
        return node(name);
    }
    let found = status.and_then(|status| match target {
        UrlTarget::Primary => status.primary().map(|p| p.name.clone()),
        _ => status
            .nodes
            .iter()
            .find(|n| {
                n.running
                    && n.role == Some(Role::Replica)
                    && n.wal_receiver.as_deref() == Some("streaming")
            })
            .map(|n| n.name.clone()),
    });
    let name = found.ok_or_else(|| ClusterError::NoSuitableNode {
        detail: match target {
            UrlTarget::Primary => "no node is running as primary: `pgkeel up` starts the cluster, `pgkeel status` shows what runs".into(),
            _ => "no replica is running and streaming: `pgkeel status` shows each node's state".into(),
        },
    })?;
    node(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_escapes_and_brackets_ipv6() {
        assert_eq!(
            format_url("app", "pw", "127.0.0.1", 5432, "app"),
            "postgresql://app:pw@127.0.0.1:5432/app"
        );
        assert_eq!(
            format_url("a", "p@ss/", "::1", 1, "d b"),
            "postgresql://a:p%40ss%2F@[::1]:1/d%20b"
        );
    }
}

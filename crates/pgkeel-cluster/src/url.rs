//! libpq connection URLs for the cluster's nodes.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use pgkeel_core::NodeConfig;
use pgkeel_core::status::Role;
use pgkeel_pg::secrets::read_password;

use crate::layout::Secret;
use crate::{Cluster, ClusterError};

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

impl Cluster {
    /// The URL for `target` with `creds`.
    pub async fn url(
        &self,
        target: &UrlTarget,
        creds: Credentials,
    ) -> Result<String, ClusterError> {
        let (host, port) = match target {
            UrlTarget::Proxy => {
                if !self.config.proxy.enabled {
                    return Err(ClusterError::NoSuitableNode {
                        detail: "this cluster has no proxy (`proxy.enabled = false`)".into(),
                    });
                }
                (
                    crate::status::connect_host(&self.config.proxy.host),
                    self.config.proxy_port(),
                )
            }
            _ => {
                let node = self.resolve_target(target).await?;
                (node.host.clone(), node.port)
            }
        };
        let (user, secret, database) = match creds {
            Credentials::App => (
                self.config.roles.app.as_str(),
                Secret::App,
                self.config.roles.database.as_str(),
            ),
            Credentials::Superuser => (self.superuser.as_str(), Secret::Superuser, "postgres"),
        };
        let password = read_password(&self.layout.password_file(secret))?;
        Ok(format_url(user, &password, &host, port, database))
    }

    async fn resolve_target(&self, target: &UrlTarget) -> Result<&NodeConfig, ClusterError> {
        if let UrlTarget::Node(name) = target {
            return self.node(name);
        }
        let status = self.status().await;
        let found = match target {
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
        };
        let name = found.ok_or_else(|| ClusterError::NoSuitableNode {
            detail: match target {
                UrlTarget::Primary => "no node is running as primary: `pgkeel up` starts the cluster, `pgkeel status` shows what runs".into(),
                _ => "no replica is running and streaming: `pgkeel status` shows each node's state".into(),
            },
        })?;
        self.node(&name)
    }
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

//! The pool's settings: which nodes, which credentials, and the bounds
//! that decide when a replica is too far behind or a read waits too long.

use std::fmt;
use std::time::Duration;

use crate::{Error, NodeAddr, Result};

/// Everything [`ReplicatedPool`](crate::ReplicatedPool) needs. Build it
/// directly, from URLs ([`PoolConfig::from_urls`]) or from the guide's
/// environment variables ([`PoolConfig::from_env`]).
///
/// ```
/// use std::time::Duration;
/// use pgkeel_client::{NodeAddr, PoolConfig};
///
/// let config = PoolConfig {
///     nodes: vec![NodeAddr::new("10.0.0.1", 5432), NodeAddr::new("10.0.0.2", 5432)],
///     user: "app".into(),
///     password: Some("secret".into()),
///     dbname: "app".into(),
///     max_replica_lag: Duration::from_secs(2),
///     ..PoolConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Every node of the cluster, primary and replicas, in any order: which
    /// one is the primary is discovered, not configured, so the list stays
    /// right after a failover.
    pub nodes: Vec<NodeAddr>,
    /// Role to log in as.
    pub user: String,
    /// Its password (`None` for trust or peer authentication).
    pub password: Option<String>,
    /// Database to connect to.
    pub dbname: String,
    /// `application_name` of every session, so the pool's sessions are
    /// recognisable in `pg_stat_activity`.
    pub application_name: String,
    /// Upper bound for opening one connection and for one health probe: a
    /// node that does not answer within it counts as down.
    pub connect_timeout: Duration,
    /// Connections kept per node at most (each node has its own pool).
    pub max_connections_per_node: usize,
    /// A replica further behind the primary than this is skipped by
    /// `read()`. Measured against the primary's WAL positions sampled every
    /// `health_interval`, so it holds on an idle primary too.
    pub max_replica_lag: Duration,
    /// How long `read_after()` waits for a replica to replay a write before
    /// it reads from the primary instead.
    pub read_after_wait: Duration,
    /// How often every node is probed (role, WAL position, reachability).
    pub health_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            nodes: Vec::new(),
            user: "postgres".into(),
            password: None,
            dbname: "postgres".into(),
            application_name: "pgkeel-client".into(),
            connect_timeout: Duration::from_secs(3),
            max_connections_per_node: 16,
            max_replica_lag: Duration::from_secs(5),
            read_after_wait: Duration::from_millis(200),
            health_interval: Duration::from_millis(250),
        }
    }
}

impl fmt::Debug for PoolConfig {
    /// Like a derived `Debug`, with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolConfig")
            .field("nodes", &self.nodes)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_connections_per_node", &self.max_connections_per_node)
            .field("max_replica_lag", &self.max_replica_lag)
            .field("read_after_wait", &self.read_after_wait)
            .field("health_interval", &self.health_interval)
            .finish()
    }
}

impl PoolConfig {
    /// Checks the settings before anything connects, so a mistake is
    /// reported as the setting to change rather than as a network error.
    pub fn validate(&self) -> Result<()> {
        self.validate_settings()?;
        if self.nodes.is_empty() {
            return Err(Error::config(
                "no nodes configured: list the primary and the replicas in `PoolConfig::nodes` (or pass their URLs)",
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.host.trim().is_empty() {
                return Err(Error::config(format!(
                    "node #{} has an empty host: give each node a host name or address",
                    i + 1
                )));
            }
            if node.port == 0 {
                return Err(Error::config(format!(
                    "node {} has port 0: give the port PostgreSQL listens on (usually 5432)",
                    node.host
                )));
            }
            if self.nodes[..i].contains(node) {
                return Err(Error::config(format!(
                    "node {node} is listed twice: list each node once"
                )));
            }
        }
        Ok(())
    }

    /// The checks that do not depend on the node list (a topology source
    /// may supply the nodes).
    pub(crate) fn validate_settings(&self) -> Result<()> {
        if self.user.is_empty() {
            return Err(Error::config(
                "no user configured: set `PoolConfig::user` (or the URL's user part)",
            ));
        }
        if self.dbname.is_empty() {
            return Err(Error::config(
                "no database configured: set `PoolConfig::dbname` (or the URL's path)",
            ));
        }
        if self.max_connections_per_node == 0 {
            return Err(Error::config(
                "max_connections_per_node is 0: allow at least 1 connection per node",
            ));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("health_interval", self.health_interval),
        ] {
            if value.is_zero() {
                return Err(Error::config(format!(
                    "{name} is zero: give it a positive duration"
                )));
            }
        }
        Ok(())
    }

    /// The driver configuration for one node.
    pub(crate) fn pg_config(&self, node: &NodeAddr) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&node.host)
            .port(node.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout);
        if let Some(password) = &self.password {
            pg.password(password);
        }
        pg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn config() -> PoolConfig {
        PoolConfig {
            nodes: vec![NodeAddr::new("a", 5432), NodeAddr::new("b", 5433)],
            password: Some("hunter2".into()),
            ..PoolConfig::default()
        }
    }

    #[test]
    fn valid_config_passes() {
        assert!(config().validate().is_ok());
    }

    #[test]
    fn each_mistake_names_its_setting() {
        let cases: Vec<(PoolConfig, &str)> = vec![
            (
                PoolConfig {
                    nodes: vec![],
                    ..config()
                },
                "no nodes",
            ),
            (
                PoolConfig {
                    nodes: vec![NodeAddr::new("a", 1), NodeAddr::new("a", 1)],
                    ..config()
                },
                "listed twice",
            ),
            (
                PoolConfig {
                    nodes: vec![NodeAddr::new("a", 0)],
                    ..config()
                },
                "port 0",
            ),
            (
                PoolConfig {
                    user: String::new(),
                    ..config()
                },
                "PoolConfig::user",
            ),
            (
                PoolConfig {
                    dbname: String::new(),
                    ..config()
                },
                "PoolConfig::dbname",
            ),
            (
                PoolConfig {
                    max_connections_per_node: 0,
                    ..config()
                },
                "max_connections_per_node",
            ),
            (
                PoolConfig {
                    health_interval: Duration::ZERO,
                    ..config()
                },
                "health_interval",
            ),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().err().map(|e| (e.kind(), e.to_string()));
            assert!(
                matches!(&err, Some((ErrorKind::Config, m)) if m.contains(needle)),
                "{needle}: {err:?}"
            );
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let text = format!("{:?}", config());
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"));
    }

    #[test]
    fn driver_config_points_at_the_node() {
        let cfg = config();
        let pg = cfg.pg_config(&NodeAddr::new("b", 5433));
        assert_eq!(pg.get_ports(), &[5433]);
        assert_eq!(pg.get_user(), Some("postgres"));
        assert_eq!(pg.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(pg.get_application_name(), Some("pgkeel-client"));
    }
}

//! Where everything of one cluster lives under its data root.

use std::path::{Path, PathBuf};

/// Secrets pgkeel generates, one password file each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// The superuser's password (TCP access; the socket uses peer auth).
    Superuser,
    /// The replication role's password.
    Replication,
    /// The application role's password.
    App,
}

/// Paths of one cluster. The data root holds:
///
/// ```text
/// cluster.toml                 effective config; marks the dir as pgkeel's
/// secrets/<role>.password      0600, owned by the OS user
/// secrets/replication.pgpass   libpq password file used by standbys
/// nodes/<name>/data            PGDATA
/// nodes/<name>/data.partial    a clone in progress (never started)
/// nodes/<name>/postgresql.log  the server's stderr
/// nodes/<name>/run             Unix socket directory (0700)
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root`, made absolute (paths end up in
    /// `postgresql.conf`, which PostgreSQL reads from its own directory).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        Ok(Layout {
            root: std::path::absolute(root)?,
        })
    }

    /// The data root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The marker and stored configuration.
    pub fn cluster_file(&self) -> PathBuf {
        self.root.join("cluster.toml")
    }

    /// Directory of generated secrets.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// One password file.
    pub fn password_file(&self, secret: Secret) -> PathBuf {
        let name = match secret {
            Secret::Superuser => "superuser.password",
            Secret::Replication => "replication.password",
            Secret::App => "app.password",
        };
        self.secrets_dir().join(name)
    }

    /// The libpq password file standbys use to authenticate.
    pub fn replication_passfile(&self) -> PathBuf {
        self.secrets_dir().join("replication.pgpass")
    }

    /// A node's directory.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }

    /// A node's PGDATA.
    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("data")
    }

    /// Where a node's data is built before it is complete.
    pub fn partial_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("data.partial")
    }

    /// A node's server log.
    pub fn log_file(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("postgresql.log")
    }

    /// The node a standby was configured to follow (written by pgkeel).
    pub fn upstream_file(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("upstream")
    }

    /// PID file of a node's agent.
    pub fn agent_pid_file(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("agent.pid")
    }

    /// A node's agent log.
    pub fn agent_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("agent.log")
    }

    /// The local etcd member's directory.
    pub fn etcd_dir(&self) -> PathBuf {
        self.root.join("etcd")
    }

    /// The libpq password file with the superuser's password (rewind, and
    /// agents probing other members).
    pub fn superuser_passfile(&self) -> PathBuf {
        self.secrets_dir().join("superuser.pgpass")
    }

    /// Token guarding the agents' POST endpoints.
    pub fn api_token_file(&self) -> PathBuf {
        self.secrets_dir().join("api.token")
    }

    /// The proxy's directory (PID file, log).
    pub fn proxy_dir(&self) -> PathBuf {
        self.root.join("proxy")
    }

    /// PID file of the proxy `up` started.
    pub fn proxy_pid_file(&self) -> PathBuf {
        self.proxy_dir().join("proxy.pid")
    }

    /// The proxy's log.
    pub fn proxy_log(&self) -> PathBuf {
        self.proxy_dir().join("proxy.log")
    }

    /// A node's Unix socket directory.
    pub fn socket_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("run")
    }

    /// The socket file itself (its length is limited by the kernel).
    pub fn socket_path(&self, node: &str, port: u16) -> PathBuf {
        self.socket_dir(node).join(format!(".s.PGSQL.{port}"))
    }
}

//! The proxy's settings and the backends it fronts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use pgkeel_wire::scram::ScramVerifier;

use crate::ProxyError;
use crate::tls::TlsMode;

/// PgBouncer-style default auth query: the role's stored secret, if it
/// may log in and has not expired. Reading `pg_authid` needs a superuser
/// `auth_user`; give another query (for example a SECURITY DEFINER
/// function) to use a less privileged one.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, rolpassword FROM pg_catalog.pg_authid \
     WHERE rolname = $1 AND rolcanlogin \
     AND (rolvaliduntil IS NULL OR rolvaliduntil > now())";

// The routing enums are shared with the `[proxy]` section of the cluster
// configuration.
pub use pgkeel_core::config::{NoReplica, PoolMode, ReplicaChoice};

/// A PostgreSQL server behind the proxy; its role is found by health
/// checks, never assumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Node name (for logs and errors).
    pub name: String,
    /// Address.
    pub addr: SocketAddr,
    /// Its Unix socket, when the node runs on this machine: server
    /// connections use it (falling back to TCP), which costs the proxy
    /// far less CPU than loopback TCP.
    pub socket: Option<PathBuf>,
}

/// A role clients log in as. The proxy verifies clients against the SCRAM
/// verifier and logs in to servers with the password.
#[derive(Clone)]
pub struct User {
    /// Password used towards the servers.
    pub password: String,
    /// Verifier clients are checked against.
    pub verifier: ScramVerifier,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User").finish_non_exhaustive()
    }
}

impl User {
    /// A user from a clear-text password (the verifier is derived with a
    /// fresh salt).
    pub fn from_password(password: &str) -> Result<Self, ProxyError> {
        let verifier = ScramVerifier::from_password(password)
            .map_err(|e| ProxyError::Config(e.to_string()))?;
        Ok(User {
            password: password.to_string(),
            verifier,
        })
    }
}

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where `/metrics` (Prometheus) and `/pools` are served over HTTP,
    /// if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// The servers.
    pub backends: Vec<Backend>,
    /// Roles clients may log in as.
    pub users: HashMap<String, User>,
    /// Role used for health checks (must be in `users`).
    pub health_user: String,
    /// Database used for health checks.
    pub health_database: String,
    /// Transaction or session pooling.
    pub pool_mode: PoolMode,
    /// Server connections per (user, database, node).
    pub pool_size: usize,
    /// Clients connected at once.
    pub max_clients: usize,
    /// How long a client waits for a pooled connection before an error.
    pub queue_wait: Duration,
    /// How long a client may take from connecting to being logged in
    /// (TLS handshake, startup packet, password exchange).
    pub login_timeout: Duration,
    /// Time between health checks.
    pub health_interval: Duration,
    /// A pooled server connection unused this long is closed (`None`:
    /// never).
    pub server_idle_timeout: Option<Duration>,
    /// A server connection this old is closed when it next becomes idle
    /// (`None`: never).
    pub server_lifetime: Option<Duration>,
    /// A client idle this long inside a transaction is disconnected and
    /// its server connection closed (`None`: never).
    pub idle_transaction_timeout: Option<Duration>,
    /// Replicas further behind the primary than this many bytes are skipped.
    pub max_replica_lag_bytes: Option<u64>,
    /// Replicas further behind than this are skipped.
    pub max_replica_lag: Option<Duration>,
    /// Replica selection.
    pub replica_choice: ReplicaChoice,
    /// What reads do without a usable replica.
    pub no_replica: NoReplica,
    /// Functions (beyond the built-in list) that reads may call.
    pub read_only_functions: Vec<String>,
    /// Statement classifications kept.
    pub classify_cache: usize,
    /// The agents' leader key, followed when the cluster has agents.
    pub leader_source: Option<crate::leader::LeaderSource>,
    /// PEM certificate chain offered to clients that ask for TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Whether plaintext logins are accepted when TLS is configured.
    pub tls_mode: TlsMode,
    /// Ask for MD5 (instead of SCRAM-SHA-256) when the only secret known
    /// for a role is an md5 hash from the auth query. Off: such roles
    /// cannot log in through the proxy.
    pub allow_md5: bool,
    /// Role (from `users`) the auth query runs as; `None` disables the
    /// lookup of roles that are not in `users`.
    pub auth_user: Option<String>,
    /// Query returning the role's name and stored secret for `$1`.
    pub auth_query: String,
    /// Database the auth query runs in (default: `health_database`).
    pub auth_database: Option<String>,
    /// How long a looked-up secret is reused before asking the primary again.
    pub auth_cache_ttl: Duration,
}

impl ProxyConfig {
    /// Defaults for everything but the listener, backends and users.
    pub fn new(listen: SocketAddr, backends: Vec<Backend>, users: HashMap<String, User>) -> Self {
        let health_user = users.keys().min().cloned().unwrap_or_default();
        ProxyConfig {
            listen,
            admin_listen: None,
            backends,
            health_database: health_user.clone(),
            health_user,
            users,
            pool_mode: PoolMode::Transaction,
            pool_size: 20,
            max_clients: 1000,
            queue_wait: Duration::from_secs(5),
            login_timeout: Duration::from_secs(60),
            health_interval: Duration::from_millis(500),
            server_idle_timeout: Some(Duration::from_secs(600)),
            server_lifetime: Some(Duration::from_secs(3600)),
            idle_transaction_timeout: None,
            max_replica_lag_bytes: Some(16 * 1024 * 1024),
            max_replica_lag: Some(Duration::from_secs(10)),
            replica_choice: ReplicaChoice::Sticky,
            no_replica: NoReplica::Primary,
            read_only_functions: Vec::new(),
            classify_cache: pgkeel_sql::DEFAULT_CACHE_CAPACITY,
            leader_source: None,
            tls_cert: None,
            tls_key: None,
            tls_mode: TlsMode::Allow,
            allow_md5: false,
            auth_user: None,
            auth_query: DEFAULT_AUTH_QUERY.to_string(),
            auth_database: None,
            auth_cache_ttl: Duration::from_secs(30),
        }
    }

    /// Checks what cannot work.
    pub fn validate(&self) -> Result<(), ProxyError> {
        if self.backends.is_empty() {
            return Err(ProxyError::Config("no backends".into()));
        }
        if !self.users.contains_key(&self.health_user) {
            return Err(ProxyError::Config(format!(
                "health-check user `{}` is not a configured user",
                self.health_user
            )));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ProxyError::Config(
                "TLS needs both a certificate chain and its private key (--tls-cert and --tls-key)"
                    .into(),
            ));
        }
        if self.tls_mode == TlsMode::Require && self.tls_cert.is_none() {
            return Err(ProxyError::Config(
                "TLS is required but no certificate is configured: give --tls-cert and --tls-key"
                    .into(),
            ));
        }
        if let Some(a) = &self.auth_user
            && !self.users.contains_key(a)
        {
            return Err(ProxyError::Config(format!(
                "auth user `{a}` is not a configured user: the auth query runs as a role \
                 whose password the proxy knows"
            )));
        }
        if self.pool_size == 0 || self.max_clients == 0 {
            return Err(ProxyError::Config(
                "pool_size and max_clients must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

//! `[proxy]`: the pooling, read/write-splitting proxy `pgkeel up` starts
//! in front of the cluster. The routing enums live here (not in the proxy
//! crate) so the configuration file and the proxy share one definition.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How long a client keeps a server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// For one transaction (or until session state pins it): reads are
    /// split to replicas. The default.
    #[default]
    Transaction,
    /// For the whole client session, on the primary (no read splitting:
    /// a session cannot move once it has state).
    Session,
}

/// How a replica is picked for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaChoice {
    /// Each client keeps reading from one replica (the one with the
    /// fewest such clients when it first reads) for as long as that
    /// replica stays usable: a client never sees an older state after a
    /// newer one (monotonic reads), and each replica's backends serve a
    /// stable set of clients. The default (pgpool-II also balances per
    /// session by default).
    #[default]
    Sticky,
    /// In turn, statement by statement.
    RoundRobin,
    /// The one with the fewest statements in flight from this proxy.
    LeastOutstanding,
}

/// What happens to a read when no replica is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoReplica {
    /// Run it on the primary. The default.
    #[default]
    Primary,
    /// Fail it (SQLSTATE 08006).
    Error,
}

/// Whether clients must use TLS once a certificate is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS is offered; plaintext logins are still accepted. The default.
    #[default]
    Allow,
    /// Plaintext logins get FATAL 28000 (cancel requests excepted, as in
    /// PostgreSQL).
    Require,
}

/// Offset of the proxy's default port from the first node's port (5432 ->
/// 6432, PgBouncer's customary port).
pub const PROXY_PORT_OFFSET: u16 = 1000;

/// `[proxy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// `pgkeel up` starts the proxy.
    pub enabled: bool,
    /// Address the proxy listens on.
    pub host: String,
    /// Client port (default: the first node's port + 1000, i.e. 6432).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Port of its HTTP admin endpoint (`/metrics`, `/pools`; default:
    /// `port + 1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_port: Option<u16>,
    /// Transaction pooling (reads split) or session pooling.
    pub pool_mode: PoolMode,
    /// Server connections per (user, database, node).
    pub pool_size: usize,
    /// Clients connected at once; more are refused with 53300.
    pub max_clients: usize,
    /// Seconds a client waits for a pooled connection before an error.
    pub queue_wait: f64,
    /// Seconds a client may take from connecting to being logged in
    /// (PostgreSQL's `authentication_timeout`).
    pub login_timeout: f64,
    /// Seconds a pooled server connection may stay unused before it is
    /// closed, so pools shrink back after a burst (0: never; PgBouncer's
    /// `server_idle_timeout`).
    pub server_idle_timeout: f64,
    /// Seconds after which a server connection is closed when it next
    /// becomes idle, so backends do not grow without bound (caches,
    /// memory contexts) and connections move to servers that came back
    /// (0: never; PgBouncer's `server_lifetime`).
    pub server_lifetime: f64,
    /// Seconds a client may sit idle inside a transaction (its server has
    /// answered everything and waits for the client) before the proxy
    /// ends the client's connection with FATAL 25P03 and closes the server
    /// connection, which rolls the transaction back: such a client holds
    /// a server connection other clients wait for, its locks, and (with
    /// `hot_standby_feedback`) vacuum on the primary (0: never; PgBouncer's
    /// `idle_transaction_timeout`).
    pub idle_transaction_timeout: f64,
    /// Replicas further behind the primary than this (WAL size, e.g.
    /// "16MB") take no reads.
    pub max_replica_lag: String,
    /// Replicas whose last replayed transaction is older than this many
    /// seconds (while WAL is pending) take no reads; 0 = no time limit.
    pub max_replica_lag_seconds: f64,
    /// Replica selection.
    pub replica_choice: ReplicaChoice,
    /// What reads do without a usable replica.
    pub no_replica: NoReplica,
    /// Functions (beyond the built-in list) a read may call and still go
    /// to a replica.
    pub read_only_functions: Vec<String>,
    /// Threads serving clients (1: one event loop, like PgBouncer).
    pub threads: usize,
    /// Run the proxy as a batch task (Linux `SCHED_BATCH`): its wake-ups
    /// do not preempt PostgreSQL or the clients, so under load it handles
    /// many sockets per wake-up instead of sleeping and waking for each
    /// (measured: a third less CPU per statement at 32 clients, the same
    /// at 8).
    pub sched_batch: bool,
    /// Reach nodes on this machine through their Unix socket (SCRAM, like
    /// TCP) rather than loopback TCP: much less CPU per statement.
    pub server_socket: bool,
    /// PEM certificate chain offered to clients asking for TLS (with
    /// `tls_key`); unset: TLS is declined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// With a certificate: "allow" plaintext logins too, or "require" TLS.
    pub tls_mode: TlsMode,
    /// Roles other than the application role may log in: their secret is
    /// looked up on the primary (as the superuser) and SCRAM is passed
    /// through to the servers.
    pub auth_query: bool,
    /// Ask roles whose stored secret is an md5 hash for MD5 (otherwise
    /// only SCRAM-SHA-256 is offered).
    pub allow_md5: bool,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            enabled: true,
            host: "127.0.0.1".into(),
            port: None,
            admin_port: None,
            pool_mode: PoolMode::Transaction,
            pool_size: 20,
            max_clients: 1000,
            queue_wait: 5.0,
            login_timeout: 60.0,
            server_idle_timeout: 600.0,
            server_lifetime: 3600.0,
            idle_transaction_timeout: 0.0,
            max_replica_lag: "16MB".into(),
            max_replica_lag_seconds: 10.0,
            replica_choice: ReplicaChoice::Sticky,
            no_replica: NoReplica::Primary,
            read_only_functions: vec![],
            threads: 1,
            sched_batch: true,
            server_socket: true,
            tls_cert: None,
            tls_key: None,
            tls_mode: TlsMode::Allow,
            auth_query: false,
            allow_md5: false,
        }
    }
}

impl ProxySection {
    /// The client port, given the first node's port.
    pub fn port_for(&self, first_node_port: u16) -> u16 {
        self.port
            .unwrap_or(first_node_port.saturating_add(PROXY_PORT_OFFSET))
    }

    /// The admin HTTP port, given the first node's port.
    pub fn admin_port_for(&self, first_node_port: u16) -> u16 {
        self.admin_port
            .unwrap_or(self.port_for(first_node_port).saturating_add(1))
    }
}

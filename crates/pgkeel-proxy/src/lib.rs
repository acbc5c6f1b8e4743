//! `pgkeel proxy`: a PostgreSQL protocol 3 pooler that sends reads to
//! healthy replicas and everything else to the primary.
//!
//! - Clients log in with SCRAM-SHA-256 against verifiers ([`auth`]); TLS
//!   is not offered yet (SSLRequest is answered `N`).
//! - Server connections are pooled per (user, database, node) in
//!   transaction mode (default) or session mode ([`pool`]).
//! - Each unit of work that starts outside a transaction is classified
//!   with PostgreSQL's grammar (`pgkeel-sql`): reads and `BEGIN READ ONLY`
//!   go to a replica chosen by [`topology`], everything else to the
//!   primary; the server is kept until ReadyForQuery reports the
//!   transaction over. A read refused by a replica as a write (25006) is
//!   retried on the primary.
//! - Named prepared statements work in transaction mode ([`relay`]).
//! - Session state pins the client to its primary connection
//!   ([`session`]).

pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
pub mod io;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod relay;
pub mod server;
pub mod session;
pub mod topology;

use std::collections::HashMap;
use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicUsize};
use std::sync::{Arc, Mutex};

pub use cluster::{ClusterProxyOptions, config_for_cluster, spawn_for_cluster};
pub use config::{Backend, NoReplica, PoolMode, ProxyConfig, ReplicaChoice, User};
pub use error::ProxyError;
pub use listener::{ProxyHandle, start};

use pgkeel_sql::{Classifier, FunctionPolicy};

/// Where a client's current statement runs, for cancel requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    /// Server.
    pub addr: SocketAddr,
    /// Server backend pid.
    pub pid: i32,
    /// Server cancel key.
    pub key: i32,
}

/// A client's cancel key and the slot its session keeps current.
#[derive(Debug)]
pub struct CancelEntry {
    /// Key handed to the client.
    pub key: i32,
    /// The server it is attached to, if any.
    pub target: Arc<Mutex<Option<CancelTarget>>>,
}

/// ParameterStatus name/value pairs a server reported at login.
pub type ServerParams = Vec<(String, String)>;

/// State shared by the listener and every session.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: Arc<ProxyConfig>,
    /// Node roles and health.
    pub topology: Arc<topology::Topology>,
    /// Server connections.
    pub pools: pool::Pools,
    /// Statement classification with its cache.
    pub classifier: Classifier,
    /// Replica selection rules.
    pub rules: topology::ReplicaRules,
    /// Keyed hasher for server-side statement names.
    pub hasher: RandomState,
    /// Cancel keys of connected clients by proxy pid.
    pub cancels: Mutex<HashMap<i32, CancelEntry>>,
    /// Next proxy-issued pid.
    pub next_pid: AtomicI32,
    /// Clients connected now.
    pub clients: AtomicUsize,
    /// Counters.
    pub metrics: metrics::Metrics,
    /// Server parameters reported to clients, per (user, database).
    pub params: Mutex<HashMap<(String, String), ServerParams>>,
}

impl Shared {
    /// Shared state for `config`.
    pub fn new(config: ProxyConfig) -> Self {
        let config = Arc::new(config);
        let topology = Arc::new(topology::Topology::new(config.backends.clone()));
        let n = config.backends.len();
        Shared {
            pools: pool::Pools::new(config.pool_size, config.queue_wait),
            classifier: Classifier::new(
                FunctionPolicy::with_read_only(&config.read_only_functions),
                config.classify_cache,
            ),
            rules: topology::ReplicaRules {
                choice: config.replica_choice,
                max_lag_bytes: config.max_replica_lag_bytes,
                max_lag: config.max_replica_lag,
                no_replica: config.no_replica,
            },
            hasher: RandomState::new(),
            cancels: Mutex::new(HashMap::new()),
            next_pid: AtomicI32::new(1),
            clients: AtomicUsize::new(0),
            metrics: metrics::Metrics::new(n),
            params: Mutex::new(HashMap::new()),
            topology,
            config,
        }
    }
}

//! `pgkeel proxy`: a PostgreSQL protocol 3 pooler that sends reads to
//! healthy replicas and everything else to the primary.
//!
//! - Clients log in with SCRAM-SHA-256 against verifiers ([`auth`]);
//!   roles not configured are looked up on the primary ([`auth_query`])
//!   and logged in to servers by SCRAM pass-through ([`credential`]); md5
//!   only when `allow_md5` is on.
//! - TLS with rustls when a certificate is configured ([`tls`],
//!   [`stream`]), optionally required; server connections stay plaintext.
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
//! - A client's startup parameters (`client_encoding`, `application_name`,
//!   `options=-c ...`) are checked at login and applied to each server
//!   connection it is given, only where that connection differs
//!   ([`settings`]).

pub mod admin;
pub mod affinity;
pub mod auth;
pub mod auth_query;
pub mod cluster;
pub mod config;
pub mod credential;
pub mod error;
pub mod etcd;
pub mod health;
pub mod io;
pub mod leader;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod relay;
pub mod reload;
pub mod replica_state;
pub mod sequence;
pub mod server;
pub mod server_stream;
pub mod session;
pub mod settings;
pub mod settings_cache;
pub mod spare;
pub mod stream;
pub mod tls;
pub mod topology;
pub mod tx_start;

use std::collections::HashMap;
use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicUsize};
use std::sync::{Arc, Mutex};

pub use cluster::{
    ClusterProxyOptions, ClusterSource, config_for, config_for_cluster, spawn_for,
    spawn_for_cluster,
};
pub use config::{Backend, NoReplica, PoolMode, ProxyConfig, ReplicaChoice, User};
pub use credential::Credential;
pub use error::ProxyError;
pub use listener::{ProxyHandle, start};
pub use tls::TlsMode;

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

/// What a client's cancel request can reach, kept current by its session
/// and read by cancel requests: the server it is attached to, or its wait
/// for one (a full pool, a failover), which a cancel ends with 57014 as
/// PostgreSQL ends a running statement. A cancel while the client is
/// neither attached nor waiting is ignored, as PostgreSQL ignores one
/// while nothing runs.
///
/// The move from waiting to attached happens under the lock
/// ([`CancelSlot::attach`]): a cancel either finds the wait (and the
/// session then drops the connection it got, answering 57014) or finds
/// the server (and is forwarded there), never neither.
#[derive(Debug, Default)]
pub struct CancelSlot {
    state: Mutex<CancelState>,
    /// Wakes a waiting session when a cancel is requested (never stores a
    /// permit: a cancel outside a wait leaves nothing behind).
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct CancelState {
    target: Option<CancelTarget>,
    waiting: bool,
    cancelled: bool,
}

impl CancelSlot {
    fn state(&self) -> std::sync::MutexGuard<'_, CancelState> {
        // The state stays consistent whatever panicked: three plain fields.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server the client is attached to, if any (for listings).
    pub fn target(&self) -> Option<CancelTarget> {
        self.state().target
    }

    /// A cancel request for this client: the server to forward it to, or
    /// `None` when it ended the client's wait (or there was nothing to
    /// cancel).
    pub fn request(&self) -> Option<CancelTarget> {
        let mut s = self.state();
        if s.target.is_some() {
            return s.target;
        }
        if s.waiting {
            s.cancelled = true;
            drop(s);
            self.wake.notify_waiters();
        }
        None
    }

    /// The session starts waiting for a server connection: a cancel from
    /// now on ends the wait (one from before does not count).
    pub fn begin_wait(&self) {
        let mut s = self.state();
        s.waiting = true;
        s.cancelled = false;
    }

    /// The wait ended without a connection (an error, or a cancel).
    pub fn end_wait(&self) {
        let mut s = self.state();
        s.waiting = false;
        s.cancelled = false;
    }

    /// The wait ended with a connection to `target`: true when cancels now
    /// go there, false when one came in during the wait (the connection
    /// is not used: nothing of the statement runs).
    pub fn attach(&self, target: CancelTarget) -> bool {
        let mut s = self.state();
        let cancelled = s.cancelled;
        s.waiting = false;
        s.cancelled = false;
        if !cancelled {
            s.target = Some(target);
        }
        !cancelled
    }

    /// The client gave its server connection back: no cancel target.
    pub fn detach(&self) {
        self.state().target = None;
    }

    /// Completes once a cancel is requested during the current wait (at
    /// once if one was already).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.wake.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read: a request in between
            // wakes it.
            notified.as_mut().enable();
            if self.state().cancelled {
                return;
            }
            notified.await;
        }
    }
}

/// A client's cancel key and the slot its session keeps current.
#[derive(Debug)]
pub struct CancelEntry {
    /// Key handed to the client.
    pub key: i32,
    /// The server it is attached to, or its wait for one.
    pub cancel: Arc<CancelSlot>,
    /// Role it logged in as (for `/clients`).
    pub user: String,
    /// Database.
    pub database: String,
    /// Its address.
    pub peer: SocketAddr,
    /// When it logged in.
    pub since: std::time::Instant,
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
    /// Statement classification with its cache (its function list is
    /// replaced by a reload).
    pub classifier: Classifier,
    /// What a reload can change (users, limits, routing rules).
    pub live: std::sync::RwLock<reload::Live>,
    /// The configuration of the last reload.
    pub last_config: Mutex<Option<Arc<ProxyConfig>>>,
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
    /// Startup settings a server accepted, and how it showed them, so
    /// later logins with the same values skip the check.
    pub checked_settings: settings_cache::CheckedSettings,
    /// TLS towards clients, if configured (loaded by [`start`], its
    /// certificate replaced by a reload).
    pub tls: Option<tls::ClientTls>,
    /// Key of the mock SCRAM salts for unknown roles (random per proxy).
    pub mock_key: [u8; 32],
    /// Secrets found by the auth query, and the lookups under way.
    pub secrets: auth_query::SecretCache,
}

impl Shared {
    /// Shared state for `config`.
    pub fn new(config: ProxyConfig) -> Self {
        let config = Arc::new(config);
        let topology = Arc::new(topology::Topology::new(config.backends.clone()));
        let n = config.backends.len();
        let pools = pool::Pools::new(config.pool_size, config.queue_wait);
        pools.set_recycling(config.server_idle_timeout, config.server_lifetime);
        Shared {
            pools,
            classifier: Classifier::new(
                FunctionPolicy::with_read_only(&config.read_only_functions),
                config.classify_cache,
            ),
            live: std::sync::RwLock::new(reload::Live::of(&config)),
            last_config: Mutex::new(None),
            hasher: RandomState::new(),
            cancels: Mutex::new(HashMap::new()),
            next_pid: AtomicI32::new(1),
            clients: AtomicUsize::new(0),
            metrics: metrics::Metrics::new(n),
            params: Mutex::new(HashMap::new()),
            checked_settings: settings_cache::CheckedSettings::default(),
            tls: None,
            mock_key: [0; 32],
            secrets: auth_query::SecretCache::default(),
            topology,
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            addr: ([127, 0, 0, 1], 5432).into(),
            pid: 7,
            key: 9,
        }
    }

    /// A cancel reaches the server while attached, ends a wait, and is
    /// forgotten when nothing runs; one during the wait is never lost to
    /// the connection the wait then gets.
    #[tokio::test]
    async fn cancel_slot_follows_the_session() {
        let slot = CancelSlot::default();
        // Idle: ignored, and not kept for the next wait.
        assert_eq!(slot.request(), None);
        slot.begin_wait();
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), slot.cancelled()).await;
        assert!(pending.is_err(), "an idle cancel was kept");
        // Waiting: the wait ends, and a connection got meanwhile is not used.
        assert_eq!(slot.request(), None);
        slot.cancelled().await;
        assert!(!slot.attach(target()));
        assert_eq!(slot.target(), None);
        // Attached: forwarded.
        slot.begin_wait();
        assert!(slot.attach(target()));
        assert_eq!(slot.request(), Some(target()));
        slot.detach();
        assert_eq!(slot.request(), None);
        // A waiting session is woken.
        let slot = Arc::new(slot);
        slot.begin_wait();
        let waiter = tokio::spawn({
            let slot = slot.clone();
            async move { slot.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(slot.request(), None);
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
                .await
                .is_ok()
        );
    }
}

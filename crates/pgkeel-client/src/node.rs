//! One node as the pool holds it: its connection pool and what is known
//! about its health, shared lock-free between tasks.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use pgkeel_core::Lsn;
use tokio_postgres::NoTls;

use crate::probe::Probe;
use crate::select::ReplicaState;
use crate::{Error, ErrorKind, NodeAddr, PoolConfig, Result};

/// A node: address, connections, health.
pub(crate) struct Node {
    /// Where it is.
    pub addr: NodeAddr,
    pool: Pool,
    up: AtomicBool,
    lagging: AtomicBool,
    replayed: AtomicU64,
    seen: AtomicU8,
}

/// What the last probe of a node found, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Seen {
    /// Not probed yet.
    Nothing = 0,
    /// Did not answer.
    Unreachable = 1,
    /// A standby.
    Standby = 2,
    /// Accepts writes.
    Writable = 3,
    /// Not in recovery, but read-only.
    ReadOnly = 4,
}

impl Seen {
    fn from_u8(v: u8) -> Seen {
        match v {
            1 => Seen::Unreachable,
            2 => Seen::Standby,
            3 => Seen::Writable,
            4 => Seen::ReadOnly,
            _ => Seen::Nothing,
        }
    }

    /// What a probe result means.
    pub fn of(probe: Option<&Probe>) -> Seen {
        match probe {
            None => Seen::Unreachable,
            Some(p) if p.in_recovery => Seen::Standby,
            Some(p) if p.writable() => Seen::Writable,
            Some(_) => Seen::ReadOnly,
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Seen::Nothing => "not probed yet",
            Seen::Unreachable => "unreachable",
            Seen::Standby => "a standby",
            Seen::Writable => "writable",
            Seen::ReadOnly => {
                "read-only without being a standby (fenced, or default_transaction_read_only = on)"
            }
        })
    }
}

impl Node {
    /// A node with an empty connection pool (connections are opened on
    /// demand), considered `up` or not until the first probe says.
    pub fn new(addr: NodeAddr, config: &PoolConfig, up: bool) -> Result<Arc<Node>> {
        let manager = Manager::from_config(
            config.pg_config(&addr),
            NoTls,
            ManagerConfig {
                // `is_closed()` only: no extra round trip per checkout.
                // Sessions that died unnoticed surface as connection errors,
                // which reads retry elsewhere.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections_per_node)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| Error::config(format!("cannot build the pool for {addr}: {e}")))?;
        Ok(Arc::new(Node {
            addr,
            pool,
            up: AtomicBool::new(up),
            lagging: AtomicBool::new(false),
            replayed: AtomicU64::new(0),
            seen: AtomicU8::new(Seen::Nothing as u8),
        }))
    }

    /// A connection from this node's pool. A failure marks the node down.
    pub async fn checkout(&self) -> Result<Object> {
        match self.pool.get().await {
            Ok(obj) => Ok(obj),
            Err(e) => {
                let err = self.pool_error(e);
                if err.kind() != ErrorKind::Unavailable {
                    self.mark_down(&err);
                }
                Err(err)
            }
        }
    }

    fn pool_error(&self, e: PoolError) -> Error {
        let addr = &self.addr;
        match e {
            PoolError::Backend(e) => {
                let err = Error::from_pg("connecting", addr, e);
                let kind = match err.kind() {
                    ErrorKind::Auth => ErrorKind::Auth,
                    _ => ErrorKind::Connect,
                };
                Error::with_source(kind, err.to_string(), err)
            }
            PoolError::Timeout(what) => Error::new(
                ErrorKind::Connect,
                format!("connecting to {addr} timed out ({what:?})"),
            ),
            PoolError::Closed => Error::new(
                ErrorKind::Unavailable,
                format!("the pool of {addr} is closed"),
            ),
            other => Error::new(
                ErrorKind::Unavailable,
                format!("no connection to {addr}: {other}"),
            ),
        }
    }

    /// What selection needs to know.
    pub fn state(&self) -> ReplicaState {
        ReplicaState {
            up: self.up.load(Ordering::Relaxed),
            lagging: self.lagging.load(Ordering::Relaxed),
            replayed: Lsn(self.replayed.load(Ordering::Relaxed)),
        }
    }

    /// Records a failure; logged once per transition.
    pub fn mark_down(&self, why: &Error) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(node = %self.addr, error = %why, "node marked down");
        }
    }

    /// Records a success; logged once per transition.
    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(node = %self.addr, "node is up");
        }
    }

    /// Records what a probe found.
    pub fn set_seen(&self, seen: Seen) {
        self.seen.store(seen as u8, Ordering::Relaxed);
    }

    /// What the last probe found.
    pub fn seen(&self) -> Seen {
        Seen::from_u8(self.seen.load(Ordering::Relaxed))
    }

    /// Records whether it is further behind than the bound.
    pub fn set_lagging(&self, lagging: bool) {
        if self.lagging.swap(lagging, Ordering::Relaxed) != lagging {
            tracing::info!(node = %self.addr, lagging, "replica lag crossed the bound");
        }
    }

    /// Records a replay position seen on it (kept as a maximum: replay
    /// only moves forward).
    pub fn saw_replayed(&self, lsn: Lsn) {
        self.replayed.fetch_max(lsn.0, Ordering::Relaxed);
    }
}

//! Server connection pools, one per (user, database, node), with a size
//! limit and a bounded wait for a free connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::ServerConn;
use crate::{Credential, ProxyError, topology::Topology};

/// Read buffer an idle pooled connection may keep.
const IDLE_BUF_MAX: usize = 64 * 1024;

/// Which pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Role.
    pub user: String,
    /// Database.
    pub database: String,
    /// Node index.
    pub node: usize,
}

/// One pool.
#[derive(Debug)]
pub struct Pool {
    key: PoolKey,
    size: AtomicUsize,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    /// Grows or shrinks the number of connections the pool may hold.
    fn resize(&self, new: usize) {
        let old = self.size.swap(new, Ordering::Relaxed);
        if new > old {
            self.permits.add_permits(new - old);
        } else if new < old {
            if let Ok(mut idle) = self.idle.lock() {
                idle.truncate(new);
            }
            let excess = old - new;
            let forgotten = self.permits.forget_permits(excess);
            if forgotten < excess {
                // The rest are in use: take them as they come back.
                let permits = self.permits.clone();
                let left = u32::try_from(excess - forgotten).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(left).await {
                        p.forget();
                    }
                });
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A connection checked out of a pool; give it back with
/// [`Pools::release`] or drop it to close it.
#[derive(Debug)]
pub struct Lease {
    /// The connection.
    pub conn: ServerConn,
    /// Node index.
    pub node: usize,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

/// Every pool of the proxy.
#[derive(Debug)]
pub struct Pools {
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    size: AtomicUsize,
    queue_wait_ms: AtomicU64,
}

/// Counters for listings and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStats {
    /// Which pool.
    pub key: PoolKey,
    /// Connections idle in the pool.
    pub idle: usize,
    /// Connections checked out.
    pub active: usize,
}

impl Pools {
    /// Pools of `size` connections; a client waits at most `queue_wait`.
    pub fn new(size: usize, queue_wait: Duration) -> Self {
        Pools {
            pools: Mutex::new(HashMap::new()),
            size: AtomicUsize::new(size),
            queue_wait_ms: AtomicU64::new(millis(queue_wait)),
        }
    }

    /// How long a client waits for a connection (or, for a write during a
    /// failover, for a primary).
    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.queue_wait_ms.load(Ordering::Relaxed))
    }

    /// New limits (a reload): every pool grows or shrinks to `size`;
    /// connections in use above a smaller size are closed when returned.
    pub fn set_limits(&self, size: usize, queue_wait: Duration) {
        self.size.store(size, Ordering::Relaxed);
        self.queue_wait_ms
            .store(millis(queue_wait), Ordering::Relaxed);
        let pools = match self.pools.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        for pool in pools.values() {
            pool.resize(size);
        }
    }

    /// The pool for `key` (created on first use); sessions keep it to
    /// skip the lookup on every transaction.
    pub fn pool(&self, key: &PoolKey) -> Arc<Pool> {
        let mut pools = match self.pools.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        pools
            .entry(key.clone())
            .or_insert_with(|| {
                let size = self.size.load(Ordering::Relaxed);
                Arc::new(Pool {
                    key: key.clone(),
                    size: AtomicUsize::new(size),
                    idle: Mutex::new(Vec::new()),
                    permits: Arc::new(Semaphore::new(size)),
                })
            })
            .clone()
    }

    /// A connection to `key.node`: an idle one of the node's current
    /// generation, or a new login.
    pub async fn acquire(
        &self,
        key: &PoolKey,
        topology: &Topology,
        credential: &Credential,
    ) -> Result<Lease, ProxyError> {
        self.acquire_in(&self.pool(key), topology, credential).await
    }

    /// As [`Pools::acquire`] with the pool already looked up.
    pub async fn acquire_in(
        &self,
        pool: &Arc<Pool>,
        topology: &Topology,
        credential: &Credential,
    ) -> Result<Lease, ProxyError> {
        let pool = pool.clone();
        let key = &pool.key;
        let node_name = || {
            topology
                .backends
                .get(key.node)
                .map(|b| b.name.clone())
                .unwrap_or_default()
        };
        // A free connection needs no timer.
        let permit = match pool.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let started = Instant::now();
                // Boxed: the timer and the wait would otherwise size every
                // session's future, though a free connection needs neither.
                Box::pin(tokio::time::timeout(
                    self.queue_wait(),
                    pool.permits.clone().acquire_owned(),
                ))
                .await
                .map_err(|_| ProxyError::PoolExhausted {
                    user: key.user.clone(),
                    database: key.database.clone(),
                    node: node_name(),
                    size: pool.size.load(Ordering::Relaxed),
                    waited: started.elapsed(),
                })?
                .map_err(|_| ProxyError::NoNode("pooled"))?
            }
        };
        let generation = topology.generation(key.node);
        let reused = {
            let mut idle = match pool.idle.lock() {
                Ok(i) => i,
                Err(poisoned) => poisoned.into_inner(),
            };
            idle.retain(|c| c.generation == generation);
            // Most recently used first (its backend is warm); one the
            // server closed while it sat idle is dropped, not handed out.
            let mut found = None;
            while let Some(mut c) = idle.pop() {
                if c.stream.idle_is_clean() {
                    found = Some(c);
                    break;
                }
                tracing::debug!(
                    node = key.node,
                    pid = c.pid,
                    "dropping a pooled connection the server closed"
                );
            }
            found
        };
        let conn = match reused {
            Some(c) => c,
            None => {
                let backend = topology
                    .backends
                    .get(key.node)
                    .ok_or(ProxyError::NoNode("configured"))?;
                // Boxed: a login's state is large and rarely needed; it
                // should not size every session's future.
                Box::pin(ServerConn::connect(
                    backend.addr,
                    backend.socket.as_deref(),
                    &key.user,
                    &key.database,
                    credential,
                    generation,
                ))
                .await?
            }
        };
        Ok(Lease {
            conn,
            node: key.node,
            pool,
            _permit: permit,
        })
    }

    /// Puts a connection back for reuse (it must be idle: no transaction,
    /// nothing in flight).
    pub fn release(&self, lease: Lease) {
        let Lease { mut conn, pool, .. } = lease;
        if conn.buf.is_empty() && conn.buf.capacity() > IDLE_BUF_MAX {
            // A big result should not stay allocated in an idle connection.
            conn.buf = bytes::BytesMut::new();
        }
        if let Ok(mut idle) = pool.idle.lock() {
            // After a shrink, connections beyond the new size are closed.
            if idle.len() < pool.size.load(Ordering::Relaxed) {
                idle.push(conn);
            }
        }
    }

    /// Idle and active connections per pool.
    pub fn stats(&self) -> Vec<PoolStats> {
        let pools = match self.pools.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out: Vec<PoolStats> = pools
            .values()
            .map(|p| PoolStats {
                key: p.key.clone(),
                idle: p.idle.lock().map(|i| i.len()).unwrap_or(0),
                active: p
                    .size
                    .load(Ordering::Relaxed)
                    .saturating_sub(p.permits.available_permits()),
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.key.user, &a.key.database, a.key.node).cmp(&(
                &b.key.user,
                &b.key.database,
                b.key.node,
            ))
        });
        out
    }
}

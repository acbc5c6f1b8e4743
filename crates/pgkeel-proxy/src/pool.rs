//! Server connection pools, one per (user, database, node), with a size
//! limit and a bounded wait for a free connection. Idle connections are
//! closed after `server_idle_timeout` (pools shrink back after a burst)
//! and any connection older than `server_lifetime` is closed instead of
//! being pooled again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::sequence;
use crate::server::ServerConn;
use crate::{CancelSlot, Credential, ProxyError, topology::Topology};

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
    /// Boxed: a connection moves (into a lease, an attach, back) on
    /// every transaction, and a box moves as a pointer.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConn>>>,
    permits: Arc<Semaphore>,
    /// Woken whenever a connection comes back (see
    /// [`Pools::wait_for_idle`]).
    released: tokio::sync::Notify,
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

/// `work`'s output, unless the client's cancel request (if it may send
/// one) comes first: then `work` is dropped.
async fn or_cancelled<F: Future>(
    work: F,
    cancel: Option<&CancelSlot>,
) -> Result<F::Output, ProxyError> {
    match cancel {
        None => Ok(work.await),
        Some(c) => tokio::select! {
            out = work => Ok(out),
            () = c.cancelled() => Err(ProxyError::Cancelled),
        },
    }
}

/// A connection checked out of a pool; give it back with
/// [`Pools::release`] or drop it to close it.
#[derive(Debug)]
pub struct Lease {
    /// The connection.
    pub conn: Box<ServerConn>,
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
    /// `server_idle_timeout` in ms (0: never).
    idle_timeout_ms: AtomicU64,
    /// `server_lifetime` in ms (0: never).
    lifetime_ms: AtomicU64,
    /// Connections closed for sitting idle too long.
    pub closed_idle: AtomicU64,
    /// Connections closed for reaching their lifetime.
    pub closed_lifetime: AtomicU64,
}

/// Why a pooled connection is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// Unused for longer than `server_idle_timeout`.
    Idle,
    /// Older than `server_lifetime`.
    Lifetime,
}

/// Whether a connection made `age` ago and idle for `idle` must go, given
/// the limits (`None`: no limit). Pure, so it is tested alone.
pub fn retire(
    age: Duration,
    idle: Duration,
    idle_timeout: Option<Duration>,
    lifetime: Option<Duration>,
) -> Option<Retire> {
    if lifetime.is_some_and(|l| age >= l) {
        Some(Retire::Lifetime)
    } else if idle_timeout.is_some_and(|t| idle >= t) {
        Some(Retire::Idle)
    } else {
        None
    }
}

fn limit(ms: &AtomicU64) -> Option<Duration> {
    match ms.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
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
            idle_timeout_ms: AtomicU64::new(0),
            lifetime_ms: AtomicU64::new(0),
            closed_idle: AtomicU64::new(0),
            closed_lifetime: AtomicU64::new(0),
        }
    }

    /// How long connections may stay idle and live (`None`: no limit);
    /// set at start and by a reload, applied by the next [`Pools::reap`]
    /// and at every acquire and release.
    pub fn set_recycling(&self, idle_timeout: Option<Duration>, lifetime: Option<Duration>) {
        // At least 1 ms: 0 means "never".
        let ms = |d: Option<Duration>| d.map_or(0, |d| millis(d).max(1));
        self.idle_timeout_ms
            .store(ms(idle_timeout), Ordering::Relaxed);
        self.lifetime_ms.store(ms(lifetime), Ordering::Relaxed);
    }

    /// Why `conn` must be closed rather than used or pooled, if it must.
    fn retire_now(&self, conn: &ServerConn, now: Instant) -> Option<Retire> {
        retire(
            now.saturating_duration_since(conn.created),
            now.saturating_duration_since(conn.idle_since),
            limit(&self.idle_timeout_ms),
            limit(&self.lifetime_ms),
        )
    }

    /// Closes `conn` (politely) and counts why.
    fn close(&self, mut conn: Box<ServerConn>, why: Retire, node: usize) {
        let counter = match why {
            Retire::Idle => &self.closed_idle,
            Retire::Lifetime => &self.closed_lifetime,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node, pid = conn.pid, reason = ?why, "closing a pooled server connection");
        conn.stream.say_goodbye();
    }

    /// Closes every idle connection past its idle timeout or lifetime;
    /// returns how many. Run periodically (see [`Pools::reap_period`]).
    pub fn reap(&self) -> usize {
        if limit(&self.idle_timeout_ms).is_none() && limit(&self.lifetime_ms).is_none() {
            return 0;
        }
        let pools: Vec<Arc<Pool>> = match self.pools.lock() {
            Ok(p) => p.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        let now = Instant::now();
        let mut closed = 0;
        for pool in pools {
            let retired: Vec<(Box<ServerConn>, Retire)> = {
                let mut idle = match pool.idle.lock() {
                    Ok(i) => i,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let mut keep = Vec::with_capacity(idle.len());
                let mut gone = Vec::new();
                for c in idle.drain(..) {
                    match self.retire_now(&c, now) {
                        Some(why) => gone.push((c, why)),
                        None => keep.push(c),
                    }
                }
                *idle = keep;
                gone
            };
            closed += retired.len();
            for (c, why) in retired {
                self.close(c, why, pool.key.node);
            }
        }
        closed
    }

    /// How often [`Pools::reap`] should run: often enough that a
    /// connection outlives its limits by at most a quarter of the
    /// shorter one (between 0.1 and 10 s).
    pub fn reap_period(&self) -> Duration {
        let shortest = [limit(&self.idle_timeout_ms), limit(&self.lifetime_ms)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(40));
        (shortest / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
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
                    released: tokio::sync::Notify::new(),
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
        self.acquire_in(
            &self.pool(key),
            topology,
            credential,
            None,
            sequence::Want::default(),
        )
        .await
    }

    /// As [`Pools::acquire`] with the pool already looked up. A client's
    /// cancel request (`cancel`) ends the wait for a free connection, or
    /// a new connection's login, with [`ProxyError::Cancelled`]. Which
    /// idle connection is taken follows `want` (see [`sequence::pick`]).
    pub async fn acquire_in(
        &self,
        pool: &Arc<Pool>,
        topology: &Topology,
        credential: &Credential,
        cancel: Option<&CancelSlot>,
        want: sequence::Want<'_>,
    ) -> Result<Lease, ProxyError> {
        let pool = pool.clone();
        let key = &pool.key;
        // A free connection needs no timer.
        let permit = match pool.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let started = Instant::now();
                // Boxed: the timer and the wait would otherwise size every
                // session's future, though a free connection needs neither.
                let wait = match want.wait_ms {
                    u32::MAX => self.queue_wait(),
                    ms => Duration::from_millis(u64::from(ms)),
                };
                Box::pin(or_cancelled(
                    tokio::time::timeout(wait, pool.permits.clone().acquire_owned()),
                    cancel,
                ))
                .await?
                .map_err(|_| ProxyError::PoolExhausted {
                    user: key.user.clone(),
                    database: key.database.clone(),
                    node: topology
                        .backends
                        .get(key.node)
                        .map(|b| b.name.clone())
                        .unwrap_or_default(),
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
            let size = pool.size.load(Ordering::Relaxed);
            // Checked out, this acquire's own permit included: a new
            // connection takes that one's place.
            let busy = size.saturating_sub(pool.permits.available_permits());
            let room = idle.len() + busy <= size;
            let choice = sequence::pick(
                idle.iter().map(|c| {
                    let values = c.values.as_ref();
                    (
                        want.mine.is_some_and(|m| sequence::is_mine(values, m)),
                        sequence::written(values),
                    )
                }),
                want.will_write,
                room,
            );
            if let sequence::Pick::Idle(at) = choice {
                // Tried first: popped next.
                let c = idle.remove(at);
                idle.push(c);
            }
            // Most recently used first (its backend is warm); one the
            // server closed while it sat idle is dropped, not handed out.
            let mut found = None;
            let now = Instant::now();
            while choice != sequence::Pick::New
                && let Some(mut c) = idle.pop()
            {
                if let Some(why) = self.retire_now(&c, now) {
                    self.close(c, why, key.node);
                    continue;
                }
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
                Box::pin(or_cancelled(
                    ServerConn::connect(
                        backend.addr,
                        backend.socket.as_deref(),
                        &key.user,
                        &key.database,
                        credential,
                        generation,
                    ),
                    cancel,
                ))
                .await
                .map(|c| c.map(Box::new))??
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
        // Pooled even past its lifetime: the next acquire (or the
        // reaper) closes it, and a release stays cheap.
        conn.idle_since = Instant::now();
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
        pool.released.notify_waiters();
    }

    /// Waits until the connection holding the sequence values `mine`
    /// refers to is idle in `pool`, until `deadline`; whether it is (not
    /// when those values are gone: taken over or closed). A client about
    /// to read its values waits this way while another client's statement
    /// holds the connection.
    pub async fn wait_for_idle(
        &self,
        pool: &Pool,
        mine: &Weak<sequence::Owner>,
        deadline: tokio::time::Instant,
    ) -> bool {
        // Another client may take the values over without a release:
        // looked at again now and then.
        const LOOK_AGAIN: Duration = Duration::from_millis(50);
        loop {
            let released = pool.released.notified();
            tokio::pin!(released);
            // Registered before the check: a release in between is seen.
            released.as_mut().enable();
            if mine.strong_count() == 0 {
                return false;
            }
            let idle = pool.idle.lock().is_ok_and(|idle| {
                idle.iter()
                    .any(|c| sequence::is_mine(c.values.as_ref(), mine))
            });
            if idle {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let _ = tokio::time::timeout_at(deadline.min(now + LOOK_AGAIN), released).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn connections_retire_by_idle_time_or_age() {
        let (idle, life) = (Some(S(600)), Some(S(3600)));
        assert_eq!(retire(S(10), S(5), idle, life), None);
        assert_eq!(retire(S(700), S(600), idle, life), Some(Retire::Idle));
        assert_eq!(retire(S(3600), S(1), idle, life), Some(Retire::Lifetime));
        // Both: the age is the reason (it also applies to busy connections).
        assert_eq!(retire(S(4000), S(900), idle, life), Some(Retire::Lifetime));
        // No limits: never.
        assert_eq!(retire(S(1 << 30), S(1 << 30), None, None), None);
    }

    #[test]
    fn reap_period_follows_the_shorter_limit() {
        let pools = Pools::new(1, S(1));
        assert_eq!(pools.reap_period(), S(10));
        pools.set_recycling(Some(S(600)), Some(S(3600)));
        assert_eq!(pools.reap_period(), S(10));
        pools.set_recycling(Some(S(2)), None);
        assert_eq!(pools.reap_period(), Duration::from_millis(500));
        pools.set_recycling(None, Some(Duration::from_millis(1)));
        assert_eq!(pools.reap_period(), Duration::from_millis(100));
        // Nothing to do without limits.
        pools.set_recycling(None, None);
        assert_eq!(pools.reap(), 0);
    }
}

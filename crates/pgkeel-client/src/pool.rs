//! The pool applications hold: writes to the primary, reads spread over
//! healthy replicas, read-your-writes, and a topology that follows
//! failovers.

use std::fmt;
use std::sync::Arc;

use pgkeel_core::Lsn;

use crate::inner::Inner;
use crate::read::ReadConn;
use crate::topology::{ProbeTopology, TopologySource};
use crate::write::WriteTx;
use crate::{NodeAddr, PoolConfig, Result, WriteToken, monitor};

/// Connection pools to every node of a replicated cluster, used as one.
///
/// * [`write`](Self::write) opens a transaction on the primary.
/// * [`read`](Self::read) picks a replica round-robin, skipping replicas
///   that are down or lag more than `max_replica_lag`, and falls back to
///   the primary.
/// * [`read_after`](Self::read_after) additionally only picks a replica
///   that has replayed a given write (waiting up to `read_after_wait`),
///   else the primary.
/// * Each member is probed every `health_interval`; a lost primary, a
///   read-only one (SQLSTATE 25006) or a promoted replica makes the pool
///   discover the topology again.
///
/// Cheap to clone (all clones share the pools); needs a Tokio runtime. The
/// background health check stops when the last clone is dropped.
///
/// ```no_run
/// use pgkeel_client::ReplicatedPool;
///
/// # async fn demo() -> Result<(), pgkeel_client::Error> {
/// let pool = ReplicatedPool::from_urls([
///     "postgresql://app:secret@10.0.0.1:5432/app",
///     "postgresql://app:secret@10.0.0.2:5432/app",
///     "postgresql://app:secret@10.0.0.3:5432/app",
/// ])
/// .await?;
///
/// let tx = pool.write().await?;
/// let row = tx
///     .query_one("INSERT INTO users (name) VALUES ($1) RETURNING id", &[&"ada"])
///     .await?;
/// let id: i64 = row.get(0);
/// let token = tx.commit().await?;
///
/// // Sees the insert, from a replica that has replayed it or the primary.
/// let mut conn = pool.read_after(&token).await?;
/// let name: String = conn
///     .query_one("SELECT name FROM users WHERE id = $1", &[&id])
///     .await?
///     .get(0);
/// assert_eq!(name, "ada");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReplicatedPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for ReplicatedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedPool")
            .field("status", &self.status())
            .finish()
    }
}

impl ReplicatedPool {
    /// A pool over `config.nodes`, finding the primary by probing them.
    /// Fails when the configuration is invalid, when no node answers, or
    /// when the credentials are refused.
    pub async fn new(config: PoolConfig) -> Result<Self> {
        config.validate()?;
        Self::with_topology(config, ProbeTopology).await
    }

    /// A pool over the nodes of libpq URLs (see [`PoolConfig::from_urls`]).
    pub async fn from_urls<I, S>(urls: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::new(PoolConfig::from_urls(urls)?).await
    }

    /// A pool configured by the guide's environment variables (see
    /// [`PoolConfig::from_env`]).
    pub async fn from_env() -> Result<Self> {
        Self::new(PoolConfig::from_env()?).await
    }

    /// A pool whose members and roles come from `source` (for example an HA
    /// agent), connecting with `config`'s credentials and bounds.
    /// `config.nodes` is passed to the source and may be empty if the
    /// source does not need it.
    pub async fn with_topology(config: PoolConfig, source: impl TopologySource) -> Result<Self> {
        config.validate_settings()?;
        let inner = Arc::new(Inner::start(config, Box::new(source)).await?);
        let handle = monitor::spawn(&inner);
        if let Ok(mut slot) = inner.monitor.lock() {
            *slot = Some(handle);
        }
        Ok(ReplicatedPool { inner })
    }

    /// A transaction on the primary. Commit it with
    /// [`WriteTx::commit`]; dropping it rolls back. When the primary is
    /// unreachable or read-only the topology is discovered again first;
    /// fails with [`ErrorKind::NoPrimary`](crate::ErrorKind::NoPrimary)
    /// while no node accepts writes.
    pub async fn write(&self) -> Result<WriteTx> {
        let (obj, node) = self.inner.begin_write().await?;
        Ok(WriteTx::new(obj, node, self.inner.clone()))
    }

    /// A connection for reading: the next healthy replica in round-robin
    /// order that lags less than `max_replica_lag`, or the primary when none
    /// qualifies. It may not see writes committed just before; use
    /// [`read_after`](Self::read_after) for those.
    pub async fn read(&self) -> Result<ReadConn> {
        self.read_at(None).await
    }

    /// A connection that sees the write `token` came from: a healthy
    /// replica that has replayed it (waiting up to `read_after_wait` for
    /// one to catch up), else the primary.
    pub async fn read_after(&self, token: &WriteToken) -> Result<ReadConn> {
        self.read_at(Some(token.lsn())).await
    }

    async fn read_at(&self, need: Option<Lsn>) -> Result<ReadConn> {
        let (obj, node) = self.inner.acquire_read(need, None).await?;
        Ok(ReadConn::new(obj, node, self.inner.clone(), need))
    }

    /// Discovers the topology now, instead of waiting for the health check
    /// or a failed write to do it.
    pub async fn rediscover(&self) -> Result<()> {
        self.inner.rediscover(None).await
    }

    /// What the pool currently believes about the cluster, for health
    /// endpoints and logs.
    pub fn status(&self) -> PoolStatus {
        let view = self.inner.view.load();
        PoolStatus {
            primary: view.primary.as_ref().map(|n| n.addr.clone()),
            replicas: view
                .replicas
                .iter()
                .map(|n| {
                    let s = n.state();
                    ReplicaStatus {
                        addr: n.addr.clone(),
                        up: s.up,
                        lagging: s.lagging,
                        replayed: s.replayed,
                    }
                })
                .collect(),
            unknown: view.others.iter().map(|n| n.addr.clone()).collect(),
            discoveries: view.generation,
        }
    }
}

/// A snapshot of the pool's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// The node writes go to, if one is known.
    pub primary: Option<NodeAddr>,
    /// The replicas reads are spread over.
    pub replicas: Vec<ReplicaStatus>,
    /// Members neither primary nor replica (unreachable at the last
    /// discovery, or read-only primaries).
    pub unknown: Vec<NodeAddr>,
    /// How many times the topology has been discovered (1 after start-up).
    pub discoveries: u64,
}

/// One replica in a [`PoolStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Its address.
    pub addr: NodeAddr,
    /// Reachable at the last probe or use.
    pub up: bool,
    /// Further behind than `max_replica_lag` at the last probe.
    pub lagging: bool,
    /// Highest replay position seen on it.
    pub replayed: Lsn,
}

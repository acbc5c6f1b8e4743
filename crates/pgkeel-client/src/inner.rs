//! The pool's shared state and the decisions that need I/O: installing a
//! topology, rediscovering it once per incident, handing out read and
//! write connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use deadpool_postgres::Object;
use pgkeel_core::Lsn;
use tokio::task::JoinHandle;
use tokio_postgres::SimpleQueryMessage;

use crate::node::Node;
use crate::select::{Verdict, judge, pick, plan};
use crate::topology::{Member, Role, TopologySource};
use crate::{Error, ErrorKind, NodeAddr, PoolConfig, Result};

/// Rediscovery runs at most this often, however many tasks ask for it
/// (every failing request during a failover would otherwise probe the
/// cluster).
const MIN_REDISCOVERY_INTERVAL: Duration = Duration::from_millis(100);

/// Longest pause between two replay checks of `read_after`.
const MAX_REPLAY_POLL: Duration = Duration::from_millis(10);

/// The topology as the pool uses it; replaced whole, read without locks.
pub(crate) struct View {
    /// The node taking writes, if one is known.
    pub primary: Option<Arc<Node>>,
    /// Standbys, in the source's order.
    pub replicas: Vec<Arc<Node>>,
    /// Members of unknown role, watched by the monitor.
    pub others: Vec<Arc<Node>>,
    /// Number of topologies installed before this one.
    pub generation: u64,
}

/// When discovery last ran and how its last failure read.
struct DiscoveryLog {
    at: Instant,
    failure: Option<String>,
}

/// Shared by every clone of the pool and its connections.
pub(crate) struct Inner {
    pub config: PoolConfig,
    source: Box<dyn TopologySource>,
    pub view: ArcSwap<View>,
    registry: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    discovery: tokio::sync::Mutex<DiscoveryLog>,
    suspect_primary: AtomicBool,
    next_read: AtomicUsize,
    pub monitor: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(handle) = self.monitor.lock().ok().and_then(|mut slot| slot.take()) {
            handle.abort();
        }
    }
}

impl Inner {
    /// Asks `source` for the topology and builds the state on it.
    pub async fn start(config: PoolConfig, source: Box<dyn TopologySource>) -> Result<Inner> {
        let members = source.discover(&config).await?;
        let inner = Inner {
            config,
            source,
            view: ArcSwap::from_pointee(View {
                primary: None,
                replicas: Vec::new(),
                others: Vec::new(),
                generation: 0,
            }),
            registry: Mutex::new(HashMap::new()),
            discovery: tokio::sync::Mutex::new(DiscoveryLog {
                at: Instant::now(),
                failure: None,
            }),
            suspect_primary: AtomicBool::new(false),
            next_read: AtomicUsize::new(0),
            monitor: Mutex::new(None),
        };
        inner.install(members)?;
        Ok(inner)
    }

    /// Makes `members` the current topology, reusing the pools of nodes
    /// already known.
    fn install(&self, members: Vec<Member>) -> Result<()> {
        let mut registry = self.registry.lock().map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                "the pool's node registry is poisoned",
            )
        })?;
        let mut fresh = HashMap::new();
        let old = self.view.load();
        let mut view = View {
            primary: None,
            replicas: Vec::new(),
            others: Vec::new(),
            generation: old.generation + 1,
        };
        for member in members {
            let usable = member.role != Role::Unknown;
            let node = match registry.get(&member.addr) {
                Some(node) => node.clone(),
                None => Node::new(member.addr.clone(), &self.config, usable)?,
            };
            if usable {
                node.mark_up();
            }
            fresh.insert(member.addr, node.clone());
            match member.role {
                Role::Primary if view.primary.is_none() => view.primary = Some(node),
                Role::Replica => view.replicas.push(node),
                _ => view.others.push(node),
            }
        }
        let before = old.primary.as_ref().map(|n| n.addr.clone());
        let after = view.primary.as_ref().map(|n| n.addr.clone());
        if before != after {
            match &after {
                Some(addr) => tracing::info!(primary = %addr, "primary found"),
                None => tracing::warn!("no writable primary in the cluster"),
            }
        }
        *registry = fresh;
        self.view.store(Arc::new(view));
        self.suspect_primary.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Asks the source again, unless another task already did since
    /// generation `seen` was read (`None` forces a new discovery). One
    /// discovery runs at a time, at most one per
    /// `MIN_REDISCOVERY_INTERVAL`: a caller arriving sooner waits for it.
    pub async fn rediscover(&self, seen: Option<u64>) -> Result<()> {
        let mut log = self.discovery.lock().await;
        if seen.is_some_and(|seen| self.view.load().generation != seen) {
            return Ok(());
        }
        if let Some(wait) = MIN_REDISCOVERY_INTERVAL.checked_sub(log.at.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let result = self.source.discover(&self.config).await;
        log.at = Instant::now();
        match result {
            Ok(members) => {
                if log.failure.take().is_some() {
                    tracing::info!("topology discovery works again");
                }
                self.install(members)
            }
            Err(e) => {
                // Logged once per distinct failure, not on every retry.
                let text = e.to_string();
                if log.failure.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %e, "topology discovery failed; keeping the previous topology");
                    log.failure = Some(text);
                }
                Err(e)
            }
        }
    }

    /// Flags the primary as doubtful (connection lost, 25006): the next
    /// write rediscovers first.
    pub fn suspect_primary(&self) {
        self.suspect_primary.store(true, Ordering::Relaxed);
    }

    /// A connection on the primary inside `BEGIN`, verified writable in the
    /// same round trip. Rediscovers and retries when the primary is gone or
    /// read-only.
    pub async fn begin_write(&self) -> Result<(Object, Arc<Node>)> {
        let mut last_error: Option<Error> = None;
        for _ in 0..3 {
            let mut view = self.view.load_full();
            if self.suspect_primary.swap(false, Ordering::Relaxed) || view.primary.is_none() {
                if let Err(e) = self.rediscover(Some(view.generation)).await {
                    if e.kind() == ErrorKind::Auth {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
                view = self.view.load_full();
            }
            let Some(node) = view.primary.clone() else {
                break;
            };
            match begin_on(&node).await {
                Ok(obj) => {
                    node.mark_up();
                    return Ok((obj, node));
                }
                Err(e) if matches!(e.kind(), ErrorKind::Query | ErrorKind::Auth) => return Err(e),
                Err(e) => {
                    self.suspect_primary();
                    last_error = Some(e);
                }
            }
        }
        let (_, members) = self.members();
        let nodes: Vec<String> = members
            .iter()
            .map(|(node, _)| format!("{} is {}", node.addr, node.seen()))
            .collect();
        let why = match last_error {
            Some(e) => format!(" (last attempt: {e})"),
            None => String::new(),
        };
        Err(Error::new(
            ErrorKind::NoPrimary,
            format!(
                "no node accepts writes: {}{why}; a failover may be in progress, retry shortly",
                nodes.join(", ")
            ),
        ))
    }

    /// A connection for a read that must see everything up to `need`,
    /// never on `avoid`: a usable replica in round-robin order, else one
    /// that catches up within `read_after_wait`, else the primary.
    pub async fn acquire_read(
        &self,
        need: Option<Lsn>,
        avoid: Option<&NodeAddr>,
    ) -> Result<(Object, Arc<Node>)> {
        // The hot path; a replica whose checkout fails here is marked down,
        // so the full plan below skips it.
        if need.is_none()
            && avoid.is_none()
            && let Some(node) = self.pick_replica()
            && let Ok(obj) = node.checkout().await
        {
            return Ok((obj, node));
        }
        // Boxed: keeps the hot path's future small.
        Box::pin(self.acquire_read_planned(need, avoid)).await
    }

    /// The full read plan: usable replicas, then (for `need`) replicas that
    /// may catch up, then the primary.
    async fn acquire_read_planned(
        &self,
        need: Option<Lsn>,
        avoid: Option<&NodeAddr>,
    ) -> Result<(Object, Arc<Node>)> {
        let view = self.view.load_full();
        let verdicts: Vec<Verdict> = view
            .replicas
            .iter()
            .map(|n| {
                if Some(&n.addr) == avoid {
                    Verdict::Skip
                } else {
                    judge(n.state(), need)
                }
            })
            .collect();
        let plan = plan(&verdicts, self.next_read.fetch_add(1, Ordering::Relaxed));
        let mut failures: Vec<String> = Vec::new();
        for i in plan.use_now {
            let node = &view.replicas[i];
            match node.checkout().await {
                Ok(obj) => return Ok((obj, node.clone())),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if let Some(need) = need {
            let asked: Vec<&Arc<Node>> = plan.ask.iter().map(|&i| &view.replicas[i]).collect();
            if let Some(found) = self.wait_for_replay(&asked, need, &mut failures).await {
                return Ok(found);
            }
        }
        match &view.primary {
            Some(node) if Some(&node.addr) != avoid => match node.checkout().await {
                Ok(obj) => Ok((obj, node.clone())),
                Err(e) => {
                    self.suspect_primary();
                    failures.push(e.to_string());
                    Err(unavailable(&failures))
                }
            },
            _ => {
                failures.push("no primary known".into());
                Err(unavailable(&failures))
            }
        }
    }

    /// The replica for the next plain read, if any is usable.
    fn pick_replica(&self) -> Option<Arc<Node>> {
        let view = self.view.load();
        let verdicts = view.replicas.iter().map(|n| judge(n.state(), None));
        let start = self.next_read.fetch_add(1, Ordering::Relaxed);
        pick(verdicts, start).map(|i| view.replicas[i].clone())
    }

    /// Polls `nodes` until one has replayed `need` or `read_after_wait`
    /// passes.
    async fn wait_for_replay(
        &self,
        nodes: &[&Arc<Node>],
        need: Lsn,
        failures: &mut Vec<String>,
    ) -> Option<(Object, Arc<Node>)> {
        if nodes.is_empty() {
            return None;
        }
        let deadline = Instant::now() + self.config.read_after_wait;
        let mut held: Vec<(Object, Arc<Node>)> = Vec::new();
        for node in nodes {
            match node.checkout().await {
                Ok(obj) => held.push((obj, Arc::clone(node))),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let mut pause = Duration::from_millis(1);
        while !held.is_empty() {
            let mut i = 0;
            while i < held.len() {
                let (obj, node) = &held[i];
                match replay_position(obj).await {
                    Ok(Some(lsn)) => {
                        node.saw_replayed(lsn);
                        if lsn >= need {
                            return Some(held.swap_remove(i));
                        }
                        i += 1;
                    }
                    Ok(None) => {
                        // Not in recovery any more: promoted; the monitor
                        // will rediscover. Not a replica to read from.
                        drop(held.swap_remove(i));
                    }
                    Err(e) => {
                        let err = Error::from_pg("checking replay", &node.addr, e);
                        node.mark_down(&err);
                        failures.push(err.to_string());
                        drop(held.swap_remove(i));
                    }
                }
            }
            let now = Instant::now();
            if held.is_empty() || now + pause > deadline {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_REPLAY_POLL);
        }
        None
    }

    /// Every node of the current view with its role.
    pub fn members(&self) -> (Arc<View>, Vec<(Arc<Node>, Role)>) {
        let view = self.view.load_full();
        let mut all: Vec<(Arc<Node>, Role)> = Vec::new();
        if let Some(p) = &view.primary {
            all.push((p.clone(), Role::Primary));
        }
        all.extend(view.replicas.iter().map(|n| (n.clone(), Role::Replica)));
        all.extend(view.others.iter().map(|n| (n.clone(), Role::Unknown)));
        (view, all)
    }
}

/// `BEGIN` plus a writability check in one round trip.
async fn begin_on(node: &Node) -> Result<Object> {
    let obj = node.checkout().await?;
    let messages = obj
        .simple_query("BEGIN; SHOW transaction_read_only")
        .await
        .map_err(|e| {
            let err = Error::from_pg("BEGIN", &node.addr, e);
            if err.kind() == ErrorKind::ConnectionLost {
                node.mark_down(&err);
            }
            err
        })?;
    let read_only = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0) == Some("on")),
        _ => None,
    });
    if read_only == Some(false) {
        return Ok(obj);
    }
    // A standby or a fenced primary: end the transaction, keep the session.
    if obj.batch_execute("ROLLBACK").await.is_err() {
        drop(Object::take(obj));
    }
    Err(Error::new(
        ErrorKind::ReadOnly,
        format!(
            "{} is read-only (a standby, or a primary fenced with default_transaction_read_only)",
            node.addr
        ),
    ))
}

/// `pg_last_wal_replay_lsn()`; `None` on a node not in recovery.
async fn replay_position(obj: &Object) -> Result<Option<Lsn>, tokio_postgres::Error> {
    let stmt = obj
        .prepare_cached("SELECT pg_last_wal_replay_lsn()")
        .await?;
    let row = obj.query_one(&stmt, &[]).await?;
    let lsn: Option<tokio_postgres::types::PgLsn> = row.try_get(0)?;
    Ok(lsn.map(|l| Lsn(u64::from(l))))
}

fn unavailable(failures: &[String]) -> Error {
    let detail = if failures.is_empty() {
        "every replica is down or lagging and no primary is known".to_string()
    } else {
        failures.join("; ")
    };
    Error::new(
        ErrorKind::Unavailable,
        format!("no node can serve the read: {detail}"),
    )
}

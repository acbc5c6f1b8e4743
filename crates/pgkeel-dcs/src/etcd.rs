//! The etcd implementation.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use pgkeel_core::ClusterIdentity;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::DcsError;
use crate::access::EtcdAccess;
use crate::connection::Members;
use crate::model::{
    ClusterView, DynamicConfig, Handover, HistoryEntry, MemberState, Optime, SyncState,
};

/// History entries kept.
const HISTORY_LEN: usize = 50;

/// The message of etcd-client's `LeaseKeepAliveError` when etcd answered a
/// renewal with TTL 0 (the lease expired); see [`Dcs::keep_alive`].
const LEASE_NOT_FOUND: &str = "lease not found";

/// A connection to the cluster's keys in etcd.
#[derive(Clone)]
pub struct Dcs {
    pub(crate) members: Arc<Members>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
}

/// A lease this agent holds: its member key and, when leader, the leader key
/// are attached to it, so they vanish when the agent stops renewing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseHandle {
    /// etcd lease id.
    pub id: i64,
    /// Granted TTL in seconds.
    pub ttl: i64,
}

/// A change of the leader key seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderEvent {
    /// Someone holds it now.
    Taken(String),
    /// It was deleted or expired.
    Gone,
}

impl Dcs {
    /// Connects to `endpoints` (every member of the etcd cluster: any one
    /// may be down); every request is bounded by `timeout` per member
    /// tried. Nothing is sent yet.
    pub async fn connect(
        endpoints: &[String],
        namespace: &str,
        cluster: &str,
        timeout: Duration,
    ) -> Result<Self, DcsError> {
        Self::connect_with(
            endpoints,
            namespace,
            cluster,
            timeout,
            &EtcdAccess::default(),
        )
        .await
    }

    /// Connects with TLS and credentials (`access`).
    pub async fn connect_with(
        endpoints: &[String],
        namespace: &str,
        cluster: &str,
        timeout: Duration,
        access: &EtcdAccess,
    ) -> Result<Self, DcsError> {
        let options = access
            .options()
            .with_timeout(timeout)
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(1), timeout);
        Ok(Dcs {
            members: Members::new(endpoints, &options, access.user.clone()).await?,
            prefix: format!("{}/{}/", namespace.trim_end_matches('/'), cluster),
            timeout,
        })
    }

    /// The etcd endpoint requests go to first now: the member that
    /// answered last, or the one after a member that could not be reached.
    pub fn endpoint_in_use(&self) -> &str {
        self.members.preferred_endpoint()
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub(crate) async fn call<T, F, Fut>(
        &self,
        action: &'static str,
        request: F,
    ) -> Result<T, DcsError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.members.call(action, self.timeout, request).await
    }

    async fn txn(&self, action: &'static str, txn: Txn) -> Result<bool, DcsError> {
        let resp = self
            .call(action, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }

    /// Grants a lease of `ttl` seconds.
    pub async fn grant_lease(&self, ttl: i64) -> Result<LeaseHandle, DcsError> {
        let resp = self
            .call("lease grant", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        Ok(LeaseHandle {
            id: resp.id(),
            ttl: resp.ttl(),
        })
    }

    /// Renews a lease once; returns the TTL etcd granted again (0 means the
    /// lease is gone and must be replaced).
    ///
    /// etcd answers a renewal of an expired lease with a TTL of 0, but
    /// etcd-client turns that first answer into
    /// `LeaseKeepAliveError("lease not found")`; that error is mapped back
    /// to 0 here. Reporting it as a failure made the agent retry the dead
    /// lease forever after any etcd outage longer than the TTL (a
    /// partition): it never published its state or contended again.
    pub async fn keep_alive(&self, lease: LeaseHandle) -> Result<i64, DcsError> {
        self.call("lease keep-alive", |mut c| async move {
            let (mut keeper, mut stream) = match c.lease_keep_alive(lease.id).await {
                Ok(pair) => pair,
                Err(etcd_client::Error::LeaseKeepAliveError(msg)) if msg == LEASE_NOT_FOUND => {
                    return Ok(0);
                }
                Err(e) => return Err(e),
            };
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.map(|r| r.ttl()).unwrap_or(0))
        })
        .await
    }

    /// Revokes a lease: its keys (member, and leader if held) disappear at once.
    pub async fn revoke(&self, lease: LeaseHandle) -> Result<(), DcsError> {
        self.call("lease revoke", |mut c| async move {
            c.lease_revoke(lease.id).await
        })
        .await
        .map(drop)
    }

    /// Takes the leader key for `name` if nobody holds it: a transaction
    /// guarded by `create_revision == 0`, so of two contenders exactly one
    /// wins. Returns whether this one did.
    pub async fn try_acquire_leader(
        &self,
        name: &str,
        lease: LeaseHandle,
    ) -> Result<bool, DcsError> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                name,
                Some(PutOptions::new().with_lease(lease.id)),
            )]);
        self.txn("leader acquisition", txn).await
    }

    /// Deletes the leader key if `name` holds it.
    pub async fn release_leader(&self, name: &str) -> Result<bool, DcsError> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, name)])
            .and_then([TxnOp::delete(key, None)]);
        self.txn("leader release", txn).await
    }

    /// Publishes a member's state under its lease.
    pub async fn put_member(
        &self,
        state: &MemberState,
        lease: LeaseHandle,
    ) -> Result<(), DcsError> {
        self.put_json(&format!("members/{}", state.name), state, Some(lease))
            .await
    }

    /// Claims the cluster's initialisation for `node` if nobody has: the
    /// `initialize` key, created only if absent and attached to `lease`, so
    /// a claimer that dies before recording its system identifier frees
    /// it one TTL later. Returns whether this claim won.
    pub async fn claim_initialize(&self, node: &str, lease: LeaseHandle) -> Result<bool, DcsError> {
        self.create_json(
            "initialize",
            &ClusterIdentity::claim(node),
            Some(lease),
            "initialize claim",
        )
        .await
    }

    /// Records an identity for a cluster whose data already exists (no
    /// claim needed: nobody runs initdb), if nobody recorded one. Returns
    /// whether it was recorded.
    pub async fn adopt_identity(&self, identity: &ClusterIdentity) -> Result<bool, DcsError> {
        self.create_json("initialize", identity, None, "identity adoption")
            .await
    }

    /// Replaces the `initialize` key with `identity`, persistent (no
    /// lease), only if it is still at `revision`. Returns whether it was.
    pub async fn update_identity(
        &self,
        revision: i64,
        identity: &ClusterIdentity,
    ) -> Result<bool, DcsError> {
        let key = self.key("initialize");
        let text = self.encode(&key, identity)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key, text, None)]);
        self.txn("identity update", txn).await
    }

    /// Deletes the `initialize` key if it is still at `revision` (an
    /// initialisation whose data is lost everywhere). Returns whether it was.
    pub async fn reset_identity(&self, revision: i64) -> Result<bool, DcsError> {
        let key = self.key("initialize");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::delete(key, None)]);
        self.txn("identity reset", txn).await
    }

    /// Deletes a member's key (a member removed from the cluster).
    pub async fn delete_member(&self, name: &str) -> Result<(), DcsError> {
        let key = self.key(&format!("members/{name}"));
        self.call("member deletion", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await
        .map(drop)
    }

    /// Deletes every key of this cluster (its data is gone for good).
    pub async fn delete_cluster(&self) -> Result<(), DcsError> {
        let prefix = self.prefix.clone();
        self.call("cluster deletion", |mut c| {
            let prefix = prefix.clone();
            async move {
                c.delete(
                    prefix,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await
            }
        })
        .await
        .map(drop)
    }

    async fn create_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        lease: Option<LeaseHandle>,
        action: &'static str,
    ) -> Result<bool, DcsError> {
        let key = self.key(name);
        let text = self.encode(&key, value)?;
        let options = lease.map(|l| PutOptions::new().with_lease(l.id));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, text, options)]);
        self.txn(action, txn).await
    }

    fn encode<T: Serialize>(&self, key: &str, value: &T) -> Result<String, DcsError> {
        serde_json::to_string(value).map_err(|e| DcsError::Corrupt {
            key: key.to_string(),
            detail: e.to_string(),
        })
    }

    /// Publishes the leader's WAL position.
    pub async fn put_optime(&self, optime: &Optime) -> Result<(), DcsError> {
        self.put_json("optime", optime, None).await
    }

    /// Publishes the synchronous standby set.
    pub async fn put_sync(&self, sync: &SyncState) -> Result<(), DcsError> {
        self.put_json("sync", sync, None).await
    }

    /// Stores the dynamic configuration.
    pub async fn put_config(&self, config: &DynamicConfig) -> Result<(), DcsError> {
        self.put_json("config", config, None).await
    }

    /// Requests a switchover.
    pub async fn put_switchover(&self, request: &Handover) -> Result<(), DcsError> {
        self.put_json("switchover", request, None).await
    }

    /// Requests a manual failover.
    pub async fn put_failover(&self, request: &Handover) -> Result<(), DcsError> {
        self.put_json("failover", request, None).await
    }

    /// Clears pending switchover and failover requests.
    pub async fn clear_handover(&self) -> Result<(), DcsError> {
        for (action, name) in [
            ("switchover clear", "switchover"),
            ("failover clear", "failover"),
        ] {
            let key = self.key(name);
            self.call(action, |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        }
        Ok(())
    }

    /// Appends a leadership change to the history (bounded).
    pub async fn append_history(&self, entry: HistoryEntry) -> Result<(), DcsError> {
        let mut history: Vec<HistoryEntry> = self.get_json("history").await?.unwrap_or_default();
        history.push(entry);
        let excess = history.len().saturating_sub(HISTORY_LEN);
        history.drain(..excess);
        self.put_json("history", &history, None).await
    }

    async fn put_json<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        lease: Option<LeaseHandle>,
    ) -> Result<(), DcsError> {
        let text = self.encode(&self.key(name), value)?;
        let key = self.key(name);
        self.call("write", |mut c| {
            let (key, text) = (key.clone(), text.clone());
            let options = lease.map(|l| PutOptions::new().with_lease(l.id));
            async move { c.put(key, text, options).await }
        })
        .await
        .map(drop)
    }

    async fn get_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, DcsError> {
        let key = self.key(name);
        let resp = self
            .call("read", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        resp.kvs()
            .first()
            .map(|kv| {
                serde_json::from_slice(kv.value()).map_err(|e| DcsError::Corrupt {
                    key: key.clone(),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    /// Reads every key of the cluster in one request.
    pub async fn view(&self) -> Result<ClusterView, DcsError> {
        let prefix = self.prefix.clone();
        let resp = self
            .call("read cluster", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut view = ClusterView::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let Some(name) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            let corrupt = |e: serde_json::Error| DcsError::Corrupt {
                key: key.clone(),
                detail: e.to_string(),
            };
            match name {
                "leader" => {
                    view.leader = Some(String::from_utf8_lossy(kv.value()).to_string());
                    view.leader_lease = Some(kv.lease());
                }
                "optime" => {
                    view.optime = Some(serde_json::from_slice(kv.value()).map_err(corrupt)?)
                }
                "sync" => view.sync = Some(serde_json::from_slice(kv.value()).map_err(corrupt)?),
                "config" => view.config = serde_json::from_slice(kv.value()).map_err(corrupt)?,
                "switchover" => {
                    view.switchover = Some(serde_json::from_slice(kv.value()).map_err(corrupt)?)
                }
                "failover" => {
                    view.failover = Some(serde_json::from_slice(kv.value()).map_err(corrupt)?)
                }
                "history" => view.history = serde_json::from_slice(kv.value()).map_err(corrupt)?,
                "initialize" => {
                    view.initialize = Some(serde_json::from_slice(kv.value()).map_err(corrupt)?);
                    view.initialize_revision = Some(kv.mod_revision());
                }
                other => {
                    if let Some(member) = other.strip_prefix("members/") {
                        let state: MemberState =
                            serde_json::from_slice(kv.value()).map_err(corrupt)?;
                        view.members.insert(member.to_string(), state);
                    }
                }
            }
        }
        Ok(view)
    }

    /// Seconds left on a lease (`None` if it no longer exists).
    pub async fn lease_time_left(&self, lease: i64) -> Result<Option<i64>, DcsError> {
        let resp = self
            .call("lease lookup", |mut c| async move {
                c.lease_time_to_live(lease, None).await
            })
            .await?;
        Ok((resp.ttl() > 0).then_some(resp.ttl()))
    }

    /// Watches the member keys: each change is sent as the member's name
    /// and its new state (`None`: the key vanished) until the receiver is
    /// dropped or the watch breaks (then the channel closes).
    pub async fn watch_members(
        &self,
    ) -> Result<tokio::sync::mpsc::Receiver<(String, Option<MemberState>)>, DcsError> {
        let prefix = self.key("members/");
        let mut stream = self
            .call("watch", |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.watch(prefix, Some(WatchOptions::new().with_prefix()))
                        .await
                }
            })
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).to_string();
                    let Some(name) = key.strip_prefix(&prefix) else {
                        continue;
                    };
                    let state = match event.event_type() {
                        EventType::Delete => None,
                        EventType::Put => serde_json::from_slice(kv.value()).ok(),
                    };
                    if tx.send((name.to_string(), state)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Watches the leader key: every change is sent on the returned
    /// channel until it is dropped or the watch breaks (then the channel
    /// closes and the caller re-watches).
    pub async fn watch_leader(&self) -> Result<tokio::sync::mpsc::Receiver<LeaderEvent>, DcsError> {
        let key = self.key("leader");
        let mut stream = self
            .call("watch", |mut c| {
                let key = key.clone();
                async move { c.watch(key, Some(WatchOptions::new())).await }
            })
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                for event in resp.events() {
                    let change = match event.event_type() {
                        EventType::Delete => LeaderEvent::Gone,
                        EventType::Put => LeaderEvent::Taken(
                            event
                                .kv()
                                .map(|kv| String::from_utf8_lossy(kv.value()).to_string())
                                .unwrap_or_default(),
                        ),
                    };
                    if tx.send(change).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

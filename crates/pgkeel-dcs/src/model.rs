//! What is stored in the DCS, and the view an agent reads back.

use pgkeel_core::{ClusterIdentity, Lsn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One member's published state: what other agents, the CLI and the proxy
/// know about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemberState {
    /// Node name.
    pub name: String,
    /// `primary`, `replica` or `stopped`.
    pub role: String,
    /// PostgreSQL running and answering.
    pub running: bool,
    /// Host PostgreSQL listens on.
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
    /// The agent's REST URL.
    pub api_url: String,
    /// Timeline.
    pub timeline: Option<u32>,
    /// Primary: current WAL position.
    pub lsn: Option<Lsn>,
    /// Replica: WAL received and flushed.
    pub received_lsn: Option<Lsn>,
    /// Replica: WAL replayed.
    pub replayed_lsn: Option<Lsn>,
    /// Replica: the WAL receiver is streaming and heard from its upstream
    /// within the lease TTL.
    pub streaming: bool,
    /// Replica: node it follows.
    pub upstream: Option<String>,
    /// Never promote automatically.
    pub nofailover: bool,
    /// Agent PID.
    pub agent_pid: u32,
    /// Postmaster PID.
    pub pg_pid: Option<u32>,
    /// Why the agent's last action failed, while it keeps failing (a clone
    /// refused, a start that crashes): what `pgkeel up` and `status` show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many loops in a row the action failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl MemberState {
    /// The position that counts for choosing a new leader: received WAL on
    /// a replica, current WAL on a primary.
    pub fn wal_position(&self) -> Option<Lsn> {
        self.received_lsn.or(self.lsn).or(self.replayed_lsn)
    }
}

/// The leader's last published WAL position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Optime {
    /// Who published it.
    pub leader: String,
    /// Its WAL position.
    pub lsn: Lsn,
    /// Its timeline.
    pub timeline: Option<u32>,
}

/// Standbys that may hold commits the primary acknowledged (sync/quorum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SyncState {
    /// The primary this applies to.
    pub leader: String,
    /// Standbys named in its `synchronous_standby_names`.
    pub standbys: Vec<String>,
    /// How many of them confirm each commit.
    pub quorum: usize,
    /// Primary's WAL position when it last changed the set.
    #[serde(default)]
    pub since: Option<Lsn>,
}

/// Settings changed at run time for the whole cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DynamicConfig {
    /// Maintenance: agents take no automatic action.
    pub paused: bool,
    /// A standby cluster (`[standby_cluster]`) was promoted
    /// (`pgkeel promote-cluster`): it no longer follows its source.
    #[serde(default)]
    pub standby_promoted: bool,
    /// The cluster this one was made to follow (`pgkeel demote-cluster`);
    /// it outranks `[standby_cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<pgkeel_core::config::StandbyClusterSection>,
}

/// A requested switchover (planned) or failover (manual).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    /// The leader to hand over from (switchover only).
    pub from: Option<String>,
    /// The node that must become leader; `None`: the best candidate.
    pub to: Option<String>,
    /// When it was requested (Unix ms).
    pub requested_ms: u64,
}

/// One leadership change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// New leader.
    pub leader: String,
    /// Timeline it started.
    pub timeline: Option<u32>,
    /// Its WAL position when it took over.
    pub lsn: Option<Lsn>,
    /// `bootstrap`, `failover`, `switchover`, `manual failover`.
    pub reason: String,
    /// Unix ms.
    pub at_ms: u64,
}

/// Everything an agent reads from the DCS in one round trip.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// Holder of the leader key.
    pub leader: Option<String>,
    /// Lease of the leader key (to report its time left).
    pub leader_lease: Option<i64>,
    /// Published member states, by name.
    pub members: BTreeMap<String, MemberState>,
    /// The leader's last WAL position.
    pub optime: Option<Optime>,
    /// Synchronous standbys.
    pub sync: Option<SyncState>,
    /// Dynamic configuration.
    pub config: DynamicConfig,
    /// Pending switchover.
    pub switchover: Option<Handover>,
    /// Pending manual failover.
    pub failover: Option<Handover>,
    /// Leadership history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Who initialised the cluster and its system identifier.
    #[serde(default)]
    pub initialize: Option<ClusterIdentity>,
    /// etcd's modification revision of the `initialize` key: changes to it
    /// are compare-and-swap on this revision.
    #[serde(default)]
    pub initialize_revision: Option<i64>,
}

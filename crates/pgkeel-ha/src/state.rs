//! Inputs and outputs of the decision.

use pgkeel_core::{Lsn, ReplicationMode};

/// What the agent knows about its own node.
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    /// This node's name.
    pub name: String,
    /// Its PostgreSQL right now.
    pub pg: LocalPg,
    /// What its data directory holds.
    pub data: DataState,
    /// The agent holds a valid lease (renewed within `ttl - margin`) and
    /// etcd answered this loop.
    pub dcs_ok: bool,
    /// The lease was renewed recently enough (`ttl - margin`), even if this
    /// loop's read of etcd failed: a primary is not in danger yet.
    pub lease_valid: bool,
    /// Configured never to be promoted automatically.
    pub nofailover: bool,
    /// Every other member confirmed this node as leader within the last
    /// `ttl - margin` (failsafe) and promised not to take over: a primary
    /// without a valid lease keeps running, whether etcd is unreachable or
    /// reachable again with the lease found expired (until a new lease lets
    /// it take the key back).
    pub failsafe_ok: bool,
    /// Leader: no standby has been healthy for a whole TTL, so dropping the
    /// synchronous standbys (non-strict mode) is a real outage, not a
    /// reconnect (e.g. right after a promotion).
    pub degrade_allowed: bool,
    /// This node confirmed a leader's failsafe request within the last TTL
    /// and promised not to take over meanwhile.
    pub failsafe_hold: bool,
    /// Replica: the node its `primary_conninfo` points at (`None`: none).
    pub upstream: Option<String>,
    /// Replica: it has not streamed for a whole TTL and is on an older
    /// timeline than the leader's: it holds WAL the leader's history does
    /// not (it followed a primary that diverged), so it can never catch up.
    pub diverged: bool,
}

/// The local PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalPg {
    /// Not running.
    Stopped,
    /// Running and answering.
    Running {
        /// In recovery (a standby).
        in_recovery: bool,
        /// WAL position: current on a primary, received on a standby.
        lsn: Option<Lsn>,
        /// Timeline.
        timeline: Option<u32>,
        /// Standby: the WAL receiver streams and heard from the primary
        /// within the lease TTL (the primary is alive).
        streaming: bool,
        /// Primary: standbys currently streaming from it, with the WAL
        /// position each has flushed.
        healthy_standbys: Vec<(String, Option<Lsn>)>,
        /// Primary: its `synchronous_standby_names` members now.
        sync_standbys: Vec<String>,
    },
}

/// The data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataState {
    /// No complete data directory: must be cloned.
    Missing,
    /// Primary data (no `standby.signal`).
    Primary,
    /// Standby data.
    Standby,
}

/// Another member as published in the DCS (or asked over its REST API).
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Name.
    pub name: String,
    /// Running PostgreSQL in recovery.
    pub running_replica: bool,
    /// Running PostgreSQL as a primary, as published or as found by
    /// probing the node directly (e.g. its agent has not taken the key
    /// yet): nobody else may take over meanwhile.
    pub running_primary: bool,
    /// Its WAL position (received).
    pub lsn: Option<Lsn>,
    /// Never promoted automatically.
    pub nofailover: bool,
}

/// What the DCS says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct View {
    /// Leader key holder.
    pub leader: Option<String>,
    /// Live members (their keys exist: their agents run), except this node.
    pub peers: Vec<Peer>,
    /// Last leader's published position.
    pub optime: Option<Lsn>,
    /// Who published `optime`.
    pub optime_leader: Option<String>,
    /// Synchronous standby set published by the last leader, and its quorum.
    pub sync: Option<(Vec<String>, usize)>,
    /// WAL position at which the primary last changed its synchronous
    /// standbys: the published set stays the union of old and new until
    /// enough new ones have flushed past it.
    pub sync_since: Option<Lsn>,
    /// Automatic actions paused.
    pub paused: bool,
    /// Pending switchover: (from, to).
    pub switchover: Option<(Option<String>, Option<String>)>,
    /// Pending manual failover target.
    pub failover_to: Option<String>,
    /// The leader seat is known to be empty: this agent saw the leader key
    /// disappear (its holder had fenced itself or stopped by then), or has
    /// seen no leader for a whole TTL (long enough for any primary without
    /// the key to take it or fence itself).
    pub vacancy_confirmed: bool,
    /// This is a standby cluster (`[standby_cluster]`, not promoted): its
    /// leader follows the primary cluster instead of being promoted.
    pub standby_cluster: bool,
}

/// Configuration the decision needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    /// Replication mode.
    pub mode: ReplicationMode,
    /// Standbys that confirm each commit.
    pub sync_count: usize,
    /// Block rather than degrade when no synchronous standby is healthy.
    pub strict_sync: bool,
    /// Async mode: largest lag (bytes) a new leader may have.
    pub maximum_lag_on_failover: u64,
    /// Every configured member, in configuration order.
    pub members: Vec<String>,
}

/// What the agent should do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop PostgreSQL immediately: it is a primary without a valid lease.
    Fence,
    /// Try to take the leader key.
    AcquireLeader,
    /// Give the leader key up.
    ReleaseLeader,
    /// Start PostgreSQL as it is on disk (a primary only when this node
    /// holds the leader key).
    StartPrimary,
    /// Configure as a standby following `leader` (or nobody) and start.
    StartStandby {
        /// Node to follow.
        leader: Option<String>,
    },
    /// Promote the running standby.
    Promote,
    /// Stop a primary that must not be one (fast when handing over cleanly).
    Demote {
        /// Clean stop for a switchover (WAL shipped first) vs immediate.
        clean: bool,
    },
    /// Rewind diverged primary data from `leader`, then start as standby.
    Rewind {
        /// Source.
        leader: String,
    },
    /// Clone from `leader` (data missing or rewind impossible).
    Reclone {
        /// Source.
        leader: String,
    },
    /// Point a running standby at `leader`.
    Repoint {
        /// New upstream.
        leader: String,
    },
    /// Leader: set `synchronous_standby_names` members and quorum. The
    /// runner first publishes the union of the old and new sets (so every
    /// acknowledged commit stays covered), then changes PostgreSQL, and
    /// records the WAL position of the change.
    SetSyncStandbys {
        /// Members.
        standbys: Vec<String>,
        /// Quorum (ANY n / FIRST n).
        quorum: usize,
    },
    /// Leader: the new synchronous standbys have caught up past the change;
    /// publish exactly them.
    NarrowSync {
        /// Members.
        standbys: Vec<String>,
        /// Quorum (ANY n / FIRST n).
        quorum: usize,
    },
    /// Leader: ensure a slot per other member.
    EnsureSlots,
    /// Leader: publish the WAL position.
    PublishOptime,
    /// Leader: a requested switchover or failover is done.
    ClearHandover,
    /// Nothing to change; why.
    Wait(String),
}

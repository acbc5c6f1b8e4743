//! The shape of `pgkeel status --json`: what a monitoring system or a test
//! reads. Field names are a public interface: add, never rename.

use serde::{Deserialize, Serialize};

use crate::Lsn;

/// What a node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes.
    Primary,
    /// In recovery, following a primary.
    Replica,
}

/// The whole cluster as seen right now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `cluster.name`.
    pub cluster: String,
    /// Replication mode from the configuration.
    pub mode: String,
    /// `synchronous_standby_names` as the primary currently has it.
    pub synchronous_standby_names: Option<String>,
    /// One entry per configured node, in configuration order.
    pub nodes: Vec<NodeStatus>,
    /// Replication slots on the primary.
    pub slots: Vec<SlotStatus>,
    /// Holder of the leader key in etcd (HA clusters).
    #[serde(default)]
    pub leader: Option<String>,
    /// Seconds left on the leader's lease.
    #[serde(default)]
    pub lease_ttl_left: Option<i64>,
    /// Automatic failover paused.
    #[serde(default)]
    pub paused: Option<bool>,
    /// A standby cluster: the primary cluster it follows (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub following: Option<String>,
    /// etcd answered.
    #[serde(default)]
    pub etcd_ok: Option<bool>,
    /// The pooling proxy, when the cluster has one.
    #[serde(default)]
    pub proxy: Option<ProxyStatus>,
}

/// Where applications connect to the proxy, and whether it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProxyStatus {
    /// Listen address.
    pub host: String,
    /// Client port.
    pub port: u16,
    /// HTTP admin port (`/metrics`, `/pools`).
    pub admin_port: u16,
    /// Its PID, when running.
    pub pid: Option<u32>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Live role; when the node is down, the role its data directory holds
    /// (`standby.signal` present or not).
    pub role: Option<Role>,
    /// Postmaster running and answering.
    pub running: bool,
    /// Postmaster PID.
    pub pid: Option<u32>,
    /// Listen address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Timeline the node is on.
    pub timeline: Option<u32>,
    /// Primary: current WAL write position; replica: last replayed position.
    pub lsn: Option<Lsn>,
    /// Replica: last WAL position received and flushed by its WAL receiver.
    pub received_lsn: Option<Lsn>,
    /// Replica: last WAL position replayed.
    pub replayed_lsn: Option<Lsn>,
    /// Replica: bytes of WAL between the primary's position and this
    /// replica's replay position.
    pub lag_bytes: Option<u64>,
    /// Replica: `pg_stat_replication.replay_lag` in seconds (0 when caught
    /// up and idle).
    pub lag_seconds: Option<f64>,
    /// Replica: `write_lag` in seconds.
    pub write_lag_seconds: Option<f64>,
    /// Replica: `flush_lag` in seconds.
    pub flush_lag_seconds: Option<f64>,
    /// Replica: `async`, `sync`, `quorum` or `potential`.
    pub sync_state: Option<String>,
    /// Replica: its address as the primary sees it.
    pub client_addr: Option<String>,
    /// Replica: WAL the primary has sent it.
    pub sent_lsn: Option<Lsn>,
    /// Replica: WAL it has written (as reported to the primary).
    pub write_lsn: Option<Lsn>,
    /// Replica: WAL it has flushed (as reported to the primary).
    pub flush_lsn: Option<Lsn>,
    /// Replica: where its WAL receiver (re)started streaming.
    pub receive_start_lsn: Option<Lsn>,
    /// Replica: the timeline its WAL receiver (re)started on.
    pub receive_start_tli: Option<u32>,
    /// Replica: its state in the primary's `pg_stat_replication`
    /// (`streaming`, `catchup`, ...).
    pub replication_state: Option<String>,
    /// Replica: its WAL receiver's status (`streaming`, `waiting`, ...).
    pub wal_receiver: Option<String>,
    /// Replica: the upstream it streams from, `host:port`.
    pub upstream: Option<String>,
    /// Replica: the slot its WAL receiver uses.
    pub slot: Option<String>,
    /// Replica: seconds since its WAL receiver last heard from the primary.
    pub last_msg_age_seconds: Option<f64>,
    /// Holds the leader key (HA clusters).
    #[serde(default)]
    pub leader: Option<bool>,
    /// PID of the node's agent, when it runs.
    #[serde(default)]
    pub agent_pid: Option<u32>,
    /// Why the node could not be inspected, when it could not.
    pub error: Option<String>,
    /// WAL archiving on this node, when it archives (a primary with a
    /// backup repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
}

/// A node's WAL archiver (`pg_stat_archiver`), with the reason of the last
/// failure from the node's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ArchiveStatus {
    /// Segments archived since the statistics were reset.
    pub archived_count: u64,
    /// The last segment archived.
    pub last_archived_wal: Option<String>,
    /// Seconds since the last successful archive.
    pub last_archived_age_seconds: Option<f64>,
    /// Failed attempts since the statistics were reset.
    pub failed_count: u64,
    /// The segment of the last failed attempt.
    pub last_failed_wal: Option<String>,
    /// Seconds since the last failed attempt.
    pub last_failed_age_seconds: Option<f64>,
    /// The most recent attempt failed: WAL is piling up in `pg_wal`.
    pub failing: bool,
    /// What the archive command printed when it last failed.
    pub reason: Option<String>,
}

/// One replication slot on the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// Slot name (= the member it serves).
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// A WAL sender is using it.
    pub active: bool,
    /// Oldest WAL position it holds.
    pub restart_lsn: Option<Lsn>,
    /// WAL bytes it keeps on the primary's disk.
    pub retained_bytes: Option<u64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
}

impl ClusterStatus {
    /// The node currently running as primary, if exactly one is.
    pub fn primary(&self) -> Option<&NodeStatus> {
        let mut primaries = self
            .nodes
            .iter()
            .filter(|n| n.running && n.role == Some(Role::Primary));
        match (primaries.next(), primaries.next()) {
            (Some(p), None) => Some(p),
            _ => None,
        }
    }
}

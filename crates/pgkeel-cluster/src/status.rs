//! `pgkeel status`: every node's role, process, WAL positions and lag, and
//! the primary's slots, gathered live.

use futures_util::future::join_all;
use pgkeel_backup::failure::archive_failure_reason;
use pgkeel_core::status::{
    ArchiveStatus, ClusterStatus, NodeStatus, ProxyStatus, Role, SlotStatus,
};
use pgkeel_core::{Config, NodeConfig};
use pgkeel_pg::pgctl::{is_data_dir, is_standby, running_pid};
use pgkeel_pg::probe::{NodeProbe, ReplicationRow, SlotRow, WalReceiverRow};
use serde::{Deserialize, Serialize};

use crate::Cluster;

/// What one node answered: what its agent serves on `GET /status`, so
/// `status` can be assembled the same way from any host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's own entry.
    pub status: NodeStatus,
    /// Its probe, when it answered.
    pub probe: Option<NodeProbe>,
    /// A primary's `pg_stat_replication`.
    pub replication: Vec<ReplicationRow>,
    /// Its replication slots.
    pub slots: Vec<SlotRow>,
}

impl Cluster {
    /// Inspects every node (in parallel) and merges the primary's view of
    /// its standbys into each standby's entry.
    pub async fn status(&self) -> ClusterStatus {
        let reports = join_all(self.nodes().iter().map(|n| self.node_report(n))).await;
        assemble_status(&self.config, &reports, self.proxy_status())
    }

    /// The proxy's address and PID (from its PID file), when the cluster
    /// has one.
    pub fn proxy_status(&self) -> Option<ProxyStatus> {
        let mut status = proxy_address(&self.config)?;
        status.pid = crate::pidfile::alive_pid(&self.layout.proxy_pid_file());
        Some(status)
    }
}

/// The proxy's address, when the cluster has one (no PID: it may run on
/// another host).
pub fn proxy_address(config: &Config) -> Option<ProxyStatus> {
    let p = &config.proxy;
    p.enabled.then(|| ProxyStatus {
        host: connect_host(&p.host),
        port: config.proxy_port(),
        admin_port: config.proxy_admin_port(),
        pid: None,
    })
}

/// The cluster's status from every node's report (in configuration
/// order): the primary's view of its standbys (lag, sync state) is merged
/// into each standby's entry, and its slots listed.
pub fn assemble_status(
    config: &Config,
    reports: &[NodeReport],
    proxy: Option<ProxyStatus>,
) -> ClusterStatus {
    let primary = reports
        .iter()
        .find(|r| r.status.running && r.status.role == Some(Role::Primary));
    let primary_lsn = primary
        .and_then(|p| p.probe.as_ref())
        .and_then(|p| p.current_lsn);
    let rows: &[ReplicationRow] = primary
        .map(|p| p.replication.as_slice())
        .unwrap_or_default();
    let slots = primary
        .map(|p| p.slots.iter().map(slot_status).collect())
        .unwrap_or_default();
    let sync_names = primary
        .and_then(|p| p.probe.as_ref())
        .map(|p| p.synchronous_standby_names.clone());
    let nodes = reports
        .iter()
        .map(|r| {
            let mut status = r.status.clone();
            if status.role == Some(Role::Replica) {
                merge_replication(&mut status, rows, primary_lsn);
            }
            status
        })
        .collect();
    ClusterStatus {
        cluster: config.cluster.name.clone(),
        mode: config.replication.mode.to_string(),
        synchronous_standby_names: sync_names,
        nodes,
        slots,
        leader: None,
        lease_ttl_left: None,
        paused: None,
        following: None,
        etcd_ok: None,
        proxy,
    }
}

impl Cluster {
    /// What `node` (whose data directory is on this host) answers over its
    /// socket, with what its data directory says when it does not run.
    pub async fn node_report(&self, node: &NodeConfig) -> NodeReport {
        let data = self.layout.data_dir(node.name.as_str());
        let pid = running_pid(&data);
        let mut status = NodeStatus {
            name: node.name.to_string(),
            host: node.host.clone(),
            port: node.port,
            pid,
            role: is_data_dir(&data).then(|| {
                if is_standby(&data) {
                    Role::Replica
                } else {
                    Role::Primary
                }
            }),
            ..Default::default()
        };
        let mut report = NodeReport {
            status: status.clone(),
            probe: None,
            replication: vec![],
            slots: vec![],
        };
        if pid.is_none() {
            return report;
        }
        let answer = async {
            let conn = self.connect(node).await?;
            let probe = conn.probe().await?;
            let (receiver, replication) = if probe.in_recovery {
                (conn.wal_receiver().await?, vec![])
            } else {
                (None, conn.replication().await?)
            };
            let slots = conn.slots().await?;
            let archiver = conn.archiver().await?;
            Ok::<_, pgkeel_pg::PgError>((probe, receiver, replication, slots, archiver))
        };
        match answer.await {
            Ok((probe, receiver, replication, slots, archiver)) => {
                status.archive = archiver.map(|a| self.archive_status(node.name.as_str(), a));
                status.running = true;
                status.role = Some(if probe.in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                });
                status.timeline = probe.timeline;
                status.lsn = probe.current_lsn.or(probe.replay_lsn);
                status.received_lsn = probe.receive_lsn;
                status.replayed_lsn = probe.replay_lsn;
                if let Some(rx) = receiver {
                    apply_receiver(&mut status, &rx);
                }
                report.probe = Some(probe);
                report.replication = replication;
                report.slots = slots;
            }
            Err(e) => status.error = Some(e.to_string()),
        }
        report.status = status;
        report
    }
}

/// How much of a node's log is read for an archive failure's reason.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

impl Cluster {
    /// A node's archiver with the reason of its last failure when the last
    /// attempt failed.
    fn archive_status(&self, node: &str, mut a: ArchiveStatus) -> ArchiveStatus {
        if a.failing {
            a.reason = read_tail(&self.layout.log_file(node), LOG_TAIL_BYTES)
                .as_deref()
                .and_then(archive_failure_reason);
        }
        a
    }
}

/// The last `bytes` of a file, if it can be read.
fn read_tail(path: &std::path::Path, bytes: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(bytes))).ok()?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

fn apply_receiver(status: &mut NodeStatus, rx: &WalReceiverRow) {
    status.wal_receiver = Some(rx.status.clone());
    status.upstream = match (&rx.sender_host, rx.sender_port) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        _ => None,
    };
    status.slot = rx.slot_name.clone();
    status.receive_start_lsn = rx.receive_start_lsn;
    status.receive_start_tli = rx.receive_start_tli;
    status.last_msg_age_seconds = rx.last_msg_age_seconds;
    if status.timeline.is_none() {
        status.timeline = rx.received_tli;
    }
}

/// Lag of a standby, from the primary's `pg_stat_replication` (time) and
/// the LSN distance to the primary's current position (bytes). Never from
/// `now() - pg_last_xact_replay_timestamp()`, which grows on an idle primary.
fn merge_replication(
    status: &mut NodeStatus,
    rows: &[ReplicationRow],
    primary_lsn: Option<pgkeel_core::Lsn>,
) {
    let Some(row) = rows.iter().find(|r| r.application_name == status.name) else {
        return;
    };
    status.sync_state = row.sync_state.clone();
    status.replication_state = row.state.clone();
    status.client_addr = row.client_addr.clone();
    status.sent_lsn = row.sent_lsn;
    status.write_lsn = row.write_lsn;
    status.flush_lsn = row.flush_lsn;
    status.write_lag_seconds = row.write_lag;
    status.flush_lag_seconds = row.flush_lag;
    let replayed = status.replayed_lsn.or(row.replay_lsn);
    status.lag_bytes = match (primary_lsn, replayed) {
        (Some(p), Some(r)) => Some(p.bytes_after(r)),
        _ => None,
    };
    // replay_lag turns NULL once a standby has caught up and nothing new
    // happens: that is zero lag, not unknown.
    status.lag_seconds = row.replay_lag.or(match status.lag_bytes {
        Some(0) => Some(0.0),
        _ => None,
    });
}

fn slot_status(slot: &SlotRow) -> SlotStatus {
    SlotStatus {
        name: slot.name.clone(),
        slot_type: slot.slot_type.clone(),
        active: slot.active,
        restart_lsn: slot.restart_lsn,
        retained_bytes: slot.retained_bytes,
        wal_status: slot.wal_status.clone(),
    }
}

/// The address clients use for a listener bound to `host`: a wildcard
/// bind is reached on loopback.
pub fn connect_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".into(),
        Ok(ip) if ip.is_unspecified() => "::1".into(),
        _ => host.to_string(),
    }
}

//! Following the agents' leader key in etcd, so the proxy writes only to
//! the node the agents elected: an old primary that has not been demoted
//! yet is never written to, and a leader change triggers health checks at
//! once instead of at the next interval.

use std::sync::Arc;
use std::time::Duration;

use pgkeel_dcs::{Dcs, LeaderEvent};

use crate::topology::Topology;

/// Where the cluster's keys live in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSource {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix (`etcd.namespace`).
    pub namespace: String,
    /// Cluster name (the keys live under `<namespace>/<cluster>/`).
    pub cluster: String,
    /// Bound on each etcd request.
    pub timeout: Duration,
}

/// How often the leader key is read even without watch events (a watch
/// can silently stall when etcd restarts).
const REREAD: Duration = Duration::from_secs(1);

/// Follows the leader key forever (until the task is aborted). While etcd
/// cannot be reached the leader is `Unknown` and the health checks alone
/// decide; the agents fence a primary that cannot confirm its lease.
pub async fn follow_leader(topology: Arc<Topology>, source: LeaderSource) {
    loop {
        match Dcs::connect(
            &source.endpoints,
            &source.namespace,
            &source.cluster,
            source.timeout,
        )
        .await
        {
            Ok(dcs) => {
                if let Err(e) = follow(&topology, &dcs).await {
                    tracing::warn!(error = %e, "lost the leader key in etcd; routing by health checks alone");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach etcd; routing by health checks alone")
            }
        }
        topology.set_leader(None, false);
        tokio::time::sleep(REREAD).await;
    }
}

/// Reads the key, then applies watch events, re-reading every
/// [`REREAD`]; returns when etcd fails.
async fn follow(topology: &Topology, dcs: &Dcs) -> Result<(), pgkeel_dcs::DcsError> {
    let mut events = dcs.watch_leader().await?;
    loop {
        let view = dcs.view().await?;
        topology.set_leader(view.leader.as_deref(), true);
        let deadline = tokio::time::sleep(REREAD);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(LeaderEvent::Taken(name)) => topology.set_leader(Some(&name), true),
                    Some(LeaderEvent::Gone) => topology.set_leader(None, true),
                    None => {
                        events = dcs.watch_leader().await?;
                        break;
                    }
                },
                _ = &mut deadline => break,
            }
        }
    }
}

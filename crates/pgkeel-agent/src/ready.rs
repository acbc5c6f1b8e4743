//! Waiting, as `pgkeel up` does, until the agents have made the cluster
//! ready: a leader, and every other member streaming from it in the state
//! the replication mode calls for. An agent whose action keeps failing (a
//! clone refused, a server that does not start) ends the wait at once with
//! its error instead of at the timeout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgkeel_cluster::Cluster;

use crate::AgentError;
use crate::orchestrate::dcs;

/// Loops in a row an agent's action may fail before `up` reports it (one
/// failure can be a race: a clone started while the primary restarts).
pub const FAILURES_REPORTED: u32 = 3;

/// Waits until the cluster is ready, at most `timeout`.
pub async fn wait_ready(cluster: &Cluster, timeout: Duration) -> Result<(), AgentError> {
    let dcs = dcs(cluster).await?;
    let start = Instant::now();
    let mut last = String::from("no leader yet");
    // Failures counted before this wait began do not count: the cause may
    // have been fixed since (the agents retry every loop).
    let mut baseline: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        match dcs.view().await {
            Ok(view) => {
                for m in view.members.values() {
                    let base = baseline.entry(m.name.clone()).or_insert(m.failures);
                    *base = (*base).min(m.failures);
                }
                if let Some(member) = view.members.values().find(|m| {
                    m.failures >= baseline.get(&m.name).copied().unwrap_or(0) + FAILURES_REPORTED
                }) {
                    return Err(AgentError::MemberFailing {
                        node: member.name.clone(),
                        failures: member.failures,
                        error: member.error.clone().unwrap_or_default(),
                        log: cluster.layout.agent_log(&member.name),
                    });
                }
                if let Some(leader) = &view.leader {
                    let node = cluster.node(leader)?;
                    match cluster
                        .wait_replication(node, Duration::from_millis(500))
                        .await
                    {
                        Ok(()) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    }
                }
            }
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= timeout {
            return Err(AgentError::Timeout {
                what: "the cluster to be ready (a leader, every replica streaming)".into(),
                seconds: timeout.as_secs(),
                hint: format!(
                    "; last seen: {last}\nhint: `pgkeel status` and nodes/<name>/agent.log tell why; the agents keep trying"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! Starting and stopping the HA processes of a local cluster: the etcd
//! member and one agent per node, all as daemons found again by PID file.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgkeel_cluster::Cluster;
use pgkeel_core::status::ClusterStatus;
use pgkeel_dcs::Dcs;
use serde::Serialize;

use crate::etcd_local::{self, LocalEtcd, spawn_detached};
use crate::{AgentError, pidfile};

/// How long `up` waits for the agents to agree on a leader.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to the cluster's etcd.
pub async fn dcs(cluster: &Cluster) -> Result<Dcs, AgentError> {
    let c = &cluster.config;
    let timeout = Duration::from_secs_f64(c.ha.retry_timeout.max(0.5));
    Ok(Dcs::connect(
        &c.etcd_endpoints(),
        &c.etcd.namespace,
        &c.cluster.name,
        timeout,
    )
    .await?)
}

/// PID of a node's agent, if it runs.
pub fn agent_pid(cluster: &Cluster, node: &str) -> Option<u32> {
    pidfile::alive_pid(&cluster.layout.agent_pid_file(node))
}

/// Starts etcd (if local) and every agent that is not running. `first`
/// (the node running as primary) is started first and must take the
/// leader key before the others start, so no replica contends with a
/// healthy primary. Returns once every agent has published its state and
/// a leader exists.
pub async fn start_ha(
    cluster: &Cluster,
    exe: &Path,
    first: Option<&str>,
) -> Result<Vec<String>, AgentError> {
    let mut started = vec![];
    etcd_local::ensure_running(cluster, exe).await?;
    let dcs = dcs(cluster).await?;
    let root = cluster.layout.root().display().to_string();
    let mut order: Vec<&str> = cluster.nodes().iter().map(|n| n.name.as_str()).collect();
    if let Some(first) = first {
        order.retain(|n| *n != first);
        order.insert(0, first);
    }
    for (i, name) in order.iter().enumerate() {
        if agent_pid(cluster, name).is_some() {
            continue;
        }
        cluster.ensure_node_dirs(name)?;
        spawn_detached(
            exe,
            &["agent", "--dir", &root, "--node", name],
            &cluster.layout.agent_log(name),
        )?;
        started.push(format!("started agent {name}"));
        if i == 0 && first.is_some() {
            let took = crate::api::until(AGENT_TIMEOUT, || async {
                dcs.view()
                    .await
                    .is_ok_and(|v| v.leader.as_deref() == Some(*name))
            })
            .await;
            if !took {
                return Err(AgentError::Timeout {
                    what: format!("{name}'s agent to take the leader key"),
                    seconds: AGENT_TIMEOUT.as_secs(),
                    hint: format!("; see {}", cluster.layout.agent_log(name).display()),
                });
            }
        }
    }
    let all = crate::api::until(AGENT_TIMEOUT, || async {
        dcs.view().await.is_ok_and(|v| {
            v.leader.is_some()
                && cluster
                    .nodes()
                    .iter()
                    .all(|n| v.members.contains_key(n.name.as_str()))
        })
    })
    .await;
    if !all {
        return Err(AgentError::Timeout {
            what: "every agent to publish its state under a leader".into(),
            seconds: AGENT_TIMEOUT.as_secs(),
            hint: "; see nodes/<name>/agent.log".into(),
        });
    }
    Ok(started)
}

/// Stops every agent (SIGTERM: each revokes its lease and leaves
/// PostgreSQL running). Returns the nodes whose agent was stopped.
pub async fn stop_agents(cluster: &Cluster) -> Vec<String> {
    let mut stopped = vec![];
    for node in cluster.nodes() {
        let name = node.name.as_str();
        if pidfile::stop(
            &cluster.layout.agent_pid_file(name),
            Signal::SIGTERM,
            Duration::from_secs(10),
        )
        .await
        {
            stopped.push(name.to_string());
        }
    }
    stopped
}

/// Stops the local etcd member.
pub async fn stop_etcd(cluster: &Cluster) -> bool {
    etcd_local::stop(cluster).await
}

/// HA facts `pgkeel status` adds to the PostgreSQL view.
#[derive(Debug, Clone, Serialize, Default)]
pub struct HaStatus {
    /// etcd endpoints.
    pub etcd_endpoints: Vec<String>,
    /// etcd answered.
    pub etcd_ok: bool,
    /// Local etcd member PID.
    pub etcd_pid: Option<u32>,
    /// Leader key holder.
    pub leader: Option<String>,
    /// Seconds left on the leader's lease.
    pub lease_ttl_left: Option<i64>,
    /// Automatic failover paused.
    pub paused: bool,
    /// A pending switchover.
    pub switchover: Option<String>,
}

/// Adds leader, lease and agent facts to `status` (both the per-node
/// `leader`/`agent_pid` fields and a cluster-level summary).
pub async fn enrich_status(cluster: &Cluster, status: &mut ClusterStatus) -> HaStatus {
    let mut ha = HaStatus {
        etcd_endpoints: cluster.config.etcd_endpoints(),
        etcd_pid: LocalEtcd::of(cluster).and_then(|l| pidfile::alive_pid(&l.etcd_pid())),
        ..Default::default()
    };
    if let Ok(dcs) = dcs(cluster).await
        && let Ok(view) = dcs.view().await
    {
        ha.etcd_ok = true;
        ha.leader = view.leader.clone();
        ha.paused = view.config.paused;
        ha.switchover = view
            .switchover
            .as_ref()
            .map(|s| s.to.clone().unwrap_or_else(|| "any".into()));
        if let Some(lease) = view.leader_lease {
            ha.lease_ttl_left = dcs.lease_time_left(lease).await.ok().flatten();
        }
    }
    for node in &mut status.nodes {
        node.leader = Some(ha.leader.as_deref() == Some(node.name.as_str()));
        node.agent_pid = agent_pid(cluster, &node.name);
    }
    status.leader = ha.leader.clone();
    status.lease_ttl_left = ha.lease_ttl_left;
    status.paused = Some(ha.paused);
    status.etcd_ok = Some(ha.etcd_ok);
    ha
}

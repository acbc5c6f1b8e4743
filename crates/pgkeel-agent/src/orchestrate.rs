//! Starting and stopping the HA processes of a local cluster: the etcd
//! member and one agent per node, all as daemons found again by PID file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgkeel_cluster::Cluster;
use pgkeel_core::status::ClusterStatus;
use pgkeel_dcs::{ClusterView, Dcs};
use serde::Serialize;

use crate::etcd_local::{self, LocalEtcd, spawn_detached};
use crate::{AgentError, logs, pidfile};

/// How long `up` waits for the agents to agree on a leader (and again
/// for every agent to publish its state). On a loaded 2-core machine the
/// whole HA start takes 1-8 s.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Connects to the cluster's etcd.
pub async fn dcs(cluster: &Cluster) -> Result<Dcs, AgentError> {
    dcs_for(&cluster.config, &cluster.layout).await
}

/// Connects to the etcd of the cluster `c` configures, with the TLS
/// material and credentials from its secrets.
pub async fn dcs_for(
    c: &pgkeel_core::Config,
    layout: &pgkeel_cluster::Layout,
) -> Result<Dcs, AgentError> {
    let timeout = Duration::from_secs_f64(c.ha.retry_timeout.max(0.5));
    let access = crate::etcd_access::etcd_access(c, layout)?;
    Ok(Dcs::connect_with(
        &c.etcd_endpoints(),
        &c.etcd.namespace,
        &c.cluster.name,
        timeout,
        &access,
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
///
/// Fails at once if an agent it started exits (e.g. it cannot reach etcd),
/// and after [`AGENT_TIMEOUT`] otherwise; either error says which members
/// had published their state, who held the leader key, and ends with the
/// last lines of the agent logs that tell why.
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
    let mut spawned: Vec<(String, u32)> = vec![];
    for (i, name) in order.iter().enumerate() {
        if agent_pid(cluster, name).is_some() {
            continue;
        }
        cluster.ensure_node_dirs(name)?;
        let pid = spawn_detached(
            exe,
            &["agent", "--dir", &root, "--node", name],
            &cluster.layout.agent_log(name),
        )?;
        spawned.push((name.to_string(), pid));
        started.push(format!("started agent {name}"));
        if i == 0 && first.is_some() {
            await_agents(
                cluster,
                &dcs,
                &spawned,
                &format!("{name}'s agent to take the leader key"),
                |v| v.leader.as_deref() == Some(*name),
            )
            .await?;
        }
    }
    await_agents(
        cluster,
        &dcs,
        &spawned,
        "every agent to publish its state under a leader",
        |v| {
            v.leader.is_some()
                && cluster
                    .nodes()
                    .iter()
                    .all(|n| v.members.contains_key(n.name.as_str()))
        },
    )
    .await?;
    Ok(started)
}

/// True when something answers an HTTP request on `addr` within a second
/// (a process merely holding the port accepts and stays silent).
async fn answers_http(addr: &str) -> bool {
    let url = format!("http://{addr}/liveness");
    crate::http::request("GET", &url, &[], "", Duration::from_secs(1))
        .await
        .is_ok()
}

/// One line per running agent whose API does not answer: an agent whose
/// API port is taken runs HA without its API and retries the port (see
/// `api::serve`), so `up` says so instead of leaving it to the agent log.
pub async fn silent_apis(cluster: &Cluster) -> Vec<String> {
    let mut silent = vec![];
    for node in cluster.nodes() {
        let name = node.name.as_str();
        if agent_pid(cluster, name).is_none() {
            continue;
        }
        let addr = format!("{}:{}", node.host, node.api_port());
        if !answers_http(&addr).await {
            silent.push(format!(
                "the agent of node `{name}` cannot listen on {addr} for its API (port taken?); HA runs meanwhile and it retries every 2 s: see {}",
                cluster.layout.agent_log(name).display()
            ));
        }
    }
    silent
}

/// Lines of each agent log quoted in a [`HaProgress`].
const LOG_TAIL_LINES: usize = 15;

/// Polls etcd until `done` holds for the cluster's keys. Fails as soon as
/// one of the agents in `spawned` (node, PID) has exited, or after
/// [`AGENT_TIMEOUT`], with the state reached.
async fn await_agents<F>(
    cluster: &Cluster,
    dcs: &Dcs,
    spawned: &[(String, u32)],
    what: &str,
    done: F,
) -> Result<(), AgentError>
where
    F: Fn(&ClusterView) -> bool,
{
    let start = Instant::now();
    loop {
        let view = dcs.view().await.map_err(|e| e.to_string());
        if view.as_ref().is_ok_and(&done) {
            return Ok(());
        }
        // Nothing restarts an agent that `up` started: waiting on is futile.
        if let Some((node, _)) = spawned.iter().find(|(_, pid)| !pidfile::pid_alive(*pid)) {
            return Err(AgentError::AgentExited {
                node: node.clone(),
                what: what.to_string(),
                progress: Box::new(HaProgress::gather(cluster, &view, spawned, Some(node))),
            });
        }
        if start.elapsed() >= AGENT_TIMEOUT {
            return Err(AgentError::AgentsNotReady {
                what: what.to_string(),
                seconds: AGENT_TIMEOUT.as_secs(),
                progress: Box::new(HaProgress::gather(cluster, &view, spawned, None)),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How far the HA processes got, as `up` saw them when it stopped waiting:
/// the body of its timeout and agent-exit errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaProgress {
    /// Holder of the leader key (`None`: nobody, or etcd did not answer).
    pub leader: Option<String>,
    /// Nodes whose member key was in etcd.
    pub published: Vec<String>,
    /// Nodes whose member key was not.
    pub missing: Vec<String>,
    /// Nodes whose agent process was not running.
    pub not_running: Vec<String>,
    /// Why the last read of etcd failed, if it did.
    pub etcd_error: Option<String>,
    /// The logs that tell why, each with its last lines.
    pub logs: Vec<AgentLogTail>,
}

/// The end of one agent's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLogTail {
    /// Its node.
    pub node: String,
    /// The log file (`nodes/<name>/agent.log` under the data root).
    pub path: PathBuf,
    /// Its last lines, or why it could not be read.
    pub tail: Result<Vec<String>, String>,
}

impl HaProgress {
    /// Collects the state from the last read of etcd (`view`) and the
    /// agents' processes (`spawned`: node and PID of those `up` started;
    /// the others by their PID files). Quotes the log of `focus` if given,
    /// else of every node that did not publish its state, else (no leader)
    /// of every node.
    pub fn gather(
        cluster: &Cluster,
        view: &Result<ClusterView, String>,
        spawned: &[(String, u32)],
        focus: Option<&str>,
    ) -> Self {
        let mut progress = HaProgress::default();
        match view {
            Ok(v) => progress.leader = v.leader.clone(),
            Err(e) => progress.etcd_error = Some(e.clone()),
        }
        for node in cluster.nodes() {
            let name = node.name.as_str();
            let published = view.as_ref().is_ok_and(|v| v.members.contains_key(name));
            if published {
                progress.published.push(name.to_string());
            } else {
                progress.missing.push(name.to_string());
            }
            let running = match spawned.iter().find(|(n, _)| n == name) {
                Some((_, pid)) => pidfile::pid_alive(*pid),
                None => agent_pid(cluster, name).is_some(),
            };
            if !running {
                progress.not_running.push(name.to_string());
            }
        }
        let quoted: Vec<String> = match focus {
            Some(node) => vec![node.to_string()],
            None if !progress.missing.is_empty() => progress.missing.clone(),
            None => cluster.nodes().iter().map(|n| n.name.to_string()).collect(),
        };
        progress.logs = quoted
            .into_iter()
            .map(|node| {
                let path = cluster.layout.agent_log(&node);
                let tail = logs::tail_lines(&path, LOG_TAIL_LINES).map_err(|e| e.to_string());
                AgentLogTail { node, path, tail }
            })
            .collect();
        progress
    }
}

impl std::fmt::Display for HaProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        };
        match (&self.etcd_error, &self.leader) {
            (Some(e), _) => write!(f, "etcd did not answer ({e})")?,
            (None, Some(leader)) => write!(f, "leader: {leader}")?,
            (None, None) => write!(f, "leader: none")?,
        }
        write!(
            f,
            "; published their state: {}; not published: {}",
            list(&self.published),
            list(&self.missing)
        )?;
        if !self.not_running.is_empty() {
            write!(f, "; agent not running: {}", list(&self.not_running))?;
        }
        for log in &self.logs {
            match &log.tail {
                Ok(lines) if lines.is_empty() => {
                    write!(f, "\n--- {} is empty", log.path.display())?;
                }
                Ok(lines) => {
                    write!(
                        f,
                        "\n--- last lines of {} ({}):",
                        log.path.display(),
                        log.node
                    )?;
                    for line in lines {
                        write!(f, "\n  {line}")?;
                    }
                }
                Err(e) => write!(f, "\n--- cannot read {}: {e}", log.path.display())?,
            }
        }
        Ok(())
    }
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
        etcd_pid: LocalEtcd::first(cluster).and_then(|l| pidfile::alive_pid(&l.etcd_pid())),
        ..Default::default()
    };
    if let Ok(dcs) = dcs(cluster).await
        && let Ok(view) = dcs.view().await
    {
        ha.etcd_ok = true;
        ha.leader = view.leader.clone();
        ha.paused = view.config.paused;
        status.following = crate::runner::following(&cluster.config, &view)
            .map(|s| format!("{}:{}", s.host, s.port));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_names_members_leader_and_quotes_logs() {
        let progress = HaProgress {
            leader: Some("primary".into()),
            published: vec!["primary".into(), "replica2".into()],
            missing: vec!["replica1".into()],
            not_running: vec!["replica1".into()],
            etcd_error: None,
            logs: vec![AgentLogTail {
                node: "replica1".into(),
                path: PathBuf::from("/d/nodes/replica1/agent.log"),
                tail: Ok(vec!["error: cannot listen".into()]),
            }],
        };
        let text = progress.to_string();
        assert_eq!(
            text,
            "leader: primary; published their state: primary, replica2; \
             not published: replica1; agent not running: replica1\n\
             --- last lines of /d/nodes/replica1/agent.log (replica1):\n  error: cannot listen"
        );
    }

    #[test]
    fn progress_without_etcd_says_so() {
        let progress = HaProgress {
            missing: vec!["a".into()],
            etcd_error: Some("connection refused".into()),
            logs: vec![AgentLogTail {
                node: "a".into(),
                path: PathBuf::from("/d/nodes/a/agent.log"),
                tail: Err("No such file".into()),
            }],
            ..Default::default()
        };
        assert_eq!(
            progress.to_string(),
            "etcd did not answer (connection refused); published their state: none; \
             not published: a\n--- cannot read /d/nodes/a/agent.log: No such file"
        );
    }
}

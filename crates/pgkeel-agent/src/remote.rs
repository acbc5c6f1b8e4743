//! The cluster as any host sees it with only the config and the secrets:
//! its keys in etcd and its agents' REST APIs, no data directory. What
//! `status`, `switchover`, `failover`, `pause`, `resume` and `url` use on
//! a host that runs none (or not all) of the nodes, such as an operator's
//! laptop.

use std::time::Duration;

use futures_util::future::join_all;
use pgkeel_cluster::layout::Secret;
use pgkeel_cluster::status::{NodeReport, assemble_status, proxy_address};
use pgkeel_cluster::{Cluster, ClusterError, Layout};
use pgkeel_core::status::{ClusterStatus, NodeStatus, Role};
use pgkeel_core::{Config, NodeConfig};
use pgkeel_dcs::{ClusterView, Dcs};
use pgkeel_pg::probe::{NodeConn, connect_tcp};
use pgkeel_pg::secrets::read_password;

use crate::AgentError;
use crate::orchestrate::dcs_for;

/// How long one agent may take to answer `GET /status`.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);

/// A cluster reached over the network.
#[derive(Debug, Clone)]
pub struct RemoteCluster {
    /// The shared configuration.
    pub config: Config,
    /// Its paths (only the secrets matter here).
    pub layout: Layout,
    /// The superuser role.
    pub superuser: String,
}

impl RemoteCluster {
    /// From a shared config (its relative paths already anchored).
    pub fn new(config: Config) -> Result<Self, ClusterError> {
        let layout = Cluster::layout_of(&config)?;
        let superuser = config
            .roles
            .superuser
            .clone()
            .unwrap_or_else(|| "postgres".into());
        Ok(RemoteCluster {
            config,
            layout,
            superuser,
        })
    }

    /// The same view of a cluster whose data root is on this host.
    pub fn of(cluster: &Cluster) -> Self {
        RemoteCluster {
            config: cluster.config.clone(),
            layout: cluster.layout.clone(),
            superuser: cluster.superuser.clone(),
        }
    }

    /// Looks up a node by name, with an error listing the valid names.
    pub fn node(&self, name: &str) -> Result<&NodeConfig, ClusterError> {
        pgkeel_cluster::context::find_node(&self.config, name)
    }

    /// A superuser session on the primary `status` names: over its socket
    /// when `local` (this host holds every node), else over TCP with the
    /// superuser's password (this host must be in `access.networks`).
    pub async fn connect_primary(
        &self,
        local: Option<&Cluster>,
        status: &ClusterStatus,
    ) -> Result<(NodeConn, NodeConfig), AgentError> {
        let primary = status.primary().ok_or_else(|| {
            AgentError::Refused("no node runs as primary: `pgkeel status` shows why".into())
        })?;
        let node = self.node(&primary.name)?.clone();
        let conn = match local {
            Some(cluster) => cluster.connect(&node).await?,
            None => {
                let password = read_password(&self.layout.password_file(Secret::Superuser))?;
                connect_tcp(
                    node.name.as_str(),
                    &node.host,
                    node.port,
                    &self.superuser,
                    &password,
                    Duration::from_secs(5),
                )
                .await
                .map_err(|e| {
                    AgentError::Refused(format!(
                        "cannot reach the primary {} as {}: {e}; run this on a host in `access.networks`",
                        node.name, self.superuser
                    ))
                })?
            }
        };
        Ok((conn, node))
    }

    /// etcd, through every endpoint.
    pub async fn dcs(&self) -> Result<Dcs, AgentError> {
        dcs_for(&self.config, &self.layout).await
    }

    /// Every node as its agent reports it (`GET /status`), assembled like
    /// a local `status`, with the leader, lease and pause from etcd. A node
    /// whose agent does not answer shows why, and what etcd last heard
    /// from it.
    pub async fn status(&self) -> ClusterStatus {
        let reports = join_all(self.config.nodes.iter().map(fetch_report)).await;
        let mut status = assemble_status(&self.config, &reports, proxy_address(&self.config));
        let view = match self.dcs().await {
            Ok(dcs) => dcs.view().await.map(|v| (dcs, v)).ok(),
            Err(_) => None,
        };
        status.etcd_ok = Some(view.is_some());
        if let Some((dcs, view)) = view {
            apply_view(&mut status, &view);
            status.following = crate::runner::following(&self.config, &view)
                .map(|s| format!("{}:{}", s.host, s.port));
            if let Some(lease) = view.leader_lease {
                status.lease_ttl_left = dcs.lease_time_left(lease).await.ok().flatten();
            }
        }
        status
    }
}

/// One node's report from its agent, or an entry saying why there is none.
async fn fetch_report(node: &NodeConfig) -> NodeReport {
    let url = format!("http://{}:{}/status", url_host(&node.host), node.api_port());
    let answer = crate::http::request("GET", &url, &[], "", AGENT_TIMEOUT).await;
    let error = match answer {
        Ok((200, body)) => match serde_json::from_str::<NodeReport>(&body) {
            Ok(report) => return report,
            Err(e) => format!("the agent at {url} sent an unreadable report: {e}"),
        },
        Ok((code, body)) => format!("the agent at {url} answered {code}: {}", body.trim()),
        Err(e) => format!("no answer from the agent: {e}"),
    };
    NodeReport {
        status: NodeStatus {
            name: node.name.to_string(),
            host: node.host.clone(),
            port: node.port,
            error: Some(error),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn url_host(host: &str) -> String {
    pgkeel_core::config::url_host(host)
}

/// The leader, pause and agents from etcd; for a node whose agent did not
/// answer, what it last published.
pub fn apply_view(status: &mut ClusterStatus, view: &ClusterView) {
    for node in &mut status.nodes {
        node.leader = Some(view.leader.as_deref() == Some(node.name.as_str()));
        let Some(member) = view.members.get(&node.name) else {
            continue;
        };
        node.agent_pid = Some(member.agent_pid);
        if node.error.is_some() && node.role.is_none() {
            node.running = member.running;
            node.role = match member.role.as_str() {
                "primary" => Some(Role::Primary),
                "replica" => Some(Role::Replica),
                _ => None,
            };
            node.timeline = member.timeline;
            node.lsn = member.lsn.or(member.replayed_lsn);
            node.received_lsn = member.received_lsn;
            node.replayed_lsn = member.replayed_lsn;
            node.pid = member.pg_pid;
        }
    }
    status.leader = view.leader.clone();
    status.paused = Some(view.config.paused);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgkeel_dcs::MemberState;

    #[test]
    fn a_silent_agent_shows_what_etcd_last_heard() {
        let mut status = ClusterStatus {
            cluster: "c".into(),
            mode: "quorum".into(),
            synchronous_standby_names: None,
            nodes: vec![NodeStatus {
                name: "pg2".into(),
                error: Some("no answer from the agent".into()),
                ..Default::default()
            }],
            slots: vec![],
            leader: None,
            lease_ttl_left: None,
            paused: None,
            following: None,
            etcd_ok: Some(true),
            proxy: None,
        };
        let mut view = ClusterView {
            leader: Some("pg1".into()),
            ..Default::default()
        };
        view.members.insert(
            "pg2".into(),
            MemberState {
                name: "pg2".into(),
                role: "replica".into(),
                running: true,
                agent_pid: 42,
                ..Default::default()
            },
        );
        apply_view(&mut status, &view);
        let node = &status.nodes[0];
        assert_eq!(node.role, Some(Role::Replica));
        assert!(node.running);
        assert_eq!(node.agent_pid, Some(42));
        assert_eq!(node.leader, Some(false));
        assert_eq!(status.leader.as_deref(), Some("pg1"));
        assert!(node.error.is_some(), "the error stays visible");
    }
}

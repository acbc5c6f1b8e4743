//! What the agent sees of its own node each loop.

use pgkeel_cluster::Cluster;
use pgkeel_core::mode::parse_standby_names;
use pgkeel_core::{Lsn, NodeConfig};
use pgkeel_dcs::MemberState;
use pgkeel_ha::{DataState, LocalPg};
use pgkeel_pg::pgctl::{is_data_dir, is_standby, running_pid};

/// The local node right now.
#[derive(Debug, Clone)]
pub struct Observation {
    /// PostgreSQL as the decision sees it.
    pub pg: LocalPg,
    /// The data directory.
    pub data: DataState,
    /// The postmaster runs but does not answer yet (starting, recovering).
    pub busy: bool,
    /// The state to publish.
    pub member: MemberState,
}

/// Looks at the data directory and asks the running server.
pub async fn observe(cluster: &Cluster, node: &NodeConfig) -> Observation {
    let name = node.name.as_str();
    let data_dir = cluster.layout.data_dir(name);
    let data = if !is_data_dir(&data_dir) {
        DataState::Missing
    } else if is_standby(&data_dir) {
        DataState::Standby
    } else {
        DataState::Primary
    };
    let pid = running_pid(&data_dir);
    let mut member = MemberState {
        name: name.to_string(),
        role: "stopped".into(),
        host: node.host.clone(),
        port: node.port,
        api_url: format!("http://{}:{}", node.host, node.api_port()),
        nofailover: node.nofailover,
        agent_pid: std::process::id(),
        pg_pid: pid,
        upstream: cluster.recorded_upstream(name),
        ..Default::default()
    };
    let mut obs = Observation {
        pg: LocalPg::Stopped,
        data,
        busy: pid.is_some(),
        member: member.clone(),
    };
    if pid.is_none() {
        return obs;
    }
    let Ok(conn) = cluster.connect(node).await else {
        return obs;
    };
    let Ok(probe) = conn.probe().await else {
        return obs;
    };
    obs.busy = false;
    member.running = true;
    member.timeline = probe.timeline;
    if probe.in_recovery {
        let receiver = conn.wal_receiver().await.ok().flatten();
        let streaming = receiver.as_ref().is_some_and(|r| r.status == "streaming");
        member.role = "replica".into();
        member.received_lsn = probe.receive_lsn;
        member.replayed_lsn = probe.replay_lsn;
        member.lsn = probe.replay_lsn;
        member.streaming = streaming;
        obs.pg = LocalPg::Running {
            in_recovery: true,
            lsn: probe.receive_lsn.or(probe.replay_lsn),
            timeline: probe.timeline,
            streaming,
            healthy_standbys: vec![],
            sync_standbys: vec![],
        };
    } else {
        let rows = conn.replication().await.unwrap_or_default();
        let healthy: Vec<(String, Option<Lsn>)> = rows
            .iter()
            .filter(|r| r.state.as_deref() == Some("streaming"))
            .map(|r| (r.application_name.clone(), r.flush_lsn))
            .collect();
        let (sync_standbys, _) = parse_standby_names(&probe.synchronous_standby_names);
        member.role = "primary".into();
        member.lsn = probe.current_lsn;
        obs.pg = LocalPg::Running {
            in_recovery: false,
            lsn: probe.current_lsn,
            timeline: probe.timeline,
            streaming: false,
            healthy_standbys: healthy,
            sync_standbys,
        };
    }
    obs.member = member;
    obs
}

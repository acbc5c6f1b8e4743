//! `pgkeel up`: from nothing (or from a stopped or half-built cluster) to a
//! primary with every replica streaming in the configured mode.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use pgkeel_core::NodeConfig;
use pgkeel_pg::pgctl::{self, is_data_dir, is_standby, running_pid};

use crate::preflight::{check_new_cluster, check_ports};
use crate::render::NodeRole;
use crate::replica::ReplicaSource;
use crate::{Cluster, ClusterError, Progress};

/// Longest wait for replicas to reach the streaming state.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What `up` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpOutcome {
    /// A new cluster was created.
    Created,
    /// Everything was already running; nothing was changed.
    AlreadyRunning,
    /// The cluster existed; these steps brought it back (started nodes,
    /// re-cloned replicas).
    Resumed(Vec<String>),
}

impl UpOutcome {
    /// The outcome once `action` (a step beyond PostgreSQL: agents, the
    /// proxy) was also done.
    pub fn with_action(self, action: String) -> UpOutcome {
        match self {
            UpOutcome::Created => UpOutcome::Created,
            UpOutcome::AlreadyRunning => UpOutcome::Resumed(vec![action]),
            UpOutcome::Resumed(mut done) => {
                done.push(action);
                UpOutcome::Resumed(done)
            }
        }
    }
}

/// The checks made before `up` touches anything: a new cluster's data
/// root, user and ports; an existing one's stopped nodes' ports. Returns
/// whether the cluster is new.
pub fn preflight(cluster: &Cluster) -> Result<bool, ClusterError> {
    let layout = &cluster.layout;
    let created = !layout.cluster_file().exists();
    if created {
        check_new_cluster(cluster)?;
    } else {
        let stopped = cluster
            .nodes()
            .iter()
            .filter(|n| running_pid(&layout.data_dir(n.name.as_str())).is_none());
        check_ports(stopped)?;
    }
    Ok(created)
}

/// Brings `cluster` up without agents (`pgkeel up --no-ha`) and returns
/// only once every replica streams. With agents, `pgkeel up` starts them
/// instead and they do the same work (`pgkeel_agent::bootstrap`).
pub async fn up(cluster: &Cluster, progress: Arc<dyn Progress>) -> Result<UpOutcome, ClusterError> {
    let layout = &cluster.layout;
    let created = preflight(cluster)?;
    let mut actions = vec![];
    cluster.ensure_skeleton(true)?;
    let primary = current_primary(cluster)?;
    let pname = primary.name.as_str();

    if !is_data_dir(&layout.data_dir(pname)) {
        progress.step(pname, "initdb");
        init_primary(cluster, primary).await?;
        actions.push(format!("initialised {pname}"));
    }
    if start_if_stopped(cluster, primary, progress.as_ref()).await? {
        actions.push(format!("started {pname}"));
    }
    progress.step(pname, "roles, database and slots");
    cluster.prepare_primary(primary).await?;

    // Replicas restored from the repository need the primary's newest WAL
    // archived; without a repository (or with a failing archive) they are
    // cloned.
    let from_repository = cluster.backup_engine()?.is_some()
        && cluster
            .nodes()
            .iter()
            .any(|n| !is_data_dir(&layout.data_dir(n.name.as_str())))
        && cluster.flush_archive(primary).await.is_ok();
    let standbys: Vec<&NodeConfig> = cluster
        .nodes()
        .iter()
        .filter(|n| n.name != primary.name)
        .collect();
    let results = try_join_all(standbys.iter().map(|node| {
        let progress = progress.clone();
        async move {
            let mut done = vec![];
            match cluster
                .ensure_replica_data(node, primary, from_repository, progress.clone())
                .await?
            {
                Some(ReplicaSource::Primary) => done.push(format!("cloned {}", node.name)),
                Some(ReplicaSource::Repository { label, .. }) => {
                    done.push(format!("restored {} from backup {label}", node.name))
                }
                None => {}
            }
            if start_if_stopped(cluster, node, progress.as_ref()).await? {
                done.push(format!("started {}", node.name));
            }
            Ok::<_, ClusterError>(done)
        }
    }))
    .await?;
    actions.extend(results.into_iter().flatten());

    progress.step(pname, "waiting for replicas to stream");
    if apply_sync_names(cluster, primary).await? {
        actions.push(format!("set synchronous_standby_names on {pname}"));
    }
    cluster.wait_replication(primary, READY_TIMEOUT).await?;
    Ok(if created {
        UpOutcome::Created
    } else if actions.is_empty() {
        UpOutcome::AlreadyRunning
    } else {
        UpOutcome::Resumed(actions)
    })
}

/// The node that holds primary data: the only one whose data directory is
/// complete and not marked as a standby; the first configured node when no
/// node has data yet.
pub fn current_primary(cluster: &Cluster) -> Result<&NodeConfig, ClusterError> {
    let layout = &cluster.layout;
    let with_data: Vec<&NodeConfig> = cluster
        .nodes()
        .iter()
        .filter(|n| is_data_dir(&layout.data_dir(n.name.as_str())))
        .collect();
    let primaries: Vec<&NodeConfig> = with_data
        .iter()
        .copied()
        .filter(|n| !is_standby(&layout.data_dir(n.name.as_str())))
        .collect();
    match (primaries.as_slice(), with_data.is_empty()) {
        ([one], _) => Ok(one),
        ([], true) => cluster.config.bootstrap_primary().ok_or_else(|| ClusterError::NoPrimary {
            detail: "the configuration lists no nodes".into(),
        }),
        ([], false) => Err(ClusterError::NoPrimary {
            detail: "every node with data is a standby (the primary's data directory is missing); restore it, or `pgkeel destroy --yes` and start over".into(),
        }),
        (many, _) => Err(ClusterError::NoPrimary {
            detail: format!(
                "{} all hold primary data; pgkeel will not start two primaries: turn all but one into standbys or destroy the cluster",
                many.iter().map(|n| n.name.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// initdb, configure, then move into place.
async fn init_primary(cluster: &Cluster, node: &NodeConfig) -> Result<(), ClusterError> {
    cluster.initdb_new(node).await?;
    cluster.move_initdb_into_place(node)
}

/// Starts `node` unless it runs; returns whether it was started.
async fn start_if_stopped(
    cluster: &Cluster,
    node: &NodeConfig,
    progress: &dyn Progress,
) -> Result<bool, ClusterError> {
    let name = node.name.as_str();
    let data = cluster.layout.data_dir(name);
    if running_pid(&data).is_some() {
        return Ok(false);
    }
    progress.step(name, "starting");
    cluster.ensure_node_dirs(name)?;
    pgctl::start(&cluster.runner, name, &data, &cluster.layout.log_file(name)).await?;
    Ok(true)
}

/// Makes the primary's `synchronous_standby_names` match the mode. Done
/// after the replicas exist: setting it earlier would block the bootstrap's
/// own commits. Returns whether it changed anything.
async fn apply_sync_names(cluster: &Cluster, primary: &NodeConfig) -> Result<bool, ClusterError> {
    let wanted = cluster.sync_names_for(primary);
    let conn = cluster.connect(primary).await?;
    if conn.setting("synchronous_standby_names").await? == wanted {
        return Ok(false);
    }
    let data = cluster.layout.data_dir(primary.name.as_str());
    cluster.write_node_config(
        primary,
        &data,
        NodeRole::Primary {
            sync_names: &wanted,
        },
    )?;
    conn.reload().await?;
    Ok(true)
}

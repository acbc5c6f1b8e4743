//! Bringing this node into the cluster before the HA loop runs: the steps
//! `pgkeel_ha::bootstrap_step` decides from the `initialize` key and the
//! node's data directory, carried out one at a time and decided again after
//! each, so an agent killed anywhere resumes or starts over when it is
//! started again.

use std::path::PathBuf;
use std::time::Duration;

use pgkeel_cluster::Cluster;
use pgkeel_core::{ClusterIdentity, NodeConfig};
use pgkeel_dcs::Dcs;
use pgkeel_ha::{BootstrapStep, LocalData, bootstrap_step};
use pgkeel_pg::control::read_system_identifier;
use pgkeel_pg::pgctl::{self, is_data_dir, running_pid};

use crate::AgentError;
use crate::execute::tracing_line;
use crate::shared::Shared;

/// What the data directory of `node` holds, identity-wise.
pub fn local_data(cluster: &Cluster, node: &str) -> Result<LocalData, AgentError> {
    let data = cluster.layout.data_dir(node);
    let new = cluster.layout.initdb_dir(node);
    let identifier = |dir: &PathBuf| -> Result<u64, AgentError> {
        read_system_identifier(dir)?.ok_or_else(|| {
            AgentError::Refused(format!(
                "{} has no readable system identifier in global/pg_control: it is damaged; move it away so the node is cloned again",
                dir.display()
            ))
        })
    };
    Ok(if is_data_dir(&data) {
        LocalData::Complete {
            system_id: identifier(&data)?,
        }
    } else if is_data_dir(&new) {
        LocalData::Initialised {
            system_id: identifier(&new)?,
        }
    } else {
        LocalData::Empty
    })
}

/// How often a node waiting for another's initdb (or for etcd) looks
/// again: a clone should start as soon as the first node is done.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Runs bootstrap steps until the node belongs to the cluster (or will be
/// cloned into it by the HA loop). Fails only on a refusal (data of
/// another cluster) or a stop signal; etcd and PostgreSQL errors are
/// logged and the step is decided again.
pub async fn bootstrap(
    cluster: &Cluster,
    node: &NodeConfig,
    dcs: &Dcs,
    shared: &Shared,
    loop_wait: Duration,
) -> Result<(), AgentError> {
    let me = node.name.as_str();
    let mut last = String::new();
    loop {
        let step = next_step(cluster, node, dcs).await;
        let (step, revision) = match step {
            Ok(pair) => pair,
            Err(e) => {
                tracing_line(&format!("{me}: bootstrap: {e}; retrying"));
                tokio::time::sleep(WAIT_POLL.min(loop_wait)).await;
                continue;
            }
        };
        let summary = format!("{step:?}");
        if summary != last {
            tracing_line(&format!("{me}: bootstrap: {summary}"));
            last = summary;
        }
        let result = match step {
            BootstrapStep::Proceed => return Ok(()),
            BootstrapStep::Refuse(why) => {
                return Err(AgentError::ForeignData {
                    node: me.to_string(),
                    dir: cluster.layout.data_dir(me),
                    why,
                });
            }
            BootstrapStep::Wait(_) => {
                tokio::time::sleep(WAIT_POLL.min(loop_wait)).await;
                Ok(())
            }
            step => run_step(cluster, node, dcs, shared, step, revision).await,
        };
        if let Err(e) = result {
            if e.needs_operator() {
                return Err(e);
            }
            tracing_line(&format!("{me}: bootstrap step failed: {e}; deciding again"));
            tokio::time::sleep(loop_wait).await;
        }
    }
}

async fn next_step(
    cluster: &Cluster,
    node: &NodeConfig,
    dcs: &Dcs,
) -> Result<(BootstrapStep, Option<i64>), AgentError> {
    let view = dcs.view().await?;
    let local = local_data(cluster, node.name.as_str())?;
    let step = bootstrap_step(
        node.name.as_str(),
        node.nofailover,
        view.initialize.as_ref(),
        local,
    );
    Ok((step, view.initialize_revision))
}

/// Carries out one step. A lost compare-and-swap is not an error: the
/// next decision sees what won.
async fn run_step(
    cluster: &Cluster,
    node: &NodeConfig,
    dcs: &Dcs,
    shared: &Shared,
    step: BootstrapStep,
    revision: Option<i64>,
) -> Result<(), AgentError> {
    let me = node.name.as_str();
    let revision =
        || revision.ok_or_else(|| AgentError::Refused("the initialize key vanished".into()));
    match step {
        BootstrapStep::Claim => {
            let lease = shared.valid_lease().ok_or_else(|| {
                AgentError::Refused(
                    "no lease from etcd yet to claim the initialisation with".into(),
                )
            })?;
            if dcs.claim_initialize(me, lease).await? {
                tracing_line(&format!(
                    "{me}: won the initialisation race: running initdb"
                ));
            }
        }
        // A standby cluster's first data is a copy of the cluster it follows.
        BootstrapStep::InitDb if cluster.config.standby_cluster.is_some() => {
            cluster.clone_source_new(node).await?
        }
        BootstrapStep::InitDb => cluster.initdb_new(node).await?,
        BootstrapStep::Record { system_id } => {
            let identity = ClusterIdentity {
                node: me.to_string(),
                system_id: Some(system_id),
                done: false,
            };
            dcs.update_identity(revision()?, &identity).await?;
        }
        BootstrapStep::MoveIntoPlace => cluster.move_initdb_into_place(node)?,
        BootstrapStep::Finish => {
            let data = cluster.layout.data_dir(me);
            if running_pid(&data).is_none() {
                pgctl::start(&cluster.runner, me, &data, &cluster.layout.log_file(me)).await?;
            }
            // A standby cluster's copy already has the roles, and is
            // read-only.
            if cluster.config.standby_cluster.is_none() {
                cluster.prepare_primary(node).await?;
            }
            let view = dcs.view().await?;
            if let Some(mut identity) = view.initialize.filter(|i| i.node == me) {
                identity.done = true;
                dcs.update_identity(revision()?, &identity).await?;
            }
        }
        BootstrapStep::Reset => {
            cluster.discard_incomplete(me)?;
            dcs.reset_identity(revision()?).await?;
        }
        BootstrapStep::Adopt { system_id } => {
            let identity = ClusterIdentity {
                node: me.to_string(),
                system_id: Some(system_id),
                done: true,
            };
            if dcs.adopt_identity(&identity).await? {
                tracing_line(&format!(
                    "{me}: recorded the cluster's system identifier {system_id} from this node's data"
                ));
            }
        }
        BootstrapStep::Proceed | BootstrapStep::Wait(_) | BootstrapStep::Refuse(_) => {}
    }
    Ok(())
}

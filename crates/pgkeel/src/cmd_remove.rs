//! `pgkeel remove NODE`: the end of a member that left the configuration:
//! its replication slot on the primary (which would otherwise keep WAL for
//! it) and its keys in etcd.

use anyhow::{Result, bail};
use pgkeel_agent::remote::RemoteCluster;
use pgkeel_cluster::Cluster;
use pgkeel_core::NodeName;
use pgkeel_core::status::ClusterStatus;

/// Removes `name`, which the configuration must no longer list and whose
/// agent must have stopped. `local`: the cluster when this host holds
/// every node (the primary is reached over its socket).
pub async fn remove(
    remote: &RemoteCluster,
    local: Option<&Cluster>,
    status: &ClusterStatus,
    name: &str,
) -> Result<()> {
    NodeName::new(name).map_err(|e| anyhow::anyhow!("`{name}`: {e}"))?;
    if remote.config.node(name).is_some() {
        bail!(
            "`{name}` is still a [[nodes]] entry of the configuration: remove it there on every host and restart their agents one at a time (PostgreSQL keeps running; the leader then stops naming it a synchronous standby), then run `pgkeel remove {name}` again"
        );
    }
    let dcs = remote.dcs().await?;
    let view = dcs.view().await?;
    if view.leader.as_deref() == Some(name) {
        bail!("`{name}` holds the leader key: `pgkeel switchover` to another node first");
    }
    if view.members.contains_key(name) {
        bail!(
            "`{name}`'s agent still runs (its member key is in etcd): stop it, and its PostgreSQL, on its host first"
        );
    }
    let (conn, node) = remote.connect_primary(local, status).await?;
    let slot = conn.slots().await?.into_iter().find(|s| s.name == name);
    match slot {
        Some(s) if s.active => bail!(
            "`{name}` still streams from {} through its slot: stop its PostgreSQL first",
            node.name
        ),
        Some(_) => {
            conn.drop_slot(name).await?;
            say!("dropped the replication slot `{name}` on {}", node.name);
        }
        None => say!("{} has no slot `{name}`", node.name),
    }
    dcs.delete_member(name).await?;
    if view
        .sync
        .as_ref()
        .is_some_and(|s| s.standbys.iter().any(|n| n == name))
    {
        say!(
            "the published synchronous set still names `{name}`: the leader narrows it once its agent runs with the new configuration"
        );
    }
    say!(
        "`{name}` removed from cluster `{}`",
        remote.config.cluster.name
    );
    Ok(())
}

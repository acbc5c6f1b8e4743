//! How an agent brings its node into the cluster before the HA loop runs:
//! a pure function of the `initialize` key and the node's data directory.
//!
//! The first agent to find no identity in etcd claims the key (on its
//! lease), runs initdb into a scratch directory, records the new system
//! identifier (the key becomes persistent), moves the data into place,
//! starts it as primary with pgkeel's roles and database, and marks the
//! identity done. Every other agent waits for `done` and then clones from
//! the leader in the HA loop. Each step can be interrupted (the agent
//! killed) and is decided again from what etcd and the disk hold, so a
//! restarted agent resumes, or starts over when nothing of its work
//! survived, and there is never a second initdb'd cluster: an identifier
//! is recorded only by compare-and-swap on the claimer's own claim.

use pgkeel_core::ClusterIdentity;

/// What the node's data directory holds, as far as the cluster's identity
/// is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalData {
    /// No data (or only an interrupted copy, which is discarded).
    Empty,
    /// A finished, configured initdb waiting for its identifier to be
    /// recorded before it is moved into place (`data.new`).
    Initialised {
        /// Its system identifier.
        system_id: u64,
    },
    /// A complete data directory.
    Complete {
        /// Its system identifier.
        system_id: u64,
    },
}

/// What the agent does next to bring its node into the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapStep {
    /// The node belongs to the cluster (or will be cloned into it by the HA
    /// loop): bootstrap is over.
    Proceed,
    /// Nobody initialised the cluster: claim the `initialize` key.
    Claim,
    /// This node holds the claim: run initdb (into a scratch directory,
    /// discarding any earlier attempt) and configure it.
    InitDb,
    /// Record the new cluster's identifier on this node's claim.
    Record {
        /// The identifier initdb chose.
        system_id: u64,
    },
    /// The identifier is recorded: move the initialised data into place.
    MoveIntoPlace,
    /// Start the new primary, create pgkeel's roles and database, and mark
    /// the identity done so the others clone.
    Finish,
    /// This node's recorded initialisation is lost (its data is gone and
    /// nobody cloned it): delete the claim and start over.
    Reset,
    /// Existing data and no identity in etcd (a cluster created before, or
    /// an etcd started afresh): record the data's identifier.
    Adopt {
        /// The identifier of the data.
        system_id: u64,
    },
    /// Nothing to do yet.
    Wait(String),
    /// The data directory belongs to another cluster: stop, touching
    /// nothing.
    Refuse(String),
}

/// Decides the next bootstrap step of node `me`.
pub fn bootstrap_step(
    me: &str,
    nofailover: bool,
    identity: Option<&ClusterIdentity>,
    local: LocalData,
) -> BootstrapStep {
    let Some(id) = identity else {
        return match local {
            LocalData::Complete { system_id } => BootstrapStep::Adopt { system_id },
            _ if nofailover => BootstrapStep::Wait(
                "nofailover: waiting for another member to initialise the cluster".into(),
            ),
            _ => BootstrapStep::Claim,
        };
    };
    let mine = id.node == me;
    match local {
        LocalData::Complete { system_id } => match id.system_id {
            Some(recorded) if recorded != system_id => BootstrapStep::Refuse(format!(
                "its data directory holds a cluster with system identifier {system_id}, but the cluster in etcd (initialised by `{}`) has {recorded}: it belongs to another cluster",
                id.node
            )),
            Some(_) if mine && !id.done => BootstrapStep::Finish,
            Some(_) => BootstrapStep::Proceed,
            None if mine => BootstrapStep::Record { system_id },
            None => BootstrapStep::Wait(format!(
                "`{}` is initialising the cluster while this node holds data of its own (system identifier {system_id}); it is refused if `{}` records another identifier",
                id.node, id.node
            )),
        },
        LocalData::Initialised { system_id } if mine && !id.done => match id.system_id {
            None => BootstrapStep::Record { system_id },
            Some(recorded) if recorded == system_id => BootstrapStep::MoveIntoPlace,
            Some(_) => BootstrapStep::Reset,
        },
        LocalData::Initialised { .. } | LocalData::Empty if id.done => BootstrapStep::Proceed,
        LocalData::Initialised { .. } | LocalData::Empty if !mine => BootstrapStep::Wait(format!(
            "`{}` is initialising the cluster; this node clones from the leader once it is done",
            id.node
        )),
        LocalData::Initialised { .. } | LocalData::Empty => match id.system_id {
            None => BootstrapStep::InitDb,
            Some(_) => BootstrapStep::Reset,
        },
    }
}

#[cfg(test)]
mod tests;

//! Agent errors.

use pgkeel_cluster::ClusterError;
use pgkeel_dcs::DcsError;
use pgkeel_pg::PgError;

use crate::orchestrate::HaProgress;

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// etcd.
    #[error(transparent)]
    Dcs(#[from] DcsError),
    /// PostgreSQL.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// Cluster files and orchestration.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A process could not be started or stopped.
    #[error("cannot {action}: {detail}")]
    Process {
        /// What was being done.
        action: String,
        /// Why it failed.
        detail: String,
    },
    /// Waiting ran out of time.
    #[error("timed out after {seconds}s waiting for {what}{hint}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Seconds.
        seconds: u64,
        /// What to look at.
        hint: String,
    },
    /// `up` gave up waiting for the agents: says how far they got (leader,
    /// which members published their state) and ends with the tails of
    /// the relevant agents' logs.
    #[error("timed out after {seconds}s waiting for {what}: {progress}")]
    AgentsNotReady {
        /// What was awaited.
        what: String,
        /// Seconds waited.
        seconds: u64,
        /// The state of etcd and the agents when it gave up.
        progress: Box<HaProgress>,
    },
    /// An agent that `up` started exited while `up` waited for it.
    #[error("the agent of node `{node}` exited while `up` waited for {what}: {progress}")]
    AgentExited {
        /// Its node.
        node: String,
        /// What was awaited.
        what: String,
        /// The state of etcd and the agents, with the tail of its log.
        progress: Box<HaProgress>,
    },
    /// The node's data belongs to another cluster: the agent stops and
    /// touches nothing.
    #[error(
        "node `{node}`: {dir}: {why}. Nothing was changed.\nfix: if this node should join this cluster, move that directory away (the agent then clones it from the leader); if it holds the cluster you meant, point `cluster.name` / [etcd] at that cluster"
    )]
    ForeignData {
        /// The node.
        node: String,
        /// Its data directory.
        dir: std::path::PathBuf,
        /// Which identifiers differ.
        why: String,
    },
    /// An agent's action keeps failing.
    #[error(
        "node `{node}` cannot be brought up: its agent failed {failures} times in a row: {error}\nsee {log}; the agents keep retrying: fix the cause and run `pgkeel up` again (or `pgkeel down`)"
    )]
    MemberFailing {
        /// The node.
        node: String,
        /// Loops in a row that failed.
        failures: u32,
        /// The last error.
        error: String,
        /// Its agent's log.
        log: std::path::PathBuf,
    },
    /// A request that cannot be honoured.
    #[error("{0}")]
    Refused(String),
}

impl AgentError {
    /// Whether retrying cannot help until the operator acts (the backup
    /// repository belongs to another cluster): the agent stops with the
    /// error instead of looping on it.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            AgentError::Cluster(ClusterError::Backup(
                pgkeel_backup::BackupError::ForeignStanza { .. }
            ))
        )
    }
}

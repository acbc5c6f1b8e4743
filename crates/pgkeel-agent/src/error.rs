//! Agent errors.

use pgkeel_cluster::ClusterError;
use pgkeel_dcs::DcsError;
use pgkeel_pg::PgError;

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
    /// A request that cannot be honoured.
    #[error("{0}")]
    Refused(String),
}

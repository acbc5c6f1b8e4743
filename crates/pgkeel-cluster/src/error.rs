//! Cluster-level errors: each says what is wrong and what to run next.

use std::path::PathBuf;

use pgkeel_core::ConfigError;
use pgkeel_pg::PgError;

/// Why a cluster operation could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// PostgreSQL (a command, a query, a file) failed.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The backup tool or its repository failed.
    #[error(transparent)]
    Backup(#[from] pgkeel_backup::BackupError),
    /// The primary's newest WAL did not reach the archive in time.
    #[error(
        "[{node}] WAL segment {segment} is still not archived after {waited} s, so a restore would miss its commits: `pgkeel status` shows why the archive fails; fix it and retry"
    )]
    ArchiveBehind {
        /// The primary.
        node: String,
        /// The segment waited for.
        segment: String,
        /// Seconds waited.
        waited: u64,
    },
    /// Nodes that must be stopped are running.
    #[error(
        "{nodes} still running: an in-place restore needs the whole cluster stopped (`pgkeel down`)"
    )]
    StillRunning {
        /// The running nodes.
        nodes: String,
    },
    /// A restored copy stopped instead of reaching its target.
    #[error(
        "[{node}] recovery stopped before reaching the target; the server said ({log}):\n{tail}\nfix: choose a target the archive holds WAL for (`pgkeel backup list` shows each backup's WAL range), or --to latest"
    )]
    RecoveryFailed {
        /// The node restored.
        node: String,
        /// Its server log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// No cluster where one was expected.
    #[error(
        "no pgkeel cluster at {dir} (no cluster.toml): run `pgkeel up --dir {dir}` to create one, or pass the right --dir"
    )]
    NoCluster {
        /// The data root.
        dir: PathBuf,
    },
    /// The directory holds something else; pgkeel will not touch it.
    #[error(
        "{dir} is not empty and is not a pgkeel cluster (it holds {found}, but no cluster.toml): pgkeel will not write into it; choose another --dir or move its contents away"
    )]
    ForeignDirectory {
        /// The data root.
        dir: PathBuf,
        /// A few of the entries found.
        found: String,
    },
    /// A port a node needs is taken.
    #[error(
        "port {port} on {host} (node `{node}`) is already in use by another process: choose another --base-port, or stop that process (`ss -ltnp 'sport = :{port}'` shows it)"
    )]
    PortInUse {
        /// Node name.
        node: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
    /// A node's host is not on this machine.
    #[error(
        "node `{node}` listens on {host}, which is not an address of this machine ({detail}): `pgkeel up` runs the nodes that live here; use a local address"
    )]
    NotLocal {
        /// Node name.
        node: String,
        /// Its host.
        host: String,
        /// The OS error.
        detail: String,
    },
    /// The requested configuration differs from the cluster's.
    #[error(
        "the cluster at {dir} was created with a different configuration: {differences}\nfix: drop those flags/settings to use it as it is, or `pgkeel destroy --dir {dir} --yes` and create it again"
    )]
    ConfigMismatch {
        /// The data root.
        dir: PathBuf,
        /// The keys that differ, with both values.
        differences: String,
    },
    /// The Unix socket path would exceed the kernel's limit.
    #[error("socket path {path} is {len} bytes, over the 107-byte Unix limit: use a shorter --dir")]
    SocketPathTooLong {
        /// The would-be socket path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// Waiting for a condition ran out of time.
    #[error(
        "timed out after {seconds}s waiting for {what}: {detail}\nhint: `pgkeel status` shows each node's state; the node logs are under nodes/<name>/postgresql.log"
    )]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
        /// The last thing seen.
        detail: String,
    },
    /// No node can be identified as the primary.
    #[error("cannot tell which node is the primary: {detail}")]
    NoPrimary {
        /// What was found.
        detail: String,
    },
    /// No node is in the state the operation needs.
    #[error("{detail}")]
    NoSuitableNode {
        /// What was looked for and how to get there.
        detail: String,
    },
    /// A node name not in the configuration.
    #[error("no node named `{name}` in this cluster (nodes: {known})")]
    UnknownNode {
        /// The name asked for.
        name: String,
        /// Names that exist.
        known: String,
    },
    /// A secret shared by hosts is missing or unsafe.
    #[error("secret {path} {problem}\nfix: {fix}")]
    Secret {
        /// The file (or directory).
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// The data root holds another cluster.
    #[error(
        "{dir} holds cluster `{found}`, not `{wanted}`: pgkeel will not touch it; point `cluster.data_dir` (--dir) at this cluster's own directory"
    )]
    OtherCluster {
        /// The data root.
        dir: PathBuf,
        /// The cluster name stored there.
        found: String,
        /// The configured cluster name.
        wanted: String,
    },
    /// A stored file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ClusterError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ClusterError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

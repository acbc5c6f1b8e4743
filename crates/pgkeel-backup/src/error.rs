//! Backup errors: each names the node or repository, the command and what
//! the tool printed, and says what to do.

use std::path::PathBuf;

/// A backup, archive or restore operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The backup tool is not installed on this host.
    #[error(
        "{program} is not installed on this host (needed because `[backup]` has a repository)\nfix: `apt-get install -y pgbackrest` on every host"
    )]
    NotInstalled {
        /// The program looked for.
        program: PathBuf,
    },
    /// The repository directory is missing or not a directory.
    #[error("backup repository {path}: {problem}\nfix: {fix}")]
    Repository {
        /// The configured path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// The repository's stanza was made for another cluster.
    #[error(
        "the backup repository holds stanza `{stanza}` of another cluster ({detail})\nfix: point `backup.path` (or the bucket's path) at an empty location; or, if that cluster and its backups are gone for good, delete its stanza (`pgbackrest --config={} --stanza={stanza} stop` then `... stanza-delete --force`) and run `pgkeel up` again",
        config.display()
    )]
    ForeignStanza {
        /// The stanza (the cluster name).
        stanza: String,
        /// pgBackRest's configuration file on this host.
        config: PathBuf,
        /// What pgBackRest said.
        detail: String,
    },
    /// The backup asked for is not in the repository.
    #[error("{0}")]
    NoSuchBackup(String),
    /// A restore cannot reach the point asked for (before the oldest
    /// backup, before the chosen backup's end, in the future).
    #[error("{0}")]
    TargetUnreachable(String),
    /// The scratch directory of a restore lacks room.
    #[error(
        "{dir} has {free} bytes free; restoring backup {label} needs about {need}\nfix: free space there, or give a roomier directory with --scratch DIR"
    )]
    ScratchSpace {
        /// Where the copy would go.
        dir: PathBuf,
        /// The backup.
        label: String,
        /// Bytes needed.
        need: u64,
        /// Bytes free.
        free: u64,
    },
    /// Another backup of the cluster holds the repository's lock.
    #[error(
        "another backup of cluster `{stanza}` is running (the leader's agent takes the scheduled ones)\nfix: wait until it has finished (`pgkeel backup list` shows it then) and try again"
    )]
    Busy {
        /// The stanza.
        stanza: String,
    },
    /// The tool ran and failed.
    #[error("{command} failed on node {node} ({status}):\n{output}")]
    Command {
        /// The node it ran for.
        node: String,
        /// The command line (no secrets: they live in the config file).
        command: String,
        /// Its exit status.
        status: String,
        /// The tail of what it printed.
        output: String,
    },
    /// The tool could not be started.
    #[error("cannot start {command} for node {node}: {source}")]
    Spawn {
        /// The node it ran for.
        node: String,
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tool's output could not be understood.
    #[error("cannot read the output of {command}: {detail}")]
    Output {
        /// The command.
        command: String,
        /// What did not parse.
        detail: String,
    },
    /// A file pgkeel writes could not be written.
    #[error(transparent)]
    Pg(#[from] pgkeel_pg::PgError),
}

//! Errors from driving PostgreSQL. Each says which node, which command or
//! query, what PostgreSQL printed, and what to do about it.

use std::path::PathBuf;

/// Something went wrong talking to this host's PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// No directory holding the server binaries was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup, postgres) not found; looked in: {searched}\nfix: install them (Debian/Ubuntu: `apt-get install -y postgresql`) or point `cluster.bin_dir` (PGKEEL_CLUSTER_BIN_DIR) at their directory"
    )]
    BinariesNotFound {
        /// Directories tried, comma separated.
        searched: String,
    },
    /// `bin_dir` was given but lacks a binary.
    #[error(
        "`{binary}` is missing from {dir}: `cluster.bin_dir` must be PostgreSQL's server bin directory (e.g. /usr/lib/postgresql/15/bin)"
    )]
    MissingBinary {
        /// The configured directory.
        dir: PathBuf,
        /// The binary that is not there.
        binary: &'static str,
    },
    /// The configured OS user does not exist.
    #[error(
        "OS user `{user}` does not exist: create it (`useradd --system --user-group --home-dir /var/lib/postgresql {user}`) or set `cluster.os_user` to an existing user"
    )]
    OsUserMissing {
        /// The user name.
        user: String,
    },
    /// PostgreSQL refuses to run as root.
    #[error(
        "PostgreSQL refuses to run as root: set `cluster.os_user` to an unprivileged user (default `postgres`)"
    )]
    RootUser,
    /// Not root, so cannot become another user.
    #[error(
        "pgkeel runs as `{current}` but PostgreSQL must run as `{wanted}`: run pgkeel as root (it switches user itself) or as `{wanted}`, or set `cluster.os_user = \"{current}\"`"
    )]
    CannotSwitchUser {
        /// Who pgkeel runs as.
        current: String,
        /// The configured OS user.
        wanted: String,
    },
    /// The OS user cannot reach a directory pgkeel needs it to use.
    #[error(
        "OS user `{user}` cannot reach {path}: {blocker} is not searchable by it; choose a data directory under a path `{user}` can traverse (e.g. /var/lib/pgkeel or /tmp), or `chmod o+x` the blocking directory"
    )]
    Unreachable {
        /// The OS user.
        user: String,
        /// The directory it must use.
        path: PathBuf,
        /// The first ancestor it cannot enter.
        blocker: PathBuf,
    },
    /// A process could not be started at all.
    #[error("[{node}] cannot run `{command}`: {source}")]
    Spawn {
        /// Node the command was for.
        node: String,
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PostgreSQL command exited with an error.
    #[error("[{node}] `{command}` failed ({status}):\n{stderr}")]
    Command {
        /// Node the command was for.
        node: String,
        /// The command line (no secrets).
        command: String,
        /// Exit status.
        status: String,
        /// The last lines of its output.
        stderr: String,
    },
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("create", "write", "chown", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Connecting to a node failed.
    #[error(
        "[{node}] cannot connect to PostgreSQL on port {port} (socket dir {socket_dir}): {source}"
    )]
    Connect {
        /// Node name.
        node: String,
        /// Port.
        port: u16,
        /// Unix socket directory.
        socket_dir: PathBuf,
        /// Driver error.
        source: tokio_postgres::Error,
    },
    /// A query failed.
    #[error("[{node}] {what} failed: {source}")]
    Sql {
        /// Node name.
        node: String,
        /// What the query was for.
        what: &'static str,
        /// Driver error (carries PostgreSQL's message and SQLSTATE).
        source: tokio_postgres::Error,
    },
    /// A value PostgreSQL returned could not be understood.
    #[error("[{node}] unexpected answer to {what}: {detail}")]
    Unexpected {
        /// Node name.
        node: String,
        /// What was asked.
        what: &'static str,
        /// What came back.
        detail: String,
    },
}

impl PgError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        PgError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

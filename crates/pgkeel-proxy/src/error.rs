//! What can go wrong in the proxy, with the SQLSTATE a client is told.

use std::net::SocketAddr;
use std::time::Duration;

/// A proxy failure. `sqlstate()` maps each to the code a client sees.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Socket I/O with a client or server.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A malformed or unexpected protocol message.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The codec rejected bytes.
    #[error("invalid message: {0}")]
    Wire(#[from] pgkeel_wire::WireError),
    /// A server refused our connection or login.
    #[error("server {addr} refused the connection: {message}")]
    ServerLogin {
        /// Server.
        addr: SocketAddr,
        /// Its error message.
        message: String,
    },
    /// Every connection of a pool stayed busy for the whole queue wait.
    #[error(
        "pool for {user}@{database} on {node} is exhausted: {size} connections busy for {waited:?}"
    )]
    PoolExhausted {
        /// Role.
        user: String,
        /// Database.
        database: String,
        /// Node name.
        node: String,
        /// Pool size.
        size: usize,
        /// How long the client waited.
        waited: Duration,
    },
    /// No node can take the statement right now.
    #[error("no {0} node is available")]
    NoNode(&'static str),
    /// The client is pinned to a replica by session state that cannot be
    /// moved to the primary, and sent something only the primary can run.
    #[error(
        "this session ran `{0}` inside a read-only transaction on a replica, which ties it to \
         that replica, so it cannot write: run such statements before BEGIN READ ONLY (or use \
         SET LOCAL inside it), or reconnect"
    )]
    PinnedToReplica(String),
    /// The client's startup settings could not be restored (after its
    /// `RESET ALL`) on the server connection that holds its session
    /// state: that connection is closed, and the state with it.
    #[error(
        "the proxy could not restore this client's startup settings on the server connection \
         that held its session state (SET, temporary tables, prepared statements, ...): that \
         state is gone; reconnect"
    )]
    SessionStateLost,
    /// Settings made on a replica could not be applied on the primary.
    #[error(
        "the session's settings made on a replica could not be applied on the primary ({0}): \
         reconnect, or make them before BEGIN READ ONLY"
    )]
    StateNotMoved(String),
    /// A read-only transaction a replica refused at its start could not
    /// be started again on the primary (see `tx_start`).
    #[error(
        "a replica refused this read-only transaction at its start (a hot standby cannot run \
         serializable transactions), and the primary refused to start it again ({0}): run it \
         again, or start it with ISOLATION LEVEL SERIALIZABLE so it goes to the primary"
    )]
    TransactionNotMoved(String),
    /// The startup packet asks for something the proxy cannot honour (a
    /// switch in `options` other than `-c`, a replication connection).
    #[error(transparent)]
    Startup(#[from] crate::settings::StartupError),
    /// A server refused one of the client's startup settings at login (a
    /// bad value, an unknown parameter): its SQLSTATE and message, as
    /// PostgreSQL refuses them when the connection starts.
    #[error("{message}")]
    Setting {
        /// The server's SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// Too many clients connected.
    #[error("too many clients: the proxy accepts at most {0}")]
    TooManyClients(usize),
    /// A client took longer than `login_timeout` to log in (PostgreSQL's
    /// `authentication_timeout`): a stalled client must not hold a slot.
    #[error(
        "canceling authentication due to timeout ({0:?}): the client did not finish logging in"
    )]
    LoginTimeout(Duration),
    /// The client sat idle inside a transaction for longer than
    /// `idle_transaction_timeout` (PostgreSQL's own wording and code).
    #[error(
        "terminating connection due to idle-in-transaction timeout ({0:?}, the proxy's idle_transaction_timeout): end transactions promptly, or raise the setting"
    )]
    IdleInTransaction(Duration),
    /// The client cancelled its statement while it waited for a server
    /// connection (or a primary): PostgreSQL's wording and code for a
    /// cancelled statement, so drivers treat it as one.
    #[error("canceling statement due to user request")]
    Cancelled,
    /// Configuration that cannot work.
    #[error("invalid proxy configuration: {0}")]
    Config(String),
    /// A TLS certificate or key file that cannot be used.
    #[error("cannot use {} for TLS: {problem}", path.display())]
    TlsFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A plaintext login while TLS is required.
    #[error(
        "SSL required: this proxy accepts only encrypted connections; connect with \
         sslmode=require (or verify-ca/verify-full)"
    )]
    SslRequired,
    /// The auth query could not be run for a role not in the user list.
    #[error("cannot look up the password of user \"{user}\": {reason}")]
    AuthLookup {
        /// Role.
        user: String,
        /// Why (no primary, connection or query error).
        reason: String,
    },
    /// Reading the local cluster's description or secrets failed.
    #[error(transparent)]
    Cluster(#[from] pgkeel_cluster::ClusterError),
    /// Reading a secret failed.
    #[error(transparent)]
    Pg(#[from] pgkeel_pg::PgError),
}

impl ProxyError {
    /// The server could not be reached (refused, reset): it is down and
    /// routing elsewhere may work. A login the server refused is not this.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ProxyError::Io { .. })
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ProxyError::Io {
            what: what.into(),
            source,
        }
    }

    /// The SQLSTATE a client gets for this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            ProxyError::Startup(e) => e.sqlstate(),
            ProxyError::Setting { code, .. } => code,
            ProxyError::Protocol(_) | ProxyError::Wire(_) => "08P01",
            ProxyError::PoolExhausted { .. } | ProxyError::TooManyClients(_) => "53300",
            ProxyError::ServerLogin { .. }
            | ProxyError::NoNode(_)
            | ProxyError::Io { .. }
            | ProxyError::AuthLookup { .. }
            | ProxyError::SessionStateLost => "08006",
            ProxyError::SslRequired => "28000",
            ProxyError::PinnedToReplica(_) => "25006",
            ProxyError::StateNotMoved(_) | ProxyError::TransactionNotMoved(_) => "55000",
            ProxyError::LoginTimeout(_) | ProxyError::Cancelled => "57014",
            ProxyError::IdleInTransaction(_) => "25P03",
            ProxyError::Config(_)
            | ProxyError::TlsFile { .. }
            | ProxyError::Cluster(_)
            | ProxyError::Pg(_) => "XX000",
        }
    }
}

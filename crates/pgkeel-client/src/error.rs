//! The one error type of the crate: opaque, with a [`kind`](Error::kind) to
//! branch on and a message that says what to do about it.

use std::error::Error as StdError;
use std::fmt;

use tokio_postgres::error::{DbError, Severity, SqlState};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What went wrong, for code that must react differently (retry, answer
/// 503, fix the configuration). New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration, a URL or an environment variable is unusable. The
    /// message names the setting and the fix; retrying cannot help.
    Config,
    /// The server refused the credentials (SQLSTATE class 28) or the
    /// database does not exist (3D000): a configuration problem on a live
    /// server.
    Auth,
    /// No node could be reached at all.
    Connect,
    /// No node accepts writes right now (primary down, or every node
    /// read-only, for example in the middle of a failover). Retrying after
    /// a moment can succeed.
    NoPrimary,
    /// No node could serve a read (every replica and the primary are down
    /// or their pools are exhausted).
    Unavailable,
    /// A statement tried to write on a read-only node or in a read-only
    /// transaction (SQLSTATE 25006). The pool rediscovers the primary.
    ReadOnly,
    /// The connection died during the operation. For a commit the outcome
    /// is unknown: check before repeating a non-idempotent write.
    ConnectionLost,
    /// The server rejected a statement, or a value could not be converted.
    /// [`Error::code`] gives the SQLSTATE when the server sent one.
    Query,
}

/// Error of every fallible operation of this crate. Its `Display` says what
/// failed where and, for configuration mistakes, how to fix it; `kind()`
/// classifies it; `code()` exposes the server's SQLSTATE.
#[derive(thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The SQLSTATE the server reported, when the error came from a server.
    pub fn code(&self) -> Option<&SqlState> {
        self.db_error().map(DbError::code)
    }

    /// The server's full error report (detail, hint, constraint, ...), when
    /// there is one.
    pub fn db_error(&self) -> Option<&DbError> {
        let mut cause: Option<&(dyn StdError + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(e) = cause {
            if let Some(db) = e.downcast_ref::<DbError>() {
                return Some(db);
            }
            cause = e.source();
        }
        None
    }

    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// Wraps a driver error raised while running `what` on `node`, choosing
    /// the kind from the error and putting the server's message in ours.
    pub(crate) fn from_pg(what: &str, node: &dyn fmt::Display, e: tokio_postgres::Error) -> Self {
        let kind = classify(&e);
        let detail = describe(&e);
        let message = match kind {
            ErrorKind::ReadOnly => format!(
                "{node}: {what} failed: {detail} (the node is read-only: the pool will look for the primary again)"
            ),
            ErrorKind::Auth => format!(
                "{node}: {what} failed: {detail} (check the user, password and database name)"
            ),
            _ => format!("{node}: {what} failed: {detail}"),
        };
        Error::with_source(kind, message, e)
    }
}

/// The driver error's own text plus the server's message and SQLSTATE, so
/// a log line alone is enough to act on.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Chooses the kind of a driver error.
pub(crate) fn classify(e: &tokio_postgres::Error) -> ErrorKind {
    if is_read_only(e) {
        ErrorKind::ReadOnly
    } else if is_auth(e) {
        ErrorKind::Auth
    } else if is_connection_loss(e) {
        ErrorKind::ConnectionLost
    } else {
        ErrorKind::Query
    }
}

/// True when the error means the session is gone or the server is going
/// away: the node, not the statement, is the problem, so the same
/// statement may succeed on another node.
pub(crate) fn is_connection_loss(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return code.starts_with("08")
            || code.starts_with("57P")
            || matches!(
                db.parsed_severity(),
                Some(Severity::Fatal) | Some(Severity::Panic)
            );
    }
    let mut cause = e.source();
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// True for SQLSTATE 25006 (`read_only_sql_transaction`): a write on a
/// standby or in a read-only transaction.
pub(crate) fn is_read_only(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)
}

/// Wrong password, unknown role, no `pg_hba.conf` entry, unknown database:
/// retrying or trying another node will not help.
pub(crate) fn is_auth(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("28") || *c == SqlState::INVALID_CATALOG_NAME)
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_message_are_kept() {
        let e = Error::config("POSTGRES_MASTER_HOST is not set: set it");
        assert_eq!(e.kind(), ErrorKind::Config);
        assert_eq!(e.to_string(), "POSTGRES_MASTER_HOST is not set: set it");
        assert!(e.code().is_none());
        assert!(e.source().is_none());
    }

    #[test]
    fn source_chain_is_exposed() {
        let io = std::io::Error::other("boom");
        let e = Error::with_source(ErrorKind::Connect, "cannot connect", io);
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("boom"));
        assert!(e.db_error().is_none());
    }
}

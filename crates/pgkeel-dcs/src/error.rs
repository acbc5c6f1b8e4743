//! DCS errors.

/// A failed request to etcd.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    /// etcd could not be reached or answered with an error.
    #[error(
        "etcd ({endpoints}) {action} failed: {source}\nhint: is etcd running? `pgkeel status` shows the local member; `pgkeel up` starts it"
    )]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// What was being done.
        action: &'static str,
        /// The client error.
        source: etcd_client::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd ({endpoints}) {action} timed out after {millis} ms")]
    Timeout {
        /// The endpoints tried.
        endpoints: String,
        /// What was being done.
        action: &'static str,
        /// The limit.
        millis: u128,
    },
    /// No endpoint was given.
    #[error(
        "no etcd endpoint configured: set `etcd.endpoints`, or `etcd.members` for etcd run by pgkeel"
    )]
    NoEndpoints,
    /// A stored value is not what pgkeel writes.
    #[error("etcd key {key} holds an unreadable value: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        detail: String,
    },
}

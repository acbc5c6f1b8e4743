//! etcd as the proxy needs it: one key (the agents' leader key) read and
//! watched through etcd's v3 JSON gateway over HTTP/1.1 (TLS and a token
//! when the cluster's etcd asks for them). The agents
//! use the gRPC client (`pgkeel-dcs`); the proxy only follows, and this
//! keeps the gRPC stack out of its executable.

pub mod access;
pub mod gateway;
pub mod http;
pub mod session;

pub use access::GatewayAccess;
pub use gateway::{Change, Read, Watch, range};
pub use session::Session;

/// Why etcd could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint was configured.
    #[error("no etcd endpoint is configured")]
    NoEndpoint,
    /// The endpoint cannot be used.
    #[error("etcd endpoint {endpoint}: {detail}")]
    Unsupported {
        /// The endpoint as configured.
        endpoint: String,
        /// Why.
        detail: String,
    },
    /// Connecting, sending or receiving failed.
    #[error("etcd at {endpoint}: {source}")]
    Io {
        /// The endpoint.
        endpoint: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("etcd at {endpoint} did not answer within {millis} ms")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The bound.
        millis: u128,
    },
    /// An HTTP status other than 200.
    #[error(
        "etcd at {endpoint} answered HTTP {status}: {body} (is its JSON gateway on? `--enable-grpc-gateway`)"
    )]
    Status {
        /// The endpoint.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// etcd refused the credentials.
    #[error(
        "etcd at {endpoint} refused user `{user}`: {detail}; secrets/etcd.password must be the one this etcd was set up with"
    )]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The user.
        user: String,
        /// etcd's answer.
        detail: String,
    },
    /// An answer that is not what the gateway sends.
    #[error("etcd at {endpoint}: {detail}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
}

impl EtcdError {
    /// No answer from `endpoint` within `bound`.
    pub fn timeout(endpoint: &str, bound: std::time::Duration) -> Self {
        EtcdError::Timeout {
            endpoint: endpoint.into(),
            millis: bound.as_millis(),
        }
    }
}

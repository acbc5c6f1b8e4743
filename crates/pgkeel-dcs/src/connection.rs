//! Reaching etcd through any of its members. One client per endpoint, and
//! every request goes to the member that answered last; a member that
//! cannot be reached (refused, silent, or without a raft leader) is
//! skipped for the next one within the request's budget. etcd-client's
//! own balancing sent a share of requests to a dead member and failed
//! them (a third of them with one of three members down).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

use crate::DcsError;

/// The members' clients and which one answered last.
pub(crate) struct Members {
    clients: Vec<(String, Client)>,
    preferred: AtomicUsize,
}

impl Members {
    /// One lazily connecting client per endpoint (nothing is sent yet).
    pub(crate) async fn new(
        endpoints: &[String],
        options: &ConnectOptions,
    ) -> Result<Arc<Self>, DcsError> {
        let joined = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(DcsError::NoEndpoints);
        }
        let mut clients = vec![];
        for endpoint in endpoints {
            let client = Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .map_err(|source| DcsError::Etcd {
                    endpoints: joined.clone(),
                    action: "connect",
                    source,
                })?;
            clients.push((endpoint.clone(), client));
        }
        Ok(Arc::new(Members {
            clients,
            preferred: AtomicUsize::new(0),
        }))
    }

    /// Every endpoint, comma separated (for messages).
    pub(crate) fn endpoints(&self) -> String {
        self.clients
            .iter()
            .map(|(e, _)| e.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `request` on the preferred member, then on the next ones while
    /// a member cannot be reached, each attempt bounded by `timeout` and
    /// all of them by twice that (a silent member costs one attempt, not
    /// the request). An answer from etcd, even an error, is final.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        action: &'static str,
        timeout: Duration,
        request: F,
    ) -> Result<T, DcsError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let budget = timeout * 2;
        let start = Instant::now();
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            let left = budget.saturating_sub(start.elapsed()).min(timeout);
            if left.is_zero() {
                break;
            }
            let (_, client) = &self.clients[i];
            match tokio::time::timeout(left, request(client.clone())).await {
                Ok(Ok(value)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(e)) if unreachable(&e) => last = Some(Err(e)),
                Ok(Err(e)) => {
                    return Err(DcsError::Etcd {
                        endpoints: self.endpoints(),
                        action,
                        source: e,
                    });
                }
                Err(_) => last = Some(Ok(left)),
            }
        }
        Err(match last {
            Some(Err(source)) => DcsError::Etcd {
                endpoints: self.endpoints(),
                action,
                source,
            },
            _ => DcsError::Timeout {
                endpoints: self.endpoints(),
                action,
                millis: start.elapsed().as_millis(),
            },
        })
    }
}

/// Whether an error means the member could not serve the request (try
/// another), as opposed to etcd's answer to it.
pub(crate) fn unreachable(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
        ),
        _ => false,
    }
}

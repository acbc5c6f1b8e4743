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
    /// The user and password requests authenticate with (a member whose
    /// client has no token yet gets one when etcd asks for it).
    user: Option<(String, String)>,
}

impl Members {
    /// One lazily connecting client per endpoint (nothing is sent yet).
    pub(crate) async fn new(
        endpoints: &[String],
        options: &ConnectOptions,
        user: Option<(String, String)>,
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
            user,
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
            let mut answer = tokio::time::timeout(left, request(client.clone())).await;
            if let (Ok(Err(e)), Some(user)) = (&answer, &self.user)
                && needs_token(e)
            {
                // This member's client has no token yet (etcd was down, or
                // authentication was enabled since): authenticate, retry.
                let mut client = client.clone();
                let left = budget.saturating_sub(start.elapsed()).min(timeout);
                match tokio::time::timeout(left, client.update_user(Some(user.clone()))).await {
                    Ok(Ok(())) => {
                        answer = tokio::time::timeout(left, request(client.clone())).await;
                    }
                    Ok(Err(e)) if !unreachable(&e) => {
                        return Err(DcsError::Refused {
                            endpoints: self.endpoints(),
                            user: user.0.clone(),
                            detail: e.to_string(),
                        });
                    }
                    _ => {}
                }
            }
            match answer {
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

/// Whether etcd refused a request for want of a (valid) token.
pub(crate) fn needs_token(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
            ) && {
                let m = status.message();
                m.contains("user name is empty")
                    || m.contains("invalid auth token")
                    || m.contains("permission denied")
            }
        }
        _ => false,
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

//! Reaching etcd through any of its members. One client per endpoint, and
//! every request goes to the member that answered last; a member that
//! cannot be reached (refused, silent, or without a raft leader) is
//! skipped for the next one within the request's budget, and tried after
//! the others for a few seconds. etcd-client's own balancing sent a share
//! of requests to a dead member and failed them (13 of 30 with two of
//! three endpoints dead).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

use crate::DcsError;

/// The members' clients and which one answered last.
pub(crate) struct Members {
    clients: Vec<(String, Client)>,
    preferred: AtomicUsize,
    /// When each member last failed to serve a request (ms since `born`;
    /// 0: never): tried after the others for [`SUSPECT_FOR`].
    failed_at: Vec<AtomicU64>,
    born: Instant,
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
        let failed_at = clients.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Arc::new(Members {
            clients,
            preferred: AtomicUsize::new(0),
            failed_at,
            born: Instant::now(),
            user,
        }))
    }

    /// The endpoint requests go to first now.
    pub(crate) fn preferred_endpoint(&self) -> &str {
        let i = self.preferred.load(Ordering::Relaxed) % self.clients.len();
        &self.clients[i].0
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
        let now = self.ms();
        let suspect: Vec<bool> = self
            .failed_at
            .iter()
            .map(|f| {
                let at = f.load(Ordering::Relaxed);
                at != 0 && now.saturating_sub(at) < SUSPECT_FOR.as_millis() as u64
            })
            .collect();
        for i in attempt_order(first, &suspect) {
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
                    self.failed_at[i].store(0, Ordering::Relaxed);
                    return Ok(value);
                }
                Ok(Err(e)) if unreachable(&e) => {
                    // Tried last for a while: a dead member costs one
                    // request its timeout, not every request.
                    self.suspect(i);
                    last = Some(Err(e));
                }
                Ok(Err(e)) => {
                    return Err(DcsError::Etcd {
                        endpoints: self.endpoints(),
                        action,
                        source: e,
                    });
                }
                Err(_) => {
                    self.suspect(i);
                    last = Some(Ok(left));
                }
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

impl Members {
    fn ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Member `i` just failed to serve a request.
    fn suspect(&self, i: usize) {
        self.failed_at[i].store(self.ms(), Ordering::Relaxed);
    }

    /// Runs `request` on each member in turn until one accepts it (for
    /// requests only one member serves, such as a leadership transfer).
    pub(crate) async fn first_ok<T, F, Fut>(
        &self,
        action: &'static str,
        timeout: Duration,
        request: F,
    ) -> Result<T, DcsError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for (_, client) in &self.clients {
            match tokio::time::timeout(timeout, request(client.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {}
            }
        }
        Err(match last {
            Some(source) => DcsError::Etcd {
                endpoints: self.endpoints(),
                action,
                source,
            },
            None => DcsError::Timeout {
                endpoints: self.endpoints(),
                action,
                millis: timeout.as_millis(),
            },
        })
    }
}

/// How long a member that failed is tried after the others.
pub(crate) const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// The order members are tried in: from `first` (the one that answered
/// last) round the list, members that failed lately (`suspect`) after all
/// the others, so a dead or silent member (a host down, or one without a
/// raft leader) costs at most one request its timeout.
pub(crate) fn attempt_order(first: usize, suspect: &[bool]) -> Vec<usize> {
    let n = suspect.len();
    let round = (0..n).map(|k| (first + k) % n);
    let (healthy, suspects): (Vec<usize>, Vec<usize>) = round.partition(|i| !suspect[*i]);
    healthy.into_iter().chain(suspects).collect()
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

#[cfg(test)]
mod tests {
    use super::attempt_order;

    #[test]
    fn members_that_failed_lately_come_last() {
        assert_eq!(attempt_order(0, &[false, false, false]), [0, 1, 2]);
        assert_eq!(attempt_order(1, &[false, false, false]), [1, 2, 0]);
        // The first member died: the others first, it last.
        assert_eq!(attempt_order(0, &[true, false, false]), [1, 2, 0]);
        // Everything failed lately (etcd without a leader): still tried,
        // round from the preferred one.
        assert_eq!(attempt_order(2, &[true, true, true]), [2, 0, 1]);
        assert_eq!(attempt_order(1, &[false, true, false]), [2, 0, 1]);
    }
}

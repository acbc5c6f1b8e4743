//! Following the agents' leader key in etcd, so the proxy writes only to
//! the node the agents elected: an old primary that has not been demoted
//! yet is never written to, and a leader change triggers health checks at
//! once instead of at the next interval. The key is read and watched
//! through etcd's JSON gateway ([`crate::etcd`]).

use std::sync::Arc;
use std::time::Duration;

use crate::etcd::{Change, EtcdError, GatewayAccess, Session, Watch, range};
use crate::topology::Topology;

/// Where the cluster's keys live in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderSource {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix (`etcd.namespace`).
    pub namespace: String,
    /// Cluster name (the keys live under `<namespace>/<cluster>/`).
    pub cluster: String,
    /// Bound on each etcd request.
    pub timeout: Duration,
    /// TLS material and credentials.
    pub access: GatewayAccess,
}

impl LeaderSource {
    /// The leader key, as the agents write it.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/leader",
            self.namespace.trim_end_matches('/'),
            self.cluster
        )
    }
}

/// How often the leader key is read even without watch events (a watch
/// can silently stall when etcd restarts).
const REREAD: Duration = Duration::from_secs(1);

/// Follows the leader key forever (until the task is aborted). While etcd
/// cannot be reached the leader is `Unknown` and the health checks alone
/// decide; the agents fence a primary that cannot confirm its lease.
pub async fn follow_leader(topology: Arc<Topology>, source: LeaderSource) {
    let key = source.key();
    let session = loop {
        match Session::new(&source.access) {
            Ok(session) => break session,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach etcd with the configured TLS material; routing by health checks alone");
                topology.set_leader(None, false);
                tokio::time::sleep(REREAD * 30).await;
            }
        }
    };
    loop {
        if let Err(e) = follow(&topology, &session, &source, &key).await {
            tracing::warn!(error = %e, "cannot follow the leader key in etcd; routing by health checks alone");
        }
        topology.set_leader(None, false);
        tokio::time::sleep(REREAD).await;
    }
}

/// Reads the key, then applies watch events, re-reading every
/// [`REREAD`]; returns when etcd fails.
async fn follow(
    topology: &Topology,
    session: &Session,
    source: &LeaderSource,
    key: &str,
) -> Result<(), EtcdError> {
    let mut watch: Option<(String, Watch)> = None;
    // The member that answered last is asked first: a dead member would
    // otherwise cost a timeout at every re-read.
    let mut endpoints = source.endpoints.clone();
    loop {
        let (read, endpoint) = range(session, &endpoints, key, source.timeout).await?;
        let endpoint = endpoint.to_string();
        prefer(&mut endpoints, &endpoint);
        topology.set_leader(read.value.as_deref(), true);
        if watch.as_ref().is_some_and(|(on, _)| *on != endpoint) {
            // Its member stopped answering reads: a watch there may have
            // stalled without an error.
            tracing::debug!(
                endpoint,
                "moving the leader watch to the member that answers"
            );
            watch = None;
        }
        let events = match watch.as_mut() {
            Some((_, w)) => w,
            // From the revision just read on: no change is missed.
            None => {
                let w = Watch::start(session, &endpoint, key, read.revision + 1, source.timeout)
                    .await?;
                &mut watch.insert((endpoint, w)).1
            }
        };
        let deadline = tokio::time::sleep(REREAD);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changes = events.next() => match changes {
                    Ok(changes) => {
                        for change in changes {
                            match change {
                                Change::Put(name) => topology.set_leader(Some(&name), true),
                                Change::Delete => topology.set_leader(None, true),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "leader watch ended; watching again");
                        watch = None;
                        break;
                    }
                },
                _ = &mut deadline => break,
            }
        }
    }
}

/// Moves `answered` to the front of `endpoints`, keeping the others' order.
fn prefer(endpoints: &mut [String], answered: &str) {
    if let Some(i) = endpoints.iter().position(|e| e == answered) {
        endpoints[..=i].rotate_right(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_that_answered_is_asked_first() {
        let mut e: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        prefer(&mut e, "c");
        assert_eq!(e, ["c", "a", "b"]);
        prefer(&mut e, "c");
        assert_eq!(e, ["c", "a", "b"]);
        prefer(&mut e, "b");
        assert_eq!(e, ["b", "c", "a"]);
        prefer(&mut e, "zzz");
        assert_eq!(e, ["b", "c", "a"]);
    }
}

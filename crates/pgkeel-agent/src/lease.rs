//! Keeping the lease alive, and fencing when it cannot be.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgkeel_cluster::Cluster;
use pgkeel_dcs::Dcs;

use crate::execute::{fence, tracing_line};
use crate::shared::Shared;

/// Renews (or re-grants) the agent's lease every `ttl / 6`. The time a
/// renewal was *sent* is recorded: etcd restarted the TTL no earlier.
pub fn spawn_keeper(dcs: Dcs, shared: Arc<Shared>) {
    let interval = (shared.ttl / 6).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let ttl_secs = shared.ttl.as_secs_f64().ceil() as i64;
    tokio::spawn(async move {
        loop {
            let sent = Instant::now();
            let lease = shared.lease.lock().ok().and_then(|l| *l);
            match lease {
                None => {
                    if let Ok(granted) = dcs.grant_lease(ttl_secs).await
                        && let (Ok(mut l), Ok(mut r)) =
                            (shared.lease.lock(), shared.renewed_at.lock())
                    {
                        *l = Some(granted);
                        *r = Some(sent);
                    }
                }
                Some(lease) => match dcs.keep_alive(lease).await {
                    Ok(ttl) if ttl > 0 => {
                        if let Ok(mut r) = shared.renewed_at.lock() {
                            *r = Some(sent);
                        }
                    }
                    Ok(_) => {
                        // Expired: its keys (and the leader key) are gone.
                        tracing_line(&format!("{}: lease expired; taking a new one", shared.node));
                        shared.set_leader(false);
                        if let Ok(mut l) = shared.lease.lock() {
                            *l = None;
                        }
                        // At once: until the new lease, a primary runs on
                        // its failsafe cover alone.
                        continue;
                    }
                    Err(_) => {}
                },
            }
            tokio::time::sleep(interval.saturating_sub(sent.elapsed())).await;
        }
    });
}

/// Every 50 ms: a leader whose lease is older than `ttl - margin` stops
/// PostgreSQL at once, before etcd can expire the lease and let another
/// node take the key.
pub fn spawn_fencing_watchdog(cluster: Cluster, shared: Arc<Shared>, token: String) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if shared.leader() && shared.valid_lease().is_none() && !shared.failsafe_ok() {
                tracing_line(&format!(
                    "{}: lease not renewed in time: fencing PostgreSQL",
                    shared.node
                ));
                shared.set_leader(false);
                if fence(&cluster, &shared.node).await {
                    release_promises(&cluster, &shared.node, &token).await;
                }
            }
        }
    });
}

/// Tells the members this node still reaches that it is fenced (its
/// postmaster is gone), so the failsafe promises they gave it end now
/// instead of a TTL later: a replica may then take over as soon as the
/// leader key is vacant. Best effort: a member not told keeps its promise
/// until it runs out, as before.
async fn release_promises(cluster: &Cluster, me: &str, token: &str) {
    post_to_members(cluster, me, "/failsafe/release", token).await;
}

/// POSTs `{"leader": me}` to `path` on every other member's agent at once
/// (300 ms each): true when all of them answered 200.
async fn post_to_members(cluster: &Cluster, me: &str, path: &str, token: &str) -> bool {
    let body = format!("{{\"leader\": \"{me}\"}}");
    let auth = format!("Bearer {token}");
    let asks = cluster
        .nodes()
        .iter()
        .filter(|n| n.name.as_str() != me)
        .map(|n| {
            let url = format!("http://{}:{}{path}", n.host, n.api_port());
            let (body, auth) = (body.clone(), auth.clone());
            async move {
                crate::http::request(
                    "POST",
                    &url,
                    &[("Authorization", &auth)],
                    &body,
                    Duration::from_millis(300),
                )
                .await
                .is_ok_and(|(code, _)| code == 200)
            }
        });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .all(|ok| ok)
}

/// Failsafe: while this agent leads but cannot renew its lease (etcd
/// unreachable), it asks every other member every 250 ms to confirm it as
/// leader. Only when all of them do does it stay primary, for `ttl - margin`
/// counted from the request; each confirming member promises not to take
/// over for `ttl`. One unreachable member and the watchdog fences as usual.
pub fn spawn_failsafe(cluster: Cluster, shared: Arc<Shared>, token: String) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let renewed = shared.renewed_at.lock().ok().and_then(|r| *r);
            let stale = renewed.is_none_or(|r| r.elapsed() > shared.ttl / 3);
            if !shared.leader() || !stale {
                continue;
            }
            let sent = Instant::now();
            let all = post_to_members(&cluster, &shared.node, "/failsafe", &token).await;
            if all && let Ok(mut until) = shared.failsafe_valid_until.lock() {
                *until = Some(sent + shared.ttl.saturating_sub(shared.margin));
            }
        }
    });
}

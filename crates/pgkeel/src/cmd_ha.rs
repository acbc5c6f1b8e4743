//! `pgkeel switchover`, `failover`, `pause`, `resume`.

use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};

use pgkeel_agent::api::{request_failover, request_switchover};
use pgkeel_agent::remote::RemoteCluster;
use pgkeel_cluster::layout::Secret;
use pgkeel_core::config::StandbyClusterSection;
use pgkeel_pg::probe::connect_tcp;
use pgkeel_pg::secrets::read_password;

/// How long a handover may take before the CLI gives up waiting.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `node` answers as a writable primary right now: asked over
/// SQL when this host may connect, else its agent's word (`/member`; a
/// laptop outside `access.networks` still sees the switchover through).
async fn writable(cluster: &RemoteCluster, node: &str) -> bool {
    let Ok(n) = cluster.node(node) else {
        return false;
    };
    let Ok(password) = read_password(&cluster.layout.password_file(Secret::Superuser)) else {
        return false;
    };
    match connect_tcp(
        node,
        &n.host,
        n.port,
        &cluster.superuser,
        &password,
        Duration::from_millis(500),
    )
    .await
    {
        Ok(conn) => conn.probe().await.is_ok_and(|p| !p.in_recovery),
        Err(_) => {
            let url = format!(
                "http://{}:{}/member",
                pgkeel_core::config::url_host(&n.host),
                n.api_port()
            );
            match pgkeel_agent::http::request("GET", &url, &[], "", Duration::from_millis(500))
                .await
            {
                Ok((200, body)) => serde_json::from_str::<pgkeel_dcs::MemberState>(&body)
                    .is_ok_and(|m| m.running && m.role == "primary"),
                _ => false,
            }
        }
    }
}

/// Planned switchover; prints the write-unavailable window.
pub async fn switchover(cluster: &RemoteCluster, to: Option<String>) -> Result<()> {
    let dcs = cluster.dcs().await?;
    let old = dcs
        .view()
        .await?
        .leader
        .context("no leader: use `pgkeel failover --to <node>`")?;
    let requested = Instant::now();
    request_switchover(&dcs, &cluster.config, to.clone()).await?;
    // Window: from the old primary refusing writes to the new one taking them.
    let mut down_at = None;
    let mut new_leader = None;
    while requested.elapsed() < HANDOVER_TIMEOUT {
        if down_at.is_none() && !writable(cluster, &old).await {
            down_at = Some(Instant::now());
        }
        if down_at.is_some()
            && let Ok(view) = dcs.view().await
            && let Some(leader) = view.leader.filter(|l| l != &old)
            && writable(cluster, &leader).await
        {
            new_leader = Some((leader, Instant::now()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some((leader, up_at)) = new_leader else {
        bail!(
            "switchover did not complete within {}s: `pgkeel status` shows the state; the agents' logs (nodes/<name>/agent.log on their hosts) tell why",
            HANDOVER_TIMEOUT.as_secs()
        );
    };
    let window = down_at.map(|d| up_at.duration_since(d)).unwrap_or_default();
    say!(
        "switchover {old} -> {leader} done in {:.2}s; writes were unavailable for {:.0} ms",
        requested.elapsed().as_secs_f64(),
        window.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// The leader `to` has promised not to replace (failsafe) and the
/// milliseconds the promise still runs, as its agent reports them (`None`
/// when it promised nothing or does not answer).
async fn promised_leader(cluster: &RemoteCluster, to: &str) -> Option<(String, u64)> {
    let node = cluster.node(to).ok()?;
    let url = format!(
        "http://{}:{}/health",
        pgkeel_core::config::url_host(&node.host),
        node.api_port()
    );
    let (_, body) = pgkeel_agent::http::request("GET", &url, &[], "", Duration::from_secs(2))
        .await
        .ok()?;
    let health: serde_json::Value = serde_json::from_str(&body).ok()?;
    let promise = health.get("failsafe_promise")?;
    Some((
        promise.get("leader")?.as_str()?.to_string(),
        promise.get("remaining_ms")?.as_u64()?,
    ))
}

/// Manual failover to `to`.
pub async fn failover(cluster: &RemoteCluster, to: &str) -> Result<()> {
    let dcs = cluster.dcs().await?;
    let start = Instant::now();
    // With no leader key a primary may still be running on failsafe; its
    // members keep promising not to replace it, so the request could
    // never be carried out and would only wait here.
    if let Some((leader, ms)) = promised_leader(cluster, to).await {
        bail!(
            "{to} has promised {leader} not to take over (for {:.1} s more, renewed while {leader} asks): {leader} still runs as primary on failsafe (it lost etcd, but every member reaches it), so a failover now would make two primaries. Restore {leader}'s connection to etcd (it then takes the leader key back by itself), or stop PostgreSQL on {leader}, then retry",
            ms as f64 / 1000.0
        );
    }
    request_failover(&dcs, &cluster.config, to).await?;
    while start.elapsed() < HANDOVER_TIMEOUT {
        if dcs
            .view()
            .await
            .is_ok_and(|v| v.leader.as_deref() == Some(to))
            && writable(cluster, to).await
        {
            say!(
                "failover to {to} done in {:.2}s",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!(
        "{to} did not become primary within {}s: see nodes/{to}/agent.log on its host",
        HANDOVER_TIMEOUT.as_secs()
    )
}

/// Pause or resume automatic actions.
pub async fn set_paused(cluster: &RemoteCluster, paused: bool) -> Result<()> {
    let dcs = cluster.dcs().await?;
    let mut config = dcs.view().await?.config;
    config.paused = paused;
    dcs.put_config(&config).await?;
    say!(
        "cluster `{}` {}",
        cluster.config.cluster.name,
        if paused {
            "paused: agents take no automatic action"
        } else {
            "resumed"
        }
    );
    Ok(())
}

/// `pgkeel promote-cluster`: the standby cluster stops following its
/// source; its leader is promoted within a loop.
pub async fn promote_cluster(cluster: &RemoteCluster) -> Result<()> {
    let name = &cluster.config.cluster.name;
    let dcs = cluster.dcs().await?;
    let mut config = dcs.view().await?.config;
    let source = match (&config.follow, &cluster.config.standby_cluster) {
        (Some(follow), _) => follow.clone(),
        (None, Some(configured)) if !config.standby_promoted => configured.clone(),
        _ => bail!(
            "cluster `{name}` follows no other cluster (no [standby_cluster], or promoted already, and no demote-cluster since): it is already a primary cluster"
        ),
    };
    config.standby_promoted = true;
    config.follow = None;
    dcs.put_config(&config).await?;
    say!(
        "cluster `{name}` promoted: it no longer follows {}:{}; its leader accepts writes within a loop (`pgkeel status` shows it as primary). Keep the old primary cluster from taking writes: it does not know",
        source.host,
        source.port
    );
    Ok(())
}

/// `pgkeel demote-cluster --host H --port P`: this cluster follows another
/// (whose primary is at `host:port`); its leader stops, rewinds onto the
/// other's history and streams from it, its members cascade.
pub async fn demote_cluster(cluster: &RemoteCluster, host: &str, port: u16) -> Result<()> {
    let name = &cluster.config.cluster.name;
    let dcs = cluster.dcs().await?;
    let mut config = dcs.view().await?.config;
    config.follow = Some(StandbyClusterSection {
        host: host.to_string(),
        port,
        stanza: None,
    });
    config.standby_promoted = false;
    dcs.put_config(&config).await?;
    say!(
        "cluster `{name}` now follows {host}:{port}: its leader stops taking writes within a loop, rewinds onto that cluster's history (or is cloned from it) and streams from it; `pgkeel promote-cluster` undoes this"
    );
    Ok(())
}

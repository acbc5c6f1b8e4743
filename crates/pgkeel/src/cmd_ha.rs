//! `pgkeel switchover`, `failover`, `pause`, `resume`.

use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};

use pgkeel_agent::api::{request_failover, request_switchover};
use pgkeel_agent::orchestrate;
use pgkeel_cluster::Cluster;
use pgkeel_cluster::layout::Secret;
use pgkeel_dcs::DynamicConfig;
use pgkeel_pg::probe::connect_tcp;
use pgkeel_pg::secrets::read_password;

/// How long a handover may take before the CLI gives up waiting.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `node` answers as a writable primary right now.
async fn writable(cluster: &Cluster, node: &str) -> bool {
    let Ok(n) = cluster.node(node) else {
        return false;
    };
    let Ok(password) = read_password(&cluster.layout.password_file(Secret::Superuser)) else {
        return false;
    };
    let Ok(conn) = connect_tcp(
        node,
        &n.host,
        n.port,
        &cluster.superuser,
        &password,
        Duration::from_millis(500),
    )
    .await
    else {
        return false;
    };
    conn.probe().await.is_ok_and(|p| !p.in_recovery)
}

/// Planned switchover; prints the write-unavailable window.
pub async fn switchover(cluster: &Cluster, to: Option<String>) -> Result<()> {
    let dcs = orchestrate::dcs(cluster).await?;
    let old = dcs
        .view()
        .await?
        .leader
        .context("no leader: use `pgkeel failover --to <node>`")?;
    let requested = Instant::now();
    request_switchover(&dcs, cluster, to.clone()).await?;
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
            "switchover did not complete within {}s: `pgkeel status` shows the state; agent logs are nodes/<name>/agent.log",
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

/// Manual failover to `to`.
pub async fn failover(cluster: &Cluster, to: &str) -> Result<()> {
    let dcs = orchestrate::dcs(cluster).await?;
    let start = Instant::now();
    request_failover(&dcs, cluster, to).await?;
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
        "{to} did not become primary within {}s: see nodes/{to}/agent.log",
        HANDOVER_TIMEOUT.as_secs()
    )
}

/// Pause or resume automatic actions.
pub async fn set_paused(cluster: &Cluster, paused: bool) -> Result<()> {
    let dcs = orchestrate::dcs(cluster).await?;
    dcs.put_config(&DynamicConfig { paused }).await?;
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

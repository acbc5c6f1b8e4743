//! Leases against a real etcd: an expired lease must read as expired (TTL
//! 0) so the agent takes a new one, not as an error it retries forever.

use std::time::{Duration, Instant};

use pgkeel_dcs::Dcs;
use pgkeel_testkit::{TempEtcd, TestResult};

/// Bound of each etcd request: generous, as a loaded machine can make
/// etcd slow (an expired lease's renewal waits for etcd to revoke it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(etcd: &TempEtcd) -> TestResult<Dcs> {
    // etcd may still be electing itself when its port opens.
    let mut last = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        match Dcs::connect(
            std::slice::from_ref(&etcd.endpoint),
            "/test",
            "lease",
            REQUEST_TIMEOUT,
        )
        .await
        {
            Ok(dcs) => match dcs.view().await {
                Ok(_) => return Ok(dcs),
                Err(e) => last = Some(e.to_string()),
            },
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("etcd never answered: {last:?}").into())
}

#[tokio::test]
async fn renewing_an_expired_lease_reports_ttl_zero() -> TestResult<()> {
    let etcd = TempEtcd::start()?;
    let dcs = connect(&etcd).await?;
    let lease = dcs.grant_lease(1).await?;
    assert!(dcs.keep_alive(lease).await? > 0, "a live lease renews");
    // Unrenewed, it expires (etcd may have raised the TTL to its minimum):
    // past its TTL by the clock, a renewal waits until etcd has revoked it
    // (checked every 500 ms, and slower on a loaded machine: hence the
    // generous request timeout) and then reports TTL 0.
    let granted = u64::try_from(lease.ttl.max(1))?;
    tokio::time::sleep(Duration::from_secs(granted) + Duration::from_millis(1500)).await;
    let ttl = dcs.keep_alive(lease).await.map_err(|e| e.to_string());
    assert_eq!(ttl, Ok(0), "an expired lease must renew to TTL 0, not fail");
    Ok(())
}

//! Several endpoints, some of them down: every request must still be
//! answered by a live one (agents, the CLI and the proxy list every etcd
//! member; any one may fail).

use std::time::{Duration, Instant};

use pgkeel_dcs::Dcs;
use pgkeel_testkit::{TempEtcd, TestResult, free_port_block};

#[tokio::test]
async fn requests_reach_a_live_member_when_others_are_down() -> TestResult<()> {
    let etcd = TempEtcd::start()?;
    // Two endpoints nothing listens on, around the live one.
    let dead = free_port_block(2);
    let endpoints = vec![
        format!("http://127.0.0.1:{dead}"),
        etcd.endpoint.clone(),
        format!("http://127.0.0.1:{}", dead + 1),
    ];
    let start = Instant::now();
    let dcs = loop {
        match Dcs::connect(&endpoints, "/test", "endpoints", Duration::from_secs(2)).await {
            Ok(dcs) if dcs.view().await.is_ok() => break dcs,
            _ if start.elapsed() > Duration::from_secs(30) => {
                return Err("etcd never answered".into());
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut failures = vec![];
    for i in 0..30 {
        if let Err(e) = dcs.view().await {
            failures.push(format!("read {i}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 30 reads failed: {failures:?}",
        failures.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_member_is_skipped_after_it_failed_once() -> TestResult<()> {
    let etcd = TempEtcd::start()?;
    // A member that accepts connections and never answers, like a host
    // cut off by the network: each request sent to it costs the timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("http://{}", silent.local_addr()?);
    let endpoints = vec![silent_url.clone(), etcd.endpoint.clone()];
    let dcs = Dcs::connect(&endpoints, "/test", "silent", Duration::from_millis(400)).await?;
    assert_eq!(dcs.endpoint_in_use(), silent_url);
    let start = Instant::now();
    while dcs.view().await.is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("etcd never answered".into());
        }
    }
    // Requests now go to the live member first, and stay there.
    for _ in 0..10 {
        dcs.view().await?;
        assert_eq!(dcs.endpoint_in_use(), etcd.endpoint);
    }
    drop(silent);
    Ok(())
}

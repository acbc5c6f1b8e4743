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

//! `pgkeel up` in each replication mode: three streaming nodes, data flows
//! to both replicas, every slot active, `status --json` right.

mod common;

use common::{CliCluster, TestResult, text};
use pgkeel_testkit::connect_url;
use std::time::{Duration, Instant};

async fn bring_up_and_replicate(mode: &str, expected_sync: &[&str]) -> TestResult {
    let cluster = CliCluster::new(3)?;
    let out = cluster.up(&["--mode", mode]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("created and ready"), "{}", text(&out));
    for name in ["primary", "replica1", "replica2"] {
        assert!(stdout.contains(name), "table lacks {name}: {stdout}");
    }

    let status = cluster.status()?;
    let nodes = status["nodes"].as_array().ok_or("nodes not an array")?;
    assert_eq!(nodes.len(), 3, "{status}");
    let roles: Vec<&str> = nodes.iter().filter_map(|n| n["role"].as_str()).collect();
    assert_eq!(roles, ["primary", "replica", "replica"], "{status}");
    assert!(
        nodes
            .iter()
            .all(|n| n["running"] == true && n["pid"].is_u64()),
        "{status}"
    );
    let mut sync: Vec<&str> = nodes[1..]
        .iter()
        .filter_map(|n| n["sync_state"].as_str())
        .collect();
    sync.sort_unstable();
    assert_eq!(sync, expected_sync, "{status}");

    // Slots: one per replica, all active, none inactive.
    let slots = status["slots"].as_array().ok_or("slots not an array")?;
    let mut names: Vec<&str> = slots.iter().filter_map(|s| s["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["replica1", "replica2"], "{status}");
    assert!(
        slots.iter().all(|s| s["active"] == true),
        "inactive slot: {status}"
    );

    // A row written on the primary is read on both replicas.
    let primary = connect_url(&cluster.url(&["--primary"])?).await?;
    primary
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'hello')",
        )
        .await?;
    for node in ["replica1", "replica2"] {
        let replica = connect_url(&cluster.url(&["--node", node])?).await?;
        let row = replica.query_one("SELECT pg_is_in_recovery()", &[]).await?;
        assert!(row.get::<_, bool>(0), "{node} is not a replica");
        let start = Instant::now();
        loop {
            let rows = replica.query("SELECT v FROM t WHERE id = 1", &[]).await;
            if let Ok(rows) = rows
                && rows.len() == 1
            {
                assert_eq!(rows[0].get::<_, &str>(0), "hello");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{node} never got the row"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn quorum_cluster_comes_up_and_replicates() -> TestResult {
    bring_up_and_replicate("quorum", &["quorum", "quorum"]).await
}

#[tokio::test]
async fn sync_cluster_comes_up_and_replicates() -> TestResult {
    bring_up_and_replicate("sync", &["potential", "sync"]).await
}

#[tokio::test]
async fn async_cluster_comes_up_and_replicates() -> TestResult {
    bring_up_and_replicate("async", &["async", "async"]).await
}

//! pgkeel-client following the agents' topology (`/cluster`) through a
//! switchover: writes move to the new primary without the application
//! knowing anything but the agents' URLs.

mod common;

use std::time::{Duration, Instant};

use common::{CliCluster, TestResult, text};
use pgkeel_client::{AgentTopology, NodeAddr, PoolConfig, ReplicatedPool};

#[tokio::test]
async fn pool_follows_the_agents_through_a_switchover() -> TestResult {
    let c = CliCluster::new(3)?;
    c.up(&["--mode", "async"]);
    let password = std::fs::read_to_string(c.root.join("secrets/app.password"))?;
    let agents: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}", c.base_port + 2000 + i))
        .collect();
    let config = PoolConfig {
        nodes: (0..3)
            .map(|i| NodeAddr::new("127.0.0.1", c.base_port + i))
            .collect(),
        user: "app".into(),
        password: Some(password.trim().to_string()),
        dbname: "app".into(),
        ..PoolConfig::default()
    };
    let pool = ReplicatedPool::with_topology(config, AgentTopology::new(agents)).await?;

    let tx = pool.write().await?;
    tx.execute("CREATE TABLE t (port int)", &[]).await?;
    tx.commit().await?;
    let write_port = |pool: &ReplicatedPool| {
        let pool = pool.clone();
        async move {
            let tx = pool.write().await?;
            let row = tx
                .query_one(
                    "INSERT INTO t SELECT current_setting('port')::int RETURNING port",
                    &[],
                )
                .await?;
            tx.commit().await?;
            Ok::<i32, pgkeel_client::Error>(row.get(0))
        }
    };
    assert_eq!(write_port(&pool).await?, i32::from(c.base_port));
    // Once the pool's health checks have seen the replicas, reads go there.
    let start = Instant::now();
    loop {
        let mut reader = pool.read().await?;
        let in_recovery: bool = reader
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0);
        if in_recovery {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "reads never reached a replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = c.run("switchover", &["--to", "replica1"]);
    assert!(out.status.success(), "{}", text(&out));
    let start = Instant::now();
    loop {
        match write_port(&pool).await {
            Ok(port) if port == i32::from(c.base_port + 1) => break,
            _ if start.elapsed() > Duration::from_secs(30) => {
                return Err("writes never reached the new primary replica1".into());
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

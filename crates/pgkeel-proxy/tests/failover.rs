//! The proxy follows a role change found by its health checks: after the
//! primary stops and the replica is promoted, writes land on the new
//! primary without reconfiguration. Pool limits give a clear error.

mod common;

use std::time::Duration;

use common::{Env, TestResult};
use pgkeel_testkit::TempCluster;

#[tokio::test]
async fn follows_a_promotion() -> TestResult {
    common::within(240, promotion()).await
}

async fn promotion() -> TestResult {
    let env = Env::start(1, |_| {}).await?;
    let replica_port = i32::from(env.node_port("replica1")?);
    let client = env.client().await?;
    client.batch_execute("CREATE TABLE f (id int)").await?;

    env.cluster.stop_node("primary").await?;
    let replica = env.cluster.cluster.node("replica1")?.clone();
    let su = env.cluster.cluster.connect(&replica).await?;
    su.client().simple_query("SELECT pg_promote()").await?;

    let moved = TempCluster::eventually(Duration::from_secs(60), || async {
        let Ok(c) = env.client().await else {
            return false;
        };
        c.query_one(
            "INSERT INTO f VALUES (1) RETURNING current_setting('port')::int",
            &[],
        )
        .await
        .is_ok_and(|r| r.get::<_, i32>(0) == replica_port)
    })
    .await;
    assert!(moved, "writes never reached the promoted replica");
    // A client connected before the change carries on, on the new primary.
    let r = client
        .query_one(
            "INSERT INTO f VALUES (2) RETURNING current_setting('port')::int",
            &[],
        )
        .await?;
    assert_eq!(r.get::<_, i32>(0), replica_port);
    Ok(())
}

#[tokio::test]
async fn exhausted_pool_is_a_clear_error() -> TestResult {
    common::within(240, exhausted()).await
}

async fn exhausted() -> TestResult {
    let env = Env::start(1, |c| {
        c.pool_size = 1;
        c.queue_wait = Duration::from_millis(300);
    })
    .await?;
    let mut holder = env.client().await?;
    let tx = holder.transaction().await?;
    tx.execute("SELECT 1", &[]).await?;
    // The only primary connection is held by the open transaction.
    let other = env.client().await?;
    let err = match other.batch_execute("CREATE TABLE x (id int)").await {
        Ok(()) => return Err("a second primary connection was handed out".into()),
        Err(e) => e,
    };
    let db = err.as_db_error().ok_or("no server error")?;
    assert_eq!(db.code().code(), "53300");
    assert!(db.message().contains("exhausted"), "{}", db.message());
    // Once the transaction ends the connection is free again.
    tx.commit().await?;
    other.batch_execute("CREATE TABLE x (id int)").await?;
    Ok(())
}

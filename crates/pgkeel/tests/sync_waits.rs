//! Synchronous modes really wait: with every synchronous standby down a
//! commit does not return, and returns once one is back. Async does not wait.

use std::time::Duration;

use pgkeel_testkit::TempCluster;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn commit_waits_for_a_standby(mode: &str) -> TestResult {
    let cluster = TempCluster::start(2, mode).await?;
    let primary = cluster.client("primary").await?;
    primary.batch_execute("CREATE TABLE w (id int)").await?;

    cluster.stop_node("replica1").await?;
    cluster.stop_node("replica2").await?;
    let commit =
        tokio::spawn(async move { primary.execute("INSERT INTO w VALUES (1)", &[]).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !commit.is_finished(),
        "{mode}: commit returned with every synchronous standby down"
    );

    cluster.start_node("replica1").await?;
    let done = tokio::time::timeout(Duration::from_secs(60), commit).await;
    let inserted =
        done.map_err(|_| format!("{mode}: commit still waiting after a standby came back"))???;
    assert_eq!(inserted, 1);

    // The row is on the standby that acknowledged it (flushed there when
    // the commit returned, replayed a moment later).
    let replica = cluster.client("replica1").await?;
    let replayed = TempCluster::eventually(Duration::from_secs(30), || async {
        replica
            .query_one("SELECT count(*) FROM w", &[])
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await;
    let count: i64 = replica
        .query_one("SELECT count(*) FROM w", &[])
        .await?
        .get(0);
    assert!(replayed, "{mode}: replica1 shows {count} rows, not 1");
    Ok(())
}

#[tokio::test]
async fn quorum_commit_waits_until_a_standby_is_back() -> TestResult {
    commit_waits_for_a_standby("quorum").await
}

#[tokio::test]
async fn sync_commit_waits_until_a_standby_is_back() -> TestResult {
    commit_waits_for_a_standby("sync").await
}

#[tokio::test]
async fn async_commit_does_not_wait_for_standbys() -> TestResult {
    let cluster = TempCluster::start(2, "async").await?;
    let primary = cluster.client("primary").await?;
    cluster.stop_node("replica1").await?;
    cluster.stop_node("replica2").await?;
    let commit = primary.batch_execute("CREATE TABLE a (id int); INSERT INTO a VALUES (1)");
    tokio::time::timeout(Duration::from_secs(30), commit)
        .await
        .map_err(|_| "async commit blocked with the replicas down")??;
    Ok(())
}

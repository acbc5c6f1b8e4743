//! Read-your-writes holds over thousands of write-then-read rounds while one
//! replica applies WAL two seconds late: every read sees its write, and
//! reads still go to the replica that has caught up rather than all to the
//! primary.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{TestResult, eventually, node_of, pool, superuser};
use pgkeel_testkit::TempCluster;

const ROUNDS: i64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_after_a_write_sees_it_with_a_delayed_replica() -> TestResult {
    let cluster = TempCluster::start(2, "quorum").await?;
    let delayed = superuser(&cluster, "replica1").await?;
    delayed
        .batch_execute("ALTER SYSTEM SET recovery_min_apply_delay = '2s'")
        .await?;
    delayed.batch_execute("SELECT pg_reload_conf()").await?;
    let applied = eventually(Duration::from_secs(10), || async {
        delayed
            .query_one("SHOW recovery_min_apply_delay", &[])
            .await
            .is_ok_and(|r| r.get::<_, String>(0) == "2s")
    })
    .await;
    assert!(applied, "recovery_min_apply_delay not in force");

    let pool = pool(&cluster).await?;
    let tx = pool.write().await?;
    tx.batch_execute("CREATE TABLE rw (id bigint PRIMARY KEY, v text)")
        .await?;
    tx.commit().await?;

    // The delay is real: right after the commit the delayed replica lacks
    // the table; it gets it a little later.
    let has_table = || async {
        delayed
            .query_one("SELECT to_regclass('rw') IS NOT NULL", &[])
            .await
            .map(|r| r.get::<_, bool>(0))
    };
    assert!(
        !has_table().await?,
        "replica1 applied the write without delay"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            has_table().await.is_ok_and(|t| t)
        })
        .await,
        "replica1 never applied the CREATE TABLE"
    );

    let mut served: HashMap<String, usize> = HashMap::new();
    for id in 0..ROUNDS {
        let tx = pool.write().await?;
        tx.execute("INSERT INTO rw VALUES ($1, 'x')", &[&id])
            .await?;
        let token = tx.commit().await?;
        let mut conn = pool.read_after(&token).await?;
        let row = conn
            .query_opt("SELECT inet_server_port() FROM rw WHERE id = $1", &[&id])
            .await?;
        let Some(row) = row else {
            return Err(format!("round {id}: write not visible on {}", conn.node()).into());
        };
        let port: i32 = row.get(0);
        *served.entry(node_of(&cluster, port as u16)).or_insert(0) += 1;
    }
    assert_eq!(
        served.get("replica1"),
        None,
        "the delayed replica served a read: {served:?}"
    );
    let on_replica = served.get("replica2").copied().unwrap_or(0);
    assert!(
        on_replica * 2 > ROUNDS as usize,
        "most reads should come from the caught-up replica: {served:?}"
    );

    // Plain reads do not wait: some of them miss a fresh write on the
    // delayed replica, which is what read_after is for.
    let mut missed = 0;
    for id in ROUNDS..ROUNDS + 20 {
        let tx = pool.write().await?;
        tx.execute("INSERT INTO rw VALUES ($1, 'y')", &[&id])
            .await?;
        tx.commit().await?;
        let mut conn = pool.read().await?;
        if conn
            .query_opt("SELECT 1 FROM rw WHERE id = $1", &[&id])
            .await?
            .is_none()
        {
            missed += 1;
        }
    }
    assert!(
        missed > 0,
        "plain reads never missed a write: the delay had no effect"
    );
    Ok(())
}

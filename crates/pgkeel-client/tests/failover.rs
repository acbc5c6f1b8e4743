//! The pool follows the primary: a write that hits SQLSTATE 25006 makes it
//! rediscover; a fenced (read-only) primary is refused with NoPrimary; after
//! the primary is lost and a replica promoted, writes go to the new primary
//! while reads keep working.

mod common;

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TestResult, node_of, pool, pool_config, port, superuser};
use pgkeel_client::{
    BoxFuture, ErrorKind, Member, PoolConfig, ProbeTopology, ReplicatedPool, Result, Role,
    TopologySource, WriteTx,
};
use pgkeel_testkit::TempCluster;

/// The first write transaction that can be opened within `timeout`.
async fn write_within(pool: &ReplicatedPool, timeout: Duration) -> TestResult<WriteTx> {
    let start = Instant::now();
    loop {
        match pool.write().await {
            Ok(tx) => return Ok(tx),
            Err(e) if start.elapsed() < timeout => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::NoPrimary
                            | ErrorKind::Connect
                            | ErrorKind::ConnectionLost
                            | ErrorKind::ReadOnly
                    ),
                    "unexpected error during failover: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn write_port(tx: &WriteTx) -> TestResult<u16> {
    let port: i32 = tx.query_one("SELECT inet_server_port()", &[]).await?.get(0);
    Ok(port as u16)
}

/// A topology source that is wrong the first time (it names a standby as
/// the primary, like an agent answering mid-failover) and then asks the
/// nodes.
#[derive(Debug, Default)]
struct StaleFirst {
    calls: AtomicUsize,
}

impl TopologySource for StaleFirst {
    fn discover<'a>(&'a self, config: &'a PoolConfig) -> BoxFuture<'a, Result<Vec<Member>>> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) > 0 {
                return ProbeTopology.discover(config).await;
            }
            let mut members: Vec<Member> = config
                .nodes
                .iter()
                .map(|addr| Member {
                    addr: addr.clone(),
                    role: Role::Replica,
                })
                .collect();
            members[1].role = Role::Primary; // replica1
            Ok(members)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_primary_through_read_only_errors_and_failover() -> TestResult {
    let cluster = TempCluster::start(2, "async").await?;
    let pool = pool(&cluster).await?;
    let tx = pool.write().await?;
    assert_eq!(node_of(&cluster, write_port(&tx).await?), "primary");
    tx.batch_execute("CREATE TABLE f (id serial PRIMARY KEY, at text)")
        .await?;
    tx.commit().await?;
    assert_eq!(pool.status().discoveries, 1);

    // A source naming a standby as primary: the write notices at BEGIN
    // (read-only), rediscovers and runs on the real primary.
    let mut config = pool_config(&cluster).await?;
    config.health_interval = Duration::from_secs(3600); // no help from the monitor
    let stale = ReplicatedPool::with_topology(config, StaleFirst::default()).await?;
    assert_eq!(
        stale.status().primary.map(|p| p.port),
        Some(port(&cluster, "replica1")?)
    );
    let tx = stale.write().await?;
    assert_eq!(node_of(&cluster, write_port(&tx).await?), "primary");
    tx.rollback().await?;
    assert_eq!(stale.status().discoveries, 2);
    assert_eq!(
        stale.status().primary.map(|p| p.port),
        Some(port(&cluster, "primary")?)
    );
    drop(stale);

    // 25006 from a statement: reported as ReadOnly, and the next write
    // rediscovers before it starts.
    let tx = pool.write().await?;
    tx.batch_execute("SET TRANSACTION READ ONLY").await?;
    let err = tx
        .execute("INSERT INTO f (at) VALUES ('x')", &[])
        .await
        .err()
        .ok_or("insert in a read-only transaction succeeded")?;
    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
    assert_eq!(err.code().map(|c| c.code()), Some("25006"));
    drop(tx);
    let tx = pool.write().await?;
    assert_eq!(
        pool.status().discoveries,
        2,
        "25006 did not trigger a rediscovery"
    );
    assert_eq!(node_of(&cluster, write_port(&tx).await?), "primary");
    tx.rollback().await?;

    // A primary fenced read-only is not written to.
    let primary_su = superuser(&cluster, "primary").await?;
    primary_su
        .batch_execute("ALTER SYSTEM SET default_transaction_read_only = on")
        .await?;
    primary_su.batch_execute("SELECT pg_reload_conf()").await?;
    // The reload reaches the server's sessions asynchronously: writes
    // (opened and dropped) until the first refusal, for up to 30 s.
    let start = Instant::now();
    let err = loop {
        match pool.write().await {
            Err(e) => break e,
            Ok(tx) if start.elapsed() < Duration::from_secs(30) => {
                tx.rollback().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => return Err("write accepted by a fenced primary".into()),
        }
    };
    assert_eq!(err.kind(), ErrorKind::NoPrimary, "{err}");
    assert!(err.to_string().contains("read-only"), "{err}");
    primary_su
        .batch_execute("ALTER SYSTEM RESET default_transaction_read_only")
        .await?;
    primary_su.batch_execute("SELECT pg_reload_conf()").await?;
    let tx = write_within(&pool, Duration::from_secs(30)).await?;
    assert_eq!(node_of(&cluster, write_port(&tx).await?), "primary");
    tx.rollback().await?;
    drop(primary_su);

    // The primary dies; replica1 is promoted. Writes go there, reads work.
    cluster.stop_node("primary").await?;
    let promoted = superuser(&cluster, "replica1").await?;
    promoted.batch_execute("SELECT pg_promote()").await?;
    let tx = write_within(&pool, Duration::from_secs(60)).await?;
    assert_eq!(node_of(&cluster, write_port(&tx).await?), "replica1");
    tx.execute("INSERT INTO f (at) VALUES ('after failover')", &[])
        .await?;
    let token = tx.commit().await?;
    assert_eq!(
        pool.status().primary.map(|p| p.port),
        Some(port(&cluster, "replica1")?)
    );
    let mut conn = pool.read_after(&token).await?;
    let n: i64 = conn
        .query_one("SELECT count(*) FROM f WHERE at = 'after failover'", &[])
        .await?
        .get(0);
    assert_eq!(n, 1);
    let mut conn = pool.read().await?;
    conn.query_one("SELECT 1", &[]).await?;
    Ok(())
}

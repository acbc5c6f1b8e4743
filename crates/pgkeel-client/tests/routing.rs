//! Routing against a real cluster: reads spread over both replicas, writes
//! only on the primary, reads keep succeeding while a replica stops, and
//! come back to it when it returns. Wrong credentials are refused up front.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestResult, eventually, node_of, pool, pool_config, port};
use pgkeel_client::{ErrorKind, ReplicatedPool};
use pgkeel_testkit::TempCluster;

/// Where `n` reads land, by node name.
async fn read_spread(
    cluster: &TempCluster,
    pool: &ReplicatedPool,
    n: usize,
) -> TestResult<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut conn = pool.read().await?;
        let port: i32 = conn
            .query_one("SELECT inet_server_port()", &[])
            .await?
            .get(0);
        *counts.entry(node_of(cluster, port as u16)).or_insert(0) += 1;
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spread_writes_stay_on_the_primary_and_reads_survive_a_replica_stop() -> TestResult {
    let cluster = TempCluster::start(2, "quorum").await?;
    let pool = pool(&cluster).await?;
    let status = pool.status();
    assert_eq!(
        status.primary.map(|p| p.port),
        Some(port(&cluster, "primary")?)
    );
    assert_eq!(status.replicas.len(), 2);

    // Reads: both replicas, evenly, never the primary.
    let counts = read_spread(&cluster, &pool, 200).await?;
    assert_eq!(counts.get("replica1"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("replica2"), Some(&100), "{counts:?}");

    // Writes: only the primary, committed, visible everywhere.
    let setup = pool.write().await?;
    setup
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, port int)")
        .await?;
    setup.commit().await?;
    for i in 0..50 {
        let tx = pool.write().await?;
        let row = tx
            .query_one(
                "INSERT INTO t VALUES ($1, inet_server_port()) RETURNING port",
                &[&i],
            )
            .await?;
        let port_used: i32 = row.get(0);
        assert_eq!(node_of(&cluster, port_used as u16), "primary");
        tx.commit().await?;
    }
    // A dropped transaction is rolled back, an explicit rollback too.
    {
        let tx = pool.write().await?;
        tx.execute("INSERT INTO t VALUES (1000, 0)", &[]).await?;
    }
    let tx = pool.write().await?;
    tx.execute("INSERT INTO t VALUES (1001, 0)", &[]).await?;
    tx.rollback().await?;
    // Committing after a failed statement is an error, not a silent
    // rollback.
    let tx = pool.write().await?;
    tx.execute("INSERT INTO t VALUES (1002, 0)", &[]).await?;
    let dup = tx.execute("INSERT INTO t VALUES (0, 0)", &[]).await;
    assert_eq!(
        dup.err().and_then(|e| e.code().cloned()),
        Some(tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    );
    let err = tx
        .commit()
        .await
        .err()
        .ok_or("commit of an aborted transaction succeeded")?;
    assert_eq!(err.kind(), ErrorKind::Query, "{err}");
    assert!(
        err.to_string().contains("committing") && err.to_string().contains("25P02"),
        "{err}"
    );
    let tx = pool.write().await?;
    let count: i64 = tx.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(count, 50, "uncommitted rows must not exist");
    let token = tx.commit().await?;
    let mut conn = pool.read_after(&token).await?;
    let count: i64 = conn.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
    assert_eq!(count, 50);

    // A replica stops while reads run: none of them fails.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let reader = {
        let pool = pool.clone();
        let stop = stop.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut ports = Vec::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let result = async {
                    let mut conn = pool.read().await?;
                    let row = conn.query_one("SELECT inet_server_port()", &[]).await?;
                    Ok::<i32, pgkeel_client::Error>(row.get(0))
                }
                .await;
                match result {
                    Ok(p) => ports.push(p),
                    Err(e) => failures.push(e.to_string()),
                }
                done.store(ports.len(), Ordering::Relaxed);
            }
            (ports, failures)
        })
    };
    // Reads on both replicas first (a fixed pause could pass before the
    // reader ran at all), then the stop; then at least 700 ms and as many
    // reads again as before it returned, so the last quarter checked below
    // is surely after it, however long the stop took.
    let wait_reads = |n: usize| {
        let done = done.clone();
        async move {
            let start = Instant::now();
            while done.load(Ordering::Relaxed) < n && start.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_reads(40).await;
    cluster.stop_node("replica1").await?;
    let before = done.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    wait_reads(2 * before + 20).await;
    stop.store(true, Ordering::Relaxed);
    let (ports, failures) = reader.await?;
    assert!(failures.is_empty(), "reads failed: {failures:?}");
    assert!(ports.len() > 50, "only {} reads ran", ports.len());
    let replica1 = i32::from(port(&cluster, "replica1")?);
    assert!(
        ports[..ports.len() / 4].contains(&replica1),
        "replica1 served nothing before it stopped"
    );
    let tail = &ports[ports.len() * 3 / 4..];
    assert!(
        !tail.contains(&replica1),
        "reads still reach the stopped replica"
    );
    let marked_down = eventually(Duration::from_secs(30), || async {
        pool.status()
            .replicas
            .iter()
            .any(|r| r.addr.port == replica1 as u16 && !r.up)
    })
    .await;
    assert!(marked_down, "{:?}", pool.status());
    let counts = read_spread(&cluster, &pool, 20).await?;
    assert_eq!(counts.get("replica2"), Some(&20), "{counts:?}");

    // Back up: it serves reads again without anyone rediscovering.
    cluster.start_node("replica1").await?;
    let back = eventually(Duration::from_secs(60), || async {
        read_spread(&cluster, &pool, 10)
            .await
            .is_ok_and(|c| c.get("replica1").copied().unwrap_or(0) > 0)
    })
    .await;
    assert!(
        back,
        "replica1 never served reads again: {:?}",
        pool.status()
    );

    // The same cluster with a wrong password: refused up front, clearly.
    let mut config = pool_config(&cluster).await?;
    config.password = Some("wrong".into());
    let err = ReplicatedPool::new(config)
        .await
        .err()
        .ok_or("wrong password accepted")?;
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("password"), "{err}");
    Ok(())
}

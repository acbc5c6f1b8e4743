//! `idle_transaction_timeout`: a client that sits idle inside a
//! transaction is disconnected with PostgreSQL's 25P03 and its transaction
//! rolled back, so it stops holding a server connection, its locks and
//! vacuum's horizon; busy transactions and idle clients outside a
//! transaction are left alone.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Env, TestResult, within};
use tokio_postgres::NoTls;

#[tokio::test]
async fn a_client_idle_in_a_transaction_is_disconnected_and_rolled_back() -> TestResult {
    within(180, async {
        let env = Env::start(1, |c| {
            c.idle_transaction_timeout = Some(Duration::from_secs(1));
        })
        .await?;
        let primary = env.cluster.client("primary").await?;
        primary
            .batch_execute("CREATE TABLE idle_tx (v int PRIMARY KEY)")
            .await?;

        // Every client logs in first: a login on a loaded machine may take
        // longer than the limit, which the busy one below must not spend
        // idle in its transaction.
        // The idle one: its connection task reports what ended it.
        let (idle, connection) = tokio_postgres::connect(&env.url(), NoTls).await?;
        let ended = tokio::spawn(connection);
        let busy = env.client().await?;
        // Idle outside a transaction for longer than the limit: left alone.
        let outside = env.client().await?;
        outside.query_one("SELECT 1", &[]).await?;
        idle.batch_execute("BEGIN; INSERT INTO idle_tx VALUES (1)")
            .await?;
        // Busy inside a transaction for longer than the limit: not idle.
        busy.batch_execute("BEGIN; INSERT INTO idle_tx VALUES (2)")
            .await?;
        busy.query_one("SELECT pg_sleep(2.5)", &[]).await?;
        busy.batch_execute("COMMIT").await?;
        outside.query_one("SELECT 1", &[]).await?;

        let end = tokio::time::timeout(Duration::from_secs(30), ended).await??;
        let err = end.err().ok_or("the idle client's connection ended without an error")?;
        let db = err.as_db_error().ok_or(format!("not a server error: {err}"))?;
        assert_eq!(db.code().code(), "25P03", "{db:?}");
        assert_eq!(db.severity(), "FATAL");
        assert!(db.message().contains("idle_transaction_timeout"), "{db:?}");
        assert!(idle.is_closed());
        assert!(idle.query_one("SELECT 1", &[]).await.is_err());

        // The transaction was rolled back and its backend is gone: the
        // row it inserted never appears and nothing is idle in a
        // transaction on the primary.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stuck: i64 = primary
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgkeel-proxy' AND state LIKE 'idle in transaction%'",
                    &[],
                )
                .await?
                .get(0);
            if stuck == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{stuck} backends still idle in a transaction");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rows: Vec<i32> = primary
            .query("SELECT v FROM idle_tx ORDER BY v", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(rows, vec![2]);
        // The row lock is free again: a new client takes the key.
        let next = env.client().await?;
        next.batch_execute("SET lock_timeout = '2s'; INSERT INTO idle_tx VALUES (1)")
            .await?;

        let proxy = env.proxy.as_ref().ok_or("no proxy")?;
        let shared = proxy.shared();
        assert_eq!(
            shared.metrics.idle_transaction_timeouts.load(Ordering::Relaxed),
            1
        );
        let metrics = pgkeel_proxy::metrics::render(shared);
        assert!(
            metrics.contains("pgkeel_proxy_idle_transaction_timeouts_total 1"),
            "{metrics}"
        );

        // A reload turns the limit off: idling in a transaction is allowed.
        let mut config = (*shared.config).clone();
        config.idle_transaction_timeout = None;
        let report = shared.reload(config)?;
        assert!(
            report.applied.contains(&"idle_transaction_timeout".to_string()),
            "{report:?}"
        );
        let patient = env.client().await?;
        patient
            .batch_execute("BEGIN; INSERT INTO idle_tx VALUES (3)")
            .await?;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        patient.batch_execute("COMMIT").await?;
        assert_eq!(
            shared.metrics.idle_transaction_timeouts.load(Ordering::Relaxed),
            1
        );
        Ok(())
    })
    .await
}

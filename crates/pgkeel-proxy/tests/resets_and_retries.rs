//! Review findings on resets of settings and retried pipelines, each as
//! PostgreSQL answers a direct connection: `RESET ALL` run from a named or
//! the unnamed prepared statement returns to the startup values; a
//! `RESET ALL` made on a replica inside `BEGIN READ ONLY` stays made
//! after the session moves to the primary; pipelined reads retried
//! together are each answered, even when the retry cannot run; a retry
//! never runs another statement than the one the client bound.

mod common;

use std::time::Duration;

use common::{EXEC, Env, Raw, TestResult, bind, parse, query, texts};
use pgkeel_wire::FrontendMessage;

const APP: &str = "SELECT current_setting('application_name')";
const SERIALIZABLE: (&str, &str) = ("options", "-c default_transaction_isolation=serializable");

fn describe(name: &[u8]) -> FrontendMessage<'_> {
    FrontendMessage::Describe { kind: b'S', name }
}

/// pgx's default mode and libpq's `PQprepare`: Parse + Describe + Sync,
/// then Bind + Execute + Sync of a `RESET ALL`, named or unnamed.
#[tokio::test]
async fn reset_all_from_a_prepared_statement_returns_to_startup_values() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (mut raw, _) = Raw::login_with(&env, &[("application_name", "start")]).await?;
        for name in ["s", ""] {
            for _ in 0..2 {
                query(&mut raw, "SET application_name = 'x'").await?;
                // Closed first: a Parse of a name the client has is refused.
                raw.send(&[
                    FrontendMessage::Close {
                        kind: b'S',
                        name: name.as_bytes(),
                    },
                    parse(name, "RESET ALL"),
                    describe(name.as_bytes()),
                    FrontendMessage::Sync,
                ])
                .await?;
                let a = raw.until_ready().await?;
                assert!(a.errors.is_empty(), "{name:?} parse: {a:?}");
                raw.send(&[bind(name), EXEC, FrontendMessage::Sync]).await?;
                let a = raw.until_ready().await?;
                assert!(a.errors.is_empty(), "{name:?} execute: {a:?}");
                let a = query(&mut raw, APP).await?;
                assert_eq!(texts(&a), ["start"], "after {name:?}");
            }
        }
        Ok(())
    })
    .await
}

/// A `RESET ALL` inside `BEGIN READ ONLY` on a replica, then a write: the
/// session moves to the primary with its startup values.
#[tokio::test]
async fn reset_all_made_on_a_replica_moves_with_the_session() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        env.client()
            .await?
            .batch_execute("CREATE TABLE w (x int)")
            .await?;
        let (mut raw, _) = Raw::login_with(&env, &[("application_name", "start")]).await?;
        query(&mut raw, "BEGIN READ ONLY").await?;
        query(&mut raw, "RESET ALL").await?;
        query(&mut raw, "COMMIT").await?;
        let a = query(&mut raw, "SELECT current_setting('application_name'), pg_is_in_recovery()")
            .await?;
        assert_eq!(texts(&a), ["start", "t"], "{a:?}");
        // The replica may not have the table yet: wait for it there.
        let replica = env.cluster.client("replica1").await?;
        let seen = pgkeel_testkit::TempCluster::eventually(Duration::from_secs(30), || async {
            replica.simple_query("SELECT 1 FROM w LIMIT 0").await.is_ok()
        })
        .await;
        assert!(seen, "table w never reached the replica");
        let a = query(
            &mut raw,
            "INSERT INTO w VALUES (1) RETURNING current_setting('application_name'), pg_is_in_recovery()",
        )
        .await?;
        assert_eq!(texts(&a), ["start", "f"], "{a:?}");
        let a = query(&mut raw, APP).await?;
        assert_eq!(texts(&a), ["start"], "{a:?}");
        Ok(())
    })
    .await
}

/// Reads pipelined by a serializable session (refused by the replica,
/// 0A000, retried together on the primary) whose retry cannot get a
/// connection: each read gets its error and ReadyForQuery, no hang.
#[tokio::test]
async fn a_retry_that_cannot_run_answers_every_pipelined_read() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| {
            c.pool_size = 1;
            c.queue_wait = Duration::from_secs(1);
        })
        .await?;
        let (mut b, _) = Raw::login_with(&env, &[SERIALIZABLE]).await?;
        // The replica's connection takes b's settings now, so the reads
        // below are pipelined on it (not held behind a settings query).
        let ans = query(&mut b, "SELECT 0").await?;
        assert_eq!(texts(&ans), ["0"], "{ans:?}");
        let mut a = Raw::login(&env).await?;
        query(&mut a, "BEGIN").await?;
        query(&mut a, "SELECT txid_current()").await?;
        b.send(&[
            FrontendMessage::Query(b"SELECT 1"),
            FrontendMessage::Query(b"SELECT 2"),
        ])
        .await?;
        for n in 1..=2 {
            let ans = b.until_ready().await?;
            assert_eq!(ans.errors, ["53300"], "read {n}: {ans:?}");
        }
        query(&mut a, "COMMIT").await?;
        let ans = query(&mut b, "SELECT 3").await?;
        assert_eq!(texts(&ans), ["3"], "{ans:?}");
        Ok(())
    })
    .await
}

/// An extended read pipelined behind another, which changes the unnamed
/// statement: the first is never answered with the second's statement.
#[tokio::test]
async fn a_retry_never_runs_a_statement_parsed_later() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (mut b, _) = Raw::login_with(&env, &[SERIALIZABLE]).await?;
        b.send(&[
            parse("", "SELECT 'old'"),
            describe(b""),
            FrontendMessage::Sync,
        ])
        .await?;
        b.until_ready().await?;
        b.send(&[
            bind(""),
            EXEC,
            FrontendMessage::Sync,
            parse("", "SELECT 'new'"),
            bind(""),
            EXEC,
            FrontendMessage::Sync,
        ])
        .await?;
        let first = b.until_ready().await?;
        assert_ne!(texts(&first), ["new"], "{first:?}");
        let second = b.until_ready().await?;
        assert!(
            texts(&second) == ["new"] || !second.errors.is_empty(),
            "{second:?}"
        );
        Ok(())
    })
    .await
}

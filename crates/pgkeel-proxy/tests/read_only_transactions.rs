//! `BEGIN READ ONLY` transactions run on a replica; one the replica
//! refuses at its start (a hot standby runs no serializable transaction)
//! moves to the primary with the statements that opened it, instead of
//! failing: with `default_transaction_isolation = serializable` (a role's
//! or a client's), and with `SET TRANSACTION ISOLATION LEVEL
//! SERIALIZABLE`.

mod common;

use common::{Env, Raw, TestResult, query, texts};

/// A raw client whose transactions are serializable by default.
async fn serializable_client(env: &Env) -> TestResult<Raw> {
    let (raw, _) = Raw::login_with(
        env,
        &[("options", "-c default_transaction_isolation=serializable")],
    )
    .await?;
    Ok(raw)
}

/// Runs `sql` and checks it succeeded, leaving the transaction status
/// `status`; its first row as text.
async fn ok(raw: &mut Raw, sql: &str, status: char) -> TestResult<Vec<String>> {
    let a = query(raw, sql).await?;
    assert!(a.errors.is_empty(), "{sql}: {a:?}");
    assert_eq!(a.status, Some(status), "{sql}: {a:?}");
    Ok(texts(&a))
}

#[tokio::test]
async fn a_serializable_read_only_transaction_moves_to_the_primary() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let mut raw = serializable_client(&env).await?;
        // BEGIN is answered by the replica; the first read is refused
        // there and the transaction runs on the primary from its start.
        ok(&mut raw, "BEGIN READ ONLY", 'T').await?;
        ok(&mut raw, "SET LOCAL statement_timeout = '7s'", 'T').await?;
        let first = ok(
            &mut raw,
            "SELECT pg_is_in_recovery(), current_setting('transaction_isolation'), \
             current_setting('statement_timeout'), current_setting('transaction_read_only'), now()",
            'T',
        )
        .await?;
        assert_eq!(first[..4], ["f", "serializable", "7s", "on"], "{first:?}");
        // Still one transaction: the same start time, and a write refused.
        let again = ok(&mut raw, "SELECT pg_is_in_recovery(), now()", 'T').await?;
        assert_eq!(again, ["f", first[4].as_str()]);
        let a = query(&mut raw, "CREATE TABLE t_ro (v int)").await?;
        assert_eq!(
            (a.errors.as_slice(), a.status),
            (&["25006".to_string()][..], Some('E'))
        );
        ok(&mut raw, "ROLLBACK", 'I').await?;
        // BEGIN and the read in one query string: the whole string runs
        // again on the primary.
        let a = query(&mut raw, "BEGIN READ ONLY; SELECT pg_is_in_recovery()").await?;
        assert_eq!(
            (texts(&a), a.errors.len(), a.status),
            (vec!["f".to_string()], 0, Some('T'))
        );
        ok(&mut raw, "COMMIT", 'I').await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn set_transaction_serializable_moves_the_transaction() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let mut raw = Raw::login(&env).await?;
        ok(&mut raw, "BEGIN READ ONLY", 'T').await?;
        ok(&mut raw, "SET LOCAL work_mem = '9MB'", 'T').await?;
        ok(
            &mut raw,
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            'T',
        )
        .await?;
        let r = ok(
            &mut raw,
            "SELECT pg_is_in_recovery(), current_setting('transaction_isolation'), \
             current_setting('work_mem'), current_setting('transaction_read_only')",
            'T',
        )
        .await?;
        assert_eq!(r, ["f", "serializable", "9MB", "on"]);
        ok(&mut raw, "COMMIT", 'I').await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_driver_transaction_over_the_extended_protocol_moves() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let mut config: tokio_postgres::Config = env.url().parse()?;
        config.options("-c default_transaction_isolation=serializable");
        let (mut client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let tx = client.build_transaction().read_only(true).start().await?;
        let row = tx
            .query_one(
                "SELECT pg_is_in_recovery(), current_setting('transaction_isolation')",
                &[],
            )
            .await?;
        assert!(!row.get::<_, bool>(0));
        assert_eq!(row.get::<_, String>(1), "serializable");
        let n: i64 = tx.query_one("SELECT $1::int8 + 1", &[&41i64]).await?.get(0);
        assert_eq!(n, 42);
        tx.commit().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn other_read_only_transactions_stay_on_the_replica() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let mut raw = Raw::login(&env).await?;
        ok(&mut raw, "BEGIN READ ONLY", 'T').await?;
        let r = ok(
            &mut raw,
            "SELECT pg_is_in_recovery(), current_setting('transaction_isolation')",
            'T',
        )
        .await?;
        assert_eq!(r, ["t", "read committed"]);
        // An error that is not a hot standby's refusal is the client's.
        let a = query(&mut raw, "SELECT 1/0").await?;
        assert_eq!(
            (a.errors.as_slice(), a.status),
            (&["22012".to_string()][..], Some('E'))
        );
        ok(&mut raw, "ROLLBACK", 'I').await?;
        // After its first read, a transaction does not move: REPEATABLE
        // READ then SERIALIZABLE is refused as PostgreSQL refuses it.
        ok(
            &mut raw,
            "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ",
            'T',
        )
        .await?;
        ok(&mut raw, "SELECT pg_is_in_recovery()", 'T').await?;
        let a = query(&mut raw, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await?;
        assert_eq!(a.errors, ["25001"], "{a:?}");
        ok(&mut raw, "ROLLBACK", 'I').await?;
        Ok(())
    })
    .await
}

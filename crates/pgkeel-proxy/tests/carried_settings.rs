//! A plain session-level `SET`/`RESET` (what frameworks send when they
//! connect) does not pin the client: its values become the client's
//! settings, applied on every connection it is given (replicas too), and
//! no other client sees them. `RESET` returns to the value the client
//! logged in with, as in PostgreSQL. Nor do the resets client-side pools
//! send when a connection is handed back (asyncpg, npgsql).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{EXEC, Env, Raw, TestResult, bind, parse, query, texts};
use pgkeel_wire::{BackendMessage, FrontendMessage};

/// Runs `sql` and checks it succeeded outside a transaction; its first
/// row as text.
async fn ok(raw: &mut Raw, sql: &str) -> TestResult<Vec<String>> {
    let a = query(raw, sql).await?;
    assert!(a.errors.is_empty(), "{sql}: {a:?}");
    assert_eq!(a.status, Some('I'), "{sql}: {a:?}");
    Ok(texts(&a))
}

fn carried(env: &Env) -> TestResult<u64> {
    Ok(env.metrics()?.settings_carried.load(Ordering::Relaxed))
}

/// One server connection per node: a pinned client would hold it, and
/// every client takes turns on the same ones.
async fn env() -> TestResult<Env> {
    Env::start(1, |c| c.pool_size = 1).await
}

#[tokio::test]
async fn a_plain_set_follows_the_client_without_pinning_it() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let (mut a, _) = Raw::login_with(&env, &[]).await?;
        let mut b = Raw::login(&env).await?;
        // What Rails sends when it connects, one statement at a time.
        for sql in [
            "SET client_min_messages TO 'warning'",
            "SET standard_conforming_strings = on",
            "SET intervalstyle = iso_8601",
            "SET SESSION timezone TO 'UTC'",
            "SET statement_timeout = '7s'; SET app.tenant = '42'",
        ] {
            ok(&mut a, sql).await?;
        }
        assert_eq!(carried(&env)?, 5);
        // Not pinned: the other client gets the (only) connections, and
        // sees none of it.
        let theirs = "SELECT current_setting('statement_timeout'), \
                      current_setting('app.tenant', true) IS DISTINCT FROM '42', \
                      current_setting('IntervalStyle')";
        assert_eq!(ok(&mut b, theirs).await?, ["0", "t", "postgres"]);
        // The client's reads still go to the replica, with its settings.
        let mine = "SELECT current_setting('client_min_messages'), current_setting('IntervalStyle'), \
                    current_setting('TimeZone'), current_setting('statement_timeout'), \
                    current_setting('app.tenant'), pg_is_in_recovery()";
        assert_eq!(
            ok(&mut a, mine).await?,
            ["warning", "iso_8601", "UTC", "7s", "42", "t"]
        );
        // And its transactions on the primary.
        let a_tx = query(&mut a, &format!("BEGIN; {mine}; COMMIT")).await?;
        assert_eq!(texts(&a_tx), ["warning", "iso_8601", "UTC", "7s", "42", "f"]);
        assert_eq!(ok(&mut b, theirs).await?, ["0", "t", "postgres"]);
        // A SET the server refuses changes nothing and pins nothing.
        let refused = query(&mut a, "SET statement_timeout = 'soon'").await?;
        assert_eq!(refused.errors, ["22023"], "{refused:?}");
        assert_eq!(ok(&mut a, "SHOW statement_timeout").await?, ["7s"]);
        assert_eq!(ok(&mut b, "SHOW statement_timeout").await?, ["0"]);
        // The TimeZone report of the SET reached the client.
        let reported = query(&mut a, "SET TIME ZONE 'Europe/Paris'").await?;
        assert!(reported.tags.contains('S'), "{reported:?}");
        assert_eq!(ok(&mut a, "SHOW TimeZone").await?, ["Europe/Paris"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn reset_returns_to_the_login_value() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let (mut a, _) = Raw::login_with(&env, &[("options", "-c work_mem=5MB")]).await?;
        let mut b = Raw::login(&env).await?;
        let show = "SELECT current_setting('work_mem'), current_setting('lock_timeout')";
        ok(&mut a, "SET work_mem = '9MB'; SET lock_timeout = '3s'").await?;
        assert_eq!(ok(&mut a, show).await?, ["9MB", "3s"]);
        assert_eq!(ok(&mut b, show).await?, ["4MB", "0"]);
        // RESET and SET ... TO DEFAULT: the login value, or the server's.
        ok(&mut a, "RESET work_mem; SET lock_timeout TO DEFAULT").await?;
        assert_eq!(ok(&mut a, show).await?, ["5MB", "0"]);
        assert_eq!(
            ok(&mut a, &format!("BEGIN; {show}; COMMIT")).await?,
            ["5MB", "0"]
        );
        // RESET ALL: also what was set with SET goes.
        ok(&mut a, "SET work_mem = '9MB'").await?;
        ok(&mut a, "RESET ALL").await?;
        assert_eq!(ok(&mut a, show).await?, ["5MB", "0"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn text_reading_settings_pin_once_statements_exist() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| {
            c.pool_size = 1;
            c.queue_wait = Duration::from_millis(500);
        })
        .await?;
        let mut a = Raw::login(&env).await?;
        // With a prepared statement, a change of how text is read pins
        // (the statement would be parsed again elsewhere).
        let p = a.run_parsed("s1", "SELECT 1").await?;
        assert!(p.errors.is_empty(), "{p:?}");
        ok(&mut a, "SET standard_conforming_strings = off").await?;
        assert_eq!(carried(&env)?, 0);
        let mut b = Raw::login(&env).await?;
        // The pool of one on the primary is a's now: b's write waits and
        // is refused when the queue wait ends.
        let waited = query(&mut b, "CREATE TEMP TABLE t (v int)").await?;
        assert_eq!(waited.errors, ["53300"], "{waited:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_set_over_the_extended_protocol_is_carried_too() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        // tokio-postgres: Parse of a named statement in a unit of its
        // own, then Bind/Execute.
        let client = env.client().await?;
        client.execute("SET work_mem = '6MB'", &[]).await?;
        // JDBC: Parse/Bind/Describe/Execute/Sync of the unnamed statement.
        let mut raw = Raw::login(&env).await?;
        raw.send(&[
            parse("", "SET lock_timeout = '4s'"),
            bind(""),
            FrontendMessage::Describe {
                kind: b'P',
                name: b"",
            },
            EXEC,
            FrontendMessage::Sync,
        ])
        .await?;
        let a = raw.until_ready().await?;
        assert!(a.errors.is_empty(), "{a:?}");
        // A value passed as a parameter, as an application sets a tenant
        // id for row-level security.
        let set = client
            .query_one("SELECT set_config('app.tenant', $1, false)", &[&"42"])
            .await?;
        assert_eq!(set.get::<_, String>(0), "42");
        assert_eq!(carried(&env)?, 3);
        let tenant = client
            .query_one(
                "SELECT current_setting('app.tenant'), pg_is_in_recovery()",
                &[],
            )
            .await?;
        assert_eq!((tenant.get::<_, String>(0), tenant.get::<_, bool>(1)), ("42".into(), true));
        // Neither is pinned (one connection per node), and each keeps
        // its own setting on the replica.
        let row = client
            .query_one(
                "SELECT current_setting('work_mem'), current_setting('lock_timeout'), \
                 pg_is_in_recovery()",
                &[],
            )
            .await?;
        let got: (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(got, ("6MB".into(), "0".into(), true));
        let mine = query(
            &mut raw,
            "SELECT current_setting('lock_timeout'), current_setting('work_mem'), pg_is_in_recovery()",
        )
        .await?;
        assert_eq!(texts(&mine), ["4s", "4MB", "t"]);
        Ok(())
    })
    .await
}

/// Runs `sql`, and returns the ParameterStatus values the client was
/// sent, in order, up to a short while after its ReadyForQuery.
async fn reports(raw: &mut Raw, sql: &str) -> TestResult<Vec<(String, String)>> {
    raw.send(&[FrontendMessage::Query(sql.as_bytes())]).await?;
    let mut seen = Vec::new();
    let mut ready = false;
    loop {
        let next = if ready {
            raw.next_within(Duration::from_millis(300)).await?
        } else {
            Some(raw.next().await?)
        };
        let Some((tag, frame)) = next else {
            return Ok(seen);
        };
        match tag {
            b'E' => return Err(format!("{sql}: error {frame:?}").into()),
            b'Z' => ready = true,
            b'S' => {
                if let Ok(BackendMessage::ParameterStatus { name, value }) =
                    BackendMessage::decode(&frame)
                {
                    seen.push((name.to_string(), value.to_string()));
                }
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_client_side_pool_reset_does_not_pin() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let (mut a, _) = Raw::login_with(
            &env,
            &[
                ("options", "-c work_mem=5MB"),
                ("application_name", "myapp"),
            ],
        )
        .await?;
        let mut b = Raw::login(&env).await?;
        // b prepares a statement on the primary's only connection.
        let p = b.run_parsed("b1", "SELECT 2").await?;
        assert!(p.errors.is_empty(), "{p:?}");
        let p = a.run_parsed("a1", "SELECT 1").await?;
        assert!(p.errors.is_empty(), "{p:?}");
        ok(
            &mut a,
            "SET work_mem = '9MB'; SET application_name = 'other'",
        )
        .await?;
        // asyncpg's reset query: the login values come back, and the
        // client is told so after the reset's own reports.
        let seen = reports(
            &mut a,
            "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
        )
        .await?;
        let last_name = seen.iter().rev().find(|(n, _)| n == "application_name");
        assert_eq!(
            last_name.map(|(_, v)| v.as_str()),
            Some("myapp"),
            "{seen:?}"
        );
        let show = "SELECT current_setting('work_mem'), current_setting('application_name')";
        assert_eq!(ok(&mut a, show).await?, ["5MB", "myapp"]);
        assert_eq!(ok(&mut b, show).await?, ["4MB", "pgkeel-proxy"]);
        // npgsql's DISCARD ALL: a's statements are gone, as in
        // PostgreSQL; b's still run (prepared again where needed).
        ok(&mut a, "DISCARD ALL").await?;
        a.send(&[bind("a1"), EXEC, FrontendMessage::Sync]).await?;
        let gone = a.until_ready().await?;
        assert_eq!(gone.errors, ["26000"], "{gone:?}");
        let again = b.run_parsed("b2", "SELECT 3").await?;
        assert!(again.errors.is_empty(), "{again:?}");
        b.send(&[bind("b1"), EXEC, FrontendMessage::Sync]).await?;
        let b1 = b.until_ready().await?;
        assert_eq!(
            (b1.errors.len(), b1.first.as_deref()),
            (0, Some("2")),
            "{b1:?}"
        );
        assert_eq!(ok(&mut a, show).await?, ["5MB", "myapp"]);
        // Neither was pinned: a third client gets the connections.
        let mut c = Raw::login(&env).await?;
        ok(&mut c, "CREATE TEMP TABLE mine (v int)").await?;
        assert_eq!(carried(&env)?, 1);
        Ok(())
    })
    .await
}

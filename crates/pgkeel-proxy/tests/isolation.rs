//! Isolation between clients that take turns on the same pooled server
//! connection (`pool_size = 1`): what one client leaves on a connection
//! must not be seen by the next, and every client must get the answers
//! PostgreSQL would give it on a connection of its own.
//!
//! Each scenario is a function with what it proves in its doc comment;
//! the scenarios of one cluster run in turn (so they really share the
//! connection) and every failure is reported, not only the first.

mod common;

use std::time::Duration;

use common::{EXEC, Env, NO_PARAMS, Raw, TestResult, bind, parse, query as q};
use pgkeel_testkit::TempCluster;
use pgkeel_wire::FrontendMessage;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Fails the scenario with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+).into());
        }
    };
}

/// The first column of the first row of `sql`, which must succeed.
async fn one(raw: &mut Raw, sql: &str) -> TestResult<Option<String>> {
    let a = q(raw, sql).await?;
    ensure!(a.errors.is_empty(), "{sql}: {a:?}");
    Ok(a.first)
}

/// The first row of `sql` as text (NULL as "NULL"), which must succeed.
async fn row(raw: &mut Raw, sql: &str) -> TestResult<Vec<String>> {
    let a = q(raw, sql).await?;
    ensure!(a.errors.is_empty(), "{sql}: {a:?}");
    Ok(common::texts(&a))
}

/// Says goodbye and waits until the proxy has closed the session (and so
/// reset or closed its server connection).
async fn bye(mut raw: Raw) -> TestResult {
    raw.send(&[FrontendMessage::Terminate]).await?;
    common::read_to_close(&mut raw.s).await?;
    Ok(())
}

/// Whether `sql` runs (active) on the primary within 30 s.
async fn running_on_primary(env: &Env, sql: &str) -> TestResult<bool> {
    let direct = env.cluster.client("primary").await?;
    Ok(TempCluster::eventually(Duration::from_secs(30), || async {
        direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&sql],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await)
}

fn bind_portal<'a>(portal: &'a [u8], statement: &'a [u8]) -> FrontendMessage<'a> {
    FrontendMessage::Bind {
        portal,
        statement,
        tail: NO_PARAMS,
    }
}

fn exec_portal(portal: &[u8], max_rows: i32) -> FrontendMessage<'_> {
    FrontendMessage::Execute { portal, max_rows }
}

type Scenario<'a> = (
    &'static str,
    std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + 'a>>,
);

/// Runs the scenarios in turn and fails with every failure.
async fn run_all(scenarios: Vec<Scenario<'_>>) -> TestResult {
    let mut failed = Vec::new();
    for (name, body) in scenarios {
        let started = std::time::Instant::now();
        match tokio::time::timeout(Duration::from_secs(30), body).await {
            Ok(Ok(())) => eprintln!("ok   {name} ({:?})", started.elapsed()),
            Ok(Err(e)) => {
                eprintln!("FAIL {name}: {e}");
                failed.push(format!("{name}: {e}"));
            }
            Err(_) => {
                eprintln!("HANG {name}");
                failed.push(format!("{name}: no answer within 30 s"));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n").into())
    }
}

// ---------------------------------------------------------------------
// Primary only, one server connection: every client shares it.
// ---------------------------------------------------------------------

#[tokio::test]
async fn clients_sharing_one_primary_connection() -> TestResult {
    common::within(150, async {
        let env = Env::start(0, |c| c.pool_size = 1).await?;
        env.client()
            .await?
            .batch_execute(
                "CREATE TABLE iso_t (v int); CREATE SCHEMA iso_s; CREATE TABLE iso_s.rt (a int); \
                 CREATE TABLE public.rt (a int, b int); \
                 INSERT INTO iso_s.rt VALUES (1); INSERT INTO public.rt VALUES (1, 2)",
            )
            .await?;
        let env = &env;
        run_all(vec![
            ("portal_outside_tx", Box::pin(portal_outside_tx(env))),
            ("portal_inside_tx", Box::pin(portal_inside_tx(env))),
            ("session_settings_pinned", Box::pin(session_settings(env))),
            ("set_local", Box::pin(set_local(env))),
            ("temp_table", Box::pin(temp_table(env))),
            ("temp_objects", Box::pin(temp_objects(env))),
            (
                "statements_after_runtime_settings",
                Box::pin(statements_after_runtime_settings(env)),
            ),
            ("prepare_hold_listen", Box::pin(prepare_hold_listen(env))),
            ("advisory_lock", Box::pin(advisory_lock(env))),
            ("leave_mid_tx", Box::pin(leave_mid_tx(env))),
            ("leave_mid_copy", Box::pin(leave_mid_copy(env))),
            ("leave_mid_batch", Box::pin(leave_mid_batch(env))),
            ("error_mid_pipeline", Box::pin(error_mid_pipeline(env))),
            ("startup_timeout", Box::pin(startup_timeout(env))),
            ("startup_params", Box::pin(startup_params(env))),
            ("cancel_right_client", Box::pin(cancel_right_client(env))),
            ("cancel_while_queued", Box::pin(cancel_while_queued(env))),
            ("set_role", Box::pin(set_role(env))),
            ("unnamed_of_another_client", Box::pin(unnamed_other(env))),
        ])
        .await
    })
    .await
}

/// A portal of an implicit transaction (no BEGIN) is gone after its Sync,
/// as in PostgreSQL: the suspended portal cannot be resumed in the next
/// batch, even after another client used the connection in between.
async fn portal_outside_tx(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    let mut b = Raw::login(env).await?;
    a.send(&[
        parse("", "SELECT generate_series(1, 3)"),
        bind_portal(b"p", b""),
        exec_portal(b"p", 1),
        FrontendMessage::Sync,
    ])
    .await?;
    let ans = a.until_ready().await?;
    ensure!(
        ans.tags == "12DsZ" && ans.status == Some('I'),
        "suspended: {ans:?}"
    );
    ensure!(one(&mut b, "SELECT 7").await? == Some("7".into()), "b");
    a.send(&[exec_portal(b"p", 0), FrontendMessage::Sync])
        .await?;
    let ans = a.until_ready().await?;
    ensure!(ans.errors == ["34000"], "resumed after Sync: {ans:?}");
    Ok(())
}

/// Inside a transaction a suspended portal is resumed, described and
/// closed across batches, on the same server connection; a client waiting
/// for that connection runs once the transaction ends, and the first
/// client's rolled-back insert is not visible to it.
async fn portal_inside_tx(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    let mut b = Raw::login(env).await?;
    ensure!(q(&mut a, "BEGIN").await?.status == Some('T'), "begin");
    ensure!(
        q(&mut a, "INSERT INTO iso_t VALUES (-1)")
            .await?
            .errors
            .is_empty(),
        "insert"
    );
    a.send(&[
        parse("", "SELECT generate_series(1, 3)"),
        bind_portal(b"p", b""),
        exec_portal(b"p", 1),
        FrontendMessage::Sync,
    ])
    .await?;
    let ans = a.until_ready().await?;
    ensure!(ans.tags == "12DsZ" && ans.status == Some('T'), "{ans:?}");
    let waiting = tokio::spawn(async move {
        let r = one(&mut b, "SELECT count(*) FROM iso_t WHERE v = -1").await;
        r.map_err(|e| e.to_string())
    });
    a.send(&[
        FrontendMessage::Describe {
            kind: b'P',
            name: b"p",
        },
        exec_portal(b"p", 1),
        FrontendMessage::Sync,
    ])
    .await?;
    let ans = a.until_ready().await?;
    ensure!(
        ans.tags == "TDsZ" && ans.first.as_deref() == Some("2"),
        "{ans:?}"
    );
    a.send(&[
        exec_portal(b"p", 0),
        FrontendMessage::Close {
            kind: b'P',
            name: b"p",
        },
        FrontendMessage::Sync,
    ])
    .await?;
    let ans = a.until_ready().await?;
    ensure!(
        ans.tags == "DC3Z" && ans.first.as_deref() == Some("3"),
        "{ans:?}"
    );
    a.send(&[exec_portal(b"p", 0), FrontendMessage::Sync])
        .await?;
    let ans = a.until_ready().await?;
    ensure!(
        ans.errors == ["34000"] && ans.status == Some('E'),
        "closed portal: {ans:?}"
    );
    ensure!(!waiting.is_finished(), "b ran during a's transaction");
    ensure!(q(&mut a, "ROLLBACK").await?.status == Some('I'), "rollback");
    let seen = waiting.await??;
    ensure!(seen.as_deref() == Some("0"), "b saw {seen:?}");
    Ok(())
}

const SETTINGS: &str = "SELECT current_setting('search_path'), \
    current_setting('default_transaction_read_only'), current_setting('statement_timeout'), \
    current_setting('work_mem'), current_setting('transaction_isolation')";

/// SET, `set_config(..., false)` in a SELECT, SET SESSION
/// CHARACTERISTICS and `default_transaction_read_only` stay with the
/// client that made them (it keeps them across its transactions), and the
/// next client on that server connection has the defaults and can write.
async fn session_settings(env: &Env) -> TestResult {
    let mut b = Raw::login(env).await?;
    let defaults = row(&mut b, SETTINGS).await?;
    bye(b).await?;
    let mut a = Raw::login(env).await?;
    for sql in [
        "SET search_path = pg_catalog",
        "SELECT set_config('statement_timeout', '42s', false)",
        "SET work_mem = '7MB'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET default_transaction_read_only = on",
    ] {
        let ans = q(&mut a, sql).await?;
        ensure!(ans.errors.is_empty(), "{sql}: {ans:?}");
    }
    let mine = row(&mut a, SETTINGS).await?;
    ensure!(
        mine == ["pg_catalog", "on", "42s", "7MB", "repeatable read"],
        "a: {mine:?}"
    );
    bye(a).await?;
    let mut b = Raw::login(env).await?;
    let seen = row(&mut b, SETTINGS).await?;
    ensure!(
        seen == defaults,
        "b after a: {seen:?}, defaults {defaults:?}"
    );
    let ans = q(&mut b, "INSERT INTO iso_t VALUES (1)").await?;
    ensure!(ans.errors.is_empty(), "b's write: {ans:?}");
    Ok(())
}

/// `SET LOCAL` ends with its transaction: the next client on the
/// connection (and the same client later) has the default.
async fn set_local(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    let mut b = Raw::login(env).await?;
    let before = one(&mut b, "SHOW work_mem").await?;
    q(&mut a, "BEGIN").await?;
    q(&mut a, "SET LOCAL work_mem = '9MB'").await?;
    ensure!(
        one(&mut a, "SHOW work_mem").await?.as_deref() == Some("9MB"),
        "local"
    );
    q(&mut a, "COMMIT").await?;
    ensure!(one(&mut b, "SHOW work_mem").await? == before, "b");
    ensure!(one(&mut a, "SHOW work_mem").await? == before, "a");
    Ok(())
}

/// Temporary tables (CREATE TEMP TABLE, SELECT INTO TEMP) stay with their
/// client while it is connected and are gone for the next one.
async fn temp_table(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    for sql in [
        "CREATE TEMP TABLE iso_tmp (v int)",
        "INSERT INTO iso_tmp VALUES (1)",
        "SELECT 5 AS v INTO TEMP iso_tmp2",
    ] {
        let ans = q(&mut a, sql).await?;
        ensure!(ans.errors.is_empty(), "{sql}: {ans:?}");
    }
    ensure!(
        one(
            &mut a,
            "SELECT (SELECT v FROM iso_tmp) + (SELECT v FROM iso_tmp2)"
        )
        .await?
        .as_deref()
            == Some("6"),
        "a's own temp tables"
    );
    bye(a).await?;
    let mut b = Raw::login(env).await?;
    for sql in ["SELECT * FROM iso_tmp", "SELECT * FROM iso_tmp2"] {
        let ans = q(&mut b, sql).await?;
        ensure!(ans.errors == ["42P01"], "b: {sql}: {ans:?}");
    }
    Ok(())
}

/// Temporary objects made without the word TEMP (in `pg_temp`), temporary
/// sequences and views, a DO block's `set_config` and `setseed` pin their
/// client like a temporary table: the next client on the connection sees
/// none of them (before, the objects and the setting stayed on the pooled
/// connection for it).
async fn temp_objects(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    for sql in [
        "CREATE TABLE pg_temp.iso_ptmp (secret text)",
        "INSERT INTO pg_temp.iso_ptmp VALUES ('a''s')",
        "CREATE TEMP SEQUENCE iso_tseq",
        "CREATE TEMP VIEW iso_tview AS SELECT 'a''s view' AS secret",
        "DO $$BEGIN PERFORM set_config('work_mem', '3MB', false); END$$",
        "SELECT setseed(0.25)",
    ] {
        let ans = q(&mut a, sql).await?;
        ensure!(ans.errors.is_empty(), "{sql}: {ans:?}");
    }
    ensure!(
        one(&mut a, "SELECT secret FROM iso_ptmp").await?.as_deref() == Some("a's"),
        "a's own pg_temp table"
    );
    ensure!(
        one(&mut a, "SHOW work_mem").await?.as_deref() == Some("3MB"),
        "a's own work_mem"
    );
    bye(a).await?;
    let mut b = Raw::login(env).await?;
    for sql in [
        "SELECT secret FROM pg_temp.iso_ptmp",
        "SELECT nextval('iso_tseq')",
        "SELECT secret FROM iso_tview",
    ] {
        let ans = q(&mut b, sql).await?;
        ensure!(ans.errors == ["42P01"], "b: {sql}: {ans:?}");
    }
    let default = one(
        &mut b,
        "SELECT reset_val || unit FROM pg_settings WHERE name = 'work_mem'",
    )
    .await?;
    let shown = one(
        &mut b,
        "SELECT setting || unit FROM pg_settings WHERE name = 'work_mem'",
    )
    .await?;
    ensure!(
        shown == default,
        "b's work_mem is a's: {shown:?} vs {default:?}"
    );
    Ok(())
}

/// A statement parsed after the client changed what text means (`SET
/// standard_conforming_strings = off`) is its own, not another client's
/// server-side statement of the same text: the proxy shares statements by
/// text and startup settings, and must not answer this Parse with the one
/// another client left on the connection (before: 4 instead of 3).
async fn statements_after_runtime_settings(env: &Env) -> TestResult {
    let text = r"SELECT length('a\\b')";
    let mut b = Raw::login(env).await?;
    let ans = b.run_parsed("s", text).await?;
    ensure!(ans.first.as_deref() == Some("4"), "b: {ans:?}");
    let mut a = Raw::login(env).await?;
    let ans = q(&mut a, "SET standard_conforming_strings = off").await?;
    ensure!(ans.errors.is_empty(), "{ans:?}");
    let ans = a.run_parsed("s_a", text).await?;
    ensure!(ans.first.as_deref() == Some("3"), "a: {ans:?}");
    bye(a).await?;
    let ans = b.run_parsed("s2", text).await?;
    ensure!(ans.first.as_deref() == Some("4"), "b again: {ans:?}");
    Ok(())
}

/// SQL PREPARE, a WITH HOLD cursor and LISTEN stay with their client, and
/// the next client on the connection has none of them (nor receives the
/// notifications).
async fn prepare_hold_listen(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    for sql in [
        "PREPARE iso_p AS SELECT 41 + 1",
        "DECLARE iso_c CURSOR WITH HOLD FOR SELECT generate_series(1, 3)",
        "LISTEN iso_ch",
    ] {
        let ans = q(&mut a, sql).await?;
        ensure!(ans.errors.is_empty(), "{sql}: {ans:?}");
    }
    ensure!(
        one(&mut a, "EXECUTE iso_p").await?.as_deref() == Some("42"),
        "a's statement"
    );
    ensure!(
        one(&mut a, "FETCH iso_c").await?.as_deref() == Some("1"),
        "a's cursor"
    );
    // a's own notification reaches it.
    let ans = q(&mut a, "NOTIFY iso_ch, 'hi'").await?;
    ensure!(ans.tags.contains('A'), "a's notification: {ans:?}");
    bye(a).await?;
    let mut b = Raw::login(env).await?;
    let ans = q(&mut b, "EXECUTE iso_p").await?;
    ensure!(ans.errors == ["26000"], "b: EXECUTE: {ans:?}");
    let ans = q(&mut b, "FETCH iso_c").await?;
    ensure!(ans.errors == ["34000"], "b: FETCH: {ans:?}");
    ensure!(
        one(&mut b, "SELECT count(*) FROM pg_listening_channels()")
            .await?
            .as_deref()
            == Some("0"),
        "b listens"
    );
    let ans = q(&mut b, "NOTIFY iso_ch, 'x'").await?;
    ensure!(!ans.tags.contains('A'), "b got a's notification: {ans:?}");
    Ok(())
}

/// A session advisory lock taken in a SELECT is held while its client is
/// connected (another session waits for it) and released when it leaves;
/// the next client on the connection does not hold it.
async fn advisory_lock(env: &Env) -> TestResult {
    let direct = env.cluster.client("primary").await?;
    let mut a = Raw::login(env).await?;
    ensure!(
        one(&mut a, "SELECT pg_advisory_lock(4711)")
            .await?
            .is_some(),
        "lock"
    );
    // Between a's transactions, the lock is still a's.
    let free: bool = direct
        .query_one("SELECT pg_try_advisory_lock(4711)", &[])
        .await?
        .get(0);
    ensure!(!free, "a's lock was not held between its transactions");
    bye(a).await?;
    let free: bool = direct
        .query_one("SELECT pg_try_advisory_lock(4711)", &[])
        .await?
        .get(0);
    ensure!(free, "a's lock outlived a");
    direct
        .batch_execute("SELECT pg_advisory_unlock(4711)")
        .await?;
    let mut b = Raw::login(env).await?;
    ensure!(
        one(&mut b, "SELECT pg_advisory_unlock(4711)")
            .await?
            .as_deref()
            == Some("f"),
        "b held a's lock"
    );
    Ok(())
}

/// A client that leaves in the middle of a transaction (its insert sent,
/// no COMMIT): the next client on the connection is outside any
/// transaction and does not see the insert.
async fn leave_mid_tx(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    q(&mut a, "BEGIN").await?;
    q(&mut a, "INSERT INTO iso_t VALUES (-2)").await?;
    // Pipelined and left without waiting for the answer.
    a.send(&[
        FrontendMessage::Query(b"INSERT INTO iso_t VALUES (-2)"),
        FrontendMessage::Query(b"SELECT pg_sleep(0.2)"),
    ])
    .await?;
    drop(a);
    let mut b = Raw::login(env).await?;
    let ans = q(&mut b, "SELECT count(*) FROM iso_t WHERE v = -2").await?;
    ensure!(
        ans.first.as_deref() == Some("0") && ans.status == Some('I'),
        "b: {ans:?}"
    );
    Ok(())
}

/// A client that leaves in the middle of COPY FROM STDIN: nothing of it is
/// committed and the next client's statements run normally.
async fn leave_mid_copy(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    a.send(&[FrontendMessage::Query(b"COPY iso_t FROM STDIN")])
        .await?;
    let (tag, _) = a.next().await?;
    ensure!(tag == b'G', "no CopyInResponse: {}", char::from(tag));
    a.send(&[FrontendMessage::CopyData(b"-3\n-3\n")]).await?;
    drop(a);
    let mut b = Raw::login(env).await?;
    let ans = q(&mut b, "SELECT count(*) FROM iso_t WHERE v = -3").await?;
    ensure!(
        ans.first.as_deref() == Some("0") && ans.status == Some('I'),
        "b: {ans:?}"
    );
    Ok(())
}

/// A client that leaves with an extended batch open (Flush, no Sync) after
/// a write: the write is not committed, the next client is unaffected.
async fn leave_mid_batch(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    a.send(&[
        parse("", "INSERT INTO iso_t VALUES (-4)"),
        bind(""),
        EXEC,
        FrontendMessage::Flush,
    ])
    .await?;
    let mut tags = String::new();
    while tags.len() < 3 {
        tags.push(char::from(a.next().await?.0));
    }
    ensure!(tags == "12C", "{tags}");
    drop(a);
    let mut b = Raw::login(env).await?;
    let ans = q(&mut b, "SELECT count(*) FROM iso_t WHERE v = -4").await?;
    ensure!(
        ans.first.as_deref() == Some("0") && ans.status == Some('I'),
        "b: {ans:?}"
    );
    Ok(())
}

/// An error in the middle of a pipeline skips to the next Sync, later
/// batches run, answers come in order, and another client interleaved
/// gets its own answers only.
async fn error_mid_pipeline(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    let mut b = Raw::login(env).await?;
    a.send(&[
        parse("", "SELECT 1"),
        bind(""),
        EXEC,
        FrontendMessage::Sync,
        parse("", "SELECT 1/0"),
        bind(""),
        EXEC,
        parse("", "SELECT 3"),
        bind(""),
        EXEC,
        FrontendMessage::Sync,
        FrontendMessage::Query(b"SELECT 4; SELECT 1/0; SELECT 5"),
        parse("", "SELECT 6"),
        bind(""),
        EXEC,
        FrontendMessage::Sync,
    ])
    .await?;
    b.send(&[FrontendMessage::Query(b"SELECT 'b'")]).await?;
    let first = a.until_ready().await?;
    let second = a.until_ready().await?;
    let third = a.until_ready().await?;
    let fourth = a.until_ready().await?;
    ensure!(
        first.tags == "12DCZ" && first.first.as_deref() == Some("1"),
        "{first:?}"
    );
    ensure!(
        second.tags == "1EZ" && second.errors == ["22012"],
        "{second:?}"
    );
    ensure!(
        third.tags == "TDCEZ" && third.first.as_deref() == Some("4"),
        "{third:?}"
    );
    ensure!(
        fourth.tags == "12DCZ" && fourth.first.as_deref() == Some("6"),
        "{fourth:?}"
    );
    let theirs = b.until_ready().await?;
    ensure!(theirs.first.as_deref() == Some("b"), "{theirs:?}");
    Ok(())
}

/// A client's startup statement_timeout applies to it only: it times out,
/// a client without one on the same connection does not.
async fn startup_timeout(env: &Env) -> TestResult {
    let (mut a, _) = Raw::login_with(env, &[("options", "-c statement_timeout=100")]).await?;
    let mut b = Raw::login(env).await?;
    for _ in 0..2 {
        let ans = q(&mut a, "SELECT pg_sleep(0.3)").await?;
        ensure!(ans.errors == ["57014"], "a: {ans:?}");
        let ans = q(&mut b, "SELECT pg_sleep(0.3)").await?;
        ensure!(ans.errors.is_empty(), "b: {ans:?}");
    }
    Ok(())
}

/// Startup parameters (options -c, application_name, client_encoding)
/// are the client's own: a client without them, taking turns on the same
/// connection, has the defaults, and the first keeps its values.
async fn startup_params(env: &Env) -> TestResult {
    let ask = "SELECT current_setting('search_path'), current_setting('client_encoding'), \
               current_setting('work_mem')";
    let mut b = Raw::login(env).await?;
    let defaults = row(&mut b, ask).await?;
    let (mut a, _) = Raw::login_with(
        env,
        &[
            ("options", "-c search_path=iso_s -c work_mem=5MB"),
            ("application_name", "iso-a"),
            ("client_encoding", "LATIN1"),
        ],
    )
    .await?;
    for _ in 0..2 {
        let mine = row(&mut a, ask).await?;
        ensure!(mine == ["iso_s", "LATIN1", "5MB"], "a: {mine:?}");
        let name = one(&mut a, "SELECT current_setting('application_name')").await?;
        ensure!(name.as_deref() == Some("iso-a"), "a: {name:?}");
        let seen = row(&mut b, ask).await?;
        ensure!(seen == defaults, "b: {seen:?} (defaults {defaults:?})");
        // a's search_path finds iso_s.rt (1 column), b's public.rt (2).
        let ans = q(&mut a, "SELECT * FROM rt").await?;
        ensure!(common::cells(&ans).len() == 1, "a: {ans:?}");
        let ans = q(&mut b, "SELECT * FROM rt").await?;
        ensure!(common::cells(&ans).len() == 2, "b: {ans:?}");
    }
    Ok(())
}

/// A cancel request reaches the client's own statement only: a client
/// waiting for the connection meanwhile runs normally.
async fn cancel_right_client(env: &Env) -> TestResult {
    let a = env.client().await?;
    let b = env.client().await?;
    let token = a.cancel_token();
    let slow = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(5)").await });
    // a runs before b asks and the cancel is sent (a cancel that arrives
    // before its statement is ignored; a loaded machine may take more than
    // a few hundred milliseconds to start it).
    ensure!(
        running_on_primary(env, "SELECT pg_sleep(5)").await?,
        "a's statement never ran"
    );
    let other = tokio::spawn(async move { b.simple_query("SELECT 'b'").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel_query(NoTls).await?;
    let err = slow.await?.err().ok_or("a's statement was not cancelled")?;
    ensure!(err.code().map(|c| c.code()) == Some("57014"), "a: {err:?}");
    let msgs = other.await??;
    ensure!(
        msgs.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_))),
        "b: {msgs:?}"
    );
    Ok(())
}

/// A cancel request from a client whose statement waits for the pooled
/// connection ends that wait, as PostgreSQL cancels a running statement:
/// the waiting client gets 57014 at once (its statement never runs), the
/// statement of the client running on the connection is not cancelled,
/// and the cancelled client's connection stays usable. A cancel sent
/// while nothing of the client's runs is ignored: its next statement,
/// waiting in turn, runs.
async fn cancel_while_queued(env: &Env) -> TestResult {
    let a = env.client().await?;
    let b = env.client().await?;
    let token = b.cancel_token();
    let slow = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(6)").await });
    // a runs (on the one connection) before b asks: a loaded machine may
    // take more than a few hundred milliseconds for either.
    ensure!(
        running_on_primary(env, "SELECT pg_sleep(6)").await?,
        "a's statement never ran"
    );
    let waiting = tokio::spawn(async move {
        let r = b.simple_query("SELECT pg_sleep(6)").await;
        (b, r)
    });
    // A cancel before b's statement reaches the proxy is ignored (nothing
    // runs): sent again until b has its answer, for most of a's 6 s.
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if waiting.is_finished() {
            break;
        }
        token.cancel_query(NoTls).await?;
    }
    let (b, b_result) = waiting.await?;
    let err = b_result.err().ok_or("b's statement was not cancelled")?;
    ensure!(err.code().map(|c| c.code()) == Some("57014"), "b: {err:?}");
    // b's answer came while a's statement still ran (it sleeps 6 s), not
    // after it.
    ensure!(
        !slow.is_finished(),
        "b's cancel ended its wait only with a's statement"
    );
    let a_result = slow.await?;
    ensure!(
        a_result.is_ok(),
        "a was cancelled by b's request: {a_result:?}"
    );
    let rows = |msgs: &[SimpleQueryMessage]| {
        msgs.iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count()
    };
    let msgs = b.simple_query("SELECT 'b again'").await?;
    ensure!(rows(&msgs) == 1, "b after its cancel: {msgs:?}");

    // b is idle: its cancel is ignored, and not kept for later.
    token.cancel_query(NoTls).await?;
    // (Time for the proxy to handle it before b queues again: nothing
    // tells when it has, and a loaded machine can take a while.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = env.client().await?;
    let slow = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let msgs = b.simple_query("SELECT 'b queued'").await?;
    ensure!(rows(&msgs) == 1, "b queued after an idle cancel: {msgs:?}");
    let a_result = slow.await?;
    ensure!(a_result.is_ok(), "a: {a_result:?}");
    Ok(())
}

// ---------------------------------------------------------------------
// A primary and a replica, one server connection each.
// ---------------------------------------------------------------------

#[tokio::test]
async fn clients_sharing_one_connection_per_node() -> TestResult {
    common::within(150, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        env.client()
            .await?
            .batch_execute("CREATE TABLE iso_r (v int)")
            .await?;
        let replica = env.cluster.client("replica1").await?;
        let ready = TempCluster::eventually(Duration::from_secs(30), || async {
            replica.simple_query("SELECT 1 FROM iso_r").await.is_ok()
        })
        .await;
        ensure!(ready, "iso_r never reached the replica");
        let env = &env;
        run_all(vec![
            (
                "pipeline_reads_writes",
                Box::pin(pipeline_reads_writes(env)),
            ),
            ("replica_settings", Box::pin(replica_settings(env))),
            ("replica_hold_cursor", Box::pin(replica_hold_cursor(env))),
        ])
        .await
    })
    .await
}

/// Reads and writes pipelined without waiting: answers in order, each
/// read after a write sees it (as on one connection), and a client
/// interleaved on the same connections gets only its answers.
async fn pipeline_reads_writes(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    let mut b = Raw::login(env).await?;
    a.send(&[
        FrontendMessage::Query(b"SELECT 'r1'"),
        FrontendMessage::Query(b"INSERT INTO iso_r VALUES (10)"),
        FrontendMessage::Query(b"SELECT count(*) FROM iso_r WHERE v = 10"),
        parse("", "SELECT 'r4'"),
        bind(""),
        EXEC,
        FrontendMessage::Sync,
        FrontendMessage::Query(b"BEGIN"),
        FrontendMessage::Query(b"INSERT INTO iso_r VALUES (11)"),
        FrontendMessage::Query(b"SELECT 1/0"),
        FrontendMessage::Query(b"ROLLBACK"),
        FrontendMessage::Query(b"SELECT count(*) FROM iso_r WHERE v = 11"),
    ])
    .await?;
    b.send(&[
        FrontendMessage::Query(b"SELECT 'b1'"),
        FrontendMessage::Query(b"INSERT INTO iso_r VALUES (20)"),
    ])
    .await?;
    let want: [(&str, Option<&str>, &[&str]); 9] = [
        ("TDCZ", Some("r1"), &[]),
        ("CZ", None, &[]),
        ("TDCZ", Some("1"), &[]),
        ("12DCZ", Some("r4"), &[]),
        ("CZ", None, &[]),
        ("CZ", None, &[]),
        ("EZ", None, &["22012"]),
        ("CZ", None, &[]),
        ("TDCZ", Some("0"), &[]),
    ];
    for (i, (tags, first, errors)) in want.iter().enumerate() {
        let ans = a.until_ready().await?;
        ensure!(
            ans.tags == *tags && ans.first.as_deref() == *first && ans.errors == *errors,
            "a's answer {i}: {ans:?}"
        );
    }
    let ans = b.until_ready().await?;
    ensure!(ans.first.as_deref() == Some("b1"), "{ans:?}");
    let ans = b.until_ready().await?;
    ensure!(ans.errors.is_empty(), "{ans:?}");
    Ok(())
}

/// A SET inside BEGIN READ ONLY on the replica stays with its client and
/// the next client on the replica's connection has the default.
async fn replica_settings(env: &Env) -> TestResult {
    let mut b = Raw::login(env).await?;
    let before = one(&mut b, "SHOW work_mem").await?;
    bye(b).await?;
    let mut a = Raw::login(env).await?;
    q(&mut a, "BEGIN READ ONLY").await?;
    let ans = q(&mut a, "SET work_mem = '11MB'").await?;
    ensure!(ans.errors.is_empty(), "{ans:?}");
    q(&mut a, "COMMIT").await?;
    ensure!(
        one(&mut a, "SHOW work_mem").await?.as_deref() == Some("11MB"),
        "a"
    );
    bye(a).await?;
    let mut b = Raw::login(env).await?;
    let seen = one(&mut b, "SHOW work_mem").await?;
    ensure!(seen == before, "b: {seen:?}");
    Ok(())
}

/// SET ROLE and set_config('role', ...) stay with their client: the next
/// client on the connection is itself again.
async fn set_role(env: &Env) -> TestResult {
    let (su, pw) = env.superuser()?;
    let admin =
        pgkeel_testkit::connect_url(&env.url_as(env.node_port("primary")?, &su, &pw)).await?;
    admin
        .batch_execute(&format!(
            "CREATE ROLE iso_role NOLOGIN; GRANT iso_role TO \"{}\"",
            env.user
        ))
        .await?;
    for how in [
        "SET ROLE iso_role",
        "SELECT set_config('role', 'iso_role', false)",
    ] {
        let mut a = Raw::login(env).await?;
        let ans = q(&mut a, how).await?;
        ensure!(ans.errors.is_empty(), "{how}: {ans:?}");
        let who = one(&mut a, "SELECT current_user").await?;
        ensure!(who.as_deref() == Some("iso_role"), "a after {how}: {who:?}");
        bye(a).await?;
        let mut b = Raw::login(env).await?;
        let who = row(&mut b, "SELECT current_user, session_user").await?;
        ensure!(
            who == [env.user.as_str(), env.user.as_str()],
            "b after a's {how}: {who:?}"
        );
    }
    Ok(())
}

/// A Bind of the unnamed statement by a client that parsed none runs
/// nothing of another client's (26000, as in PostgreSQL), even though the
/// server connection holds that client's unnamed statement.
async fn unnamed_other(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    let mut b = Raw::login(env).await?;
    a.send(&[
        parse("", "SELECT 'a''s secret'"),
        FrontendMessage::Describe {
            kind: b'S',
            name: b"",
        },
        FrontendMessage::Sync,
    ])
    .await?;
    a.until_ready().await?;
    b.send(&[bind(""), EXEC, FrontendMessage::Sync]).await?;
    let ans = b.until_ready().await?;
    ensure!(ans.errors == ["26000"], "b: {ans:?}");
    a.send(&[bind(""), EXEC, FrontendMessage::Sync]).await?;
    let ans = a.until_ready().await?;
    ensure!(ans.first.as_deref() == Some("a's secret"), "a: {ans:?}");
    Ok(())
}

/// A WITH HOLD cursor declared inside BEGIN READ ONLY (on the replica)
/// stays with its client and is gone for the next client there.
async fn replica_hold_cursor(env: &Env) -> TestResult {
    let mut a = Raw::login(env).await?;
    q(&mut a, "BEGIN READ ONLY").await?;
    let ans = q(
        &mut a,
        "DECLARE iso_rc CURSOR WITH HOLD FOR SELECT generate_series(1, 3)",
    )
    .await?;
    ensure!(ans.errors.is_empty(), "{ans:?}");
    q(&mut a, "COMMIT").await?;
    ensure!(
        one(&mut a, "FETCH iso_rc").await?.as_deref() == Some("1"),
        "a's cursor"
    );
    bye(a).await?;
    let mut b = Raw::login(env).await?;
    let ans = q(&mut b, "FETCH iso_rc").await?;
    ensure!(ans.errors == ["34000"], "b: {ans:?}");
    Ok(())
}

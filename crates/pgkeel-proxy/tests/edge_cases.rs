//! Protocol edge cases through the proxy against a real cluster: Flush
//! batches, pipelines, session pins and their reset, clients leaving
//! mid-transaction, named statements after `DISCARD ALL`, odd queries.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Answer, EXEC, Env, NO_PARAMS, Raw, TestResult, bind, cells, parse};
use futures_util::{SinkExt, StreamExt};
use pgkeel_wire::FrontendMessage;
use pgkeel_wire::backend::error_code;
use tokio_postgres::SimpleQueryMessage;

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

/// How long a statement may keep getting 53300 below while the proxy
/// takes back its only server connection from a client that just left
/// (it resets or rolls it back first: slower on a loaded machine).
const FREED_WITHIN: Duration = Duration::from_secs(30);

/// Runs `sql`, again while the answer is 53300 (no connection free yet),
/// for up to [`FREED_WITHIN`].
async fn once_freed(
    client: &tokio_postgres::Client,
    sql: &str,
) -> TestResult<Vec<SimpleQueryMessage>> {
    let start = Instant::now();
    loop {
        match client.simple_query(sql).await {
            Err(e)
                if e.code().map(|c| c.code()) == Some("53300")
                    && start.elapsed() < FREED_WITHIN =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return Ok(r?),
        }
    }
}

/// As [`once_freed`] on a raw connection.
async fn raw_once_freed(raw: &mut Raw, sql: &[u8]) -> TestResult<Answer> {
    let start = Instant::now();
    loop {
        raw.send(&[FrontendMessage::Query(sql)]).await?;
        let a = raw.until_ready().await?;
        if a.errors != ["53300"] || start.elapsed() >= FREED_WITHIN {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn port_of(client: &tokio_postgres::Client, sql: &str) -> TestResult<u16> {
    Ok(first_value(&client.simple_query(sql).await?)
        .ok_or("no row")?
        .parse()?)
}

#[tokio::test]
async fn replica_routing_edge_cases() -> TestResult {
    common::within(180, replica_body()).await
}

async fn replica_body() -> TestResult {
    let env = Env::start(1, |c| c.read_only_functions = vec!["pg_sleep".into()]).await?;
    let (replica, primary) = (env.node_port("replica1")?, env.node_port("primary")?);
    let setup = env.client().await?;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS e (v int)")
        .await?;
    // Statements below reach the table on the replica.
    let standby = env.cluster.client("replica1").await?;
    let replicated = pgkeel_testkit::TempCluster::eventually(Duration::from_secs(30), || async {
        standby
            .simple_query("SELECT 1 FROM e LIMIT 0")
            .await
            .is_ok()
    })
    .await;
    assert!(replicated, "table e never reached the replica");
    let port = "SELECT current_setting('port')";

    // A read ended by Flush (no Sync) is answered without a Sync: the
    // client waits for it before sending more.
    let mut raw = Raw::login(&env).await?;
    raw.send(&[parse("", port), bind(""), EXEC, FrontendMessage::Flush])
        .await?;
    let mut tags = String::new();
    while tags.len() < 3 {
        let (tag, _) = raw
            .next_within(Duration::from_secs(30))
            .await?
            .ok_or_else(|| format!("a Flush-ended read got only {tags:?}"))?;
        tags.push(char::from(tag));
    }
    assert_eq!(tags, "12D");
    // The batch goes on with a write, in the same implicit transaction.
    raw.send(&[
        parse("", "INSERT INTO e VALUES (1)"),
        bind(""),
        EXEC,
        FrontendMessage::Sync,
    ])
    .await?;
    let a = raw.until_ready().await?;
    assert!(a.errors.is_empty(), "write after a Flush-ended read: {a:?}");

    // A named statement parsed and bound in one unit (a driver's first
    // execution) is routed by its own text: a read goes to the replica...
    let a = raw.run_parsed("s_named", port).await?;
    assert_eq!(a.first, Some(replica.to_string()), "{a:?}");
    // ...and a name closed and parsed again as a write in one unit goes
    // to the primary, whatever the name held before.
    raw.send(&[
        FrontendMessage::Close {
            kind: b'S',
            name: b"s_named",
        },
        parse(
            "s_named",
            "INSERT INTO e VALUES (2) RETURNING current_setting('port')",
        ),
        bind("s_named"),
        EXEC,
        FrontendMessage::Sync,
    ])
    .await?;
    let a = raw.until_ready().await?;
    assert_eq!(a.first, Some(primary.to_string()), "{a:?}");

    // A read and a write in one simple query run on the primary.
    let c2 = env.client().await?;
    let msgs = c2
        .simple_query("SELECT current_setting('port'); INSERT INTO e VALUES (3)")
        .await?;
    assert_eq!(
        first_value(&msgs).as_deref(),
        Some(primary.to_string().as_str())
    );
    let msgs = c2
        .simple_query("BEGIN; SELECT current_setting('port'); COMMIT")
        .await?;
    assert!(first_value(&msgs).is_some());
    assert_eq!(port_of(&c2, port).await?, replica);

    // An error on the replica that is not 25006 is not retried.
    let retries = |env: &Env| {
        env.proxy.as_ref().map(|p| {
            p.shared()
                .metrics
                .retries_on_primary
                .load(Ordering::Relaxed)
        })
    };
    let before = retries(&env);
    let err = c2
        .simple_query("SELECT 1/0")
        .await
        .err()
        .ok_or("1/0 succeeded")?;
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
    assert_eq!(retries(&env), before);

    // A read bigger than the hold limit arrives whole.
    let big = c2
        .query_one(
            "SELECT sum(length(x))::int8 FROM (SELECT repeat('x', 1000) x \
             FROM generate_series(1, 1000)) s",
            &[],
        )
        .await?;
    assert_eq!(big.get::<_, i64>(0), 1_000_000);
    let rows = c2
        .simple_query("SELECT repeat('x', 1000) FROM generate_series(1, 1000)")
        .await?;
    assert_eq!(
        rows.iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count(),
        1000
    );

    // Pipelined: a read then a write, sent before any answer.
    let mut raw = Raw::login(&env).await?;
    raw.send(&[
        FrontendMessage::Query(port.as_bytes()),
        FrontendMessage::Query(b"INSERT INTO e VALUES (4) RETURNING current_setting('port')"),
    ])
    .await?;
    let a = raw.until_ready().await?;
    assert_eq!(a.first, Some(replica.to_string()));
    let b = raw.until_ready().await?;
    assert_eq!(b.first, Some(primary.to_string()), "{b:?}");

    // A write pipelined behind `BEGIN READ ONLY` (routed to the replica)
    // joins that transaction: it fails there as it would on any server,
    // instead of waiting forever.
    raw.send(&[
        FrontendMessage::Query(b"BEGIN READ ONLY"),
        FrontendMessage::Query(b"INSERT INTO e VALUES (5)"),
        FrontendMessage::Query(b"ROLLBACK"),
    ])
    .await?;
    assert_eq!(raw.until_ready().await?.status, Some('T'));
    let b = raw.until_ready().await?;
    assert_eq!(
        (b.errors.as_slice(), b.status),
        (&["25006".to_string()][..], Some('E'))
    );
    assert_eq!(raw.until_ready().await?.status, Some('I'));

    // An error in the middle of an extended pipeline: the rest is skipped
    // up to the Sync, then the next batch runs.
    raw.send(&[
        parse("", "SELECT 1"),
        bind(""),
        EXEC,
        parse("", "SELECT 1/0"),
        bind(""),
        EXEC,
        parse("", "SELECT 2"),
        bind(""),
        EXEC,
        FrontendMessage::Sync,
        parse("", port),
        bind(""),
        EXEC,
        FrontendMessage::Sync,
    ])
    .await?;
    let a = raw.until_ready().await?;
    // (1/0 is folded when planning: the Bind fails.)
    assert_eq!(a.tags, "12DC1EZ");
    assert_eq!(a.errors, ["22012"]);
    let b = raw.until_ready().await?;
    assert_eq!(b.tags, "12DCZ");
    Ok(())
}

/// A SET inside `BEGIN READ ONLY` runs on the replica and pins the client
/// there; its next write moves the session to the primary with the setting
/// applied again. State that cannot move (a PREPARE) gets a clear error.
#[tokio::test]
async fn session_state_set_in_a_replica_transaction_keeps_writes_working() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let replica = env.node_port("replica1")?;
        let client = env.client().await?;
        client.batch_execute("CREATE TABLE e (v int)").await?;
        client.batch_execute("BEGIN READ ONLY").await?;
        assert_eq!(
            port_of(&client, "SELECT current_setting('port')").await?,
            replica
        );
        client
            .batch_execute("SET statement_timeout = '5min'")
            .await?;
        client.batch_execute("COMMIT").await?;
        // Still on the replica (pinned) for reads.
        assert_eq!(
            port_of(&client, "SELECT current_setting('port')").await?,
            replica
        );
        client.batch_execute("INSERT INTO e VALUES (2)").await?;
        let shown = first_value(&client.simple_query("SHOW statement_timeout").await?);
        assert_eq!(shown.as_deref(), Some("5min"));
        // Now pinned to the primary: reads stay there too.
        assert_eq!(
            port_of(&client, "SELECT current_setting('port')").await?,
            env.node_port("primary")?
        );

        // A prepared statement made on the replica cannot move.
        let other = env.client().await?;
        other.batch_execute("BEGIN READ ONLY").await?;
        other.batch_execute("PREPARE two AS SELECT 2").await?;
        other.batch_execute("COMMIT").await?;
        let err = other
            .batch_execute("INSERT INTO e VALUES (3)")
            .await
            .err()
            .ok_or("a write pinned to the replica should fail")?;
        let db = err.as_db_error().ok_or("not a server error")?;
        assert_eq!(db.code().code(), "25006");
        assert!(
            db.message().contains("PREPARE two") && db.message().contains("BEGIN READ ONLY"),
            "{}",
            db.message()
        );
        // Reads still work there.
        assert_eq!(
            port_of(&other, "SELECT current_setting('port')").await?,
            replica
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn pooled_connection_reuse_edge_cases() -> TestResult {
    common::within(180, reuse_body()).await
}

async fn reuse_body() -> TestResult {
    let env = Env::start(0, |c| {
        c.pool_size = 1;
        c.queue_wait = Duration::from_millis(500);
    })
    .await?;
    let setup = env.client().await?;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS r (v int)")
        .await?;
    drop(setup);

    // After a client's own DISCARD ALL (as npgsql and client-side pools
    // send) or DEALLOCATE ALL, preparing statements again works.
    let c = env.client().await?;
    let s = c.prepare("SELECT 41 + 1").await?;
    assert_eq!(c.query_one(&s, &[]).await?.get::<_, i32>(0), 42);
    c.batch_execute("DISCARD ALL").await?;
    let s = c.prepare("SELECT 41 + 1").await?;
    assert_eq!(c.query_one(&s, &[]).await?.get::<_, i32>(0), 42);
    c.batch_execute("DEALLOCATE ALL").await?;
    let s = c.prepare("SELECT 41 + 1").await?;
    assert_eq!(c.query_one(&s, &[]).await?.get::<_, i32>(0), 42);
    drop(c);

    // Session state pins the client (the pool of one is taken) and is
    // reset for the next client, settings made with it included.
    let c1 = env.client().await?;
    c1.batch_execute("SET application_name = 'edge'; CREATE TEMP TABLE edge_pin (v int)")
        .await?;
    let c2 = env.client().await?;
    let err = c2
        .simple_query("SELECT 1")
        .await
        .err()
        .ok_or("the pinned connection was shared")?;
    assert_eq!(err.code().map(|c| c.code()), Some("53300"));
    drop(c1);
    let shown = first_value(&once_freed(&c2, "SHOW application_name").await?);
    assert_eq!(shown.as_deref(), Some("pgkeel-proxy"));

    // SET LOCAL does not pin.
    c2.batch_execute("BEGIN; SET LOCAL statement_timeout = 1000; COMMIT")
        .await?;
    let c3 = env.client().await?;
    c3.simple_query("SELECT 1").await?;

    // A Flush-ended unit that cannot get a connection gets an error and
    // no ReadyForQuery (Flush gets none); the Sync then gets one.
    c2.batch_execute("LISTEN pinned").await?;
    let mut raw = Raw::login(&env).await?;
    raw.send(&[
        parse("", "SELECT 1"),
        bind(""),
        EXEC,
        FrontendMessage::Flush,
    ])
    .await?;
    let (tag, _) = raw.next().await?;
    assert_eq!(char::from(tag), 'E');
    let extra = raw.next_within(Duration::from_millis(300)).await?;
    assert!(extra.is_none(), "Flush got {extra:?}");
    raw.send(&[FrontendMessage::Sync]).await?;
    let a = raw.until_ready().await?;
    assert_eq!(a.tags, "Z");
    drop(raw);
    drop(c2);

    // A client leaving mid-transaction: the next one gets a clean
    // connection and the write is gone.
    let mut raw = Raw::login(&env).await?;
    let a = raw_once_freed(&mut raw, b"BEGIN; INSERT INTO r VALUES (7)").await?;
    assert_eq!(a.status, Some('T'), "{a:?}");
    drop(raw);
    let n = first_value(&once_freed(&c3, "SELECT count(*) FROM r WHERE v = 7").await?);
    assert_eq!(n.as_deref(), Some("0"));
    let tx = first_value(&c3.simple_query("SELECT txid_current_if_assigned()").await?);
    assert_eq!(tx, None);

    // A client leaving mid-result.
    let mut raw = Raw::login(&env).await?;
    raw.send(&[FrontendMessage::Query(
        b"SELECT repeat('y', 100) FROM generate_series(1, 200000)",
    )])
    .await?;
    let (tag, _) = raw.next().await?;
    assert_eq!(char::from(tag), 'T');
    drop(raw);
    let v = first_value(&once_freed(&c3, "SELECT 'clean'").await?);
    assert_eq!(v.as_deref(), Some("clean"));

    // Portals suspended by a row limit, inside a transaction.
    let mut c4 = env.client().await?;
    let tx = c4.transaction().await?;
    let st = tx.prepare("SELECT generate_series(1, 5)").await?;
    let portal = tx.bind(&st, &[]).await?;
    let a = tx.query_portal(&portal, 2).await?;
    let b = tx.query_portal(&portal, 2).await?;
    let c = tx.query_portal(&portal, 2).await?;
    let got: Vec<i32> = a.iter().chain(&b).chain(&c).map(|r| r.get(0)).collect();
    assert_eq!(got, [1, 2, 3, 4, 5]);
    tx.commit().await?;

    // Explicit parameter types, and a statement described.
    let st = c4
        .prepare_typed(
            "SELECT $1::text || 'x'",
            &[tokio_postgres::types::Type::TEXT],
        )
        .await?;
    assert_eq!(st.params(), &[tokio_postgres::types::Type::TEXT]);
    let v: String = c4.query_one(&st, &[&"a"]).await?.get(0);
    assert_eq!(v, "ax");

    // A prepared statement used after its server connection was replaced.
    let st = c4.prepare("SELECT 'again'").await?;
    env.terminate_pooled(env.node_port("primary")?).await?;
    let v: String = c4.query_one(&st, &[]).await?.get(0);
    assert_eq!(v, "again");

    // COPY FROM STDIN failed by the client (CopyFail): the connection goes on.
    {
        let sink = c4.copy_in("COPY r (v) FROM STDIN").await?;
        let mut sink = Box::pin(sink);
        sink.send(bytes::Bytes::from_static(b"8\n")).await?;
        // Dropped unfinished: tokio-postgres sends CopyFail.
    }
    let n: i64 = c4
        .query_one("SELECT count(*) FROM r WHERE v = 8", &[])
        .await?
        .get(0);
    assert_eq!(n, 0);
    let out = c4.copy_out("COPY (SELECT 1) TO STDOUT").await?;
    let chunks: Vec<_> = out.collect().await;
    assert_eq!(chunks.len(), 1);

    // Named statements over the raw protocol: Close then Parse again under
    // the same name with another query; a failed Parse then a Bind to it.
    let mut raw = Raw::login(&env).await?;
    raw.send(&[
        parse("n1", "SELECT 'first'"),
        bind("n1"),
        EXEC,
        FrontendMessage::Close {
            kind: b'S',
            name: b"n1",
        },
        parse("n1", "SELECT 'second'"),
        bind("n1"),
        EXEC,
        FrontendMessage::Describe {
            kind: b'S',
            name: b"n1",
        },
        FrontendMessage::Sync,
    ])
    .await?;
    let a = raw.until_ready().await?;
    assert_eq!(a.tags, "12DC312DCtTZ");
    assert_eq!(a.first.as_deref(), Some("first"));
    raw.send(&[parse("bad", "SELEC 1"), FrontendMessage::Sync])
        .await?;
    let a = raw.until_ready().await?;
    assert_eq!(a.errors, ["42601"]);
    raw.send(&[bind("bad"), EXEC, FrontendMessage::Sync])
        .await?;
    let a = raw.until_ready().await?;
    assert_eq!(a.errors, ["26000"], "{a:?}");

    // Odd queries: empty, comments only, 1 MB long.
    let a = {
        raw.send(&[FrontendMessage::Query(b"")]).await?;
        raw.until_ready().await?
    };
    assert_eq!(a.tags, "IZ");
    raw.send(&[FrontendMessage::Query(b"-- nothing\n/* at all */")])
        .await?;
    assert_eq!(raw.until_ready().await?.tags, "IZ");
    let long = format!("SELECT length('{}')", "z".repeat(1 << 20));
    raw.send(&[FrontendMessage::Query(long.as_bytes())]).await?;
    let a = raw.until_ready().await?;
    assert_eq!(a.first.as_deref(), Some("1048576"));
    drop(raw);
    drop(c3);
    drop(c4);

    // Many clients sharing named statements over one pooled connection:
    // each client's statements follow it; a client that discards them
    // (pinned meanwhile) does not break the others'.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = env.client().await?;
        tasks.push(tokio::spawn(async move {
            let shared = c.prepare("SELECT 'shared'::text").await?;
            let own = c.prepare(&format!("SELECT {i}::int")).await?;
            for round in 0..30 {
                let v: String = c.query_one(&shared, &[]).await?.get(0);
                assert_eq!(v, "shared");
                let v: i32 = c.query_one(&own, &[]).await?.get(0);
                assert_eq!(v, i);
                if i == 0 && round == 29 {
                    c.batch_execute("DISCARD ALL").await?;
                    let again = c.prepare("SELECT 'shared'::text").await?;
                    let v: String = c.query_one(&again, &[]).await?.get(0);
                    assert_eq!(v, "shared");
                }
            }
            Ok::<_, tokio_postgres::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A simple query whose text is not UTF-8 is relayed as PostgreSQL takes
/// it directly: in `client_encoding = LATIN1` it runs (and the answer comes
/// back in LATIN1); in UTF-8 the server refuses it with 22021 and the
/// connection carries on.
#[tokio::test]
async fn queries_in_another_client_encoding_are_relayed() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let mut raw = Raw::login(&env).await?;
        // Invalid in UTF-8: the server's error, and the session goes on.
        raw.send(&[FrontendMessage::Query(b"SELECT 'caf\xe9'")])
            .await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.errors, ["22021"], "{a:?}");
        raw.send(&[FrontendMessage::Query(b"SELECT 1")]).await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.first.as_deref(), Some("1"), "{a:?}");
        // LATIN1: the same bytes are 'café'.
        raw.send(&[FrontendMessage::Query(b"SET client_encoding = 'LATIN1'")])
            .await?;
        assert!(raw.until_ready().await?.errors.is_empty());
        raw.send(&[FrontendMessage::Query(
            b"SELECT length('caf\xe9'), 'caf\xe9' = 'caf' || chr(233)",
        )])
        .await?;
        let mut row = None;
        loop {
            let (tag, frame) = raw.next().await?;
            match tag {
                b'D' => row = Some(frame),
                b'E' => return Err(format!("error: {:?}", error_code(&frame[5..])).into()),
                b'Z' => break,
                _ => {}
            }
        }
        let row = row.ok_or("no row")?;
        // Two text columns: "4" and "t".
        assert!(
            row.ends_with(b"\x00\x00\x00\x014\x00\x00\x00\x01t"),
            "{row:?}"
        );
        Ok(())
    })
    .await
}

/// The extended protocol in another client encoding: SQL text, statement
/// and portal names that are not UTF-8 are relayed as PostgreSQL takes
/// them (the server converts or refuses them), never a protocol error.
/// A Parse whose text is not UTF-8 cannot be classified: it runs on the
/// primary. Invalid bytes in UTF-8 get the server's 22021 and the
/// connection carries on.
#[tokio::test]
async fn extended_queries_in_another_client_encoding_are_relayed() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let setup = env.client().await?;
        setup.batch_execute("CREATE TABLE enc (v text)").await?;
        let mut raw = Raw::login(&env).await?;
        let recovery = "SELECT pg_is_in_recovery()";

        // UTF-8 (not pinned): a read goes to the replica...
        let a = raw.run_parsed("", recovery).await?;
        assert_eq!(a.first.as_deref(), Some("t"), "{a:?}");
        // ...a unit with a Parse that is not UTF-8 to the primary, where
        // the server refuses the bytes; what ran before them is answered.
        raw.send(&[
            parse("", recovery),
            bind(""),
            EXEC,
            parse("", b"SELECT 'caf\xe9'"),
            bind(""),
            EXEC,
            FrontendMessage::Sync,
        ])
        .await?;
        let a = raw.until_ready().await?;
        assert_eq!(
            (a.tags.as_str(), a.first.as_deref(), a.errors.as_slice()),
            ("12DCEZ", Some("f"), &["22021".to_string()][..])
        );
        raw.send(&[FrontendMessage::Query(b"SELECT 1")]).await?;
        assert_eq!(raw.until_ready().await?.first.as_deref(), Some("1"));

        // LATIN1: the same bytes are 'café'.
        raw.send(&[FrontendMessage::Query(b"SET client_encoding = 'LATIN1'")])
            .await?;
        assert!(raw.until_ready().await?.errors.is_empty());
        // (1) Unnamed, the answer in LATIN1.
        let a = raw
            .run_parsed("", b"SELECT 'caf\xe9'::text, pg_is_in_recovery()")
            .await?;
        assert_eq!(a.tags, "12DCZ", "{a:?}");
        assert_eq!(cells(&a), [Some(&b"caf\xe9"[..]), Some(b"f")]);

        // (2) A statement named in LATIN1, run twice (the second time
        // through a portal named in LATIN1, described), then closed.
        let name = b"caf\xe9";
        let portal = b"p\xe9";
        let a = raw
            .run_parsed(
                name,
                b"SELECT length('caf\xe9'), 'caf\xe9' = 'caf' || chr(233)",
            )
            .await?;
        assert_eq!(a.tags, "12DCZ", "{a:?}");
        assert_eq!(cells(&a), [Some(&b"4"[..]), Some(b"t")]);
        raw.send(&[
            FrontendMessage::Bind {
                portal,
                statement: name,
                tail: NO_PARAMS,
            },
            FrontendMessage::Describe {
                kind: b'P',
                name: portal,
            },
            FrontendMessage::Execute {
                portal,
                max_rows: 0,
            },
            FrontendMessage::Close {
                kind: b'P',
                name: portal,
            },
            FrontendMessage::Describe { kind: b'S', name },
            FrontendMessage::Sync,
        ])
        .await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.tags, "2TDC3tTZ", "{a:?}");
        assert_eq!(cells(&a), [Some(&b"4"[..]), Some(b"t")]);
        raw.send(&[
            FrontendMessage::Close { kind: b'S', name },
            FrontendMessage::Sync,
        ])
        .await?;
        assert_eq!(raw.until_ready().await?.tags, "3Z");
        // Gone: the server looks for the name (converted) and says so.
        raw.send(&[bind(name), EXEC, FrontendMessage::Sync]).await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.errors, ["26000"], "{a:?}");

        // (3) A write, on the primary.
        let a = raw
            .run_parsed(
                "",
                b"INSERT INTO enc VALUES ('caf\xe9') RETURNING v, pg_is_in_recovery()",
            )
            .await?;
        assert_eq!(a.tags, "12DCZ", "{a:?}");
        assert_eq!(cells(&a), [Some(&b"caf\xe9"[..]), Some(b"f")]);
        let stored: String = setup
            .query_one("SELECT v FROM enc FOR SHARE", &[])
            .await?
            .get(0);
        assert_eq!(stored, "caf\u{e9}");

        // Still usable.
        raw.send(&[FrontendMessage::Query(b"SELECT 'ok'")]).await?;
        let a = raw.until_ready().await?;
        assert_eq!((a.first.as_deref(), a.status), (Some("ok"), Some('I')));
        Ok(())
    })
    .await
}

/// The unnamed statement across a Sync (asyncpg with
/// `statement_cache_size=0`, pgx's describe-exec mode, libpq's
/// `PQprepare(conn, "", ...)`: Parse + Describe + Sync, then Bind +
/// Execute + Sync): in transaction pooling the second batch may get
/// another server connection, whose unnamed statement is another
/// client's. Each client must run its own statement, with its own
/// routing (a write's Bind goes to the primary), and a Bind after a
/// simple Query (which destroys the unnamed statement) gets PostgreSQL's
/// 26000, never another client's statement.
#[tokio::test]
async fn the_unnamed_statement_outlives_its_batch() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        env.client()
            .await?
            .batch_execute("CREATE TABLE unnamed_log (who text)")
            .await?;
        let mut a = Raw::login(&env).await?;
        let mut b = Raw::login(&env).await?;
        let describe = FrontendMessage::Describe {
            kind: b'S',
            name: b"",
        };
        for (raw, sql) in [
            (&mut a, "SELECT 'a', pg_is_in_recovery()"),
            (
                &mut b,
                "INSERT INTO unnamed_log VALUES ('b') RETURNING 'b', pg_is_in_recovery()",
            ),
        ] {
            raw.send(&[parse("", sql), describe.clone(), FrontendMessage::Sync])
                .await?;
            let ans = raw.until_ready().await?;
            assert_eq!(ans.tags, "1tTZ", "{ans:?}");
        }
        // Each in turn, several times: the connections are shared.
        for _ in 0..3 {
            for (raw, want) in [(&mut a, ["a", "t"]), (&mut b, ["b", "f"])] {
                raw.send(&[bind(""), EXEC, FrontendMessage::Sync]).await?;
                let ans = raw.until_ready().await?;
                let got: Vec<&[u8]> = cells(&ans).into_iter().flatten().collect();
                assert_eq!(got, want.map(str::as_bytes), "{ans:?}");
                assert!(ans.errors.is_empty(), "{ans:?}");
            }
        }
        // A simple Query destroys the unnamed statement.
        a.send(&[FrontendMessage::Query(b"SELECT 1")]).await?;
        a.until_ready().await?;
        a.send(&[bind(""), EXEC, FrontendMessage::Sync]).await?;
        let ans = a.until_ready().await?;
        assert_eq!(ans.errors, ["26000"], "{ans:?}");
        // Counted on the primary: a replica may not have replayed even
        // the table yet on a loaded machine.
        let rows = env
            .primary_superuser()
            .await?
            .query_one("SELECT count(*) FROM unnamed_log", &[])
            .await?;
        assert_eq!(rows.get::<_, i64>(0), 3);
        Ok(())
    })
    .await
}

/// Ruby on Rails' adapter removes its protocol-level statements with SQL
/// (`DEALLOCATE a1` when its cache evicts one). The proxy prepares them on
/// servers under its own names, so it answers for them itself, as
/// PostgreSQL would, without pinning the client; a name it does not
/// know, and `DEALLOCATE ALL`, go to the server, and the client's
/// statements are gone afterwards (a Bind gets 26000).
#[tokio::test]
async fn sql_deallocate_of_protocol_statements() -> TestResult {
    common::within(120, async {
        let env = Env::start(0, |c| {
            c.pool_size = 1;
            // Long: a pinned connection (the failure checked below) waits
            // it out; a free one is handed out at once, however loaded
            // the machine.
            c.queue_wait = Duration::from_secs(5);
        })
        .await?;
        let other = env.client().await?;
        let mut raw = Raw::login(&env).await?;
        let query = |sql: &'static str| [FrontendMessage::Query(sql.as_bytes())];
        for name in ["a1", "Mixed", "b1", "c1"] {
            let a = raw.run_parsed(name, "SELECT 1").await?;
            assert_eq!(a.tags, "12DCZ", "{name}: {a:?}");
        }

        raw.send(&query("DEALLOCATE a1")).await?;
        let a = raw.until_ready().await?;
        assert_eq!((a.tags.as_str(), a.status), ("CZ", Some('I')), "{a:?}");
        raw.send(&query("deallocate prepare \"Mixed\" ; -- evicted"))
            .await?;
        assert_eq!(raw.until_ready().await?.tags, "CZ");
        // Not pinned: the pool's only connection serves another client.
        other.simple_query("SELECT 1").await?;
        for name in ["a1", "Mixed"] {
            raw.send(&[bind(name), EXEC, FrontendMessage::Sync]).await?;
            let a = raw.until_ready().await?;
            assert_eq!(a.errors, ["26000"], "{name}: {a:?}");
        }

        // Inside a transaction: answered with its status; in a failed
        // one, refused (25P02) and the statement stays.
        raw.send(&query("BEGIN")).await?;
        raw.until_ready().await?;
        raw.send(&query("DEALLOCATE b1")).await?;
        let a = raw.until_ready().await?;
        assert_eq!((a.tags.as_str(), a.status), ("CZ", Some('T')), "{a:?}");
        raw.send(&query("SELECT 1/0")).await?;
        raw.until_ready().await?;
        raw.send(&query("DEALLOCATE c1")).await?;
        let a = raw.until_ready().await?;
        assert_eq!(
            (a.errors.as_slice(), a.status),
            (&["25P02".to_string()][..], Some('E'))
        );
        raw.send(&query("ROLLBACK")).await?;
        raw.until_ready().await?;
        raw.send(&[bind("c1"), EXEC, FrontendMessage::Sync]).await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.first.as_deref(), Some("1"), "{a:?}");
        // Still there: a Parse of the name is refused, as in PostgreSQL.
        raw.send(&[parse("c1", "SELECT 'c1'"), FrontendMessage::Sync])
            .await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.errors, ["42P05"], "{a:?}");
        other.simple_query("SELECT 1").await?;

        // A name the client does not have: the server's answer.
        raw.send(&query("DEALLOCATE a1")).await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.errors, ["26000"], "{a:?}");

        // DEALLOCATE ALL: the client's statements are gone too.
        raw.send(&query("DEALLOCATE ALL")).await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.tags, "CZ", "{a:?}");
        raw.send(&[bind("c1"), EXEC, FrontendMessage::Sync]).await?;
        let a = raw.until_ready().await?;
        assert_eq!(a.errors, ["26000"], "{a:?}");
        // Prepared again, it works.
        let a = raw.run_parsed("c1", "SELECT 'again'").await?;
        assert_eq!(a.first.as_deref(), Some("again"), "{a:?}");
        Ok(())
    })
    .await
}

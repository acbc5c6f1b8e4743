//! Review of `currval()`/`lastval()` under transaction pooling: each test
//! shows a way the first version (072f255, which refused by replacing
//! units) gave a client another client's `nextval()` value, a needless
//! refusal, a protocol difference from PostgreSQL, or a needless wait; each
//! failed there. Each asserts what PostgreSQL (or the feature's contract:
//! "the client's own values or 55000, never another client's") gives.

mod common;

use std::time::{Duration, Instant};

use common::got::{Got, one, run, until_ready};
use common::{EXEC, Env, Raw, TestResult, bind, first_column, parse, query, raw_login};
use pgkeel_wire::FrontendMessage;
use pgkeel_wire::backend::error_code;

/// The contract: `lastval()` answers the client's own `mine`, or is
/// refused with 55000; never `theirs`.
fn own_or_refused(g: &Got, mine: &str, theirs: &str, what: &str) -> TestResult {
    if g.errors.is_empty() {
        let got = g.values.first().cloned().flatten();
        assert_ne!(
            got.as_deref(),
            Some(theirs),
            "{what}: lastval() answered another client's id {theirs} (own {mine}): {g:?}"
        );
        assert_eq!(got.as_deref(), Some(mine), "{what}: {g:?}");
    } else {
        assert_eq!(g.errors, ["55000"], "{what}: {g:?}");
    }
    Ok(())
}

/// One server connection per node: clients must share it, so the
/// contract's "or 55000" is where they end up, never a wrong value.
async fn env_of_one() -> TestResult<Env> {
    Env::start(1, |c| c.pool_size = 1).await
}

/// A table, and clients a and b that each inserted one row one after the
/// other on the primary's one connection: b's insert is the last
/// `nextval()` that connection ran.
async fn a_then_b(env: &Env) -> TestResult<(Raw, Raw, String, String)> {
    let mut a = Raw::login(env).await?;
    let mut b = Raw::login(env).await?;
    let g = run(
        &mut a,
        "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
    )
    .await?;
    assert!(g.errors.is_empty(), "{g:?}");
    let a_id = one(&mut a, "INSERT INTO t (who) VALUES ('a') RETURNING id").await?;
    let b_id = one(&mut b, "INSERT INTO t (who) VALUES ('b') RETURNING id").await?;
    assert_ne!(a_id, b_id);
    Ok((a, b, a_id, b_id))
}

/// A write that calls no `nextval()` (an UPDATE) on the connection that
/// holds another client's values gets a tick: from then on the proxy
/// takes those values for the writer's, and its `lastval()` answers the
/// other client's id. PostgreSQL answers a's own id.
#[tokio::test]
async fn a_write_without_nextval_does_not_adopt_anothers_values() -> TestResult {
    common::within(120, async {
        let env = env_of_one().await?;
        let (mut a, _b, a_id, b_id) = a_then_b(&env).await?;
        let g = run(
            &mut a,
            &format!("UPDATE t SET who = 'a2' WHERE id = {a_id}"),
        )
        .await?;
        assert!(g.errors.is_empty(), "{g:?}");
        let g = run(&mut a, "SELECT lastval()").await?;
        own_or_refused(&g, &a_id, &b_id, "lastval() after an UPDATE")?;
        let g = run(&mut a, "SELECT currval('t_id_seq')").await?;
        own_or_refused(&g, &a_id, &b_id, "currval() after an UPDATE")
    })
    .await
}

/// A plain SET is carried (its unit rewritten to a Write) and so gets a
/// tick on whatever connection it ran: the same wrong value.
#[tokio::test]
async fn a_carried_set_does_not_adopt_anothers_values() -> TestResult {
    common::within(120, async {
        let env = env_of_one().await?;
        let (mut a, _b, a_id, b_id) = a_then_b(&env).await?;
        let g = run(&mut a, "SET application_name = 'review'").await?;
        assert!(g.errors.is_empty(), "{g:?}");
        let g = run(&mut a, "SELECT lastval()").await?;
        own_or_refused(&g, &a_id, &b_id, "lastval() after a carried SET")
    })
    .await
}

/// A client that pins (a temporary table) is never checked, "the
/// connection is theirs": but the values on it are those of whoever
/// wrote there before the pin.
#[tokio::test]
async fn a_pinned_client_does_not_read_anothers_values() -> TestResult {
    common::within(120, async {
        let env = env_of_one().await?;
        let (mut a, _b, a_id, b_id) = a_then_b(&env).await?;
        let g = run(&mut a, "CREATE TEMP TABLE scratch (x int)").await?;
        assert!(g.errors.is_empty(), "{g:?}");
        let g = run(&mut a, "SELECT lastval()").await?;
        own_or_refused(&g, &a_id, &b_id, "lastval() of a pinned client")
    })
    .await
}

/// A unit ending with Flush (or one sent in a batch a Flush left open)
/// skips the check: it reads whatever the connection holds.
#[tokio::test]
async fn a_flush_batch_does_not_read_anothers_values() -> TestResult {
    common::within(120, async {
        let env = env_of_one().await?;
        let (mut a, _b, a_id, b_id) = a_then_b(&env).await?;
        a.send(&[
            parse("", "SELECT lastval()"),
            bind(""),
            EXEC,
            FrontendMessage::Flush,
        ])
        .await?;
        // Up to the CommandComplete or the error (no ReadyForQuery
        // before the Sync).
        let mut g = Got::default();
        loop {
            let (tag, frame) = a.next().await?;
            g.tags.push(char::from(tag));
            match tag {
                b'D' => g.values.push(first_column(&frame)),
                b'E' => {
                    g.errors
                        .push(error_code(&frame[5..]).unwrap_or("?").to_string());
                    break;
                }
                b'C' => break,
                _ => {}
            }
        }
        a.send(&[FrontendMessage::Sync]).await?;
        let _ = until_ready(&mut a).await?;
        own_or_refused(&g, &a_id, &b_id, "lastval() ended by Flush")?;

        // Same inside a batch that a read ended by Flush left open.
        a.send(&[
            parse("", "SELECT 1"),
            bind(""),
            EXEC,
            FrontendMessage::Flush,
        ])
        .await?;
        loop {
            let (tag, _) = a.next().await?;
            if tag == b'C' || tag == b'E' {
                break;
            }
        }
        a.send(&[
            parse("", "SELECT lastval()"),
            bind(""),
            EXEC,
            FrontendMessage::Sync,
        ])
        .await?;
        let g = until_ready(&mut a).await?;
        own_or_refused(&g, &a_id, &b_id, "lastval() in a batch left open by Flush")
    })
    .await
}

/// A statement taken for a read (a function on the read-only list) that
/// writes is refused by the replica (25006) and run again on the
/// primary: it calls `nextval()` there, but gets no tick, so the client
/// whose tick the connection still carries reads that value as its own.
#[tokio::test]
async fn a_write_retried_on_the_primary_records_its_tick() -> TestResult {
    common::within(180, async {
        let env = Env::start(1, |c| {
            c.pool_size = 1;
            c.read_only_functions = vec!["bump".into()];
        })
        .await?;
        let mut a = Raw::login(&env).await?;
        let mut b = Raw::login(&env).await?;
        let g = run(
            &mut a,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text); \
             CREATE FUNCTION bump() RETURNS bigint LANGUAGE sql AS \
             'INSERT INTO t (who) VALUES (''b'') RETURNING id'",
        )
        .await?;
        assert!(g.errors.is_empty(), "{g:?}");
        let standby = env.cluster.client("replica1").await?;
        let replayed = pgkeel_testkit::TempCluster::eventually(Duration::from_secs(30), || async {
            standby
                .query_one("SELECT count(*) FROM pg_proc WHERE proname = 'bump'", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        })
        .await;
        assert!(replayed, "the replica never replayed bump()");

        let a_id = one(&mut a, "INSERT INTO t (who) VALUES ('a') RETURNING id").await?;
        // Routed to the replica, refused there (25006), run on the primary.
        let b_id = one(&mut b, "SELECT bump()").await?;
        assert_ne!(a_id, b_id);
        let g = run(&mut a, "SELECT lastval()").await?;
        own_or_refused(&g, &a_id, &b_id, "lastval() after another's retried write")
    })
    .await
}

/// What the refusal's hint itself recommends (`currval()`/`lastval()` in
/// the same query string, or the same batch, as the INSERT) is refused
/// when the client's earlier values are not on the connection (here: it
/// has not written before). The unit runs its own `nextval()` first, so
/// PostgreSQL answers the value; JDBC sends a multi-statement string as
/// one such batch (one Sync).
#[tokio::test]
async fn insert_and_lastval_in_one_unit_are_not_refused() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 2).await?;
        let mut setup = Raw::login(&env).await?;
        let g = run(
            &mut setup,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
        )
        .await?;
        assert!(g.errors.is_empty(), "{g:?}");

        // One simple Query string.
        let mut a = Raw::login(&env).await?;
        let simple = run(
            &mut a,
            "INSERT INTO t (who) VALUES ('a') RETURNING id; SELECT lastval()",
        )
        .await?;

        // One extended batch (one Sync), as JDBC sends such a string.
        let mut c = Raw::login(&env).await?;
        c.send(&[
            parse("", "INSERT INTO t (who) VALUES ('c') RETURNING id"),
            bind(""),
            EXEC,
            parse("", "SELECT currval('t_id_seq')"),
            bind(""),
            EXEC,
            FrontendMessage::Sync,
        ])
        .await?;
        let extended = until_ready(&mut c).await?;
        eprintln!("simple: {simple:?}\nextended: {extended:?}");
        for (what, g) in [
            ("one query string", &simple),
            ("one extended batch", &extended),
        ] {
            assert!(g.errors.is_empty(), "{what} refused: {g:?}");
            assert_eq!(g.values.len(), 2, "{what}: {g:?}");
            assert_eq!(g.values[0], g.values[1], "{what}: {g:?}");
        }
        Ok(())
    })
    .await
}

/// "With at least as many connections as clients writing at once,
/// nothing is refused": two clients writing one after the other, with a
/// pool of two. The room check counts the acquiring client's own permit
/// as a connection, so the second writer is given the first one's
/// connection instead of a new one, and the first is refused.
#[tokio::test]
async fn a_pool_with_room_opens_a_connection_for_a_second_writer() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 2).await?;
        let (mut a, mut b, a_id, b_id) = a_then_b(&env).await?;
        let g = run(&mut a, "SELECT lastval()").await?;
        assert_eq!(g.errors, Vec::<String>::new(), "a refused: {g:?}");
        assert_eq!(g.values, [Some(a_id)], "{g:?}");
        let g = run(&mut b, "SELECT lastval()").await?;
        assert_eq!(g.values, [Some(b_id)], "{g:?}");
        Ok(())
    })
    .await
}

/// A refused unit is replaced whole by the refusal's simple Query: a
/// named Parse in it never reaches the server nor the proxy's record of
/// the client's statements. PostgreSQL keeps the statement (Parse
/// succeeded; only the Execute failed), so the client binds it again
/// later; through the proxy it "does not exist" (26000).
#[tokio::test]
async fn a_named_parse_in_a_refused_unit_is_kept() -> TestResult {
    common::within(120, async {
        let env = env_of_one().await?;
        let mut setup = Raw::login(&env).await?;
        let g = run(
            &mut setup,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
        )
        .await?;
        assert!(g.errors.is_empty(), "{g:?}");

        // PostgreSQL directly, then the proxy: the same client flow.
        let primary = env.node_port("primary")?;
        let direct = raw_login(primary, &env.user, &env.password, &env.database).await?;
        let mut direct = Raw {
            s: direct,
            buf: Default::default(),
        };
        let mut proxied = Raw::login(&env).await?;
        let mut answers = vec![];
        for raw in [&mut direct, &mut proxied] {
            // No nextval() yet in this session: 55000 at the Execute.
            raw.send(&[
                parse("s1", "SELECT lastval()"),
                bind("s1"),
                EXEC,
                FrontendMessage::Sync,
            ])
            .await?;
            let first = until_ready(raw).await?;
            let id = one(raw, "INSERT INTO t (who) VALUES ('x') RETURNING id").await?;
            raw.send(&[bind("s1"), EXEC, FrontendMessage::Sync]).await?;
            let again = until_ready(raw).await?;
            answers.push((first, id, again));
        }
        let (d_first, d_id, d_again) = &answers[0];
        let (p_first, p_id, p_again) = &answers[1];
        assert_eq!(d_first.errors, ["55000"], "{d_first:?}");
        assert_eq!(p_first.errors, ["55000"], "{p_first:?}");
        assert_eq!(d_again.values, [Some(d_id.clone())], "direct: {d_again:?}");
        assert_eq!(
            p_again.errors,
            Vec::<String>::new(),
            "the proxy lost statement s1: {p_again:?}"
        );
        assert_eq!(p_again.values, [Some(p_id.clone())], "{p_again:?}");
        Ok(())
    })
    .await
}

/// Once another client wrote on the connection, the client's values are
/// gone for good; its later `currval()`/`lastval()` must not wait for
/// them (as it does, up to the queue wait of 5 s, for values on a
/// connection another client's read holds).
#[tokio::test]
async fn a_refusal_known_in_advance_does_not_wait() -> TestResult {
    common::within(120, async {
        let env = env_of_one().await?;
        let (mut a, _b, _a_id, _b_id) = a_then_b(&env).await?;
        for _ in 0..3 {
            let started = Instant::now();
            let g = query(&mut a, "SELECT lastval()").await?;
            let took = started.elapsed();
            assert_eq!(g.errors, ["55000"], "{g:?}");
            assert!(
                took < Duration::from_millis(2500),
                "refusal took {took:?}: waited for a connection that can no longer hold the values"
            );
        }
        Ok(())
    })
    .await
}

/// A `BEGIN` sent alone (psycopg2, Django, tokio-postgres'
/// `transaction()`) is now TransactionControl: it takes a connection as a
/// read would (the one written on longest ago, here a's own), though the
/// transaction it opens then writes there, while the pool has room for a
/// new one (3 connections, 2 clients). a's values are gone: refused.
#[tokio::test]
async fn a_transaction_opened_alone_does_not_take_anothers_values() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 3).await?;
        let mut a = Raw::login(&env).await?;
        let mut b = Raw::login(&env).await?;
        let g = run(
            &mut a,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
        )
        .await?;
        assert!(g.errors.is_empty(), "{g:?}");
        let a_id = one(&mut a, "INSERT INTO t (who) VALUES ('a') RETURNING id").await?;
        for sql in ["BEGIN", "INSERT INTO t (who) VALUES ('b')", "COMMIT"] {
            let g = run(&mut b, sql).await?;
            assert!(g.errors.is_empty(), "{sql}: {g:?}");
        }
        let g = run(&mut a, "SELECT lastval()").await?;
        assert_eq!(g.errors, Vec::<String>::new(), "a refused: {g:?}");
        assert_eq!(g.values, [Some(a_id)], "{g:?}");
        Ok(())
    })
    .await
}

/// The same for the unnamed statement, which drivers bind again across a
/// Sync (pgx's describe-exec mode, asyncpg without a statement cache,
/// `PQprepare(conn, "", ...)`): PostgreSQL keeps the unnamed statement
/// whose Execute failed; the proxy's refusal is a simple Query, which
/// destroys it.
#[tokio::test]
async fn an_unnamed_parse_in_a_refused_unit_is_kept() -> TestResult {
    common::within(120, async {
        let env = env_of_one().await?;
        let mut setup = Raw::login(&env).await?;
        let g = run(
            &mut setup,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
        )
        .await?;
        assert!(g.errors.is_empty(), "{g:?}");
        let primary = env.node_port("primary")?;
        let direct = raw_login(primary, &env.user, &env.password, &env.database).await?;
        let mut direct = Raw {
            s: direct,
            buf: Default::default(),
        };
        let mut proxied = Raw::login(&env).await?;
        let mut answers = vec![];
        for raw in [&mut direct, &mut proxied] {
            raw.send(&[
                parse("", "SELECT lastval()"),
                bind(""),
                EXEC,
                FrontendMessage::Sync,
            ])
            .await?;
            let first = until_ready(raw).await?;
            // An extended INSERT: a simple Query would drop the unnamed
            // statement in PostgreSQL too.
            raw.send(&[
                parse("ins", "INSERT INTO t (who) VALUES ('x') RETURNING id"),
                bind("ins"),
                EXEC,
                FrontendMessage::Sync,
            ])
            .await?;
            let ins = until_ready(raw).await?;
            let id = ins.values.first().cloned().flatten().ok_or("no id")?;
            raw.send(&[bind(""), EXEC, FrontendMessage::Sync]).await?;
            let again = until_ready(raw).await?;
            answers.push((first, id, again));
        }
        let (d_first, d_id, d_again) = &answers[0];
        let (p_first, p_id, p_again) = &answers[1];
        assert_eq!(d_first.errors, ["55000"], "{d_first:?}");
        assert_eq!(p_first.errors, ["55000"], "{p_first:?}");
        assert_eq!(d_again.values, [Some(d_id.clone())], "direct: {d_again:?}");
        assert_eq!(
            p_again.errors,
            Vec::<String>::new(),
            "the proxy lost the unnamed statement: {p_again:?}"
        );
        assert_eq!(p_again.values, [Some(p_id.clone())], "{p_again:?}");
        Ok(())
    })
    .await
}

//! Second review of `currval()`/`lastval()` under transaction pooling
//! (b3b07d1: ownership tokens, `DISCARD SEQUENCES` ahead). Each test shows
//! a client reading another client's value, a needless loss of a client's
//! values, a wrong routing or error, a needless wait or a needless new
//! server connection; each fails on b3b07d1 and asserts what PostgreSQL
//! (or the feature's contract: "the client's own values or 55000, never
//! another client's, without losing values needlessly") gives. Three
//! (1b, 4, 11) ask for values kept when another client's transaction or
//! read had to take the only connection; the proxy discards them then (a
//! read may call nextval() through a view), so those assert "own value or
//! 55000" instead.

mod common;

use std::time::{Duration, Instant};

use common::got::{direct, ok, one, run, until_ready};
use common::{EXEC, Env, Raw, TestResult, bind, parse};
use pgkeel_proxy::{NoReplica, PoolMode};
use pgkeel_testkit::TempCluster;
use pgkeel_wire::FrontendMessage;

/// A table, and client a that inserted a row on the primary: a's values
/// are on the connection it used.
async fn a_inserted(env: &Env) -> TestResult<(Raw, String)> {
    let mut a = Raw::login(env).await?;
    ok(
        &mut a,
        "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
    )
    .await?;
    let a_id = one(&mut a, "INSERT INTO t (who) VALUES ('a') RETURNING id").await?;
    Ok((a, a_id))
}

/// Waits until no client is connected to the proxy (sessions ended, their
/// connections back in the pools).
async fn no_clients(env: &Env) -> TestResult {
    let gone = TempCluster::eventually(Duration::from_secs(10), || async {
        env.proxy.as_ref().is_some_and(|p| {
            p.shared()
                .clients
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
                && p.shared().pools.stats().iter().all(|s| s.active == 0)
        })
    })
    .await;
    if gone {
        Ok(())
    } else {
        Err("clients never left".into())
    }
}

/// 1. Inside a failed transaction the discard is skipped ("nothing runs
/// there"), but a ROLLBACK (or ROLLBACK TO SAVEPOINT) at the head of a
/// unit ends the failed block and what follows it runs: on a connection
/// that still holds another client's values, which the unit then adopts.
/// b's `lastval()` answers a's id; PostgreSQL answers 55000 (b never
/// called nextval()).
#[tokio::test]
async fn a_rollback_in_a_failed_transaction_does_not_expose_anothers_values() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (_a, a_id) = a_inserted(&env).await?;
        let mut results = vec![];
        let mut d = direct(&env).await?;
        let mut b = Raw::login(&env).await?;
        for raw in [&mut d, &mut b] {
            // b's transaction gets the primary's only connection (a's
            // values on it): BEGIN is transaction control, no discard.
            let g = ok(raw, "BEGIN").await?;
            assert_eq!(g.status, Some('T'));
            let g = run(raw, "SELECT 1/0").await?;
            assert_eq!(g.status, Some('E'), "{g:?}");
            results.push(run(raw, "ROLLBACK; SELECT lastval()").await?);
        }
        eprintln!("direct: {:?}\nproxied: {:?}", results[0], results[1]);
        assert_eq!(results[0].errors, ["55000"], "direct: {:?}", results[0]);
        let got = &results[1];
        assert!(
            !got.values.contains(&Some(a_id.clone())),
            "b's lastval() answered a's id {a_id}: {got:?}"
        );
        assert_eq!(got.errors, ["55000"], "{got:?}");
        Ok(())
    })
    .await
}

/// 2. A transaction opened in the same batch as a read of sequence values
/// through a statement prepared earlier (JDBC with autocommit off sends
/// BEGIN, with autosave a SAVEPOINT, and the first statement, a Bind of
/// its server-side statement, before one Sync) is classified
/// `SequenceValue { writes: false }` (BEGIN and SAVEPOINT are "control
/// only"): when the
/// client has no values it is routed to a standby, so the client's
/// read-write transaction runs there. After the 55000 is rolled back to
/// the savepoint (as JDBC's autosave does), the transaction's INSERT is
/// refused 25006; PostgreSQL runs it.
#[tokio::test]
async fn a_transaction_opened_with_a_read_of_values_is_read_write() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 2).await?;
        let mut setup = Raw::login(&env).await?;
        ok(
            &mut setup,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
        )
        .await?;
        let mut d = direct(&env).await?;
        let mut p = Raw::login(&env).await?;
        let mut answers = vec![];
        for raw in [&mut d, &mut p] {
            // A statement the driver prepared earlier (JDBC's server-side
            // statements after prepareThreshold uses: Bind without Parse).
            raw.send(&[parse("lv", "SELECT lastval()"), FrontendMessage::Sync])
                .await?;
            let prepared = until_ready(raw).await?;
            assert!(prepared.errors.is_empty(), "{prepared:?}");
            raw.send(&[
                parse("", "BEGIN"),
                bind(""),
                EXEC,
                parse("", "SAVEPOINT autosave"),
                bind(""),
                EXEC,
                bind("lv"),
                EXEC,
                FrontendMessage::Sync,
            ])
            .await?;
            let first = until_ready(raw).await?;
            let back = run(raw, "ROLLBACK TO SAVEPOINT autosave").await?;
            let insert = run(
                raw,
                "INSERT INTO t (who) VALUES ('x') RETURNING pg_is_in_recovery()",
            )
            .await?;
            let commit = run(raw, "COMMIT").await?;
            answers.push((first, back, insert, commit));
        }
        eprintln!("direct: {:?}\nproxied: {:?}", answers[0], answers[1]);
        for (what, (first, back, insert, commit)) in
            [("direct", &answers[0]), ("proxied", &answers[1])]
        {
            assert_eq!(first.errors, ["55000"], "{what}: {first:?}");
            assert_eq!(back.errors, Vec::<String>::new(), "{what}: {back:?}");
            assert_eq!(
                insert.errors,
                Vec::<String>::new(),
                "{what}: the read-write transaction's INSERT was refused: {insert:?}"
            );
            assert_eq!(insert.values, [Some("f".to_string())], "{what}: {insert:?}");
            assert_eq!(commit.errors, Vec::<String>::new(), "{what}: {commit:?}");
        }
        Ok(())
    })
    .await
}

/// 3. A plain `SET` (carried, run "as a write") counts as a unit that may
/// call `nextval()`: on a connection holding another client's values it
/// discards them. A SET cannot call nextval(); PostgreSQL leaves a's
/// values alone (frameworks such as Laravel or Rails send SETs at every
/// connect, so every new client costs someone their values).
#[tokio::test]
async fn a_carried_set_does_not_discard_anothers_values() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (mut a, a_id) = a_inserted(&env).await?;
        let mut b = Raw::login(&env).await?;
        ok(&mut b, "SET application_name = 'b'").await?;
        let g = run(&mut a, "SELECT lastval()").await?;
        assert_eq!(
            (g.errors.as_slice(), g.values.as_slice()),
            (&[][..], &[Some(a_id.clone())][..]),
            "a's values were discarded by b's SET: {g:?}"
        );
        Ok(())
    })
    .await
}

/// 4. With `default_transaction_isolation = serializable` for the role
/// (which the proxy cannot see), a hot standby refuses every read
/// (0A000) and the proxy runs it again on the primary, where it is taken
/// for a write "perhaps calling nextval()": a plain `SELECT 1` discards
/// another client's values. Only a 25006 refusal means the statement
/// writes.
#[tokio::test]
async fn a_read_the_standby_refused_as_serializable_does_not_discard_anothers_values() -> TestResult
{
    common::within(180, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (mut a, a_id) = a_inserted(&env).await?;
        // Connected before the change: a session of the role started
        // after it is serializable, which the standby refuses outright.
        let standby = env.cluster.client("replica1").await?;
        let su = env.primary_superuser().await?;
        su.batch_execute(&format!(
            "ALTER ROLE \"{}\" SET default_transaction_isolation = 'serializable'",
            env.user
        ))
        .await?;
        let replayed = TempCluster::eventually(Duration::from_secs(30), || async {
            standby
                .query_one(
                    "SELECT count(*) FROM pg_db_role_setting \
                     WHERE array_to_string(setconfig, ',') LIKE '%serializable%'",
                    &[],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        })
        .await;
        assert!(replayed, "the standby never replayed the role setting");
        let mut b = Raw::login(&env).await?;
        // Refused by the standby (0A000), run again on the primary.
        let retries = env
            .metrics()?
            .retries_on_primary
            .load(std::sync::atomic::Ordering::Relaxed);
        ok(&mut b, "SELECT 1").await?;
        assert_eq!(
            env.metrics()?
                .retries_on_primary
                .load(std::sync::atomic::Ordering::Relaxed),
            retries + 1,
            "the standby did not refuse the read"
        );
        // b's read, run again on the primary, had to take a's only
        // connection (a read may call nextval() through a view): a's
        // values went first; its own, or 55000, never another's.
        let g = run(&mut a, "SELECT lastval()").await?;
        assert!(
            g.values == [Some(a_id.clone())] || g.errors == ["55000"],
            "{g:?}"
        );
        assert!(!g.tags.contains("NN"), "the notice came twice: {g:?}");
        Ok(())
    })
    .await
}

/// 5. Without a replica (or with every replica lagging, down, or a
/// client whose reads run on the primary), a read of values the client
/// does not have runs on the primary, where it takes the connection
/// released last, though the pool has room, and discards its owner's
/// values: one client's lost values cost another client theirs.
#[tokio::test]
async fn without_a_replica_reading_no_values_does_not_discard_anothers() -> TestResult {
    common::within(120, async {
        let env = Env::start(0, |c| c.pool_size = 2).await?;
        let (mut a, a_id) = a_inserted(&env).await?;
        let mut b = Raw::login(&env).await?;
        let g = run(&mut b, "SELECT lastval()").await?;
        assert_eq!(g.errors, ["55000"], "b never called nextval(): {g:?}");
        let g = run(&mut a, "SELECT lastval()").await?;
        assert_eq!(
            (g.errors.as_slice(), g.values.as_slice()),
            (&[][..], &[Some(a_id.clone())][..]),
            "a's values were discarded by b's lastval(): {g:?}"
        );
        Ok(())
    })
    .await
}

/// 6. With `no_replica = error` and no usable replica, `lastval()` of a
/// client without values (it never wrote, or its values are gone) is now
/// routed as a read and fails with the proxy's "no readable node"; it
/// used to be (and with values still is) primary-only, and PostgreSQL's
/// answer is 55000.
#[tokio::test]
async fn lastval_without_values_is_not_a_routing_error_without_replicas() -> TestResult {
    common::within(120, async {
        let env = Env::start(0, |c| {
            c.pool_size = 2;
            c.no_replica = NoReplica::Error;
        })
        .await?;
        let mut b = Raw::login(&env).await?;
        let g = run(&mut b, "SELECT lastval()").await?;
        assert_eq!(g.errors, ["55000"], "{g:?}");
        Ok(())
    })
    .await
}

/// 7. A connection keeps its token after its owner left (and, for a
/// pinned or session-mode client, after DISCARD ALL cleared the values):
/// the pool takes it for "another client's values", so the next writer
/// opens a new server connection while the pool has room rather than
/// reuse it. With short-lived clients (PHP: connect, INSERT, leave),
/// every request logs in anew until the pool is full.
#[tokio::test]
async fn a_departed_clients_connection_is_reused_by_the_next_writer() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 4).await?;
        let mut setup = Raw::login(&env).await?;
        ok(
            &mut setup,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
        )
        .await?;
        setup.send(&[FrontendMessage::Terminate]).await?;
        no_clients(&env).await?;
        let mut pids = vec![];
        for who in ["a", "b", "c"] {
            let mut c = Raw::login(&env).await?;
            pids.push(
                one(
                    &mut c,
                    &format!("INSERT INTO t (who) VALUES ('{who}') RETURNING pg_backend_pid()"),
                )
                .await?,
            );
            c.send(&[FrontendMessage::Terminate]).await?;
            no_clients(&env).await?;
        }
        eprintln!("backends: {pids:?}");
        assert!(
            pids.iter().all(|p| *p == pids[0]),
            "each short-lived writer got a new server connection: {pids:?}"
        );
        Ok(())
    })
    .await
}

/// 7b. The same in session mode: every connection a session-mode client
/// wrote on comes back (after DISCARD ALL) still "holding" its values.
#[tokio::test]
async fn session_mode_reuses_a_departed_clients_connection() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| {
            c.pool_size = 4;
            c.pool_mode = PoolMode::Session;
        })
        .await?;
        let mut setup = Raw::login(&env).await?;
        ok(
            &mut setup,
            "CREATE TABLE t (id bigserial PRIMARY KEY, who text)",
        )
        .await?;
        setup.send(&[FrontendMessage::Terminate]).await?;
        let mut pids = vec![];
        for who in ["a", "b", "c"] {
            // The departed client's connection is reset and back idle.
            no_clients(&env).await?;
            let mut c = Raw::login(&env).await?;
            pids.push(
                one(
                    &mut c,
                    &format!("INSERT INTO t (who) VALUES ('{who}') RETURNING pg_backend_pid()"),
                )
                .await?,
            );
            c.send(&[FrontendMessage::Terminate]).await?;
        }
        eprintln!("backends: {pids:?}");
        assert!(
            pids.iter().all(|p| *p == pids[0]),
            "each session-mode writer got a new server connection: {pids:?}"
        );
        Ok(())
    })
    .await
}

/// 8. After a failover, a client whose values were on the old primary
/// still holds a live token (its connection sits in the old primary's
/// pool until reaped, 600 s by default): every `lastval()` waits the
/// whole queue wait on the new primary's pool, where that connection
/// can never come back, before answering 55000.
#[tokio::test]
async fn lastval_after_a_failover_does_not_wait_for_the_old_primary() -> TestResult {
    common::within(240, async {
        let env = Env::start(1, |c| c.queue_wait = Duration::from_secs(8)).await?;
        let replica_port = i32::from(env.node_port("replica1")?);
        let (mut a, _a_id) = a_inserted(&env).await?;
        let standby = env.cluster.client("replica1").await?;
        let replayed = TempCluster::eventually(Duration::from_secs(30), || async {
            standby
                .query_one("SELECT count(*) FROM t", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        })
        .await;
        assert!(replayed, "the replica never replayed the insert");
        drop(standby);

        env.cluster.stop_node("primary").await?;
        let replica = env.cluster.cluster.node("replica1")?.clone();
        let su = env.cluster.cluster.connect(&replica).await?;
        su.client().simple_query("SELECT pg_promote()").await?;
        let moved = TempCluster::eventually(Duration::from_secs(60), || async {
            let Ok(c) = env.client().await else {
                return false;
            };
            c.query_one(
                "INSERT INTO t (who) VALUES ('z') RETURNING current_setting('port')::int",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i32>(0) == replica_port)
        })
        .await;
        assert!(moved, "writes never reached the promoted replica");

        for _ in 0..2 {
            let started = Instant::now();
            let g = run(&mut a, "SELECT lastval()").await?;
            let took = started.elapsed();
            assert_eq!(g.errors, ["55000"], "{g:?}");
            assert!(
                took < Duration::from_secs(3),
                "lastval() took {took:?}: waited for a connection of the old primary"
            );
        }
        Ok(())
    })
    .await
}

/// 9. A read may call `nextval()` where the statement's text does not
/// show it: a view (`CREATE VIEW next_ticket AS SELECT nextval(...)`).
/// On a standby it is refused (25006) and run again as a write; but in a
/// transaction on the primary (or wherever reads run on the primary: no
/// replica, a lagging one) it runs as a read: no discard, no new owner,
/// and the connection's owner then reads the reader's value as its own.
#[tokio::test]
async fn a_read_through_a_view_calling_nextval_does_not_hand_its_value_to_the_owner() -> TestResult
{
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (mut a, a_id) = a_inserted(&env).await?;
        ok(
            &mut a,
            "CREATE SEQUENCE tickets START 1000; \
             CREATE VIEW next_ticket AS SELECT nextval('tickets') AS id",
        )
        .await?;
        let mut b = Raw::login(&env).await?;
        ok(&mut b, "BEGIN").await?;
        let ticket = one(&mut b, "SELECT id FROM next_ticket").await?;
        ok(&mut b, "COMMIT").await?;
        let g = run(&mut a, "SELECT lastval()").await?;
        eprintln!("a_id {a_id}, b's ticket {ticket}: {g:?}");
        assert!(
            !g.values.contains(&Some(ticket.clone())),
            "a's lastval() answered b's nextval() {ticket}: {g:?}"
        );
        if g.errors.is_empty() {
            assert_eq!(g.values, [Some(a_id.clone())], "{g:?}");
        } else {
            assert_eq!(g.errors, ["55000"], "{g:?}");
        }
        Ok(())
    })
    .await
}

/// 10. A client reading its values waits for their connection while
/// another client's transaction holds it; when that client then writes
/// there, the values are gone, but the waiter is only woken by a release
/// (or the queue wait's end): it waits on for nothing, then runs on
/// whatever primary connection is idle, discarding a third client's
/// values there, where a standby would have answered 55000 at once.
#[tokio::test]
async fn a_wait_for_values_ends_when_they_are_discarded() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 2).await?;
        let (mut a, _a_id) = a_inserted(&env).await?;
        // d's values on the other connection (the pool had room).
        let mut d = Raw::login(&env).await?;
        let d_id = one(&mut d, "INSERT INTO t (who) VALUES ('d') RETURNING id").await?;
        // b's transaction takes a's connection (written on longest ago).
        let mut b = Raw::login(&env).await?;
        ok(&mut b, "BEGIN").await?;
        let started = Instant::now();
        a.send(&[FrontendMessage::Query(b"SELECT lastval()")])
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // b writes there: a's values are gone while a waits for them.
        ok(&mut b, "INSERT INTO t (who) VALUES ('b')").await?;
        let g = until_ready(&mut a).await?;
        let took = started.elapsed();
        eprintln!("a waited {took:?}: {g:?}");
        assert_eq!(g.errors, ["55000"], "{g:?}");
        let g = run(&mut d, "SELECT lastval()").await?;
        assert_eq!(
            (g.errors.as_slice(), g.values.as_slice()),
            (&[][..], &[Some(d_id.clone())][..]),
            "d's values were discarded by a's read of values it no longer had: {g:?}"
        );
        assert!(
            took < Duration::from_millis(2500),
            "a waited {took:?} for values already gone"
        );
        ok(&mut b, "COMMIT").await?;
        Ok(())
    })
    .await
}

/// 1b. The same skip, in separate units: a write refused inside a failed
/// transaction (25P02: nothing ran) still makes its client the owner of
/// the connection, without the discard, though another client's values
/// are on it. After ROLLBACK, that client's `lastval()` is taken to its
/// "own" connection and answers the other client's id (and the other
/// client lost its values for nothing). PostgreSQL: 55000.
#[tokio::test]
async fn a_write_refused_in_a_failed_transaction_does_not_adopt_anothers_values() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (mut a, a_id) = a_inserted(&env).await?;
        let mut results = vec![];
        let mut d = direct(&env).await?;
        let mut b = Raw::login(&env).await?;
        for raw in [&mut d, &mut b] {
            ok(raw, "BEGIN").await?;
            let g = run(raw, "SELECT 1/0").await?;
            assert_eq!(g.status, Some('E'), "{g:?}");
            let g = run(raw, "INSERT INTO t (who) VALUES ('b')").await?;
            assert_eq!(g.errors, ["25P02"], "{g:?}");
            ok(raw, "ROLLBACK").await?;
            results.push(run(raw, "SELECT lastval()").await?);
        }
        eprintln!("direct: {:?}\nproxied: {:?}", results[0], results[1]);
        assert_eq!(results[0].errors, ["55000"], "direct: {:?}", results[0]);
        let got = &results[1];
        assert!(
            !got.values.contains(&Some(a_id.clone())),
            "b's lastval() answered a's id {a_id}: {got:?}"
        );
        assert_eq!(got.errors, ["55000"], "{got:?}");
        // b's transaction had to take a's only connection, whatever it
        // then ran: a's values went first (its own, or 55000: never
        // another's).
        let g = run(&mut a, "SELECT lastval()").await?;
        assert!(
            g.values == [Some(a_id.clone())] || g.errors == ["55000"],
            "{g:?}"
        );
        Ok(())
    })
    .await
}

/// 11. `queue_wait` bounds how long a client waits for a server
/// connection; a read of values whose connection another client's
/// transaction holds waits for it up to `queue_wait`, then waits
/// `queue_wait` again for a connection of the full pool: twice the
/// configured limit before the "pool exhausted" error.
#[tokio::test]
async fn a_read_of_values_waits_at_most_the_queue_wait() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| {
            c.pool_size = 1;
            c.queue_wait = Duration::from_secs(2);
        })
        .await?;
        let (mut a, _a_id) = a_inserted(&env).await?;
        let mut b = Raw::login(&env).await?;
        ok(&mut b, "BEGIN").await?;
        let started = Instant::now();
        let g = run(&mut a, "SELECT lastval()").await?;
        let took = started.elapsed();
        eprintln!("a waited {took:?}: {g:?}");
        // b's transaction took the only connection, whose values (a's)
        // went first: PostgreSQL's 55000 at once, or, where a still waits
        // for a connection, 53300 within the queue wait.
        assert!(g.errors == ["55000"] || g.errors == ["53300"], "{g:?}");
        assert!(
            took < Duration::from_millis(3000),
            "a waited {took:?} with a queue wait of 2 s"
        );
        ok(&mut b, "COMMIT").await?;
        Ok(())
    })
    .await
}

/// 12. The hidden `DISCARD SEQUENCES` is a simple Query: inside a
/// transaction it destroys the client's unnamed portal (PostgreSQL drops
/// it for any simple Query), which a client fetching in chunks
/// (Execute with a row limit, PortalSuspended) still uses. The relay
/// parses the unnamed statement again, but nothing restores the portal:
/// the next Execute of it fails (34000) where PostgreSQL returns the
/// next rows.
#[tokio::test]
async fn the_hidden_discard_keeps_the_unnamed_portal() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let (_a, _a_id) = a_inserted(&env).await?;
        let mut d = direct(&env).await?;
        let mut b = Raw::login(&env).await?;
        let mut answers = vec![];
        for raw in [&mut d, &mut b] {
            ok(raw, "BEGIN").await?;
            raw.send(&[
                parse("", "SELECT generate_series(1, 4)"),
                bind(""),
                FrontendMessage::Execute {
                    portal: b"",
                    max_rows: 2,
                },
                FrontendMessage::Sync,
            ])
            .await?;
            let first = until_ready(raw).await?;
            assert_eq!(first.values.len(), 2, "{first:?}");
            // The next rows, and an insert, in one batch.
            raw.send(&[
                FrontendMessage::Execute {
                    portal: b"",
                    max_rows: 2,
                },
                parse("ins", "INSERT INTO t (who) VALUES ('b')"),
                FrontendMessage::Bind {
                    portal: b"p",
                    statement: b"ins",
                    tail: common::NO_PARAMS,
                },
                FrontendMessage::Execute {
                    portal: b"p",
                    max_rows: 0,
                },
                FrontendMessage::Sync,
            ])
            .await?;
            let next = until_ready(raw).await?;
            ok(raw, "ROLLBACK").await?;
            answers.push(next);
        }
        eprintln!("direct: {:?}\nproxied: {:?}", answers[0], answers[1]);
        assert_eq!(
            answers[0].errors,
            Vec::<String>::new(),
            "direct: {:?}",
            answers[0]
        );
        assert_eq!(
            answers[1].errors,
            Vec::<String>::new(),
            "the unnamed portal was lost: {:?}",
            answers[1]
        );
        assert_eq!(answers[1].values, answers[0].values);
        Ok(())
    })
    .await
}

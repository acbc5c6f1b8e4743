//! Edge cases of `tx_start` (moving a read-only transaction a replica
//! refuses to the primary) and carried settings (a plain SET/RESET between
//! transactions follows the client without pinning it), found in review:
//! each test failed before its fix, answering otherwise than PostgreSQL.

mod common;

use std::time::Duration;

use common::{EXEC, Env, Raw, TestResult, bind, parse, query, texts};
use pgkeel_wire::{BackendMessage, FrontendMessage};

/// Runs `sql` and checks it succeeded outside a transaction; its first
/// row as text.
async fn ok(raw: &mut Raw, sql: &str, status: char) -> TestResult<Vec<String>> {
    let a = query(raw, sql).await?;
    assert!(a.errors.is_empty(), "{sql}: {a:?}");
    assert_eq!(a.status, Some(status), "{sql}: {a:?}");
    Ok(texts(&a))
}

/// Sends one simple query and returns the ParameterStatus messages of
/// its answer (name, value), checking it succeeded.
async fn reported(raw: &mut Raw, sql: &str) -> TestResult<Vec<(String, String)>> {
    raw.send(&[FrontendMessage::Query(sql.as_bytes())]).await?;
    let mut out = Vec::new();
    loop {
        let (tag, frame) = raw.next().await?;
        match BackendMessage::decode(&frame)? {
            BackendMessage::ParameterStatus { name, value } => {
                out.push((name.to_string(), value.to_string()))
            }
            BackendMessage::ErrorResponse(e) => {
                return Err(format!("{sql}: {:?}", e.code()).into());
            }
            _ => {}
        }
        if tag == b'Z' {
            return Ok(out);
        }
    }
}

/// The first DataRow's first cell (raw bytes) of an extended batch.
fn first_cell(a: &common::Answer) -> Option<Vec<u8>> {
    a.row.as_ref()?.first()?.clone()
}

// ---------------------------------------------------------------------
// Carried settings
// ---------------------------------------------------------------------

/// `SET seed = 0.5` looks like a plain SET, but its value reads back as
/// "unavailable", which `set_config` refuses: carried, it made every
/// later connection refuse the client's settings, and each of its
/// statements fail. It pins instead. PostgreSQL: `SELECT 1` answers 1.
#[tokio::test]
async fn set_seed_pins_instead_of_breaking_later_statements() -> TestResult {
    common::within(120, async {
        let env = Env::start(0, |c| c.pool_size = 2).await?;
        let mut a = Raw::login(&env).await?;
        let mut b = Raw::login(&env).await?;
        ok(&mut a, "SET seed = 0.5", 'I').await?;
        // Another client takes the (only) connection in between.
        ok(&mut b, "SELECT 1", 'I').await?;
        for _ in 0..2 {
            let r = query(&mut a, "SELECT 1").await?;
            assert!(
                r.errors.is_empty(),
                "after SET seed, a plain SELECT fails through the proxy: {r:?}"
            );
            ok(&mut b, "SELECT 1", 'I').await?;
        }
        Ok(())
    })
    .await
}

/// A client that logged in with `TimeZone` runs `RESET TimeZone`:
/// PostgreSQL returns to the login value and reports it in a
/// ParameterStatus. The proxy relayed only the pooled connection's report
/// (the server default) while it recorded, and later applied, the login
/// value: the driver's idea of TimeZone was not what the session used.
/// Now the login value is put back at once and reported before the
/// ReadyForQuery.
#[tokio::test]
async fn reset_of_a_login_setting_reports_the_login_value() -> TestResult {
    common::within(120, async {
        let env = Env::start(0, |c| c.pool_size = 1).await?;
        let (mut a, login) = Raw::login_with(&env, &[("TimeZone", "Pacific/Chatham")]).await?;
        assert!(
            login
                .iter()
                .any(|(n, v)| n == "TimeZone" && v == "Pacific/Chatham"),
            "{login:?}"
        );
        ok(&mut a, "SET TimeZone = 'Asia/Tokyo'", 'I').await?;
        let got = reported(&mut a, "RESET TimeZone").await?;
        let shown = ok(&mut a, "SHOW TimeZone", 'I').await?;
        assert_eq!(shown, ["Pacific/Chatham"]);
        let told: Vec<&(String, String)> = got.iter().filter(|(n, _)| n == "TimeZone").collect();
        assert!(
            told.last().is_some_and(|(_, v)| v == "Pacific/Chatham"),
            "RESET TimeZone reported {told:?}, but the session's TimeZone is {shown:?}"
        );
        Ok(())
    })
    .await
}

/// A client pipelines a carried `SET client_encoding` and a Parse of a
/// named statement. The Parse was named for the server with the settings
/// fingerprint from before the SET, yet parsed in LATIN1: another UTF8
/// client preparing the same bytes was given that server-side statement
/// and got the wrong text. Now units pipelined behind a carried SET wait
/// until it is settled. PostgreSQL: the second client reads 'é' (c3 a9).
#[tokio::test]
async fn a_parse_pipelined_after_a_carried_set_is_named_for_it() -> TestResult {
    common::within(120, async {
        let env = Env::start(0, |c| c.pool_size = 1).await?;
        let text: &[u8] = b"SELECT '\xc3\xa9'::text";
        let mut a = Raw::login(&env).await?;
        a.send(&[
            FrontendMessage::Query(b"SET client_encoding = 'LATIN1'"),
            parse("s1", text),
            bind("s1"),
            EXEC,
            FrontendMessage::Sync,
        ])
        .await?;
        let set = a.until_ready().await?;
        assert!(set.errors.is_empty(), "{set:?}");
        let ran = a.until_ready().await?;
        assert!(ran.errors.is_empty(), "{ran:?}");
        // In LATIN1 the two bytes are two characters, sent back as is.
        assert_eq!(first_cell(&ran).as_deref(), Some(&b"\xc3\xa9"[..]));
        let mut b = Raw::login(&env).await?;
        let theirs = b.run_parsed("s1", text).await?;
        assert!(theirs.errors.is_empty(), "{theirs:?}");
        assert_eq!(
            first_cell(&theirs).as_deref(),
            Some("é".as_bytes()),
            "a UTF8 client ran a statement parsed in another client's LATIN1"
        );
        Ok(())
    })
    .await
}

/// A client prepares a statement, then carries `SET search_path` (not
/// pinned: only client_encoding/standard_conforming_strings pin when
/// statements exist) and runs the statement on a primary connection that
/// lacks it: the proxy prepared it there under the new search_path but
/// under the server name of the old settings, which any other client
/// with default settings shares; such a client then got "cached plan must
/// not change result type" (0A000), PostgreSQL giving it its row. Now a
/// client's statements are named anew when its settings change.
#[tokio::test]
async fn a_carried_search_path_renames_the_clients_statements() -> TestResult {
    common::within(150, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        env.client()
            .await?
            .batch_execute(
                "CREATE SCHEMA s7; CREATE TABLE public.s7t (v int); INSERT INTO public.s7t VALUES (1); \
                 CREATE TABLE s7.s7t (v text); INSERT INTO s7.s7t VALUES ('x')",
            )
            .await?;
        let mut a = Raw::login(&env).await?;
        // Until the replica has the tables.
        for i in 0.. {
            let r = query(&mut a, "SELECT v FROM s7.s7t").await?;
            if r.errors.is_empty() && r.row.is_some() {
                break;
            }
            assert!(i < 100, "replica never caught up: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Parsed (on the replica, alone in its batch) under the default
        // search_path.
        a.send(&[parse("s1", "SELECT v FROM s7t"), FrontendMessage::Sync])
            .await?;
        let p = a.until_ready().await?;
        assert!(p.errors.is_empty(), "{p:?}");
        ok(&mut a, "SET search_path = s7, public", 'I').await?;
        ok(&mut a, "BEGIN", 'T').await?;
        a.send(&[bind("s1"), EXEC, FrontendMessage::Sync]).await?;
        let _mine = a.until_ready().await?;
        ok(&mut a, "COMMIT", 'I').await?;
        // Another client, default settings, same statement, on the
        // primary (in a transaction).
        let mut b = Raw::login(&env).await?;
        ok(&mut b, "BEGIN", 'T').await?;
        let theirs = b.run_parsed("s1", "SELECT v FROM s7t").await?;
        assert!(
            theirs.errors.is_empty(),
            "another client's carried search_path broke this client's statement: {theirs:?}"
        );
        assert_eq!(texts(&theirs), ["1"]);
        ok(&mut b, "COMMIT", 'I').await?;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------
// tx_start
// ---------------------------------------------------------------------

/// Inside a `BEGIN READ ONLY` on a replica that may still move, an
/// extended batch ended by Flush (the client asks for its answers before
/// a Sync) had its answers held for a possible move, until a Sync that
/// the client does not send: it waited forever. PostgreSQL answers after
/// the Flush; so does the proxy now (such a batch ends the move).
#[tokio::test]
async fn flush_in_a_movable_transaction_is_answered() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let mut raw = Raw::login(&env).await?;
        ok(&mut raw, "BEGIN READ ONLY", 'T').await?;
        raw.send(&[
            parse("", "SELECT 42"),
            bind(""),
            EXEC,
            FrontendMessage::Flush,
        ])
        .await?;
        let mut tags = String::new();
        while let Some((tag, _)) = raw.next_within(Duration::from_secs(3)).await? {
            tags.push(char::from(tag));
            if tag == b'C' {
                break;
            }
        }
        assert_eq!(
            tags, "12DC",
            "answers to a Flush inside a read-only transaction (none within 3 s)"
        );
        raw.send(&[FrontendMessage::Sync]).await?;
        raw.until_ready().await?;
        Ok(())
    })
    .await
}

/// The client reads `in_hot_standby` (SHOW takes no snapshot, so the
/// transaction stays movable) and is told 'on' by the replica; then `SET
/// TRANSACTION ISOLATION LEVEL SERIALIZABLE` moves the transaction to the
/// primary. The same transaction then said it was not on a standby: one
/// server never answers both. Now SHOW ends the move. (PostgreSQL on the
/// replica refuses the SET with 0A000; on the primary SHOW says 'off'.)
#[tokio::test]
async fn show_in_a_transaction_start_keeps_it_on_the_replica() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let mut raw = Raw::login(&env).await?;
        ok(&mut raw, "BEGIN READ ONLY", 'T').await?;
        let before = ok(&mut raw, "SHOW in_hot_standby", 'T').await?;
        let set = query(&mut raw, "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").await?;
        if set.errors.is_empty() {
            let after = ok(&mut raw, "SELECT current_setting('in_hot_standby')", 'T').await?;
            assert_eq!(
                before, after,
                "one transaction answered in_hot_standby {before:?}, then {after:?}"
            );
        }
        Ok(())
    })
    .await
}

/// In a movable `BEGIN READ ONLY` (serializable by default, read nothing
/// yet) the client sends `COMMIT; SELECT 1`: the replica commits, then
/// refused the SELECT (0A000) outside the transaction, and the proxy ran
/// the whole string again on the primary, where COMMIT found no
/// transaction: the client got a WARNING (25P01) PostgreSQL never gives
/// for this string. (Serializable clients' reads now go to the primary
/// anyway; a role's default, which the proxy cannot see, still reaches
/// this path, where a unit sent in a transaction is never run again
/// alone.)
#[tokio::test]
async fn commit_and_read_in_one_string_run_once() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let (mut raw, _) = Raw::login_with(
            &env,
            &[("options", "-c default_transaction_isolation=serializable")],
        )
        .await?;
        ok(&mut raw, "BEGIN READ ONLY", 'T').await?;
        let a = query(&mut raw, "COMMIT; SELECT 1").await?;
        assert!(a.errors.is_empty(), "{a:?}");
        assert!(
            !a.tags.contains('N'),
            "a notice (COMMIT without a transaction: the string ran twice): {a:?}"
        );
        Ok(())
    })
    .await
}

//! The names of a client's named prepared statements through the proxy,
//! compared with what PostgreSQL answers directly: a Parse of a name the
//! client already has is refused (42P05, `prepared statement "x" already
//! exists`) and leaves the statement as it was, the rest of the batch
//! being skipped until Sync as for any error; a Close then a Parse of
//! the name, and a Parse of the unnamed statement, replace it; a name
//! whose Parse failed (or was skipped) does not exist (26000) and may be
//! parsed again. The proxy prepares a client's statements on whichever
//! server connection runs them, under names of its own: only the
//! client's own second Parse of a name is refused.

mod common;

use std::time::Duration;

use common::reply::{Reply, SYNC, batch, close, describe, exchange, q, same_as_direct};
use common::{EXEC, Env, Raw, TestResult, bind, parse};

/// A raw session straight to the primary and one through the proxy.
async fn both(env: &Env) -> TestResult<[Raw; 2]> {
    Ok([common::got::direct(env).await?, Raw::login(env).await?])
}

/// One pooled server connection, shared by every client.
async fn env() -> TestResult<Env> {
    let env = Env::one_connection().await?;
    env.client()
        .await?
        .batch_execute("CREATE TABLE sn_t (v int)")
        .await?;
    Ok(env)
}

/// A Parse of a name the client has, in a later batch or in the same one:
/// 42P05, the old statement runs as before; the new text is parsed
/// first (a syntax error wins), the refusal aborts the batch's implicit
/// transaction (an INSERT before it is rolled back) or the client's
/// transaction block.
async fn duplicates(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    out.push(batch(raw, &[parse("d1", "SELECT 'old'"), SYNC]).await?);
    out.push(batch(raw, &[parse("d1", "SELECT 'new'"), bind("d1"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[bind("d1"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[describe("d1"), SYNC]).await?);
    // The text is parsed before the name is looked at.
    out.push(batch(raw, &[parse("d1", "SELEC 'new'"), SYNC]).await?);
    out.push(batch(raw, &[parse("d1", "SELECT * FROM sn_nowhere"), SYNC]).await?);
    // In one batch: the first Parse stays, the rest is skipped.
    out.push(
        batch(
            raw,
            &[
                parse("d2", "SELECT 'first'"),
                bind("d2"),
                EXEC,
                parse("d2", "SELECT 'second'"),
                bind("d2"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("d2"), EXEC, SYNC]).await?);
    // An INSERT before it in the batch is rolled back with it.
    out.push(
        batch(
            raw,
            &[
                parse("", "INSERT INTO sn_t VALUES (1)"),
                bind(""),
                EXEC,
                parse("d1", "SELECT 1"),
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[q("SELECT count(*) FROM sn_t")]).await?);
    // In a transaction block: the block fails.
    out.push(batch(raw, &[q("BEGIN")]).await?);
    out.push(batch(raw, &[parse("d1", "SELECT 'in tx'"), SYNC]).await?);
    out.push(batch(raw, &[bind("d1"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[q("ROLLBACK")]).await?);
    // Pipelined: each batch answered in turn, the statement unchanged.
    out.extend(
        exchange(
            raw,
            &[
                parse("d1", "SELECT 'p1'"),
                SYNC,
                bind("d1"),
                EXEC,
                SYNC,
                parse("d1", "SELECT 'p2'"),
                bind("d1"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("d1"), EXEC, SYNC]).await?);
    Ok(out)
}

#[tokio::test]
async fn a_parse_of_a_name_the_client_has_is_refused() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let [mut direct, mut proxied] = both(&env).await?;
        let want = duplicates(&mut direct).await?;
        let got = duplicates(&mut proxied).await?;
        // What PostgreSQL says, as this test expects it.
        let exists = (
            "42P05".to_string(),
            "prepared statement \"d1\" already exists".to_string(),
        );
        assert_eq!(want[1].errors, [exists], "{want:?}");
        assert_eq!(want[1].tags, "EZ");
        assert_eq!(want[2].values, [Some("old".to_string())]);
        assert_eq!(want[4].codes(), ["42601"]);
        assert_eq!(want[5].codes(), ["42P01"]);
        assert_eq!(want[6].tags, "12DCEZ");
        assert_eq!(want[6].values, [Some("first".to_string())]);
        assert_eq!(want[7].values, [Some("first".to_string())]);
        assert_eq!(want[8].codes(), ["42P05"]);
        assert_eq!(want[9].values, [Some("0".to_string())]);
        assert_eq!(
            (want[11].codes(), want[11].status),
            (vec!["42P05"], Some('E'))
        );
        assert_eq!(want[12].codes(), ["25P02"]);
        assert_eq!(want[14].codes(), ["42P05"]);
        assert_eq!(want[15].values, [Some("old".to_string())]);
        assert_eq!(want[16].codes(), ["42P05"]);
        assert_eq!(want[17].values, [Some("old".to_string())]);
        same_as_direct(&want, &got);
        Ok(())
    })
    .await
}

/// A Close then a Parse of the name, in one batch or pipelined; the
/// unnamed statement, replaced by every Parse of it.
async fn replacements(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    out.push(batch(raw, &[parse("c1", "SELECT 'one'"), SYNC]).await?);
    out.push(
        batch(
            raw,
            &[
                close("c1"),
                parse("c1", "SELECT 'two'"),
                bind("c1"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("c1"), EXEC, SYNC]).await?);
    out.extend(
        exchange(
            raw,
            &[
                close("c1"),
                SYNC,
                parse("c1", "SELECT 'three'"),
                bind("c1"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("c1"), EXEC, SYNC]).await?);
    // Closed twice, then parsed in a transaction block.
    out.push(batch(raw, &[close("c1"), close("c1"), SYNC]).await?);
    out.push(batch(raw, &[q("BEGIN")]).await?);
    out.push(batch(raw, &[parse("c1", "SELECT 'four'"), bind("c1"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[q("COMMIT")]).await?);
    out.push(
        batch(
            raw,
            &[
                parse("", "SELECT 'u1'"),
                bind(""),
                EXEC,
                parse("", "SELECT 'u2'"),
                bind(""),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[parse("", "SELECT 'u3'"), describe(""), SYNC]).await?);
    out.push(batch(raw, &[bind(""), EXEC, SYNC]).await?);
    Ok(out)
}

#[tokio::test]
async fn close_then_parse_and_the_unnamed_statement_replace_it() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let [mut direct, mut proxied] = both(&env).await?;
        let want = replacements(&mut direct).await?;
        let got = replacements(&mut proxied).await?;
        let values: Vec<Vec<Option<String>>> = want.iter().map(|r| r.values.clone()).collect();
        let v = |s: &str| vec![Some(s.to_string())];
        assert_eq!(values[1], v("two"));
        assert_eq!(values[2], v("two"));
        assert_eq!(values[4], v("three"));
        assert_eq!(values[5], v("three"));
        assert_eq!(want[6].tags, "33Z");
        assert_eq!(values[8], v("four"));
        assert_eq!(values[10], [Some("u1".into()), Some("u2".into())]);
        assert_eq!(values[12], v("u3"));
        assert!(want.iter().all(|r| r.errors.is_empty()), "{want:?}");
        same_as_direct(&want, &got);
        Ok(())
    })
    .await
}

/// A name whose Parse failed, or was skipped after an error earlier in
/// its batch, does not exist (26000), and a Parse of it works.
async fn failures(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    out.push(batch(raw, &[parse("f1", "SELEC 1"), SYNC]).await?);
    out.push(batch(raw, &[bind("f1"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[describe("f1"), SYNC]).await?);
    out.push(batch(raw, &[close("f1"), SYNC]).await?);
    out.push(
        batch(
            raw,
            &[parse("f1", "SELECT 'fixed'"), bind("f1"), EXEC, SYNC],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("f1"), EXEC, SYNC]).await?);
    // Failed in analysis, with its Bind in the same batch.
    out.push(
        batch(
            raw,
            &[
                parse("f2", "SELECT * FROM sn_nowhere"),
                bind("f2"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("f2"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[parse("f2", "SELECT 'f2'"), bind("f2"), EXEC, SYNC]).await?);
    // Skipped: an error before it in its batch.
    out.push(batch(raw, &[bind("nosuch"), parse("f3", "SELECT 'f3'"), SYNC]).await?);
    out.push(batch(raw, &[bind("f3"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[parse("f3", "SELECT 'f3'"), bind("f3"), EXEC, SYNC]).await?);
    // Refused in a failed transaction block.
    out.push(batch(raw, &[q("BEGIN")]).await?);
    out.push(batch(raw, &[q("SELECT 1/0")]).await?);
    out.push(batch(raw, &[parse("f4", "SELECT 'f4'"), SYNC]).await?);
    // A text the server connection has prepared already (for f1).
    out.push(batch(raw, &[parse("f6", "SELECT 'fixed'"), SYNC]).await?);
    out.push(batch(raw, &[q("ROLLBACK")]).await?);
    out.push(batch(raw, &[bind("f4"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[bind("f6"), EXEC, SYNC]).await?);
    // Pipelined: the failed Parse's batch, then a valid Parse of the
    // name in the next one.
    out.extend(
        exchange(
            raw,
            &[
                parse("f5", "SELEC 'f5'"),
                SYNC,
                parse("f5", "SELECT 'f5'"),
                bind("f5"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("f5"), EXEC, SYNC]).await?);
    Ok(out)
}

#[tokio::test]
async fn a_name_whose_parse_failed_does_not_exist() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let [mut direct, mut proxied] = both(&env).await?;
        let want = failures(&mut direct).await?;
        let got = failures(&mut proxied).await?;
        let missing = |name: &str| {
            vec![(
                "26000".to_string(),
                format!("prepared statement \"{name}\" does not exist"),
            )]
        };
        assert_eq!(want[0].codes(), ["42601"]);
        assert_eq!(want[1].errors, missing("f1"), "{want:?}");
        assert_eq!(want[2].errors, missing("f1"));
        assert_eq!(want[4].values, [Some("fixed".to_string())]);
        assert_eq!(want[7].errors, missing("f2"));
        assert_eq!(want[8].values, [Some("f2".to_string())]);
        assert_eq!(want[10].errors, missing("f3"));
        assert_eq!(want[11].values, [Some("f3".to_string())]);
        assert_eq!(want[14].codes(), ["25P02"]);
        assert_eq!(want[15].codes(), ["25P02"]);
        assert_eq!(want[17].errors, missing("f4"));
        assert_eq!(want[18].errors, missing("f6"));
        assert_eq!(want[19].codes(), ["42601"]);
        assert_eq!(want[20].values, [Some("f5".to_string())]);
        assert_eq!(want[21].values, [Some("f5".to_string())]);
        same_as_direct(&want, &got);
        Ok(())
    })
    .await
}

/// Names are the client's: another client may use the same name (and the
/// same text, sharing the server-side statement), and a statement the
/// proxy prepares again on a new server connection is still the
/// client's, refused a second Parse.
#[tokio::test]
async fn names_are_each_clients_own() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let mut a = Raw::login(&env).await?;
        let mut b = Raw::login(&env).await?;
        let ok = |r: &Reply, value: &str| {
            assert!(r.errors.is_empty(), "{r:?}");
            assert_eq!(r.values, [Some(value.to_string())], "{r:?}");
        };
        let run = |name: &'static str| [bind(name), EXEC, SYNC];
        let r = batch(&mut a, &[parse("s", "SELECT 'a'"), bind("s"), EXEC, SYNC]).await?;
        ok(&r, "a");
        let r = batch(&mut b, &[parse("s", "SELECT 'b'"), bind("s"), EXEC, SYNC]).await?;
        ok(&r, "b");
        // The same text under another name: the server has it already.
        let r = batch(&mut b, &[parse("t", "SELECT 'a'"), bind("t"), EXEC, SYNC]).await?;
        ok(&r, "a");
        ok(&batch(&mut a, &run("s")).await?, "a");
        ok(&batch(&mut b, &run("s")).await?, "b");
        let r = batch(&mut b, &[parse("t", "SELECT 'a'"), SYNC]).await?;
        assert_eq!(r.codes(), ["42P05"], "{r:?}");

        // The pooled connection is replaced: the statements are prepared
        // again there, behind the clients' backs.
        env.terminate_pooled(env.node_port("primary")?).await?;
        ok(&batch(&mut b, &run("t")).await?, "a");
        ok(&batch(&mut a, &run("s")).await?, "a");
        let r = batch(&mut a, &[parse("s", "SELECT 'a'"), SYNC]).await?;
        assert_eq!(r.codes(), ["42P05"], "{r:?}");
        let r = batch(&mut b, &[parse("s", "SELECT 'a'"), SYNC]).await?;
        assert_eq!(r.codes(), ["42P05"], "{r:?}");
        ok(&batch(&mut b, &run("s")).await?, "b");
        // A name the client does not have is unknown, whoever has it.
        let r = batch(&mut a, &run("t")).await?;
        assert_eq!(r.codes(), ["26000"], "{r:?}");
        let r = batch(
            &mut a,
            &[parse("t", "SELECT 'a, t'"), bind("t"), EXEC, SYNC],
        )
        .await?;
        ok(&r, "a, t");
        Ok(())
    })
    .await
}

/// A read the replica refused (25006) runs again on the primary, its
/// Parse included: that Parse is no second one of the name.
#[tokio::test]
async fn a_read_run_again_on_the_primary_keeps_its_statement() -> TestResult {
    common::within(180, async {
        let env = Env::start(1, |c| {
            c.pool_size = 1;
            c.read_only_functions = vec!["sn_bump".into()];
        })
        .await?;
        let mut raw = Raw::login(&env).await?;
        let r = batch(
            &mut raw,
            &[q("CREATE TABLE sn_w (id serial, v int); \
                 CREATE FUNCTION sn_bump() RETURNS int LANGUAGE sql AS \
                 'INSERT INTO sn_w (v) VALUES (1) RETURNING id'")],
        )
        .await?;
        assert!(r.errors.is_empty(), "{r:?}");
        let standby = env.cluster.client("replica1").await?;
        let replayed = pgkeel_testkit::TempCluster::eventually(Duration::from_secs(30), || async {
            standby
                .query_one(
                    "SELECT count(*) FROM pg_proc WHERE proname = 'sn_bump'",
                    &[],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        })
        .await;
        assert!(replayed, "the replica never replayed sn_bump()");
        let retries = || -> TestResult<u64> {
            Ok(env
                .metrics()?
                .retries_on_primary
                .load(std::sync::atomic::Ordering::Relaxed))
        };
        let before = retries()?;
        let r = batch(
            &mut raw,
            &[parse("w", "SELECT sn_bump()"), bind("w"), EXEC, SYNC],
        )
        .await?;
        assert_eq!(
            (r.tags.as_str(), r.values.as_slice()),
            ("12DCZ", &[Some("1".to_string())][..]),
            "{r:?}"
        );
        assert_eq!(retries()?, before + 1, "not run again on the primary");
        let r = batch(&mut raw, &[bind("w"), EXEC, SYNC]).await?;
        assert_eq!(r.values, [Some("2".to_string())], "{r:?}");
        let r = batch(&mut raw, &[parse("w", "SELECT sn_bump()"), SYNC]).await?;
        assert_eq!(r.codes(), ["42P05"], "{r:?}");
        // Closed and parsed again in the batch that is run again.
        let r = batch(
            &mut raw,
            &[
                close("w"),
                parse("w", "SELECT sn_bump() + 100"),
                bind("w"),
                EXEC,
                SYNC,
            ],
        )
        .await?;
        assert_eq!(
            (r.tags.as_str(), r.values.as_slice()),
            ("312DCZ", &[Some("103".to_string())][..]),
            "{r:?}"
        );
        Ok(())
    })
    .await
}

/// A serializable read-only transaction the replica refuses moves to the
/// primary with the unit that was refused, its Parse included.
#[tokio::test]
async fn a_moved_transaction_keeps_its_statement() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |_| {}).await?;
        let (mut raw, _) = Raw::login_with(
            &env,
            &[("options", "-c default_transaction_isolation=serializable")],
        )
        .await?;
        let r = batch(&mut raw, &[q("BEGIN READ ONLY")]).await?;
        assert_eq!(r.status, Some('T'), "{r:?}");
        let r = batch(
            &mut raw,
            &[
                parse("m", "SELECT pg_is_in_recovery()"),
                bind("m"),
                EXEC,
                SYNC,
            ],
        )
        .await?;
        assert_eq!(
            (r.tags.as_str(), r.values.as_slice()),
            ("12DCZ", &[Some("f".to_string())][..]),
            "{r:?}"
        );
        let r = batch(&mut raw, &[parse("m", "SELECT 1"), SYNC]).await?;
        assert_eq!((r.codes(), r.status), (vec!["42P05"], Some('E')), "{r:?}");
        batch(&mut raw, &[q("ROLLBACK")]).await?;
        let r = batch(&mut raw, &[bind("m"), EXEC, SYNC]).await?;
        assert!(r.errors.is_empty(), "{r:?}");
        Ok(())
    })
    .await
}

//! A client reaches only its own prepared statements, and never sees the
//! proxy's server-side names (`pgkeel_<hex>`, `pgkeel_duplicate`): a
//! Bind or Describe of a name whose failed Parse was pipelined ahead of
//! it gets PostgreSQL's 26000 naming the client's statement; a Bind or
//! Describe of a name the client never parsed is unknown (26000) even
//! when the server connection holds a statement of that name prepared for
//! another client; a Close of such a name is CloseComplete and closes
//! nothing of another client's. Compared with what PostgreSQL answers
//! directly, transaction effects included.

mod common;
use common::reply::{Reply, SYNC, batch, close, describe, exchange, q};
use common::{EXEC, Env, Raw, TestResult, bind, parse};

fn missing(name: &str) -> (String, String) {
    (
        "26000".to_string(),
        format!("prepared statement \"{name}\" does not exist"),
    )
}

/// No message a client got names one of the proxy's statements.
fn no_proxy_names(replies: &[Reply]) {
    for r in replies {
        for (_, m) in &r.errors {
            assert!(!m.contains("pgkeel_"), "a server-side name leaked: {r:?}");
        }
    }
}

fn assert_same(want: &[Reply], got: &[Reply]) {
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert_eq!(g, w, "step {i}: proxy {got:#?}\ndirect {want:#?}");
    }
    assert_eq!(got.len(), want.len(), "proxy {got:#?}\ndirect {want:#?}");
}

/// One pooled server connection, shared by every client.
async fn env() -> TestResult<Env> {
    let env = Env::one_connection().await?;
    env.client()
        .await?
        .batch_execute("CREATE TABLE si_t (v int)")
        .await?;
    Ok(env)
}

/// Binds and Describes pipelined behind a Parse that fails: the name
/// does not exist when they run.
async fn pipelined_failures(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    out.extend(
        exchange(
            raw,
            &[
                parse("p1", "SELEC 1"),
                SYNC,
                bind("p1"),
                EXEC,
                SYNC,
                describe("p1"),
                SYNC,
                parse("p1", "SELECT 'p1'"),
                bind("p1"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    // The Bind's error rolls back the INSERT before it in its batch.
    out.extend(
        exchange(
            raw,
            &[
                parse("p2", "SELECT * FROM si_nowhere"),
                SYNC,
                parse("", "INSERT INTO si_t VALUES (1)"),
                bind(""),
                EXEC,
                bind("p2"),
                EXEC,
                SYNC,
                q("SELECT count(*) FROM si_t"),
            ],
        )
        .await?,
    );
    // In a transaction block: the block fails.
    out.push(batch(raw, &[q("BEGIN")]).await?);
    out.extend(
        exchange(
            raw,
            &[
                parse("p3", "SELEC 3"),
                SYNC,
                describe("p3"),
                SYNC,
                bind("p3"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[q("ROLLBACK")]).await?);
    // A Close the failed Parse's error skips: the name still does not
    // exist.
    out.push(batch(raw, &[parse("p4", "SELEC 4"), close("p4"), SYNC]).await?);
    out.push(batch(raw, &[bind("p4"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[describe("p4"), SYNC]).await?);
    // Any error of a Bind naming the statement names the client's.
    out.push(
        batch(
            raw,
            &[parse("p5", "SELECT $1::int"), bind("p5"), EXEC, SYNC],
        )
        .await?,
    );
    Ok(out)
}

#[tokio::test]
async fn a_bind_behind_a_failed_parse_names_the_clients_statement() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let mut direct = common::got::direct(&env).await?;
        let mut proxied = Raw::login(&env).await?;
        let want = pipelined_failures(&mut direct).await?;
        let got = pipelined_failures(&mut proxied).await?;
        assert_eq!(want[0].errors[0].0, "42601");
        assert_eq!(want[1].errors, [missing("p1")], "{want:#?}");
        assert_eq!(want[2].errors, [missing("p1")]);
        assert_eq!(want[3].values, [Some("p1".to_string())]);
        assert_eq!(want[5].errors, [missing("p2")]);
        assert_eq!(want[6].values, [Some("0".to_string())]);
        assert_eq!(
            (&want[9].errors, want[9].status),
            (&vec![missing("p3")], Some('E'))
        );
        assert_eq!(want[10].errors, [missing("p3")]);
        assert_eq!(want[13].errors, [missing("p4")]);
        assert_eq!(want[14].errors, [missing("p4")]);
        assert_eq!(
            want[15].errors,
            [(
                "08P01".to_string(),
                "bind message supplies 0 parameters, but prepared statement \"p5\" requires 1"
                    .to_string()
            )]
        );
        no_proxy_names(&got);
        assert_same(&want, &got);
        Ok(())
    })
    .await
}

/// The server-side name of the statement of text `text` on the pooled
/// connection, as any client of the pool can read it.
async fn server_name(raw: &mut Raw, text: &str) -> TestResult<String> {
    let r = batch(
        raw,
        &[q(&format!(
            "SELECT name FROM pg_prepared_statements WHERE statement = '{}'",
            text.replace('\'', "''")
        ))],
    )
    .await?;
    match r.values.as_slice() {
        [Some(name)] if name.starts_with("pgkeel_") => Ok(name.clone()),
        _ => Err(format!("no server-side statement of {text:?}: {r:?}").into()),
    }
}

/// What a client that never parsed `names` gets for them: Binds and
/// Describes, alone, after an INSERT in the batch, in a transaction
/// block, pipelined; Closes.
async fn strangers(raw: &mut Raw, names: &[&str]) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    for &n in names {
        out.push(batch(raw, &[bind(n), EXEC, SYNC]).await?);
        out.push(batch(raw, &[describe(n), SYNC]).await?);
        out.push(
            batch(
                raw,
                &[
                    parse("", "INSERT INTO si_t VALUES (2)"),
                    bind(""),
                    EXEC,
                    bind(n),
                    EXEC,
                    SYNC,
                ],
            )
            .await?,
        );
        out.push(batch(raw, &[q("SELECT count(*) FROM si_t")]).await?);
        out.push(batch(raw, &[q("BEGIN")]).await?);
        out.push(batch(raw, &[describe(n), bind(n), EXEC, SYNC]).await?);
        out.push(batch(raw, &[q("SELECT 1")]).await?);
        out.push(batch(raw, &[q("ROLLBACK")]).await?);
        out.extend(
            exchange(
                raw,
                &[
                    bind(n),
                    EXEC,
                    SYNC,
                    describe(n),
                    SYNC,
                    close(n),
                    SYNC,
                    bind(n),
                    SYNC,
                ],
            )
            .await?,
        );
        out.push(batch(raw, &[close(n), close(n), SYNC]).await?);
    }
    Ok(out)
}

#[tokio::test]
async fn another_clients_server_side_statement_is_out_of_reach() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let mut a = Raw::login(&env).await?;
        let mut b = Raw::login(&env).await?;
        let text = "SELECT 'only for a'";
        let r = batch(&mut a, &[parse("a1", text), bind("a1"), EXEC, SYNC]).await?;
        assert_eq!(r.values, [Some("only for a".to_string())], "{r:?}");
        // A second Parse of the name: the server has `pgkeel_duplicate`.
        let r = batch(&mut a, &[parse("a1", "SELECT 1"), SYNC]).await?;
        assert_eq!(r.errors[0].0, "42P05", "{r:?}");
        let name = server_name(&mut b, text).await?;
        let names = [name.as_str(), "pgkeel_duplicate", "never_parsed"];

        let mut direct = common::got::direct(&env).await?;
        let want = strangers(&mut direct, &names).await?;
        let got = strangers(&mut b, &names).await?;
        // What PostgreSQL says, as this test expects it.
        for (i, n) in names.iter().enumerate() {
            let w = &want[i * 13..];
            assert_eq!(w[0].errors, [missing(n)], "{want:#?}");
            assert_eq!(w[1].errors, [missing(n)]);
            assert_eq!(w[2].errors, [missing(n)]);
            assert_eq!(w[3].values, [Some("0".to_string())]);
            assert_eq!((&w[5].errors, w[5].status), (&vec![missing(n)], Some('E')));
            assert_eq!(w[6].errors[0].0, "25P02");
            assert_eq!(w[8].errors, [missing(n)]);
            assert_eq!(w[9].errors, [missing(n)]);
            assert_eq!(w[10].tags, "3Z");
            assert_eq!(w[11].errors, [missing(n)]);
            assert_eq!(w[12].tags, "33Z");
        }
        assert_same(&want, &got);

        // Closes of those names closed nothing of a's.
        let r = batch(&mut a, &[bind("a1"), EXEC, SYNC]).await?;
        assert_eq!(r.values, [Some("only for a".to_string())], "{r:?}");
        let r = batch(&mut a, &[parse("a1", "SELECT 2"), SYNC]).await?;
        assert_eq!(r.errors[0].0, "42P05", "{r:?}");
        Ok(())
    })
    .await
}

/// A Close of a name the client never parsed is no error, in a batch of
/// its own, after other messages, in a failed transaction block (as
/// PostgreSQL: Close runs there).
async fn closes(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    out.push(batch(raw, &[close("never"), SYNC]).await?);
    out.push(
        batch(
            raw,
            &[parse("", "SELECT 1"), close("never"), close("never2"), SYNC],
        )
        .await?,
    );
    out.push(batch(raw, &[q("BEGIN")]).await?);
    out.push(batch(raw, &[q("SELECT 1/0")]).await?);
    out.push(batch(raw, &[close("never"), SYNC]).await?);
    out.push(batch(raw, &[q("ROLLBACK")]).await?);
    Ok(out)
}

#[tokio::test]
async fn a_close_of_a_name_never_parsed_completes() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let mut direct = common::got::direct(&env).await?;
        let mut proxied = Raw::login(&env).await?;
        let want = closes(&mut direct).await?;
        let got = closes(&mut proxied).await?;
        assert_eq!(want[0].tags, "3Z");
        assert_eq!(want[1].tags, "133Z");
        assert_eq!((want[4].tags.as_str(), want[4].status), ("3Z", Some('E')));
        assert_same(&want, &got);
        Ok(())
    })
    .await
}

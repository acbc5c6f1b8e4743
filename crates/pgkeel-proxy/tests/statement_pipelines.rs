//! A named Parse of a text the server connection has prepared already,
//! sent while batches ahead of it are still unanswered, compared with
//! what PostgreSQL answers directly. The proxy answers such a Parse
//! itself (the server has the statement) only when nothing ahead can
//! change the outcome; behind an unanswered batch the server decides:
//! the same text's error when the Parse ahead that prepared it fails,
//! 25P02 when the batch ahead aborts the transaction block, success
//! when the batch ahead created what the text needs; and a Parse skipped
//! by an error ahead of it in its batch leaves no statement for a Bind
//! pipelined behind (26000).

mod common;

use common::reply::{Reply, SYNC, batch, exchange, q, same_as_direct};
use common::{EXEC, Env, Raw, TestResult, bind, parse};

/// Two Parses of one text in pipelined batches, the first failing,
/// failing then succeeding, or succeeding.
async fn same_text(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    // A syntax error: each Parse gets it.
    out.extend(
        exchange(
            raw,
            &[
                parse("a", "SELEC 'sp'"),
                SYNC,
                parse("b", "SELEC 'sp'"),
                bind("b"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("a"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[bind("b"), EXEC, SYNC]).await?);
    // A missing table, created by the batch between the two.
    out.extend(
        exchange(
            raw,
            &[
                parse("c", "SELECT count(*) FROM sp_later"),
                SYNC,
                q("CREATE TABLE sp_later ()"),
                parse("d", "SELECT count(*) FROM sp_later"),
                bind("d"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("c"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[bind("d"), EXEC, SYNC]).await?);
    // Both valid.
    out.extend(
        exchange(
            raw,
            &[
                parse("e", "SELECT 'sp e'"),
                SYNC,
                parse("f", "SELECT 'sp e'"),
                bind("f"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[bind("e"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[bind("f"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[q("DROP TABLE sp_later")]).await?);
    Ok(out)
}

#[tokio::test]
async fn a_parse_behind_an_unanswered_parse_of_its_text_gets_the_servers_answer() -> TestResult {
    common::within(120, async {
        let env = Env::one_connection().await?;
        let mut direct = common::got::direct(&env).await?;
        let want = same_text(&mut direct).await?;
        let mut proxied = Raw::login(&env).await?;
        let got = same_text(&mut proxied).await?;
        let missing = |name: &str| {
            vec![(
                "26000".to_string(),
                format!("prepared statement \"{name}\" does not exist"),
            )]
        };
        let one = |s: &str| vec![Some(s.to_string())];
        // What PostgreSQL says, as this test expects it.
        assert_eq!(want[0].codes(), ["42601"], "{want:?}");
        assert_eq!(want[1].codes(), ["42601"]);
        assert_eq!(want[1].tags, "EZ");
        assert_eq!(want[2].errors, missing("a"));
        assert_eq!(want[3].errors, missing("b"));
        assert_eq!(want[4].codes(), ["42P01"]);
        assert!(want[5].errors.is_empty(), "{want:?}");
        assert_eq!(want[6].values, one("0"));
        assert_eq!(want[7].errors, missing("c"));
        assert_eq!(want[8].values, one("0"));
        assert!(want[9].errors.is_empty(), "{want:?}");
        assert_eq!(want[10].values, one("sp e"));
        assert_eq!(want[11].values, one("sp e"));
        assert_eq!(want[12].values, one("sp e"));
        same_as_direct(&want, &got);
        Ok(())
    })
    .await
}

/// A Parse of a text the server has, pipelined behind a batch that
/// aborts the transaction block.
async fn behind_an_aborting_batch(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    out.push(batch(raw, &[parse("k", "SELECT 'known'"), SYNC]).await?);
    out.push(batch(raw, &[q("BEGIN")]).await?);
    out.extend(
        exchange(
            raw,
            &[
                parse("", "SELECT 1/0"),
                bind(""),
                EXEC,
                SYNC,
                parse("s", "SELECT 'known'"),
                bind("s"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[q("ROLLBACK")]).await?);
    out.push(batch(raw, &[bind("s"), EXEC, SYNC]).await?);
    // The statement the server had is not disturbed.
    out.push(batch(raw, &[bind("k"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[parse("s", "SELECT 'known'"), bind("s"), EXEC, SYNC]).await?);
    Ok(out)
}

#[tokio::test]
async fn a_parse_behind_a_batch_that_aborts_the_block_is_refused() -> TestResult {
    common::within(120, async {
        let env = Env::one_connection().await?;
        let mut direct = common::got::direct(&env).await?;
        let want = behind_an_aborting_batch(&mut direct).await?;
        let mut proxied = Raw::login(&env).await?;
        let got = behind_an_aborting_batch(&mut proxied).await?;
        let one = |s: &str| vec![Some(s.to_string())];
        assert_eq!(want[2].codes(), ["22012"], "{want:?}");
        assert_eq!(
            (want[3].codes(), want[3].status),
            (vec!["25P02"], Some('E'))
        );
        assert_eq!(want[5].codes(), ["26000"]);
        assert_eq!(want[6].values, one("known"));
        assert_eq!(want[7].values, one("known"));
        same_as_direct(&want, &got);
        Ok(())
    })
    .await
}

/// A Parse of a text the server has, skipped by an error ahead of it in
/// its batch, and a Bind of its name pipelined in the next batch.
async fn behind_a_skipped_parse(raw: &mut Raw) -> TestResult<Vec<Reply>> {
    let mut out = Vec::new();
    out.push(batch(raw, &[parse("k", "SELECT 'kept'"), SYNC]).await?);
    out.extend(
        exchange(
            raw,
            &[
                bind("nosuch"),
                parse("y", "SELECT 'kept'"),
                SYNC,
                bind("y"),
                EXEC,
                SYNC,
            ],
        )
        .await?,
    );
    out.push(batch(raw, &[parse("y", "SELECT 'kept'"), bind("y"), EXEC, SYNC]).await?);
    out.push(batch(raw, &[bind("k"), EXEC, SYNC]).await?);
    Ok(out)
}

#[tokio::test]
async fn a_bind_behind_a_skipped_parse_finds_no_statement() -> TestResult {
    common::within(120, async {
        let env = Env::one_connection().await?;
        let mut direct = common::got::direct(&env).await?;
        let want = behind_a_skipped_parse(&mut direct).await?;
        let mut proxied = Raw::login(&env).await?;
        let got = behind_a_skipped_parse(&mut proxied).await?;
        let one = |s: &str| vec![Some(s.to_string())];
        assert_eq!(want[1].codes(), ["26000"], "{want:?}");
        assert_eq!(
            want[2].errors,
            [(
                "26000".to_string(),
                "prepared statement \"y\" does not exist".to_string()
            )]
        );
        assert_eq!(want[3].values, one("kept"));
        assert_eq!(want[4].values, one("kept"));
        same_as_direct(&want, &got);
        Ok(())
    })
    .await
}

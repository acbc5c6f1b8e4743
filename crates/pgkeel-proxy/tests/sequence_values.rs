//! `currval()`/`lastval()` through the transaction pool: a client reads
//! back the values of its own `nextval()` calls (PHP PDO's
//! `lastInsertId()`, Doctrine DBAL, `INSERT ... VALUES
//! (currval('parent_id_seq'))`), or gets 55000, never another client's.

mod common;

use std::sync::atomic::Ordering;

use common::{Env, TestResult};
use tokio_postgres::Client;

/// Two server connections per node: enough for clients to take turns on
/// different ones, few enough that they must share.
async fn env() -> TestResult<Env> {
    Env::start(1, |c| c.pool_size = 2).await
}

async fn insert(c: &Client, who: &str) -> TestResult<i64> {
    let row = c
        .query_one("INSERT INTO seq_t (who) VALUES ($1) RETURNING id", &[&who])
        .await?;
    Ok(row.get(0))
}

async fn lastval(c: &Client) -> Result<i64, tokio_postgres::Error> {
    Ok(c.query_one("SELECT lastval()", &[]).await?.get(0))
}

/// The SQLSTATE and message of a refused statement.
fn refused(e: &tokio_postgres::Error) -> (String, String) {
    e.as_db_error().map_or_else(
        || ("none".into(), e.to_string()),
        |d| (d.code().code().to_string(), d.message().to_string()),
    )
}

/// currval()/lastval() units that ran where the client's values were
/// gone.
fn lost(env: &Env) -> TestResult<u64> {
    Ok(env.metrics()?.sequence_lost.load(Ordering::Relaxed))
}

#[tokio::test]
async fn lastval_answers_the_clients_own_insert_or_55000_never_anothers() -> TestResult {
    common::within(120, async {
        let env = env().await?;
        let a = env.client().await?;
        let b = env.client().await?;
        a.batch_execute("CREATE TABLE seq_t (id bigserial PRIMARY KEY, who text)")
            .await?;

        // Two connections, each written on by one client: each client's
        // lastval() finds its own (the pool alone would hand both the one
        // released last).
        a.batch_execute("BEGIN").await?;
        b.batch_execute("BEGIN").await?;
        let a_id = insert(&a, "a").await?;
        let b_id = insert(&b, "b").await?;
        a.batch_execute("COMMIT").await?;
        b.batch_execute("COMMIT").await?;
        assert_eq!(
            lastval(&a).await.map_err(|e| format!("lastval: {e:?}"))?,
            a_id
        );
        assert_eq!(
            lastval(&b).await.map_err(|e| format!("lastval: {e:?}"))?,
            b_id
        );
        // Reads on a replica leave the values alone.
        let _ = a.query_one("SELECT count(*) FROM seq_t", &[]).await?;
        let row = a.query_one("SELECT currval('seq_t_id_seq')", &[]).await?;
        assert_eq!(row.get::<_, i64>(0), a_id);
        assert_eq!(lost(&env)?, 0);
        // With b's connection busy, another client's transaction must take
        // a's (whatever runs there may call nextval(), through a view): a's
        // values are discarded first, and a gets PostgreSQL's 55000.
        let c = env.client().await?;
        b.batch_execute("BEGIN").await?;
        c.batch_execute("BEGIN").await?;
        let _ = c.query_one("SELECT count(*) FROM seq_t", &[]).await?;
        c.batch_execute("COMMIT").await?;
        b.batch_execute("COMMIT").await?;
        let e = lastval(&a)
            .await
            .err()
            .ok_or("a's values survived c's transaction")?;
        assert_eq!(refused(&e).0, "55000");
        assert_eq!(lost(&env)?, 1);

        // With b's connection busy, a client that has not written yet
        // must write on the one that holds a's value: a's lastval() would
        // be that client's id; it is refused.
        b.batch_execute("BEGIN").await?;
        let a_id = insert(&a, "a").await?;
        let c_id = insert(&c, "c").await?;
        b.batch_execute("COMMIT").await?;
        assert_ne!(a_id, c_id);
        let e = match lastval(&a).await {
            Ok(v) => {
                return Err(format!(
                    "lastval after another's write answered {v} (a {a_id}, c {c_id})"
                )
                .into());
            }
            Err(e) => e,
        };
        let (code, message) = refused(&e);
        assert_eq!(code, "55000", "{message}");
        assert!(message.contains("not yet defined"), "{message}");
        assert_eq!(lost(&env)?, 2);
        // c's own value is right.
        assert_eq!(
            lastval(&c).await.map_err(|e| format!("lastval: {e:?}"))?,
            c_id
        );
        // Inside a transaction that did not get it either: the refusal
        // fails the transaction as the server's own error would.
        a.batch_execute("BEGIN").await?;
        let e = a
            .query_one("SELECT currval('seq_t_id_seq')", &[])
            .await
            .err()
            .ok_or("currval in a transaction answered")?;
        assert_eq!(refused(&e).0, "55000");
        let after = a
            .batch_execute("SELECT 1")
            .await
            .err()
            .ok_or("not failed")?;
        assert_eq!(refused(&after).0, "25P02");
        a.batch_execute("ROLLBACK").await?;
        // Once a writes again, its values are back.
        let a_id = insert(&a, "a").await?;
        assert_eq!(
            lastval(&a).await.map_err(|e| format!("lastval: {e:?}"))?,
            a_id
        );
        // The same transaction always sees its own.
        let rows = a
            .simple_query(
                "BEGIN; INSERT INTO seq_t (who) VALUES ('a2'); \
                 SELECT currval('seq_t_id_seq')::text; COMMIT",
            )
            .await?;
        let in_tx = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(in_tx, Some((a_id + 1).to_string()));

        // A client that wrote nothing gets PostgreSQL's answer (no value
        // yet), not a value another client left on the connection.
        let d = env.client().await?;
        let (code, message) = refused(&lastval(&d).await.err().ok_or("answered")?);
        assert_eq!(code, "55000");
        assert!(message.contains("not yet defined"), "{message}");
        // Counted: a's two reads where its values were gone (not the one
        // in its transaction, whose BEGIN made that connection a's), not
        // d's, which never had any.
        assert_eq!(lost(&env)?, 2);
        Ok(())
    })
    .await
}

/// A parent and its child inserted one statement at a time (autocommit),
/// the child taking the parent's id with currval(), by clients that run
/// concurrently: every child points at its own client's parent.
#[tokio::test]
async fn concurrent_parents_and_children_link_right_or_are_refused() -> TestResult {
    // 4 writers on 2 connections: they must share.
    let refused = parents_and_children(2).await?;
    eprintln!("pool of 2: {refused} of 100 refused");
    Ok(())
}

/// With a connection per writer (the 4, and the one that made the
/// tables), each keeps its own: nothing is refused.
#[tokio::test]
async fn writers_that_each_have_a_connection_keep_their_values() -> TestResult {
    let refused = parents_and_children(5).await?;
    eprintln!("pool of 5: {refused} of 100 refused");
    assert_eq!(refused, 0);
    Ok(())
}

/// 4 clients each insert 25 parents and their children; how many
/// children were refused.
async fn parents_and_children(pool_size: usize) -> TestResult<i64> {
    let mut refused_total = 0;
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = pool_size).await?;
        let setup = env.client().await?;
        setup
            .batch_execute(
                "CREATE TABLE parent (id serial PRIMARY KEY, who text); \
                 CREATE TABLE child (parent_id int REFERENCES parent, who text)",
            )
            .await?;
        let mut tasks = vec![];
        for who in 0..4 {
            let client = env.client().await?;
            tasks.push(tokio::spawn(async move {
                let who = format!("w{who}");
                let mut refused = 0i64;
                for _ in 0..25 {
                    client
                        .execute("INSERT INTO parent (who) VALUES ($1)", &[&who])
                        .await?;
                    if let Err(e) = client
                        .execute(
                            "INSERT INTO child VALUES (currval('parent_id_seq'), $1)",
                            &[&who],
                        )
                        .await
                    {
                        match e.as_db_error().map(|d| d.code().code()) {
                            Some("55000") => refused += 1,
                            _ => return Err(e),
                        }
                    }
                }
                Ok::<_, tokio_postgres::Error>(refused)
            }));
        }
        let mut refused = 0;
        for t in tasks {
            refused += t.await??;
        }
        // Counted on the primary (the replica may lag).
        let primary = env.primary_superuser().await?;
        let wrong: i64 = primary
            .query_one(
                "SELECT count(*) FROM child JOIN parent ON parent.id = child.parent_id \
                 WHERE parent.who <> child.who",
                &[],
            )
            .await?
            .get(0);
        let linked: i64 = primary
            .query_one("SELECT count(*) FROM child", &[])
            .await?
            .get(0);
        assert_eq!(wrong, 0, "children linked to another client's parent");
        assert_eq!(linked + refused, 100);
        // How many link depends on timing: with 4 writers on 2
        // connections, another writer usually takes the connection
        // between a parent and its child (95-96 of 100 refused on this
        // machine, and all 100 in one CI run), so no lower bound here;
        // with a connection each, nothing is refused (the caller checks).
        refused_total = refused;
        Ok(())
    })
    .await?;
    Ok(refused_total)
}

/// A client whose values are gone (another client wrote on their only
/// connection) asks for them: it gets PostgreSQL's 55000 with a notice
/// saying why, from a standby, and the other client's values, which now
/// hold that connection, stay.
#[tokio::test]
async fn reading_lost_values_leaves_the_owners_alone() -> TestResult {
    common::within(120, async {
        let env = Env::start(1, |c| c.pool_size = 1).await?;
        let mut a = common::Raw::login(&env).await?;
        let mut b = common::Raw::login(&env).await?;
        for (by_a, sql) in [
            (true, "CREATE TABLE seq_l (id bigserial PRIMARY KEY)"),
            (true, "INSERT INTO seq_l DEFAULT VALUES"),
            (false, "INSERT INTO seq_l DEFAULT VALUES"),
        ] {
            let raw = if by_a { &mut a } else { &mut b };
            let g = common::query(raw, sql).await?;
            assert!(g.errors.is_empty(), "{sql}: {g:?}");
        }
        for _ in 0..2 {
            let g = common::query(&mut a, "SELECT lastval()").await?;
            assert_eq!(g.errors, ["55000"], "{g:?}");
            assert!(g.tags.starts_with('N'), "no notice first: {g:?}");
        }
        let g = common::query(&mut b, "SELECT lastval()").await?;
        assert_eq!(common::texts(&g), ["2"], "{g:?}");
        assert_eq!(lost(&env)?, 2);
        Ok(())
    })
    .await
}

//! With one replica applying WAL two seconds late (`recovery_min_apply_delay`):
//! read-your-writes holds over thousands of write-then-read rounds (every
//! read sees its write, reads still go to the replica that has caught up,
//! plain reads do miss fresh writes), then the users-api example, configured
//! by `--dir` like a `pgkeel up` user runs it, serves both routes with
//! read-your-writes across requests through its `pgkeel-token` header, and
//! answers errors properly.

#[allow(dead_code)]
#[path = "../examples/users-api/app.rs"]
mod app;
#[allow(dead_code)]
#[path = "../examples/users-api/cluster_dir.rs"]
mod cluster_dir;
mod common;
#[allow(dead_code)]
#[path = "../examples/users-api/settings.rs"]
mod settings;

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use common::http::http;
use common::{TestResult, eventually, node_of, pool, superuser};
use pgkeel_client::ReplicatedPool;
use pgkeel_testkit::TempCluster;
use tokio::net::TcpListener;
use tokio_postgres::Client;

const ROUNDS: i64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_and_the_users_api_with_a_delayed_replica() -> TestResult {
    let cluster = TempCluster::start(2, "quorum").await?;
    let delayed = superuser(&cluster, "replica1").await?;
    delayed
        .batch_execute("ALTER SYSTEM SET recovery_min_apply_delay = '2s'")
        .await?;
    delayed.batch_execute("SELECT pg_reload_conf()").await?;
    let applied = eventually(Duration::from_secs(30), || async {
        delayed
            .query_one("SHOW recovery_min_apply_delay", &[])
            .await
            .is_ok_and(|r| r.get::<_, String>(0) == "2s")
    })
    .await;
    assert!(applied, "recovery_min_apply_delay not in force");
    read_your_writes(&cluster, &delayed).await?;
    users_api(&cluster, &delayed).await
}

/// True once the delayed replica has `table`.
async fn has_table(delayed: &Client, table: &str) -> TestResult<bool> {
    Ok(delayed
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?
        .get(0))
}

async fn read_your_writes(cluster: &TempCluster, delayed: &Client) -> TestResult {
    let pool = pool(cluster).await?;
    let tx = pool.write().await?;
    tx.batch_execute("CREATE TABLE rw (id bigint PRIMARY KEY, v text)")
        .await?;
    tx.commit().await?;

    // The delay is real: right after the commit the delayed replica lacks
    // the table; it gets it a little later.
    assert!(
        !has_table(delayed, "rw").await?,
        "replica1 applied the write without delay"
    );
    assert!(
        eventually(Duration::from_secs(60), || async {
            has_table(delayed, "rw").await.is_ok_and(|t| t)
        })
        .await,
        "replica1 never applied the CREATE TABLE"
    );

    let mut served: HashMap<String, usize> = HashMap::new();
    for id in 0..ROUNDS {
        let tx = pool.write().await?;
        tx.execute("INSERT INTO rw VALUES ($1, 'x')", &[&id])
            .await?;
        let token = tx.commit().await?;
        let mut conn = pool.read_after(&token).await?;
        let row = conn
            .query_opt("SELECT inet_server_port() FROM rw WHERE id = $1", &[&id])
            .await?;
        let Some(row) = row else {
            return Err(format!("round {id}: write not visible on {}", conn.node()).into());
        };
        let port: i32 = row.get(0);
        *served.entry(node_of(cluster, port as u16)).or_insert(0) += 1;
    }
    assert_eq!(
        served.get("replica1"),
        None,
        "the delayed replica served a read: {served:?}"
    );
    let on_replica = served.get("replica2").copied().unwrap_or(0);
    assert!(
        on_replica * 2 > ROUNDS as usize,
        "most reads should come from the caught-up replica: {served:?}"
    );

    // Plain reads do not wait: some of them miss a fresh write on the
    // delayed replica, which is what read_after is for.
    let mut missed = 0;
    for id in ROUNDS..ROUNDS + 20 {
        let tx = pool.write().await?;
        tx.execute("INSERT INTO rw VALUES ($1, 'y')", &[&id])
            .await?;
        tx.commit().await?;
        let mut conn = pool.read().await?;
        if conn
            .query_opt("SELECT 1 FROM rw WHERE id = $1", &[&id])
            .await?
            .is_none()
        {
            missed += 1;
        }
    }
    assert!(
        missed > 0,
        "plain reads never missed a write: the delay had no effect"
    );
    Ok(())
}

async fn users_api(cluster: &TempCluster, delayed: &Client) -> TestResult {
    let root = cluster.cluster.layout.root().display().to_string();
    let args =
        settings::Args::try_parse_from(["users-api", "--dir", &root, "--listen", "127.0.0.1:0"])?;
    let config = settings::pool_config(&args, |_| None)?;
    assert_eq!(
        (config.user.as_str(), config.dbname.as_str()),
        ("app", "app")
    );
    assert_eq!(config.nodes.len(), 3);
    let pool = ReplicatedPool::new(config).await?;
    app::ensure_schema(&pool).await?;
    app::ensure_schema(&pool).await?; // idempotent
    // Plain reads may land on the delayed replica: let it have the table.
    assert!(
        eventually(Duration::from_secs(60), || async {
            has_table(delayed, "users").await.is_ok_and(|t| t)
        })
        .await,
        "replica1 never applied the users table"
    );

    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app::router(pool)).await });

    // Create then read back, many times: the token makes every read see
    // its write although one replica applies WAL 2 s late.
    for i in 0..50 {
        let body = format!(r#"{{"name": "User {i}", "email": "user{i}@example.com"}}"#);
        let created = http(addr, "POST", "/users", &[], &body).await?;
        assert_eq!(created.status, 201, "{}", created.body);
        let user: app::User = created.json()?;
        assert!(user.id > 0);
        assert_eq!(
            (user.name.as_str(), user.email.clone()),
            (format!("User {i}").as_str(), format!("user{i}@example.com"))
        );
        let token = created
            .header(app::TOKEN_HEADER)
            .ok_or("no token header")?
            .to_string();
        let fetched = http(
            addr,
            "GET",
            &format!("/users/{}", user.id),
            &[(app::TOKEN_HEADER, &token)],
            "",
        )
        .await?;
        assert_eq!(fetched.status, 200, "round {i}: {}", fetched.body);
        assert_eq!(fetched.json::<app::User>()?, user);
    }

    // Without a token it is an ordinary replica read (eventually there).
    let created = http(
        addr,
        "POST",
        "/users",
        &[],
        r#"{"name": "Grace", "email": "grace@example.com"}"#,
    )
    .await?;
    let grace: app::User = created.json()?;
    let path = format!("/users/{}", grace.id);
    assert!(
        eventually(Duration::from_secs(60), || async {
            http(addr, "GET", &path, &[], "")
                .await
                .is_ok_and(|a| a.status == 200)
        })
        .await,
        "a plain read never found the new user"
    );

    // Errors.
    let missing = http(addr, "GET", "/users/987654321", &[], "").await?;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("987654321"), "{}", missing.body);
    let dup = http(
        addr,
        "POST",
        "/users",
        &[],
        r#"{"name": "Again", "email": "grace@example.com"}"#,
    )
    .await?;
    assert_eq!(dup.status, 409, "{}", dup.body);
    let empty = http(
        addr,
        "POST",
        "/users",
        &[],
        r#"{"name": " ", "email": "x@example.com"}"#,
    )
    .await?;
    assert_eq!(empty.status, 422, "{}", empty.body);
    let malformed = http(addr, "POST", "/users", &[], r#"{"name": "#).await?;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    let bad_token = http(addr, "GET", &path, &[(app::TOKEN_HEADER, "yesterday")], "").await?;
    assert_eq!(bad_token.status, 400, "{}", bad_token.body);
    let bad_id = http(addr, "GET", "/users/abc", &[], "").await?;
    assert_eq!(bad_id.status, 400, "{}", bad_id.body);

    server.abort();
    Ok(())
}

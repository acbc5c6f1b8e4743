//! The users-api example against a real cluster with a delayed replica,
//! configured through `--dir` like `pgkeel up` users run it: both routes,
//! read-your-writes across requests through the `pgkeel-token` header, and
//! the error answers. Also: its configuration errors name the fix.

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

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use common::{TestResult, eventually, superuser};
use pgkeel_client::ReplicatedPool;
use pgkeel_testkit::TempCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> TestResult<T> {
        Ok(serde_json::from_str(&self.body)?)
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TestResult<Answer> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut raw)).await??;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_api_routes_on_a_cluster_dir() -> TestResult {
    let cluster = TempCluster::start(2, "quorum").await?;
    let delayed = superuser(&cluster, "replica1").await?;
    delayed
        .batch_execute("ALTER SYSTEM SET recovery_min_apply_delay = '2s'")
        .await?;
    delayed.batch_execute("SELECT pg_reload_conf()").await?;
    assert!(
        eventually(Duration::from_secs(10), || async {
            delayed
                .query_one("SHOW recovery_min_apply_delay", &[])
                .await
                .is_ok_and(|r| r.get::<_, String>(0) == "2s")
        })
        .await
    );

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
        eventually(Duration::from_secs(15), || async {
            delayed
                .query_one("SELECT to_regclass('users') IS NOT NULL", &[])
                .await
                .is_ok_and(|r| r.get::<_, bool>(0))
        })
        .await
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
        eventually(Duration::from_secs(15), || async {
            http(addr, "GET", &path, &[], "")
                .await
                .is_ok_and(|a| a.status == 200)
        })
        .await
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

#[test]
fn configuration_errors_name_the_fix() -> TestResult {
    let args = settings::Args::try_parse_from(["users-api"])?;
    assert_eq!(args.listen.to_string(), "127.0.0.1:8000");
    let err = settings::pool_config(&args, |_| None)
        .err()
        .ok_or("no settings accepted")?;
    assert!(
        err.contains("POSTGRES_MASTER_HOST") && err.contains("--dir"),
        "{err}"
    );

    let only_host = |name: &str| (name == "POSTGRES_MASTER_HOST").then(|| "db".to_string());
    let err = settings::pool_config(&args, only_host)
        .err()
        .ok_or("partial env accepted")?;
    assert!(
        err.contains("POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB are not set"),
        "{err}"
    );

    let dir = tempfile::tempdir()?;
    let args =
        settings::Args::try_parse_from(["users-api", "--dir", &dir.path().display().to_string()])?;
    let err = settings::pool_config(&args, |_| None)
        .err()
        .ok_or("empty dir accepted")?;
    assert!(
        err.contains("cluster.toml") && err.contains("pgkeel up --dir"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("cluster.toml"),
        "[[nodes]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = 5432\n",
    )?;
    let err = settings::pool_config(&args, |_| None)
        .err()
        .ok_or("missing password accepted")?;
    assert!(err.contains("app.password"), "{err}");

    assert!(settings::Args::try_parse_from(["users-api", "--listen", "nowhere"]).is_err());
    Ok(())
}

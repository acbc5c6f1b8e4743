//! Logins beyond the static user list: roles looked up with the auth
//! query on the primary (SCRAM pass-through to the servers), md5 only
//! when allowed, the same 28P01 for wrong passwords and unknown roles,
//! a clear FATAL when the primary cannot be asked, and one auth query for
//! many concurrent first logins of a role.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Env, TestResult};
use pgkeel_cluster::url::{Credentials, UrlTarget};
use pgkeel_proxy::ClusterProxyOptions;
use pgkeel_testkit::{TempCluster, connect_url, free_port_block};
use pgkeel_wire::backend::Authentication;
use pgkeel_wire::{BackendMessage, FrontendMessage, StartupPacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, SimpleQueryMessage};

fn values(msgs: &[SimpleQueryMessage]) -> Vec<String> {
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// Port, recovery flag and user of where `SELECT` ran.
async fn where_read(c: &Client) -> TestResult<(u16, String, String)> {
    let v = values(
        &c.simple_query("SELECT current_setting('port')::int, pg_is_in_recovery(), current_user")
            .await?,
    );
    let [port, recovery, user] = v.as_slice() else {
        return Err(format!("unexpected row {v:?}").into());
    };
    Ok((port.parse()?, recovery.clone(), user.clone()))
}

/// The SQLSTATE and message a failed login got.
async fn login_error(url: &str) -> TestResult<(String, String)> {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok(_) => Err("login unexpectedly succeeded".into()),
        Err(e) => {
            let db = e
                .as_db_error()
                .ok_or_else(|| format!("no server error: {e}"))?;
            Ok((db.code().code().to_string(), db.message().to_string()))
        }
    }
}

/// Sends a startup message and returns the first message the proxy
/// answers with (decoded as owned text for assertions), plus the stream.
async fn first_reply(port: u16, user: &str) -> TestResult<(tokio::net::TcpStream, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut out = Vec::new();
    StartupPacket::Startup {
        minor: 0,
        params: vec![("user", user), ("database", "postgres")],
    }
    .encode(&mut out);
    s.write_all(&out).await?;
    let frame = read_frame(&mut s).await?;
    Ok((s, frame))
}

async fn read_frame(s: &mut tokio::net::TcpStream) -> TestResult<Vec<u8>> {
    let mut buf = bytes::BytesMut::new();
    loop {
        if let Some((_, len)) = pgkeel_wire::split_message(&buf, 1 << 20)? {
            return Ok(buf.split_to(len).to_vec());
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read_buf(&mut buf)).await??;
        if n == 0 {
            return Err("proxy closed the connection".into());
        }
    }
}

/// Which authentication the proxy asks `user` for: "sasl", "md5" or
/// something else.
async fn asked_for(port: u16, user: &str) -> TestResult<&'static str> {
    let (_s, frame) = first_reply(port, user).await?;
    Ok(match BackendMessage::decode(&frame)? {
        BackendMessage::Authentication(Authentication::Sasl(_)) => "sasl",
        BackendMessage::Authentication(Authentication::Md5Password(_)) => "md5",
        _ => "other",
    })
}

/// The salt the proxy's SCRAM server-first-message offers `user`.
async fn offered_salt(port: u16, user: &str) -> TestResult<String> {
    let (mut s, _) = first_reply(port, user).await?;
    let first = b"n,,n=,r=clientnonce";
    let mut body = b"SCRAM-SHA-256\0".to_vec();
    body.extend_from_slice(&(first.len() as i32).to_be_bytes());
    body.extend_from_slice(first);
    let mut out = Vec::new();
    FrontendMessage::Password(&body).encode(&mut out);
    s.write_all(&out).await?;
    let frame = read_frame(&mut s).await?;
    let BackendMessage::Authentication(Authentication::SaslContinue(d)) =
        BackendMessage::decode(&frame)?
    else {
        return Err("no SASL continue".into());
    };
    let text = String::from_utf8(d.to_vec())?;
    text.split(',')
        .find_map(|a| a.strip_prefix("s=").map(str::to_string))
        .ok_or_else(|| "no salt".into())
}

async fn wait_replayed(env: &Env, replicas: &[&str], check: &str) -> TestResult {
    for replica in replicas {
        let direct = env.cluster.client(replica).await?;
        let ok = TempCluster::eventually(Duration::from_secs(60), || async {
            direct
                .query_one(check, &[])
                .await
                .is_ok_and(|r| r.get::<_, bool>(0))
        })
        .await;
        if !ok {
            return Err(format!("{replica} never replayed `{check}`").into());
        }
    }
    Ok(())
}

#[tokio::test]
async fn auth_query_roles_log_in_with_scram_pass_through() -> TestResult {
    common::within(300, auth_query_body()).await
}

async fn auth_query_body() -> TestResult {
    let env = Env::start_with(
        2,
        |o| o.auth_query = Some(true),
        |c| {
            c.auth_cache_ttl = Duration::from_secs(300);
            // One client's reads visit both replicas (each login there
            // uses the recovered keys).
            c.replica_choice = pgkeel_proxy::ReplicaChoice::RoundRobin;
        },
    )
    .await?;
    let primary_port = env.node_port("primary")?;
    let replica_ports: HashSet<u16> =
        [env.node_port("replica1")?, env.node_port("replica2")?].into();
    let (su, su_password) = env.superuser()?;
    let admin = connect_url(&env.url_as(env.port, &su, &su_password)).await?;
    admin
        .batch_execute(
            "CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; \
             CREATE ROLE bob LOGIN PASSWORD 'bob-pw'",
        )
        .await?;
    let app = env.client().await?;
    app.batch_execute("CREATE TABLE notes (v int); GRANT SELECT, INSERT ON notes TO alice")
        .await?;
    wait_replayed(
        &env,
        &["replica1", "replica2"],
        "SELECT count(*) = 2 FROM pg_roles WHERE rolname IN ('alice', 'bob') \
         AND has_table_privilege('alice', 'notes', 'SELECT')",
    )
    .await?;

    // A role the proxy was never told about logs in with SCRAM; the proxy
    // logs in to replicas and the primary with the keys it recovered.
    let alice = connect_url(&env.url_as(env.port, "alice", "alice-pw")).await?;
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let (port, recovery, user) = where_read(&alice).await?;
        assert!(replica_ports.contains(&port), "read ran on {port}");
        assert_eq!((recovery.as_str(), user.as_str()), ("t", "alice"));
        seen.insert(port);
    }
    assert_eq!(seen, replica_ports);
    let row = alice
        .query_one(
            "INSERT INTO notes VALUES (1) RETURNING current_setting('port')::int, current_user::text",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i32>(0), i32::from(primary_port));
    assert_eq!(row.get::<_, String>(1), "alice");

    // Wrong password and unknown role: the same FATAL.
    let wrong = login_error(&env.url_as(env.port, "alice", "nope")).await?;
    assert_eq!(
        wrong,
        (
            "28P01".to_string(),
            "password authentication failed for user \"alice\"".to_string()
        )
    );
    let unknown = login_error(&env.url_as(env.port, "nobody", "nope")).await?;
    assert_eq!(
        unknown,
        (
            "28P01".to_string(),
            "password authentication failed for user \"nobody\"".to_string()
        )
    );
    // The unknown role's salt does not change between attempts (a random
    // one would tell it apart from a real role).
    assert_eq!(
        offered_salt(env.port, "nobody").await?,
        offered_salt(env.port, "nobody").await?
    );
    assert_ne!(
        offered_salt(env.port, "nobody").await?,
        offered_salt(env.port, "nobody2").await?
    );
    // The failed attempt dropped alice's cached secret; she still logs in.
    let alice = connect_url(&env.url_as(env.port, "alice", "alice-pw")).await?;

    // Primary down: a role whose secret is not cached gets a clear FATAL;
    // the proxy keeps serving everyone else.
    env.cluster.stop_node("primary").await?;
    let (code, message) = login_error(&env.url_as(env.port, "bob", "bob-pw")).await?;
    assert_eq!(code, "08006", "{message}");
    assert!(
        message.starts_with("cannot look up the password of user \"bob\""),
        "{message}"
    );
    let (port, recovery, _) = where_read(&alice).await?;
    assert!(replica_ports.contains(&port) && recovery == "t");
    let app2 = env.client().await?;
    let (port, _, user) = where_read(&app2).await?;
    assert!(replica_ports.contains(&port));
    assert_eq!(user, env.user);
    // alice's secret is cached: she can still log in and read.
    let alice2 = connect_url(&env.url_as(env.port, "alice", "alice-pw")).await?;
    assert!(replica_ports.contains(&where_read(&alice2).await?.0));
    Ok(())
}

#[tokio::test]
async fn md5_only_when_allowed() -> TestResult {
    common::within(300, md5_body()).await
}

async fn md5_body() -> TestResult {
    let env = Env::start_with(
        1,
        |o| {
            o.auth_query = Some(true);
            o.allow_md5 = Some(true);
        },
        |_| {},
    )
    .await?;
    let primary_port = env.node_port("primary")?;
    let replica_port = env.node_port("replica1")?;
    // The servers accept md5 for carol (pgkeel writes scram-sha-256 only), over the socket and TCP.
    for node in ["primary", "replica1"] {
        let hba = env
            .cluster
            .cluster
            .layout
            .data_dir(node)
            .join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!("local all carol md5\nhost all carol all md5\n{text}"),
        )?;
        let url = env
            .cluster
            .cluster
            .url(&UrlTarget::Node(node.into()), Credentials::Superuser)
            .await?;
        connect_url(&url)
            .await?
            .batch_execute("SELECT pg_reload_conf()")
            .await?;
    }
    let (su, su_password) = env.superuser()?;
    let admin = connect_url(&env.url_as(env.port, &su, &su_password)).await?;
    admin
        .batch_execute(
            "SET password_encryption = 'md5'; CREATE ROLE carol LOGIN PASSWORD 'carol-pw'",
        )
        .await?;
    env.client()
        .await?
        .batch_execute("CREATE TABLE notes (v int); GRANT SELECT, INSERT ON notes TO carol")
        .await?;
    wait_replayed(
        &env,
        &["replica1"],
        "SELECT has_table_privilege('carol', 'notes', 'INSERT')",
    )
    .await?;

    // allow_md5: an md5 role is asked for MD5, everyone else for SCRAM.
    assert_eq!(asked_for(env.port, "carol").await?, "md5");
    assert_eq!(asked_for(env.port, &env.user).await?, "sasl");
    assert_eq!(asked_for(env.port, "nobody").await?, "sasl");
    let carol = connect_url(&env.url_as(env.port, "carol", "carol-pw")).await?;
    let (port, recovery, user) = where_read(&carol).await?;
    assert_eq!(
        (port, recovery.as_str(), user.as_str()),
        (replica_port, "t", "carol")
    );
    let row = carol
        .query_one(
            "INSERT INTO notes VALUES (1) RETURNING current_setting('port')::int",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i32>(0), i32::from(primary_port));
    let wrong = login_error(&env.url_as(env.port, "carol", "nope")).await?;
    assert_eq!(wrong.0, "28P01");
    assert_eq!(wrong.1, "password authentication failed for user \"carol\"");

    // Default (md5 off): never asked for MD5; the md5 role cannot log in
    // and gets the usual 28P01.
    let port = free_port_block(1);
    let mut options = ClusterProxyOptions::new(([127, 0, 0, 1], port).into());
    options.auth_query = Some(true);
    let strict = Env::proxy_for(&env.cluster, &options, 1, |_| {}).await?;
    assert_eq!(asked_for(port, "carol").await?, "sasl");
    assert_eq!(asked_for(port, &env.user).await?, "sasl");
    let refused = login_error(&env.url_as(port, "carol", "carol-pw")).await?;
    assert_eq!(
        refused,
        (
            "28P01".to_string(),
            "password authentication failed for user \"carol\"".to_string()
        )
    );
    strict.shutdown(Duration::from_millis(100)).await;
    Ok(())
}

#[tokio::test]
async fn concurrent_first_logins_share_one_auth_query() -> TestResult {
    common::within(300, single_flight_body()).await
}

/// Clients logging in at once as a role the proxy has not looked up yet.
const BURST: usize = 8;

/// An auth query that takes two seconds (so a burst of logins overlaps
/// it, even when a loaded machine is slow to start some of them), counts
/// its runs in a sequence (not rolled back by an error) and fails while
/// `auth_ok` is empty.
const SLOW_LOOKUP: &str = "CREATE SEQUENCE public.auth_calls; \
     CREATE TABLE public.auth_ok (x int); \
     CREATE FUNCTION public.auth_lookup(u text) \
     RETURNS TABLE (r_name text, r_secret text) LANGUAGE plpgsql AS $$ \
     BEGIN \
       PERFORM pg_sleep(2); \
       PERFORM nextval('public.auth_calls'); \
       IF NOT EXISTS (SELECT 1 FROM public.auth_ok) THEN \
         RAISE EXCEPTION 'auth lookups are switched off'; \
       END IF; \
       RETURN QUERY SELECT a.rolname::text, a.rolpassword \
         FROM pg_catalog.pg_authid a WHERE a.rolname = u; \
     END $$";

/// `BURST` logins as carol at once: each one's outcome.
async fn burst(env: &Env) -> Vec<Result<Client, tokio_postgres::Error>> {
    let url = env.url_as(env.port, "carol", "carol-pw");
    let logins = (0..BURST).map(|_| {
        let url = url.clone();
        async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
    });
    futures_util::future::join_all(logins).await
}

async fn single_flight_body() -> TestResult {
    let env = Env::start_with(
        1,
        |o| o.auth_query = Some(true),
        |c| c.auth_query = "SELECT r_name, r_secret FROM public.auth_lookup($1)".into(),
    )
    .await?;
    let (su, su_password) = env.superuser()?;
    let admin = connect_url(&env.url_as(env.port, &su, &su_password)).await?;
    admin
        .batch_execute("CREATE ROLE carol LOGIN PASSWORD 'carol-pw'")
        .await?;
    // Owned by the application role (so it can read the count directly on
    // the primary); the auth query runs them as the superuser.
    env.client().await?.batch_execute(SLOW_LOOKUP).await?;
    let primary = env.cluster.client("primary").await?;
    let calls = || async {
        let row = primary
            .query_one(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.auth_calls",
                &[],
            )
            .await?;
        TestResult::Ok(row.get::<_, i64>(0))
    };
    let metric = || {
        env.proxy
            .as_ref()
            .map(|p| p.shared().metrics.auth_queries.load(Ordering::Relaxed))
    };

    // The query fails: every login of the burst gets the error, from the
    // one query they shared.
    for outcome in burst(&env).await {
        let err = outcome.err().ok_or("a login succeeded without a secret")?;
        let db = err
            .as_db_error()
            .ok_or_else(|| format!("no server error: {err}"))?;
        assert_eq!(db.code().code(), "08006", "{}", db.message());
        assert!(
            db.message()
                .starts_with("cannot look up the password of user \"carol\"")
                && db.message().contains("auth lookups are switched off"),
            "{}",
            db.message()
        );
    }
    assert_eq!(
        calls().await?,
        1,
        "the burst ran the auth query more than once"
    );
    assert_eq!(metric(), Some(1));

    // The failure was not cached: once the query works, the next burst
    // logs in, again with one query between them.
    primary
        .batch_execute("INSERT INTO public.auth_ok VALUES (1)")
        .await?;
    for outcome in burst(&env).await {
        let client = outcome?;
        let row = client.query_one("SELECT current_user::text", &[]).await?;
        assert_eq!(row.get::<_, String>(0), "carol");
    }
    assert_eq!(
        calls().await?,
        2,
        "the burst ran the auth query more than once"
    );
    assert_eq!(metric(), Some(2));
    // Cached now: a later login asks nothing.
    connect_url(&env.url_as(env.port, "carol", "carol-pw")).await?;
    assert_eq!(calls().await?, 2);
    let text = pgkeel_proxy::metrics::render(env.proxy.as_ref().ok_or("no proxy")?.shared());
    assert!(
        text.contains("\npgkeel_proxy_auth_queries_total 2\n"),
        "{text}"
    );
    Ok(())
}

//! Bad clients: wrong passwords get FATAL 28P01; garbage, truncated
//! messages and absurd lengths end that client's connection with an
//! error while the proxy and other clients carry on.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Env, TestResult, raw_login, read_to_close};
use pgkeel_cluster::url::format_url;
use pgkeel_wire::{BackendMessage, split_message};
use tokio::io::AsyncWriteExt;

/// SQLSTATE of the first ErrorResponse in `bytes`.
fn first_error_code(bytes: &[u8]) -> Option<String> {
    let mut rest = bytes;
    while let Ok(Some((_, len))) = split_message(rest, 1 << 20) {
        if let Ok(BackendMessage::ErrorResponse(f)) = BackendMessage::decode(&rest[..len]) {
            return f.code().map(str::to_string);
        }
        rest = &rest[len..];
    }
    None
}

#[tokio::test]
async fn bad_clients_do_not_hurt_others() -> TestResult {
    common::within(240, body()).await
}

async fn body() -> TestResult {
    let env = Env::start(1, |_| {}).await?;

    // A well-behaved client keeps querying the whole time.
    let good = env.client().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let worker = tokio::spawn({
        let (stop, ok) = (stop.clone(), ok.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let r = good.query_one("SELECT $1::int + 1", &[&1i32]).await?;
                assert_eq!(r.get::<_, i32>(0), 2);
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), tokio_postgres::Error>(())
        }
    });

    // Wrong password and unknown user: FATAL 28P01, same message shape.
    for (user, password) in [(env.user.as_str(), "wrong"), ("nobody", "x")] {
        let url = format_url(user, password, "127.0.0.1", env.port, &env.database);
        let err = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok(_) => return Err(format!("{user} logged in with a wrong password").into()),
            Err(e) => e,
        };
        let db = err.as_db_error().ok_or("no server error")?;
        assert_eq!(db.code().code(), "28P01");
        assert_eq!(db.severity(), "FATAL");
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }

    // Garbage instead of a startup packet ("GET " read as a length).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", env.port)).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    assert_eq!(
        first_error_code(&read_to_close(&mut s).await?).as_deref(),
        Some("08P01")
    );

    // An absurd length after login: refused without allocating it.
    let mut s = raw_login(env.port, &env.user, &env.password, &env.database).await?;
    s.write_all(b"Q\x7f\xff\xff\xff").await?;
    let reply = read_to_close(&mut s).await?;
    assert_eq!(first_error_code(&reply).as_deref(), Some("08P01"));
    assert!(String::from_utf8_lossy(&reply).contains("exceeds the maximum"));

    // A message whose fields do not fit its length.
    let mut s = raw_login(env.port, &env.user, &env.password, &env.database).await?;
    s.write_all(b"P\0\0\0\x09\0q\0\x03\xe8").await?;
    assert_eq!(
        first_error_code(&read_to_close(&mut s).await?).as_deref(),
        Some("08P01")
    );

    // An unknown message type.
    let mut s = raw_login(env.port, &env.user, &env.password, &env.database).await?;
    s.write_all(b"z\0\0\0\x04").await?;
    assert_eq!(
        first_error_code(&read_to_close(&mut s).await?).as_deref(),
        Some("08P01")
    );

    // A truncated message, then the client hangs up.
    let mut s = raw_login(env.port, &env.user, &env.password, &env.database).await?;
    s.write_all(b"Q\0\0\0\x20SELE").await?;
    s.shutdown().await?;
    read_to_close(&mut s).await?;

    // Everyone else is fine, and new clients still get in.
    let start = std::time::Instant::now();
    while ok.load(Ordering::Relaxed) == 0 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    worker.await??;
    assert!(ok.load(Ordering::Relaxed) > 0);
    let fresh = env.client().await?;
    assert_eq!(fresh.query_one("SELECT 7", &[]).await?.get::<_, i32>(0), 7);
    let metrics = &env.proxy.as_ref().ok_or("proxy")?.shared().metrics;
    assert!(metrics.protocol_errors.load(Ordering::Relaxed) >= 4);
    assert_eq!(metrics.auth_failures.load(Ordering::Relaxed), 2);
    Ok(())
}

#[tokio::test]
async fn stalled_logins_time_out_and_give_their_slot_back() -> TestResult {
    common::within(180, stalled_body()).await
}

async fn stalled_body() -> TestResult {
    let env = Env::start(1, |c| {
        c.login_timeout = Duration::from_secs(1);
        c.max_clients = 2;
    })
    .await?;
    let within = |s| tokio::time::timeout(Duration::from_secs(15), s);

    // Connects and never speaks: closed after the timeout, silently.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", env.port)).await?;
    // Sends its startup packet, then never answers the password request:
    // FATAL 57014, then closed.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", env.port)).await?;
    let mut startup = Vec::new();
    pgkeel_wire::StartupPacket::Startup {
        minor: 0,
        params: vec![
            ("user", env.user.as_str()),
            ("database", env.database.as_str()),
        ],
    }
    .encode(&mut startup);
    stalled.write_all(&startup).await?;

    let silent_reply = within(read_to_close(&mut silent)).await??;
    assert!(silent_reply.is_empty(), "{silent_reply:?}");
    let stalled_reply = within(read_to_close(&mut stalled)).await??;
    assert_eq!(first_error_code(&stalled_reply).as_deref(), Some("57014"));

    // Both slots are free again (max_clients = 2): two clients get in.
    let a = env.client().await?;
    let b = env.client().await?;
    assert_eq!(a.query_one("SELECT 1", &[]).await?.get::<_, i32>(0), 1);
    assert_eq!(b.query_one("SELECT 2", &[]).await?.get::<_, i32>(0), 2);
    Ok(())
}

//! `pgkeel secrets rotate`: a new password takes effect on the primary at
//! once, reaches the standbys' password files through the agents (a
//! reconnecting WAL receiver uses it) and the proxy through SIGHUP.

mod common;

use std::time::{Duration, Instant};

use common::{CliCluster, TestResult, text};
use pgkeel_testkit::connect_url;

/// Polls `check` every 100 ms for up to `secs` seconds.
async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > Duration::from_secs(secs) {
            return Err(format!("{what} did not happen within {secs} s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn rotate(c: &CliCluster, role: &str) -> std::process::Output {
    let root = c.root.display().to_string();
    common::pgkeel(
        c.dir.path(),
        &["secrets", "rotate", "--dir", &root, role],
        &[],
    )
}

#[tokio::test]
async fn rotated_passwords_reach_the_primary_the_standbys_and_the_proxy() -> TestResult {
    let c = CliCluster::new(3)?;
    c.up(&[]);

    // The superuser: the old password stops working at once.
    let old = c.url(&["--superuser"])?;
    let out = rotate(&c, "superuser");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("new password set on primary"),
        "{}",
        text(&out)
    );
    let new = c.url(&["--superuser"])?;
    assert_ne!(old, new);
    connect_url(&new).await?;
    let refused = connect_url(&old)
        .await
        .err()
        .ok_or("the old password still works")?;
    let code = refused
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .map(|c| c.code().to_string());
    assert_eq!(code.as_deref(), Some("28P01"), "{refused}");

    // Replication: reconnecting WAL receivers use the new password.
    let out = rotate(&c, "replication");
    assert!(out.status.success(), "{}", text(&out));
    let secret = std::fs::read_to_string(c.root.join("secrets/replication.password"))?;
    eventually("the agents' password files to follow", 10, || async {
        std::fs::read_to_string(c.root.join("auth/replication.pgpass"))
            .is_ok_and(|p| p.contains(secret.trim()))
    })
    .await?;
    let primary = connect_url(&new).await?;
    let senders = "SELECT pid FROM pg_stat_replication WHERE state = 'streaming' \
                   AND application_name IN ('replica1', 'replica2')";
    let before: Vec<i32> = primary
        .query(senders, &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(before.len(), 2);
    // (A WAL receiver cannot be terminated; ending its WAL sender makes it
    // connect and log in again.)
    primary
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        .await?;
    eventually(
        "both replicas to stream again, logged in anew",
        30,
        || async {
            primary.query(senders, &[]).await.is_ok_and(|rows| {
                rows.len() == 2 && rows.iter().all(|r| !before.contains(&r.get::<_, i32>(0)))
            })
        },
    )
    .await?;

    // The application role, through the proxy.
    let out = rotate(&c, "app");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reloads the secrets"),
        "{}",
        text(&out)
    );
    let proxy = c.url(&["--proxy"])?;
    eventually(
        "a login through the proxy with the new password",
        10,
        || async {
            match connect_url(&proxy).await {
                Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
                Err(_) => false,
            }
        },
    )
    .await?;

    // Anything else is refused with the choices.
    let out = rotate(&c, "nobody");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a role pgkeel manages"),
        "{}",
        text(&out)
    );
    Ok(())
}

//! up is idempotent, down/up restarts, destroy removes, url and access
//! rules work, init writes a usable file.

mod common;

use common::{CliCluster, TestResult, pgkeel, text};
use pgkeel_testkit::{TestDir, connect_url};

#[tokio::test]
async fn lifecycle_and_access() -> TestResult {
    let c = CliCluster::new(3)?;
    c.up(&[]);

    // Running: up reports it and changes nothing.
    let again = c.up(&[]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("already running; nothing changed"),
        "{}",
        text(&again)
    );

    // A conflicting flag is refused rather than ignored.
    let out = c.run("up", &["--mode", "async"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replication.mode"),
        "{}",
        text(&out)
    );

    // URLs: app role on the primary, superuser, a replica.
    let app = connect_url(&c.url(&[])?).await?;
    let row = app
        .query_one(
            "SELECT current_user::text, current_database()::text, pg_is_in_recovery()",
            &[],
        )
        .await?;
    assert_eq!(
        (
            row.get::<_, &str>(0),
            row.get::<_, &str>(1),
            row.get::<_, bool>(2)
        ),
        ("app", "app", false)
    );
    let su = connect_url(&c.url(&["--superuser"])?).await?;
    let is_super: bool = su
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    assert!(is_super);
    let replica = connect_url(&c.url(&["--replica"])?).await?;
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get(0);
    assert!(in_recovery);

    // A wrong password gets the proper SQLSTATE 28P01; the replication
    // role cannot open an ordinary session.
    let url = c.url(&[])?;
    let (prefix, rest) = url.split_once('@').ok_or("url without @")?;
    let user = prefix
        .rsplit_once(':')
        .map(|(u, _)| u)
        .ok_or("url without password")?;
    let wrong = format!("{user}:not-the-password@{rest}");
    let err = connect_url(&wrong)
        .await
        .err()
        .ok_or("wrong password accepted")?;
    let code = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .map(|c| c.code().to_string());
    assert_eq!(code.as_deref(), Some("28P01"), "{err}");
    let password = std::fs::read_to_string(c.root.join("secrets/replication.password"))?;
    let repl = format!(
        "postgresql://replicator:{}@127.0.0.1:{}/postgres",
        password.trim(),
        c.base_port
    );
    assert!(
        connect_url(&repl).await.is_err(),
        "replication role opened an ordinary session"
    );

    // Secrets are private.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "secrets/superuser.password",
        "secrets/replication.password",
        "secrets/app.password",
        "secrets/api.token",
        "auth/replication.pgpass",
        "auth/superuser.pgpass",
    ] {
        let mode = std::fs::metadata(c.root.join(f))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    // down, then up starts it again.
    let out = c.run("down", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = c.status()?;
    assert!(
        status["nodes"]
            .as_array()
            .ok_or("nodes")?
            .iter()
            .all(|n| n["running"] == false),
        "{status}"
    );
    let out = c.up(&[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("started primary"),
        "{}",
        text(&out)
    );

    // destroy needs --yes, then removes everything.
    let out = c.run("destroy", &[]);
    assert!(!out.status.success() && c.root.exists(), "{}", text(&out));
    let out = c.run("destroy", &["--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!c.root.exists());
    Ok(())
}

#[test]
fn init_writes_an_annotated_file_and_refuses_to_overwrite() -> TestResult {
    let dir = TestDir::new()?;
    let out = pgkeel(dir.path(), &["init"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let written = std::fs::read_to_string(dir.path().join("pgkeel.toml"))?;
    assert!(written.contains("mode = \"quorum\""));
    let out = pgkeel(dir.path(), &["init"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        text(&out)
    );
    Ok(())
}

#[test]
fn status_of_a_missing_cluster_says_what_to_run() -> TestResult {
    let dir = TestDir::new()?;
    let out = pgkeel(dir.path(), &["status", "--dir", "nowhere"], &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pgkeel up --dir"),
        "{}",
        text(&out)
    );
    Ok(())
}

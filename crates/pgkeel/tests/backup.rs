//! Backups through pgBackRest with a path repository: the stanza made at
//! bootstrap, WAL archived by the primary, a full and then an incremental
//! backup read from a replica, `backup list`; and the refusals (no
//! repository, a repository that is not there, another cluster's stanza),
//! each naming its fix and losing nothing.

mod common;

use common::repository::{
    corrupt_backup_file, json, repository, started_with_repository, up_with, up_with_repository,
};
use common::{CliCluster, TestResult, crash_primary, set_mode, text, until};
use pgkeel_pg::OsUser;
use pgkeel_testkit::connect_url;

#[tokio::test(flavor = "multi_thread")]
async fn backups_are_read_from_a_replica_and_listed() -> TestResult {
    let cluster = CliCluster::new(3)?;
    let repo = repository(&cluster)?;
    let out = up_with_repository(&cluster, &repo);
    assert!(out.status.success(), "{}", text(&out));

    let primary = connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    let mode: String = primary.query_one("SHOW archive_mode", &[]).await?.get(0);
    assert_eq!(mode, "on");
    primary
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await?;

    let out = cluster.run("backup", &["--full", "--json"]);
    let full = json(&out)?;
    assert_eq!(full["type"], "full", "{full}");
    let full_label = full["label"].as_str().ok_or("no label")?.to_string();
    assert!(full_label.ends_with('F'), "{full}");
    assert!(full["database_bytes"].as_u64() > Some(1_000_000), "{full}");
    // The primary only started and stopped it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("files from replica"), "{}", text(&out));

    primary
        .batch_execute("INSERT INTO t SELECT generate_series(1001, 2000)")
        .await?;
    let incr = json(&cluster.run("backup", &["--json"]))?;
    assert_eq!(incr["type"], "incr", "{incr}");
    assert_eq!(incr["prior"].as_str(), Some(full_label.as_str()), "{incr}");

    let list = json(&cluster.run("backup", &["list", "--json"]))?;
    assert_eq!(list["status"], "ok", "{list}");
    let labels: Vec<&str> = list["backups"]
        .as_array()
        .ok_or("no backups")?
        .iter()
        .filter_map(|b| b["label"].as_str())
        .collect();
    assert_eq!(
        labels,
        [full_label.as_str(), incr["label"].as_str().unwrap_or("?")]
    );
    // The repository belongs to this database and holds its WAL up to the
    // newest backup's end.
    let system_id: i64 = primary
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await?
        .get(0);
    assert_eq!(
        list["system_id"].as_u64(),
        u64::try_from(system_id).ok(),
        "{list}"
    );
    let newest_wal = incr["wal_stop"].as_str().ok_or("no wal_stop")?;
    assert!(list["wal_max"].as_str() >= Some(newest_wal), "{list}");

    let table = cluster.run("backup", &["list"]);
    assert!(table.status.success(), "{}", text(&table));
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&full_label) && table.contains("incr"),
        "{table}"
    );

    // Archiving is visible, and a failing archive shows at once with the
    // tool's reason, in `status` and on the agent's /metrics.
    let archive = primary_archive(&cluster)?;
    assert_eq!(archive["failing"], false, "{archive}");
    assert!(archive["archived_count"].as_u64() > Some(0), "{archive}");
    // Segments go to a directory per timeline and log under 15-1.
    let archive_dir = repo.join("archive/pgkeel/15-1/0000000100000000");
    set_mode(&archive_dir, 0o500)?;
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(1, 10)")
        .await?;
    primary.query_one("SELECT pg_switch_wal()", &[]).await?;
    let failing = wait_for_archive(&cluster, true).await?;
    let reason = failing["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("]:"), "no pgBackRest error in {failing}");
    let metrics = agent_metrics(cluster.base_port + 2000)?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pgkeel_archive_failing{") && l.ends_with(" 1")),
        "{metrics}"
    );
    let table = cluster.run("status", &[]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains("FAILING"),
        "{}",
        text(&table)
    );
    // Repaired: the archiver catches up by itself.
    set_mode(&archive_dir, 0o750)?;
    wait_for_archive(&cluster, false).await?;
    Ok(())
}

/// The primary's `archive` object from `status --json`.
fn primary_archive(cluster: &CliCluster) -> TestResult<serde_json::Value> {
    let status = cluster.status()?;
    status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["role"] == "primary"))
        .map(|n| n["archive"].clone())
        .filter(|a| a.is_object())
        .ok_or_else(|| format!("no archive on the primary in {status}").into())
}

/// Waits up to 60 s for the primary's archive to be failing (or not).
async fn wait_for_archive(cluster: &CliCluster, failing: bool) -> TestResult<serde_json::Value> {
    until(&format!("archive failing={failing}"), 60, async || {
        let archive = primary_archive(cluster)?;
        let done = archive["failing"] == failing && (!failing || archive["reason"].is_string());
        Ok(if done {
            Ok(archive)
        } else {
            Err(archive.to_string())
        })
    })
    .await
}

/// An agent's /metrics text.
fn agent_metrics(port: u16) -> TestResult<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    conn.read_to_string(&mut body)?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_refusals_name_the_fix_and_lose_nothing() -> TestResult {
    // A repository that is not there: refused before anything is created.
    let cluster = CliCluster::new(3)?;
    let missing = cluster.dir.path().join("not-mounted");
    let out = up_with_repository(&cluster, &missing);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-mounted") && err.contains("mount the repository"),
        "{err}"
    );
    assert!(
        !cluster.root.exists(),
        "a refused `up` created {}",
        cluster.root.display()
    );

    // Without a repository, `backup` says which key to set.
    cluster.up(&[]);
    let out = cluster.run("backup", &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backup.path"),
        "{}",
        text(&out)
    );

    // A second cluster of the same name on the same repository: refused,
    // and the first cluster's backups are untouched.
    let first = CliCluster::new(3)?;
    let repo = repository(&first)?;
    let out = up_with_repository(&first, &repo);
    assert!(out.status.success(), "{}", text(&out));
    let label = json(&first.run("backup", &["--full", "--json"]))?["label"].clone();
    let second = CliCluster::new(3)?;
    let out = up_with_repository(&second, &repo);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("of another cluster") && err.contains("stanza-delete"),
        "{err}"
    );
    let list = json(&first.run("backup", &["list", "--json"]))?;
    assert_eq!(list["status"], "ok", "{list}");
    assert_eq!(list["backups"][0]["label"], label, "{list}");
    Ok(())
}

/// Archived segment names of timeline 1's first log directory, read with
/// pgBackRest itself (no log file: the test may run as root).
fn archived_on_timeline_1(cluster: &CliCluster) -> TestResult<Vec<String>> {
    let config = cluster.root.join("backup/pgbackrest.conf");
    let out = std::process::Command::new("pgbackrest")
        .arg(format!("--config={}", config.display()))
        .args([
            "--stanza=pgkeel",
            "--log-level-file=off",
            "--output=json",
            "repo-ls",
        ])
        .arg("archive/pgkeel/15-1/0000000100000000")
        .output()?;
    if !out.status.success() {
        return Err(format!("repo-ls: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let listing: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(listing
        .keys()
        .filter_map(|k| k.split('-').next())
        .filter(|n| n.len() == 24)
        .map(String::from)
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_primary_archives_the_segments_the_old_one_could_not() -> TestResult {
    let cluster = CliCluster::new(3)?;
    let repo = repository(&cluster)?;
    let out = up_with_repository(&cluster, &repo);
    assert!(out.status.success(), "{}", text(&out));
    // The old primary's archiver breaks; three segments are written and
    // streamed to the replicas, but never archived by it.
    let primary = connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    for sql in [
        "ALTER SYSTEM SET archive_command = '/bin/false'",
        "SELECT pg_reload_conf()",
        "CREATE TABLE t (id int)",
    ] {
        primary.batch_execute(sql).await?;
    }
    let mut unarchived = Vec::new();
    for _ in 0..3 {
        primary
            .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
            .await?;
        let name: String = primary
            .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
            .await?
            .get(0);
        primary.query_one("SELECT pg_switch_wal()", &[]).await?;
        unarchived.push(name);
    }
    // Both replicas have everything (quorum: at least one confirmed each
    // commit; wait for the second too).
    let lsn: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    until("both replicas replaying the primary's WAL", 30, async || {
        let behind: i64 = primary
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE replay_lsn IS NULL OR replay_lsn < $1::text::pg_lsn",
                &[&lsn],
            )
            .await?
            .get(0);
        Ok(if behind == 0 { Ok(()) } else { Err(format!("{behind} behind")) })
    })
    .await?;
    let before = archived_on_timeline_1(&cluster)?;
    assert!(
        unarchived.iter().all(|s| !before.contains(s)),
        "the broken archiver archived something: {before:?}"
    );

    // The old primary's host crashes.
    crash_primary(&cluster)?;
    // The new primary fills the archive's gap.
    until(
        "the archive's gap filled after the failover",
        60,
        async || {
            let now = archived_on_timeline_1(&cluster)?;
            let lacking: Vec<&String> = unarchived.iter().filter(|s| !now.contains(s)).collect();
            Ok(if lacking.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "lacks {lacking:?}, has {now:?}; status {}",
                    cluster.status()?
                ))
            })
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_takes_the_first_full_backup_by_itself() -> TestResult {
    let cluster = CliCluster::new(3)?;
    let repo = repository(&cluster)?;
    let out = up_with(&cluster, &repo, true);
    assert!(out.status.success(), "{}", text(&out));
    // An empty repository is due a full backup at once: the leader's agent
    // takes it about 10 s after it started.
    let backup = until("a scheduled backup", 90, async || {
        let list = json(&cluster.run("backup", &["list", "--json"]))?;
        Ok(match list["backups"].as_array().and_then(|b| b.first()) {
            Some(b) => Ok(b.clone()),
            None => Err(list.to_string()),
        })
    })
    .await?;
    assert_eq!(backup["type"], "full", "{backup}");
    // While it runs or right after, a manual backup either waits its turn
    // with a clear refusal or succeeds; it never fails obscurely.
    let out = cluster.run("backup", &[]);
    if !out.status.success() {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("another backup"),
            "{}",
            text(&out)
        );
    }
    // The leader publishes the newest full backup's start.
    let line = until("the leader's backup metric", 90, async || {
        let metrics = agent_metrics(cluster.base_port + 2000)?;
        Ok(metrics
            .lines()
            .find(|l| l.starts_with("pgkeel_backup_last_full_timestamp_seconds{"))
            .map(String::from)
            .ok_or(metrics))
    })
    .await?;
    assert!(
        line.ends_with(&format!(" {}", backup["start"])),
        "{line} vs {backup}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_proves_a_backup_restorable_and_names_a_corrupted_file() -> TestResult {
    let (cluster, repo, primary) = started_with_repository().await?;
    primary
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 5000)",
        )
        .await?;
    let backup = json(&cluster.run("backup", &["--full", "--json"]))?;
    let label = backup["label"].as_str().ok_or("no label")?.to_string();

    let report = json(&cluster.run("backup", &["verify", "--json"]))?;
    assert_eq!(report["label"].as_str(), Some(label.as_str()), "{report}");
    assert_eq!(report["problem"], serde_json::Value::Null, "{report}");
    assert_eq!(report["marker_found"], true, "{report}");
    assert_eq!(report["amcheck_ok"], true, "{report}");
    assert!(report["tables"].as_u64() >= Some(2), "{report}");
    assert!(report["restore_seconds"].as_f64() > Some(0.0), "{report}");
    // The scratch copy is gone, and the agent publishes the result.
    let scratch = cluster.root.join("verify");
    assert_eq!(
        std::fs::read_dir(&scratch)?.count(),
        0,
        "scratch copy left behind"
    );
    let metrics = agent_metrics(cluster.base_port + 2000)?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pgkeel_backup_last_verify_ok{") && l.ends_with(" 1")),
        "{metrics}"
    );
    // Replaying every archived segment reaches rows written after the
    // backup once their segment is archived.
    let written: f64 = primary
        .query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
        .await?
        .get(0);
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(5001, 6000)")
        .await?;
    primary.query_one("SELECT pg_switch_wal()", &[]).await?;
    wait_for_archived(&primary).await?;
    let latest = json(&cluster.run("backup", &["verify", "--to-latest", "--json"]))?;
    assert_eq!(latest["problem"], serde_json::Value::Null, "{latest}");
    // The copy holds the commit made after the backup.
    assert!(
        latest["newest_commit"].as_i64() >= Some(written.floor() as i64),
        "{latest} (written at {written})"
    );
    assert!(
        latest["newest_commit"].as_i64() > report["newest_commit"].as_i64(),
        "{latest}"
    );

    // A label that is not there, and a scratch directory without room.
    let out = cluster.run("backup", &["verify", "20000101-000000F"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backup list"),
        "{}",
        text(&out)
    );
    if OsUser::current()?.is_root() {
        let small = cluster.dir.path().join("small");
        std::fs::create_dir(&small)?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&small)
            .status()?;
        if mounted.success() {
            let dir = small.display().to_string();
            let out = cluster.run("backup", &["verify", "--scratch", &dir]);
            let _ = std::process::Command::new("umount").arg(&small).status();
            assert!(!out.status.success(), "{}", text(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("--scratch") && err.contains("bytes free"),
                "{err}"
            );
        }
    }
    // A corrupted file in the repository: verify fails naming it.
    let victim = corrupt_backup_file(&repo, &label)?;
    let out = cluster.run("backup", &["verify", &label]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stdout);
    let name = victim
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .unwrap_or("?");
    assert!(
        err.contains(name),
        "the error does not name {name}: {}",
        text(&out)
    );

    Ok(())
}

/// Waits until the primary archived everything up to its last switch.
async fn wait_for_archived(primary: &tokio_postgres::Client) -> TestResult {
    until("the switched segment archived", 30, async || {
        let done: bool = primary
            .query_one(
                "SELECT last_archived_wal >= pg_walfile_name(pg_current_wal_lsn() - 1) FROM pg_stat_archiver",
                &[],
            )
            .await?
            .get::<_, Option<bool>>(0)
            .unwrap_or(false);
        Ok(if done { Ok(()) } else { Err("not yet".into()) })
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_expires_old_backups_and_only_the_wal_they_alone_needed() -> TestResult {
    let cluster = CliCluster::new(3)?;
    let repo = repository(&cluster)?;
    let port = cluster.base_port.to_string();
    let repo_path = repo.display().to_string();
    let out = cluster.run_env(
        "up",
        &["--base-port", &port],
        &[
            ("PGKEEL_BACKUP_PATH", repo_path.as_str()),
            ("PGKEEL_BACKUP_RETENTION_FULL", "2"),
            ("PGKEEL_BACKUP_FULL_SCHEDULE", "off"),
            ("PGKEEL_BACKUP_INCR_SCHEDULE", "off"),
            ("PGKEEL_BACKUP_VERIFY_SCHEDULE", "off"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let primary = connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    primary.batch_execute("CREATE TABLE t (id int)").await?;
    let mut labels = vec![];
    for round in 0..3 {
        // WAL of its own before each backup: the first backup's segments
        // are needed by it alone.
        for _ in 0..2 {
            primary
                .execute(
                    "INSERT INTO t SELECT generate_series(1, 1000) + $1",
                    &[&(round * 1000)],
                )
                .await?;
            primary.query_one("SELECT pg_switch_wal()", &[]).await?;
        }
        let backup = json(&cluster.run("backup", &["--full", "--json"]))?;
        labels.push(backup["label"].as_str().ok_or("no label")?.to_string());
    }
    let list = json(&cluster.run("backup", &["list", "--json"]))?;
    let kept: Vec<&serde_json::Value> = list["backups"]
        .as_array()
        .ok_or("no backups")?
        .iter()
        .collect();
    let kept_labels: Vec<&str> = kept.iter().filter_map(|b| b["label"].as_str()).collect();
    assert_eq!(
        kept_labels,
        labels[1..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    // The archive starts where the oldest kept backup does: the first
    // backup's WAL went with it, none that a kept backup needs.
    assert_eq!(list["wal_min"], kept[0]["wal_start"], "{list}");
    let archived = archived_on_timeline_1(&cluster)?;
    let first_needed = kept[0]["wal_start"].as_str().ok_or("no wal_start")?;
    assert!(
        archived.iter().all(|s| s.as_str() >= first_needed),
        "WAL older than {first_needed} kept: {archived:?}"
    );
    // And no gap after it: the oldest kept backup replays to the newest
    // archived segment.
    let verified = json(&cluster.run("backup", &["verify", &labels[1], "--to-latest", "--json"]))?;
    assert!(verified["problem"].is_null(), "{verified}");
    Ok(())
}

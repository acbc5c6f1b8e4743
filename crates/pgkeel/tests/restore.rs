//! Point-in-time recovery into a new cluster: to a time (exactly the rows
//! committed before it), and to `latest` after a failover (every
//! acknowledged row, because the archive followed the new primary). The
//! restored cluster has a system identifier of its own, streams to its
//! replicas and archives under its own stanza. Bad targets are refused
//! before anything is written.

mod common;

use common::repository::{corrupt_backup_file, json, started_with_repository};
use common::{CliCluster, TestResult, crash_primary, pgkeel, text, until};
use pgkeel_testkit::connect_url;

/// The ids in `t` on the cluster's primary.
async fn ids(cluster: &CliCluster) -> TestResult<Vec<i32>> {
    let client = connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    let rows = client.query("SELECT id FROM t ORDER BY id", &[]).await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The primary's system identifier.
async fn system_id(cluster: &CliCluster) -> TestResult<i64> {
    let client = connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    Ok(client
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await?
        .get(0))
}

/// `pgkeel restore --source <cluster> --dir <into> --base-port ... args`.
fn restore(source: &CliCluster, into: &CliCluster, args: &[&str]) -> std::process::Output {
    let root = source.root.display().to_string();
    let new = into.root.display().to_string();
    let port = into.base_port.to_string();
    let mut all = vec![
        "restore",
        "--source",
        root.as_str(),
        "--dir",
        new.as_str(),
        "--base-port",
        port.as_str(),
    ];
    all.extend_from_slice(args);
    pgkeel(source.dir.path(), &all, &[])
}

/// Inserts ids `range`, one transaction each, on `client`.
async fn insert_each(
    client: &tokio_postgres::Client,
    range: std::ops::RangeInclusive<i32>,
) -> TestResult {
    for id in range {
        client.execute("INSERT INTO t VALUES ($1)", &[&id]).await?;
    }
    Ok(())
}

/// After the backup's second is over, commits rows 6 and 7, then returns
/// the server's time a moment later (as `--to` takes it) and waits another
/// moment: what commits next is after the target.
async fn commit_6_and_7_then_mark_a_time(primary: &tokio_postgres::Client) -> TestResult<String> {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    insert_each(primary, 6..=7).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let target: String = primary
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            &[],
        )
        .await?
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Ok(target)
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_to_a_time_and_to_latest_after_a_failover() -> TestResult {
    let (cluster, _repo, primary) = started_with_repository().await?;
    primary
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await?;
    insert_each(&primary, 1..=5).await?;
    let full = json(&cluster.run("backup", &["--full", "--json"]))?;

    // Nothing can be restored to before the only backup ended; nothing is
    // written for the refusal.
    let early = CliCluster::new(3)?;
    let out = restore(&cluster, &early, &["--to", "2020-01-01 00:00:00+00"]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("before the oldest backup"), "{}", text(&out));
    assert!(
        said.contains(full["label"].as_str().unwrap_or("?")),
        "{said}"
    );
    assert!(
        !early.root.exists(),
        "a refused restore created {}",
        early.root.display()
    );

    // Rows 6 and 7 commit before the target, 8 to 10 after it.
    let target = commit_6_and_7_then_mark_a_time(&primary).await?;
    insert_each(&primary, 8..=10).await?;

    let at_time = CliCluster::new(3)?;
    let out = restore(&cluster, &at_time, &["--to", &target, "--json"]);
    let report = json(&out)?;
    assert_eq!(report["restore"]["label"], full["label"], "{report}");
    assert_eq!(ids(&at_time).await?, (1..=7).collect::<Vec<_>>());
    // Its own identity, replicas streaming from it, its own stanza.
    let (old_id, new_id) = (system_id(&cluster).await?, system_id(&at_time).await?);
    assert_ne!(old_id, new_id);
    assert_eq!(
        report["restore"]["system_id"].as_i64(),
        Some(new_id),
        "{report}"
    );
    let status = at_time.status()?;
    let streaming = status["nodes"]
        .as_array()
        .ok_or("no nodes")?
        .iter()
        .filter(|n| n["role"] == "replica" && n["running"] == true)
        .count();
    assert_eq!(streaming, 2, "{status}");
    let info = json(&at_time.run("backup", &["list", "--json"]))?;
    assert_eq!(info["stanza"], "pgkeel_restored", "{info}");
    assert_eq!(info["system_id"].as_i64(), Some(new_id), "{info}");
    // The source's repository still belongs to the source.
    let info = json(&cluster.run("backup", &["list", "--json"]))?;
    assert_eq!(info["system_id"].as_i64(), Some(old_id), "{info}");
    drop(at_time);

    // The primary's host dies; the new primary takes more writes, each
    // acknowledged. `latest` has them all.
    let old = crash_primary(&cluster)?;
    let new_primary = until("a new primary", 60, async || {
        let status = cluster.status()?;
        let found = status["nodes"].as_array().and_then(|n| {
            n.iter()
                .find(|n| {
                    n["role"] == "primary" && n["running"] == true && n["name"] != old["name"]
                })
                .cloned()
        });
        Ok(found.ok_or_else(|| status.to_string()))
    })
    .await?;
    let url = cluster.url(&[
        "--node",
        new_primary["name"].as_str().unwrap_or("?"),
        "--superuser",
    ])?;
    let client = connect_url(&url).await?;
    insert_each(&client, 11..=20).await?;

    let latest = CliCluster::new(3)?;
    let out = restore(
        &cluster,
        &latest,
        &["--to", "latest", "--name", "after_failover"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids(&latest).await?, (1..=20).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_lost_or_damaged_are_rebuilt_from_the_repository_or_the_primary() -> TestResult {
    let (cluster, repo, primary) = started_with_repository().await?;
    primary
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)",
        )
        .await?;
    let full = json(&cluster.run("backup", &["--full", "--json"]))?;
    let label = full["label"].as_str().ok_or("no label")?.to_string();
    // Written after the backup: the rebuilt replica gets these from the
    // archive and the stream.
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(1001, 2000)")
        .await?;

    let status = cluster.status()?;
    let replicas: Vec<String> = status["nodes"]
        .as_array()
        .ok_or("no nodes")?
        .iter()
        .filter(|n| n["role"] == "replica")
        .filter_map(|n| n["name"].as_str().map(String::from))
        .collect();
    let [lost, damaged] = replicas.as_slice() else {
        return Err(format!("not two replicas: {status}").into());
    };
    // One replica's disk is lost while it runs: a full restore.
    rebuilt(&cluster, &primary, lost, &label, "data", "").await?;
    // The other's control file is damaged: a delta restore keeps the
    // files that still match.
    rebuilt(
        &cluster,
        &primary,
        damaged,
        &label,
        "data/global/pg_control",
        " (delta: matching files kept)",
    )
    .await?;
    // A repository that cannot serve (a damaged backup file): cloned
    // from the primary instead.
    corrupt_backup_file(&repo, &label)?;
    let rebuilt_again = rebuilt(&cluster, &primary, lost, &label, "data", "").await;
    let Err(e) = rebuilt_again else {
        return Err("rebuilt from an unreadable repository".into());
    };
    let log = std::fs::read_to_string(cluster.root.join("nodes").join(lost).join("agent.log"))?;
    assert!(
        log.contains("WARN")
            && log.contains("restore from the repository failed: cloning from the primary"),
        "{e}\n{log}"
    );
    Ok(())
}

/// Kills `name`'s PostgreSQL, removes `lost` (a path under its node
/// directory), and waits until its agent has rebuilt it from backup
/// `label` (the agent log says so, with `how`), it holds every row and
/// streams from the primary again.
async fn rebuilt(
    cluster: &CliCluster,
    primary: &tokio_postgres::Client,
    name: &str,
    label: &str,
    lost: &str,
    how: &str,
) -> TestResult {
    let status = cluster.status()?;
    let pid = status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .and_then(|n| n["pid"].as_i64())
        .ok_or("no pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let node_dir = cluster.root.join("nodes").join(name);
    let log_before = std::fs::metadata(node_dir.join("agent.log"))?.len();
    let lost = node_dir.join(lost);
    if lost.is_dir() {
        std::fs::remove_dir_all(&lost)?;
    } else {
        std::fs::remove_file(&lost)?;
    }
    let url = cluster.url(&["--node", name, "--superuser"])?;
    until(&format!("{name} rebuilt and caught up"), 120, async || {
        let Ok(client) = connect_url(&url).await else {
            return Ok(Err("not accepting connections".to_string()));
        };
        let Ok(row) = client.query_one("SELECT count(*) FROM t", &[]).await else {
            return Ok(Err("t not readable yet".to_string()));
        };
        let rows: i64 = row.get(0);
        Ok(if rows == 2000 {
            Ok(())
        } else {
            Err(format!("{rows} rows"))
        })
    })
    .await?;
    let log = std::fs::read(node_dir.join("agent.log"))?;
    let log = String::from_utf8_lossy(log.get(log_before as usize..).unwrap_or_default());
    let said = format!("rebuilt from backup {label} in the repository{how};");
    if !log.contains(&said) {
        return Err(format!("no `{said}` in the agent's log since the loss:\n{log}").into());
    }
    until(&format!("{name} streaming again"), 60, async || {
        let streaming: i64 = primary
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                &[&name],
            )
            .await?
            .get(0);
        Ok(if streaming == 1 { Ok(()) } else { Err("not streaming".to_string()) })
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_load_restores_consistently() -> TestResult {
    let (cluster, _repo, _primary) = started_with_repository().await?;
    let url = cluster.url(&["--primary", "--superuser"])?;
    let pgbench = pgkeel_pg::PgBinaries::discover(None)?.dir().join("pgbench");
    let init = std::process::Command::new(&pgbench)
        .args(["-i", "-s", "2", "-q", &url])
        .output()?;
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    // The backup runs in the middle of ten seconds of pgbench.
    let load = std::process::Command::new(&pgbench)
        .args(["-n", "-c", "4", "-j", "2", "-T", "10", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let load = common::KillOnDrop(Some(load));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let full = json(&cluster.run("backup", &["--full", "--json"]))?;
    let label = full["label"].as_str().ok_or("no label")?.to_string();
    let load = load.wait_with_output()?;
    let report = String::from_utf8_lossy(&load.stdout);
    assert!(load.status.success(), "{report}");
    let committed: i64 = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no transaction count in {report}"))?;
    assert!(committed > 0, "{report}");

    // At its own end the backup is consistent: pg_amcheck and the marker.
    let verified = json(&cluster.run("backup", &["verify", &label, "--json"]))?;
    assert!(verified["problem"].is_null(), "{verified}");

    // Restored to the latest commit: pgbench's balances agree and every
    // acknowledged transaction is there.
    let restored = CliCluster::new(3)?;
    let out = restore(&cluster, &restored, &["--to", "latest", "--from", &label]);
    assert!(out.status.success(), "{}", text(&out));
    let client = connect_url(&restored.url(&["--primary", "--superuser"])?).await?;
    let row = client
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::int8, \
                    (SELECT sum(bbalance) FROM pgbench_branches)::int8, \
                    (SELECT sum(tbalance) FROM pgbench_tellers)::int8, \
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)::int8, \
                    (SELECT count(*) FROM pgbench_history)",
            &[],
        )
        .await?;
    let (accounts, branches, tellers, history, transactions): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!((accounts, branches, tellers), (history, history, history));
    assert_eq!(transactions, committed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn in_place_restore_takes_the_cluster_back_before_a_mistake() -> TestResult {
    let (cluster, _repo, primary) = started_with_repository().await?;
    primary
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await?;
    insert_each(&primary, 1..=5).await?;
    json(&cluster.run("backup", &["--full", "--json"]))?;
    let target = commit_6_and_7_then_mark_a_time(&primary).await?;
    // The mistake.
    primary.batch_execute("DROP TABLE t").await?;
    let timeline: i32 = primary
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await?
        .get(0);
    drop(primary);

    let root = cluster.root.display().to_string();
    let args = [
        "restore",
        "--source",
        root.as_str(),
        "--in-place",
        "--to",
        target.as_str(),
    ];
    // Without confirmation: refused, nothing stopped.
    let out = pgkeel(cluster.dir.path(), &args, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Add --yes"),
        "{}",
        text(&out)
    );
    let status = cluster.status()?;
    assert!(
        status["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n["running"] == true)),
        "{status}"
    );

    let out = pgkeel(cluster.dir.path(), &[&args[..], &["--yes"]].concat(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids(&cluster).await?, (1..=7).collect::<Vec<_>>());
    let primary = connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    let now: i32 = primary
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await?
        .get(0);
    assert!(now > timeline, "still on timeline {now}");
    // The replicas are rebuilt and stream the new timeline.
    until("both replicas streaming again", 120, async || {
        let streaming: i64 = primary
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                &[],
            )
            .await?
            .get(0);
        Ok(if streaming == 2 {
            Ok(())
        } else {
            Err(format!("{streaming} streaming"))
        })
    })
    .await?;
    // Archiving and backups go on in the same repository.
    insert_each(&primary, 8..=9).await?;
    let next = json(&cluster.run("backup", &["--json"]))?;
    assert!(next["label"].is_string(), "{next}");
    Ok(())
}

//! A standby cluster: a second pgkeel cluster whose leader streams from the
//! first (falling back to its archive) and whose members cascade from that
//! leader. It survives the loss of its own leader (another member follows
//! the primary cluster), and `promote-cluster` makes it writable, with
//! every row the primary cluster committed. `demote-cluster` then makes
//! the old primary cluster, back and diverged, follow it (failing back).

mod common;

use common::repository::started_with_repository;
use common::{CliCluster, TestResult, crash_node, text, until};
use pgkeel_testkit::connect_url;

/// Waits until `cluster`'s node `name` (or its primary) holds `rows` rows.
async fn holds(cluster: &CliCluster, node: &[&str], rows: i64) -> TestResult {
    let url = cluster.url(&[node, &["--superuser"]].concat())?;
    until(&format!("{node:?} holding {rows} rows"), 60, async || {
        let Ok(client) = connect_url(&url).await else {
            return Ok(Err("not accepting connections".to_string()));
        };
        let Ok(row) = client.query_one("SELECT count(*) FROM t", &[]).await else {
            return Ok(Err("t not readable".to_string()));
        };
        let n: i64 = row.get(0);
        Ok(if n == rows {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        })
    })
    .await
}

/// The standby cluster's leader, from `status --json`.
fn leader(cluster: &CliCluster) -> TestResult<String> {
    let status = cluster.status()?;
    status["leader"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("no leader: {status}").into())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_cluster_follows_survives_its_leader_is_promoted_and_failed_back() -> TestResult {
    let (main, repo, primary) = started_with_repository().await?;
    primary
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)")
        .await?;
    let main_status = main.status()?;
    let main_primary = main_status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["role"] == "primary"))
        .and_then(|n| n["port"].as_u64())
        .ok_or("no primary")?;

    // The standby cluster shares the roles' passwords and the repository.
    let dr = CliCluster::new(3)?;
    let secrets = dr.root.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    for name in [
        "superuser.password",
        "replication.password",
        "app.password",
        "backup-cipher.pass",
    ] {
        std::fs::copy(main.root.join("secrets").join(name), secrets.join(name))?;
    }
    let config = dr.dir.path().join("pgkeel.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"dr\"\n[replication]\nmode = \"async\"\n\
             [standby_cluster]\nhost = \"127.0.0.1\"\nport = {main_primary}\nstanza = \"pgkeel\"\n\
             [backup]\npath = \"{}\"\nfull_schedule = \"off\"\nincr_schedule = \"off\"\nverify_schedule = \"off\"\n",
            repo.display()
        ),
    )?;
    let config = config.display().to_string();
    let base = dr.base_port.to_string();
    let out = dr.run("up", &["--config", &config, "--base-port", &base]);
    assert!(out.status.success(), "{}", text(&out));

    // Everything the primary cluster commits reaches every member.
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await?;
    for node in ["primary", "replica1", "replica2"] {
        holds(&dr, &["--node", node], 200).await?;
    }
    let first = leader(&dr)?;
    let status = dr.status()?;
    assert_eq!(
        status["following"].as_str(),
        Some(format!("127.0.0.1:{main_primary}").as_str()),
        "{status}"
    );

    // Its leader's host is lost: another member leads and follows the
    // primary cluster.
    crash_node(&dr, |n| n["name"] == first.as_str())?;
    let next = until("a new standby leader", 60, async || {
        Ok(match leader(&dr) {
            Ok(l) if l != first => Ok(l),
            other => Err(format!("{other:?}")),
        })
    })
    .await?;
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(201, 300)")
        .await?;
    holds(&dr, &["--node", &next], 300).await?;

    // The primary cluster is lost; the standby cluster takes over.
    drop(primary);
    let out = main.run("down", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = dr.run("promote-cluster", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dr.status()?["following"].is_null());
    let url = dr.url(&["--node", &next, "--superuser"])?;
    until("the promoted cluster taking writes", 60, async || {
        let Ok(client) = connect_url(&url).await else {
            return Ok(Err("not accepting connections".to_string()));
        };
        Ok(
            match client.batch_execute("INSERT INTO t VALUES (301)").await {
                Ok(()) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        )
    })
    .await?;
    holds(&dr, &["--node", &next], 301).await?;

    // Failing back: the old primary cluster returns (a primary of its own
    // again, diverged) and is made to follow the promoted one: its leader
    // is rewound onto the new history, its members cascade.
    let out = main.run("up", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let dr_status = dr.status()?;
    let dr_port = dr_status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == next.as_str()))
        .and_then(|n| n["port"].as_u64())
        .ok_or("no port")?
        .to_string();
    let out = main.run(
        "demote-cluster",
        &["--host", "127.0.0.1", "--port", &dr_port],
    );
    assert!(out.status.success(), "{}", text(&out));
    let client = connect_url(&url).await?;
    client
        .batch_execute("INSERT INTO t SELECT generate_series(302, 400)")
        .await?;
    for node in ["primary", "replica1", "replica2"] {
        holds(&main, &["--node", node], 400).await?;
    }
    Ok(())
}

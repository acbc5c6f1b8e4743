//! pgbench through the proxy: initialization (DDL, COPY, VACUUM on the
//! primary), select-only in the simple, extended and prepared protocols,
//! and the TPC-B-like default script, all without a failed transaction.

mod common;

use std::time::Duration;

use common::{Env, TestResult};
use tokio::process::Command;

async fn pgbench(env: &Env, args: &[&str]) -> TestResult<String> {
    let bin_dir = env
        .cluster
        .cluster
        .config
        .cluster
        .bin_dir
        .clone()
        .ok_or("no bin dir")?;
    let out = Command::new(bin_dir.join("pgbench"))
        .args(args)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &env.port.to_string(),
            "-U",
            &env.user,
            &env.database,
        ])
        .env("PGPASSWORD", &env.password)
        .env("PGSSLMODE", "prefer")
        .kill_on_drop(true)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "pgbench {args:?} failed: {}\n{stdout}\n{stderr}",
            out.status
        )
        .into());
    }
    Ok(stdout)
}

fn processed(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn failed(report: &str) -> Option<u64> {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test]
async fn pgbench_runs_through_the_proxy() -> TestResult {
    common::within(300, body()).await
}

async fn body() -> TestResult {
    let env = Env::start(2, |_| {}).await?;
    pgbench(&env, &["-i", "-s", "1", "-q"]).await?;
    // Reads go to replicas: wait until both have the tables.
    for replica in ["replica1", "replica2"] {
        let direct = env.cluster.client(replica).await?;
        let ready = pgkeel_testkit::TempCluster::eventually(Duration::from_secs(30), || async {
            direct
                .query_one("SELECT count(*) FROM pgbench_accounts", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 100_000)
        })
        .await;
        assert!(ready, "{replica} never showed pgbench_accounts");
    }
    for mode in ["simple", "extended", "prepared"] {
        let report = pgbench(&env, &["-S", "-M", mode, "-c", "4", "-j", "2", "-T", "3"]).await?;
        assert!(processed(&report) > 0, "{mode}: {report}");
        assert_eq!(failed(&report), Some(0), "{mode}: {report}");
    }
    let report = pgbench(&env, &["-M", "prepared", "-c", "4", "-j", "2", "-T", "3"]).await?;
    assert!(processed(&report) > 0, "tpcb: {report}");
    assert_eq!(failed(&report), Some(0), "tpcb: {report}");
    let metrics = &env.proxy.as_ref().ok_or("proxy")?.shared().metrics;
    let routed: Vec<u64> = metrics
        .routed
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert!(
        routed.iter().all(|&n| n > 0),
        "every node took work: {routed:?}"
    );
    // Every pgbench client asks for application_name=pgbench: a server
    // connection gets it once, not per transaction.
    let applied = metrics
        .settings_applied
        .load(std::sync::atomic::Ordering::Relaxed);
    let connections = 3 * env.proxy.as_ref().ok_or("proxy")?.shared().config.pool_size;
    assert!(
        applied <= connections as u64,
        "settings applied {applied} times over {routed:?} units"
    );
    Ok(())
}

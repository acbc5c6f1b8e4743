//! Reloads (`Shared::reload`, what `pgkeel proxy` runs on SIGHUP) of the
//! read-only function list: a function added to `read_only_functions`
//! sends the statements calling it to a replica from the next statement
//! on, for connected and new clients alike, even for statement text the
//! proxy had already classified (and cached) under the old list; a
//! function removed sends them back to the primary.

mod common;

use std::time::Duration;

use common::{Env, TestResult};
use pgkeel_proxy::reload::ReloadReport;
use pgkeel_proxy::{ClusterProxyOptions, config_for_cluster};
use pgkeel_testkit::TempCluster;
use tokio_postgres::Client;

/// Calls the user-defined function; the answer is where it ran.
const CALL: &str = "SELECT app_in_recovery(), current_setting('port')::int";

/// Whether `CALL` ran on a replica, and on which port.
async fn call_ran_on_replica(c: &Client) -> TestResult<(bool, u16)> {
    let row = c.query_one(CALL, &[]).await?;
    Ok((row.get(0), u16::try_from(row.get::<_, i32>(1))?))
}

/// Reloads the proxy with the cluster's configuration and `functions` as
/// the read-only function list.
fn reload(env: &Env, functions: &[&str]) -> TestResult<ReloadReport> {
    let options = ClusterProxyOptions::new(([127, 0, 0, 1], env.port).into());
    let mut config = config_for_cluster(env.cluster.cluster.layout.root(), &options)?;
    config.health_interval = Duration::from_millis(200);
    config.read_only_functions = functions.iter().map(|f| f.to_string()).collect();
    let proxy = env.proxy.as_ref().ok_or("no proxy")?;
    Ok(proxy.shared().reload(config)?)
}

#[tokio::test]
async fn read_only_functions_apply_on_reload() -> TestResult {
    common::within(240, body()).await
}

async fn body() -> TestResult {
    let env = Env::start(1, |_| {}).await?;
    let primary_port = env.node_port("primary")?;
    let replica_port = env.node_port("replica1")?;
    let app = env.client().await?;
    app.batch_execute(
        "CREATE FUNCTION app_in_recovery() RETURNS boolean LANGUAGE sql STABLE \
         AS 'SELECT pg_is_in_recovery()'",
    )
    .await?;
    let direct = env.cluster.client("replica1").await?;
    let replayed = TempCluster::eventually(Duration::from_secs(20), || async {
        direct
            .query_one(
                "SELECT count(*) = 1 FROM pg_proc WHERE proname = 'app_in_recovery'",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, bool>(0))
    })
    .await;
    assert!(replayed, "the replica never replayed the function");

    // Not on the list: the primary (twice: the second answer is cached).
    for _ in 0..2 {
        assert_eq!(call_ran_on_replica(&app).await?, (false, primary_port));
    }

    let report = reload(&env, &["app_in_recovery"])?;
    assert_eq!(report.applied, ["read_only_functions"], "{report:?}");
    assert!(
        report.needs_restart.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    // The same text, now a read: the replica, for the connected client
    // and a new one.
    assert_eq!(call_ran_on_replica(&app).await?, (true, replica_port));
    let fresh = env.client().await?;
    assert_eq!(call_ran_on_replica(&fresh).await?, (true, replica_port));
    // Simple protocol too, and with the call schema-qualified only as
    // configured (`public.` is not on the list).
    let msgs = app.simple_query("SELECT public.app_in_recovery()").await?;
    let qualified = msgs.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(qualified.as_deref(), Some("f"), "qualified call not listed");

    // Removed again: back to the primary.
    let report = reload(&env, &[])?;
    assert_eq!(report.applied, ["read_only_functions"], "{report:?}");
    assert_eq!(call_ran_on_replica(&app).await?, (false, primary_port));
    assert_eq!(call_ran_on_replica(&fresh).await?, (false, primary_port));
    // Nothing changed: nothing reported.
    assert_eq!(reload(&env, &[])?, ReloadReport::default());
    Ok(())
}

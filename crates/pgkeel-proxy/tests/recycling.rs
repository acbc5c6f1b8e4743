//! Pooled server connections are closed when they sit idle longer than
//! `server_idle_timeout` (pools shrink back after a burst) and replaced
//! once older than `server_lifetime`, without a client noticing.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Env, TestResult, within};
use tokio_postgres::Client;

/// PIDs of the proxy's pooled connections on the node `direct` is
/// connected to.
async fn pooled(direct: &Client) -> TestResult<Vec<i32>> {
    let rows = direct
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgkeel-proxy' ORDER BY pid",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Polls `pooled` until it has `want` connections or `limit` passes.
async fn wait_pooled(direct: &Client, want: usize, limit: Duration) -> TestResult<Vec<i32>> {
    let start = Instant::now();
    loop {
        let now = pooled(direct).await?;
        if now.len() == want || start.elapsed() > limit {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The idle timeout of the test below: long enough that a loaded machine
/// ends four transactions and looks at the pool well within it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn idle_server_connections_close_after_the_idle_timeout() -> TestResult {
    within(180, async {
        let env = Env::start(1, |c| {
            c.server_idle_timeout = Some(IDLE_TIMEOUT);
            c.server_lifetime = None;
        })
        .await?;
        let primary = env.cluster.client("primary").await?;
        // Four transactions at once: four connections in the primary's pool.
        let mut clients = Vec::new();
        for _ in 0..4 {
            let c = env.client().await?;
            c.batch_execute("BEGIN; SELECT 1").await?;
            clients.push(c);
        }
        let busy = wait_pooled(&primary, 4, Duration::from_secs(30)).await?;
        assert_eq!(busy.len(), 4, "{busy:?}");
        for c in &clients {
            c.batch_execute("COMMIT").await?;
        }
        // Idle but younger than the timeout: still pooled.
        assert_eq!(pooled(&primary).await?, busy);
        let after = wait_pooled(&primary, 0, Duration::from_secs(30)).await?;
        assert!(
            after.is_empty(),
            "idle connections still open after the timeout: {after:?}"
        );
        let proxy = env.proxy.as_ref().ok_or("no proxy")?;
        assert_eq!(proxy.shared().pools.closed_idle.load(Ordering::Relaxed), 4);
        let metrics = pgkeel_proxy::metrics::render(proxy.shared());
        assert!(
            metrics.contains("pgkeel_proxy_server_closed_idle_total 4"),
            "{metrics}"
        );
        // The clients carry on: their next transaction gets a new connection.
        for c in &clients {
            c.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
        }
        // A reload turns the timeout off: pooled connections stay. The one
        // checked is used after the reload (on a loaded machine, those
        // above may have timed out just before it).
        let mut config = (*proxy.shared().config).clone();
        config.server_idle_timeout = None;
        config.server_lifetime = None;
        let report = proxy.shared().reload(config)?;
        assert!(
            report.applied.contains(&"server_idle_timeout".to_string()),
            "{report:?}"
        );
        let msgs = clients[0]
            .simple_query("BEGIN; SELECT pg_backend_pid(); COMMIT")
            .await?;
        let kept: i32 = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
                _ => None,
            })
            .ok_or("no backend pid")?
            .parse()?;
        assert!(pooled(&primary).await?.contains(&kept));
        tokio::time::sleep(IDLE_TIMEOUT + Duration::from_secs(2)).await;
        let now = pooled(&primary).await?;
        assert!(
            now.contains(&kept),
            "backend {kept} closed although the reload turned the idle timeout off: {now:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn server_connections_are_replaced_after_their_lifetime() -> TestResult {
    within(180, async {
        let env = Env::start(1, |c| {
            c.server_idle_timeout = None;
            c.server_lifetime = Some(Duration::from_secs(1));
        })
        .await?;
        let client = env.client().await?;
        let ask = "SELECT pg_backend_pid(), current_setting('port')::int";
        let row = client.query_one(ask, &[]).await?;
        let (first, port): (i32, i32) = (row.get(0), row.get(1));
        let node = if i32::from(env.node_port("primary")?) == port {
            "primary"
        } else {
            "replica1"
        };
        let direct = env.cluster.client(node).await?;
        // The connection's age counts from when its backend started (the
        // direct connection above may take a while on a loaded machine).
        let age: f64 = direct
            .query_one(
                "SELECT extract(epoch FROM clock_timestamp() - backend_start)::float8                  FROM pg_stat_activity WHERE pid = $1",
                &[&first],
            )
            .await?
            .get(0);
        let born = Instant::now()
            .checked_sub(Duration::from_secs_f64(age.max(0.0)))
            .ok_or("backend start out of range")?;
        // The client keeps working; after a second its statements run on
        // a fresh backend and the old one is gone.
        let start = Instant::now();
        let mut now = first;
        while now == first && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            now = client.query_one(ask, &[]).await?.get(0);
        }
        assert_ne!(now, first, "the backend was not replaced within 30 s");
        assert!(
            born.elapsed() >= Duration::from_millis(500),
            "replaced too early: {:?} after its backend started",
            born.elapsed()
        );
        let gone_by = Instant::now() + Duration::from_secs(30);
        while pooled(&direct).await?.contains(&first) && Instant::now() < gone_by {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!pooled(&direct).await?.contains(&first));
        let proxy = env.proxy.as_ref().ok_or("no proxy")?;
        assert!(proxy.shared().pools.closed_lifetime.load(Ordering::Relaxed) >= 1);
        Ok(())
    })
    .await
}

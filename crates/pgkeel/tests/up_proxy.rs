//! `pgkeel up` starts the pooling proxy: `status --json` reports it,
//! `url --proxy` reaches it, reads land on replicas and writes on the
//! primary, `down` stops it by PID and `up` brings it back; a busy proxy
//! port is refused before anything is created; `--no-proxy` leaves it out.

mod common;

use common::{CliCluster, TestResult, http_get, text};
use pgkeel_testkit::connect_url;

fn proxy_of(status: &serde_json::Value) -> TestResult<(u16, Option<u64>)> {
    let p = &status["proxy"];
    let port = p["port"].as_u64().ok_or("no proxy.port in status")?;
    assert_eq!(p["host"], "127.0.0.1", "{p}");
    Ok((u16::try_from(port)?, p["pid"].as_u64()))
}

#[tokio::test]
async fn up_starts_the_proxy_and_down_stops_it() -> TestResult {
    let c = CliCluster::new(3)?;
    c.up(&[]);
    let (port, pid) = proxy_of(&c.status()?)?;
    assert_eq!(port, c.base_port + 1000, "default port: first node + 1000");
    let pid = pid.ok_or("proxy not running after up")?;

    let url = c.url(&["--proxy"])?;
    assert!(url.contains(&format!("@127.0.0.1:{port}/")), "{url}");
    let client = connect_url(&url).await?;
    // `up` waits until the proxy routes to the primary; its health checks
    // may find the replicas a moment later (reads go to the primary until
    // then).
    let started = std::time::Instant::now();
    while !client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .get::<_, bool>(0)
    {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            return Err("the proxy never served a read from a replica".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for _ in 0..4 {
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), current_setting('port')::int",
                &[],
            )
            .await?;
        assert!(row.get::<_, bool>(0), "a plain read ran on the primary");
        assert_ne!(row.get::<_, i32>(1), i32::from(c.base_port));
    }
    client
        .batch_execute("CREATE TABLE up_proxy(x int); INSERT INTO up_proxy VALUES (1)")
        .await?;
    let row = client
        .query_one(
            "INSERT INTO up_proxy VALUES (2) RETURNING current_setting('port')::int",
            &[],
        )
        .await?;
    assert_eq!(
        row.get::<_, i32>(0),
        i32::from(c.base_port),
        "write not on the primary"
    );
    // Local nodes are reached through their Unix socket (no server
    // address), not loopback TCP.
    let row = client
        .query_one("SELECT inet_server_addr() IS NULL", &[])
        .await?;
    assert!(
        row.get::<_, bool>(0),
        "the proxy reached a local node over TCP"
    );
    drop(client);

    // Admin endpoint on the next port.
    let metrics = http_get(port + 1, "/metrics")?;
    assert!(metrics.contains("pgkeel_proxy_clients"), "{metrics}");

    let down = c.run("down", &[]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("stopped the proxy"),
        "{}",
        text(&down)
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "proxy {pid} still runs after down"
    );
    let (_, after) = proxy_of(&c.status()?)?;
    assert_eq!(after, None, "status still shows a proxy PID after down");

    c.up(&[]);
    let (_, again) = proxy_of(&c.status()?)?;
    assert!(
        again.is_some_and(|p| p != pid),
        "up did not restart the proxy"
    );
    let client = connect_url(&c.url(&["--proxy"])?).await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM up_proxy", &[])
        .await?
        .get(0);
    assert_eq!(n, 2);
    Ok(())
}

#[tokio::test]
async fn busy_proxy_port_is_refused_and_no_proxy_leaves_it_out() -> TestResult {
    let c = CliCluster::new(3)?;
    let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
    let busy_port = busy.local_addr()?.port().to_string();
    let out = c.run(
        "up",
        &[
            "--base-port",
            &c.base_port.to_string(),
            "--proxy-port",
            &busy_port,
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&busy_port) && err.contains("proxy"),
        "{}",
        text(&out)
    );
    assert!(
        !c.root.join("cluster.toml").exists(),
        "a cluster was created despite the busy port"
    );
    drop(busy);

    c.up(&["--no-proxy", "--no-ha"]);
    let status = c.status()?;
    assert!(status["proxy"].is_null(), "{status}");
    let out = c.run("url", &["--proxy"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("proxy.enabled"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// Polls the proxy's log (for up to 60 s) until it contains `needle`
/// `times` times.
async fn log_shows(c: &CliCluster, needle: &str, times: usize) -> TestResult<String> {
    let log = c.root.join("proxy").join("proxy.log");
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(60) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches(needle).count() >= times {
            return Ok(text);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(format!(
        "the proxy log never said {needle:?}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    )
    .into())
}

fn hup(pid: u64) -> TestResult {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGHUP,
    )?;
    Ok(())
}

#[tokio::test]
async fn sighup_reloads_limits_without_dropping_clients_and_refuses_a_broken_file() -> TestResult {
    let c = CliCluster::new(3)?;
    c.up(&["--no-ha"]);
    let (_, pid) = proxy_of(&c.status()?)?;
    let pid = pid.ok_or("proxy not running")?;
    let url = c.url(&["--proxy"])?;
    let first = connect_url(&url).await?;
    let second = connect_url(&url).await?;

    let file = c.root.join("cluster.toml");
    let original = std::fs::read_to_string(&file)?;
    assert!(original.contains("max_clients = 1000"), "{original}");
    std::fs::write(
        &file,
        original.replace("max_clients = 1000", "max_clients = 2"),
    )?;
    hup(pid)?;
    log_shows(&c, "reloaded: max_clients now in effect", 1).await?;
    // Connected clients carry on; a third is refused.
    first.simple_query("SELECT 1").await?;
    second.simple_query("SELECT 1").await?;
    let third = connect_url(&url).await;
    let err = third
        .err()
        .ok_or("a third client got in with max_clients = 2")?;
    assert!(format!("{err:?}").contains("too many clients"), "{err:?}");

    // A broken file is refused; the running settings and clients stay.
    std::fs::write(
        &file,
        original.replace("max_clients = 1000", "max_clients = 0"),
    )?;
    hup(pid)?;
    log_shows(&c, "reload refused", 1).await?;
    first.simple_query("SELECT 1").await?;
    drop(second);
    // Its slot is free once the proxy has seen it leave (the limit is
    // still 2): retried while refused for that reason only.
    let started = std::time::Instant::now();
    let again = loop {
        match connect_url(&url).await {
            Ok(client) => break client,
            Err(e)
                if format!("{e:?}").contains("too many clients")
                    && started.elapsed() < std::time::Duration::from_secs(30) =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    again.simple_query("SELECT 1").await?;

    std::fs::write(&file, &original)?;
    hup(pid)?;
    log_shows(&c, "reloaded: max_clients now in effect", 2).await?;
    let (_, still) = proxy_of(&c.status()?)?;
    assert_eq!(still, Some(pid), "the proxy restarted instead of reloading");
    Ok(())
}

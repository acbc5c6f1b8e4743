//! Automatic failover with real PostgreSQL, real etcd and the real agents
//! started by `pgkeel up`. The tests run one at a time: each owns a cluster
//! whose timing (a 3 s lease) must not compete with another's.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{CliCluster, TestResult, text};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgkeel_testkit::connect_url;
use tokio::sync::Mutex;
use tokio_postgres::Client;

static SERIAL: Mutex<()> = Mutex::const_new(());

fn node_index(status: &serde_json::Value, name: &str) -> TestResult<usize> {
    status["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().position(|n| n["name"] == name))
        .ok_or_else(|| format!("no node {name} in {status}").into())
}

fn leader(status: &serde_json::Value) -> Option<String> {
    status["leader"].as_str().map(String::from)
}

/// App-role URLs of all three nodes.
fn urls(c: &CliCluster) -> TestResult<Vec<String>> {
    ["primary", "replica1", "replica2"]
        .iter()
        .map(|n| c.url(&["--node", n]))
        .collect()
}

/// Connects to whichever node accepts writes now.
async fn connect_primary(urls: &[String]) -> Option<Client> {
    for url in urls {
        if let Ok(client) = connect_url(url).await
            && let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
            && !row.get::<_, bool>(0)
        {
            return Some(client);
        }
    }
    None
}

/// An acknowledged insert: its id, the server port that committed it,
/// when it was sent and when its acknowledgement was seen (later than it
/// arrived if the writer task ran late).
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: i64,
    port: i32,
    sent: Instant,
    at: Instant,
}

/// A client inserting 1, 2, 3, ... into `w`, reconnecting after errors:
/// directly on whichever node is primary, or always through one URL (the
/// proxy); returns the acknowledged inserts.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::Mutex<Vec<Ack>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(urls: Vec<String>) -> Self {
        Self::spawn(urls, true)
    }

    /// Writes through `url` only, never checking where it lands.
    fn through(url: String) -> Self {
        Self::spawn(vec![url], false)
    }

    fn spawn(urls: Vec<String>, find_primary: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acked = Arc::new(std::sync::Mutex::new(vec![]));
        let shared = acked.clone();
        let task = tokio::spawn(async move {
            let mut next = 1i64;
            let mut client: Option<Client> = None;
            while !flag.load(Ordering::SeqCst) {
                if client.is_none() {
                    client = if find_primary {
                        connect_primary(&urls).await
                    } else {
                        connect_url(&urls[0]).await.ok()
                    };
                    if client.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let Some(c) = &client else { continue };
                let id = next;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let sent = Instant::now();
                let insert = c.query_one(
                    "INSERT INTO w (id) VALUES ($1) RETURNING current_setting('port')::int",
                    &params,
                );
                match tokio::time::timeout(Duration::from_secs(8), insert).await {
                    Ok(Ok(row)) => {
                        let ack = Ack {
                            id,
                            port: row.get(0),
                            sent,
                            at: Instant::now(),
                        };
                        if let Ok(mut acked) = shared.lock() {
                            acked.push(ack);
                        }
                    }
                    _ => client = None,
                }
                next += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Writer { stop, acked, task }
    }

    /// How many inserts server `port` acknowledged so far.
    fn count_on(&self, port: i64) -> usize {
        self.acked.lock().map_or(0, |a| {
            a.iter().filter(|a| i64::from(a.port) == port).count()
        })
    }

    /// How many inserts were acknowledged so far.
    fn count(&self) -> usize {
        self.acked.lock().map_or(0, |a| a.len())
    }

    async fn finish(self) -> TestResult<Vec<i64>> {
        Ok(self.acks().await?.iter().map(|a| a.id).collect())
    }

    async fn acks(self) -> TestResult<Vec<Ack>> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?;
        let acked = self.acked.lock().map_err(|_| "writer panicked")?;
        Ok(acked.clone())
    }
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> TestResult<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out after {timeout:?} waiting for {what}").into())
}

async fn missing_on(url: &str, acked: &[i64]) -> TestResult<Vec<i64>> {
    let client = connect_url(url).await?;
    let rows = client.query("SELECT id FROM w", &[]).await?;
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    Ok(acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect())
}

/// A 3-node cluster in `mode` with the writers' table `w`.
async fn cluster_with_table(mode: &str) -> TestResult<CliCluster> {
    let c = CliCluster::new(3)?;
    c.up(&["--mode", mode]);
    connect_url(&c.url(&[])?)
        .await?
        .batch_execute("CREATE TABLE w (id bigint PRIMARY KEY)")
        .await?;
    Ok(c)
}

fn sigkill(pid: &serde_json::Value) -> TestResult {
    let pid = pid.as_i64().ok_or("no pid")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL)?;
    Ok(())
}

/// The tests below run on two worker threads: `c.status()` runs `pgkeel
/// status` and blocks its thread until it answers, which must not stop the
/// writer task (on a loaded machine it barely wrote, and its
/// acknowledgements were timestamped late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_host_crash_fails_over_without_losing_acknowledged_commits() -> TestResult {
    let _serial = SERIAL.lock().await;
    let c = cluster_with_table("quorum").await?;
    let urls = urls(&c)?;
    let status = c.status()?;
    assert_eq!(leader(&status).as_deref(), Some("primary"), "{status}");

    let writer = Writer::start(urls.clone());
    let p = &status["nodes"][node_index(&status, "primary")?];
    let old_port = p["port"].as_i64().ok_or("no port")?;
    // Commits on the primary before the crash (a fixed pause let a loaded
    // machine write only a couple).
    wait_until(
        "the writer to commit on the primary",
        Duration::from_secs(30),
        || async { writer.count_on(old_port) > 10 },
    )
    .await?;
    // Host crash: PostgreSQL and its agent die together.
    sigkill(&p["agent_pid"])?;
    sigkill(&p["pid"])?;
    let crashed = Instant::now();
    let took = wait_until("a new leader", Duration::from_secs(30), || async {
        c.status()
            .ok()
            .and_then(|s| leader(&s))
            .is_some_and(|l| l != "primary")
    })
    .await?;
    let status = c.status()?;
    let new_leader = leader(&status).ok_or("no leader")?;
    let new_port = status["nodes"][node_index(&status, &new_leader)?]["port"]
        .as_i64()
        .ok_or("no port")?;
    // Let writes land on the new leader too, so the check below covers
    // them (in quorum mode they wait until the other replica follows). Not
    // a check of its own: the test is about commits not being lost.
    let resumed = wait_until(
        "writes on the new leader",
        Duration::from_secs(30),
        || async { writer.count_on(new_port) > 10 },
    )
    .await;
    let acked = writer.finish().await?;
    eprintln!(
        "new leader after {took:?} ({:?} since crash); {} commits acknowledged; writes on it: {resumed:?}",
        crashed.elapsed(),
        acked.len()
    );

    let new_url = c.url(&["--node", &new_leader])?;
    assert!(acked.len() > 10, "the writer barely wrote: {}", acked.len());
    assert!(*acked.last().unwrap_or(&0) > 0);
    let missing = missing_on(&new_url, &acked).await?;
    assert!(
        missing.is_empty(),
        "acknowledged commits lost in quorum mode: {missing:?}"
    );

    // The other replica follows the new leader.
    let other = if new_leader == "replica1" {
        "replica2"
    } else {
        "replica1"
    };
    wait_until(
        "the other replica to follow",
        Duration::from_secs(30),
        || async {
            c.status().is_ok_and(|s| {
                let n = &s["nodes"][node_index(&s, other).unwrap_or(0)];
                n["wal_receiver"] == "streaming"
                    && n["upstream"].as_str().is_some_and(|u| {
                        u.ends_with(&format!(
                            ":{}",
                            s["nodes"][node_index(&s, &new_leader).unwrap_or(0)]["port"]
                        ))
                    })
            })
        },
    )
    .await?;

    // Restarting the old node's agent rejoins it as a replica with the new data.
    let out = c.run("up", &[]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "the old primary to rejoin as a streaming replica",
        Duration::from_secs(60),
        || async {
            c.status().is_ok_and(|s| {
                let n = &s["nodes"][node_index(&s, "primary").unwrap_or(0)];
                n["role"] == "replica" && n["wal_receiver"] == "streaming"
            })
        },
    )
    .await?;
    // Streaming does not mean replayed yet: poll until it has every row.
    let rejoined = c.url(&["--node", "primary"])?;
    let mut missing = missing_on(&rejoined, &acked).await;
    let start = Instant::now();
    while !missing.as_ref().is_ok_and(Vec::is_empty) && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        missing = missing_on(&rejoined, &acked).await;
    }
    let missing = missing?;
    assert!(missing.is_empty(), "rejoined node lacks rows: {missing:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_follows_a_crash_failover_without_losing_acknowledged_writes() -> TestResult {
    let _serial = SERIAL.lock().await;
    let c = cluster_with_table("quorum").await?;
    let proxy = c.url(&["--proxy"])?;
    let status = c.status()?;
    let old_port = i32::from(c.base_port);
    let writer = Writer::through(proxy.clone());
    // Writes through the proxy on the old primary first (checked below).
    let before = wait_until(
        "writes through the proxy before the crash",
        Duration::from_secs(30),
        || async { writer.count_on(i64::from(old_port)) > 10 },
    )
    .await;
    if let Err(e) = before {
        let acks = writer.acks().await?;
        return Err(format!("{e}: {} acknowledged", acks.len()).into());
    }
    let p = &status["nodes"][node_index(&status, "primary")?];
    sigkill(&p["agent_pid"])?;
    sigkill(&p["pid"])?;
    let crashed = Instant::now();
    wait_until("a new leader", Duration::from_secs(30), || async {
        c.status()
            .ok()
            .and_then(|s| leader(&s))
            .is_some_and(|l| l != "primary")
    })
    .await?;
    let status = c.status()?;
    let new_leader = leader(&status).ok_or("no leader")?;
    let new_port = status["nodes"][node_index(&status, &new_leader)?]["port"]
        .as_i64()
        .ok_or("no port")?;
    // In quorum mode the new leader's commits wait until the other replica
    // follows it, which takes a few seconds more on a loaded machine.
    let resumed = wait_until(
        "writes through the proxy to resume",
        Duration::from_secs(30),
        || async { writer.count_on(new_port) > 10 },
    )
    .await;
    let acks = writer.acks().await?;
    // A timeout is reported by the checks below, with the counts.
    if let Ok(took) = resumed {
        eprintln!("writes resumed on {new_leader} {took:?} after it was elected");
    }
    // An insert the old primary acknowledged while being killed may
    // arrive just after `crashed`; what matters is the order: old primary,
    // then the new leader only, never back, never a third node.
    let on_old = acks.iter().take_while(|a| a.port == old_port).count();
    let rest = &acks[on_old..];
    assert!(
        on_old > 10,
        "the writer barely wrote before the crash: {on_old}"
    );
    assert!(
        rest.iter().all(|a| i64::from(a.port) == new_port),
        "after the old primary, a write landed elsewhere than the new leader: {:?}",
        rest.iter().find(|a| i64::from(a.port) != new_port)
    );
    assert!(
        rest.len() > 10,
        "writes through the proxy did not resume on {new_leader}: {}",
        rest.len()
    );
    // Judged by when each insert was sent, not when the writer task got
    // to its answer (which a loaded machine can delay).
    assert!(
        acks.iter()
            .all(|a| a.port != old_port || a.sent < crashed + Duration::from_secs(1)),
        "the old primary acknowledged writes sent long after it was killed: {:?}",
        acks.iter()
            .find(|a| a.port == old_port && a.sent >= crashed + Duration::from_secs(1))
    );
    let window = acks
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .max()
        .unwrap_or_default();
    let attempted = acks.last().map_or(0, |a| a.id);
    eprintln!(
        "through the proxy: {} writes acknowledged of {attempted} attempted, longest gap {window:?}",
        acks.len()
    );
    let ids: Vec<i64> = acks.iter().map(|a| a.id).collect();
    let missing = missing_on(&c.url(&["--node", &new_leader])?, &ids).await?;
    assert!(
        missing.is_empty(),
        "acknowledged writes lost through the proxy: {missing:?}"
    );
    Ok(())
}

#[tokio::test]
async fn postgres_crash_alone_is_restarted_in_place() -> TestResult {
    let _serial = SERIAL.lock().await;
    let c = CliCluster::new(3)?;
    c.up(&["--mode", "async"]);
    let status = c.status()?;
    let old_pid = status["nodes"][0]["pid"].clone();
    sigkill(&old_pid)?;
    wait_until(
        "primary restarted in place",
        Duration::from_secs(30),
        || async {
            c.status().is_ok_and(|s| {
                s["nodes"][0]["running"] == true
                    && s["nodes"][0]["role"] == "primary"
                    && s["nodes"][0]["pid"] != old_pid
            })
        },
    )
    .await?;
    // Well past a lease TTL: still the same leader, nobody promoted.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = c.status()?;
    assert_eq!(leader(&s).as_deref(), Some("primary"), "{s}");
    let primaries = s["nodes"]
        .as_array()
        .ok_or("nodes")?
        .iter()
        .filter(|n| n["role"] == "primary")
        .count();
    assert_eq!(primaries, 1, "{s}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_writer_loses_nothing_and_reports_the_window() -> TestResult {
    let _serial = SERIAL.lock().await;
    let c = cluster_with_table("sync").await?;
    let urls = urls(&c)?;
    let writer = Writer::start(urls);
    // Some commits before the switchover, whatever the machine's load.
    wait_until(
        "the writer to commit before the switchover",
        Duration::from_secs(30),
        || async { writer.count() > 10 },
    )
    .await?;
    let out = c.run("switchover", &["--to", "replica2"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("writes were unavailable for"), "{stdout}");
    let s = c.status()?;
    assert_eq!(leader(&s).as_deref(), Some("replica2"), "{s}");
    // Some commits on the new primary too, so the check below covers
    // them (not a check of its own).
    let new_port = s["nodes"][node_index(&s, "replica2")?]["port"]
        .as_i64()
        .ok_or("no port")?;
    let resumed = wait_until(
        "writes on the new primary",
        Duration::from_secs(30),
        || async { writer.count_on(new_port) > 10 },
    )
    .await;
    let acked = writer.finish().await?;
    eprintln!(
        "{} commits acknowledged; on replica2: {resumed:?}",
        acked.len()
    );
    let missing = missing_on(&c.url(&["--node", "replica2"])?, &acked).await?;
    assert!(
        missing.is_empty(),
        "switchover lost acknowledged commits: {missing:?}"
    );
    // The old primary comes back as a replica.
    wait_until("old primary to follow", Duration::from_secs(60), || async {
        c.status().is_ok_and(|s| {
            s["nodes"][0]["role"] == "replica" && s["nodes"][0]["wal_receiver"] == "streaming"
        })
    })
    .await?;
    Ok(())
}

/// Counts the nodes that accept writes right now (a node that does not
/// answer within 5 s counts as not writable).
async fn writable_count(urls: &[String]) -> usize {
    let mut writable = 0;
    for url in urls {
        if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(5), connect_url(url)).await
            && let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
            && !row.get::<_, bool>(0)
        {
            writable += 1;
        }
    }
    writable
}

#[tokio::test]
async fn etcd_loss_keeps_a_confirmed_primary_and_never_two() -> TestResult {
    let _serial = SERIAL.lock().await;
    let c = CliCluster::new(3)?;
    c.up(&["--mode", "async"]);
    let urls = urls(&c)?;
    let before = c.status()?;
    let primary_pid = before["nodes"][node_index(&before, "primary")?]["pid"].clone();
    // Stop etcd by PID (its supervisor first, so it is not restarted).
    for file in ["supervisor.pid", "etcd.pid"] {
        if let Some(pid) = pgkeel_testkit::pid_in(&c.root.join("etcd").join(file)) {
            pgkeel_testkit::stop_pid(pid, Signal::SIGKILL);
        }
    }
    // Every member still reaches the primary: it stays writable (failsafe),
    // where Patroni's default stops all writes.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let writable = writable_count(&urls).await;
        assert!(
            writable <= 1,
            "two writable primaries after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Twice the lease TTL later the same postmaster still takes writes: it
    // was never fenced.
    let primary = connect_url(&c.url(&["--node", "primary"])?).await?;
    primary
        .batch_execute("CREATE TABLE failsafe_ok (id int)")
        .await?;
    let pid_file = c.root.join("nodes/primary/data/postmaster.pid");
    let pid_now: i64 = std::fs::read_to_string(pid_file)?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .parse()?;
    assert_eq!(
        Some(pid_now),
        primary_pid.as_i64(),
        "the primary was restarted"
    );
    // One member can no longer confirm it: the primary fences itself
    // within 5 s. Judged by when each look started (a look takes longer on
    // a loaded machine): one that started 5 s after the kill must not find
    // a writable primary, and the looks go on until one such has been made.
    let status = c.status()?;
    sigkill(&status["nodes"][node_index(&status, "replica2")?]["agent_pid"])?;
    let start = Instant::now();
    let bound = Duration::from_secs(5);
    let mut fenced_after = None;
    let mut looked_after_bound = false;
    while start.elapsed() < Duration::from_secs(8) || !looked_after_bound {
        let looked = start.elapsed();
        let writable = writable_count(&urls).await;
        assert!(writable <= 1, "two writable primaries after {looked:?}");
        assert!(
            writable == 0 || looked < bound,
            "the primary still accepted writes {looked:?} after it lost a confirmation"
        );
        if writable == 0 && fenced_after.is_none() {
            fenced_after = Some(start.elapsed());
        }
        looked_after_bound |= looked >= bound;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fenced = fenced_after
        .ok_or("the primary kept accepting writes without etcd or a full set of confirmations")?;
    eprintln!("fenced (seen) {fenced:?} after one member stopped confirming");
    // etcd and the agent back: the cluster recovers with one primary.
    let out = c.run("up", &[]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "one writable primary again",
        Duration::from_secs(60),
        || async { connect_primary(&urls).await.is_some() },
    )
    .await?;
    assert_eq!(writable_count(&urls).await, 1);
    Ok(())
}

#[tokio::test]
async fn rest_api_answers_like_patroni_and_guards_posts() -> TestResult {
    let _serial = SERIAL.lock().await;
    let c = CliCluster::new(3)?;
    c.up(&["--mode", "async"]);
    let api = |i: u16, path: &str| format!("http://127.0.0.1:{}{path}", c.base_port + i + 2000);
    let get = |url: String| async move {
        pgkeel_agent::http::request("GET", &url, &[], "", Duration::from_secs(10)).await
    };
    assert_eq!(get(api(0, "/primary")).await?.0, 200);
    assert_eq!(get(api(1, "/primary")).await?.0, 503);
    assert_eq!(get(api(1, "/replica")).await?.0, 200);
    assert_eq!(get(api(0, "/replica")).await?.0, 503);
    assert_eq!(get(api(1, "/read-only")).await?.0, 200);
    assert_eq!(get(api(2, "/health")).await?.0, 200);
    assert_eq!(get(api(2, "/liveness")).await?.0, 200);
    let (code, body) = get(api(1, "/cluster")).await?;
    assert_eq!(code, 200);
    let topology: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(topology["leader"], "primary", "{topology}");
    let (_, metrics) = get(api(0, "/metrics")).await?;
    assert!(
        metrics.contains("pgkeel_primary{cluster=\"pgkeel\",node=\"primary\"} 1"),
        "{metrics}"
    );
    let denied = pgkeel_agent::http::request(
        "POST",
        &api(0, "/switchover"),
        &[],
        "{}",
        Duration::from_secs(10),
    )
    .await?;
    assert_eq!(denied.0, 401, "{denied:?}");
    // pause: no automatic action, status says so.
    let out = c.run("pause", &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(c.status()?["paused"], true);
    let out = c.run("resume", &[]);
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}

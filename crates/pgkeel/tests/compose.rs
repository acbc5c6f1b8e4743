//! The exported Docker Compose deployment, on this machine's Docker: each
//! test exports a cluster (`pgkeel init --node ...` then `pgkeel export
//! compose`), builds its image on the local base image and brings it up
//! under a compose project, subnet and published ports of its own. Nothing
//! is shared between the containers but the compose secrets.
//!
//! Needs root, a Docker engine and `docker-compose`; the base image is
//! built (or found cached) by `.ci/base-image.sh pgkeel`. One lab at a
//! time (three nodes and a proxy on two cores). Slow: about 8 minutes in
//! all, most of it `ten_simultaneous_starts_make_one_cluster_each_time`.
//! Timings are printed, never asserted (bench/compose.sh measures them).

mod common;
mod compose_lab;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestResult;
use compose_lab::{Lab, NODES};
use tokio::sync::Mutex;

/// One lab at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long a fresh cluster may take to be ready.
const READY: Duration = Duration::from_secs(120);

/// Runs `scenario` on a fresh lab, adding the containers' logs to a
/// failure.
async fn with_lab<F, Fut>(tag: &str, scenario: F) -> TestResult
where
    F: FnOnce(Arc<Lab>) -> Fut,
    Fut: std::future::Future<Output = TestResult>,
{
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::new(tag).await?;
    lab.build().await?;
    let lab = Arc::new(lab);
    let result = scenario(lab.clone()).await;
    if let Err(e) = result {
        let logs = lab.all_logs().await;
        return Err(format!("{e}\n{logs}").into());
    }
    Ok(())
}

async fn up(lab: &Lab) -> TestResult<usize> {
    lab.compose(&["up", "-d"]).await?;
    lab.ready(READY).await
}

/// Writes increasing ids through the proxy until stopped, remembering
/// which commits were acknowledged and the longest time without one.
struct Writer {
    acked: Arc<std::sync::Mutex<Vec<i64>>>,
    longest_gap: Arc<std::sync::Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    async fn start(lab: Arc<Lab>) -> TestResult<Writer> {
        let client = lab.connect(lab.proxy_port()).await?;
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS writes (id bigint PRIMARY KEY)")
            .await?;
        let acked = Arc::new(std::sync::Mutex::new(vec![]));
        let longest_gap = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, g, s) = (acked.clone(), longest_gap.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut client = Some(client);
            let mut last_ok = Instant::now();
            let mut id = 0i64;
            while !s.load(Ordering::Relaxed) {
                id += 1;
                if client.is_none() {
                    client = lab.connect(lab.proxy_port()).await.ok();
                }
                let ok = match &client {
                    Some(c) => matches!(
                        // Short: a write stuck on a vanished primary is given up
                        // (its fate unknown, never counted) and retried soon.
                        tokio::time::timeout(
                            Duration::from_secs(1),
                            c.execute("INSERT INTO writes VALUES ($1)", &[&id]),
                        )
                        .await,
                        Ok(Ok(1))
                    ),
                    None => false,
                };
                if ok {
                    let now = Instant::now();
                    if let Ok(mut gap) = g.lock() {
                        *gap = (*gap).max(now - last_ok);
                    }
                    last_ok = now;
                    if let Ok(mut acked) = a.lock() {
                        acked.push(id);
                    }
                } else {
                    client = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(Writer {
            acked,
            longest_gap,
            stop,
            task,
        })
    }

    fn acked(&self) -> Vec<i64> {
        self.acked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Waits until `n` more commits are acknowledged.
    async fn more(&self, n: usize, within: Duration) -> TestResult {
        let target = self.acked().len() + n;
        let start = Instant::now();
        while self.acked().len() < target {
            if start.elapsed() > within {
                return Err(format!("fewer than {n} writes acknowledged in {within:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn finish(self) -> TestResult<(Vec<i64>, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        let (acked, gap) = (self.acked.clone(), self.longest_gap.clone());
        self.task.await?;
        let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
        let gap = gap.lock().map(|g| *g).unwrap_or_default();
        Ok((acked, gap))
    }
}

/// Every acknowledged id is on node `i`.
async fn assert_none_lost(lab: &Lab, i: usize, acked: &[i64]) -> TestResult {
    let client = lab.connect(lab.port(i)).await?;
    let rows = client.query("SELECT id FROM writes", &[]).await?;
    let stored: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<i64> = acked
        .iter()
        .filter(|id| !stored.contains(id))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged rows lost on {}: {lost:?}",
        lost.len(),
        acked.len(),
        NODES[i]
    );
    Ok(())
}

/// Waits until `view` has a new leader other than `old`, ready.
async fn new_leader(lab: &Lab, old: usize, within: Duration) -> TestResult<usize> {
    let start = Instant::now();
    loop {
        if let Ok(view) = lab.view().await
            && let Some(name) = view.leader.as_deref()
            && name != NODES[old]
            && view
                .members
                .get(name)
                .is_some_and(|m| m.running && m.role == "primary")
        {
            return Lab::index(name);
        }
        if start.elapsed() > within {
            return Err(format!("no new leader within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comes_up_from_nothing_and_a_row_through_the_proxy_reaches_both_replicas() -> TestResult {
    with_lab("up", |lab| async move {
        let started = Instant::now();
        let leader = up(&lab).await?;
        eprintln!("ready {:.1}s after up", started.elapsed().as_secs_f64());
        let proxy = lab.connect(lab.proxy_port()).await?;
        proxy
            .batch_execute("CREATE TABLE guide (v text); INSERT INTO guide VALUES ('through the proxy')")
            .await?;
        for i in (0..NODES.len()).filter(|i| *i != leader) {
            let start = Instant::now();
            loop {
                let client = lab.connect(lab.port(i)).await?;
                let row = client
                    .query_one("SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_tables WHERE tablename = 'guide')", &[])
                    .await?;
                let (replica, tables): (bool, i64) = (row.get(0), row.get(1));
                assert!(replica, "{} is not a replica", NODES[i]);
                if tables == 1 {
                    let v: String = client.query_one("SELECT v FROM guide", &[]).await?.get(0);
                    assert_eq!(v, "through the proxy");
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(format!("{} never got the row", NODES[i]).into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Nothing shared: each node's data lives in its own volume.
        let volumes = lab
            .docker(&["volume", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={}", lab.project)])
            .await?;
        assert_eq!(volumes.lines().count(), NODES.len(), "{volumes}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_container_fails_over_without_losing_writes_and_rejoins_rewound()
-> TestResult {
    with_lab("kill", |lab| async move {
        let old = up(&lab).await?;
        let writer = Writer::start(lab.clone()).await?;
        writer.more(20, Duration::from_secs(10)).await?;
        let killed = Instant::now();
        lab.docker(&["kill", &lab.container(NODES[old])]).await?;
        let new = new_leader(&lab, old, Duration::from_secs(30)).await?;
        writer.more(20, Duration::from_secs(30)).await?;
        let (acked, gap) = writer.finish().await?;
        eprintln!(
            "primary {} killed: {} leads; longest time without an acknowledged write through the proxy {:.2}s ({:.1}s after the kill)",
            NODES[old],
            NODES[new],
            gap.as_secs_f64(),
            killed.elapsed().as_secs_f64()
        );
        assert_none_lost(&lab, new, &acked).await?;
        lab.docker(&["start", &lab.container(NODES[old])]).await?;
        let leader = lab.ready(Duration::from_secs(90)).await?;
        assert_eq!(leader, new, "the restarted node took the lead back");
        assert_eq!(lab.writable(old).await, Some(false), "{} rejoined writable", NODES[old]);
        let log = lab.logs(NODES[old]).await;
        assert!(log.contains("Rewind"), "{} rejoined without a rewind:\n{log}", NODES[old]);
        assert_none_lost(&lab, old, &acked).await?;
        Ok(())
    })
    .await
}

/// Samples of "accepts writes" per node, from inside each container over
/// its Unix socket (a disconnected container has no published port).
async fn start_probes(lab: &Lab) -> TestResult {
    for name in NODES {
        let socket = format!("/var/lib/pgkeel/nodes/{name}/run");
        let script = format!(
            "while :; do w=$(runuser -u postgres -- psql -h {socket} -p 5432 -d postgres -XAtc 'SELECT NOT pg_is_in_recovery()' 2>/dev/null || echo down); echo \"$(date +%s.%N) $w\"; sleep 0.05; done > /tmp/writable.log"
        );
        lab.docker(&["exec", "-d", &lab.container(name), "sh", "-c", &script])
            .await?;
    }
    Ok(())
}

/// Each node's (time, writable) samples so far.
async fn probe_samples(lab: &Lab) -> TestResult<Vec<Vec<(f64, bool)>>> {
    let mut all = vec![];
    for name in NODES {
        let text = lab
            .docker(&["exec", &lab.container(name), "cat", "/tmp/writable.log"])
            .await?;
        let samples = text
            .lines()
            .filter_map(|l| {
                let (t, w) = l.split_once(' ')?;
                Some((t.parse::<f64>().ok()?, w.trim() == "t"))
            })
            .collect();
        all.push(samples);
    }
    Ok(all)
}

/// Spans during which a node may have accepted writes: from each writable
/// sample to the next sample of that node.
fn writable_spans(samples: &[(f64, bool)]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter(|w| w[0].1)
        .map(|w| (w[0].0, w[1].0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_primary_fences_before_a_replica_takes_over_and_rejoins() -> TestResult {
    with_lab("part", |lab| async move {
        let old = up(&lab).await?;
        start_probes(&lab).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let network = format!("{}_pgkeel", lab.project);
        let container = lab.container(NODES[old]);
        let cut = Instant::now();
        lab.docker(&["network", "disconnect", &network, &container])
            .await?;
        let new = new_leader(&lab, old, Duration::from_secs(60)).await?;
        eprintln!(
            "{} cut off: {} leads {:.1}s later",
            NODES[old],
            NODES[new],
            cut.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ip = lab.ip(old);
        lab.docker(&["network", "connect", "--ip", &ip, &network, &container])
            .await?;
        let leader = lab.ready(Duration::from_secs(90)).await?;
        assert_eq!(leader, new);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let samples = probe_samples(&lab).await?;
        let spans: Vec<Vec<(f64, f64)>> = samples.iter().map(|s| writable_spans(s)).collect();
        for a in 0..NODES.len() {
            for b in a + 1..NODES.len() {
                for x in &spans[a] {
                    for y in &spans[b] {
                        assert!(
                            x.1 <= y.0 || y.1 <= x.0,
                            "{} and {} both accepted writes around {:.2}-{:.2}",
                            NODES[a],
                            NODES[b],
                            x.0.max(y.0),
                            x.1.min(y.1)
                        );
                    }
                }
            }
        }
        let fenced = samples[old].iter().any(|(_, w)| !*w);
        assert!(fenced, "{} never stopped accepting writes", NODES[old]);
        assert!(
            !spans[new].is_empty(),
            "the probe never saw {} writable",
            NODES[new]
        );
        assert_eq!(
            lab.writable(old).await,
            Some(false),
            "{} rejoined writable",
            NODES[old]
        );
        Ok(())
    })
    .await
}

/// The PID of the etcd member inside a node's container.
async fn etcd_pid(lab: &Lab, name: &str) -> TestResult<String> {
    let out = lab
        .docker(&["exec", &lab.container(name), "pgrep", "-x", "etcd"])
        .await?;
    Ok(out.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_members_down_one_changes_nothing_two_leave_the_primary_under_failsafe() -> TestResult
{
    with_lab("etcd", |lab| async move {
        let leader = up(&lab).await?;
        let replicas: Vec<usize> = (0..NODES.len()).filter(|i| *i != leader).collect();
        let writer = Writer::start(lab.clone()).await?;
        writer.more(10, Duration::from_secs(10)).await?;
        // A frozen member is down to its peers, and its supervisor does not
        // restart it (it has not exited).
        let mut frozen = vec![];
        for (round, i) in replicas.iter().enumerate() {
            let pid = etcd_pid(&lab, NODES[*i]).await?;
            lab.docker(&["exec", &lab.container(NODES[*i]), "kill", "-STOP", &pid])
                .await?;
            frozen.push((*i, pid));
            // Longer than a lease TTL and a WAL receiver timeout.
            let until = Instant::now() + Duration::from_secs(8);
            while Instant::now() < until {
                assert_eq!(
                    lab.writable(leader).await,
                    Some(true),
                    "{} stopped accepting writes with {} etcd member(s) down",
                    NODES[leader],
                    round + 1
                );
                for r in &replicas {
                    assert_eq!(
                        lab.writable(*r).await,
                        Some(false),
                        "{} was promoted with {} etcd member(s) down",
                        NODES[*r],
                        round + 1
                    );
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            writer.more(10, Duration::from_secs(10)).await?;
            if round == 1 {
                // Both replicas have promised the primary not to take over.
                for r in &replicas {
                    let url = format!("http://{}:7432/health", lab.ip(*r));
                    let health = lab
                        .docker(&["exec", &lab.container(NODES[*r]), "curl", "-s", &url])
                        .await?;
                    assert!(
                        health.contains("\"failsafe_promise\":{"),
                        "{} made no failsafe promise: {health}",
                        NODES[*r]
                    );
                }
            }
            if round == 0 {
                let view = lab.view().await?;
                assert_eq!(
                    view.leader.as_deref(),
                    Some(NODES[leader]),
                    "leader changed with one etcd member down"
                );
            }
        }
        for (i, pid) in &frozen {
            lab.docker(&["exec", &lab.container(NODES[*i]), "kill", "-CONT", pid])
                .await?;
        }
        let after = lab.ready(Duration::from_secs(60)).await?;
        assert_eq!(after, leader, "the failsafe primary is the leader again");
        let (acked, gap) = writer.finish().await?;
        eprintln!(
            "longest time without an acknowledged write: {:.2}s",
            gap.as_secs_f64()
        );
        assert_none_lost(&lab, leader, &acked).await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_simultaneous_starts_make_one_cluster_each_time() -> TestResult {
    with_lab("race", |lab| async move {
        for round in 1..=10 {
            // Each round starts from nothing: no container, volume or network
            // (the Drop guard takes down the last round, should it fail).
            let started = Instant::now();
            lab.compose(&["up", "--no-start"]).await?;
            let names: Vec<String> = NODES.iter().map(|n| lab.container(n)).collect();
            let mut args = vec!["start"];
            args.extend(names.iter().map(String::as_str));
            lab.docker(&args).await?;
            let leader = lab.ready(READY).await?;
            let view = lab.view().await?;
            let init = view.initialize.clone().ok_or("no initialize key")?;
            assert_eq!(
                init.node, NODES[leader],
                "round {round}: the initialiser does not lead"
            );
            let mut ids = BTreeSet::new();
            for i in 0..NODES.len() {
                let client = lab.connect_super(i).await?;
                let id: i64 = client
                    .query_one("SELECT system_identifier FROM pg_control_system()", &[])
                    .await?
                    .get(0);
                ids.insert(id);
            }
            assert_eq!(ids.len(), 1, "round {round}: {ids:?}");
            let mut initdbs = 0;
            for name in NODES {
                initdbs += lab.logs(name).await.matches("running initdb").count();
            }
            assert_eq!(initdbs, 1, "round {round}: {initdbs} initdb runs");
            eprintln!(
                "round {round}: {} initialised, ready in {:.1}s",
                NODES[leader],
                started.elapsed().as_secs_f64()
            );
            lab.down().await?;
        }
        Ok(())
    })
    .await
}

//! Network partitions between hosts, with real PostgreSQL, real etcd and
//! the real agents, each node on its own address in its own network
//! namespace (`pgkeel_testkit::netlab`); etcd listens on the lab's bridge.
//!
//! The test itself observes the nodes over their Unix sockets, which no
//! partition cuts: it sees the isolated side of a partition as well as
//! the majority side, like an operator with a console on every host. It
//! reads etcd from the lab's switch namespace.
//!
//! Needs root and iproute2 (`ip netns`); fails (does not skip) without.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestResult;
use pgkeel_cluster::Cluster;
use pgkeel_dcs::{ClusterView, Dcs};
use pgkeel_testkit::netlab::{NetLab, NsProcess, command_in, run_in};
use pgkeel_testkit::{ClusterGuard, TestDir, free_port_block};
use tokio::sync::Mutex;

/// One lab at a time: each runs a 3-node cluster whose 3 s lease must not
/// compete for the CPU with another's.
static SERIAL: Mutex<()> = Mutex::const_new(());

const NODES: [&str; 3] = ["primary", "replica1", "replica2"];

/// The lease TTL the cluster runs with (the default).
const TTL: Duration = Duration::from_secs(3);

/// A 3-node cluster, one node per namespace. Fields drop in order: agents
/// first (nothing restarts PostgreSQL), then the postmasters (by PID), then
/// etcd, then the namespaces, then the directory.
struct Lab {
    agents: Vec<NsProcess>,
    _guard: ClusterGuard,
    _etcd: NsProcess,
    net: NetLab,
    cluster: Cluster,
    _dir: TestDir,
}

fn pgkeel_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgkeel"))
}

/// Runs `pgkeel args...` inside `namespace`, failing with its output.
fn pgkeel_in(namespace: &str, args: &[&str]) -> TestResult {
    let mut cmd = command_in(namespace, pgkeel_exe());
    cmd.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("PGKEEL_")) {
        cmd.env_remove(key);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "pgkeel {} in {namespace} failed: {}",
            args.join(" "),
            common::text(&out)
        )
        .into());
    }
    Ok(())
}

/// Reads the cluster's keys from the switch namespace.
async fn view(net_ns: String, cluster: Cluster) -> TestResult<ClusterView> {
    tokio::task::spawn_blocking(move || {
        run_in(&net_ns, move || -> TestResult<ClusterView> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let c = &cluster.config;
                let dcs = Dcs::connect(
                    &c.etcd_endpoints(),
                    &c.etcd.namespace,
                    &c.cluster.name,
                    Duration::from_secs(1),
                )
                .await?;
                Ok(dcs.view().await?)
            })
        })?
    })
    .await?
}

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> TestResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Lab {
    /// Bootstraps the cluster in one scratch namespace holding every node
    /// address (`pgkeel up --no-ha`), stops it, then starts each node's
    /// PostgreSQL and agent in the node's own namespace and waits until the
    /// bootstrap primary leads and both replicas stream.
    async fn start(mode: &str) -> TestResult<Lab> {
        let net = NetLab::new(3).map_err(|e| format!("{e}"))?;
        let dir = TestDir::new()?;
        let root = dir.path().join("cluster");
        let base = free_port_block(3);
        let etcd_port = base + 3000;
        let etcd_url = format!("http://{}:{etcd_port}", net.switch_addr());
        let mut config = format!(
            "[cluster]\nname = \"netlab\"\ndata_dir = \"{}\"\n\
             [replication]\nmode = \"{mode}\"\n\
             [access]\nnetworks = [\"127.0.0.1/32\", \"{}\"]\n\
             [tuning]\nmemory = \"256MB\"\nmax_connections = 50\n\
             [etcd]\nendpoints = [\"{etcd_url}\"]\n\
             [proxy]\nenabled = false\n",
            root.display(),
            net.subnet_cidr()
        );
        for (i, name) in NODES.iter().enumerate() {
            config.push_str(&format!(
                "[[nodes]]\nname = \"{name}\"\nhost = \"{}\"\nport = {}\napi_port = {}\n",
                net.node(i)?.addr,
                base + i as u16,
                base + 2000 + i as u16
            ));
        }
        let config_file = dir.path().join("pgkeel.toml");
        std::fs::write(&config_file, config)?;
        let guard = ClusterGuard::new(&root);

        // Bootstrap where every node address is local.
        {
            let all = net.all_in_one()?;
            let cfg = config_file.display().to_string();
            let boot = pgkeel_in(all.name(), &["up", "-c", &cfg, "--no-ha", "--no-proxy"]);
            let down = pgkeel_in(all.name(), &["down", "-c", &cfg]);
            boot?;
            down?;
        }
        let cluster = Cluster::open(&root)?;

        // etcd on the bridge.
        let etcd_dir = dir.path().join("etcd");
        std::fs::create_dir_all(&etcd_dir)?;
        let peer = format!("http://{}:{}", net.switch_addr(), etcd_port + 1);
        let etcd = NsProcess::spawn(
            net.switch_namespace(),
            Path::new("etcd"),
            &[
                "--name",
                "lab",
                "--data-dir",
                &etcd_dir.join("data").display().to_string(),
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("lab={peer}"),
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
            ],
            &etcd_dir.join("etcd.log"),
        )?;
        let mut lab = Lab {
            agents: vec![],
            _guard: guard,
            _etcd: etcd,
            net,
            cluster,
            _dir: dir,
        };
        // From here on a failure panics while the lab is alive, so its
        // directory is kept and the tails of its logs are printed.
        if let Err(e) = lab.start_nodes().await {
            panic!("starting the nodes in their namespaces: {e}");
        }
        Ok(lab)
    }

    /// etcd answering, then PostgreSQL and the agent of each node in its
    /// own namespace; the primary's agent takes the key before the others
    /// start. Returns once both replicas stream, with the table `w`.
    async fn start_nodes(&mut self) -> TestResult {
        let lab = self;
        wait_for("etcd to answer", Duration::from_secs(20), || async {
            lab.view().await.ok()
        })
        .await?;

        for (i, name) in NODES.iter().enumerate() {
            lab.start_postgres(i)?;
            let ns = lab.net.node(i)?.namespace.clone();
            let root = lab.cluster.layout.root().display().to_string();
            lab.agents.push(NsProcess::spawn(
                &ns,
                &pgkeel_exe(),
                &["agent", "--dir", &root, "--node", name],
                &lab.cluster.layout.agent_log(name),
            )?);
            if i == 0 {
                wait_for(
                    "the primary's agent to take the leader key",
                    Duration::from_secs(30),
                    || async {
                        let v = lab.view().await.ok()?;
                        (v.leader.as_deref() == Some("primary")).then_some(())
                    },
                )
                .await?;
            }
        }
        lab.all_members_published("every agent to publish its state")
            .await?;
        wait_for(
            "both replicas to stream from the primary",
            Duration::from_secs(30),
            || async { (lab.streaming_standbys(0).await.ok()? == 2).then_some(()) },
        )
        .await?;
        lab.sql(0, "CREATE TABLE w (id bigint PRIMARY KEY)").await?;
        Ok(())
    }

    /// Waits until every agent has published its member key (on a live
    /// lease) again.
    async fn all_members_published(&self, what: &str) -> TestResult {
        wait_for(what, Duration::from_secs(20), || async {
            let v = self.view().await.ok()?;
            NODES
                .iter()
                .all(|n| v.members.contains_key(*n))
                .then_some(())
        })
        .await
    }

    /// `pg_ctl start` of node `i` as the OS user, inside its namespace.
    fn start_postgres(&self, i: usize) -> TestResult {
        let name = NODES[i];
        let layout = &self.cluster.layout;
        let out = command_in(&self.net.node(i)?.namespace, "runuser")
            .args(["-u", &self.cluster.os_user().name, "--"])
            .arg(self.cluster.runner.bins().path("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(layout.data_dir(name))
            .arg("-l")
            .arg(layout.log_file(name))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!("pg_ctl start of {name}: {}", common::text(&out)).into());
        }
        Ok(())
    }

    async fn view(&self) -> TestResult<ClusterView> {
        view(
            self.net.switch_namespace().to_string(),
            self.cluster.clone(),
        )
        .await
    }

    /// A superuser session on node `i` over its Unix socket (unaffected by
    /// partitions), bounded to 2 s.
    async fn connect(&self, i: usize) -> TestResult<pgkeel_pg::probe::NodeConn> {
        let node = self.cluster.node(NODES[i])?;
        Ok(tokio::time::timeout(Duration::from_secs(2), self.cluster.connect(node)).await??)
    }

    async fn sql(&self, i: usize, sql: &str) -> TestResult {
        self.connect(i).await?.client().batch_execute(sql).await?;
        Ok(())
    }

    /// Whether node `i` runs as a primary right now (`None`: unreachable,
    /// i.e. not running).
    async fn writable(&self, i: usize) -> Option<bool> {
        let conn = self.connect(i).await.ok()?;
        let q = conn.client().query_one("SELECT pg_is_in_recovery()", &[]);
        let row = tokio::time::timeout(Duration::from_secs(2), q)
            .await
            .ok()?
            .ok()?;
        Some(!row.get::<_, bool>(0))
    }

    async fn streaming_standbys(&self, i: usize) -> TestResult<i64> {
        let row = self
            .connect(i)
            .await?
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Node `i`'s current WAL position as a primary, or replayed position
    /// as a standby, in bytes.
    async fn wal_position(&self, i: usize) -> TestResult<i64> {
        let row = self
            .connect(i)
            .await?
            .client()
            .query_one(
                "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                 ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Acknowledged ids missing on node `i`.
    async fn missing_on(&self, i: usize, acked: &[Ack]) -> TestResult<Vec<i64>> {
        let rows = self
            .connect(i)
            .await?
            .client()
            .query("SELECT id FROM w", &[])
            .await?;
        let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        Ok(acked
            .iter()
            .map(|a| a.id)
            .filter(|id| !present.contains(id))
            .collect())
    }

    /// The postmaster PID of node `i`.
    fn postmaster_pid(&self, i: usize) -> Option<u32> {
        pgkeel_pg::pgctl::running_pid(&self.cluster.layout.data_dir(NODES[i]))
    }
}

/// One acknowledged insert: its id, the node that committed it, and when.
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: i64,
    node: usize,
    at: Instant,
}

/// One round of the sampler: when, and which nodes ran as a primary.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    writable: [Option<bool>; 3],
}

/// Background tasks over the whole scenario: a writer inserting 1, 2, 3,
/// ... on whichever node runs as a primary (through its socket, so it keeps
/// writing to an isolated primary as a client on that host would), and a
/// sampler asking every node every 50 ms whether it runs as a primary.
struct Watch {
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<Vec<Ack>>,
    sampler: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Watch {
    fn start(lab: &Arc<Lab>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, l) = (stop.clone(), lab.clone());
        let writer = tokio::spawn(async move {
            let mut acked = vec![];
            let mut next = 1i64;
            let mut current: Option<(usize, pgkeel_pg::probe::NodeConn)> = None;
            while !flag.load(Ordering::SeqCst) {
                if current.is_none() {
                    for i in 0..3 {
                        if l.writable(i).await == Some(true)
                            && let Ok(conn) = l.connect(i).await
                        {
                            current = Some((i, conn));
                            break;
                        }
                    }
                }
                let Some((node, conn)) = &current else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let id = next;
                next += 1;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let insert = conn
                    .client()
                    .execute("INSERT INTO w (id) VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(8), insert).await {
                    Ok(Ok(_)) => acked.push(Ack {
                        id,
                        node: *node,
                        at: Instant::now(),
                    }),
                    _ => current = None,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        });
        let (flag, l) = (stop.clone(), lab.clone());
        let sampler = tokio::spawn(async move {
            let mut samples = vec![];
            while !flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                let (a, b, c) = tokio::join!(l.writable(0), l.writable(1), l.writable(2));
                samples.push(Sample {
                    at,
                    writable: [a, b, c],
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        });
        Watch {
            stop,
            writer,
            sampler,
        }
    }

    async fn finish(mut self) -> TestResult<(Vec<Ack>, Vec<Sample>)> {
        self.stop.store(true, Ordering::SeqCst);
        let writer = std::mem::replace(&mut self.writer, tokio::spawn(async { vec![] }));
        let sampler = std::mem::replace(&mut self.sampler, tokio::spawn(async { vec![] }));
        Ok((writer.await?, sampler.await?))
    }
}

impl Drop for Watch {
    /// A scenario that fails midway stops its writer and sampler (they
    /// hold the lab, which must drop to stop its processes).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Fails if any sample saw two nodes running as primaries.
fn assert_never_two_primaries(samples: &[Sample], since: Instant) {
    for s in samples {
        let writable: Vec<&str> = (0..3)
            .filter(|&i| s.writable[i] == Some(true))
            .map(|i| NODES[i])
            .collect();
        assert!(
            writable.len() <= 1,
            "split brain: {writable:?} both ran as primaries {:?} into the scenario",
            s.at.duration_since(since)
        );
    }
}

/// When the samples last saw `node` running as a primary.
fn last_writable(samples: &[Sample], node: usize) -> Option<Instant> {
    samples
        .iter()
        .rev()
        .find(|s| s.writable[node] == Some(true))
        .map(|s| s.at)
}

fn first_writable_after(samples: &[Sample], node: usize, after: Instant) -> Option<Instant> {
    samples
        .iter()
        .find(|s| s.at > after && s.writable[node] == Some(true))
        .map(|s| s.at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_primary_fences_itself_a_replica_takes_over_and_it_rejoins() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let lab = match Lab::start("quorum").await {
        Ok(lab) => Arc::new(lab),
        Err(e) => panic!("{e}"),
    };
    // Panics while the lab is alive: its directory and log tails are kept.
    if let Err(e) = isolated_primary(&lab, started).await {
        panic!("{e}");
    }
}

async fn isolated_primary(lab: &Arc<Lab>, started: Instant) -> TestResult {
    eprintln!("cluster up in namespaces after {:?}", started.elapsed());
    let watch = Watch::start(lab);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let cut = Instant::now();
    lab.net.isolate(0)?;
    let promoted = wait_for(
        "a replica to be promoted after the primary was cut off",
        Duration::from_secs(20),
        || async {
            for i in 1..3 {
                if lab.writable(i).await == Some(true) {
                    return Some(i);
                }
            }
            None
        },
    )
    .await?;
    let old_stopped = wait_for(
        "the isolated primary to stop running as a primary",
        Duration::from_secs(10),
        || async { (lab.writable(0).await != Some(true)).then_some(()) },
    )
    .await;
    // Let the writer commit on the new primary for a while, then heal: the
    // old primary comes back as a standby of the new one (its agent
    // rewinds it). The sampler watches throughout.
    tokio::time::sleep(Duration::from_secs(2)).await;
    lab.net.heal(0)?;
    let healed = Instant::now();
    let rejoined = wait_for(
        "the old primary to run again, as a standby",
        Duration::from_secs(60),
        || async { (lab.writable(0).await == Some(false)).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acks, samples) = watch.finish().await?;
    old_stopped?;
    rejoined?;
    eprintln!(
        "old primary back as a standby {:?} after healing",
        healed.elapsed()
    );

    assert_never_two_primaries(&samples, cut);
    let before = acks.iter().filter(|a| a.at < cut).count();
    assert!(
        before > 10,
        "the writer barely wrote before the cut: {before}"
    );
    let fenced = last_writable(&samples, 0)
        .map(|t| t.saturating_duration_since(cut))
        .unwrap_or_default();
    let new_first = first_writable_after(&samples, promoted, cut)
        .ok_or("the sampler never saw the new primary")?
        .duration_since(cut);
    eprintln!(
        "primary cut off: last seen as primary {fenced:?} after the cut, {} promoted {new_first:?} after",
        NODES[promoted]
    );
    // The old primary stops serving writes before its lease (TTL) can
    // expire, i.e. before anyone may take over (plus the 50 ms sampling).
    assert!(
        fenced < TTL + Duration::from_millis(100),
        "the isolated primary ran as a primary {fenced:?} after the cut (lease TTL {TTL:?})"
    );
    assert!(
        fenced < new_first,
        "the new primary ran ({new_first:?}) before the old one stopped ({fenced:?})"
    );
    // Acknowledged writes after the cut on the old primary would be lost
    // writes waiting to happen: quorum commit must have blocked them.
    let late = acks
        .iter()
        .filter(|a| a.node == 0 && a.at > cut + Duration::from_millis(100))
        .count();
    assert_eq!(late, 0, "the isolated primary acknowledged {late} commits");
    let on_new = acks.iter().filter(|a| a.node == promoted).count();
    assert!(
        on_new > 10,
        "writes did not resume on {}: {on_new}",
        NODES[promoted]
    );
    let missing = lab.missing_on(promoted, &acks).await?;
    assert!(
        missing.is_empty(),
        "acknowledged commits lost in quorum mode: {missing:?}"
    );
    let leader = lab.view().await?.leader;
    assert_eq!(leader.as_deref(), Some(NODES[promoted]));

    // It catches up with everything the new primary wrote.
    let target = lab.wal_position(promoted).await?;
    wait_for(
        "the rejoined old primary to replay the new primary's WAL",
        Duration::from_secs(30),
        || async {
            (lab.writable(0).await == Some(false) && lab.wal_position(0).await.ok()? >= target)
                .then_some(())
        },
    )
    .await?;
    eprintln!("old primary rejoined {:?} after healing", healed.elapsed());
    lab.all_members_published("the old primary's agent to publish its state again (a new lease)")
        .await?;
    let missing = lab.missing_on(0, &acks).await?;
    assert!(
        missing.is_empty(),
        "the rejoined node lacks rows: {missing:?}"
    );
    let writable = tokio::join!(lab.writable(0), lab.writable(1), lab.writable(2));
    assert_eq!(
        writable,
        (Some(false), Some(promoted == 1), Some(promoted == 2)),
        "one primary, the new one, after the rejoin"
    );
    wait_for(
        "the new primary to stream to both standbys",
        Duration::from_secs(30),
        || async { (lab.streaming_standbys(promoted).await.ok()? == 2).then_some(()) },
    )
    .await?;
    eprintln!("whole scenario: {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_replica_causes_no_failover_and_catches_up_when_healed() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let lab = match Lab::start("quorum").await {
        Ok(lab) => Arc::new(lab),
        Err(e) => panic!("{e}"),
    };
    // Panics while the lab is alive: its directory and log tails are kept.
    if let Err(e) = isolated_replica(&lab, started).await {
        panic!("{e}");
    }
}

async fn isolated_replica(lab: &Arc<Lab>, started: Instant) -> TestResult {
    let primary_pid = lab.postmaster_pid(0);
    let watch = Watch::start(lab);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let cut = Instant::now();
    lab.net.isolate(2)?;
    // Well past a lease TTL, twice: time for any wrong failover to happen.
    tokio::time::sleep(TTL * 2 + Duration::from_secs(1)).await;
    let leader = lab.view().await?.leader;
    lab.net.heal(2)?;
    let healed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acks, samples) = watch.finish().await?;

    assert_never_two_primaries(&samples, cut);
    assert_eq!(leader.as_deref(), Some("primary"), "the leader changed");
    assert_eq!(
        lab.postmaster_pid(0),
        primary_pid,
        "the primary was restarted"
    );
    for s in &samples {
        assert_eq!(
            s.writable[0],
            Some(true),
            "the primary stopped running as one {:?} into the scenario",
            s.at.saturating_duration_since(cut)
        );
        assert_ne!(
            s.writable[2],
            Some(true),
            "the isolated replica was promoted"
        );
    }
    let during: Vec<&Ack> = acks
        .iter()
        .filter(|a| a.at > cut && a.at < healed)
        .collect();
    assert!(
        during.len() > 20,
        "the primary barely took writes while a replica was cut off: {}",
        during.len()
    );
    assert!(
        acks.iter().all(|a| a.node == 0),
        "a write landed off the primary"
    );
    let gap = acks
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} writes acknowledged while replica2 was cut off; longest gap between writes {gap:?}",
        during.len()
    );
    assert!(gap < TTL, "writes stalled for {gap:?}");

    // Healed: the replica replays everything the primary wrote.
    let target = lab.wal_position(0).await?;
    let took = {
        let t = Instant::now();
        wait_for(
            "the healed replica to replay up to the primary's WAL position",
            Duration::from_secs(30),
            || async { (lab.wal_position(2).await.ok()? >= target).then_some(()) },
        )
        .await?;
        t.elapsed()
    };
    eprintln!("replica2 caught up {took:?} after the heal");
    // Its lease expired while it was cut off: its agent must take a new
    // one and publish its state again, or it could never lead nor be seen.
    lab.all_members_published(
        "the healed replica's agent to publish its state again (a new lease)",
    )
    .await?;
    let missing = lab.missing_on(2, &acks).await?;
    assert!(
        missing.is_empty(),
        "the healed replica lacks rows: {missing:?}"
    );
    assert_eq!(lab.streaming_standbys(0).await?, 2);
    eprintln!("whole scenario: {:?}", started.elapsed());
    Ok(())
}

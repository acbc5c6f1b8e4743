//! Network partitions between hosts, with real PostgreSQL, real etcd and
//! the real agents, each node on its own address in its own network
//! namespace (`pgkeel_testkit::netlab`); etcd listens on the lab's bridge.
//!
//! The test itself observes the nodes over their Unix sockets, which no
//! partition cuts: it sees the isolated side of a partition as well as
//! the majority side, like an operator with a console on every host. It
//! reads etcd from the lab's switch namespace.
//!
//! Whole-node isolation detaches a node's bridge port; partial partitions
//! (a primary cut from etcd alone, a replica cut from the primary alone)
//! use `NetLab::cut`, routes that cut one link both ways.
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
use pgkeel_testkit::netlab::{NetLab, NsProcess, Peer, command_in, run_in};
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
        wait_for("etcd to answer", Duration::from_secs(60), || async {
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
                    Duration::from_secs(60),
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
            Duration::from_secs(60),
            || async { (lab.streaming_standbys(0).await.ok()? == 2).then_some(()) },
        )
        .await?;
        lab.sql(0, "CREATE TABLE w (id bigint PRIMARY KEY)").await?;
        Ok(())
    }

    /// Waits until every agent has published its member key (on a live
    /// lease) again.
    async fn all_members_published(&self, what: &str) -> TestResult {
        wait_for(what, Duration::from_secs(60), || async {
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
    /// partitions), bounded to 5 s (a loaded machine may take a second or
    /// two; a node that does not answer counts as not running).
    async fn connect(&self, i: usize) -> TestResult<pgkeel_pg::probe::NodeConn> {
        let node = self.cluster.node(NODES[i])?;
        Ok(tokio::time::timeout(Duration::from_secs(5), self.cluster.connect(node)).await??)
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
        let row = tokio::time::timeout(Duration::from_secs(5), q)
            .await
            .ok()?
            .ok()?;
        Some(!row.get::<_, bool>(0))
    }

    /// The rows of `query` on node `i`.
    async fn rows(&self, i: usize, query: &str) -> TestResult<Vec<tokio_postgres::Row>> {
        Ok(self.connect(i).await?.client().query(query, &[]).await?)
    }

    /// The single number `query` yields on node `i`.
    async fn number(&self, i: usize, query: &str) -> TestResult<i64> {
        let rows = self.rows(i, query).await?;
        let row = rows.first().ok_or_else(|| format!("no row from {query}"))?;
        Ok(row.get(0))
    }

    async fn streaming_standbys(&self, i: usize) -> TestResult<i64> {
        self.number(
            i,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )
        .await
    }

    /// Whether node `i`'s WAL receiver streams right now (it stops once
    /// `wal_receiver_timeout` passes without a message from upstream).
    async fn receiving(&self, i: usize) -> TestResult<bool> {
        let query = "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'";
        Ok(self.number(i, query).await? > 0)
    }

    /// Primary `i`'s standbys with their `sync_state` (sync, potential,
    /// quorum, async).
    async fn sync_states(&self, i: usize) -> TestResult<Vec<(String, String)>> {
        let query = "SELECT application_name, sync_state FROM pg_stat_replication ORDER BY 1";
        let rows = self.rows(i, query).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Waits until node `i` runs as a standby and has replayed everything
    /// node `source` had written when asked.
    async fn caught_up(&self, i: usize, source: usize) -> TestResult {
        let target = self.wal_position(source).await?;
        wait_for(
            &format!("{} to replay {}'s WAL", NODES[i], NODES[source]),
            Duration::from_secs(60),
            || async {
                (self.writable(i).await == Some(false)
                    && self.wal_position(i).await.ok()? >= target)
                    .then_some(())
            },
        )
        .await
    }

    /// Node `i`'s current WAL position as a primary, or replayed position
    /// as a standby, in bytes.
    async fn wal_position(&self, i: usize) -> TestResult<i64> {
        self.number(
            i,
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint",
        )
        .await
    }

    /// Fails unless node `i` holds every acknowledged row; `what` says
    /// what the node is, for the message.
    async fn holds_every_ack(&self, i: usize, acked: &[Ack], what: &str) -> TestResult {
        let rows = self.rows(i, "SELECT id FROM w").await?;
        let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        let missing: Vec<i64> = acked
            .iter()
            .map(|a| a.id)
            .filter(|id| !present.contains(id))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{what} ({}) lacks acknowledged rows: {missing:?}", NODES[i]).into())
        }
    }

    /// The postmaster PID of node `i`.
    fn postmaster_pid(&self, i: usize) -> Option<u32> {
        pgkeel_pg::pgctl::running_pid(&self.cluster.layout.data_dir(NODES[i]))
    }
}

/// One acknowledged insert: its id, the node that committed it, when it
/// was sent and when its acknowledgement was seen (later than it arrived
/// if the writer task ran late).
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: i64,
    node: usize,
    sent: Instant,
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
    /// The writer's acknowledged inserts so far.
    acked: Arc<std::sync::Mutex<Vec<Ack>>>,
    writer: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Watch {
    fn start(lab: &Arc<Lab>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, l, shared) = (stop.clone(), lab.clone(), acked.clone());
        let writer = tokio::spawn(async move {
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
                let sent = Instant::now();
                let insert = conn
                    .client()
                    .execute("INSERT INTO w (id) VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(8), insert).await {
                    Ok(Ok(_)) => {
                        let ack = Ack {
                            id,
                            node: *node,
                            sent,
                            at: Instant::now(),
                        };
                        if let Ok(mut acked) = shared.lock() {
                            acked.push(ack);
                        }
                    }
                    _ => current = None,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
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
            acked,
            writer,
            sampler,
        }
    }

    /// How many inserts acknowledged so far `count` holds for.
    fn acked_where(&self, count: impl Fn(&Ack) -> bool) -> usize {
        self.acked
            .lock()
            .map_or(0, |acked| acked.iter().filter(|a| count(a)).count())
    }

    /// Waits until `count` holds for more than `n` acknowledged inserts,
    /// for up to `timeout`; `Err` says how many it saw (the caller's own
    /// check reports it).
    async fn wait_acked(
        &self,
        n: usize,
        timeout: Duration,
        count: impl Fn(&Ack) -> bool,
    ) -> Result<(), usize> {
        let start = Instant::now();
        loop {
            let seen = self.acked_where(&count);
            if seen > n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(seen);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(mut self) -> TestResult<(Vec<Ack>, Vec<Sample>)> {
        self.stop.store(true, Ordering::SeqCst);
        let writer = std::mem::replace(&mut self.writer, tokio::spawn(async {}));
        let sampler = std::mem::replace(&mut self.sampler, tokio::spawn(async { vec![] }));
        writer.await?;
        let acked = self
            .acked
            .lock()
            .map_err(|_| "the writer panicked")?
            .clone();
        Ok((acked, sampler.await?))
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

/// How a scenario cuts the network, and how it heals it.
#[derive(Debug, Clone)]
enum Partition {
    /// Node `i` cut off from everything (its bridge port detached).
    Isolate(usize),
    /// Only these links, each between a node and a peer, both ways; every
    /// other path stays up.
    Links(Vec<(usize, Peer)>),
}

impl Partition {
    fn apply(&self, net: &NetLab) -> TestResult {
        self.set(net, true)
    }

    fn heal(&self, net: &NetLab) -> TestResult {
        self.set(net, false)
    }

    /// Cuts (`cut`) or heals the partition.
    fn set(&self, net: &NetLab, cut: bool) -> TestResult {
        match self {
            Partition::Isolate(i) if cut => net.isolate(*i)?,
            Partition::Isolate(i) => net.heal(*i)?,
            Partition::Links(links) => {
                for &(i, peer) in links {
                    if cut {
                        net.cut(i, peer)?;
                    } else {
                        net.mend(i, peer)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether node `i` still reaches etcd (the switch) during the cut.
    fn reaches_etcd(&self, i: usize) -> bool {
        match self {
            Partition::Isolate(j) => *j != i,
            Partition::Links(links) => !links.contains(&(i, Peer::Switch)),
        }
    }
}

/// Runs `scenario` on a fresh lab replicating in `mode`, one lab at a time.
/// A failure panics while the lab is alive, so its directory and the tails
/// of its logs are kept.
async fn run_lab<F, Fut>(mode: &str, scenario: F)
where
    F: FnOnce(Arc<Lab>) -> Fut,
    Fut: std::future::Future<Output = TestResult>,
{
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let lab = match Lab::start(mode).await {
        Ok(lab) => Arc::new(lab),
        Err(e) => panic!("{e}"),
    };
    eprintln!("cluster up in namespaces after {:?}", started.elapsed());
    if let Err(e) = scenario(lab.clone()).await {
        panic!("{e}");
    }
    eprintln!("whole scenario: {:?}", started.elapsed());
}

/// A scenario that cuts the primary off from enough of the cluster that it
/// must fence itself and a replica must take over.
struct PrimaryCut {
    /// Named in the printed measurements.
    name: &'static str,
    partition: Partition,
    /// The primary still reaches a standby that confirms commits, so it
    /// may acknowledge commits until it fences (that standby must then be
    /// the one promoted, holding them).
    commits_until_fenced: bool,
}

/// When a partition was cut: `start` just before it was applied (what
/// fencing deadlines count from), `done` once it was in place (inserts
/// sent before then may still be acknowledged through it).
#[derive(Debug, Clone, Copy)]
struct Cut {
    start: Instant,
    done: Instant,
}

/// Starts the writer and the sampler, lets them run for `settle` and until
/// the writer has committed more than 10 inserts (a fixed pause let a
/// loaded machine write only a few), then applies `partition`: returns
/// them with the moment of the cut.
async fn watch_then_cut(
    lab: &Arc<Lab>,
    partition: &Partition,
    settle: Duration,
) -> TestResult<(Watch, Cut)> {
    let watch = Watch::start(lab);
    tokio::time::sleep(settle).await;
    if let Err(seen) = watch
        .wait_acked(10, Duration::from_secs(30), |_| true)
        .await
    {
        return Err(format!("the writer barely wrote before the cut: {seen}").into());
    }
    let start = Instant::now();
    partition.apply(&lab.net)?;
    let done = Instant::now();
    Ok((watch, Cut { start, done }))
}

/// Keeps `partition` for `hold` more and until the writer has committed
/// more than 20 inserts since the cut (or 30 s more passed: the caller's
/// checks report it), reads etcd as it is then, and heals: returns that
/// view with the moment of the heal.
async fn hold_then_heal(
    lab: &Arc<Lab>,
    watch: &Watch,
    partition: &Partition,
    cut: Instant,
    hold: Duration,
) -> TestResult<(ClusterView, Instant)> {
    tokio::time::sleep(hold).await;
    let _ = watch
        .wait_acked(20, Duration::from_secs(30), |a| a.at > cut)
        .await;
    let during = lab.view().await?;
    partition.heal(&lab.net)?;
    Ok((during, Instant::now()))
}

/// Runs [`primary_failover`] for `scenario` on a fresh lab in `mode`.
async fn run_primary_cut(mode: &str, scenario: PrimaryCut) {
    run_lab(mode, |lab| primary_failover(lab, scenario)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_primary_fences_itself_a_replica_takes_over_and_it_rejoins() {
    run_primary_cut(
        "quorum",
        PrimaryCut {
            name: "primary isolated",
            partition: Partition::Isolate(0),
            commits_until_fenced: false,
        },
    )
    .await;
}

/// The primary loses etcd and one replica, but still reaches the other
/// replica: it cannot be confirmed by every member (failsafe), so it
/// fences; the replica it still reached, which saw its stream end at the
/// fence and holds every commit it confirmed, takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_cut_from_etcd_and_one_replica_fences_and_the_other_takes_over() {
    run_primary_cut(
        "quorum",
        PrimaryCut {
            name: "primary cut from etcd and replica2",
            partition: Partition::Links(vec![(0, Peer::Switch), (0, Peer::Node(2))]),
            commits_until_fenced: true,
        },
    )
    .await;
}

/// Synchronous mode (`FIRST 1`): the isolated primary blocks every commit
/// its synchronous standby cannot confirm, and only a member of the
/// published synchronous set, holding every acknowledged commit, is
/// promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_mode_an_isolated_primary_loses_no_acknowledged_commit() {
    run_primary_cut(
        "sync",
        PrimaryCut {
            name: "sync mode, primary isolated",
            partition: Partition::Isolate(0),
            commits_until_fenced: false,
        },
    )
    .await;
}

async fn primary_failover(lab: Arc<Lab>, scenario: PrimaryCut) -> TestResult {
    let lab = &lab;
    let name = scenario.name;
    // The synchronous set as published (once the primary has) and as
    // PostgreSQL runs it: the new primary must come from the published one.
    let published = wait_for(
        "the primary to publish its synchronous set",
        Duration::from_secs(60),
        || async {
            let standbys = lab.view().await.ok()?.sync?.standbys;
            (!standbys.is_empty()).then_some(standbys)
        },
    )
    .await?;
    let sync_states = lab.sync_states(0).await?;
    let (watch, cut_at) =
        watch_then_cut(lab, &scenario.partition, Duration::from_millis(1500)).await?;
    let cut = cut_at.start;
    let promoted = wait_for(
        "a replica to be promoted after the primary was cut off",
        Duration::from_secs(60),
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
        "the cut-off primary to stop running as a primary",
        Duration::from_secs(30),
        || async { (lab.writable(0).await != Some(true)).then_some(()) },
    )
    .await;
    // Let the writer commit on the new primary for a while (more than 10
    // inserts, or 30 s: checked below), then heal: the old primary comes
    // back as a standby of the new one (its agent rewinds it). The sampler
    // watches throughout.
    let _ = watch
        .wait_acked(10, Duration::from_secs(30), |a| a.node == promoted)
        .await;
    scenario.partition.heal(&lab.net)?;
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
        "[{name}] old primary back as a standby {:?} after healing",
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
        "[{name}] cut -> old primary last seen writable {fenced:?}; cut -> {} promoted {new_first:?}",
        NODES[promoted]
    );
    eprintln!("[{name}] synchronous set published {published:?}, in PostgreSQL {sync_states:?}");
    // The old primary stops serving writes before its lease (TTL) can
    // expire, i.e. before anyone may take over (plus the 50 ms sampling).
    assert!(
        fenced < TTL + Duration::from_millis(100),
        "the cut-off primary ran as a primary {fenced:?} after the cut (lease TTL {TTL:?})"
    );
    assert!(
        fenced < new_first,
        "the new primary ran ({new_first:?}) before the old one stopped ({fenced:?})"
    );
    assert!(
        published.iter().any(|s| s == NODES[promoted]),
        "{} was promoted but is not in the published synchronous set {published:?}",
        NODES[promoted]
    );
    assert!(
        sync_states
            .iter()
            .any(|(n, state)| n == NODES[promoted] && state != "async"),
        "{} was promoted but PostgreSQL did not count it as synchronous: {sync_states:?}",
        NODES[promoted]
    );
    // Inserts the cut-off primary acknowledged that were sent once the
    // partition was in place (judged by when they were sent: an insert
    // acknowledged just before the cut may reach the writer late).
    let late = acks
        .iter()
        .filter(|a| a.node == 0 && a.sent > cut_at.done + Duration::from_millis(100))
        .count();
    if scenario.commits_until_fenced {
        // Its confirming standby made those commits durable: it must be
        // the one that took over (checked by the lost-commit check below).
        eprintln!("[{name}] the cut-off primary acknowledged {late} commits before fencing");
        // It confirmed the primary (failsafe) until the fence; the fenced
        // primary released that promise rather than let it run out.
        let log = std::fs::read_to_string(lab.cluster.layout.agent_log(NODES[promoted]))?;
        assert!(
            log.contains("primary fenced itself: failsafe promise released"),
            "{} was not told the primary fenced:\n{log}",
            NODES[promoted]
        );
    } else {
        // Acknowledged writes after the cut on a primary no standby hears
        // would be lost writes waiting to happen: they must have blocked.
        assert_eq!(late, 0, "the isolated primary acknowledged {late} commits");
    }
    let on_new = acks.iter().filter(|a| a.node == promoted).count();
    assert!(
        on_new > 10,
        "writes did not resume on {}: {on_new}",
        NODES[promoted]
    );
    lab.holds_every_ack(promoted, &acks, "the new primary")
        .await?;
    let leader = lab.view().await?.leader;
    assert_eq!(leader.as_deref(), Some(NODES[promoted]));

    // It catches up with everything the new primary wrote.
    lab.caught_up(0, promoted).await?;
    eprintln!(
        "[{name}] old primary caught up {:?} after healing",
        healed.elapsed()
    );
    lab.all_members_published("the old primary's agent to publish its state again (a new lease)")
        .await?;
    lab.holds_every_ack(0, &acks, "the rejoined old primary")
        .await?;
    let writable = tokio::join!(lab.writable(0), lab.writable(1), lab.writable(2));
    assert_eq!(
        writable,
        (Some(false), Some(promoted == 1), Some(promoted == 2)),
        "one primary, the new one, after the rejoin"
    );
    wait_for(
        "the new primary to stream to both standbys",
        Duration::from_secs(60),
        || async { (lab.streaming_standbys(promoted).await.ok()? == 2).then_some(()) },
    )
    .await?;
    Ok(())
}

/// The primary loses etcd but still reaches both replicas, which still
/// reach etcd. Every member confirms it (failsafe, see ARCHITECTURE.md),
/// so it keeps serving writes without the leader key and nobody takes
/// over; healed, it takes the key back with the same postmaster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_cut_from_etcd_only_keeps_serving_under_failsafe_and_nobody_takes_over() {
    run_lab("quorum", primary_cut_from_etcd).await;
}

async fn primary_cut_from_etcd(lab: Arc<Lab>) -> TestResult {
    let lab = &lab;
    let name = "primary cut from etcd only";
    let partition = Partition::Links(vec![(0, Peer::Switch)]);
    let primary_pid = lab.postmaster_pid(0);
    let (watch, cut) = watch_then_cut(lab, &partition, Duration::from_millis(1500)).await?;
    let cut = cut.start;
    // The lease runs out in etcd: the key is vacant for everyone else.
    wait_for(
        "the leader key to expire in etcd",
        Duration::from_secs(30),
        || async { lab.view().await.ok()?.leader.is_none().then_some(()) },
    )
    .await?;
    let vacant = cut.elapsed();
    // A manual failover now is refused with the reason: the replicas have
    // promised the primary (on failsafe) not to take over.
    let root = lab.cluster.layout.root().display().to_string();
    let switch = lab.net.switch_namespace().to_string();
    let refused = tokio::task::spawn_blocking(move || {
        pgkeel_in(&switch, &["failover", "--dir", &root, "--to", "replica1"])
            .err()
            .map(|e| e.to_string())
    })
    .await?
    .ok_or("a manual failover was accepted while the primary ran on failsafe")?;
    assert!(
        refused.contains("replica1 has promised primary not to take over"),
        "{refused}"
    );
    // Two more TTLs with the key vacant: time for a wrong takeover.
    let (during, healed) = hold_then_heal(lab, &watch, &partition, cut, TTL * 2).await?;
    wait_for(
        "the primary to take the leader key back",
        Duration::from_secs(60),
        || async { (lab.view().await.ok()?.leader.as_deref() == Some("primary")).then_some(()) },
    )
    .await?;
    let retaken = healed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acks, samples) = watch.finish().await?;
    eprintln!("[{name}] cut -> leader key vacant {vacant:?}; heal -> key taken back {retaken:?}");

    assert_eq!(during.leader, None, "a replica took the key during the cut");
    assert_eq!(
        lab.postmaster_pid(0),
        primary_pid,
        "the primary was stopped (fenced) along the way"
    );
    assert_primary_undisturbed(name, &acks, &samples, cut, healed);
    lab.all_members_published("the primary's agent to publish its state again (a new lease)")
        .await?;
    for replica in 1..3 {
        lab.caught_up(replica, 0).await?;
        lab.holds_every_ack(replica, &acks, "a replica").await?;
    }
    wait_for(
        "the primary to stream to both standbys",
        Duration::from_secs(60),
        || async { (lab.streaming_standbys(0).await.ok()? == 2).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_replica_causes_no_failover_and_catches_up_when_healed() {
    run_lab("quorum", |lab| {
        replica_cut(lab, "replica2 isolated", Partition::Isolate(2))
    })
    .await;
}

/// replica2 loses the primary but still reaches etcd and replica1: its WAL
/// stream stops, yet the leader key is held, so it must not be promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_from_the_primary_only_is_not_promoted_and_catches_up() {
    run_lab("quorum", |lab| {
        replica_cut(
            lab,
            "replica2 cut from the primary",
            Partition::Links(vec![(2, Peer::Node(0))]),
        )
    })
    .await;
}

async fn replica_cut(lab: Arc<Lab>, name: &str, partition: Partition) -> TestResult {
    let lab = &lab;
    let primary_pid = lab.postmaster_pid(0);
    let (watch, cut) = watch_then_cut(lab, &partition, Duration::from_millis(1000)).await?;
    let cut = cut.start;
    // Its WAL stream stops once `wal_receiver_timeout` notices.
    wait_for(
        "replica2's WAL stream to stop",
        Duration::from_secs(60),
        || async { (!lab.receiving(2).await.ok()?).then_some(()) },
    )
    .await?;
    let stopped = cut.elapsed();
    // Well past a lease TTL with no stream, and at least two TTLs cut:
    // time for any wrong failover to happen.
    let hold = (TTL + Duration::from_secs(1)).max((TTL * 2).saturating_sub(stopped));
    let (during, healed) = hold_then_heal(lab, &watch, &partition, cut, hold).await?;
    wait_for(
        "replica2 to stream again",
        Duration::from_secs(60),
        || async { lab.receiving(2).await.ok()?.then_some(()) },
    )
    .await?;
    let streaming = healed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acks, samples) = watch.finish().await?;
    eprintln!(
        "[{name}] cut -> replica2's stream stopped {stopped:?}; heal -> streaming again {streaming:?}"
    );

    assert_eq!(
        during.leader.as_deref(),
        Some("primary"),
        "the leader changed"
    );
    if partition.reaches_etcd(2) {
        // Its agent saw the stream stop and published it, with the key
        // held by the primary: not a reason to take over.
        let member = during
            .members
            .get("replica2")
            .ok_or("replica2 reaches etcd yet its member key is gone")?;
        assert!(
            member.role == "replica" && !member.streaming,
            "replica2 published {member:?} while cut off from the primary"
        );
    }
    assert_eq!(
        lab.postmaster_pid(0),
        primary_pid,
        "the primary was restarted"
    );
    assert_primary_undisturbed(name, &acks, &samples, cut, healed);

    // Healed: the replica replays everything the primary wrote.
    let took = {
        let t = Instant::now();
        lab.caught_up(2, 0).await?;
        t.elapsed()
    };
    eprintln!("[{name}] replica2 caught up {took:?} after streaming again");
    // Its lease may have expired while it was cut off: its agent must take
    // a new one and publish its state again, or it could never lead nor be
    // seen.
    lab.all_members_published("replica2's agent to publish its state (a live lease)")
        .await?;
    lab.holds_every_ack(2, &acks, "the healed replica").await?;
    wait_for(
        "the primary to stream to both standbys",
        Duration::from_secs(60),
        || async { (lab.streaming_standbys(0).await.ok()? == 2).then_some(()) },
    )
    .await?;
    Ok(())
}

/// A partition that must not touch the primary: it ran as the only primary
/// in every sample and kept acknowledging writes throughout (none landed
/// elsewhere; no gap of a lease TTL).
fn assert_primary_undisturbed(
    name: &str,
    acks: &[Ack],
    samples: &[Sample],
    cut: Instant,
    healed: Instant,
) {
    assert_never_two_primaries(samples, cut);
    for s in samples {
        let into = s.at.saturating_duration_since(cut);
        assert_eq!(
            s.writable[0],
            Some(true),
            "the primary stopped running as one {into:?} into the scenario"
        );
        assert!(
            s.writable[1..].iter().all(|w| *w != Some(true)),
            "a replica was promoted {into:?} into the scenario"
        );
    }
    let during = acks.iter().filter(|a| a.at > cut && a.at < healed).count();
    assert!(
        during > 20,
        "the primary barely took writes during the cut: {during}"
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
        "[{name}] {during} writes acknowledged during the cut; longest gap between writes {gap:?}"
    );
    assert!(gap < TTL, "writes stalled for {gap:?}");
}

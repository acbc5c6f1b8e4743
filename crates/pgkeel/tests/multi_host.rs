//! Multi-host bootstrap with nothing shared between hosts: each node in
//! its own network namespace with its own data root, its own copy of the
//! config and of the secrets `pgkeel init --node ...` wrote, and its own
//! etcd member (`pgkeel agent --with-etcd`, a 3-member quorum). The three
//! agents start at the same moment; the first to claim the cluster runs
//! initdb and the others clone from it.
//!
//! The test observes each node over its Unix socket (in that host's data
//! root) and reads etcd from the lab's switch namespace.
//!
//! Needs root and iproute2 (`ip netns`); fails (does not skip) without.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{TestResult, text};
use pgkeel_cluster::Cluster;
use pgkeel_core::ClusterIdentity;
use pgkeel_dcs::ClusterView;
use pgkeel_pg::control::read_system_identifier;
use pgkeel_testkit::netlab::{NetLab, NsProcess, command_in, run_in};
use pgkeel_testkit::{ClusterGuard, TestDir, free_port_block};
use tokio::sync::Mutex;

/// One lab at a time: three agents, three etcd members and three
/// PostgreSQL servers on two cores.
static SERIAL: Mutex<()> = Mutex::const_new(());

const NODES: [&str; 3] = ["pg1", "pg2", "pg3"];

fn pgkeel_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgkeel"))
}

/// Three hosts. Fields drop in order: agents (each stops its etcd member),
/// then the postmasters by PID, then the namespaces, then the directory.
struct Hosts {
    agents: Vec<Option<NsProcess>>,
    _guards: Vec<ClusterGuard>,
    net: NetLab,
    /// `host-<i>/`: that host's config, secrets and data root.
    homes: Vec<PathBuf>,
    /// The shared config as an operator's host reads it (with its secrets).
    config: pgkeel_core::Config,
    dir: TestDir,
}

impl Hosts {
    /// Writes the config with `pgkeel init --node ...` and gives each
    /// host its own copy of it and of the secrets.
    fn new() -> TestResult<Hosts> {
        let net = NetLab::new(3).map_err(|e| format!("{e}"))?;
        let dir = TestDir::new()?;
        let base = free_port_block(3);
        let etcd = free_port_block(2);
        let origin = dir.path().join("origin");
        std::fs::create_dir_all(&origin)?;
        let mut args: Vec<String> = vec!["init".into(), "-o".into()];
        args.push(origin.join("pgkeel.toml").display().to_string());
        args.extend(["--name".into(), "lab".into()]);
        for (i, name) in NODES.iter().enumerate() {
            args.push("--node".into());
            args.push(format!("{name}={}:{}", net.node(i)?.addr, base + i as u16));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = common::pgkeel(dir.path(), &args, &[]);
        if !out.status.success() {
            return Err(format!("pgkeel init: {}", text(&out)).into());
        }
        // Free ports for etcd (the default 2379/2380 would do in private
        // namespaces, but no test hard-codes a port) and a small footprint.
        let config = std::fs::read_to_string(origin.join("pgkeel.toml"))?
            .replace("client_port = 2379", &format!("client_port = {etcd}"))
            .replace("peer_port = 2380", &format!("peer_port = {}", etcd + 1))
            + "[tuning]\nmemory = \"256MB\"\nmax_connections = 50\n";
        std::fs::write(origin.join("pgkeel.toml"), &config)?;
        let mut homes = vec![];
        let mut guards = vec![];
        for i in 0..NODES.len() {
            let home = dir.path().join(format!("host-{i}"));
            std::fs::create_dir_all(&home)?;
            std::fs::write(home.join("pgkeel.toml"), &config)?;
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(origin.join("secrets"))
                .arg(home.join("secrets"))
                .status()?;
            if !status.success() {
                return Err("cp -a secrets".into());
            }
            guards.push(ClusterGuard::new(&home.join("data")));
            homes.push(home);
        }
        let mut shared = pgkeel_core::config::load(&pgkeel_core::config::ConfigSources {
            file: Some(("pgkeel.toml".into(), config.clone())),
            ..Default::default()
        })?;
        shared.anchor_secrets_dir(&origin);
        Ok(Hosts {
            agents: vec![None, None, None],
            _guards: guards,
            net,
            homes,
            config: shared,
            dir,
        })
    }

    /// `pgkeel agent --with-etcd` of node `i` in its namespace, on its
    /// host's config and data root.
    fn start_agent(&mut self, i: usize) -> TestResult {
        let home = &self.homes[i];
        let config = home.join("pgkeel.toml").display().to_string();
        let root = home.join("data").display().to_string();
        let log = home.join(format!("agent-{}.log", NODES[i]));
        self.agents[i] = Some(NsProcess::spawn(
            &self.net.node(i)?.namespace,
            &pgkeel_exe(),
            &[
                "agent",
                "--config",
                &config,
                "--dir",
                &root,
                "--node",
                NODES[i],
                "--with-etcd",
            ],
            &log,
        )?);
        Ok(())
    }

    fn root(&self, i: usize) -> PathBuf {
        self.homes[i].join("data")
    }

    /// The cluster as host `i` stored it (written by its agent).
    fn cluster(&self, i: usize) -> TestResult<Cluster> {
        Ok(Cluster::open(&self.root(i))?)
    }

    /// The cluster's keys, read from the switch namespace over TLS as
    /// the cluster's etcd user.
    async fn view(&self) -> TestResult<ClusterView> {
        let ns = self.net.switch_namespace().to_string();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            run_in(&ns, move || -> TestResult<ClusterView> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let layout = Cluster::layout_of(&config)?;
                    let dcs = pgkeel_agent::orchestrate::dcs_for(&config, &layout).await?;
                    Ok(dcs.view().await?)
                })
            })?
        })
        .await?
    }

    /// The etcd member that leads etcd, read from the switch namespace.
    async fn etcd_leader(&self) -> TestResult<Option<String>> {
        let ns = self.net.switch_namespace().to_string();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            run_in(&ns, move || -> TestResult<Option<String>> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let layout = Cluster::layout_of(&config)?;
                    let dcs = pgkeel_agent::orchestrate::dcs_for(&config, &layout).await?;
                    Ok(dcs.etcd_leader().await?)
                })
            })?
        })
        .await?
    }

    /// Hands etcd's leadership to `member`, from the switch namespace.
    async fn move_etcd_leader_to(&self, member: &'static str) -> TestResult {
        let ns = self.net.switch_namespace().to_string();
        let config = self.config.clone();
        tokio::task::spawn_blocking(move || {
            run_in(&ns, move || -> TestResult {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let layout = Cluster::layout_of(&config)?;
                    let dcs = pgkeel_agent::orchestrate::dcs_for(&config, &layout).await?;
                    // It may lead already: then the transfer is refused.
                    let _ = dcs.move_etcd_leadership_to(member).await;
                    Ok(())
                })
            })?
        })
        .await?
    }

    /// A superuser session on node `i` over its socket.
    async fn connect(&self, i: usize) -> TestResult<pgkeel_pg::probe::NodeConn> {
        let cluster = self.cluster(i)?;
        let node = cluster.node(NODES[i])?.clone();
        Ok(tokio::time::timeout(Duration::from_secs(5), cluster.connect(&node)).await??)
    }

    async fn number(&self, i: usize, query: &str) -> TestResult<i64> {
        let conn = self.connect(i).await?;
        Ok(conn.client().query_one(query, &[]).await?.get(0))
    }

    /// Waits for a leader whose PostgreSQL has both others streaming.
    async fn ready(&self) -> TestResult<usize> {
        let start = Instant::now();
        loop {
            if let Ok(view) = self.view().await
                && let Some(leader) = view.leader.as_deref()
                && view.members.len() == NODES.len()
                && let Some(i) = NODES.iter().position(|n| *n == leader)
                && self
                    .number(
                        i,
                        "SELECT count(*) FROM pg_stat_replication \
                         WHERE state = 'streaming' AND application_name IN ('pg1', 'pg2', 'pg3')",
                    )
                    .await
                    .ok()
                    == Some(2)
            {
                return Ok(i);
            }
            if start.elapsed() > Duration::from_secs(90) {
                return Err(format!(
                    "no ready cluster after 90 s; last view: {:?}",
                    self.view().await
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `pgkeel ARGS --config origin/pgkeel.toml` from the lab's switch
    /// namespace: a host with the config and the secrets but no node (an
    /// operator's machine), outside `access.networks`.
    fn operator(&self, args: &[&str]) -> TestResult<String> {
        let config = self.dir.path().join("origin/pgkeel.toml");
        let out = command_in(self.net.switch_namespace(), pgkeel_exe())
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!("pgkeel {}: {}", args.join(" "), text(&out)).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Waits until agent `i` has exited, returning its log.
    async fn exited(&mut self, i: usize, within: Duration) -> TestResult<String> {
        let start = Instant::now();
        while self.agents[i].as_mut().is_some_and(NsProcess::running) {
            if start.elapsed() > within {
                return Err(format!("agent {} still runs after {within:?}", NODES[i]).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.homes[i].join(format!("agent-{}.log", NODES[i]));
        Ok(std::fs::read_to_string(log)?)
    }
}

/// Which entries a directory holds.
fn entries(dir: &Path) -> TestResult<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().to_string()))
        .collect::<TestResult<_>>()?;
    names.sort();
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_bootstrap_one_cluster_and_refuse_foreign_data() -> TestResult {
    let _serial = SERIAL.lock().await;
    let mut hosts = Hosts::new()?;
    let result = scenario(&mut hosts).await;
    if let Err(e) = result {
        panic!("{e} (logs under {})", hosts.dir.path().display());
    }
    Ok(())
}

async fn scenario(hosts: &mut Hosts) -> TestResult {
    // All three at the same moment.
    for i in 0..NODES.len() {
        hosts.start_agent(i)?;
    }
    let leader = hosts.ready().await?;
    let view = hosts.view().await?;
    let identity: ClusterIdentity = view.initialize.clone().ok_or("no initialize key")?;
    assert!(identity.done, "{identity:?}");
    assert_eq!(
        identity.node, NODES[leader],
        "the initialiser leads the new cluster"
    );
    let system_id = identity.system_id.ok_or("no system identifier recorded")?;
    for (i, name) in NODES.iter().enumerate() {
        let data = hosts.cluster(i)?.layout.data_dir(name);
        assert_eq!(
            read_system_identifier(&data)?,
            Some(system_id),
            "{name} holds another cluster"
        );
        // Nothing shared: each host's root holds its own node only.
        assert_eq!(entries(&hosts.root(i).join("nodes"))?, [*name]);
    }

    // etcd's own leader moves off the primary's host (a crash of both
    // would delay the failover by a lease TTL): put it there, see it go.
    hosts.move_etcd_leader_to(NODES[leader]).await?;
    let start = Instant::now();
    loop {
        if hosts
            .etcd_leader()
            .await?
            .as_deref()
            .is_some_and(|l| l != NODES[leader])
        {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err("etcd's leader stayed on the primary's host".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A row written on the primary reaches both replicas.
    let conn = hosts.connect(leader).await?;
    conn.client()
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('across hosts')")
        .await?;
    for i in (0..NODES.len()).filter(|i| *i != leader) {
        let start = Instant::now();
        while hosts
            .number(i, "SELECT count(*) FROM t WHERE v = 'across hosts'")
            .await
            .ok()
            != Some(1)
        {
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("{} never replayed the row", NODES[i]).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Commands from a host with the config and the secrets only.
    let leader = operator_commands(hosts, leader).await?;
    proxy_over_tls_etcd(hosts).await?;
    client_pool_survives_a_host_down(hosts, leader).await?;

    // A replica whose data directory is replaced by another cluster's is
    // refused when its agent starts again, and its data is left alone.
    let victim = (leader + 1) % NODES.len();
    if let Some(mut agent) = hosts.agents[victim].take() {
        agent.stop(nix::sys::signal::Signal::SIGTERM);
    }

    // An etcd that refuses the credentials stops the agent with the fix.
    let password = hosts.homes[victim].join("secrets/etcd.password");
    let good = std::fs::read_to_string(&password)?;
    std::fs::write(&password, "not-the-password")?;
    hosts.start_agent(victim)?;
    let log = hosts.exited(victim, Duration::from_secs(30)).await?;
    for expected in ["refused user `pgkeel`", "secrets/etcd.password"] {
        assert!(
            log.contains(expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
    std::fs::write(&password, good)?;
    std::fs::remove_file(hosts.homes[victim].join(format!("agent-{}.log", NODES[victim])))?;

    let cluster = hosts.cluster(victim)?;
    let node = cluster.node(NODES[victim])?.clone();
    let data = cluster.layout.data_dir(NODES[victim]);
    pgkeel_pg::pgctl::stop(
        &cluster.runner,
        NODES[victim],
        &data,
        pgkeel_pg::pgctl::StopMode::Fast,
    )
    .await?;
    std::fs::rename(&data, data.with_extension("theirs"))?;
    cluster.initdb_new(&node).await?;
    cluster.move_initdb_into_place(&node)?;
    let foreign = read_system_identifier(&data)?.ok_or("no identifier")?;
    assert_ne!(foreign, system_id);
    hosts.start_agent(victim)?;
    let log = hosts.exited(victim, Duration::from_secs(30)).await?;
    for expected in [
        "belongs to another cluster".to_string(),
        foreign.to_string(),
        system_id.to_string(),
        "Nothing was changed".to_string(),
    ] {
        assert!(
            log.contains(&expected),
            "{expected:?} not in the log:\n{log}"
        );
    }
    assert_eq!(read_system_identifier(&data)?, Some(foreign));
    assert!(pgkeel_pg::pgctl::running_pid(&data).is_none());
    Ok(())
}

/// A tiny deterministic PRNG (xorshift): a failing round reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_killed_anywhere_in_the_bootstrap_resume_into_one_cluster() -> TestResult {
    let _serial = SERIAL.lock().await;
    for round in 1..=3u64 {
        let mut hosts = Hosts::new()?;
        let result = kill_round(&mut hosts, round).await;
        if let Err(e) = result {
            panic!(
                "round {round}: {e} (logs under {})",
                hosts.dir.path().display()
            );
        }
    }
    Ok(())
}

/// Starts the three agents, then SIGKILLs one at a random moment of the
/// first seconds (initdb, recording, cloning...) and starts it again,
/// four times; the cluster must still come up as one.
async fn kill_round(hosts: &mut Hosts, seed: u64) -> TestResult {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    for i in 0..NODES.len() {
        hosts.start_agent(i)?;
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        let i = rng.below(3) as usize;
        if let Some(mut agent) = hosts.agents[i].take() {
            agent.stop(nix::sys::signal::Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(rng.below(500))).await;
        hosts.start_agent(i)?;
    }
    hosts.ready().await?;
    let view = hosts.view().await?;
    let identity = view.initialize.ok_or("no initialize key")?;
    let system_id = identity.system_id.ok_or("no system identifier")?;
    assert!(identity.done, "{identity:?}");
    for (i, name) in NODES.iter().enumerate() {
        let layout = hosts.cluster(i)?.layout;
        assert_eq!(
            read_system_identifier(&layout.data_dir(name))?,
            Some(system_id),
            "{name}: another cluster"
        );
        for leftover in [layout.partial_dir(name), layout.initdb_dir(name)] {
            assert!(!leftover.exists(), "{} left behind", leftover.display());
        }
    }
    Ok(())
}

/// `pgkeel proxy --config` on a member host follows the leader key through
/// etcd's TLS gateway with a token, and routes a write to the primary.
async fn proxy_over_tls_etcd(hosts: &Hosts) -> TestResult {
    let port = free_port_block(2);
    let addr = hosts.net.node(0)?.addr.to_string();
    let ns = hosts.net.node(0)?.namespace.clone();
    let log = hosts.dir.path().join("proxy.log");
    let config = hosts
        .dir
        .path()
        .join("origin/pgkeel.toml")
        .display()
        .to_string();
    let listen = format!("{addr}:{port}");
    let admin = format!("{addr}:{}", port + 1);
    let _proxy = NsProcess::spawn(
        &ns,
        &pgkeel_exe(),
        &[
            "proxy",
            "--config",
            &config,
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
        ],
        &log,
    )?;
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !text.contains("cannot follow the leader key") && !text.contains("TLS material"),
            "{text}"
        );
        if text.contains("leader changed") && text.contains("Node(") {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("the proxy never learned the leader:\n{text}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let password = std::fs::read_to_string(hosts.dir.path().join("origin/secrets/app.password"))?;
    let url = format!("postgresql://app:{}@{listen}/app", password.trim());
    let written = tokio::task::spawn_blocking(move || {
        run_in(&ns, move || -> TestResult<i64> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                client
                    .batch_execute(
                        "CREATE TABLE through_proxy (v int); INSERT INTO through_proxy VALUES (1)",
                    )
                    .await?;
                Ok(client
                    .query_one("SELECT count(*) FROM through_proxy", &[])
                    .await?
                    .get(0))
            })
        })?
    })
    .await??;
    assert_eq!(written, 1);
    Ok(())
}

/// The client library configured from the shared config alone (nodes,
/// agents, the application password from the secrets) writes and reads,
/// also while a replica's host is cut off.
async fn client_pool_survives_a_host_down(hosts: &Hosts, leader: usize) -> TestResult {
    let client_host = (0..NODES.len())
        .find(|i| *i != leader)
        .ok_or("no replica")?;
    let down = (0..NODES.len())
        .find(|i| *i != leader && *i != client_host)
        .ok_or("no second replica")?;
    let ns = hosts.net.node(client_host)?.namespace.clone();
    let config = hosts.dir.path().join("origin/pgkeel.toml");
    let in_ns = |ns: String, config: PathBuf, what: &'static str| {
        tokio::task::spawn_blocking(move || {
            run_in(&ns, move || -> TestResult<i64> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let pool = pgkeel_client::ReplicatedPool::from_pgkeel_config(&config).await?;
                    let tx = pool.write().await?;
                    tx.batch_execute("CREATE TABLE IF NOT EXISTS from_pool (what text)")
                        .await?;
                    tx.execute("INSERT INTO from_pool VALUES ($1)", &[&what])
                        .await?;
                    let token = tx.commit().await?;
                    let mut read = pool.read_after(&token).await?;
                    Ok(read
                        .query_one("SELECT count(*) FROM from_pool WHERE what = $1", &[&what])
                        .await?
                        .get(0))
                })
            })?
        })
    };
    assert_eq!(in_ns(ns.clone(), config.clone(), "all up").await??, 1);
    hosts.net.isolate(down).map_err(|e| format!("{e}"))?;
    let result = in_ns(ns, config, "one host down").await;
    hosts.net.heal(down).map_err(|e| format!("{e}"))?;
    assert_eq!(result??, 1);
    hosts.ready().await?;
    Ok(())
}

/// `status`, `url`, `pause`/`resume` and `switchover` from the operator's
/// host; returns the new leader.
async fn operator_commands(hosts: &Hosts, leader: usize) -> TestResult<usize> {
    let status: serde_json::Value = serde_json::from_str(&hosts.operator(&["status", "--json"])?)?;
    assert_eq!(status["leader"], NODES[leader], "{status}");
    let nodes = status["nodes"].as_array().ok_or("no nodes")?;
    assert_eq!(nodes.len(), 3, "{status}");
    for (i, node) in nodes.iter().enumerate() {
        let role = if i == leader { "primary" } else { "replica" };
        assert_eq!(node["role"], role, "{status}");
        assert_eq!(node["running"], true, "{status}");
        assert!(node["error"].is_null(), "{status}");
        if i != leader {
            assert_eq!(node["wal_receiver"], "streaming", "{status}");
            assert!(node["sync_state"].is_string(), "{status}");
        }
    }
    assert_eq!(
        status["slots"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    let url = hosts.operator(&["url", "--replica"])?;
    let replica_addr = |i: usize| -> TestResult<String> { Ok(hosts.net.node(i)?.addr.to_string()) };
    assert!(
        (0..3)
            .filter(|i| *i != leader)
            .any(|i| replica_addr(i).is_ok_and(|a| url.contains(&a))),
        "{url}"
    );

    hosts.operator(&["pause"])?;
    assert!(hosts.view().await?.config.paused);
    hosts.operator(&["resume"])?;
    assert!(!hosts.view().await?.config.paused);

    let target = (leader + 2) % NODES.len();
    let said = hosts.operator(&["switchover", "--to", NODES[target]])?;
    assert!(said.contains(&format!("-> {}", NODES[target])), "{said}");
    let view = hosts.view().await?;
    assert_eq!(view.leader.as_deref(), Some(NODES[target]));
    hosts.ready().await
}

#[test]
fn an_agent_for_a_node_not_in_the_config_creates_nothing() -> TestResult {
    let dir = TestDir::new()?;
    let out = common::pgkeel(
        dir.path(),
        &[
            "init",
            "--node",
            "pg1=127.0.0.1:15432",
            "--node",
            "pg2=127.0.0.2:15432",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let root = dir.path().join("data");
    let root_arg = root.display().to_string();
    let out = common::pgkeel(
        dir.path(),
        &[
            "agent",
            "--config",
            "pgkeel.toml",
            "--dir",
            &root_arg,
            "--node",
            "pg7",
        ],
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no node named `pg7`") && stderr.contains("pg1, pg2"),
        "{}",
        text(&out)
    );
    assert!(!root.exists(), "the agent created {}", root.display());
    Ok(())
}

#[test]
fn missing_or_world_readable_secrets_stop_the_agent_before_anything_is_created() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new()?;
    let out = common::pgkeel(
        dir.path(),
        &[
            "init",
            "--node",
            "pg1=127.0.0.1:15432",
            "--node",
            "pg2=127.0.0.2:15432",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let root = dir.path().join("data");
    let root_arg = root.display().to_string();
    let agent = || {
        common::pgkeel(
            dir.path(),
            &[
                "agent",
                "--config",
                "pgkeel.toml",
                "--dir",
                &root_arg,
                "--node",
                "pg1",
            ],
            &[],
        )
    };
    let secret = dir.path().join("secrets/superuser.password");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
    let out = agent();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("superuser.password")
            && stderr.contains("readable by other users")
            && stderr.contains("chmod 600"),
        "{}",
        text(&out)
    );
    assert!(!root.exists(), "the agent created {}", root.display());

    std::fs::remove_file(&secret)?;
    let out = agent();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("superuser.password") && stderr.contains("is missing"),
        "{}",
        text(&out)
    );
    assert!(!root.exists(), "the agent created {}", root.display());
    Ok(())
}

#[test]
fn init_refuses_two_nodes_on_one_address_and_port_writing_nothing() -> TestResult {
    let dir = TestDir::new()?;
    let cwd = dir.path().join("empty");
    std::fs::create_dir(&cwd)?;
    let out = common::pgkeel(
        &cwd,
        &[
            "init",
            "--node",
            "pg1=10.0.0.11",
            "--node",
            "pg2=10.0.0.11:5432",
        ],
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("both use 10.0.0.11:5432"),
        "{}",
        text(&out)
    );
    assert_eq!(entries(&cwd)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn init_writes_the_config_and_private_secrets() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new()?;
    let out = common::pgkeel(
        dir.path(),
        &[
            "init",
            "-o",
            "etc/pgkeel.toml",
            "--node",
            "pg1=10.0.0.11",
            "--node",
            "pg2=10.0.0.12",
            "--node",
            "pg3=10.0.0.13",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(dir.path().join("etc/pgkeel.toml"))?;
    assert!(
        config.contains("members = [\"pg1\", \"pg2\", \"pg3\"]"),
        "{config}"
    );
    let secrets = dir.path().join("etc/secrets");
    assert_eq!(
        std::fs::metadata(&secrets)?.permissions().mode() & 0o777,
        0o700
    );
    for name in pgkeel_cluster::skeleton::SECRET_FILES {
        let meta = std::fs::metadata(secrets.join(name))?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert!(meta.len() >= 32, "{name}");
    }
    // Refuses to overwrite without --force.
    let again = common::pgkeel(
        dir.path(),
        &["init", "-o", "etc/pgkeel.toml", "--node", "pg1=10.0.0.11"],
        &[],
    );
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
    Ok(())
}

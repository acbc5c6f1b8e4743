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
mod hostlab;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TestResult;
use hostlab::{Hosts, NODES, SERIAL, entries, pgkeel_exe};
use pgkeel_core::ClusterIdentity;
use pgkeel_pg::control::read_system_identifier;
use pgkeel_testkit::free_port_block;
use pgkeel_testkit::netlab::NsProcess;
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
    let written: i64 = Hosts::in_namespace(&ns, move || async move {
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
    .await?;
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
    let in_ns = |ns: String, config: PathBuf, what: &'static str| async move {
        Hosts::in_namespace(&ns, move || async move {
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
                .get::<_, i64>(0))
        })
        .await
    };
    assert_eq!(in_ns(ns.clone(), config.clone(), "all up").await?, 1);
    hosts.net.isolate(down).map_err(|e| format!("{e}"))?;
    let result = in_ns(ns, config, "one host down").await;
    hosts.net.heal(down).map_err(|e| format!("{e}"))?;
    assert_eq!(result?, 1);
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

//! Changing the members of a running multi-host cluster: a node added to
//! the config on every host joins as the first ones did (the agents,
//! restarted one at a time with the new config, let it replicate and give
//! it a slot; its own agent clones it), and a node taken out of the config
//! is finished off by `pgkeel remove`: its slot and its keys are gone and
//! nobody names it a synchronous standby.
//!
//! Needs root and iproute2 (`ip netns`); fails (does not skip) without.

mod common;
mod hostlab;

use std::time::{Duration, Instant};

use common::TestResult;
use hostlab::{Hosts, NODES, SERIAL};
use pgkeel_testkit::netlab::command_in;

/// The added node.
const NEW: &str = "pg4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_to_the_config_joins_and_a_removed_one_leaves_nothing() -> TestResult {
    let _serial = SERIAL.lock().await;
    let mut hosts = Hosts::with_spare(1)?;
    let result = scenario(&mut hosts).await;
    if let Err(e) = result {
        panic!("{e} (logs under {})", hosts.dir.path().display());
    }
    Ok(())
}

/// The config every host runs with, with or without the new node.
fn config_text(hosts: &Hosts, with_new: bool) -> TestResult<String> {
    let base = std::fs::read_to_string(hosts.homes[0].join("pgkeel.toml"))?;
    let base = match base.find(&format!("[[nodes]]\nname = \"{NEW}\"")) {
        Some(at) => base[..at].to_string(),
        None => base,
    };
    if !with_new {
        return Ok(base);
    }
    let addr = hosts.net.node(3)?.addr;
    Ok(format!(
        "{base}[[nodes]]\nname = \"{NEW}\"\nhost = \"{addr}\"\nport = {}\n",
        hosts.base + 3
    )
    .replace(
        "\"127.0.0.1/32\"]",
        &format!("\"127.0.0.1/32\", \"{addr}/32\"]"),
    ))
}

/// Writes `text` as the config of every host (and the operator's).
fn write_config(hosts: &Hosts, text: &str) -> TestResult {
    for home in &hosts.homes {
        std::fs::write(home.join("pgkeel.toml"), text)?;
    }
    std::fs::write(hosts.dir.path().join("origin/pgkeel.toml"), text)?;
    Ok(())
}

/// Restarts the first three agents one at a time, each back in etcd
/// before the next stops (PostgreSQL keeps running meanwhile).
async fn rolling_restart(hosts: &mut Hosts) -> TestResult {
    for (i, name) in NODES.iter().enumerate() {
        if let Some(mut agent) = hosts.agents[i].take() {
            agent.stop(nix::sys::signal::Signal::SIGTERM);
        }
        hosts.start_agent(i)?;
        let start = Instant::now();
        while !hosts
            .view()
            .await
            .is_ok_and(|v| v.members.contains_key(*name) && v.leader.is_some())
        {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("{name}'s agent did not come back").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The number `query` yields on the current leader.
async fn on_leader(hosts: &Hosts, query: &str) -> TestResult<i64> {
    let leader = hosts.view().await?.leader.ok_or("no leader")?;
    let i = NODES
        .iter()
        .position(|n| *n == leader)
        .ok_or("the new node leads")?;
    hosts.number(i, query).await
}

/// `pgkeel ARGS --config origin/pgkeel.toml` on host 0 (in
/// `access.networks`, so it may reach the primary over SQL).
fn on_host0(hosts: &Hosts, args: &[&str]) -> TestResult<std::process::Output> {
    Ok(
        command_in(&hosts.net.node(0)?.namespace, hostlab::pgkeel_exe())
            .args(args)
            .arg("--config")
            .arg(hosts.dir.path().join("origin/pgkeel.toml"))
            .stdin(std::process::Stdio::null())
            .output()?,
    )
}

async fn scenario(hosts: &mut Hosts) -> TestResult {
    for i in 0..NODES.len() {
        hosts.start_agent(i)?;
    }
    hosts.ready().await?;

    // Add pg4: the config on every host, the agents restarted, then its
    // own agent on its own host (not an etcd member: no --with-etcd).
    let with_new = config_text(hosts, true)?;
    write_config(hosts, &with_new)?;
    rolling_restart(hosts).await?;
    let home = hosts.dir.path().join("host-3");
    std::fs::create_dir_all(&home)?;
    std::fs::write(home.join("pgkeel.toml"), &with_new)?;
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(hosts.dir.path().join("origin/secrets"))
        .arg(home.join("secrets"))
        .status()?;
    if !copied.success() {
        return Err("cp -a secrets".into());
    }
    hosts
        .guards
        .push(pgkeel_testkit::ClusterGuard::new(&home.join("data")));
    let agent = hosts.spawn_agent(3, &home, NEW, &["--stop-postgres"])?;
    hosts.agents.push(Some(agent));
    let streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' \
                     AND application_name IN ('pg1', 'pg2', 'pg3', 'pg4')";
    let start = Instant::now();
    while on_leader(hosts, streaming).await.ok() != Some(3) {
        if start.elapsed() > Duration::from_secs(90) {
            return Err(format!("{NEW} never streamed from the leader").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slot = format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{NEW}'");
    assert_eq!(on_leader(hosts, &slot).await?, 1);

    // Remove it: refused while the config names it, then its agent and
    // PostgreSQL stop, the config drops it, the agents restart.
    let out = on_host0(hosts, &["remove", NEW])?;
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("still a [[nodes]] entry"),
        "{}",
        common::text(&out)
    );
    // Its agent runs with --stop-postgres: stopping it stops PostgreSQL.
    if let Some(mut agent) = hosts.agents[3].take() {
        agent.stop(nix::sys::signal::Signal::SIGTERM);
    }
    let cluster = pgkeel_cluster::Cluster::open(&home.join("data"))?;
    assert!(
        pgkeel_pg::pgctl::running_pid(&cluster.layout.data_dir(NEW)).is_none(),
        "{NEW}'s PostgreSQL outlived its agent started with --stop-postgres"
    );
    let without = config_text(hosts, false)?;
    write_config(hosts, &without)?;
    rolling_restart(hosts).await?;
    let out = on_host0(hosts, &["remove", NEW])?;
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(on_leader(hosts, &slot).await?, 0, "its slot is gone");
    let view = hosts.view().await?;
    assert!(!view.members.contains_key(NEW), "{:?}", view.members);
    let start = Instant::now();
    loop {
        let names = on_leader_text(hosts, "SHOW synchronous_standby_names").await?;
        let published = hosts
            .view()
            .await?
            .sync
            .map(|s| s.standbys)
            .unwrap_or_default();
        if !names.contains(NEW) && !published.iter().any(|n| n == NEW) {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{NEW} is still named a synchronous standby: {names} / {published:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hosts.ready().await?;
    Ok(())
}

/// The text `query` yields on the current leader.
async fn on_leader_text(hosts: &Hosts, query: &str) -> TestResult<String> {
    let leader = hosts.view().await?.leader.ok_or("no leader")?;
    let i = NODES
        .iter()
        .position(|n| *n == leader)
        .ok_or("the removed node leads")?;
    let conn = hosts.connect(i).await?;
    Ok(conn.client().query_one(query, &[]).await?.get(0))
}

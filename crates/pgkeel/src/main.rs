//! The `pgkeel` binary: a thin front over `pgkeel-cluster`.

#[macro_use]
mod say;
mod cli;
mod cmd_backup;
mod cmd_export;
mod cmd_ha;
mod cmd_init;
mod cmd_proxy;
mod cmd_remove;
mod cmd_restore;
mod cmd_secrets;
mod export;
mod output;
mod progress;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cli::{Cli, Command, Target};
use pgkeel_agent::remote::RemoteCluster;
use pgkeel_agent::{orchestrate, proxy_daemon};
use pgkeel_cluster::compare::config_differences;
use pgkeel_cluster::up::current_primary;
use pgkeel_cluster::url::{Credentials, UrlTarget};
use pgkeel_cluster::{Cluster, ClusterError, UpOutcome, up};
use pgkeel_core::config::{ConfigSources, annotated_default, load, parse};
use pgkeel_core::status::ClusterStatus;

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            output,
            force,
            nodes,
            etcd_endpoints,
            name,
            data_dir,
        } => {
            if nodes.is_empty() {
                init(&output, force)
            } else {
                cmd_init::init_multi_host(&cmd_init::InitRequest {
                    output,
                    force,
                    nodes,
                    etcd_endpoints,
                    name,
                    data_dir,
                })
            }
        }
        Command::Up {
            target,
            replicas,
            mode,
            sync_count,
            base_port,
            json,
            no_ha,
            proxy_port,
            no_proxy,
        } => {
            let mut flags = vec![];
            if let Some(n) = replicas {
                flags.push(("cluster", "replicas", toml::Value::Integer(n as i64)));
            }
            if let Some(m) = mode {
                flags.push((
                    "replication",
                    "mode",
                    toml::Value::String(m.as_str().into()),
                ));
            }
            if let Some(n) = sync_count {
                flags.push(("replication", "sync_count", toml::Value::Integer(n as i64)));
            }
            if let Some(p) = base_port {
                flags.push(("cluster", "base_port", toml::Value::Integer(i64::from(p))));
            }
            if let Some(p) = proxy_port {
                flags.push(("proxy", "port", toml::Value::Integer(i64::from(p))));
            }
            if no_proxy {
                flags.push(("proxy", "enabled", toml::Value::Boolean(false)));
            }
            cmd_up(&target, flags, json, !no_ha).await
        }
        Command::Agent {
            target,
            node,
            with_etcd,
            stop_postgres,
        } => {
            // The agent's stderr is its log (agent.log): what the
            // libraries report through tracing belongs there too.
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .try_init();
            let cluster = open_for_host(&target)?;
            let options = pgkeel_agent::runner::AgentOptions {
                with_etcd,
                stop_postgres,
            };
            Ok(pgkeel_agent::run_agent(cluster, &node, options).await?)
        }
        Command::EtcdSupervisor { target, node } => {
            let cluster = open_for_host(&target)?;
            Ok(pgkeel_agent::etcd_local::supervise(&cluster, node.as_deref()).await?)
        }
        Command::Switchover { target, to } => {
            cmd_ha::switchover(&open_any(&target)?.remote(), to).await
        }
        Command::Failover { target, to } => {
            cmd_ha::failover(&open_any(&target)?.remote(), &to).await
        }
        Command::PromoteCluster { target } => {
            cmd_ha::promote_cluster(&open_any(&target)?.remote()).await
        }
        Command::DemoteCluster { target, host, port } => {
            cmd_ha::demote_cluster(&open_any(&target)?.remote(), &host, port).await
        }
        Command::Pause { target } => cmd_ha::set_paused(&open_any(&target)?.remote(), true).await,
        Command::Resume { target } => cmd_ha::set_paused(&open_any(&target)?.remote(), false).await,
        Command::Down { target } => {
            let cluster = open(&target)?;
            if proxy_daemon::stop_proxy(&cluster).await {
                say!("stopped the proxy");
            }
            let agents = orchestrate::stop_agents(&cluster).await;
            if !agents.is_empty() {
                say!("stopped agents: {}", agents.join(", "));
            }
            let stopped = cluster.down().await?;
            if orchestrate::stop_etcd(&cluster).await {
                say!("stopped etcd");
            }
            if stopped.is_empty() {
                say!(
                    "cluster `{}`: nothing was running",
                    cluster.config.cluster.name
                );
            } else {
                say!(
                    "cluster `{}`: stopped {}",
                    cluster.config.cluster.name,
                    stopped.join(", ")
                );
            }
            Ok(())
        }
        Command::Destroy { target, yes } => {
            let cluster = open(&target)?;
            if !yes {
                bail!(
                    "`destroy` deletes every node's data under {}: add --yes to confirm",
                    cluster.layout.root().display()
                );
            }
            proxy_daemon::stop_proxy(&cluster).await;
            orchestrate::stop_agents(&cluster).await;
            orchestrate::stop_etcd(&cluster).await;
            cluster.destroy().await?;
            say!(
                "cluster `{}` destroyed ({} removed)",
                cluster.config.cluster.name,
                cluster.layout.root().display()
            );
            Ok(())
        }
        Command::Status {
            target,
            json,
            watch,
            interval,
        } => {
            let cluster = open_any(&target)?;
            if !watch {
                let status = cluster.status().await;
                return output::print_status(&status, json);
            }
            let period = Duration::from_secs_f64(interval.max(0.1));
            loop {
                let status = cluster.status().await;
                if !json {
                    print!("\x1b[2J\x1b[H");
                }
                output::print_status(&status, json)?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = tokio::time::sleep(period) => {}
                }
            }
        }
        Command::Url {
            target,
            node,
            primary: _,
            replica,
            proxy,
            superuser,
        } => {
            let cluster = open_any(&target)?;
            let which = match (node, replica, proxy) {
                (Some(name), _, _) => UrlTarget::Node(name),
                (None, true, _) => UrlTarget::Replica,
                (None, false, true) => UrlTarget::Proxy,
                (None, false, false) => UrlTarget::Primary,
            };
            let creds = if superuser {
                Credentials::Superuser
            } else {
                Credentials::App
            };
            say!("{}", cluster.url(&which, creds).await?);
            Ok(())
        }
        Command::Secrets(cli::SecretsCommand::Rotate { target, role }) => {
            let opened = open_any(&target)?;
            let status = opened.status().await;
            cmd_secrets::rotate(&opened.remote(), opened.local(), &status, &role).await
        }
        Command::Export(command) => cmd_export::run(&command),
        Command::Backup(args) => {
            let opened = open_any(args.target())?;
            let Some(cluster) = opened.local() else {
                bail!(
                    "`pgkeel backup` runs on a host that holds the cluster's nodes (pgBackRest reads their data directories); run it there"
                );
            };
            let status = opened.status().await;
            cmd_backup::run(&args, cluster, &status).await
        }
        Command::Restore(args) => cmd_restore::run(&args).await,
        Command::Remove { target, node } => {
            let opened = open_any(&target)?;
            let status = opened.status().await;
            cmd_remove::remove(&opened.remote(), opened.local(), &status, &node).await
        }
        Command::Proxy(args) => {
            let source = proxy_source(&args.target)?;
            cmd_proxy::run(&args, &source)
        }
    }
}

/// Waits until the leader's replicas all stream as the mode requires.
/// Retries while the agents are still starting PostgreSQL or electing.
/// Warns (stderr) about agents running without their API.
async fn warn_silent_apis(cluster: &Cluster) {
    for line in orchestrate::silent_apis(cluster).await {
        eprintln!("warning: {line}");
    }
}

async fn wait_for_leader_replication(cluster: &Cluster) -> Result<()> {
    Ok(pgkeel_agent::ready::wait_ready(cluster, Duration::from_secs(90)).await?)
}

fn init(output: &Path, force: bool) -> Result<()> {
    if output.exists() && !force {
        bail!(
            "{} already exists: pass --force to overwrite it",
            output.display()
        );
    }
    std::fs::write(output, annotated_default())
        .with_context(|| format!("cannot write {}", output.display()))?;
    say!(
        "wrote {}: edit it, then `pgkeel up --config {}`",
        output.display(),
        output.display()
    );
    Ok(())
}

/// The configuration layers: file, `PGKEEL_*` environment, then flags.
/// Returns the sources and whether the user asked for anything specific
/// (beyond where the cluster lives).
fn sources(
    target: &Target,
    flags: Vec<(&str, &str, toml::Value)>,
) -> Result<(ConfigSources, bool)> {
    let default_file = PathBuf::from("pgkeel.toml");
    let file = match &target.config {
        Some(path) => Some(path.clone()),
        None if default_file.is_file() => Some(default_file),
        None => None,
    };
    let file = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read config file {} (given by --config/PGKEEL_CONFIG)",
                    path.display()
                )
            })?;
            Some((path.display().to_string(), text))
        }
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("PGKEEL_") && k != "PGKEEL_CONFIG" && k != "PGKEEL_DIR")
        .collect();
    let specific = file.is_some() || !env.is_empty() || !flags.is_empty();
    let mut overrides: Vec<(String, String, toml::Value)> = flags
        .into_iter()
        .map(|(s, k, v)| (s.to_string(), k.to_string(), v))
        .collect();
    if let Some(dir) = &target.dir {
        overrides.push((
            "cluster".into(),
            "data_dir".into(),
            toml::Value::String(dir.display().to_string()),
        ));
    }
    Ok((
        ConfigSources {
            file,
            env,
            overrides,
        },
        specific,
    ))
}

/// A cluster as a command sees it from this host.
enum Opened {
    /// Every node's data directory is on this host (`pgkeel up`).
    Local(Box<Cluster>),
    /// Some or all nodes live elsewhere: etcd and the agents' APIs.
    Remote(Box<RemoteCluster>),
}

impl Opened {
    /// The cluster when this host holds every node.
    fn local(&self) -> Option<&Cluster> {
        match self {
            Opened::Local(c) => Some(c),
            Opened::Remote(_) => None,
        }
    }

    /// The network view (enough for the HA commands).
    fn remote(&self) -> RemoteCluster {
        match self {
            Opened::Local(c) => RemoteCluster::of(c),
            Opened::Remote(r) => (**r).clone(),
        }
    }

    async fn status(&self) -> ClusterStatus {
        match self {
            Opened::Local(c) => full_status(c).await,
            Opened::Remote(r) => r.status().await,
        }
    }

    async fn url(&self, target: &UrlTarget, creds: Credentials) -> Result<String> {
        Ok(match self {
            Opened::Local(c) => c.url(target, creds).await?,
            Opened::Remote(r) => {
                let status = if target.needs_status() {
                    Some(r.status().await)
                } else {
                    None
                };
                let ctx = pgkeel_cluster::url::UrlContext {
                    config: &r.config,
                    layout: &r.layout,
                    superuser: &r.superuser,
                };
                pgkeel_cluster::url::url_for(&ctx, status.as_ref(), target, creds)?
            }
        })
    }
}

/// The cluster the target names, from this host: local when this host
/// holds every node's data directory, else reached over the network with
/// the config (--config, or the one stored in this host's data root) and
/// its secrets.
fn open_any(target: &Target) -> Result<Opened> {
    let (sources, _) = sources(target, vec![])?;
    let mut config = load(&sources)?;
    resolve_secrets_dir(&mut config, target);
    let root = std::path::absolute(&config.cluster.data_dir)?;
    if let Some(stored) = Cluster::stored_config(&root)? {
        let layout = Cluster::layout_of(&stored)?;
        if stored
            .nodes
            .iter()
            .all(|n| layout.node_dir(n.name.as_str()).is_dir())
        {
            return Ok(Opened::Local(Box::new(Cluster::open(&root)?)));
        }
        if config_file(target).is_none() {
            return Ok(Opened::Remote(Box::new(RemoteCluster::new(stored)?)));
        }
    }
    if config_file(target).is_none() {
        return Err(ClusterError::NoCluster { dir: root }.into());
    }
    Ok(Opened::Remote(Box::new(RemoteCluster::new(config)?)))
}

/// Opens the existing cluster the target points at.
fn open(target: &Target) -> Result<Cluster> {
    let (sources, _) = sources(target, vec![])?;
    let config = load(&sources)?;
    Ok(Cluster::open(&config.cluster.data_dir)?)
}

/// The cluster as one host's agent or etcd member sees it: with a config
/// file (multi-host), that file, whose data root on this host may not
/// exist yet; without one, the cluster stored in the data root (`pgkeel
/// up` starts agents that way).
fn open_for_host(target: &Target) -> Result<Cluster> {
    let (sources, _) = sources(target, vec![])?;
    if sources.file.is_none() {
        return open(target);
    }
    let mut config = load(&sources)?;
    resolve_secrets_dir(&mut config, target);
    Ok(Cluster::prepare(config)?)
}

/// The cluster `pgkeel proxy` fronts: a local cluster's data root when
/// one holds `cluster.toml`, else the shared config file (multi-host: the
/// proxy's host may run no node at all).
fn proxy_source(target: &Target) -> Result<cmd_proxy::ProxySource> {
    let (sources, _) = sources(target, vec![])?;
    let config = load(&sources)?;
    let root = std::path::absolute(&config.cluster.data_dir)?;
    if Cluster::stored_config(&root)?.is_some() {
        return Ok(cmd_proxy::ProxySource::DataRoot(root));
    }
    match config_file(target) {
        Some(file) => Ok(cmd_proxy::ProxySource::ConfigFile(
            std::path::absolute(&file)?,
            target.dir.as_ref().map(std::path::absolute).transpose()?,
        )),
        None => Err(ClusterError::NoCluster { dir: root }.into()),
    }
}

/// The config file in effect: --config, or ./pgkeel.toml if present.
fn config_file(target: &Target) -> Option<PathBuf> {
    target
        .config
        .clone()
        .or_else(|| Some(PathBuf::from("pgkeel.toml")).filter(|p| p.is_file()))
}

/// A relative `cluster.secrets_dir` is relative to the config file's
/// directory: the config and its secrets are copied together.
fn resolve_secrets_dir(config: &mut pgkeel_core::Config, target: &Target) {
    if let Some(file) = config_file(target) {
        config.anchor_secrets_dir(file.parent().unwrap_or(Path::new(".")));
    }
}

/// PostgreSQL status plus, for an HA cluster, leader and agents.
async fn full_status(cluster: &Cluster) -> ClusterStatus {
    let mut status = cluster.status().await;
    if ha_enabled(cluster) {
        orchestrate::enrich_status(cluster, &mut status).await;
    }
    status
}

/// The nodes whose PostgreSQL does not run on this host, each with whether
/// it has complete data (else its agent clones it).
fn stopped_nodes(cluster: &Cluster) -> Vec<(String, bool)> {
    use pgkeel_pg::pgctl::{is_data_dir, running_pid};
    cluster
        .nodes()
        .iter()
        .map(|n| cluster.layout.data_dir(n.name.as_str()))
        .zip(cluster.nodes())
        .filter(|(data, _)| running_pid(data).is_none())
        .map(|(data, n)| (n.name.to_string(), is_data_dir(&data)))
        .collect()
}

/// A cluster is HA when it has agents or an etcd to talk to.
fn ha_enabled(cluster: &Cluster) -> bool {
    !cluster.config.etcd.endpoints.is_empty()
        || cluster.layout.etcd_dir().exists()
        || cluster
            .nodes()
            .iter()
            .any(|n| cluster.layout.agent_pid_file(n.name.as_str()).exists())
}

async fn cmd_up(
    target: &Target,
    flags: Vec<(&str, &str, toml::Value)>,
    json: bool,
    ha: bool,
) -> Result<()> {
    let (sources, specific) = sources(target, flags)?;
    let requested = load(&sources)?;
    let dir = requested.cluster.data_dir.clone();
    let config = match Cluster::stored_config(&dir)? {
        Some(stored) => {
            let raw = parse(&sources)?;
            let nodes_requested = !raw.nodes.is_empty()
                || raw.cluster.replicas.is_some()
                || raw.cluster.base_port.is_some();
            let differences = if specific {
                config_differences(&requested, &stored, nodes_requested)
            } else {
                vec![]
            };
            if !differences.is_empty() {
                return Err(ClusterError::ConfigMismatch {
                    dir: stored.cluster.data_dir.clone(),
                    differences: differences.join("; "),
                }
                .into());
            }
            stored
        }
        None => requested,
    };
    let cluster = Cluster::prepare(config)?;
    let brought = bring_up(&cluster, ha).await?;
    print_brought(&cluster, brought, json)
}

/// What bringing a cluster up did.
struct Brought {
    outcome: UpOutcome,
    elapsed: f64,
    status: ClusterStatus,
}

/// Creates, resumes or checks `cluster` on this host (with agents when
/// `ha`, then the proxy when configured) and returns once every replica
/// streams.
async fn bring_up(cluster: &Cluster, ha: bool) -> Result<Brought> {
    let cluster = cluster.clone();
    let progress = Arc::new(progress::TerminalProgress::new());
    let started = std::time::Instant::now();
    let exists = cluster.layout.cluster_file().exists();
    if ha && !exists {
        pgkeel_cluster::preflight::check_ha_ports(&cluster)?;
    }
    if !exists {
        pgkeel_cluster::preflight::check_proxy_ports(&cluster)?;
    }
    let outcome = if ha {
        // One code path with multi-host: the agents initialise, clone and
        // start every node; `up` only starts them (and etcd) on this host.
        use pgkeel_cluster::Progress;
        let agents_running = cluster
            .nodes()
            .iter()
            .any(|n| orchestrate::agent_pid(&cluster, n.name.as_str()).is_some());
        if !agents_running {
            pgkeel_cluster::up::preflight(&cluster)?;
        }
        cluster.ensure_skeleton(true)?;
        progress.step(
            "ha",
            "starting etcd and one agent per node (they initialise and clone)",
        );
        let exe =
            std::env::current_exe().context("cannot locate the pgkeel binary to start agents")?;
        // The node holding primary data (the first one for a new cluster)
        // starts first and must lead before the others start.
        let first = current_primary(&cluster).ok().map(|n| n.name.to_string());
        let first = if agents_running { None } else { first };
        let stopped = stopped_nodes(&cluster);
        let mut actions = orchestrate::start_ha(&cluster, &exe, first.as_deref()).await?;
        wait_for_leader_replication(&cluster).await?;
        actions.extend(stopped.into_iter().map(|(name, had_data)| {
            if had_data {
                format!("started {name}")
            } else {
                format!("cloned {name}")
            }
        }));
        warn_silent_apis(&cluster).await;
        if !exists {
            UpOutcome::Created
        } else if actions.is_empty() {
            UpOutcome::AlreadyRunning
        } else {
            UpOutcome::Resumed(actions)
        }
    } else {
        up(&cluster, progress.clone()).await?
    };
    let outcome = if cluster.config.proxy.enabled {
        use pgkeel_cluster::Progress;
        progress.step("proxy", "starting the pooling proxy");
        let exe = std::env::current_exe()
            .context("cannot locate the pgkeel binary to start the proxy")?;
        match proxy_daemon::start_proxy(&cluster, &exe).await? {
            Some(done) => outcome.with_action(done),
            None => outcome,
        }
    } else {
        outcome
    };
    let elapsed = started.elapsed().as_secs_f64();
    let status = full_status(&cluster).await;
    Ok(Brought {
        outcome,
        elapsed,
        status,
    })
}

/// Prints what `bring_up` did: the status as JSON, or a line and the
/// ready table.
fn print_brought(cluster: &Cluster, brought: Brought, json: bool) -> Result<()> {
    let Brought {
        outcome,
        elapsed,
        status,
    } = brought;
    if json {
        return output::print_status(&status, true);
    }
    match outcome {
        UpOutcome::Created => say!(
            "cluster `{}` created and ready in {elapsed:.1}s",
            status.cluster
        ),
        UpOutcome::AlreadyRunning => say!(
            "cluster `{}` is already running; nothing changed",
            status.cluster
        ),
        UpOutcome::Resumed(actions) => {
            say!(
                "cluster `{}` ready in {elapsed:.1}s ({})",
                status.cluster,
                actions.join(", ")
            )
        }
    }
    output::print_ready_table(cluster, &status);
    Ok(())
}

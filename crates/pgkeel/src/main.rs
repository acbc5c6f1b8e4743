//! The `pgkeel` binary: a thin front over `pgkeel-cluster`.

mod cli;
mod cmd_proxy;
mod output;
mod progress;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cli::{Cli, Command, Target};
use pgkeel_cluster::compare::config_differences;
use pgkeel_cluster::url::{Credentials, UrlTarget};
use pgkeel_cluster::{Cluster, ClusterError, UpOutcome, up};
use pgkeel_core::config::{ConfigSources, annotated_default, load, parse};

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
        Command::Init { output, force } => init(&output, force),
        Command::Up {
            target,
            replicas,
            mode,
            sync_count,
            base_port,
            json,
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
            cmd_up(&target, flags, json).await
        }
        Command::Down { target } => {
            let cluster = open(&target)?;
            let stopped = cluster.down().await?;
            if stopped.is_empty() {
                println!(
                    "cluster `{}`: nothing was running",
                    cluster.config.cluster.name
                );
            } else {
                println!(
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
            cluster.destroy().await?;
            println!(
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
            let cluster = open(&target)?;
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
            superuser,
        } => {
            let cluster = open(&target)?;
            let which = match (node, replica) {
                (Some(name), _) => UrlTarget::Node(name),
                (None, true) => UrlTarget::Replica,
                (None, false) => UrlTarget::Primary,
            };
            let creds = if superuser {
                Credentials::Superuser
            } else {
                Credentials::App
            };
            println!("{}", cluster.url(&which, creds).await?);
            Ok(())
        }
        Command::Proxy(args) => {
            let cluster = open(&args.target)?;
            cmd_proxy::run(&args, cluster.layout.root()).await
        }
    }
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
    println!(
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

/// Opens the existing cluster the target points at.
fn open(target: &Target) -> Result<Cluster> {
    let (sources, _) = sources(target, vec![])?;
    let config = load(&sources)?;
    Ok(Cluster::open(&config.cluster.data_dir)?)
}

async fn cmd_up(target: &Target, flags: Vec<(&str, &str, toml::Value)>, json: bool) -> Result<()> {
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
    let progress = Arc::new(progress::TerminalProgress::new());
    let started = std::time::Instant::now();
    let outcome = up(&cluster, progress).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let status = cluster.status().await;
    if json {
        return output::print_status(&status, true);
    }
    match outcome {
        UpOutcome::Created => println!(
            "cluster `{}` created and ready in {elapsed:.1}s",
            status.cluster
        ),
        UpOutcome::AlreadyRunning => println!(
            "cluster `{}` is already running; nothing changed",
            status.cluster
        ),
        UpOutcome::Resumed(actions) => {
            println!(
                "cluster `{}` ready in {elapsed:.1}s ({})",
                status.cluster,
                actions.join(", ")
            )
        }
    }
    output::print_ready_table(&cluster, &status);
    Ok(())
}

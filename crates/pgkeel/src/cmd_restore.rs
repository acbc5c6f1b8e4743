//! `pgkeel restore --to TARGET --dir NEW`: point-in-time recovery of a
//! cluster's backup into a new cluster (primary and replicas) beside it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use pgkeel_backup::{BackupEngine, RecoveryPoint, choose_backup};
use pgkeel_cluster::restore::RestoreReport;
use pgkeel_cluster::up::current_primary;
use pgkeel_cluster::{Cluster, Progress};
use pgkeel_core::config::restored_config;
use pgkeel_core::status::Role;

use crate::cli::Target;
use crate::progress::TerminalProgress;

/// `pgkeel restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Where recovery stops: `latest` (every archived commit), a time with
    /// its zone (`'2026-12-07 14:03:00+01'`: the last commit at or before
    /// it) or a WAL position (`0/3000028`).
    #[arg(long, value_name = "TARGET")]
    pub to: RecoveryPoint,
    /// The new cluster's data root: it must not exist, or be empty.
    #[arg(long, value_name = "NEW", required_unless_present = "in_place")]
    pub dir: Option<PathBuf>,
    /// Take the cluster itself back to the target instead: every node is
    /// stopped, the primary restored (delta) onto a new timeline, the
    /// replicas rebuilt; commits after the target are discarded (the
    /// archive keeps them on the old timeline). Needs --yes.
    #[arg(long, conflicts_with_all = ["dir", "name", "base_port"])]
    pub in_place: bool,
    /// Confirms --in-place.
    #[arg(long, requires = "in_place")]
    pub yes: bool,
    /// The backup to start from (default: the newest that ended before
    /// the target; `pgkeel backup list` shows the labels).
    #[arg(long, value_name = "LABEL")]
    pub from: Option<String>,
    /// The new cluster's name: its etcd keys and backup stanza (default:
    /// the source's name with `_restored`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The new cluster's first port; its other ports keep their distance
    /// from it (default: the source's first port + 10).
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u16>,
    /// The cluster whose backup is restored: its data root (default:
    /// ./pgkeel-data).
    #[arg(long, value_name = "DIR", env = "PGKEEL_DIR")]
    pub source: Option<PathBuf>,
    /// The source cluster's configuration file.
    #[arg(long, short = 'c', env = "PGKEEL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the restore and the new cluster's status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--json` output.
#[derive(Serialize)]
struct RestoreOutput<'a> {
    restore: &'a RestoreReport,
    status: &'a pgkeel_core::status::ClusterStatus,
}

/// Prints the restore and the cluster's status as one JSON document.
fn print_json(report: &RestoreReport, status: &pgkeel_core::status::ClusterStatus) -> Result<()> {
    let text = serde_json::to_string_pretty(&RestoreOutput {
        restore: report,
        status,
    })?;
    say!("{text}");
    Ok(())
}

/// Restores the source cluster's backup into a new cluster and brings it up.
pub async fn run(args: &RestoreArgs) -> Result<()> {
    let target = Target {
        config: args.config.clone(),
        dir: args.source.clone(),
    };
    let opened = crate::open_any(&target)?;
    let Some(source) = opened.local() else {
        bail!(
            "`pgkeel restore` runs on a host that holds the source cluster's nodes; run it there"
        );
    };
    let engine = crate::cmd_backup::engine(source)?;
    if args.in_place && !args.yes {
        bail!(
            "`restore --in-place` takes cluster `{}` back to {}: every commit after it is discarded on every node, which are all stopped meanwhile (the archive keeps the discarded history on the old timeline: `pgkeel restore --to TIME --dir NEW` can still recover it). Add --yes to confirm, or restore into a new cluster with --dir NEW to look first",
            source.config.cluster.name,
            args.to
        );
    }
    let progress = Arc::new(TerminalProgress::new());

    // The newest commits must be in the archive before `latest` or a
    // recent time can reach them.
    let status = opened.status().await;
    let primary = status
        .nodes
        .iter()
        .find(|n| n.running && n.role == Some(Role::Primary))
        .and_then(|n| source.node(&n.name).ok());
    let primary_name = primary.map(|p| p.name.to_string());
    match primary {
        Some(primary) => {
            progress.step(
                primary.name.as_str(),
                "archiving the newest WAL so the restore can reach it",
            );
            source.flush_archive(primary).await?;
        }
        None => progress.step(
            "restore",
            "no source primary is running: restoring from what the archive holds",
        ),
    }
    let info = engine.info().await?;
    let now = chrono::Utc::now().timestamp();
    let backup = choose_backup(&info, &args.to, args.from.as_deref(), now)?;
    if args.in_place {
        return in_place(source, &engine, backup, primary_name, args, progress).await;
    }
    let Some(dir) = &args.dir else {
        bail!("give the new cluster's data root with --dir NEW, or --in-place");
    };

    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}_restored", source.config.cluster.name));
    let first_port = match args.base_port {
        Some(port) => port,
        None => source
            .nodes()
            .first()
            .map_or(5442, |n| n.port.saturating_add(10)),
    };
    let root =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let config = restored_config(&source.config, &name, &root, first_port)?;
    let restored = Cluster::prepare(config)?;
    pgkeel_cluster::preflight::check_new_cluster(&restored)?;
    pgkeel_cluster::preflight::check_ha_ports(&restored)?;
    pgkeel_cluster::preflight::check_proxy_ports(&restored)?;
    let created_root = !root.exists();

    let report = match build(source, &restored, &engine, backup, args, progress.as_ref()).await {
        Ok(report) => report,
        Err(e) => {
            // Nothing of the new cluster is worth keeping; the source is
            // untouched.
            if created_root {
                let _ = restored.down().await;
                let _ = std::fs::remove_dir_all(&root);
            }
            return Err(e);
        }
    };
    let ha = crate::ha_enabled(source);
    let brought = crate::bring_up(&restored, ha).await?;
    if args.json {
        return print_json(&report, &brought.status);
    }
    say!(
        "restored backup {} of `{}` to {} into cluster `{}` ({}) in {:.1}s; system identifier {} (was {})",
        report.label,
        source.config.cluster.name,
        report.target,
        restored.config.cluster.name,
        root.display(),
        report.restore_seconds,
        report.system_id,
        report
            .source_system_id
            .map_or_else(|| "unknown".to_string(), |id| id.to_string()),
    );
    crate::print_brought(&restored, brought, false)
}

/// `restore --in-place`: stops the cluster, restores its primary, brings
/// it back up (the agents rebuild the replicas).
async fn in_place(
    cluster: &Cluster,
    engine: &pgkeel_backup::PgBackRest,
    backup: &pgkeel_backup::BackupInfo,
    primary: Option<String>,
    args: &RestoreArgs,
    progress: Arc<TerminalProgress>,
) -> Result<()> {
    // The node that held the primary's data: the running primary, or when
    // none runs, the one whose data is not a standby's.
    let primary = match primary {
        Some(name) => cluster.node(&name)?.clone(),
        None => current_primary(cluster)?.clone(),
    };
    progress.step("restore", "stopping the proxy, the agents and every node");
    pgkeel_agent::proxy_daemon::stop_proxy(cluster).await;
    pgkeel_agent::orchestrate::stop_agents(cluster).await;
    cluster.down().await?;
    let report = cluster
        .restore_in_place(engine, &primary, backup, &args.to.restore_target(), progress.as_ref())
        .await
        .context(
            "the in-place restore failed and the cluster is left stopped: fix the cause and run the same command again (the restore is a delta and resumes)",
        )?;
    let brought = crate::bring_up(cluster, crate::ha_enabled(cluster)).await?;
    if args.json {
        return print_json(&report, &brought.status);
    }
    say!(
        "cluster `{}` taken back to {} from backup {} in {:.1}s: {} is the primary on a new timeline, the replicas were rebuilt",
        cluster.config.cluster.name,
        report.target,
        report.label,
        report.restore_seconds,
        report.node
    );
    crate::print_brought(cluster, brought, false)
}

/// The new cluster's skeleton, its primary restored and prepared (roles,
/// slots, its own stanza), left running for the agents to adopt.
async fn build(
    source: &Cluster,
    restored: &Cluster,
    engine: &pgkeel_backup::PgBackRest,
    backup: &pgkeel_backup::BackupInfo,
    args: &RestoreArgs,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    restored.copy_shared_secrets(source)?;
    restored.ensure_skeleton(true)?;
    let report = restored
        .restore_as_new_primary(engine, backup, &args.to.restore_target(), progress)
        .await?;
    let primary = current_primary(restored)?;
    let name = primary.name.as_str();
    progress.step(name, "starting; roles, slots and the new backup stanza");
    pgkeel_pg::pgctl::start(
        &restored.runner,
        name,
        &restored.layout.data_dir(name),
        &restored.layout.log_file(name),
    )
    .await?;
    restored.prepare_primary(primary).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn a_bad_target_is_refused_by_the_parser_with_the_fix() {
        let Err(e) = Cli::try_parse_from([
            "pgkeel",
            "restore",
            "--to",
            "2026-12-07 10:00:00",
            "--dir",
            "/tmp/x",
        ]) else {
            panic!("a time without zone was accepted");
        };
        let text = e.to_string();
        assert!(text.contains("no time zone"), "{text}");
    }
}

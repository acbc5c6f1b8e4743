//! `pgkeel backup`: a backup now (from the best streaming replica unless
//! told otherwise, with a progress bar), and `pgkeel backup list`.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use pgkeel_backup::source::choose;
use pgkeel_backup::{BackupEngine, BackupInfo, BackupKind, PgBackRest, RepositoryInfo};
use pgkeel_cluster::Cluster;
use pgkeel_cluster::verify::VerifyReport;
use pgkeel_core::config::BackupSource;
use pgkeel_core::status::ClusterStatus;

use crate::cli::Target;
use crate::output::human_bytes;

/// `pgkeel backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    #[command(flatten)]
    pub target: Target,
    /// A full backup (every file).
    #[arg(long, conflicts_with_all = ["diff", "incr"])]
    pub full: bool,
    /// A differential backup (what changed since the last full one).
    #[arg(long, conflicts_with = "incr")]
    pub diff: bool,
    /// An incremental backup (what changed since the last backup): the
    /// default. It becomes a full one when the repository has none yet.
    #[arg(long)]
    pub incr: bool,
    /// Read the files from the primary instead of a streaming replica
    /// (`backup.from`).
    #[arg(long)]
    pub from_primary: bool,
    /// Print the new backup as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pgkeel backup ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// List the repository's backups: label, type, start and stop, WAL
    /// positions, sizes and the WAL each needs.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prove a backup restores: restore it into a scratch directory,
    /// replay WAL, start it on a private socket (archiving off), check the
    /// marker row written before it started, run pg_amcheck on every
    /// database, report the restore time (RTO) and the newest restorable
    /// commit (RPO), then remove the copy. Exit code 1 when a check fails.
    Verify {
        /// The backup (default: the newest).
        label: Option<String>,
        /// Replay every archived segment instead of stopping at the end of
        /// the backup (checks the archive too, and gives the real RPO).
        #[arg(long)]
        to_latest: bool,
        /// Where the copy is restored (default: <data root>/verify). It
        /// needs about the database's size free.
        #[arg(long, value_name = "DIR")]
        scratch: Option<std::path::PathBuf>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl BackupArgs {
    /// The cluster the command works on.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn kind(&self) -> BackupKind {
        if self.full {
            BackupKind::Full
        } else if self.diff {
            BackupKind::Diff
        } else {
            BackupKind::Incr
        }
    }
}

/// The engine, or why backups cannot run.
pub(crate) fn engine(cluster: &Cluster) -> Result<PgBackRest> {
    match cluster.backup_engine()? {
        Some(engine) => Ok(engine),
        None => bail!(
            "no backup repository is configured: set `backup.path` (a mounted directory) or `[backup.s3]` in the config, then restart the agents (`pgkeel up` on this host)"
        ),
    }
}

/// Runs `pgkeel backup [list]` on a cluster whose nodes live on this host.
pub async fn run(args: &BackupArgs, cluster: &Cluster, status: &ClusterStatus) -> Result<()> {
    let engine = engine(cluster)?;
    match &args.command {
        Some(_) if args.full || args.diff || args.incr || args.from_primary || args.json => {
            bail!(
                "--full, --diff, --incr, --from-primary and --json before `list`/`verify` are for taking a backup; put --json after the subcommand"
            );
        }
        Some(BackupCommand::List { json }) => {
            let info = engine.info().await?;
            print_list(&info, *json)
        }
        Some(BackupCommand::Verify {
            label,
            to_latest,
            scratch,
            json,
        }) => {
            let scratch = scratch
                .clone()
                .unwrap_or_else(|| cluster.layout.verify_scratch_dir());
            let progress = crate::progress::TerminalProgress::new();
            let report = cluster
                .verify_backup(&engine, label.as_deref(), *to_latest, &scratch, &progress)
                .await?;
            cluster.record_verification(&report)?;
            print_verification(&report, *json)?;
            if !report.ok() {
                std::process::exit(1);
            }
            Ok(())
        }
        None => take(args, cluster, &engine, status).await,
    }
}

fn print_verification(r: &VerifyReport, json: bool) -> Result<()> {
    if json {
        say!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let verdict = match &r.problem {
        None => "restorable".to_string(),
        Some(p) => format!("FAILED: {p}"),
    };
    if !r.restored {
        say!("backup {} ({}): {verdict}", r.label, r.kind);
        return Ok(());
    }
    say!(
        "backup {} ({}): {verdict}\n  restored and running in {:.1}s (RTO), newest commit {} = {:.0}s before now (RPO){}\n  marker row {}, pg_amcheck {} on {} databases, {} tables, about {} rows",
        r.label,
        r.kind,
        r.restore_seconds,
        utc(r.newest_commit),
        r.rpo_seconds,
        if r.to_latest {
            ", all archived WAL replayed"
        } else {
            ", replayed to the end of the backup"
        },
        if r.marker_found { "found" } else { "MISSING" },
        if r.amcheck_ok {
            "clean"
        } else {
            "FOUND CORRUPTION"
        },
        r.databases.len(),
        r.tables,
        r.rows_estimate
    );
    Ok(())
}

async fn take(
    args: &BackupArgs,
    cluster: &Cluster,
    engine: &PgBackRest,
    status: &ClusterStatus,
) -> Result<()> {
    let from = if args.from_primary {
        BackupSource::Primary
    } else {
        cluster.config.backup.from
    };
    let nodes = choose(status, from).map_err(anyhow::Error::msg)?;
    if let Some(why) = &nodes.fallback {
        eprintln!("warning: {why}");
    }
    let node = |name: &str| {
        cluster
            .config
            .node(name)
            .map(|n| cluster.pg_target(n))
            .with_context(|| format!("node `{name}` is not in the configuration"))
    };
    let primary_node = cluster
        .config
        .node(&nodes.primary)
        .with_context(|| format!("node `{}` is not in the configuration", nodes.primary))?;
    let primary = cluster.pg_target(primary_node);
    let standby = nodes.standby.as_deref().map(node).transpose()?;
    let kind = args.kind();
    eprintln!(
        "{kind} backup of cluster `{}`: files from {}",
        cluster.config.cluster.name,
        standby
            .as_ref()
            .map_or(primary.node.as_str(), |s| s.node.as_str())
    );
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(10_000), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template("[{elapsed_precise}] [{bar:30}] {percent}%") {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    let label = cluster
        .backup_with_marker(engine, kind, primary_node, standby.as_ref(), &|pct| {
            bar.set_position((pct * 100.0) as u64)
        })
        .await;
    bar.finish_and_clear();
    let label = label?;
    let info = engine.info().await?;
    let backup = info.backups.iter().find(|b| b.label == label);
    if args.json {
        say!("{}", serde_json::to_string_pretty(&backup)?);
        return Ok(());
    }
    match backup {
        Some(b) => say!(
            "backup {label} ({}) done in {:.1}s: {} of data, {} in the repository, WAL {}..{}",
            b.kind,
            started.elapsed().as_secs_f64(),
            human_bytes(b.database_bytes),
            human_bytes(b.repository_bytes),
            b.wal_start,
            b.wal_stop
        ),
        None => say!(
            "backup {label} done in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

fn print_list(info: &RepositoryInfo, json: bool) -> Result<()> {
    if json {
        say!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    if info.status != "ok" {
        eprintln!("repository: {}", info.status);
    }
    if info.backups.is_empty() {
        say!("no backups yet: `pgkeel backup` takes one now");
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "label",
        "type",
        "started (UTC)",
        "took",
        "LSN start",
        "LSN stop",
        "data",
        "repository",
        "WAL needed",
    ]);
    for b in &info.backups {
        table.add_row(row(b));
    }
    say!("{table}");
    if let (Some(min), Some(max)) = (&info.wal_min, &info.wal_max) {
        say!("archived WAL: {min} .. {max}");
    }
    Ok(())
}

fn row(b: &BackupInfo) -> Vec<String> {
    vec![
        b.label.clone(),
        b.kind.to_string(),
        utc(b.start),
        format!("{}s", b.stop - b.start),
        b.lsn_start.clone(),
        b.lsn_stop.clone(),
        human_bytes(b.database_bytes),
        human_bytes(b.repository_bytes),
        format!("{}..{}", b.wal_start, b.wal_stop),
    ]
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the epoch (UTC).
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn timestamps_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_601_600 + 3661), "2026-12-07 01:01:01");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
    }
}

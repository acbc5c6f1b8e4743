//! Running the proxy until SIGINT/SIGTERM: PID file, SIGHUP reloads,
//! draining on the way out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use pgkeel_proxy::reload::ReloadReport;
use pgkeel_proxy::{config_for, spawn_for};
use tokio::signal::unix::{SignalKind, signal};

use crate::args::ProxyArgs;

/// How long connected clients may finish after a stop signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Starts the proxy for `args.source` and serves until a stop signal.
pub async fn serve(args: &ProxyArgs) -> Result<()> {
    let source = args.source.as_ref().context("no cluster given")?;
    let cluster_file = source.file();
    let proxy = spawn_for(source, &args.options)
        .await
        .with_context(|| format!("cannot start the proxy for {}", cluster_file.display()))?;
    eprintln!(
        "pgkeel proxy listening on {} (pid {}); SIGHUP reloads {}",
        proxy.local_addr(),
        std::process::id(),
        cluster_file.display()
    );
    let _pid_file = match &args.pid_file {
        Some(path) => Some(OwnPidFile::write(path)?),
        None => None,
    };
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                // Re-read the cluster file and the secrets; flags still win.
                let applied = config_for(source, &args.options)
                    .map_err(|e| format!("{e} (fix {} and send SIGHUP again)", cluster_file.display()))
                    .and_then(|config| proxy.shared().reload(config).map_err(|e| e.to_string()));
                match applied {
                    Ok(report) => log_reload(&report),
                    Err(e) => eprintln!("reload refused, the running settings stay: {e}"),
                }
            }
        }
    }
    eprintln!("stopping: letting clients finish for up to {DRAIN:?}");
    proxy.shutdown(DRAIN).await;
    Ok(())
}

fn log_reload(report: &ReloadReport) {
    // A setting that could not be applied (a renewed certificate that does
    // not load) is an error; the rest of the reload applied.
    for failure in &report.failed {
        eprintln!("reload could not apply {failure}");
    }
    if report.applied.is_empty() && report.needs_restart.is_empty() {
        if report.failed.is_empty() {
            eprintln!("reloaded: nothing changed");
        }
        return;
    }
    if !report.applied.is_empty() {
        eprintln!("reloaded: {} now in effect", report.applied.join(", "));
    }
    if !report.needs_restart.is_empty() {
        eprintln!(
            "changed but only applied after a restart (`pgkeel down` then `pgkeel up`, or restart `pgkeel proxy`): {}",
            report.needs_restart.join(", ")
        );
    }
}

/// Our PID in a file for as long as we run; removed on exit unless
/// another process has taken the file over.
struct OwnPidFile(PathBuf);

impl OwnPidFile {
    fn write(path: &Path) -> Result<Self> {
        pgkeel_cluster::pidfile::write_own(path)
            .with_context(|| format!("cannot write the PID file {}", path.display()))?;
        Ok(OwnPidFile(path.to_path_buf()))
    }
}

impl Drop for OwnPidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

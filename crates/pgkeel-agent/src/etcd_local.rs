//! The local single-member etcd that `pgkeel up` runs when no external
//! etcd is configured. A small supervisor process (`pgkeel etcd-supervisor`)
//! runs it as the PostgreSQL OS user and restarts it if it dies.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use pgkeel_cluster::Cluster;
use pgkeel_dcs::Dcs;
use pgkeel_pg::fsutil::ensure_dir;
use tokio::signal::unix::{SignalKind, signal};

use crate::execute::tracing_line;
use crate::{AgentError, pidfile};

/// Paths of the local member.
pub struct LocalEtcd {
    /// Its directory under the data root.
    pub dir: PathBuf,
    /// Client port.
    pub client_port: u16,
}

impl LocalEtcd {
    /// The local member of `cluster`, if it uses one.
    pub fn of(cluster: &Cluster) -> Option<Self> {
        let client_port = cluster.config.local_etcd_port()?;
        Some(LocalEtcd {
            dir: cluster.layout.etcd_dir(),
            client_port,
        })
    }

    /// The supervisor's PID file.
    pub fn supervisor_pid(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }

    /// etcd's own PID file (written by the supervisor).
    pub fn etcd_pid(&self) -> PathBuf {
        self.dir.join("etcd.pid")
    }

    /// etcd's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn args(&self) -> Vec<String> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.client_port.saturating_add(1));
        vec![
            "--name".into(),
            "pgkeel".into(),
            "--data-dir".into(),
            self.dir.join("data").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("pgkeel={peer}"),
            "--initial-cluster-state".into(),
            "new".into(),
            "--heartbeat-interval".into(),
            "100".into(),
            "--election-timeout".into(),
            "1000".into(),
            "--log-level".into(),
            "warn".into(),
        ]
    }
}

/// Runs etcd as a child until SIGTERM, restarting it (after 1 s) when it
/// exits on its own. This is the body of `pgkeel etcd-supervisor`.
pub async fn supervise(cluster: &Cluster) -> Result<(), AgentError> {
    let local = LocalEtcd::of(cluster).ok_or_else(|| {
        AgentError::Refused(
            "this cluster uses external etcd endpoints; there is no local member to supervise"
                .into(),
        )
    })?;
    let owner = cluster.os_user();
    ensure_dir(&local.dir, owner, 0o700)?;
    pidfile::write_own(&local.supervisor_pid()).map_err(|e| AgentError::Process {
        action: "write the supervisor PID file".into(),
        detail: e.to_string(),
    })?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| AgentError::Process {
        action: "install SIGTERM handler".into(),
        detail: e.to_string(),
    })?;
    loop {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(local.log())
            .map_err(|e| AgentError::Process {
                action: format!("open {}", local.log().display()),
                detail: e.to_string(),
            })?;
        let log_err = log.try_clone().map_err(|e| AgentError::Process {
            action: "duplicate the log handle".into(),
            detail: e.to_string(),
        })?;
        let mut cmd = tokio::process::Command::new("etcd");
        cmd.args(local.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .current_dir(&local.dir)
            .kill_on_drop(true);
        if nix::unistd::Uid::effective().is_root() {
            cmd.uid(owner.uid).gid(owner.gid);
        }
        let mut child = cmd.spawn().map_err(|e| AgentError::Process {
            action: "start etcd".into(),
            detail: format!("{e} (install it: `apt-get install -y etcd-server`, or `./dev deps`)"),
        })?;
        if let Some(pid) = child.id() {
            let _ = std::fs::write(local.etcd_pid(), format!("{pid}\n"));
        }
        tokio::select! {
            status = child.wait() => {
                tracing_line(&format!("etcd exited ({status:?}); restarting in 1 s"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ = term.recv() => {
                pidfile::stop(&local.etcd_pid(), Signal::SIGTERM, Duration::from_secs(5)).await;
                let _ = child.wait().await;
                let _ = std::fs::remove_file(local.supervisor_pid());
                return Ok(());
            }
        }
    }
}

/// Starts the supervisor (detached) unless it runs, and waits until etcd
/// answers.
pub async fn ensure_running(
    cluster: &Cluster,
    exe: &std::path::Path,
) -> Result<Option<u32>, AgentError> {
    let Some(local) = LocalEtcd::of(cluster) else {
        return Ok(None);
    };
    if pidfile::alive_pid(&local.supervisor_pid()).is_none() {
        ensure_dir(&local.dir, cluster.os_user(), 0o700)?;
        let root = cluster.layout.root().display().to_string();
        spawn_detached(
            exe,
            &["etcd-supervisor", "--dir", &root],
            &local.dir.join("supervisor.log"),
        )?;
    }
    let endpoints = cluster.config.etcd_endpoints();
    let ready = crate::api::until(Duration::from_secs(30), || async {
        match Dcs::connect(
            &endpoints,
            "/pgkeel-probe",
            "probe",
            Duration::from_millis(500),
        )
        .await
        {
            Ok(dcs) => dcs.view().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    if !ready {
        let tail = crate::logs::tail_lines(&local.log(), 10)
            .map(|lines| lines.join("\n  "))
            .unwrap_or_else(|e| format!("(cannot read it: {e})"));
        return Err(AgentError::Timeout {
            what: format!("the local etcd on port {}", local.client_port),
            seconds: 30,
            hint: format!("; last lines of {}:\n  {tail}", local.log().display()),
        });
    }
    Ok(pidfile::alive_pid(&local.etcd_pid()))
}

/// Stops the local etcd (through its supervisor).
pub async fn stop(cluster: &Cluster) -> bool {
    match LocalEtcd::of(cluster) {
        Some(local) => {
            let stopped = pidfile::stop(
                &local.supervisor_pid(),
                Signal::SIGTERM,
                Duration::from_secs(10),
            )
            .await;
            pidfile::stop(&local.etcd_pid(), Signal::SIGTERM, Duration::from_secs(5)).await
                || stopped
        }
        None => false,
    }
}

/// Starts `exe args` in its own process group with output to `log`, and
/// does not wait: the process outlives the command that started it.
pub fn spawn_detached(
    exe: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
) -> Result<u32, AgentError> {
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| AgentError::Process {
                action: format!("open {}", log.display()),
                detail: e.to_string(),
            })
    };
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(open()?)
        .stderr(open()?)
        .process_group(0)
        .spawn()
        .map_err(|e| AgentError::Process {
            action: format!("start {} {}", exe.display(), args.join(" ")),
            detail: e.to_string(),
        })?;
    Ok(child.id())
}

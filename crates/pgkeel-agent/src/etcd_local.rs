//! The etcd members pgkeel runs itself when no external etcd is
//! configured: one per host named in `etcd.members` (the first node's
//! alone by default). A small supervisor (`pgkeel etcd-supervisor`, or the
//! agent itself with `--with-etcd`) runs it as the PostgreSQL OS user and
//! restarts it if it dies.

use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use pgkeel_cluster::Cluster;
use pgkeel_core::config::url_host;
use pgkeel_dcs::Dcs;
use pgkeel_pg::fsutil::ensure_dir;
use tokio::signal::unix::{SignalKind, signal};

use crate::execute::tracing_line;
use crate::{AgentError, pidfile};

/// One etcd member pgkeel runs on this host (`etcd.members`).
pub struct LocalEtcd {
    /// Its directory under the data root.
    pub dir: PathBuf,
    /// Its name: the node whose host it runs on.
    pub name: String,
    /// The address other members and clients reach it at.
    pub host: String,
    /// Client port.
    pub client_port: u16,
    /// Peer port.
    pub peer_port: u16,
    /// `--initial-cluster`: every member's name and peer URL.
    pub initial_cluster: String,
    /// `--initial-cluster-token`: the cluster's name, so members of two
    /// clusters never join each other.
    pub token: String,
    /// TLS on client and peer connections, with the certificates copied
    /// from the secrets into `<dir>/tls` (etcd runs as the OS user, and
    /// the secrets may be root's).
    pub tls: bool,
}

impl LocalEtcd {
    /// The member running on `node`'s host, if `node` is an etcd member.
    pub fn of(cluster: &Cluster, node: &str) -> Option<Self> {
        let c = &cluster.config;
        let client_port = c.local_etcd_port()?;
        let peer_port = c.etcd_peer_port()?;
        let members = c.etcd_members();
        let me = members.iter().find(|n| n.name.as_str() == node)?;
        let scheme = c.etcd_scheme();
        let initial_cluster = members
            .iter()
            .map(|n| format!("{}={scheme}://{}:{peer_port}", n.name, url_host(&n.host)))
            .collect::<Vec<_>>()
            .join(",");
        Some(LocalEtcd {
            dir: cluster.layout.etcd_dir(),
            name: me.name.to_string(),
            host: me.host.clone(),
            client_port,
            peer_port,
            initial_cluster,
            token: c.cluster.name.clone(),
            tls: c.etcd.tls,
        })
    }

    /// The member `pgkeel up` runs: the first one (`up` runs every node on
    /// this host, and validation allows one member per host).
    pub fn first(cluster: &Cluster) -> Option<Self> {
        let first = cluster.config.etcd_members().first()?.name.to_string();
        Self::of(cluster, &first)
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

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Its client URL.
    pub fn client_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.scheme(),
            url_host(&self.host),
            self.client_port
        )
    }

    /// Where its copies of the CA, certificate and key live.
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }

    fn args(&self) -> Vec<String> {
        // etcd binds IP addresses only: a member known by a DNS name (a
        // container's service name) listens on every interface.
        let listen = match self.host.parse::<IpAddr>() {
            Ok(ip) => url_host(&ip.to_string()),
            Err(_) => "0.0.0.0".into(),
        };
        let client = self.client_url();
        let scheme = self.scheme();
        let mut listen_client = format!("{scheme}://{listen}:{}", self.client_port);
        let loopback = format!("{scheme}://127.0.0.1:{}", self.client_port);
        if !matches!(listen.as_str(), "127.0.0.1" | "0.0.0.0") {
            // Local tools reach the member on loopback too.
            listen_client = format!("{listen_client},{loopback}");
        }
        let peer = format!("{scheme}://{}:{}", url_host(&self.host), self.peer_port);
        let mut args = vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            self.dir.join("data").display().to_string(),
            "--listen-client-urls".into(),
            listen_client,
            "--advertise-client-urls".into(),
            client,
            "--listen-peer-urls".into(),
            format!("{scheme}://{listen}:{}", self.peer_port),
            "--initial-advertise-peer-urls".into(),
            peer,
            "--initial-cluster".into(),
            self.initial_cluster.clone(),
            "--initial-cluster-token".into(),
            self.token.clone(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--heartbeat-interval".into(),
            "100".into(),
            "--election-timeout".into(),
            "1000".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        if self.tls {
            let file = |name: &str| self.tls_dir().join(name).display().to_string();
            for (flag, name) in [
                ("--cert-file", "server.crt"),
                ("--key-file", "server.key"),
                ("--trusted-ca-file", "ca.crt"),
                ("--peer-cert-file", "server.crt"),
                ("--peer-key-file", "server.key"),
                ("--peer-trusted-ca-file", "ca.crt"),
            ] {
                args.push(flag.into());
                args.push(file(name));
            }
            // Only holders of a certificate from this cluster's CA may
            // talk to it at all, clients and peers alike.
            args.push("--client-cert-auth".into());
            args.push("--peer-client-cert-auth".into());
        }
        args
    }
}

/// The member `node`'s host runs, or an error saying it runs none.
fn member(cluster: &Cluster, node: Option<&str>) -> Result<LocalEtcd, AgentError> {
    let found = match node {
        Some(node) => LocalEtcd::of(cluster, node),
        None => LocalEtcd::first(cluster),
    };
    found.ok_or_else(|| {
        AgentError::Refused(match node {
            Some(node) if cluster.config.local_etcd_port().is_some() => format!(
                "node `{node}` runs no etcd member: `etcd.members` names {}",
                cluster
                    .config
                    .etcd_members()
                    .iter()
                    .map(|n| n.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "this cluster uses external etcd endpoints; there is no local member to supervise"
                .into(),
        })
    })
}

/// Runs etcd as a child until SIGTERM, restarting it (after 1 s) when it
/// exits on its own. This is the body of `pgkeel etcd-supervisor`.
pub async fn supervise(cluster: &Cluster, node: Option<&str>) -> Result<(), AgentError> {
    let local = member(cluster, node)?;
    ensure_dir(&local.dir, cluster.os_user(), 0o700)?;
    pidfile::write_own(&local.supervisor_pid()).map_err(|e| AgentError::Process {
        action: "write the supervisor PID file".into(),
        detail: e.to_string(),
    })?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| AgentError::Process {
        action: "install SIGTERM handler".into(),
        detail: e.to_string(),
    })?;
    let result = run_member(cluster, &local, async {
        term.recv().await;
    })
    .await;
    let _ = std::fs::remove_file(local.supervisor_pid());
    result
}

/// Runs the member of `node` (or this host's) inside the calling process
/// until `shutdown` resolves, restarting etcd when it exits on its own:
/// `pgkeel agent --with-etcd` (one process per container).
pub async fn run_member<F>(
    cluster: &Cluster,
    local: &LocalEtcd,
    shutdown: F,
) -> Result<(), AgentError>
where
    F: std::future::Future<Output = ()>,
{
    let owner = cluster.os_user();
    ensure_dir(&local.dir, owner, 0o700)?;
    if local.tls {
        copy_tls(cluster, local)?;
    }
    stop_orphan(local).await;
    tokio::pin!(shutdown);
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
            () = &mut shutdown => {
                pidfile::stop(&local.etcd_pid(), Signal::SIGTERM, Duration::from_secs(5)).await;
                let _ = child.wait().await;
                return Ok(());
            }
        }
    }
}

/// Copies the CA and the members' certificate and key from the secrets
/// into the member's directory, owned by the OS user that runs etcd.
fn copy_tls(cluster: &Cluster, local: &LocalEtcd) -> Result<(), AgentError> {
    use pgkeel_cluster::etcd_pki::files;
    let owner = cluster.os_user();
    ensure_dir(&local.tls_dir(), owner, 0o700)?;
    for (from, to) in [
        (files::CA_CERT, "ca.crt"),
        (files::SERVER_CERT, "server.crt"),
        (files::SERVER_KEY, "server.key"),
    ] {
        let source = cluster.layout.secrets_dir().join(from);
        let text = std::fs::read_to_string(&source).map_err(|e| AgentError::Process {
            action: format!("read {}", source.display()),
            detail: format!("{e}; `pgkeel init --node ...` writes it"),
        })?;
        pgkeel_pg::fsutil::write_owned(&local.tls_dir().join(to), &text, owner, 0o600)?;
    }
    Ok(())
}

/// Stops an etcd of this member that outlived the process that ran it (an
/// agent killed outright cannot stop its child): it holds the ports and
/// the data directory. Only a process whose command line names this
/// member's data directory is touched, so a reused PID is never hit.
async fn stop_orphan(local: &LocalEtcd) {
    let Some(pid) = pidfile::alive_pid(&local.etcd_pid()) else {
        return;
    };
    let data = local.dir.join("data").display().to_string();
    let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).contains(&data))
        .unwrap_or(false);
    if ours {
        tracing_line(&format!(
            "etcd member {} still runs from an earlier start (pid {pid}): stopping it",
            local.name
        ));
        pidfile::stop(&local.etcd_pid(), Signal::SIGTERM, Duration::from_secs(5)).await;
    }
}

/// Starts the supervisor (detached) unless it runs, and waits until etcd
/// answers.
pub async fn ensure_running(
    cluster: &Cluster,
    exe: &std::path::Path,
) -> Result<Option<u32>, AgentError> {
    let Some(local) = LocalEtcd::first(cluster) else {
        return Ok(None);
    };
    if pidfile::alive_pid(&local.supervisor_pid()).is_none() {
        ensure_dir(&local.dir, cluster.os_user(), 0o700)?;
        let root = cluster.layout.root().display().to_string();
        spawn_detached(
            exe,
            &["etcd-supervisor", "--dir", &root, "--node", &local.name],
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
    match LocalEtcd::first(cluster) {
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
    // A daemon of a local cluster reads the configuration stored in its
    // data root (`--dir`), never a ./pgkeel.toml or PGKEEL_CONFIG that was
    // in effect where `up` ran: those may predate the flags `up` stored.
    let child = Command::new(exe)
        .args(args)
        .current_dir("/")
        .env_remove("PGKEEL_CONFIG")
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

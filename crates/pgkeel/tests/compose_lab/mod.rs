//! An exported compose cluster on this machine's Docker: `pgkeel init`,
//! `pgkeel export compose`, `docker-compose build` on the local base image
//! (`.ci/base-image.sh pgkeel`), `docker-compose up`. Each lab has its own
//! compose project, subnet and published ports, and is torn down with
//! `docker-compose down -v --rmi local` when dropped, also on failure.
//! Labs a killed test process left behind are removed by the next one.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgkeel_dcs::{ClusterView, Dcs};
use pgkeel_testkit::{TestDir, free_port_block};
use tokio::process::Command;
use tokio_postgres::{Client, NoTls};

use crate::common::{TestResult, pgkeel, text};

/// Compose project names of test labs start with this, then the owning
/// process's PID and `x`.
const PROJECT_PREFIX: &str = "pgkeeltest";
/// Node names, in configuration order.
pub const NODES: [&str; 3] = ["pg1", "pg2", "pg3"];
/// The base image the labs build on.
const BASE_IMAGE: &str = "pgkeel-base:bookworm";

/// Runs a command, returning its stdout; an error with its output if it
/// fails.
pub async fn run(program: &str, args: &[&str], cwd: Option<&Path>) -> TestResult<String> {
    let mut cmd = Command::new(program);
    cmd.args(args).env("BASE_IMAGE", BASE_IMAGE);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Builds (or finds cached) the local base image, once per test process.
async fn base_image() -> TestResult {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_try_init(|| async {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/base-image.sh");
        let script = script.display().to_string();
        run("bash", &[&script, "pgkeel"], None).await.map(drop)
    })
    .await
    .map(drop)
}

/// Removes what labs of dead test processes left: their containers,
/// networks and volumes (found by compose's project label).
async fn sweep_dead_labs() {
    let mut projects: Vec<String> = vec![];
    for kind in [
        [
            "ps",
            "-a",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ],
        [
            "network",
            "ls",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ],
        [
            "volume",
            "ls",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ],
    ] {
        if let Ok(out) = run("docker", &kind, None).await {
            projects.extend(out.lines().map(str::to_string));
        }
    }
    projects.sort();
    projects.dedup();
    for project in projects {
        let Some(rest) = project.strip_prefix(PROJECT_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_project(&project).await;
    }
}

/// Removes a project's containers, then its networks and volumes, by label.
async fn remove_project(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    for (list, remove) in [
        (
            vec!["ps", "-aq", "--filter", &label],
            vec!["rm", "-f", "-v"],
        ),
        (
            vec!["network", "ls", "-q", "--filter", &label],
            vec!["network", "rm"],
        ),
        (
            vec!["volume", "ls", "-q", "--filter", &label],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        if let Ok(ids) = run("docker", &list, None).await {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = remove.clone();
                args.extend(ids);
                let _ = run("docker", &args, None).await;
            }
        }
    }
}

/// One exported cluster.
pub struct Lab {
    /// Compose project name.
    pub project: String,
    /// The export directory (docker-compose.yml).
    pub dir: PathBuf,
    /// Published port of node `i` is `base + i`; the proxy's `base + 1000`.
    pub base: u16,
    /// The compose network.
    pub subnet_prefix: String,
    /// The application role's password.
    pub app_password: String,
    /// The superuser's password.
    pub super_password: String,
    /// Cluster name.
    pub cluster: String,
    up: bool,
    _home: TestDir,
}

impl Lab {
    /// Writes and exports a fresh cluster (`tag` names it in the project);
    /// nothing is started.
    pub async fn new(tag: &str) -> TestResult<Lab> {
        sweep_dead_labs().await;
        base_image().await?;
        let home = TestDir::new()?;
        let base = free_port_block(3);
        // A subnet per lab, from its port block (unique in this process;
        // ports are spread over processes).
        let subnet_prefix = format!("10.{}.{}", 90 + (base >> 8) % 100, base & 0xff);
        let cluster = format!("t{tag}");
        let origin = home.path().join("origin");
        let config = origin.join("pgkeel.toml");
        let config_arg = config.display().to_string();
        let mut args = vec!["init", "-o", &config_arg, "--name", &cluster];
        let nodes: Vec<String> = NODES
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}={subnet_prefix}.{}", 11 + i))
            .collect();
        for n in &nodes {
            args.extend(["--node", n.as_str()]);
        }
        let out = pgkeel(home.path(), &args, &[]);
        if !out.status.success() {
            return Err(format!("pgkeel init: {}", text(&out)).into());
        }
        // Small servers: three of them (and the proxy) share two cores.
        let mut toml = std::fs::read_to_string(&config)?;
        toml.push_str("[tuning]\nmemory = \"256MB\"\nmax_connections = 50\n");
        std::fs::write(&config, toml)?;
        let dir = home.path().join("export");
        let subnet = format!("{subnet_prefix}.0/24");
        let publish = base.to_string();
        let out = pgkeel(
            home.path(),
            &[
                "export",
                "compose",
                "--config",
                &config_arg,
                "-o",
                &dir.display().to_string(),
                "--subnet",
                &subnet,
                "--publish-base",
                &publish,
            ],
            &[],
        );
        if !out.status.success() {
            return Err(format!("pgkeel export compose: {}", text(&out)).into());
        }
        let secret = |name: &str| -> TestResult<String> {
            Ok(std::fs::read_to_string(dir.join("secrets").join(name))?
                .trim()
                .to_string())
        };
        Ok(Lab {
            project: format!("{PROJECT_PREFIX}{}x{tag}", std::process::id()),
            app_password: secret("app.password")?,
            super_password: secret("superuser.password")?,
            dir,
            base,
            subnet_prefix,
            cluster,
            up: false,
            _home: home,
        })
    }

    /// `docker-compose -p PROJECT args...` in the export directory.
    pub async fn compose(&self, args: &[&str]) -> TestResult<String> {
        let mut all = vec!["-p", self.project.as_str()];
        all.extend_from_slice(args);
        run("docker-compose", &all, Some(&self.dir)).await
    }

    /// Builds the image once and tags it for every service (what
    /// `docker-compose build` would do four times over), so `up` finds
    /// them; `down --rmi local` removes the tags.
    pub async fn build(&mut self) -> TestResult {
        self.up = true;
        let first = format!("{}_{}", self.project, NODES[0]);
        let arg = format!("BASE_IMAGE={BASE_IMAGE}");
        let dir = self.dir.display().to_string();
        run(
            "docker",
            &["build", "-q", "--build-arg", &arg, "-t", &first, &dir],
            None,
        )
        .await?;
        for service in NODES.iter().skip(1).chain(["proxy"].iter()) {
            let tag = format!("{}_{service}", self.project);
            run("docker", &["tag", &first, &tag], None).await?;
        }
        Ok(())
    }

    /// `up -d` (built before).
    pub async fn up(&mut self) -> TestResult {
        self.up = true;
        self.compose(&["up", "-d"]).await.map(drop)
    }

    /// Creates every container, then starts the three nodes with one
    /// `docker start` (at the same moment, as far as Docker allows).
    pub async fn start_nodes_together(&mut self) -> TestResult {
        self.up = true;
        self.compose(&["up", "--no-start"]).await?;
        let names: Vec<String> = NODES.iter().map(|n| self.container(n)).collect();
        let mut args = vec!["start"];
        args.extend(names.iter().map(String::as_str));
        run("docker", &args, None).await.map(drop)
    }

    /// `down -v`: containers, network and volumes (images stay for the
    /// next round).
    pub async fn down(&self) -> TestResult {
        self.compose(&["down", "-v", "--timeout", "2"])
            .await
            .map(drop)
    }

    /// The container of a service.
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// Node `i`'s static address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet_prefix, 11 + i)
    }

    /// Index of a node name.
    pub fn index(name: &str) -> TestResult<usize> {
        NODES
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| format!("unknown node {name}").into())
    }

    /// Node `i`'s published PostgreSQL port.
    pub fn port(&self, i: usize) -> u16 {
        self.base + i as u16
    }

    /// The proxy's published port.
    pub fn proxy_port(&self) -> u16 {
        self.base + 1000
    }

    /// `docker <args>`.
    pub async fn docker(&self, args: &[&str]) -> TestResult<String> {
        run("docker", args, None).await
    }

    /// The cluster's keys, from the etcd members that answer (TLS and
    /// authentication with the exported secrets, as the agents do).
    pub async fn view(&self) -> TestResult<ClusterView> {
        let text = std::fs::read_to_string(self.dir.join("pgkeel.toml"))?;
        let mut config = pgkeel_core::config::load(&pgkeel_core::config::ConfigSources {
            file: Some(("pgkeel.toml".into(), text)),
            ..Default::default()
        })?;
        config.cluster.secrets_dir = Some(self.dir.join("secrets"));
        let layout = pgkeel_cluster::Cluster::layout_of(&config)?;
        let dcs: Dcs = pgkeel_agent::orchestrate::dcs_for(&config, &layout).await?;
        Ok(dcs.view().await?)
    }

    /// A connection as the application role to a published `port`.
    pub async fn connect(&self, port: u16) -> TestResult<Client> {
        let url = format!(
            "host=127.0.0.1 port={port} user=app password={} dbname=app connect_timeout=2",
            self.app_password
        );
        let (client, conn) =
            tokio::time::timeout(Duration::from_secs(3), tokio_postgres::connect(&url, NoTls))
                .await??;
        tokio::spawn(conn);
        Ok(client)
    }

    /// A superuser connection to node `i`.
    pub async fn connect_super(&self, i: usize) -> TestResult<Client> {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres password={} dbname=postgres connect_timeout=2",
            self.port(i),
            self.super_password
        );
        let (client, conn) =
            tokio::time::timeout(Duration::from_secs(3), tokio_postgres::connect(&url, NoTls))
                .await??;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Whether node `i` accepts writes (running, not in recovery).
    pub async fn writable(&self, i: usize) -> Option<bool> {
        let client = self.connect(self.port(i)).await.ok()?;
        let row = tokio::time::timeout(
            Duration::from_secs(2),
            client.query_one("SELECT NOT pg_is_in_recovery()", &[]),
        )
        .await
        .ok()?
        .ok()?;
        Some(row.get(0))
    }

    /// Waits for a leader whose two replicas stream (every member
    /// published, running, on the leader's timeline); returns its index.
    pub async fn ready(&self, within: Duration) -> TestResult<usize> {
        let start = Instant::now();
        loop {
            let last = match self.view().await {
                Ok(view) => {
                    if let Some(i) = ready_leader(&view) {
                        return Ok(i);
                    }
                    format!(
                        "{:?} {:?}",
                        view.leader,
                        view.members
                            .values()
                            .map(|m| (&m.name, &m.role, m.running, m.streaming))
                            .collect::<Vec<_>>()
                    )
                }
                Err(e) => e.to_string(),
            };
            if start.elapsed() > within {
                return Err(format!("no ready cluster after {within:?}; last: {last}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A node's container log (the agent's output).
    pub async fn logs(&self, service: &str) -> String {
        let name = self.container(service);
        match Command::new("docker").args(["logs", &name]).output().await {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(docker logs {name}: {e})"),
        }
    }

    /// Every node's log, for failure messages.
    pub async fn all_logs(&self) -> String {
        let mut out = String::new();
        for service in NODES.iter().chain(["proxy"].iter()) {
            let log = self.logs(service).await;
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("\n===== {service} (last 40 lines)\n"));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The leader, when both other members stream from it.
pub fn ready_leader(view: &ClusterView) -> Option<usize> {
    let leader = view.leader.as_deref()?;
    let i = Lab::index(leader).ok()?;
    let primary = view.members.get(leader)?;
    let ok = primary.running
        && primary.role == "primary"
        && NODES.iter().filter(|n| **n != leader).all(|n| {
            view.members.get(*n).is_some_and(|m| {
                m.running && m.streaming && m.role == "replica" && m.timeline == primary.timeline
            })
        });
    ok.then_some(i)
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.up {
            return;
        }
        if std::thread::panicking() {
            eprintln!("compose lab {} failed; tearing it down", self.project);
        }
        // Blocking: Drop cannot await, and the runtime may be gone.
        let down = std::process::Command::new("docker-compose")
            .args([
                "-p",
                &self.project,
                "down",
                "-v",
                "--rmi",
                "local",
                "--timeout",
                "2",
            ])
            .current_dir(&self.dir)
            .output();
        match down {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "docker-compose down of {} failed: {}",
                self.project,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run docker-compose down for {}: {e}", self.project),
        }
    }
}

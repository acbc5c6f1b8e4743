//! Hosts in network namespaces for multi-host tests: each with its own
//! data root and its own copy of the config and secrets `pgkeel init
//! --node ...` wrote, its agent started with `--with-etcd` (one etcd
//! member per host), observed over its Unix socket, with etcd read from
//! the lab's switch namespace.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgkeel_cluster::Cluster;
use pgkeel_dcs::ClusterView;
use pgkeel_testkit::netlab::{NetLab, NsProcess, command_in, run_in};
use pgkeel_testkit::{ClusterGuard, TestDir, free_port_block};
use tokio::sync::Mutex;

use crate::common::{TestResult, text};

/// One lab at a time: three agents, three etcd members and three
/// PostgreSQL servers on two cores.
pub static SERIAL: Mutex<()> = Mutex::const_new(());

pub const NODES: [&str; 3] = ["pg1", "pg2", "pg3"];

pub fn pgkeel_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pgkeel"))
}

/// Three hosts. Fields drop in order: agents (each stops its etcd member),
/// then the postmasters by PID, then the namespaces, then the directory.
pub struct Hosts {
    pub agents: Vec<Option<NsProcess>>,
    pub guards: Vec<ClusterGuard>,
    pub net: NetLab,
    /// `host-<i>/`: that host's config, secrets and data root.
    pub homes: Vec<PathBuf>,
    /// The shared config as an operator's host reads it (with its secrets).
    pub config: pgkeel_core::Config,
    /// First PostgreSQL port: node `i` listens on `base + i`.
    pub base: u16,
    pub dir: TestDir,
}

impl Hosts {
    /// Writes the config with `pgkeel init --node ...` and gives each
    /// host its own copy of it and of the secrets.
    pub fn new() -> TestResult<Hosts> {
        Self::with_spare(0)
    }

    /// Three hosts running the cluster, and `spare` more namespaces (and
    /// ports: host `i` uses `base + i`) for nodes added later.
    pub fn with_spare(spare: usize) -> TestResult<Hosts> {
        let net = NetLab::new(NODES.len() + spare).map_err(|e| format!("{e}"))?;
        let dir = TestDir::new()?;
        let base = free_port_block((NODES.len() + spare) as u16);
        let etcd = free_port_block(2);
        let origin = dir.path().join("origin");
        std::fs::create_dir_all(&origin)?;
        let mut args: Vec<String> = vec!["init".into(), "-o".into()];
        args.push(origin.join("pgkeel.toml").display().to_string());
        args.extend(["--name".into(), "lab".into()]);
        for (i, name) in NODES.iter().enumerate() {
            args.push("--node".into());
            args.push(format!("{name}={}:{}", net.node(i)?.addr, base + i as u16));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::common::pgkeel(dir.path(), &args, &[]);
        if !out.status.success() {
            return Err(format!("pgkeel init: {}", text(&out)).into());
        }
        // Free ports for etcd (the default 2379/2380 would do in private
        // namespaces, but no test hard-codes a port) and a small footprint.
        let config = std::fs::read_to_string(origin.join("pgkeel.toml"))?
            .replace("client_port = 2379", &format!("client_port = {etcd}"))
            .replace("peer_port = 2380", &format!("peer_port = {}", etcd + 1))
            + "[tuning]\nmemory = \"256MB\"\nmax_connections = 50\n";
        std::fs::write(origin.join("pgkeel.toml"), &config)?;
        let mut homes = vec![];
        let mut guards = vec![];
        for i in 0..NODES.len() {
            let home = dir.path().join(format!("host-{i}"));
            std::fs::create_dir_all(&home)?;
            std::fs::write(home.join("pgkeel.toml"), &config)?;
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(origin.join("secrets"))
                .arg(home.join("secrets"))
                .status()?;
            if !status.success() {
                return Err("cp -a secrets".into());
            }
            guards.push(ClusterGuard::new(&home.join("data")));
            homes.push(home);
        }
        let mut shared = pgkeel_core::config::load(&pgkeel_core::config::ConfigSources {
            file: Some(("pgkeel.toml".into(), config.clone())),
            ..Default::default()
        })?;
        shared.anchor_secrets_dir(&origin);
        Ok(Hosts {
            agents: vec![None, None, None],
            guards,
            net,
            homes,
            config: shared,
            base,
            dir,
        })
    }

    /// `pgkeel agent --with-etcd` of node `i` in its namespace, on its
    /// host's config and data root.
    pub fn start_agent(&mut self, i: usize) -> TestResult {
        let home = self.homes[i].clone();
        self.agents[i] = Some(self.spawn_agent(i, &home, NODES[i], &["--with-etcd"])?);
        Ok(())
    }

    /// `pgkeel agent --node NODE EXTRA...` in namespace `i`, on the config
    /// and data root under `home`, logging to `home/agent-NODE.log`.
    pub fn spawn_agent(
        &self,
        i: usize,
        home: &Path,
        node: &str,
        extra: &[&str],
    ) -> TestResult<NsProcess> {
        let config = home.join("pgkeel.toml").display().to_string();
        let root = home.join("data").display().to_string();
        let mut args = vec!["agent", "--config", &config, "--dir", &root, "--node", node];
        args.extend_from_slice(extra);
        Ok(NsProcess::spawn(
            &self.net.node(i)?.namespace,
            &pgkeel_exe(),
            &args,
            &home.join(format!("agent-{node}.log")),
        )?)
    }

    pub fn root(&self, i: usize) -> PathBuf {
        self.homes[i].join("data")
    }

    /// The cluster as host `i` stored it (written by its agent).
    pub fn cluster(&self, i: usize) -> TestResult<Cluster> {
        Ok(Cluster::open(&self.root(i))?)
    }

    /// Runs `task` in `namespace` on a runtime of its own (a thread in a
    /// namespace cannot share the test's runtime).
    pub async fn in_namespace<T, F, Fut>(namespace: &str, task: F) -> TestResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = TestResult<T>>,
    {
        let ns = namespace.to_string();
        tokio::task::spawn_blocking(move || {
            run_in(&ns, move || -> TestResult<T> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(task())
            })?
        })
        .await?
    }

    /// etcd as the cluster's user, over TLS, from the switch namespace.
    async fn with_dcs<T, F, Fut>(&self, task: F) -> TestResult<T>
    where
        T: Send + 'static,
        F: FnOnce(pgkeel_dcs::Dcs) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = TestResult<T>>,
    {
        let config = self.config.clone();
        Self::in_namespace(self.net.switch_namespace(), move || async move {
            let layout = Cluster::layout_of(&config)?;
            let dcs = pgkeel_agent::orchestrate::dcs_for(&config, &layout).await?;
            task(dcs).await
        })
        .await
    }

    /// The cluster's keys.
    pub async fn view(&self) -> TestResult<ClusterView> {
        self.with_dcs(|dcs| async move { Ok(dcs.view().await?) })
            .await
    }

    /// The etcd member that leads etcd.
    pub async fn etcd_leader(&self) -> TestResult<Option<String>> {
        self.with_dcs(|dcs| async move { Ok(dcs.etcd_leader().await?) })
            .await
    }

    /// Hands etcd's leadership to `member` (refused, and ignored, when it
    /// leads already).
    pub async fn move_etcd_leader_to(&self, member: &'static str) -> TestResult {
        self.with_dcs(move |dcs| async move {
            let _ = dcs.move_etcd_leadership_to(member).await;
            Ok(())
        })
        .await
    }

    /// A superuser session on node `i` over its socket.
    pub async fn connect(&self, i: usize) -> TestResult<pgkeel_pg::probe::NodeConn> {
        let cluster = self.cluster(i)?;
        let node = cluster.node(NODES[i])?.clone();
        Ok(tokio::time::timeout(Duration::from_secs(5), cluster.connect(&node)).await??)
    }

    pub async fn number(&self, i: usize, query: &str) -> TestResult<i64> {
        let conn = self.connect(i).await?;
        Ok(conn.client().query_one(query, &[]).await?.get(0))
    }

    /// Waits for a leader whose PostgreSQL has both others streaming.
    pub async fn ready(&self) -> TestResult<usize> {
        let start = Instant::now();
        loop {
            if let Ok(view) = self.view().await
                && let Some(leader) = view.leader.as_deref()
                && view.members.len() == NODES.len()
                && let Some(i) = NODES.iter().position(|n| *n == leader)
                && self
                    .number(
                        i,
                        "SELECT count(*) FROM pg_stat_replication \
                         WHERE state = 'streaming' AND application_name IN ('pg1', 'pg2', 'pg3')",
                    )
                    .await
                    .ok()
                    == Some(2)
            {
                return Ok(i);
            }
            if start.elapsed() > Duration::from_secs(90) {
                return Err(format!(
                    "no ready cluster after 90 s; last view: {:?}",
                    self.view().await
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `pgkeel ARGS --config origin/pgkeel.toml` from the lab's switch
    /// namespace: a host with the config and the secrets but no node (an
    /// operator's machine), outside `access.networks`.
    pub fn operator(&self, args: &[&str]) -> TestResult<String> {
        let config = self.dir.path().join("origin/pgkeel.toml");
        let out = command_in(self.net.switch_namespace(), pgkeel_exe())
            .args(args)
            .arg("--config")
            .arg(&config)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!("pgkeel {}: {}", args.join(" "), text(&out)).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Waits until agent `i` has exited, returning its log.
    pub async fn exited(&mut self, i: usize, within: Duration) -> TestResult<String> {
        let start = Instant::now();
        while self.agents[i].as_mut().is_some_and(NsProcess::running) {
            if start.elapsed() > within {
                return Err(format!("agent {} still runs after {within:?}", NODES[i]).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = self.homes[i].join(format!("agent-{}.log", NODES[i]));
        Ok(std::fs::read_to_string(log)?)
    }
}

/// Which entries a directory holds.
pub fn entries(dir: &Path) -> TestResult<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().to_string()))
        .collect::<TestResult<_>>()?;
    names.sort();
    Ok(names)
}

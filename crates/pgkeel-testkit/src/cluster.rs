//! A real cluster in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgkeel_cluster::url::{Credentials, UrlTarget};
use pgkeel_cluster::{Cluster, SilentProgress, up};
use pgkeel_core::config::{ConfigSources, load};
use pgkeel_pg::pgctl;
use tokio_postgres::{Client, NoTls};

use crate::{ClusterGuard, free_port_block, leftovers};

/// A temporary directory the PostgreSQL OS user can enter (plain tempdirs
/// are 0700 root-owned when tests run as root), recording its owner so a
/// later test process can clean up if this one is killed (see
/// [`crate::sweep_orphans_in`]). Removed on drop, unless
/// the test is failing (dropped while panicking) or [`KEEP_TEST_DIRS`] is
/// set. A failing test's directory is kept without its `data` directories
/// (hundreds of MB each; [`KEEP_TEST_DIRS`] keeps them too), and its path
/// and the tails of the logs in it (agents, etcd, PostgreSQL, proxy) are
/// printed, so a failure in CI shows its cause.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

/// Environment variable that keeps every test directory, failing or not.
pub const KEEP_TEST_DIRS: &str = "PGKEEL_KEEP_TEST_DIRS";

/// Lines printed from the end of each log of a kept directory.
const LOG_TAIL_LINES: usize = 40;

impl TestDir {
    /// Creates one under the system temp dir.
    pub fn new() -> std::io::Result<Self> {
        leftovers::sweep_orphans_once();
        let dir = tempfile::Builder::new()
            .prefix(leftovers::TEST_DIR_PREFIX)
            .tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        leftovers::record_owner(dir.path())?;
        Ok(TestDir {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        if !failing && std::env::var_os(KEEP_TEST_DIRS).is_none() {
            return; // the TempDir removes it
        }
        let Some(dir) = self.dir.take() else { return };
        let path = dir.keep();
        leftovers::mark_kept(&path);
        if std::env::var_os(KEEP_TEST_DIRS).is_some() {
            eprintln!("pgkeel-testkit: kept {} ({KEEP_TEST_DIRS})", path.display());
        } else {
            remove_data_dirs(&path, 0);
            eprintln!(
                "pgkeel-testkit: the test failed: kept {} without its data directories \
                 (set {KEEP_TEST_DIRS}=1 to keep them)",
                path.display()
            );
        }
        if failing {
            for log in log_files(&path, 0) {
                eprintln!(
                    "----- last {LOG_TAIL_LINES} lines of {} -----\n{}",
                    log.display(),
                    tail(&log, LOG_TAIL_LINES)
                );
            }
        }
    }
}

/// Removes every directory named `data` under `dir` (PostgreSQL's and
/// etcd's), best effort.
fn remove_data_dirs(dir: &Path, depth: usize) {
    if depth > 5 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if !path.is_dir() || path.is_symlink() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "data") {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            remove_data_dirs(&path, depth + 1);
        }
    }
}

/// `*.log` files under `dir` (not inside data directories), sorted.
fn log_files(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut found = vec![];
    if depth > 5 {
        return found;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        if path.is_dir() {
            if name.as_deref() != Some("data") {
                found.extend(log_files(&path, depth + 1));
            }
        } else if name.is_some_and(|n| n.ends_with(".log")) {
            found.push(path);
        }
    }
    found
}

/// The last `lines` lines of a text file (or why it cannot be read).
fn tail(file: &Path, lines: usize) -> String {
    match std::fs::read(file) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read it: {e})"),
    }
}

/// A running cluster built through the library, stopped by PID on drop.
pub struct TempCluster {
    /// The cluster.
    pub cluster: Cluster,
    /// First port.
    pub base_port: u16,
    // Field order matters: the guard stops servers before the dir goes.
    _guard: ClusterGuard,
    _dir: TestDir,
}

/// Result type of the helpers.
pub type TestResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl TempCluster {
    /// Stands up a cluster with `replicas` replicas in `mode` (`async`,
    /// `sync`, `quorum`) on free ports.
    pub async fn start(replicas: usize, mode: &str) -> TestResult<Self> {
        let dir = TestDir::new()?;
        let root: PathBuf = dir.path().join("cluster");
        let base_port = free_port_block(replicas as u16 + 1);
        let text = format!(
            "[cluster]\ndata_dir = \"{}\"\nreplicas = {replicas}\nbase_port = {base_port}\n[replication]\nmode = \"{mode}\"\n[tuning]\nmemory = \"512MB\"\n",
            root.display()
        );
        let config = load(&ConfigSources {
            file: Some(("test config".into(), text)),
            ..Default::default()
        })?;
        let guard = ClusterGuard::new(&root);
        let cluster = Cluster::prepare(config)?;
        up(&cluster, Arc::new(SilentProgress)).await?;
        Ok(TempCluster {
            cluster,
            base_port,
            _guard: guard,
            _dir: dir,
        })
    }

    /// Application-role URL of a node.
    pub async fn url(&self, node: &str) -> TestResult<String> {
        Ok(self
            .cluster
            .url(&UrlTarget::Node(node.into()), Credentials::App)
            .await?)
    }

    /// A client on a node as the application role.
    pub async fn client(&self, node: &str) -> TestResult<Client> {
        connect_url(&self.url(node).await?).await
    }

    /// Stops one node cleanly.
    pub async fn stop_node(&self, node: &str) -> TestResult<()> {
        let data = self.cluster.layout.data_dir(node);
        pgctl::stop(&self.cluster.runner, node, &data, pgctl::StopMode::Fast).await?;
        Ok(())
    }

    /// Starts one node again.
    pub async fn start_node(&self, node: &str) -> TestResult<()> {
        let data = self.cluster.layout.data_dir(node);
        pgctl::start(
            &self.cluster.runner,
            node,
            &data,
            &self.cluster.layout.log_file(node),
        )
        .await?;
        Ok(())
    }

    /// Polls `check` every 50 ms until it returns true or `timeout` passes.
    pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// Connects to `url` and drives the connection in the background.
pub async fn connect_url(url: &str) -> TestResult<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

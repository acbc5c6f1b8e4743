//! Helpers shared by the integration tests: pools over a real
//! `TempCluster`, superuser sessions, node ports.

#![allow(dead_code)]

use std::time::Duration;

use pgkeel_client::{PoolConfig, ReplicatedPool};
use pgkeel_cluster::url::{Credentials, UrlTarget};
use pgkeel_testkit::{TempCluster, connect_url};
use tokio_postgres::Client;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The node names of a test cluster.
pub const NODES: [&str; 3] = ["primary", "replica1", "replica2"];

/// Pool settings for every node of `cluster`, from their URLs, probed
/// often so tests see changes quickly. The connect timeout (which also
/// bounds each health probe) is generous: on a loaded machine a probe
/// slower than 2 s marked a healthy node down (a rediscovery, reads off
/// one replica) and broke tests that count those. A stopped node refuses
/// at once, so the tests do not wait for it.
pub async fn pool_config(cluster: &TempCluster) -> TestResult<PoolConfig> {
    let mut urls = Vec::new();
    for node in NODES {
        urls.push(cluster.url(node).await?);
    }
    let mut config = PoolConfig::from_urls(&urls)?;
    config.health_interval = Duration::from_millis(100);
    config.connect_timeout = Duration::from_secs(10);
    Ok(config)
}

/// A pool over every node of `cluster`.
pub async fn pool(cluster: &TempCluster) -> TestResult<ReplicatedPool> {
    Ok(ReplicatedPool::new(pool_config(cluster).await?).await?)
}

/// A superuser session on `node`, in the application's database.
pub async fn superuser(cluster: &TempCluster, node: &str) -> TestResult<Client> {
    let url = cluster
        .cluster
        .url(&UrlTarget::Node(node.into()), Credentials::Superuser)
        .await?;
    let base = url
        .strip_suffix("/postgres")
        .ok_or_else(|| format!("unexpected superuser URL shape: {url}"))?;
    connect_url(&format!("{base}/{}", cluster.cluster.config.roles.database)).await
}

/// The port `node` listens on.
pub fn port(cluster: &TempCluster, node: &str) -> TestResult<u16> {
    cluster
        .cluster
        .config
        .nodes
        .iter()
        .find(|n| n.name.as_str() == node)
        .map(|n| n.port)
        .ok_or_else(|| format!("no node {node}").into())
}

/// The name of the node listening on `port`.
pub fn node_of(cluster: &TempCluster, port: u16) -> String {
    cluster
        .cluster
        .config
        .nodes
        .iter()
        .find(|n| n.port == port)
        .map(|n| n.name.to_string())
        .unwrap_or_else(|| format!("port {port}"))
}

/// Polls `check` every 50 ms for up to `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    TempCluster::eventually(timeout, check).await
}
pub mod http;

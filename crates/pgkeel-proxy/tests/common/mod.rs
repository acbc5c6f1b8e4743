//! A real cluster with a proxy in front, for the integration tests.

#![allow(dead_code)]

use std::time::Duration;

use pgkeel_cluster::layout::Secret;
use pgkeel_cluster::url::format_url;
use pgkeel_pg::secrets::read_password;
use pgkeel_proxy::{ClusterProxyOptions, ProxyConfig, ProxyHandle, config_for_cluster, start};
use pgkeel_testkit::{TempCluster, connect_url, free_port_block};
use tokio_postgres::Client;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub struct Env {
    pub proxy: Option<ProxyHandle>,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: String,
    // Dropped last: stops the servers by PID.
    pub cluster: TempCluster,
}

impl Env {
    /// A cluster with `replicas` replicas (async) and a proxy whose
    /// configuration `adjust` may change.
    pub async fn start(replicas: usize, adjust: impl FnOnce(&mut ProxyConfig)) -> TestResult<Env> {
        Self::start_with(replicas, |_| {}, adjust).await
    }

    /// As [`Env::start`], with the cluster-level proxy options adjusted
    /// first (`auth_query`, TLS files...).
    pub async fn start_with(
        replicas: usize,
        options: impl FnOnce(&mut ClusterProxyOptions),
        adjust: impl FnOnce(&mut ProxyConfig),
    ) -> TestResult<Env> {
        let cluster = TempCluster::start(replicas, "async").await?;
        let port = free_port_block(1);
        let mut opts = ClusterProxyOptions::new(([127, 0, 0, 1], port).into());
        options(&mut opts);
        let proxy = Self::proxy_for(&cluster, &opts, replicas, adjust).await?;
        let password = read_password(&cluster.cluster.layout.password_file(Secret::App))?;
        Ok(Env {
            proxy: Some(proxy),
            port,
            user: cluster.cluster.config.roles.app.clone(),
            database: cluster.cluster.config.roles.database.clone(),
            password,
            cluster,
        })
    }

    /// Starts a proxy in front of `cluster` and waits for its health checks.
    pub async fn proxy_for(
        cluster: &TempCluster,
        options: &ClusterProxyOptions,
        replicas: usize,
        adjust: impl FnOnce(&mut ProxyConfig),
    ) -> TestResult<ProxyHandle> {
        let mut config = config_for_cluster(cluster.cluster.layout.root(), options)?;
        config.health_interval = Duration::from_millis(200);
        adjust(&mut config);
        let proxy = start(config).await?;
        if !proxy.wait_ready(replicas, Duration::from_secs(30)).await {
            return Err("proxy did not see the primary and replicas within 30 s".into());
        }
        Ok(proxy)
    }

    /// The superuser's name and password.
    pub fn superuser(&self) -> TestResult<(String, String)> {
        let password =
            read_password(&self.cluster.cluster.layout.password_file(Secret::Superuser))?;
        Ok((self.cluster.cluster.superuser.clone(), password))
    }

    /// URL of the proxy at `port` for any role.
    pub fn url_as(&self, port: u16, user: &str, password: &str) -> String {
        format_url(user, password, "127.0.0.1", port, &self.database)
    }

    /// URL of the proxy for the application role.
    pub fn url(&self) -> String {
        format_url(
            &self.user,
            &self.password,
            "127.0.0.1",
            self.port,
            &self.database,
        )
    }

    /// A client through the proxy.
    pub async fn client(&self) -> TestResult<Client> {
        connect_url(&self.url()).await
    }

    /// Port of a node.
    pub fn node_port(&self, node: &str) -> TestResult<u16> {
        Ok(self
            .cluster
            .cluster
            .config
            .nodes
            .iter()
            .find(|n| n.name.to_string() == node)
            .ok_or("no such node")?
            .port)
    }

    /// Stops the proxy, letting clients drain briefly.
    pub async fn stop_proxy(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_millis(200)).await;
        }
    }
}

/// Runs a test body with a deadline: on timeout the body (and with it the
/// cluster guard, which stops the servers) is dropped and the test fails.
pub async fn within(secs: u64, body: impl std::future::Future<Output = TestResult>) -> TestResult {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

/// Logs in over a raw socket (SCRAM-SHA-256) and returns the stream ready
/// for queries, so tests can then send bytes no driver would.
pub async fn raw_login(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> TestResult<tokio::net::TcpStream> {
    use pgkeel_wire::backend::Authentication;
    use pgkeel_wire::{BackendMessage, FrontendMessage, StartupPacket};
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut out = Vec::new();
    StartupPacket::Startup {
        minor: 0,
        params: vec![("user", user), ("database", database)],
    }
    .encode(&mut out);
    s.write_all(&out).await?;
    let mut buf = bytes::BytesMut::new();
    let mut scram: Option<ScramSha256> = None;
    loop {
        let len = loop {
            if let Some((_, len)) = pgkeel_wire::split_message(&buf, 1 << 20)? {
                break len;
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Err("proxy closed during login".into());
            }
        };
        let frame = buf.split_to(len);
        let mut reply = Vec::new();
        match BackendMessage::decode(&frame)? {
            BackendMessage::Authentication(Authentication::Sasl(_)) => {
                let c = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                let mut body = b"SCRAM-SHA-256\0".to_vec();
                body.extend_from_slice(&(c.message().len() as i32).to_be_bytes());
                body.extend_from_slice(c.message());
                FrontendMessage::Password(&body).encode(&mut reply);
                scram = Some(c);
            }
            BackendMessage::Authentication(Authentication::SaslContinue(d)) => {
                let c = scram.as_mut().ok_or("no SCRAM")?;
                c.update(d)?;
                FrontendMessage::Password(c.message()).encode(&mut reply);
            }
            BackendMessage::Authentication(Authentication::SaslFinal(d)) => {
                scram.as_mut().ok_or("no SCRAM")?.finish(d)?;
            }
            BackendMessage::ReadyForQuery(_) => return Ok(s),
            BackendMessage::ErrorResponse(e) => {
                return Err(format!("login failed: {:?}", e.message()).into());
            }
            _ => {}
        }
        if !reply.is_empty() {
            s.write_all(&reply).await?;
        }
    }
}

/// Reads until the proxy closes the connection (or 10 s pass) and returns
/// everything it sent.
pub async fn read_to_close(s: &mut tokio::net::TcpStream) -> TestResult<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .map_err(|_| "proxy kept the connection open")??;
    Ok(all)
}

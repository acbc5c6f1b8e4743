//! A real cluster with a proxy in front, for the integration tests.

#![allow(dead_code)]

pub mod got;
pub mod reply;

use std::time::Duration;

use bytes::BytesMut;
use pgkeel_cluster::layout::Secret;
use pgkeel_cluster::url::format_url;
use pgkeel_pg::secrets::read_password;
use pgkeel_proxy::{ClusterProxyOptions, ProxyConfig, ProxyHandle, config_for_cluster, start};
use pgkeel_testkit::{TempCluster, connect_url, free_port_block};
use pgkeel_wire::backend::error_code;
use pgkeel_wire::{BackendMessage, FrontendMessage, StartupPacket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
        // Chosen once the cluster runs, just before the proxy binds it:
        // the longer a free port waits, the likelier another process
        // takes it meanwhile.
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

    /// The running proxy's counters.
    pub fn metrics(&self) -> TestResult<&pgkeel_proxy::metrics::Metrics> {
        Ok(&self.proxy.as_ref().ok_or("no proxy")?.shared().metrics)
    }

    /// The superuser's name and password.
    pub fn superuser(&self) -> TestResult<(String, String)> {
        let password =
            read_password(&self.cluster.cluster.layout.password_file(Secret::Superuser))?;
        Ok((self.cluster.cluster.superuser.clone(), password))
    }

    /// The superuser connected to the primary directly (to grant, revoke
    /// and look behind the proxy's back).
    pub async fn primary_superuser(&self) -> TestResult<Client> {
        let (superuser, password) = self.superuser()?;
        let url = self.url_as(self.node_port("primary")?, &superuser, &password);
        connect_url(&url).await
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

    /// A primary alone and a proxy with one pooled server connection,
    /// shared by every client (the statement-name tests).
    pub async fn one_connection() -> TestResult<Env> {
        Self::start(0, |c| {
            c.pool_size = 1;
            c.queue_wait = Duration::from_secs(10);
        })
        .await
    }

    /// Terminates the proxy's server connections on the node at `port`
    /// (as a DBA or `idle_session_timeout` would) and waits until their
    /// backends are gone; how many there were.
    pub async fn terminate_pooled(&self, port: u16) -> TestResult<i64> {
        let (su, su_password) = self.superuser()?;
        let dba = connect_url(&self.url_as(port, &su, &su_password)).await?;
        let killed = dba
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = 'pgkeel-proxy'",
                &[],
            )
            .await?
            .get::<_, i64>(0);
        // Until the terminated backends are gone (a fixed pause was not
        // always enough on a loaded machine).
        let gone = TempCluster::eventually(Duration::from_secs(30), || async {
            dba.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgkeel-proxy'",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 0)
        })
        .await;
        if !gone {
            return Err("the terminated backends never exited".into());
        }
        Ok(killed)
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
    let (s, _) = raw_login_with(port, user, password, database, &[]).await?;
    Ok(s)
}

/// As [`raw_login`] with more startup parameters (`client_encoding`,
/// `options`...); also returns the ParameterStatus values of the login.
/// A refused login is an error naming the SQLSTATE and message.
pub async fn raw_login_with(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
    extra: &[(&str, &str)],
) -> TestResult<(tokio::net::TcpStream, Vec<(String, String)>)> {
    use pgkeel_wire::backend::Authentication;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut out = Vec::new();
    let mut params = vec![("user", user), ("database", database)];
    params.extend_from_slice(extra);
    StartupPacket::Startup { minor: 0, params }.encode(&mut out);
    s.write_all(&out).await?;
    let mut buf = bytes::BytesMut::new();
    let mut scram: Option<ScramSha256> = None;
    let mut reported = Vec::new();
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
            BackendMessage::ParameterStatus { name, value } => {
                reported.push((name.to_string(), value.to_string()));
            }
            BackendMessage::ReadyForQuery(_) => return Ok((s, reported)),
            BackendMessage::ErrorResponse(e) => {
                return Err(format!(
                    "login failed: {} {}",
                    e.code().unwrap_or("?"),
                    e.message().unwrap_or("?")
                )
                .into());
            }
            _ => {}
        }
        if !reply.is_empty() {
            s.write_all(&reply).await?;
        }
    }
}

/// Reads until the proxy closes the connection (or 30 s pass) and returns
/// everything it sent.
pub async fn read_to_close(s: &mut tokio::net::TcpStream) -> TestResult<Vec<u8>> {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut all))
        .await
        .map_err(|_| "proxy kept the connection open")??;
    Ok(all)
}

/// A logged-in raw connection that sends frames and reads tagged messages.
pub struct Raw {
    pub s: TcpStream,
    pub buf: BytesMut,
}

pub const NO_PARAMS: &[u8] = b"\0\0\0\0\0\0";

impl Raw {
    pub async fn login(env: &Env) -> TestResult<Raw> {
        let (raw, _) = Raw::login_with(env, &[]).await?;
        Ok(raw)
    }

    /// Logs in with more startup parameters; also returns the
    /// ParameterStatus values the proxy reported.
    pub async fn login_with(
        env: &Env,
        extra: &[(&str, &str)],
    ) -> TestResult<(Raw, Vec<(String, String)>)> {
        let (s, reported) =
            raw_login_with(env.port, &env.user, &env.password, &env.database, extra).await?;
        let raw = Raw {
            s,
            buf: BytesMut::new(),
        };
        Ok((raw, reported))
    }

    pub async fn send(&mut self, msgs: &[FrontendMessage<'_>]) -> TestResult {
        let mut out = Vec::new();
        for m in msgs {
            m.encode(&mut out);
        }
        self.s.write_all(&out).await?;
        Ok(())
    }

    /// The next message (tag and whole frame), or None after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> TestResult<Option<(u8, Vec<u8>)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((tag, len)) = pgkeel_wire::split_message(&self.buf, 1 << 26)? {
                return Ok(Some((tag, self.buf.split_to(len).to_vec())));
            }
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Ok(None),
                Ok(r) => {
                    if r? == 0 {
                        return Err("proxy closed the connection".into());
                    }
                }
            }
        }
    }

    /// Parses `query` as `name`, runs it once in its own batch and reads
    /// the answer.
    pub async fn run_parsed<N, Q>(&mut self, name: &N, query: &Q) -> TestResult<Answer>
    where
        N: AsRef<[u8]> + ?Sized,
        Q: AsRef<[u8]> + ?Sized,
    {
        self.send(&[parse(name, query), bind(name), EXEC, FrontendMessage::Sync])
            .await?;
        self.until_ready().await
    }

    pub async fn next(&mut self) -> TestResult<(u8, Vec<u8>)> {
        self.next_within(Duration::from_secs(30))
            .await?
            .ok_or_else(|| "no answer within 30 s".into())
    }

    /// Tags of the messages up to and including the next ReadyForQuery,
    /// with the SQLSTATEs of errors and the first DataRow's first column.
    pub async fn until_ready(&mut self) -> TestResult<Answer> {
        let mut a = Answer::default();
        loop {
            let (tag, frame) = self.next().await?;
            a.tags.push(char::from(tag));
            match tag {
                b'E' => a
                    .errors
                    .push(error_code(&frame[5..]).unwrap_or("?").to_string()),
                b'D' if a.row.is_none() => {
                    a.first = first_column(&frame);
                    if let Ok(BackendMessage::DataRow(cells)) = BackendMessage::decode(&frame) {
                        a.row = Some(cells.iter().map(|c| c.map(<[u8]>::to_vec)).collect());
                    }
                }
                b'Z' => {
                    a.status = frame.get(5).copied().map(char::from);
                    return Ok(a);
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Answer {
    pub tags: String,
    pub errors: Vec<String>,
    pub first: Option<String>,
    /// The first DataRow's values as sent (text in the client's encoding).
    pub row: Option<Vec<Option<Vec<u8>>>>,
    pub status: Option<char>,
}

/// The row's values as bytes, `None` for NULL.
/// Runs one simple query on a raw connection and reads its answer.
pub async fn query(raw: &mut Raw, sql: impl AsRef<[u8]>) -> TestResult<Answer> {
    raw.send(&[FrontendMessage::Query(sql.as_ref())]).await?;
    raw.until_ready().await
}

/// A raw answer's first row as text (NULL as "NULL").
pub fn texts(a: &Answer) -> Vec<String> {
    cells(a)
        .iter()
        .map(|c| String::from_utf8_lossy(c.unwrap_or(b"NULL")).into_owned())
        .collect()
}

pub fn cells(a: &Answer) -> Vec<Option<&[u8]>> {
    a.row.iter().flatten().map(|c| c.as_deref()).collect()
}

pub fn first_column(frame: &[u8]) -> Option<String> {
    let len = i32::from_be_bytes(frame.get(7..11)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    String::from_utf8(frame.get(11..11 + len)?.to_vec()).ok()
}

/// A Parse of text as a test writes it: `&str`, or bytes in another
/// encoding.
pub fn parse<'a, N, Q>(name: &'a N, query: &'a Q) -> FrontendMessage<'a>
where
    N: AsRef<[u8]> + ?Sized,
    Q: AsRef<[u8]> + ?Sized,
{
    FrontendMessage::Parse {
        name: name.as_ref(),
        query: query.as_ref(),
        param_types: vec![],
    }
}

pub fn bind<S: AsRef<[u8]> + ?Sized>(statement: &S) -> FrontendMessage<'_> {
    FrontendMessage::Bind {
        portal: b"",
        statement: statement.as_ref(),
        tail: NO_PARAMS,
    }
}

pub const EXEC: FrontendMessage<'static> = FrontendMessage::Execute {
    portal: b"",
    max_rows: 0,
};

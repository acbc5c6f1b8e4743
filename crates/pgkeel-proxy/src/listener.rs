//! Accepting clients: startup, login, then a [`Session`] per client; the
//! admin HTTP endpoint; health checks; graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use pgkeel_wire::backend::{error_code, error_message};
use pgkeel_wire::{BackendMessage, FrontendMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::{Startup, fatal, login, startup};
use crate::pool::{Lease, PoolKey};
use crate::server::{ServerConn, send_cancel, write_all};
use crate::session::Session;
use crate::settings::{Settings, changes, from_hex, overlay, sync_query, validation_query};
use crate::stream::ClientStream;
use crate::{
    CancelEntry, CancelSlot, Credential, ProxyConfig, ProxyError, ServerParams, Shared, tls,
    topology,
};

/// A running proxy. Dropping it does not stop it; call [`ProxyHandle::shutdown`].
#[derive(Debug)]
pub struct ProxyHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<Option<Duration>>,
    accept: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl ProxyHandle {
    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin HTTP endpoint listens, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The shared state (metrics, topology, pools).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Waits until health checks have found a primary (and, if
    /// `replicas` > 0, that many replicas), or `timeout` passes.
    pub async fn wait_ready(&self, replicas: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let h = self.shared.topology.snapshot();
            let primaries = h
                .iter()
                .filter(|n| n.role == topology::NodeRole::Primary)
                .count();
            let reps = h
                .iter()
                .filter(|n| n.role == topology::NodeRole::Replica)
                .count();
            if primaries == 1 && reps >= replicas {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops accepting, lets connected clients finish for up to `drain`,
    /// then closes what is left.
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.stop.send(Some(drain));
        let _ = self.accept.await;
        for b in self.background {
            b.abort();
        }
    }
}

/// Binds the listener(s) and starts health checks and the accept loop.
pub async fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    config.validate()?;
    let client_tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let mut mock_key = [0u8; 32];
    getrandom::fill(&mut mock_key)
        .map_err(|e| ProxyError::Config(format!("no randomness: {e}")))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ProxyError::io(format!("listen on {}", config.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ProxyError::io("listener address", e))?;
    let admin = match config.admin_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .map_err(|e| ProxyError::io(format!("listen on {a}"), e))?,
        ),
        None => None,
    };
    let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
    let mut shared = Shared::new(config);
    shared.tls = client_tls;
    shared.mock_key = mock_key;
    let shared = Arc::new(shared);
    let mut background = vec![tokio::spawn(crate::health::run_health_checks(
        shared.topology.clone(),
        shared.config.clone(),
    ))];
    if let Some(admin) = admin {
        background.push(tokio::spawn(crate::admin::serve_admin(
            admin,
            shared.clone(),
        )));
    }
    if let Some(source) = shared.config.leader_source.clone() {
        background.push(tokio::spawn(crate::leader::follow_leader(
            shared.topology.clone(),
            source,
        )));
    }
    background.push(tokio::spawn(reap_pools(shared.clone())));
    let (stop, stop_rx) = watch::channel(None);
    let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
    tracing::info!(%addr, "proxy listening");
    Ok(ProxyHandle {
        addr,
        admin_addr,
        shared,
        stop,
        accept,
        background,
    })
}

/// Closes pooled connections past `server_idle_timeout` or
/// `server_lifetime`, at a period that follows reloads.
async fn reap_pools(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.pools.reap_period()).await;
        let closed = shared.pools.reap();
        if closed > 0 {
            tracing::debug!(closed, "closed idle or old server connections");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut clients = JoinSet::new();
    let drain = loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    clients.spawn(async move {
                        if let Err(e) = handle_client(stream, peer, shared).await {
                            tracing::debug!(%peer, error = %e, "client session ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(Ok(())) | Some(Err(_)) = clients.join_next(), if !clients.is_empty() => {}
            r = stop.changed() => {
                let drain = if r.is_ok() { (*stop.borrow()).unwrap_or_default() } else { Duration::ZERO };
                break drain;
            }
        }
    };
    drop(listener);
    let _ = tokio::time::timeout(drain, async {
        while clients.join_next().await.is_some() {}
    })
    .await;
    clients.shutdown().await;
}

struct ClientCount(Arc<Shared>);

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client that logged in: its session, and what to undo when it leaves.
struct LoggedIn {
    session: Session,
    pid: i32,
    _count: ClientCount,
}

async fn handle_client(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<(), ProxyError> {
    // The login's state is large and short-lived: boxed, so that the task
    // of a connected client holds only its session's state.
    let Some(LoggedIn {
        session,
        pid,
        _count,
    }) = Box::pin(log_in(stream, peer, &shared)).await?
    else {
        return Ok(());
    };
    let result = session.run().await;
    if let Ok(mut c) = shared.cancels.lock() {
        c.remove(&pid);
    }
    if let Err(ProxyError::Protocol(_) | ProxyError::Wire(_)) = &result {
        shared
            .metrics
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Startup, TLS, password exchange and the login reply; `None` when the
/// connection ends there (a cancel request, a failed password).
async fn log_in(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Result<Option<LoggedIn>, ProxyError> {
    stream
        .set_nodelay(true)
        .map_err(|e| ProxyError::io("set TCP_NODELAY", e))?;
    let mut buf = BytesMut::with_capacity(1024);
    // Connecting to logged in is bounded as a whole, like PostgreSQL's
    // authentication_timeout: a client that stalls (or never speaks)
    // gives its slot back.
    let limit = shared.config.login_timeout;
    let deadline = tokio::time::Instant::now() + limit;
    let first = tokio::time::timeout_at(
        deadline,
        startup(ClientStream::Plain(stream), &mut buf, shared),
    )
    .await
    .unwrap_or(Err(ProxyError::LoginTimeout(limit)));
    let (mut stream, startup) = match first {
        Ok(s) => s,
        Err(ProxyError::LoginTimeout(_)) => return Err(ProxyError::LoginTimeout(limit)),
        Err(e) => {
            if !matches!(e, ProxyError::Startup(_)) {
                shared
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
    };
    let (user, database, given) = match startup {
        Startup::Cancel { pid, key } => {
            let slot = shared.cancels.lock().ok().and_then(|c| {
                c.get(&pid)
                    .filter(|e| e.key == key)
                    .map(|e| e.cancel.clone())
            });
            // Attached: forwarded to the server. Waiting for a server
            // connection: the wait ends and the session answers 57014.
            if let Some(t) = slot.and_then(|s| s.request()) {
                send_cancel(t.addr, t.pid, t.key).await?;
            }
            return Ok(None);
        }
        Startup::Login {
            user,
            database,
            settings,
        } => (user, database, settings),
    };
    shared.metrics.clients_total.fetch_add(1, Ordering::Relaxed);
    let count = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let count_guard = ClientCount(shared.clone());
    let max = shared.live().max_clients;
    if count > max {
        return Err(fatal(&mut stream, ProxyError::TooManyClients(max)).await);
    }
    let login = tokio::time::timeout_at(
        deadline,
        Box::pin(login(&mut stream, &mut buf, shared, &user)),
    )
    .await
    .unwrap_or(Err(ProxyError::LoginTimeout(limit)));
    let credential: Credential = match login {
        Ok(Some(c)) => c,
        Ok(None) => {
            shared.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        Err(e) => {
            if matches!(e, ProxyError::Protocol(_) | ProxyError::Wire(_)) {
                shared
                    .metrics
                    .protocol_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Err(fatal(&mut stream, e).await);
        }
    };
    let login = Box::pin(login_params(shared, &user, &database, &credential, given));
    let (params, settings) = match login.await {
        Ok(p) => p,
        Err(e) => return Err(fatal(&mut stream, e).await),
    };
    let pid = shared.next_pid.fetch_add(1, Ordering::Relaxed);
    let mut key_bytes = [0u8; 4];
    getrandom::fill(&mut key_bytes)
        .map_err(|e| ProxyError::Config(format!("no randomness: {e}")))?;
    let key = i32::from_be_bytes(key_bytes);
    let cancel = Arc::new(CancelSlot::default());
    if let Ok(mut c) = shared.cancels.lock() {
        c.insert(
            pid,
            CancelEntry {
                key,
                cancel: cancel.clone(),
                user: user.clone(),
                database: database.clone(),
                peer,
                since: std::time::Instant::now(),
            },
        );
    }
    let mut out = Vec::new();
    for (name, value) in &params {
        BackendMessage::ParameterStatus { name, value }.encode(&mut out);
    }
    BackendMessage::BackendKeyData { pid, key }.encode(&mut out);
    out.extend_from_slice(b"Z\0\0\0\x05I");
    let written = write_all(&mut stream, &out).await;
    // Nothing from the login stays allocated for the session's lifetime.
    drop((params, out));
    if let Err(e) = written {
        if let Ok(mut c) = shared.cancels.lock() {
            c.remove(&pid);
        }
        return Err(e);
    }
    Ok(Some(LoggedIn {
        session: Session::new(
            shared.clone(),
            stream,
            buf,
            user,
            database,
            credential,
            settings,
            cancel,
        ),
        pid,
        _count: count_guard,
    }))
}

/// True when every given setting has the value the servers report
/// (`client_encoding=UTF8` from most drivers): nothing to check. Not the
/// values the proxy reports in the servers' place (`is_superuser`,
/// `session_authorization`): a server checks those.
fn all_reported(given: &[(String, String)], params: &ServerParams) -> bool {
    given.iter().all(|(name, value)| {
        let own = ["is_superuser", "session_authorization"]
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name));
        !own && params
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    })
}

/// What a client is told at login (the servers' parameters with its own
/// settings in place) and the settings it runs with. The parameters are
/// fetched once per (user, database) from the primary (which also proves
/// the database exists); settings other than the servers' own values are
/// checked there, as PostgreSQL checks them at connection start.
async fn login_params(
    shared: &Shared,
    user: &str,
    database: &str,
    credential: &Credential,
    given: Vec<(String, String)>,
) -> Result<(ServerParams, Option<Arc<Settings>>), ProxyError> {
    let cache_key = (user.to_string(), database.to_string());
    let cached = shared
        .params
        .lock()
        .ok()
        .and_then(|p| p.get(&cache_key).cloned());
    let seen = || shared.checked_settings.lookup(user, database, &given);
    let (mut params, settings) = match cached {
        Some(p) if all_reported(&given, &p) => (p, Settings::new(given)),
        // Accepted before, as shown then: no server needed.
        Some(p) if let Some(shown) = seen() => (p, Settings::new(shown)),
        cached => {
            let mut lease = server_lease(shared, user, database, credential).await?;
            let params = match cached {
                Some(p) => p,
                None => {
                    let p = client_params(&lease.conn.params, user);
                    if let Ok(mut c) = shared.params.lock() {
                        c.insert(cache_key, p.clone());
                    }
                    p
                }
            };
            let settings = if all_reported(&given, &params) {
                Settings::new(given)
            } else {
                shared
                    .metrics
                    .settings_checked
                    .fetch_add(1, Ordering::Relaxed);
                match check_settings(&mut lease.conn, given.clone()).await {
                    Ok(s) => {
                        let shown = shown_in_order(&given, s.as_deref());
                        shared
                            .checked_settings
                            .remember(user, database, &given, &shown);
                        s
                    }
                    // Refused: the statement rolled back, the connection
                    // is as it was.
                    Err(e @ ProxyError::Setting { .. }) => {
                        shared.pools.release(lease);
                        return Err(e);
                    }
                    // Broken: closed.
                    Err(e) => return Err(e),
                }
            };
            shared.pools.release(lease);
            (params, settings)
        }
    };
    if let Some(s) = &settings {
        overlay(&mut params, s);
    }
    Ok((params, settings))
}

/// `given` with each value as `settings` holds it (as the server showed
/// it), in the order given.
fn shown_in_order(
    given: &[(String, String)],
    settings: Option<&Settings>,
) -> Vec<(String, String)> {
    given
        .iter()
        .map(|(name, value)| {
            let shown = settings.and_then(|s| s.get(name)).unwrap_or(value);
            (name.clone(), shown.to_string())
        })
        .collect()
}

/// The parameters a server reported at login as a client of `user` is
/// told them (not the proxy's own role's superuser status).
fn client_params(reported: &[(String, String)], user: &str) -> ServerParams {
    reported
        .iter()
        .filter(|(k, _)| k != "is_superuser" && k != "session_authorization")
        .cloned()
        .chain([
            ("is_superuser".to_string(), "off".to_string()),
            ("session_authorization".to_string(), user.to_string()),
        ])
        .collect()
}

/// Runs a client's `given` settings on `conn` (see
/// [`crate::settings::validation_query`]) and returns them as the server
/// shows them; the connection then holds them. A value or parameter the
/// server refuses is [`ProxyError::Setting`] with its SQLSTATE.
async fn check_settings(
    conn: &mut ServerConn,
    given: Vec<(String, String)>,
) -> Result<Option<Arc<Settings>>, ProxyError> {
    // Checked on the server's defaults, not over another client's
    // settings: some depend on the value they replace (`DateStyle=ISO`
    // over `German` is `ISO, DMY`, over the default `ISO, MDY`).
    if let Some(reset) = sync_query(changes(conn.applied.as_deref(), None, &conn.params)) {
        let mut q = Vec::new();
        FrontendMessage::Query(reset.as_bytes()).encode(&mut q);
        if conn.run(&q).await?.error.is_some() {
            return Err(ProxyError::Protocol(
                "a pooled server connection could not be reset to its defaults".into(),
            ));
        }
    }
    conn.applied = None;
    let sql = validation_query(&given);
    let mut q = Vec::new();
    FrontendMessage::Query(sql.as_bytes()).encode(&mut q);
    let ran = conn.run(&q).await?;
    if let Some(e) = ran.error {
        // Its message may be in the encoding just set, not UTF-8.
        let body = e.get(5..).unwrap_or_default();
        return Err(ProxyError::Setting {
            code: error_code(body).unwrap_or("XX000").to_string(),
            message: error_message(body)
                .unwrap_or("the server refused a startup setting")
                .to_string(),
        });
    }
    let shown: Vec<Option<String>> = match ran.row.as_deref().map(BackendMessage::decode) {
        Some(Ok(BackendMessage::DataRow(cells))) => {
            cells.iter().map(|c| c.and_then(from_hex)).collect()
        }
        _ => Vec::new(),
    };
    let mut shown = shown.into_iter();
    let settings = Settings::new(
        given
            .into_iter()
            .map(|(name, value)| (name, shown.next().flatten().unwrap_or(value))),
    );
    conn.applied = settings.clone();
    Ok(settings)
}

/// A connection of `user` to `database` on the primary (any readable node
/// without one), for what login needs of a server.
async fn server_lease(
    shared: &Shared,
    user: &str,
    database: &str,
    credential: &Credential,
) -> Result<Lease, ProxyError> {
    let node = shared
        .topology
        .primary()
        .or_else(|| shared.topology.read_node(&shared.rules()))
        .ok_or(ProxyError::NoNode("reachable"))?;
    let key = PoolKey {
        user: user.to_string(),
        database: database.to_string(),
        node,
    };
    shared
        .pools
        .acquire(&key, &shared.topology, credential)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connected client keeps its task's future in memory for as
    /// long as it stays connected: the login's larger, short-lived state
    /// must not size it (a regression shows up as memory per idle client).
    #[tokio::test]
    async fn client_task_holds_little_more_than_the_session()
    -> Result<(), Box<dyn std::error::Error>> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let stream = TcpStream::connect(l.local_addr()?).await?;
        let config = crate::ProxyConfig::new(l.local_addr()?, Vec::new(), Default::default());
        let task = handle_client(stream, l.local_addr()?, Arc::new(Shared::new(config)));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1280, "client task future is {size} bytes");
        Ok(())
    }
}

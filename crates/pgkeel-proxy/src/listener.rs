//! Accepting clients: startup, login, then a [`Session`] per client; the
//! admin HTTP endpoint; health checks; graceful drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use pgkeel_wire::BackendMessage;
use pgkeel_wire::backend::encode_error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth::{AuthOutcome, Startup, authenticate, read_startup};
use crate::pool::PoolKey;
use crate::server::{send_cancel, write_all};
use crate::session::Session;
use crate::{CancelEntry, ProxyConfig, ProxyError, Shared, metrics, topology};

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
    let shared = Arc::new(Shared::new(config));
    let mut background = vec![tokio::spawn(topology::run_health_checks(
        shared.topology.clone(),
        shared.config.clone(),
    ))];
    if let Some(admin) = admin {
        background.push(tokio::spawn(serve_admin(admin, shared.clone())));
    }
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
                        if let Err(e) = handle_client(stream, shared).await {
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

async fn handle_client(mut stream: TcpStream, shared: Arc<Shared>) -> Result<(), ProxyError> {
    stream
        .set_nodelay(true)
        .map_err(|e| ProxyError::io("set TCP_NODELAY", e))?;
    let mut buf = BytesMut::with_capacity(1024);
    let startup = match read_startup(&mut stream, &mut buf).await {
        Ok(s) => s,
        Err(e) => {
            shared
                .metrics
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::new();
            encode_error(&mut out, "FATAL", e.sqlstate(), &e.to_string());
            let _ = write_all(&mut stream, &out).await;
            return Err(e);
        }
    };
    let (user, database) = match startup {
        Startup::Cancel { pid, key } => {
            let target = shared.cancels.lock().ok().and_then(|c| {
                c.get(&pid)
                    .filter(|e| e.key == key)
                    .and_then(|e| e.target.lock().ok().and_then(|t| *t))
            });
            if let Some(t) = target {
                send_cancel(t.addr, t.pid, t.key).await?;
            }
            return Ok(());
        }
        Startup::Login { user, database } => (user, database),
    };
    shared.metrics.clients_total.fetch_add(1, Ordering::Relaxed);
    let count = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = ClientCount(shared.clone());
    let max = shared.config.max_clients;
    if count > max {
        let mut out = Vec::new();
        let e = ProxyError::TooManyClients(max);
        encode_error(&mut out, "FATAL", e.sqlstate(), &e.to_string());
        let _ = write_all(&mut stream, &out).await;
        return Err(e);
    }
    let user_entry = shared.config.users.get(&user).cloned();
    let outcome = Box::pin(authenticate(
        &mut stream,
        &mut buf,
        &user,
        user_entry.as_ref().map(|u| &u.verifier),
    ))
    .await;
    let user_entry = match (outcome, user_entry) {
        (Ok(AuthOutcome::Ok), Some(u)) => u,
        (Ok(_), _) => {
            shared.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        (Err(e), _) => {
            shared
                .metrics
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::new();
            encode_error(&mut out, "FATAL", e.sqlstate(), &e.to_string());
            let _ = write_all(&mut stream, &out).await;
            return Err(e);
        }
    };
    let params = match Box::pin(server_params(
        &shared,
        &user,
        &database,
        &user_entry.password,
    ))
    .await
    {
        Ok(p) => p,
        Err(e) => {
            let mut out = Vec::new();
            encode_error(&mut out, "FATAL", e.sqlstate(), &e.to_string());
            let _ = write_all(&mut stream, &out).await;
            return Err(e);
        }
    };
    let pid = shared.next_pid.fetch_add(1, Ordering::Relaxed);
    let mut key_bytes = [0u8; 4];
    getrandom::fill(&mut key_bytes)
        .map_err(|e| ProxyError::Config(format!("no randomness: {e}")))?;
    let key = i32::from_be_bytes(key_bytes);
    let target = Arc::new(std::sync::Mutex::new(None));
    if let Ok(mut c) = shared.cancels.lock() {
        c.insert(
            pid,
            CancelEntry {
                key,
                target: target.clone(),
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
    let password = user_entry.password.clone();
    drop((params, out, user_entry));
    let result = match written {
        // Not boxed: the session's state overlaps the login's in this
        // future, one allocation per client.
        Ok(()) => {
            Session::new(
                shared.clone(),
                stream,
                buf,
                user,
                database,
                password,
                target,
            )
            .run()
            .await
        }
        Err(e) => Err(e),
    };
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

/// The parameters a server reports at login, fetched once per (user,
/// database) from the primary (which also proves the database exists).
async fn server_params(
    shared: &Shared,
    user: &str,
    database: &str,
    password: &str,
) -> Result<Vec<(String, String)>, ProxyError> {
    let cache_key = (user.to_string(), database.to_string());
    if let Some(p) = shared
        .params
        .lock()
        .ok()
        .and_then(|p| p.get(&cache_key).cloned())
    {
        return Ok(p);
    }
    let node = shared
        .topology
        .primary()
        .or_else(|| shared.topology.read_node(&shared.rules))
        .ok_or(ProxyError::NoNode("reachable"))?;
    let key = PoolKey {
        user: user.to_string(),
        database: database.to_string(),
        node,
    };
    let lease = shared
        .pools
        .acquire(&key, &shared.topology, password)
        .await?;
    let params: Vec<(String, String)> = lease
        .conn
        .params
        .iter()
        .filter(|(k, _)| k != "is_superuser" && k != "session_authorization")
        .cloned()
        .chain([
            ("is_superuser".to_string(), "off".to_string()),
            ("session_authorization".to_string(), user.to_string()),
        ])
        .collect();
    shared.pools.release(lease);
    if let Ok(mut p) = shared.params.lock() {
        p.insert(cache_key, params.clone());
    }
    Ok(params)
}

/// A minimal HTTP/1.0 endpoint: `GET /metrics` (Prometheus text) and
/// `GET /pools` (one line per pool).
async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut req)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let line = String::from_utf8_lossy(&req[..n]);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics::render(&shared)),
                "/pools" => ("200 OK", pools_listing(&shared)),
                _ => (
                    "404 Not Found",
                    "not found: try /metrics or /pools\n".to_string(),
                ),
            };
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}

fn pools_listing(shared: &Shared) -> String {
    let mut out = format!(
        "clients {}\nuser\tdatabase\tnode\tactive\tidle\n",
        shared.clients.load(Ordering::Relaxed)
    );
    for p in shared.pools.stats() {
        let node = shared
            .topology
            .backends
            .get(p.key.node)
            .map(|b| b.name.as_str())
            .unwrap_or("?");
        out.push_str(&format!(
            "{}\t{}\t{node}\t{}\t{}\n",
            p.key.user, p.key.database, p.active, p.idle
        ));
    }
    out
}

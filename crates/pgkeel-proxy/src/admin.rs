//! The admin HTTP endpoint: Prometheus `/metrics`, and listings of pools,
//! clients and servers (nodes) as text tables, or JSON with `?json`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::topology::NodeRole;
use crate::{Shared, metrics};

/// Serves the admin endpoint until the task is aborted.
pub async fn serve_admin(listener: TcpListener, shared: Arc<Shared>) {
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
            let target = line.split_whitespace().nth(1).unwrap_or("");
            let (status, kind, body) = respond(&shared, target);
            let resp = format!(
                "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}

const TEXT: &str = "text/plain; version=0.0.4";
const JSON: &str = "application/json";

/// Status line, content type and body for a request target.
fn respond(shared: &Shared, target: &str) -> (&'static str, &'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let json = query.split('&').any(|q| q == "json" || q == "format=json");
    let listing = match path {
        "/metrics" => return ("200 OK", TEXT, metrics::render(shared)),
        "/pools" => Listing::Pools(pools(shared)),
        "/clients" => Listing::Clients(clients(shared)),
        "/servers" => Listing::Servers(servers(shared)),
        _ => {
            return (
                "404 Not Found",
                TEXT,
                "not found: try /metrics, /pools, /clients or /servers (add ?json for JSON)\n"
                    .into(),
            );
        }
    };
    if json {
        let body =
            serde_json::to_string(&listing).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        ("200 OK", JSON, body + "\n")
    } else {
        ("200 OK", TEXT, listing.text())
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Listing {
    Pools(Vec<PoolRow>),
    Clients(Vec<ClientRow>),
    Servers(Vec<ServerRow>),
}

/// One pool.
#[derive(Serialize)]
struct PoolRow {
    user: String,
    database: String,
    node: String,
    active: usize,
    idle: usize,
}

/// One connected client.
#[derive(Serialize)]
struct ClientRow {
    pid: i32,
    user: String,
    database: String,
    address: String,
    connected_seconds: u64,
    server: Option<String>,
}

/// One node as the proxy sees it.
#[derive(Serialize)]
struct ServerRow {
    node: String,
    address: String,
    role: &'static str,
    leader: bool,
    lag_bytes: Option<u64>,
    lag_seconds: Option<f64>,
    in_flight: usize,
    generation: u64,
}

fn node_name(shared: &Shared, node: usize) -> String {
    shared
        .topology
        .backends
        .get(node)
        .map(|b| b.name.clone())
        .unwrap_or_else(|| "?".into())
}

fn pools(shared: &Shared) -> Vec<PoolRow> {
    shared
        .pools
        .stats()
        .into_iter()
        .map(|p| PoolRow {
            node: node_name(shared, p.key.node),
            user: p.key.user,
            database: p.key.database,
            active: p.active,
            idle: p.idle,
        })
        .collect()
}

fn clients(shared: &Shared) -> Vec<ClientRow> {
    let Ok(cancels) = shared.cancels.lock() else {
        return vec![];
    };
    let backends = &shared.topology.backends;
    let mut rows: Vec<ClientRow> = cancels
        .iter()
        .map(|(pid, e)| {
            let server = e.cancel.target().map(|t| {
                let node = backends
                    .iter()
                    .find(|b| b.addr == t.addr)
                    .map_or_else(|| t.addr.to_string(), |b| b.name.clone());
                format!("{node} (backend pid {})", t.pid)
            });
            ClientRow {
                pid: *pid,
                user: e.user.clone(),
                database: e.database.clone(),
                address: e.peer.to_string(),
                connected_seconds: e.since.elapsed().as_secs(),
                server,
            }
        })
        .collect();
    rows.sort_by_key(|r| r.pid);
    rows
}

fn servers(shared: &Shared) -> Vec<ServerRow> {
    let t = &shared.topology;
    let health = t.snapshot();
    let primary = t.primary();
    t.backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let h = health.get(i);
            ServerRow {
                node: b.name.clone(),
                address: b.addr.to_string(),
                role: match h.map(|h| h.role) {
                    Some(NodeRole::Primary) if primary == Some(i) => "primary",
                    Some(NodeRole::Primary) => "writable, not the leader",
                    Some(NodeRole::Replica) => "replica",
                    _ => "down",
                },
                leader: t.leader() == crate::topology::Leader::Node(i),
                lag_bytes: h.and_then(|h| h.lag_bytes),
                lag_seconds: h.and_then(|h| h.lag_seconds),
                in_flight: t
                    .outstanding
                    .get(i)
                    .map_or(0, |o| o.load(Ordering::Relaxed)),
                generation: t.generation(i),
            }
        })
        .collect()
}

impl Listing {
    fn text(&self) -> String {
        let mut out = String::new();
        match self {
            Listing::Pools(rows) => {
                out.push_str("user\tdatabase\tnode\tactive\tidle\n");
                for r in rows {
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}",
                        r.user, r.database, r.node, r.active, r.idle
                    );
                }
            }
            Listing::Clients(rows) => {
                out.push_str("pid\tuser\tdatabase\taddress\tconnected_s\tserver\n");
                for r in rows {
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        r.pid,
                        r.user,
                        r.database,
                        r.address,
                        r.connected_seconds,
                        r.server.as_deref().unwrap_or("-")
                    );
                }
            }
            Listing::Servers(rows) => {
                out.push_str(
                    "node\taddress\trole\tleader\tlag_bytes\tlag_s\tin_flight\tgeneration\n",
                );
                for r in rows {
                    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        r.node,
                        r.address,
                        r.role,
                        r.leader,
                        opt(r.lag_bytes.map(|b| b.to_string())),
                        opt(r.lag_seconds.map(|s| format!("{s:.3}"))),
                        r.in_flight,
                        r.generation
                    );
                }
            }
        }
        out
    }
}

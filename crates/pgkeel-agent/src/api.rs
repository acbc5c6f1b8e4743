//! The agent's REST API. Health endpoints follow Patroni's conventions
//! (200 when the node is in the asked-for role and healthy, 503 otherwise),
//! so HAProxy and load-balancer checks written for Patroni keep working.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pgkeel_cluster::Cluster;
use pgkeel_core::size::parse_pg_size;
use pgkeel_core::{Config, NodeConfig};
use pgkeel_dcs::{Dcs, Handover};
use serde::Deserialize;
use serde_json::json;

use crate::AgentError;
use crate::execute::now_ms;
use crate::shared::{Shared, Snapshot};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    shared: Arc<Shared>,
    dcs: Dcs,
    cluster: Arc<Cluster>,
    token: Arc<String>,
}

impl ApiState {
    /// Bundles the agent's state for the handlers.
    pub fn new(shared: Arc<Shared>, dcs: Dcs, cluster: Cluster, token: String) -> Self {
        ApiState {
            shared,
            dcs,
            cluster: Arc::new(cluster),
            token: Arc::new(token),
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut snap = self
            .shared
            .snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_default();
        snap.failsafe_promise = self
            .shared
            .promise()
            .map(|(leader, left)| (leader, u64::try_from(left.as_millis()).unwrap_or(u64::MAX)));
        snap
    }
}

/// How often a taken API port is tried again.
const BIND_RETRY: Duration = Duration::from_secs(2);

/// Binds the node's API port and serves in the background. A port that
/// cannot be bound (taken by another process, or for a moment by an
/// outgoing connection) does not stop the agent: failover must not depend
/// on a monitoring port. The error is logged with what to do, and binding
/// is retried every [`BIND_RETRY`] until it works; meanwhile the health
/// endpoints do not answer, which load balancers and peers read as "not
/// available".
pub fn serve(node: &NodeConfig, state: ApiState) {
    let addr = format!("{}:{}", node.host, node.api_port());
    let name = node.name.to_string();
    let app = router(state);
    tokio::spawn(async move {
        let mut failures = 0u32;
        let listener = loop {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) => {
                    // Said at once, then every minute or so.
                    if failures.is_multiple_of(30) {
                        crate::execute::tracing_line(&format!(
                            "{name}: cannot listen on {addr} for the agent API: {e}; retrying every {}s (free the port or set `api_port` for node `{name}`); HA goes on without the API",
                            BIND_RETRY.as_secs()
                        ));
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(BIND_RETRY).await;
                }
            }
        };
        if failures > 0 {
            crate::execute::tracing_line(&format!("{name}: agent API listening on {addr}"));
        }
        let _ = axum::serve(listener, app).await;
    });
}

/// All routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(primary))
        .route("/primary", get(primary))
        .route("/master", get(primary))
        .route("/leader", get(primary))
        .route("/replica", get(replica))
        .route("/read-only", get(read_only))
        .route("/health", get(health))
        .route("/liveness", get(liveness))
        .route("/readiness", get(readiness))
        .route("/member", get(member))
        .route("/cluster", get(cluster))
        .route("/status", get(node_status))
        .route("/metrics", get(metrics))
        .route("/switchover", post(switchover))
        .route("/failover", post(failover))
        .route("/failsafe", post(failsafe))
        .route("/failsafe/release", post(failsafe_release))
        .with_state(state)
}

fn status(ok: bool, snap: &Snapshot) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body(snap))).into_response()
}

fn body(snap: &Snapshot) -> serde_json::Value {
    let m = &snap.member;
    json!({
        "name": m.name,
        "role": m.role,
        "state": if m.running { "running" } else { "stopped" },
        "leader": snap.leader,
        "timeline": m.timeline,
        "lsn": m.lsn,
        "received_lsn": m.received_lsn,
        "replayed_lsn": m.replayed_lsn,
        "streaming": m.streaming,
        "upstream": m.upstream,
        "lag_bytes": snap.lag_bytes,
        "dcs_ok": snap.dcs_ok,
        "pg_pid": m.pg_pid,
        "agent_pid": m.agent_pid,
        "failsafe_promise": snap.failsafe_promise.as_ref().map(|(leader, ms)| json!({
            "leader": leader,
            "remaining_ms": ms,
        })),
    })
}

async fn primary(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot();
    status(
        snap.leader && snap.member.running && snap.member.role == "primary",
        &snap,
    )
}

async fn replica(State(s): State<ApiState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let snap = s.snapshot();
    let max_lag = q.get("lag").and_then(|l| parse_pg_size(l));
    let lag_ok = match (max_lag, snap.lag_bytes) {
        (Some(max), Some(lag)) => lag <= max,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let m = &snap.member;
    status(
        m.running && m.role == "replica" && m.streaming && lag_ok,
        &snap,
    )
}

async fn read_only(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot();
    status(snap.member.running, &snap)
}

async fn health(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot();
    status(snap.member.running, &snap)
}

async fn liveness(State(s): State<ApiState>) -> Response {
    let fresh = s
        .shared
        .last_loop
        .lock()
        .map(|t| t.elapsed() < s.shared.ttl * 2)
        .unwrap_or(false);
    let snap = s.snapshot();
    status(fresh, &snap)
}

async fn readiness(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot();
    let m = &snap.member;
    let ready =
        m.running && ((snap.leader && m.role == "primary") || (m.role == "replica" && m.streaming));
    status(ready, &snap)
}

async fn member(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot();
    (StatusCode::OK, Json(snap.member)).into_response()
}

/// This node as `pgkeel status` shows it, probed now over its socket: what
/// `status` assembles from every agent on a host without the node's data.
async fn node_status(State(s): State<ApiState>) -> Response {
    match s.cluster.node(&s.shared.node) {
        Ok(node) => {
            let node = node.clone();
            (StatusCode::OK, Json(s.cluster.node_report(&node).await)).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn cluster(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot();
    let view = snap.view.unwrap_or_default();
    let members: Vec<serde_json::Value> = s
        .cluster
        .nodes()
        .iter()
        .map(|n| {
            let m = view.members.get(n.name.as_str());
            json!({
                "name": n.name,
                "host": n.host,
                "port": n.port,
                "api_url": format!("http://{}:{}", n.host, n.api_port()),
                "role": m.map(|m| m.role.clone()).unwrap_or_else(|| "unknown".into()),
                "running": m.is_some_and(|m| m.running),
                "leader": view.leader.as_deref() == Some(n.name.as_str()),
                "timeline": m.and_then(|m| m.timeline),
                "lsn": m.and_then(|m| m.wal_position()),
                "streaming": m.is_some_and(|m| m.streaming),
                "agent": m.is_some(),
            })
        })
        .collect();
    let body = json!({
        "cluster": s.cluster.config.cluster.name,
        "leader": view.leader,
        "paused": view.config.paused,
        "members": members,
        "switchover": view.switchover,
        "history": view.history,
    });
    (StatusCode::OK, Json(body)).into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let snap = s.snapshot();
    let m = &snap.member;
    let labels = format!(
        "cluster=\"{}\",node=\"{}\"",
        s.cluster.config.cluster.name, m.name
    );
    let b = |v: bool| u8::from(v);
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}\n"
        ));
    };
    metric(
        "pgkeel_postgres_running",
        "PostgreSQL is running and answering.",
        b(m.running).to_string(),
    );
    metric(
        "pgkeel_primary",
        "This node is the lease-holding primary.",
        b(snap.leader && m.role == "primary").to_string(),
    );
    metric(
        "pgkeel_replica",
        "This node is a running replica.",
        b(m.running && m.role == "replica").to_string(),
    );
    metric(
        "pgkeel_streaming",
        "The WAL receiver is streaming.",
        b(m.streaming).to_string(),
    );
    metric(
        "pgkeel_dcs_ok",
        "etcd answered and the lease is valid.",
        b(snap.dcs_ok).to_string(),
    );
    metric(
        "pgkeel_timeline",
        "Current timeline.",
        m.timeline.unwrap_or(0).to_string(),
    );
    metric(
        "pgkeel_wal_position_bytes",
        "WAL position (primary: current, replica: received).",
        m.wal_position().map(|l| l.0).unwrap_or(0).to_string(),
    );
    metric(
        "pgkeel_replication_lag_bytes",
        "Replica: bytes behind the primary.",
        snap.lag_bytes.unwrap_or(0).to_string(),
    );
    metric(
        "pgkeel_agent_uptime_seconds",
        "Seconds since the agent started.",
        format!("{:.1}", snap.uptime_seconds),
    );
    metric(
        "pgkeel_paused",
        "Automatic failover is paused.",
        b(snap.view.as_ref().is_some_and(|v| v.config.paused)).to_string(),
    );
    let backups = s.shared.backups.lock().ok().and_then(|b| b.clone());
    if let Some(seen) = backups.filter(|_| snap.leader) {
        if let Some(t) = seen.newest_start {
            metric(
                "pgkeel_backup_last_timestamp_seconds",
                "Start of the newest backup in the repository (leader only).",
                t.to_string(),
            );
        }
        if let Some(t) = seen.newest_full_start {
            metric(
                "pgkeel_backup_last_full_timestamp_seconds",
                "Start of the newest full backup in the repository (leader only).",
                t.to_string(),
            );
        }
        metric(
            "pgkeel_backup_failing",
            "The last scheduled backup failed (leader only).",
            b(seen.last_error.is_some()).to_string(),
        );
    }
    if let Some(v) = s
        .cluster
        .last_verification()
        .filter(|_| s.cluster.config.backup.enabled())
    {
        metric(
            "pgkeel_backup_last_verify_ok",
            "The last backup verification on this host restored and checked clean.",
            b(v.ok()).to_string(),
        );
        if v.ok() {
            metric(
                "pgkeel_backup_last_verified_timestamp_seconds",
                "When a backup was last proven restorable on this host.",
                v.verified_at.to_string(),
            );
        }
        metric(
            "pgkeel_backup_last_verify_restore_seconds",
            "Restore time (RTO) measured by the last verification.",
            format!("{:.3}", v.restore_seconds),
        );
    }
    // Read at scrape time: the archiver is not part of the published state.
    let archive = match s.cluster.node(&s.shared.node) {
        Ok(node) if s.cluster.config.backup.enabled() => {
            let node = node.clone();
            s.cluster.node_report(&node).await.status.archive
        }
        _ => None,
    };
    if let Some(a) = archive {
        metric(
            "pgkeel_archive_failing",
            "The last WAL archive attempt on this node failed (WAL piles up in pg_wal).",
            b(a.failing).to_string(),
        );
        metric(
            "pgkeel_archive_failed_count",
            "Failed WAL archive attempts since the statistics were reset.",
            a.failed_count.to_string(),
        );
        metric(
            "pgkeel_archive_archived_count",
            "WAL segments archived since the statistics were reset.",
            a.archived_count.to_string(),
        );
        if let Some(age) = a.last_archived_age_seconds {
            metric(
                "pgkeel_archive_last_archived_age_seconds",
                "Seconds since the last WAL segment was archived.",
                format!("{age:.3}"),
            );
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// Body of POST /switchover and /failover.
#[derive(Debug, Deserialize, Default)]
struct HandoverRequest {
    #[serde(default, alias = "candidate")]
    to: Option<String>,
}

fn authorized(s: &ApiState, headers: &HeaderMap) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-pgkeel-token").and_then(|v| v.to_str().ok()));
    !s.token.is_empty() && given == Some(s.token.as_str())
}

fn unauthorized() -> Response {
    refuse(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token (Authorization: Bearer <secrets/api.token>)".into(),
    )
}

fn refuse(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

async fn switchover(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Option<Json<HandoverRequest>>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let to = body.map(|b| b.0.to).unwrap_or_default();
    match request_switchover(&s.dcs, &s.cluster.config, to).await {
        Ok(()) => {
            s.shared.wake.notify_one();
            (StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response()
        }
        Err(e) => refuse(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn failover(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Option<Json<HandoverRequest>>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let Some(to) = body.and_then(|b| b.0.to) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "failover needs a target: {\"to\": \"<node>\"}".into(),
        );
    };
    match request_failover(&s.dcs, &s.cluster.config, &to).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "accepted": true }))).into_response(),
        Err(e) => refuse(StatusCode::CONFLICT, e.to_string()),
    }
}

/// A leader that gave up and fenced (its postmaster is stopped) ends the
/// promise this member gave it: nothing is left to protect, and waiting out
/// the promise would only delay the failover. Only that leader's promise.
async fn failsafe_release(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Json(req): Json<FailsafeRequest>,
) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let released = match s.shared.failsafe_promise.lock() {
        Ok(mut promise) if promise.as_ref().is_some_and(|(l, _)| *l == req.leader) => {
            *promise = None;
            true
        }
        _ => false,
    };
    if released {
        crate::execute::tracing_line(&format!(
            "{}: {} fenced itself: failsafe promise released",
            s.shared.node, req.leader
        ));
        s.shared.wake.notify_one();
    }
    (StatusCode::OK, Json(json!({ "released": released }))).into_response()
}

/// Body of POST /failsafe.
#[derive(Debug, Deserialize)]
struct FailsafeRequest {
    leader: String,
}

/// A leader that lost etcd asks to be confirmed. Confirmed unless this
/// node knows of a different leader or leads itself; confirming is a
/// promise not to take over for one TTL.
async fn failsafe(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Json(req): Json<FailsafeRequest>,
) -> Response {
    if !authorized(&s, &headers) {
        return refuse(StatusCode::UNAUTHORIZED, "missing or wrong token".into());
    }
    let snap = s.snapshot();
    let known = snap.view.as_ref().and_then(|v| v.leader.clone());
    let conflicting = snap.leader || known.as_ref().is_some_and(|l| l != &req.leader);
    if conflicting && snap.dcs_ok {
        return refuse(
            StatusCode::CONFLICT,
            format!("{} is the leader here", known.unwrap_or_default()),
        );
    }
    if snap.leader {
        return refuse(StatusCode::CONFLICT, "this node leads".into());
    }
    if let Ok(mut promise) = s.shared.failsafe_promise.lock() {
        *promise = Some((req.leader, std::time::Instant::now() + s.shared.ttl));
    }
    (StatusCode::OK, Json(json!({ "confirmed": true }))).into_response()
}

/// Refuses a node name that is not in the configuration, listing those that are.
fn known_node(config: &Config, name: &str) -> Result<(), AgentError> {
    pgkeel_cluster::context::find_node(config, name)?;
    Ok(())
}

/// Records a switchover request after checking it can be honoured.
pub async fn request_switchover(
    dcs: &Dcs,
    config: &Config,
    to: Option<String>,
) -> Result<(), AgentError> {
    let view = dcs.view().await?;
    let Some(leader) = view.leader.clone() else {
        return Err(AgentError::Refused(
            "no leader to switch over from: use `pgkeel failover --to <node>`".into(),
        ));
    };
    if let Some(target) = &to {
        known_node(config, target)?;
        if target == &leader {
            return Err(AgentError::Refused(format!(
                "{target} is already the leader"
            )));
        }
        let healthy = view
            .members
            .get(target)
            .is_some_and(|m| m.running && m.role == "replica");
        if !healthy {
            return Err(AgentError::Refused(format!(
                "{target} is not a running replica with an agent: pick another --to"
            )));
        }
    }
    if view.config.paused {
        return Err(AgentError::Refused(
            "the cluster is paused: `pgkeel resume` first".into(),
        ));
    }
    dcs.put_switchover(&Handover {
        from: Some(leader),
        to,
        requested_ms: now_ms(),
    })
    .await?;
    Ok(())
}

/// Records a manual failover request: only when there is no leader.
pub async fn request_failover(dcs: &Dcs, config: &Config, to: &str) -> Result<(), AgentError> {
    known_node(config, to)?;
    let view = dcs.view().await?;
    if let Some(leader) = &view.leader {
        return Err(AgentError::Refused(format!(
            "{leader} holds the leader key: a manual failover is only for a cluster without a healthy leader; use `pgkeel switchover --to {to}`"
        )));
    }
    dcs.put_failover(&Handover {
        from: None,
        to: Some(to.to_string()),
        requested_ms: now_ms(),
    })
    .await?;
    Ok(())
}

/// Polls `check` until true or timeout; for CLI waits.
pub async fn until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

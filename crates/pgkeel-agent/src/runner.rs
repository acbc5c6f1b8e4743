//! The agent's main loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgkeel_cluster::Cluster;
use pgkeel_cluster::layout::Secret;
use pgkeel_core::NodeConfig;
use pgkeel_dcs::{ClusterView, Dcs, MemberState};
use pgkeel_ha::{Action, HaConfig, Local, Peer, View, decide};
use pgkeel_pg::probe::connect_tcp;
use pgkeel_pg::secrets::read_password;
use tokio::signal::unix::{SignalKind, signal};

use crate::execute::{Context, tracing_line};
use crate::observe::observe;
use crate::shared::Shared;
use crate::{AgentError, api, http, lease, pidfile};

/// Between attempts to reach etcd at start: short, because all members
/// start together and the quorum forms within a few seconds of the first.
const ETCD_RETRY: Duration = Duration::from_millis(200);

/// How often the leader checks whether its host also leads etcd.
const ETCD_LEADER_CHECK: Duration = Duration::from_secs(5);

/// How an agent runs beside its node.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentOptions {
    /// Also run this host's etcd member in the agent's process.
    pub with_etcd: bool,
    /// Stop PostgreSQL (fast) when the agent is stopped.
    pub stop_postgres: bool,
}

/// Memory of the loop between iterations.
#[derive(Default)]
struct LoopMemory {
    seen_leader: bool,
    /// Leader: since when no standby has been streaming.
    no_standby_since: Option<Instant>,
    leaderless_since: Option<Instant>,
    /// Standby: since when its WAL receiver has not been streaming.
    not_streaming_since: Option<Instant>,
    last_actions: String,
    /// The last failed action's error and how many loops in a row failed.
    error: Option<String>,
    failures: u32,
}

/// Runs the agent for `node` until SIGTERM/SIGINT. On a clean stop it
/// revokes its lease (its member key and, if held, the leader key vanish at
/// once) and leaves PostgreSQL running.
pub async fn run_agent(
    cluster: Cluster,
    node_name: &str,
    options: AgentOptions,
) -> Result<(), AgentError> {
    let AgentOptions {
        with_etcd,
        stop_postgres,
    } = options;
    let node = cluster.node(node_name)?.clone();
    let pid_file = cluster.layout.agent_pid_file(node_name);
    cluster.ensure_skeleton(false)?;
    cluster.ensure_node_dirs(node_name)?;
    pidfile::write_own(&pid_file).map_err(|e| AgentError::Process {
        action: format!("write {}", pid_file.display()),
        detail: e.to_string(),
    })?;
    let ha = cluster.config.ha.clone();
    let ttl = Duration::from_secs_f64(ha.ttl);
    let margin = Duration::from_secs_f64((ha.ttl * 0.25).max(0.5));
    let loop_wait = Duration::from_secs_f64(ha.loop_wait);
    let timeout = Duration::from_secs_f64(ha.retry_timeout);
    let shared = Arc::new(Shared::new(node_name, ttl, margin));
    let etcd_stop = Arc::new(tokio::sync::Notify::new());
    let etcd_member = if with_etcd {
        let local = crate::etcd_local::LocalEtcd::of(&cluster, node_name).ok_or_else(|| {
            AgentError::Refused(format!(
                "--with-etcd: node `{node_name}` is not one of `etcd.members` (or the cluster uses external etcd endpoints)"
            ))
        })?;
        let (cluster, stop) = (cluster.clone(), etcd_stop.clone());
        Some(tokio::spawn(async move {
            let result = crate::etcd_local::run_member(&cluster, &local, stop.notified()).await;
            if let Err(e) = result {
                tracing_line(&format!("etcd member: {e}"));
            }
        }))
    } else {
        None
    };
    let endpoints = cluster.config.etcd_endpoints();
    let access = crate::etcd_access::etcd_access(&cluster.config, &cluster.layout)?;
    let dcs = loop {
        match Dcs::connect_with(
            &endpoints,
            &cluster.config.etcd.namespace,
            &cluster.config.cluster.name,
            timeout,
            &access,
        )
        .await
        {
            Ok(dcs) => break dcs,
            Err(e) => {
                tracing_line(&format!("{node_name}: {e}; retrying"));
                tokio::time::sleep(ETCD_RETRY).await;
            }
        }
    };
    if let Some((user, password)) = &access.user {
        // Before any lease or key: an etcd that refuses the secrets stops
        // the agent here, with nothing of PostgreSQL created.
        let root = crate::etcd_access::root_password(&cluster.layout)?;
        loop {
            match dcs
                .ensure_auth(user, password, &root, &cluster.config.etcd.namespace)
                .await
            {
                Ok(()) => break,
                Err(e @ pgkeel_dcs::DcsError::Refused { .. }) => {
                    stop_agent(&dcs, &shared, &pid_file).await;
                    return Err(e.into());
                }
                Err(e) => {
                    tracing_line(&format!("{node_name}: etcd authentication: {e}; retrying"));
                    tokio::time::sleep(ETCD_RETRY).await;
                }
            }
        }
    }
    lease::spawn_keeper(dcs.clone(), shared.clone());
    let token = read_password(&cluster.layout.api_token_file()).unwrap_or_default();
    lease::spawn_fencing_watchdog(cluster.clone(), shared.clone(), token.clone());
    lease::spawn_failsafe(cluster.clone(), shared.clone(), token.clone());
    api::serve(
        &node,
        api::ApiState::new(shared.clone(), dcs.clone(), cluster.clone(), token),
    );
    spawn_leader_watch(dcs.clone(), shared.clone());
    spawn_member_watch(dcs.clone(), shared.clone());
    tracing_line(&format!(
        "{node_name}: agent started (pid {})",
        std::process::id()
    ));

    let mut term = signal(SignalKind::terminate()).map_err(|e| AgentError::Process {
        action: "install SIGTERM handler".into(),
        detail: e.to_string(),
    })?;
    // The first loop waits (at most one TTL) for the keeper's first lease:
    // without one the decision runs as if etcd were unreachable, and a
    // running primary would fence itself at every agent start (seen under
    // load at bootstrap: the primary was killed, came back as a standby and
    // was promoted to a new timeline a TTL later). Waiting is safe: until
    // now nobody supervised this PostgreSQL anyway, and once the TTL has
    // passed without a lease the usual rules apply.
    let mut stopped = tokio::select! {
        () = first_lease(&shared) => false,
        _ = term.recv() => true,
        _ = tokio::signal::ctrl_c() => true,
    };
    if !stopped {
        tokio::select! {
            result = crate::bootstrap::bootstrap(&cluster, &node, &dcs, &shared, loop_wait) => {
                if let Err(e) = result {
                    stop_agent(&dcs, &shared, &pid_file).await;
                    return Err(e);
                }
                refresh_access(&cluster, &node).await;
            }
            _ = term.recv() => stopped = true,
            _ = tokio::signal::ctrl_c() => stopped = true,
        }
    }
    crate::backup_schedule::spawn(cluster.clone(), shared.clone());
    let mut memory = LoopMemory::default();
    let etcd_member_here = cluster.config.etcd_members().len() > 1
        && cluster
            .config
            .etcd_members()
            .iter()
            .any(|n| n.name.as_str() == node_name);
    let mut etcd_leader_checked: Option<Instant> = None;
    let moving_etcd_leader = Arc::new(std::sync::atomic::AtomicBool::new(false));
    while !stopped {
        let started = Instant::now();
        iteration(&cluster, &node, &dcs, &shared, &mut memory, timeout).await;
        // The primary's host should not also lead etcd: a crash of both
        // delays the failover by a TTL (see pgkeel_dcs::raft_leader).
        // Checked 5 s into a leadership at the earliest and off the loop, so
        // it never delays a promotion (a transfer can take seconds).
        if !(etcd_member_here && shared.leader()) {
            etcd_leader_checked = None;
        } else if etcd_leader_checked.is_none() {
            etcd_leader_checked = Some(Instant::now());
        } else if etcd_leader_checked.is_some_and(|t| t.elapsed() >= ETCD_LEADER_CHECK)
            && !moving_etcd_leader.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            etcd_leader_checked = Some(Instant::now());
            let (dcs, name, busy) = (
                dcs.clone(),
                node_name.to_string(),
                moving_etcd_leader.clone(),
            );
            tokio::spawn(async move {
                match dcs.move_etcd_leadership_from(&name).await {
                    Ok(Some(to)) => tracing_line(&format!(
                        "{name}: moved etcd's leadership to {to} (off the primary's host)"
                    )),
                    Ok(None) => {}
                    Err(e) => tracing_line(&format!("{name}: etcd leadership check: {e}")),
                }
                busy.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
        if let Ok(mut last) = shared.last_loop.lock() {
            *last = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(loop_wait.saturating_sub(started.elapsed())) => {}
            _ = shared.wake.notified() => {}
            _ = term.recv() => stopped = true,
            _ = tokio::signal::ctrl_c() => stopped = true,
        }
    }
    tracing_line(&format!("{node_name}: stopping agent"));
    if stop_postgres {
        // Before the lease goes: a primary stops while it still holds the
        // key, so nobody is promoted until its last WAL has reached the
        // standbys (a fast shutdown waits for connected standbys).
        let data = cluster.layout.data_dir(node_name);
        if pgkeel_pg::pgctl::running_pid(&data).is_some() {
            tracing_line(&format!("{node_name}: stopping PostgreSQL (fast)"));
            if let Err(e) = pgkeel_pg::pgctl::stop(
                &cluster.runner,
                node_name,
                &data,
                pgkeel_pg::pgctl::StopMode::Fast,
            )
            .await
            {
                tracing_line(&format!("{node_name}: {e}"));
            }
        }
    }
    stop_agent(&dcs, &shared, &pid_file).await;
    if let Some(member) = etcd_member {
        etcd_stop.notify_one();
        let _ = member.await;
    }
    Ok(())
}

/// Renders `pg_hba.conf` again for the members this agent's config names
/// (a node added to, or removed from, the config on every host is allowed
/// to replicate, or no longer, once the agents restart) and reloads a
/// running server when it changed.
async fn refresh_access(cluster: &Cluster, node: &NodeConfig) {
    let name = node.name.as_str();
    let data = cluster.layout.data_dir(name);
    if !pgkeel_pg::pgctl::is_data_dir(&data) {
        return;
    }
    match cluster.write_access(&data) {
        Ok(true) => {
            tracing_line(&format!(
                "{name}: pg_hba.conf follows the configured members"
            ));
            if pgkeel_pg::pgctl::running_pid(&data).is_some()
                && let Ok(conn) = cluster.connect(node).await
                && let Err(e) = conn.reload().await
            {
                tracing_line(&format!("{name}: reload after pg_hba.conf: {e}"));
            }
        }
        Ok(false) => {}
        Err(e) => tracing_line(&format!("{name}: cannot render pg_hba.conf: {e}")),
    }
}

/// Revokes the lease (the member key, the leader key if held and a
/// bootstrap claim vanish at once) and removes the PID file.
async fn stop_agent(dcs: &Dcs, shared: &Shared, pid_file: &std::path::Path) {
    let lease = shared.lease.lock().ok().and_then(|l| *l);
    if let Some(lease) = lease {
        let _ = dcs.revoke(lease).await;
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Returns once the lease keeper holds a valid lease, or after one TTL.
async fn first_lease(shared: &Shared) {
    let start = Instant::now();
    while shared.valid_lease().is_none() {
        if start.elapsed() >= shared.ttl {
            tracing_line(&format!(
                "{}: no lease from etcd within {:.1} s; deciding without one",
                shared.node,
                shared.ttl.as_secs_f64()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wakes the loop whenever the leader key changes; re-watches if the watch
/// breaks (etcd restart).
fn spawn_leader_watch(dcs: Dcs, shared: Arc<Shared>) {
    tokio::spawn(async move {
        loop {
            if let Ok(mut events) = dcs.watch_leader().await {
                while events.recv().await.is_some() {
                    shared.wake.notify_one();
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Wakes the leader's loop when a member starts, stops, or starts or stops
/// streaming: the synchronous standbys and slots follow at once instead of
/// at the next `loop_wait` (a replica that just streams is named a
/// synchronous standby about a second sooner).
fn spawn_member_watch(dcs: Dcs, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut seen: std::collections::BTreeMap<String, (String, bool, bool)> =
            std::collections::BTreeMap::new();
        loop {
            if let Ok(mut events) = dcs.watch_members().await {
                while let Some((name, state)) = events.recv().await {
                    let now = state.map(|s| (s.role, s.running, s.streaming));
                    let changed = match &now {
                        Some(v) => seen.insert(name, v.clone()).as_ref() != Some(v),
                        None => seen.remove(&name).is_some(),
                    };
                    if changed && shared.leader() {
                        shared.wake.notify_one();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

async fn iteration(
    cluster: &Cluster,
    node: &NodeConfig,
    dcs: &Dcs,
    shared: &Shared,
    memory: &mut LoopMemory,
    timeout: Duration,
) {
    let me = node.name.as_str();
    // A rotated password copied into the secrets reaches PostgreSQL's
    // password files here (written only when it changed): a standby that
    // reconnects uses it.
    if let Err(e) = cluster.write_passfiles() {
        tracing_line(&format!("{me}: cannot update the password files: {e}"));
    }
    let mut obs = observe(cluster, node).await;
    obs.member.error = memory.error.clone();
    obs.member.failures = memory.failures;
    let view = dcs.view().await;
    let lease = shared.valid_lease();
    let dcs_ok = view.is_ok() && lease.is_some();
    if let (Ok(_), Some(lease)) = (&view, lease) {
        let _ = dcs.put_member(&obs.member, lease).await;
    }
    let view = view.unwrap_or_default();
    if dcs_ok {
        shared.set_leader(view.leader.as_deref() == Some(me));
    }
    match view.leader {
        Some(_) => {
            memory.seen_leader = true;
            memory.leaderless_since = None;
        }
        None => {
            memory.leaderless_since.get_or_insert_with(Instant::now);
        }
    }
    let vacancy_confirmed = view.leader.is_none()
        && (memory.seen_leader
            || memory
                .leaderless_since
                .is_some_and(|s| s.elapsed() >= shared.ttl));
    let peers = peers(cluster, node, &view, timeout).await;
    let lonely = matches!(&obs.pg, pgkeel_ha::LocalPg::Running { in_recovery: false, healthy_standbys, .. } if healthy_standbys.is_empty());
    if lonely {
        memory.no_standby_since.get_or_insert_with(Instant::now);
    } else {
        memory.no_standby_since = None;
    }
    let degrade_allowed = memory
        .no_standby_since
        .is_some_and(|s| s.elapsed() >= shared.ttl);
    let stalled = matches!(
        &obs.pg,
        pgkeel_ha::LocalPg::Running {
            in_recovery: true,
            streaming: false,
            ..
        }
    );
    if stalled {
        memory.not_streaming_since.get_or_insert_with(Instant::now);
    } else {
        memory.not_streaming_since = None;
    }
    // Diverged: not streaming for a whole TTL while the leader is on a
    // newer timeline than this standby can follow (it received WAL the
    // new history does not have).
    let leader_timeline = view
        .leader
        .as_ref()
        .and_then(|l| view.members.get(l))
        .and_then(|m| m.timeline);
    let diverged = memory
        .not_streaming_since
        .is_some_and(|s| s.elapsed() >= shared.ttl)
        && matches!((obs.member.timeline, leader_timeline), (Some(mine), Some(theirs)) if mine < theirs);
    let local = Local {
        name: me.to_string(),
        pg: obs.pg.clone(),
        data: obs.data,
        dcs_ok,
        lease_valid: lease.is_some(),
        nofailover: node.nofailover,
        // Not gated on the leader flag: the keeper clears it as soon as it
        // finds the lease expired (etcd back after a partition), while the
        // members' promises still cover this primary until it has a new
        // lease and the key again; gating it fenced a healthy primary
        // exactly when etcd came back.
        failsafe_ok: shared.failsafe_ok(),
        failsafe_hold: shared.failsafe_hold(),
        degrade_allowed,
        upstream: obs.member.upstream.clone(),
        diverged,
    };
    let mut ha_view = to_ha_view(&view, peers, vacancy_confirmed);
    ha_view.standby_cluster = is_standby_cluster(cluster, &view);
    shared
        .following
        .store(ha_view.standby_cluster, std::sync::atomic::Ordering::SeqCst);
    let config = ha_config(cluster);
    let actions = if obs.busy {
        vec![Action::Wait("PostgreSQL is starting or recovering".into())]
    } else {
        decide(&ha_view, &local, &config)
    };
    let summary = format!("{actions:?}");
    if summary != memory.last_actions {
        tracing_line(&format!("{me}: leader={:?} -> {summary}", view.leader));
        memory.last_actions = summary;
    }
    let ctx = Context {
        cluster,
        node,
        dcs,
        shared,
        view: &view,
        obs: &obs,
    };
    let mut failed = None;
    for action in &actions {
        if let Err(e) = ctx.run(action).await {
            tracing_line(&format!("{me}: {action:?} failed: {e}"));
            failed = Some(format!("{action:?} failed: {e}"));
            break;
        }
    }
    match failed {
        Some(e) => {
            memory.failures += 1;
            memory.error = Some(e);
        }
        None => {
            memory.failures = 0;
            memory.error = None;
        }
    }
    // Something changed PostgreSQL: publish the new state at once, so no
    // peer decides on the old one (e.g. a demoted primary still looking
    // like a running primary would hold up a switchover target).
    let changed = actions.iter().any(|a| {
        matches!(
            a,
            Action::Fence
                | Action::Demote { .. }
                | Action::Promote
                | Action::StartPrimary
                | Action::StartStandby { .. }
                | Action::Rewind { .. }
                | Action::Reclone { .. }
        )
    });
    let mut obs = if changed {
        observe(cluster, node).await
    } else {
        obs
    };
    obs.member.error = memory.error.clone();
    obs.member.failures = memory.failures;
    if changed && let Some(lease) = shared.valid_lease() {
        let _ = dcs.put_member(&obs.member, lease).await;
    }
    let lag = lag_bytes(&view, &obs.member);
    if let Ok(mut snap) = shared.snapshot.write() {
        snap.member = obs.member.clone();
        snap.leader = shared.leader();
        snap.dcs_ok = dcs_ok;
        snap.last_actions = actions.iter().map(|a| format!("{a:?}")).collect();
        snap.lag_bytes = lag;
        snap.view = Some(view);
        snap.uptime_seconds = shared.started.elapsed().as_secs_f64();
    }
}

fn lag_bytes(view: &ClusterView, me: &MemberState) -> Option<u64> {
    if me.role != "replica" {
        return None;
    }
    let leader = view.leader.as_ref().and_then(|l| view.members.get(l))?;
    Some(leader.lsn?.bytes_after(me.replayed_lsn?))
}

/// Other members as the decision needs them. With a leader, published
/// states suffice; without one, each member is asked directly (its agent's
/// `/member` for live WAL positions, its PostgreSQL for whether it runs as
/// primary), because an election must not run on stale positions.
async fn peers(
    cluster: &Cluster,
    me: &NodeConfig,
    view: &ClusterView,
    timeout: Duration,
) -> Vec<Peer> {
    let others: Vec<&NodeConfig> = cluster
        .nodes()
        .iter()
        .filter(|n| n.name != me.name)
        .collect();
    let fresh = view.leader.is_none();
    let password =
        read_password(&cluster.layout.password_file(Secret::Superuser)).unwrap_or_default();
    let futures = others.iter().map(|n| {
        let published = view.members.get(n.name.as_str()).cloned();
        let password = password.clone();
        async move {
            // While the key is vacant, the peer's agent and its PostgreSQL
            // are asked at the same time: a vanished host answers neither,
            // and asking one after the other cost two timeouts.
            let api = async {
                if !fresh {
                    return published;
                }
                let url = format!("http://{}:{}/member", n.host, n.api_port());
                match http::request("GET", &url, &[], "", timeout).await {
                    Ok((200, body)) => serde_json::from_str::<MemberState>(&body).ok(),
                    _ => None,
                }
            };
            // Its agent may be gone while its PostgreSQL still runs.
            let writable = async {
                if !fresh {
                    return false;
                }
                match connect_tcp(
                    n.name.as_str(),
                    &n.host,
                    n.port,
                    &cluster.superuser,
                    &password,
                    timeout,
                )
                .await
                {
                    Ok(conn) => conn.probe().await.is_ok_and(|p| !p.in_recovery),
                    Err(_) => false,
                }
            };
            let (state, writable) = tokio::join!(api, writable);
            let mut peer = Peer {
                name: n.name.to_string(),
                running_replica: false,
                running_primary: writable,
                lsn: None,
                nofailover: n.nofailover,
            };
            if let Some(s) = &state {
                peer.running_replica = s.running && s.role == "replica";
                peer.running_primary |= s.running && s.role == "primary";
                peer.lsn = s.wal_position();
            }
            peer
        }
    });
    futures_util::future::join_all(futures).await
}

fn to_ha_view(view: &ClusterView, peers: Vec<Peer>, vacancy_confirmed: bool) -> View {
    View {
        leader: view.leader.clone(),
        peers,
        optime: view.optime.as_ref().map(|o| o.lsn),
        optime_leader: view.optime.as_ref().map(|o| o.leader.clone()),
        sync: view.sync.as_ref().map(|s| (s.standbys.clone(), s.quorum)),
        sync_since: view.sync.as_ref().and_then(|s| s.since),
        paused: view.config.paused,
        switchover: view
            .switchover
            .as_ref()
            .map(|h| (h.from.clone(), h.to.clone())),
        failover_to: view.failover.as_ref().and_then(|h| h.to.clone()),
        vacancy_confirmed,
        standby_cluster: false,
    }
}

/// Whether the cluster follows another now ([`following`]).
pub fn is_standby_cluster(cluster: &Cluster, view: &ClusterView) -> bool {
    following(&cluster.config, view).is_some()
}

/// The cluster this one follows now: the one `demote-cluster` named, else
/// `[standby_cluster]` unless `promote-cluster` was run since.
pub fn following<'a>(
    config: &'a pgkeel_core::Config,
    view: &'a ClusterView,
) -> Option<&'a pgkeel_core::config::StandbyClusterSection> {
    if let Some(follow) = &view.config.follow {
        return Some(follow);
    }
    config
        .standby_cluster
        .as_ref()
        .filter(|_| !view.config.standby_promoted)
}

/// The decision's configuration from the cluster's.
pub fn ha_config(cluster: &Cluster) -> HaConfig {
    let c = &cluster.config;
    HaConfig {
        mode: c.replication.mode,
        sync_count: c.replication.sync_count,
        strict_sync: c.ha.strict_sync,
        maximum_lag_on_failover: c.ha.maximum_lag_on_failover,
        members: c.nodes.iter().map(|n| n.name.to_string()).collect(),
    }
}

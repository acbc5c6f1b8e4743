//! Human and JSON renderings of cluster state.

use anyhow::Result;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use pgkeel_cluster::Cluster;
use pgkeel_cluster::url::format_url;
use pgkeel_core::status::{ArchiveStatus, ClusterStatus, NodeStatus, Role};

/// Prints `status` as a table, or as JSON.
pub fn print_status(status: &ClusterStatus, json: bool) -> Result<()> {
    if json {
        say!("{}", serde_json::to_string(status)?);
        return Ok(());
    }
    say!(
        "cluster {}  mode {}  synchronous_standby_names: {}",
        status.cluster,
        status.mode,
        status
            .synchronous_standby_names
            .as_deref()
            .map(|s| if s.is_empty() { "(none)" } else { s })
            .unwrap_or("(primary not running)")
    );
    if let Some(etcd_ok) = status.etcd_ok {
        let leader = status.leader.as_deref().unwrap_or("(none)");
        let lease = status
            .lease_ttl_left
            .map(|t| format!(", lease {t}s left"))
            .unwrap_or_default();
        let etcd = if etcd_ok {
            "etcd ok"
        } else {
            "etcd UNREACHABLE"
        };
        let paused = if status.paused == Some(true) {
            "  PAUSED"
        } else {
            ""
        };
        say!("leader {leader}{lease}  {etcd}{paused}");
        if let Some(source) = &status.following {
            say!(
                "standby cluster: following the primary cluster at {source} (`pgkeel promote-cluster` makes it a primary cluster)"
            );
        }
    }
    if let Some(p) = &status.proxy {
        let state = match p.pid {
            Some(pid) => format!("running (pid {pid})"),
            None => "NOT RUNNING (`pgkeel up` starts it)".into(),
        };
        say!(
            "proxy {}:{} {state}  metrics http://{}:{}/metrics",
            p.host,
            p.port,
            p.host,
            p.admin_port
        );
    }
    let mut nodes = Table::new();
    nodes.load_preset(UTF8_FULL_CONDENSED).set_header([
        "node", "role", "state", "pid", "address", "tl", "lsn", "received", "lag", "lag time",
        "sync", "receiver", "agent",
    ]);
    for n in &status.nodes {
        nodes.add_row([
            n.name.clone(),
            role(n).to_string(),
            state(n),
            opt(n.pid),
            format!("{}:{}", n.host, n.port),
            opt(n.timeline),
            opt(n.lsn),
            opt(n.received_lsn),
            n.lag_bytes.map(human_bytes).unwrap_or_else(|| "-".into()),
            n.lag_seconds
                .map(|s| format!("{s:.3}s"))
                .unwrap_or_else(|| "-".into()),
            n.sync_state.clone().unwrap_or_else(|| "-".into()),
            n.wal_receiver.clone().unwrap_or_else(|| "-".into()),
            match (n.agent_pid, n.leader) {
                (Some(pid), Some(true)) => format!("{pid} (leader)"),
                (Some(pid), _) => pid.to_string(),
                (None, _) => "-".into(),
            },
        ]);
    }
    say!("{nodes}");
    if !status.slots.is_empty() {
        let mut slots = Table::new();
        slots.load_preset(UTF8_FULL_CONDENSED).set_header([
            "slot",
            "type",
            "active",
            "restart lsn",
            "retained",
            "wal status",
        ]);
        for s in &status.slots {
            slots.add_row([
                s.name.clone(),
                s.slot_type.clone(),
                if s.active { "yes" } else { "NO" }.to_string(),
                opt(s.restart_lsn),
                s.retained_bytes
                    .map(human_bytes)
                    .unwrap_or_else(|| "-".into()),
                s.wal_status.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        say!("{slots}");
    }
    for n in &status.nodes {
        if let Some(a) = &n.archive {
            say!("{}", archive_line(&n.name, a));
        }
    }
    for n in status.nodes.iter().filter(|n| n.error.is_some()) {
        say!("{}: {}", n.name, n.error.as_deref().unwrap_or_default());
    }
    Ok(())
}

/// One line on a node's WAL archiving: healthy, or failing with why.
fn archive_line(node: &str, a: &ArchiveStatus) -> String {
    let last = match (&a.last_archived_wal, a.last_archived_age_seconds) {
        (Some(wal), Some(age)) => format!("last {wal} {age:.0}s ago"),
        _ => "nothing archived yet".into(),
    };
    if a.failing {
        format!(
            "archive on {node}: FAILING ({} failed attempts, {last}; WAL piles up in pg_wal until it works): {}",
            a.failed_count,
            a.reason.as_deref().unwrap_or("see the node's log")
        )
    } else {
        format!(
            "archive on {node}: ok, {} segments, {last}",
            a.archived_count
        )
    }
}

/// The table `up` ends with: where each node is and how to reach it.
/// Passwords are not printed; `pgkeel url` prints complete URLs.
pub fn print_ready_table(cluster: &Cluster, status: &ClusterStatus) {
    let roles = &cluster.config.roles;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "node",
        "role",
        "address",
        "connection URL",
    ]);
    for n in &status.nodes {
        let url = format_url(&roles.app, "PASSWORD", &n.host, n.port, &roles.database)
            .replace(":PASSWORD@", "@");
        table.add_row([
            n.name.clone(),
            role(n).to_string(),
            format!("{}:{}", n.host, n.port),
            url,
        ]);
    }
    if let Some(p) = status.proxy.as_ref().filter(|p| p.pid.is_some()) {
        let url = format_url(&roles.app, "PASSWORD", &p.host, p.port, &roles.database)
            .replace(":PASSWORD@", "@");
        table.add_row([
            "proxy".to_string(),
            "reads→replicas, writes→primary".to_string(),
            format!("{}:{}", p.host, p.port),
            url,
        ]);
    }
    say!("{table}");
    let dir = cluster.layout.root().display();
    if status.proxy.as_ref().is_some_and(|p| p.pid.is_some()) {
        say!(
            "connect: psql \"$(pgkeel url --proxy --dir {dir})\"   (primary: --primary, replica: --replica, superuser: --superuser)"
        );
    } else {
        say!(
            "connect: psql \"$(pgkeel url --dir {dir})\"   (replica: --replica, superuser: --superuser)"
        );
    }
    say!("status:  pgkeel status --dir {dir}   stop: pgkeel down --dir {dir}");
}

fn role(n: &NodeStatus) -> &'static str {
    match n.role {
        Some(Role::Primary) => "primary",
        Some(Role::Replica) => "replica",
        None => "-",
    }
}

fn state(n: &NodeStatus) -> String {
    match (n.running, n.pid, &n.error) {
        (true, _, _) => "running".into(),
        (false, Some(_), Some(_)) => "unreachable".into(),
        _ => "stopped".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

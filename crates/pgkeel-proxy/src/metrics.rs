//! Counters, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Shared;
use crate::topology::NodeRole;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A Prometheus histogram with fixed buckets, updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Monotonic counters the sessions bump.
#[derive(Debug)]
pub struct Metrics {
    /// Units of work routed per node.
    pub routed: Vec<AtomicU64>,
    /// Clients accepted since start.
    pub clients_total: AtomicU64,
    /// Failed logins.
    pub auth_failures: AtomicU64,
    /// Auth queries run on the primary (cache misses; concurrent logins
    /// of one role share one), to see what logins of roles not in the
    /// user list cost the primary.
    pub auth_queries: AtomicU64,
    /// Clients dropped for protocol violations.
    pub protocol_errors: AtomicU64,
    /// Units answered with an error by the proxy (no node, pool exhausted).
    pub routing_errors: AtomicU64,
    /// Reads retried on the primary after a replica refused them.
    pub retries_on_primary: AtomicU64,
    /// Clients disconnected for sitting idle inside a transaction (each
    /// one a rolled-back transaction an application did not expect).
    pub idle_transaction_timeouts: AtomicU64,
    /// Queries sent to give a server connection a client's startup
    /// settings (only where it held others): to see what clients with
    /// different settings sharing a pool cost.
    pub settings_applied: AtomicU64,
    /// Of those, the ones a server refused (the unit behind failed, the
    /// connection was closed): a replica that differs from the primary.
    pub settings_failed: AtomicU64,
    /// Plain `SET`/`RESET` statements whose values became the client's
    /// settings instead of pinning it (each one a client that keeps
    /// pooling and read splitting).
    pub settings_carried: AtomicU64,
    /// Another client's `nextval()` values discarded from a primary
    /// connection before a client wrote there (see `sequence`).
    pub sequence_discarded: AtomicU64,
    /// `currval()`/`lastval()` units that ran where the client's values
    /// were not (gone: taken over or closed); each got PostgreSQL's 55000
    /// and a notice, where a plain pooler may answer another client's id.
    pub sequence_lost: AtomicU64,
    /// Logins whose startup settings had to be checked on a server (none
    /// of the values seen before for that role and database): the extra
    /// round trip a login costs.
    pub settings_checked: AtomicU64,
    /// Time a client held a server connection (one unit of work or one
    /// transaction, from routing to release).
    pub hold_time: Histogram,
}

impl Metrics {
    /// Zeroed counters for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Metrics {
            routed: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            clients_total: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            auth_queries: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            routing_errors: AtomicU64::new(0),
            retries_on_primary: AtomicU64::new(0),
            idle_transaction_timeouts: AtomicU64::new(0),
            settings_applied: AtomicU64::new(0),
            settings_carried: AtomicU64::new(0),
            sequence_discarded: AtomicU64::new(0),
            sequence_lost: AtomicU64::new(0),
            settings_failed: AtomicU64::new(0),
            settings_checked: AtomicU64::new(0),
            hold_time: Histogram::default(),
        }
    }
}

/// The Prometheus exposition of the proxy's state.
pub fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    let _ = writeln!(
        out,
        "# HELP pgkeel_proxy_clients Clients connected now.\n# TYPE pgkeel_proxy_clients gauge\npgkeel_proxy_clients {}",
        shared.clients.load(Ordering::Relaxed)
    );
    counter(
        &mut out,
        "pgkeel_proxy_clients_total",
        "Clients accepted.",
        m.clients_total.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_auth_failures_total",
        "Failed client logins.",
        m.auth_failures.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_auth_queries_total",
        "Auth queries run on the primary for roles not in the user list (concurrent logins of one role share one).",
        m.auth_queries.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_protocol_errors_total",
        "Clients dropped for protocol violations.",
        m.protocol_errors.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_routing_errors_total",
        "Requests refused for want of a node or connection.",
        m.routing_errors.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_retries_on_primary_total",
        "Reads retried on the primary: a replica refused them as writes (25006) or its connection broke before they finished.",
        m.retries_on_primary.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_idle_transaction_timeouts_total",
        "Clients disconnected after idle_transaction_timeout idle inside a transaction (rolled back).",
        m.idle_transaction_timeouts.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_settings_applied_total",
        "Queries that gave a server connection a client's startup settings (where it held others).",
        m.settings_applied.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_settings_carried_total",
        "Plain SET/RESET statements carried to the client's next connections instead of pinning it.",
        m.settings_carried.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_sequence_values_discarded_total",
        "Other clients' nextval() values discarded from a primary connection before a client wrote there.",
        m.sequence_discarded.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_sequence_values_lost_total",
        "currval()/lastval() run where the client's nextval() values were gone (PostgreSQL's 55000 and a notice).",
        m.sequence_lost.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_settings_failed_total",
        "Of those, the ones a server refused: the client's unit failed, the connection was closed.",
        m.settings_failed.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_settings_checked_total",
        "Logins whose startup settings were checked on a server (values not seen before for that role and database).",
        m.settings_checked.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_server_closed_idle_total",
        "Pooled server connections closed after server_idle_timeout unused.",
        shared.pools.closed_idle.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "pgkeel_proxy_server_closed_lifetime_total",
        "Server connections closed on reaching server_lifetime.",
        shared.pools.closed_lifetime.load(Ordering::Relaxed),
    );
    m.hold_time.render(
        &mut out,
        "pgkeel_proxy_server_hold_seconds",
        "Time from routing a unit of work or transaction to releasing its server connection.",
    );
    let _ = writeln!(
        out,
        "# HELP pgkeel_proxy_routed_total Units of work routed to each node.\n# TYPE pgkeel_proxy_routed_total counter"
    );
    let health = shared.topology.snapshot();
    for (i, b) in shared.topology.backends.iter().enumerate() {
        let _ = writeln!(
            out,
            "pgkeel_proxy_routed_total{{node=\"{}\"}} {}",
            b.name,
            m.routed
                .get(i)
                .map(|c| c.load(Ordering::Relaxed))
                .unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "# HELP pgkeel_proxy_node_up Node role as seen by health checks (1 = in this role).\n# TYPE pgkeel_proxy_node_up gauge"
    );
    for (b, h) in shared.topology.backends.iter().zip(&health) {
        let role = match h.role {
            NodeRole::Primary => "primary",
            NodeRole::Replica => "replica",
            NodeRole::Down => "down",
        };
        let _ = writeln!(
            out,
            "pgkeel_proxy_node_up{{node=\"{}\",role=\"{role}\"}} 1",
            b.name
        );
        if let Some(l) = h.lag_bytes {
            let _ = writeln!(
                out,
                "pgkeel_proxy_replica_lag_bytes{{node=\"{}\"}} {l}",
                b.name
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP pgkeel_proxy_pool_connections Server connections per pool.\n# TYPE pgkeel_proxy_pool_connections gauge"
    );
    for p in shared.pools.stats() {
        let node = shared
            .topology
            .backends
            .get(p.key.node)
            .map(|b| b.name.as_str())
            .unwrap_or("?");
        for (state, v) in [("idle", p.idle), ("active", p.active)] {
            let _ = writeln!(
                out,
                "pgkeel_proxy_pool_connections{{user=\"{}\",database=\"{}\",node=\"{node}\",state=\"{state}\"}} {v}",
                p.key.user, p.key.database
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(2));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }
}

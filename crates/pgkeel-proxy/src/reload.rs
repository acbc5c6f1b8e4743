//! Applying a new configuration to a running proxy (SIGHUP) without
//! dropping a client: users, limits, routing rules and the read-only
//! function list change in place, and the TLS certificate and key are read
//! again (renewals replace the files in place); what is bound at start
//! (listeners, backends, pool mode, threads, TLS on or off) is reported as
//! needing a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pgkeel_sql::FunctionPolicy;

use crate::config::{ProxyConfig, User};
use crate::topology::ReplicaRules;
use crate::{ProxyError, Shared};

/// The settings a reload may change, read by sessions as they go.
#[derive(Debug, Clone)]
pub struct Live {
    /// Roles clients may log in as.
    pub users: Arc<HashMap<String, User>>,
    /// Replica choice and lag limits.
    pub rules: ReplicaRules,
    /// Clients connected at once.
    pub max_clients: usize,
    /// How long a client may stay idle inside a transaction.
    pub idle_transaction_timeout: Option<Duration>,
}

impl Live {
    /// The live part of `config`.
    pub fn of(config: &ProxyConfig) -> Self {
        Live {
            users: Arc::new(config.users.clone()),
            rules: ReplicaRules {
                choice: config.replica_choice,
                max_lag_bytes: config.max_replica_lag_bytes,
                max_lag: config.max_replica_lag,
                no_replica: config.no_replica,
            },
            max_clients: config.max_clients,
            idle_transaction_timeout: config.idle_transaction_timeout,
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings now in effect that differ from before.
    pub applied: Vec<String>,
    /// Settings that differ but only take effect after a restart.
    pub needs_restart: Vec<String>,
    /// Settings that could not be applied, each with the error naming
    /// the file or value and the fix; what was in effect before stays
    /// (a renewed certificate that does not load keeps the old one).
    pub failed: Vec<String>,
}

/// Compares the running configuration with a new one: which changes a
/// reload applies and which need a restart. Pure, so it is tested alone.
pub fn plan_reload(old: &ProxyConfig, new: &ProxyConfig) -> ReloadReport {
    let mut r = ReloadReport::default();
    let mut check = |changed: bool, name: &str, live: bool| {
        if changed {
            if live {
                r.applied.push(name.to_string());
            } else {
                r.needs_restart.push(name.to_string());
            }
        }
    };
    let users_changed = old.users.len() != new.users.len()
        || new
            .users
            .iter()
            .any(|(name, u)| old.users.get(name).is_none_or(|o| o.password != u.password));
    check(users_changed, "users", true);
    check(old.pool_size != new.pool_size, "pool_size", true);
    check(old.queue_wait != new.queue_wait, "queue_wait", true);
    check(old.max_clients != new.max_clients, "max_clients", true);
    check(
        old.server_idle_timeout != new.server_idle_timeout,
        "server_idle_timeout",
        true,
    );
    check(
        old.server_lifetime != new.server_lifetime,
        "server_lifetime",
        true,
    );
    check(
        old.max_replica_lag_bytes != new.max_replica_lag_bytes,
        "max_replica_lag",
        true,
    );
    check(
        old.max_replica_lag != new.max_replica_lag,
        "max_replica_lag_seconds",
        true,
    );
    check(
        old.replica_choice != new.replica_choice,
        "replica_choice",
        true,
    );
    check(old.no_replica != new.no_replica, "no_replica", true);
    check(
        old.idle_transaction_timeout != new.idle_transaction_timeout,
        "idle_transaction_timeout",
        true,
    );
    check(old.listen != new.listen, "listen address/port", false);
    check(
        old.admin_listen != new.admin_listen,
        "admin address/port",
        false,
    );
    check(old.backends != new.backends, "nodes", false);
    check(old.pool_mode != new.pool_mode, "pool_mode", false);
    check(
        old.login_timeout != new.login_timeout,
        "login_timeout",
        false,
    );
    check(
        old.read_only_functions != new.read_only_functions,
        "read_only_functions",
        true,
    );
    // The certificate files themselves are read again by every reload
    // (`Shared::reload`); turning TLS on or off is not live.
    check(
        old.tls_cert.is_some() != new.tls_cert.is_some(),
        "tls on/off",
        false,
    );
    check(old.tls_mode != new.tls_mode, "tls_mode", false);
    check(
        old.health_user != new.health_user || old.health_database != new.health_database,
        "health-check role",
        false,
    );
    check(
        old.leader_source != new.leader_source,
        "etcd settings",
        false,
    );
    r
}

impl Shared {
    /// The settings in effect now.
    pub fn live(&self) -> Live {
        match self.live.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replica rules in effect now (read for every routed read).
    pub fn rules(&self) -> ReplicaRules {
        match self.live.read() {
            Ok(l) => l.rules,
            Err(poisoned) => poisoned.into_inner().rules,
        }
    }

    /// How long a client may stay idle inside a transaction now (read
    /// only while one is).
    pub fn idle_transaction_timeout(&self) -> Option<Duration> {
        match self.live.read() {
            Ok(l) => l.idle_transaction_timeout,
            Err(poisoned) => poisoned.into_inner().idle_transaction_timeout,
        }
    }

    /// How long a client waits for a server connection or a primary.
    pub fn queue_wait(&self) -> Duration {
        self.pools.queue_wait()
    }

    /// Applies `new` (validated first: a bad configuration changes
    /// nothing). Connected clients keep their sessions; new limits apply
    /// to what they do next, a new read-only function list to the next
    /// statement classified, a renewed certificate to the next TLS
    /// handshake. A certificate that cannot be loaded is reported in
    /// [`ReloadReport::failed`] (and logged) while everything else applies:
    /// the certificate in use stays.
    pub fn reload(&self, new: ProxyConfig) -> Result<ReloadReport, ProxyError> {
        new.validate()?;
        let base = self.reloaded_config();
        let mut report = plan_reload(&base, &new);
        self.pools.set_limits(new.pool_size, new.queue_wait);
        self.pools
            .set_recycling(new.server_idle_timeout, new.server_lifetime);
        let live = Live::of(&new);
        match self.live.write() {
            Ok(mut l) => *l = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
        if base.read_only_functions != new.read_only_functions {
            self.classifier
                .set_policy(FunctionPolicy::with_read_only(&new.read_only_functions));
        }
        self.reload_tls(&new, &mut report);
        if let Ok(mut last) = self.last_config.lock() {
            *last = Some(Arc::new(new));
        }
        Ok(report)
    }

    /// Reads the certificate chain and key of `new` again when TLS is on
    /// now and stays on (on/off changes need a restart: `plan_reload`).
    fn reload_tls(&self, new: &ProxyConfig, report: &mut ReloadReport) {
        let (Some(tls), Some(cert), Some(key)) = (&self.tls, &new.tls_cert, &new.tls_key) else {
            return;
        };
        match tls.reload(cert, key) {
            Ok(true) => {
                tracing::info!(cert = %cert.display(), "new TLS certificate in use for new connections");
                report.applied.push("tls certificate".to_string());
            }
            Ok(false) => {}
            Err(e) => {
                let message = format!(
                    "tls certificate: {e}; the previous certificate stays in use (fix the file \
                     and reload again)"
                );
                tracing::error!("{message}");
                report.failed.push(message);
            }
        }
    }

    /// The configuration of the last reload (or the one started with).
    fn reloaded_config(&self) -> ProxyConfig {
        self.last_config
            .lock()
            .ok()
            .and_then(|l| l.as_ref().map(|c| (**c).clone()))
            .unwrap_or_else(|| (*self.config).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, ReplicaChoice};

    fn base() -> ProxyConfig {
        let mut users = HashMap::new();
        users.insert(
            "app".to_string(),
            User::from_password("one").expect("verifier"),
        );
        ProxyConfig::new(
            ([127, 0, 0, 1], 6432).into(),
            vec![Backend {
                name: "a".into(),
                addr: ([127, 0, 0, 1], 5432).into(),
                socket: None,
            }],
            users,
        )
    }

    #[test]
    fn limits_rules_and_passwords_apply_live() {
        let old = base();
        let mut new = base();
        new.pool_size = 5;
        new.max_clients = 7;
        new.replica_choice = ReplicaChoice::LeastOutstanding;
        new.max_replica_lag_bytes = Some(1);
        new.read_only_functions = vec!["app.lookup".into()];
        new.server_idle_timeout = None;
        new.users
            .insert("app".into(), User::from_password("two").expect("verifier"));
        let r = plan_reload(&old, &new);
        assert_eq!(
            r.applied,
            [
                "users",
                "pool_size",
                "max_clients",
                "server_idle_timeout",
                "max_replica_lag",
                "replica_choice",
                "read_only_functions"
            ]
        );
        assert!(r.needs_restart.is_empty(), "{r:?}");
    }

    #[test]
    fn listeners_nodes_and_pool_mode_need_a_restart() {
        let old = base();
        let mut new = base();
        new.listen = ([127, 0, 0, 1], 7000).into();
        new.pool_mode = crate::PoolMode::Session;
        new.backends.push(Backend {
            name: "b".into(),
            addr: ([127, 0, 0, 1], 5433).into(),
            socket: None,
        });
        new.tls_cert = Some("proxy.crt".into());
        new.tls_key = Some("proxy.key".into());
        new.tls_mode = crate::TlsMode::Require;
        let r = plan_reload(&old, &new);
        assert!(r.applied.is_empty(), "{r:?}");
        assert_eq!(
            r.needs_restart,
            [
                "listen address/port",
                "nodes",
                "pool_mode",
                "tls on/off",
                "tls_mode"
            ]
        );
        assert_eq!(plan_reload(&old, &base()), ReloadReport::default());
    }

    /// Certificate files are compared by content when the proxy reloads
    /// them, not by path: a renewed file under the same path, or the same
    /// file under a new path, is no on/off change.
    #[test]
    fn certificate_paths_are_no_restart() {
        let mut old = base();
        old.tls_cert = Some("a.crt".into());
        old.tls_key = Some("a.key".into());
        let mut new = old.clone();
        new.tls_cert = Some("b.crt".into());
        new.tls_key = Some("b.key".into());
        assert_eq!(plan_reload(&old, &new), ReloadReport::default());
    }
}

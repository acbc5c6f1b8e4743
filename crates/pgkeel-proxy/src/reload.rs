//! Applying a new configuration to a running proxy (SIGHUP) without
//! dropping a client: users, limits and routing rules change in place;
//! what is bound at start (listeners, backends, pool mode, threads) is
//! reported as needing a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

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
        false,
    );
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

    /// How long a client waits for a server connection or a primary.
    pub fn queue_wait(&self) -> Duration {
        self.pools.queue_wait()
    }

    /// Applies `new` (validated first: a bad configuration changes
    /// nothing). Connected clients keep their sessions; new limits apply
    /// to what they do next.
    pub fn reload(&self, new: ProxyConfig) -> Result<ReloadReport, ProxyError> {
        new.validate()?;
        let base = self.reloaded_config();
        let report = plan_reload(&base, &new);
        self.pools.set_limits(new.pool_size, new.queue_wait);
        let live = Live::of(&new);
        match self.live.write() {
            Ok(mut l) => *l = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
        if let Ok(mut last) = self.last_config.lock() {
            *last = Some(Arc::new(new));
        }
        Ok(report)
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
        new.users
            .insert("app".into(), User::from_password("two").expect("verifier"));
        let r = plan_reload(&old, &new);
        assert_eq!(
            r.applied,
            [
                "users",
                "pool_size",
                "max_clients",
                "max_replica_lag",
                "replica_choice"
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
        let r = plan_reload(&old, &new);
        assert!(r.applied.is_empty(), "{r:?}");
        assert_eq!(
            r.needs_restart,
            ["listen address/port", "nodes", "pool_mode"]
        );
        assert_eq!(plan_reload(&old, &base()), ReloadReport::default());
    }
}

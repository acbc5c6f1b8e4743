//! The configuration model. Field docs are the reference; the annotated
//! template in `template.rs` repeats them for users.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::proxy::ProxySection;
use crate::{NodeName, ReplicationMode};

/// A whole `pgkeel.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and where things live.
    pub cluster: ClusterSection,
    /// How commits wait for standbys and how much WAL is kept for them.
    pub replication: ReplicationSection,
    /// Roles pgkeel creates.
    pub roles: RolesSection,
    /// Who may connect over TCP.
    pub access: AccessSection,
    /// Memory sizing.
    pub tuning: TuningSection,
    /// Failover timing and rules.
    pub ha: HaSection,
    /// The consensus store.
    pub etcd: EtcdSection,
    /// The pooling, read/write-splitting proxy.
    pub proxy: ProxySection,
    /// Members, first one is the bootstrap primary. Empty = generated from
    /// `cluster.replicas` and `cluster.base_port`.
    pub nodes: Vec<NodeConfig>,
    /// Extra `postgresql.conf` parameters, applied after pgkeel's own.
    pub parameters: BTreeMap<String, ParamValue>,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Cluster name: PostgreSQL's `cluster_name` and the namespace in etcd.
    pub name: String,
    /// Root of everything pgkeel writes: data directories, logs, secrets.
    pub data_dir: PathBuf,
    /// OS user that owns the data and runs PostgreSQL. `None` = `postgres`
    /// when pgkeel runs as root, else the invoking user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
    /// PostgreSQL's bin directory. `None` = discovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<PathBuf>,
    /// Replicas to generate when `[[nodes]]` is not given (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// First port of generated nodes (default 5432); they take consecutive ports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_port: Option<u16>,
    /// Address generated nodes listen on.
    pub host: String,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            name: "pgkeel".into(),
            data_dir: PathBuf::from("./pgkeel-data"),
            os_user: None,
            bin_dir: None,
            replicas: None,
            base_port: None,
            host: "127.0.0.1".into(),
        }
    }
}

/// Default number of replicas of a generated cluster.
pub const DEFAULT_REPLICAS: usize = 2;
/// Default first port of a generated cluster.
pub const DEFAULT_BASE_PORT: u16 = 5432;

/// `[replication]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// `async`, `sync` (`FIRST n`) or `quorum` (`ANY n`).
    pub mode: ReplicationMode,
    /// Standbys that must confirm each commit in `sync`/`quorum` mode.
    pub sync_count: usize,
    /// WAL kept for standbys regardless of slots (lets `pg_rewind` work).
    pub wal_keep_size: String,
    /// Upper bound of WAL a slot may retain; past it the slot is invalidated
    /// rather than filling the disk.
    pub max_slot_wal_keep_size: String,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            mode: ReplicationMode::Quorum,
            sync_count: 1,
            wal_keep_size: "1GB".into(),
            max_slot_wal_keep_size: "8GB".into(),
        }
    }
}

/// `[roles]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesSection {
    /// Superuser name. `None` = the OS user's name (initdb's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superuser: Option<String>,
    /// Role standbys stream WAL with (REPLICATION, nothing else).
    pub replication: String,
    /// Role applications connect as; owns `database`.
    pub app: String,
    /// Database created for the application role.
    pub database: String,
}

impl Default for RolesSection {
    fn default() -> Self {
        RolesSection {
            superuser: None,
            replication: "replicator".into(),
            app: "app".into(),
            database: "app".into(),
        }
    }
}

/// `[access]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// Networks (CIDR) allowed to connect over TCP with SCRAM.
    pub networks: Vec<String>,
}

impl Default for AccessSection {
    fn default() -> Self {
        AccessSection {
            networks: vec!["127.0.0.1/32".into(), "::1/128".into()],
        }
    }
}

/// `[tuning]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TuningSection {
    /// Memory one node may use (`"4GB"`), or `"auto"`: the machine's memory
    /// divided by the nodes pgkeel runs on it.
    pub memory: String,
    /// `max_connections` of every node.
    pub max_connections: u32,
}

impl Default for TuningSection {
    fn default() -> Self {
        TuningSection {
            memory: "auto".into(),
            max_connections: 200,
        }
    }
}

/// `[ha]`: how fast failures are acted on, and what may be lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaSection {
    /// Seconds the leader lease lives without renewal. A crashed primary is
    /// replaced about this long after it died.
    pub ttl: f64,
    /// Seconds between two runs of the HA loop (leader-key changes wake it
    /// at once).
    pub loop_wait: f64,
    /// Seconds an etcd request may take before it counts as failed.
    pub retry_timeout: f64,
    /// A replica further behind than this many bytes of WAL never takes
    /// over automatically (async mode).
    pub maximum_lag_on_failover: u64,
    /// sync/quorum: block writes rather than drop the last synchronous
    /// standby from `synchronous_standby_names` when none is healthy.
    pub strict_sync: bool,
    /// Token required by the agents' POST endpoints; empty = generated at
    /// bootstrap into `secrets/api.token`.
    pub api_token: String,
}

impl Default for HaSection {
    fn default() -> Self {
        HaSection {
            ttl: 3.0,
            loop_wait: 1.0,
            retry_timeout: 1.0,
            maximum_lag_on_failover: 16 << 20,
            strict_sync: false,
            api_token: String::new(),
        }
    }
}

/// `[etcd]`: where the consensus store is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSection {
    /// Client URLs of an existing etcd cluster (`http://10.0.0.5:2379`).
    /// Empty: pgkeel runs one local etcd member itself.
    pub endpoints: Vec<String>,
    /// Client port of the local member (default: first node's port + 3000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_port: Option<u16>,
    /// Key prefix; the cluster's keys live under `<namespace>/<cluster.name>/`.
    pub namespace: String,
}

impl Default for EtcdSection {
    fn default() -> Self {
        EtcdSection {
            endpoints: vec![],
            client_port: None,
            namespace: "/pgkeel".into(),
        }
    }
}

/// One `[[nodes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Member name: also its slot name and `application_name`.
    pub name: NodeName,
    /// Address it listens on and is reached at.
    pub host: String,
    /// Its PostgreSQL port.
    pub port: u16,
    /// Port of its agent's REST API (default: `port + 2000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_port: Option<u16>,
    /// Never promote this node automatically.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nofailover: bool,
}

impl NodeConfig {
    /// The agent's REST port.
    pub fn api_port(&self) -> u16 {
        self.api_port.unwrap_or(self.port.saturating_add(2000))
    }
}

/// A `postgresql.conf` value as written in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `on`/`off`.
    Bool(bool),
    /// A bare number.
    Int(i64),
    /// A bare decimal.
    Float(f64),
    /// Anything else; rendered single-quoted.
    Text(String),
}

impl fmt::Display for ParamValue {
    /// Renders the value as `postgresql.conf` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => f.write_str(if *b { "on" } else { "off" }),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Text(s) => write!(f, "'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
        }
    }
}

impl Config {
    /// The OS user that runs PostgreSQL, given who is running pgkeel.
    pub fn os_user(&self, invoking_user: &str, invoked_as_root: bool) -> String {
        match &self.cluster.os_user {
            Some(u) => u.clone(),
            None if invoked_as_root => "postgres".into(),
            None => invoking_user.into(),
        }
    }

    /// The superuser role name for a given OS user.
    pub fn superuser(&self, os_user: &str) -> String {
        self.roles
            .superuser
            .clone()
            .unwrap_or_else(|| os_user.to_string())
    }

    /// The bootstrap primary (first node). Validation guarantees one exists.
    pub fn bootstrap_primary(&self) -> Option<&NodeConfig> {
        self.nodes.first()
    }

    /// The local etcd member's client port, when pgkeel runs etcd itself.
    pub fn local_etcd_port(&self) -> Option<u16> {
        if !self.etcd.endpoints.is_empty() {
            return None;
        }
        let first = self.nodes.first().map(|n| n.port).unwrap_or(5432);
        Some(self.etcd.client_port.unwrap_or(first.saturating_add(3000)))
    }

    /// etcd client URLs the agents use.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        match self.local_etcd_port() {
            Some(port) => vec![format!("http://127.0.0.1:{port}")],
            None => self.etcd.endpoints.clone(),
        }
    }

    /// The proxy's client port.
    pub fn proxy_port(&self) -> u16 {
        self.proxy.port_for(self.first_port())
    }

    /// The proxy's admin HTTP port.
    pub fn proxy_admin_port(&self) -> u16 {
        self.proxy.admin_port_for(self.first_port())
    }

    fn first_port(&self) -> u16 {
        self.nodes
            .first()
            .map(|n| n.port)
            .unwrap_or(DEFAULT_BASE_PORT)
    }

    /// Looks a node up by name.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }
}

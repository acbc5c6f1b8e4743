//! Turns a parsed configuration into a usable one: generates nodes when none
//! are listed and rejects combinations that cannot work.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::model::{DEFAULT_BASE_PORT, DEFAULT_REPLICAS};
use super::{Config, ConfigError, NodeConfig};
use crate::NodeName;
use crate::names::check_identifier;
use crate::size::parse_pg_size;

/// Parameters pgkeel owns: setting them under `[parameters]` would break
/// replication or contradict another key, so they are refused with a pointer
/// to the right key.
pub const MANAGED_PARAMETERS: [(&str, &str); 14] = [
    ("port", "set the node's `port` under [[nodes]]"),
    ("listen_addresses", "set the node's `host` under [[nodes]]"),
    ("cluster_name", "set `cluster.name`"),
    (
        "unix_socket_directories",
        "pgkeel keeps sockets in the node's run directory",
    ),
    (
        "primary_conninfo",
        "pgkeel points standbys at the primary itself",
    ),
    (
        "primary_slot_name",
        "pgkeel gives every standby its own slot",
    ),
    (
        "synchronous_standby_names",
        "set `replication.mode` and `replication.sync_count`",
    ),
    (
        "wal_level",
        "streaming replication needs `replica`; pgkeel sets it",
    ),
    (
        "hot_standby",
        "pgkeel's replicas serve reads, so it stays on",
    ),
    (
        "hba_file",
        "pgkeel renders pg_hba.conf in the data directory",
    ),
    (
        "ident_file",
        "pgkeel renders pg_ident.conf in the data directory",
    ),
    ("data_directory", "set `cluster.data_dir`"),
    (
        "config_file",
        "pgkeel renders postgresql.conf in the data directory",
    ),
    (
        "logging_collector",
        "pgkeel captures stderr into the node's log file",
    ),
];

/// Upper bound on generated replicas: more than this on one machine is
/// almost certainly a typo.
const MAX_REPLICAS: usize = 32;

pub(crate) fn finalize(mut cfg: Config) -> Result<Config, ConfigError> {
    check_identifier("cluster name", &cfg.cluster.name).map_err(err)?;
    materialize_nodes(&mut cfg)?;
    check_nodes(&cfg.nodes)?;
    check_replication(&cfg)?;
    check_roles(&cfg)?;
    check_networks(&cfg.access.networks)?;
    check_tuning(&cfg)?;
    check_ha(&cfg)?;
    check_proxy(&cfg)?;
    check_backup(&cfg)?;
    super::standby::check_standby_cluster(&cfg)?;
    check_parameters(&cfg)?;
    Ok(cfg)
}

fn err(e: impl ToString) -> ConfigError {
    ConfigError::invalid(e.to_string())
}

fn materialize_nodes(cfg: &mut Config) -> Result<(), ConfigError> {
    let cluster = &mut cfg.cluster;
    if !cfg.nodes.is_empty() {
        if cluster.replicas.is_some() || cluster.base_port.is_some() {
            return Err(ConfigError::invalid(
                "`cluster.replicas`/`cluster.base_port` (or --replicas/--base-port) generate nodes, but [[nodes]] are listed explicitly: remove one or the other",
            ));
        }
        return Ok(());
    }
    let replicas = cluster.replicas.take().unwrap_or(DEFAULT_REPLICAS);
    let base = cluster.base_port.take().unwrap_or(DEFAULT_BASE_PORT);
    if replicas > MAX_REPLICAS {
        return Err(ConfigError::invalid(format!(
            "{replicas} replicas requested; at most {MAX_REPLICAS} can be generated (list [[nodes]] explicitly for more)"
        )));
    }
    if base == 0 || usize::from(base) + replicas > usize::from(u16::MAX) {
        return Err(ConfigError::invalid(format!(
            "base port {base} with {replicas} replicas does not fit in 1-65535: choose another --base-port"
        )));
    }
    for i in 0..=replicas {
        let name = if i == 0 {
            "primary".to_string()
        } else {
            format!("replica{i}")
        };
        cfg.nodes.push(NodeConfig {
            name: NodeName::new(&name).map_err(err)?,
            host: cluster.host.clone(),
            port: base + i as u16,
            api_port: None,
            nofailover: false,
        });
    }
    Ok(())
}

fn check_nodes(nodes: &[NodeConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut addrs: HashMap<(String, u16), &str> = HashMap::new();
    for node in nodes {
        if !names.insert(node.name.as_str()) {
            return Err(ConfigError::invalid(format!(
                "node name `{}` is used twice: every node needs its own name (it is also its slot name)",
                node.name
            )));
        }
        if node.port == 0 {
            return Err(ConfigError::invalid(format!(
                "node `{}` has port 0: give it a real port",
                node.name
            )));
        }
        if node.host.trim().is_empty() {
            return Err(ConfigError::invalid(format!(
                "node `{}` has an empty host",
                node.name
            )));
        }
        if let Some(other) = addrs.insert((node.host.clone(), node.port), node.name.as_str()) {
            return Err(ConfigError::invalid(format!(
                "nodes `{other}` and `{}` both use {}:{}: give each node its own port",
                node.name, node.host, node.port
            )));
        }
    }
    Ok(())
}

fn check_replication(cfg: &Config) -> Result<(), ConfigError> {
    let replicas = cfg.nodes.len().saturating_sub(1);
    let repl = &cfg.replication;
    if repl.mode.is_synchronous() {
        if repl.sync_count == 0 {
            return Err(ConfigError::invalid(format!(
                "`replication.sync_count` is 0 in {} mode: use at least 1, or mode = \"async\"",
                repl.mode
            )));
        }
        if repl.sync_count > replicas {
            return Err(ConfigError::invalid(format!(
                "`replication.sync_count` is {} but there are only {replicas} replicas: every commit would wait forever; lower --sync-count or add replicas",
                repl.sync_count
            )));
        }
    }
    let keep = size(&repl.wal_keep_size, "replication.wal_keep_size")?;
    let slot = size(
        &repl.max_slot_wal_keep_size,
        "replication.max_slot_wal_keep_size",
    )?;
    if slot < keep {
        return Err(ConfigError::invalid(format!(
            "`replication.max_slot_wal_keep_size` ({}) is smaller than `wal_keep_size` ({}): slots would be invalidated while WAL is still kept anyway",
            repl.max_slot_wal_keep_size, repl.wal_keep_size
        )));
    }
    Ok(())
}

fn size(text: &str, key: &str) -> Result<u64, ConfigError> {
    parse_pg_size(text).ok_or_else(|| {
        ConfigError::invalid(format!(
            "`{key}` = \"{text}\" is not a size: write it like \"512MB\" or \"2GB\""
        ))
    })
}

fn check_roles(cfg: &Config) -> Result<(), ConfigError> {
    let roles = &cfg.roles;
    check_identifier("replication role", &roles.replication).map_err(err)?;
    check_identifier("application role", &roles.app).map_err(err)?;
    check_identifier("database name", &roles.database).map_err(err)?;
    if let Some(su) = &roles.superuser {
        check_identifier("superuser name", su).map_err(err)?;
        if su == &roles.replication || su == &roles.app {
            return Err(ConfigError::invalid(format!(
                "role `{su}` is both the superuser and another role: give each its own name"
            )));
        }
    }
    if roles.replication == roles.app {
        return Err(ConfigError::invalid(format!(
            "`roles.replication` and `roles.app` are both `{}`: the replication role must not be the application's",
            roles.app
        )));
    }
    Ok(())
}

fn check_networks(networks: &[String]) -> Result<(), ConfigError> {
    for net in networks {
        let ok = net.split_once('/').is_some_and(|(addr, prefix)| {
            match (addr.parse::<IpAddr>(), prefix.parse::<u8>()) {
                (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
                (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
                _ => false,
            }
        });
        if !ok {
            return Err(ConfigError::invalid(format!(
                "`access.networks` entry `{net}` is not a CIDR block: write it like \"10.0.0.0/8\" or \"::1/128\""
            )));
        }
    }
    Ok(())
}

fn check_tuning(cfg: &Config) -> Result<(), ConfigError> {
    let memory = &cfg.tuning.memory;
    if memory != "auto" {
        size(memory, "tuning.memory")?;
    }
    if cfg.tuning.max_connections < 10 {
        return Err(ConfigError::invalid(
            "`tuning.max_connections` below 10 leaves no room for replication and monitoring connections",
        ));
    }
    Ok(())
}

fn check_ha(cfg: &Config) -> Result<(), ConfigError> {
    let ha = &cfg.ha;
    if !(2.0..=600.0).contains(&ha.ttl) {
        return Err(ConfigError::invalid(format!(
            "`ha.ttl` = {} s: use 2-600 s (etcd will not keep a lease shorter than 2 s)",
            ha.ttl
        )));
    }
    if !(0.1..=ha.ttl / 2.0).contains(&ha.loop_wait) {
        return Err(ConfigError::invalid(format!(
            "`ha.loop_wait` = {} s: use 0.1 s up to half of `ha.ttl` ({} s), or the lease expires between two loops",
            ha.loop_wait,
            ha.ttl / 2.0
        )));
    }
    if !(0.1..=ha.ttl / 2.0).contains(&ha.retry_timeout) {
        return Err(ConfigError::invalid(format!(
            "`ha.retry_timeout` = {} s: use 0.1 s up to half of `ha.ttl` ({} s)",
            ha.retry_timeout,
            ha.ttl / 2.0
        )));
    }
    check_ports(cfg)?;
    check_etcd_members(cfg)?;
    for url in &cfg.etcd.endpoints {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(format!(
                "`etcd.endpoints` entry `{url}` is not a URL: write it like \"http://10.0.0.5:2379\""
            )));
        }
    }
    Ok(())
}

/// `etcd.members` names configured nodes, one per host, and only when
/// pgkeel runs etcd itself.
fn check_etcd_members(cfg: &Config) -> Result<(), ConfigError> {
    let members = &cfg.etcd.members;
    if members.is_empty() {
        return Ok(());
    }
    if !cfg.etcd.endpoints.is_empty() {
        return Err(ConfigError::invalid(
            "`etcd.members` and `etcd.endpoints` are both set: pgkeel either runs the etcd members itself (members) or uses an existing etcd (endpoints); remove one",
        ));
    }
    let mut hosts: HashMap<&str, &str> = HashMap::new();
    for name in members {
        let Some(node) = cfg.node(name.as_str()) else {
            return Err(ConfigError::invalid(format!(
                "`etcd.members` names `{name}`, which is not a node: list names from [[nodes]]"
            )));
        };
        if let Some(other) = hosts.insert(node.host.as_str(), name.as_str()) {
            return Err(ConfigError::invalid(format!(
                "`etcd.members` names `{other}` and `{name}`, both on host {}: run one etcd member per host (members on one host fail together)",
                node.host
            )));
        }
    }
    Ok(())
}

/// Every port pgkeel listens on beside the nodes' own must be distinct
/// (on one host).
fn check_ports(cfg: &Config) -> Result<(), ConfigError> {
    let mut ports: HashMap<u16, String> = HashMap::new();
    for node in &cfg.nodes {
        ports.insert(node.port, format!("node `{}`", node.name));
    }
    let mut claim = |port: u16, what: String| match ports.insert(port, what.clone()) {
        Some(other) if cfg.nodes.iter().all(|n| n.host == cfg.nodes[0].host) => {
            Err(ConfigError::invalid(format!(
                "port {port} is used by both {other} and {what}: set `api_port` / `etcd.client_port` / `proxy.port` / `proxy.admin_port` to free ports"
            )))
        }
        _ => Ok(()),
    };
    for node in &cfg.nodes {
        claim(node.api_port(), format!("the agent API of `{}`", node.name))?;
    }
    if let Some(port) = cfg.local_etcd_port() {
        claim(port, "the local etcd".into())?;
        if let Some(peer) = cfg.etcd_peer_port() {
            claim(peer, "the local etcd's peer port".into())?;
        }
    }
    if cfg.proxy.enabled {
        let first = cfg
            .nodes
            .first()
            .map(|n| n.port)
            .unwrap_or(DEFAULT_BASE_PORT);
        claim(cfg.proxy.port_for(first), "the proxy".into())?;
        claim(
            cfg.proxy.admin_port_for(first),
            "the proxy's admin endpoint".into(),
        )?;
    }
    Ok(())
}

fn check_proxy(cfg: &Config) -> Result<(), ConfigError> {
    let p = &cfg.proxy;
    if p.host.parse::<IpAddr>().is_err() {
        return Err(ConfigError::invalid(format!(
            "`proxy.host` = \"{}\" is not an IP address: use e.g. \"127.0.0.1\" or \"0.0.0.0\"",
            p.host
        )));
    }
    if p.pool_size == 0 || p.pool_size > 10_000 {
        return Err(ConfigError::invalid(format!(
            "`proxy.pool_size` = {}: use 1-10000 server connections per (user, database, node)",
            p.pool_size
        )));
    }
    if p.max_clients == 0 {
        return Err(ConfigError::invalid(
            "`proxy.max_clients` = 0 refuses every client: use at least 1",
        ));
    }
    if !(p.queue_wait > 0.0 && p.queue_wait <= 3600.0) {
        return Err(ConfigError::invalid(format!(
            "`proxy.queue_wait` = {} s: use more than 0 and at most 3600 s",
            p.queue_wait
        )));
    }
    if !(p.login_timeout >= 1.0 && p.login_timeout <= 600.0) {
        return Err(ConfigError::invalid(format!(
            "`proxy.login_timeout` = {} s: use 1-600 s (PostgreSQL's authentication_timeout default is 60)",
            p.login_timeout
        )));
    }
    for (value, key) in [
        (p.server_idle_timeout, "proxy.server_idle_timeout"),
        (p.server_lifetime, "proxy.server_lifetime"),
        (p.idle_transaction_timeout, "proxy.idle_transaction_timeout"),
    ] {
        if !(0.0..=30.0 * 86_400.0).contains(&value) {
            return Err(ConfigError::invalid(format!(
                "`{key}` = {value} s: use 0 (never) or up to 2592000 s (30 days)"
            )));
        }
    }
    size(&p.max_replica_lag, "proxy.max_replica_lag")?;
    if !(p.max_replica_lag_seconds >= 0.0 && p.max_replica_lag_seconds.is_finite()) {
        return Err(ConfigError::invalid(format!(
            "`proxy.max_replica_lag_seconds` = {}: use 0 (no limit) or a number of seconds",
            p.max_replica_lag_seconds
        )));
    }
    if p.threads == 0 || p.threads > 64 {
        return Err(ConfigError::invalid(format!(
            "`proxy.threads` = {}: use 1-64 (1 is usually fastest)",
            p.threads
        )));
    }
    if p.tls_cert.is_some() != p.tls_key.is_some() {
        return Err(ConfigError::invalid(
            "`proxy.tls_cert` and `proxy.tls_key` go together: set both (PEM files) or neither",
        ));
    }
    if p.tls_mode == super::TlsMode::Require && p.tls_cert.is_none() {
        return Err(ConfigError::invalid(
            "`proxy.tls_mode = \"require\"` needs `proxy.tls_cert` and `proxy.tls_key`",
        ));
    }
    for f in &p.read_only_functions {
        if f.is_empty() || f.chars().any(|c| c.is_whitespace() || c == '(') {
            return Err(ConfigError::invalid(format!(
                "`proxy.read_only_functions` entry \"{f}\" is not a function name: write names like \"my_report\" or \"app.total\""
            )));
        }
    }
    Ok(())
}

/// Parameters `[backup]` sets once a repository is configured.
pub const ARCHIVE_PARAMETERS: [&str; 4] = [
    "archive_mode",
    "archive_command",
    "restore_command",
    "archive_library",
];

/// Compression types pgBackRest knows.
const COMPRESS_TYPES: [&str; 5] = ["zst", "lz4", "gz", "bz2", "none"];

fn check_backup(cfg: &Config) -> Result<(), ConfigError> {
    let b = &cfg.backup;
    if b.path.is_some() && b.s3.is_some() {
        return Err(ConfigError::invalid(
            "`backup.path` and `[backup.s3]` are both set: the repository is one or the other; remove one",
        ));
    }
    if let Some(path) = &b.path
        && !path.is_absolute()
    {
        return Err(ConfigError::invalid(format!(
            "`backup.path` = {:?} is relative: give the repository's absolute path, the same on every host",
            path.display().to_string()
        )));
    }
    if let Some(s3) = &b.s3 {
        for (value, key) in [
            (&s3.endpoint, "endpoint"),
            (&s3.bucket, "bucket"),
            (&s3.region, "region"),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(format!(
                    "`backup.s3.{key}` is empty: object storage needs an endpoint, a bucket and a region"
                )));
            }
        }
        if s3.uri_style != "host" && s3.uri_style != "path" {
            return Err(ConfigError::invalid(format!(
                "`backup.s3.uri_style` = {:?}: write \"host\" (virtual-hosted buckets) or \"path\"",
                s3.uri_style
            )));
        }
        if !s3.path.starts_with('/') {
            return Err(ConfigError::invalid(format!(
                "`backup.s3.path` = {:?} must start with `/`",
                s3.path
            )));
        }
    }
    if b.retention_full == 0 {
        return Err(ConfigError::invalid(
            "`backup.retention_full` = 0 would expire every backup: keep at least 1",
        ));
    }
    if !COMPRESS_TYPES.contains(&b.compress.as_str()) {
        return Err(ConfigError::invalid(format!(
            "`backup.compress` = {:?}: write one of {}",
            b.compress,
            COMPRESS_TYPES.join(", ")
        )));
    }
    if b.process_max == 0 || b.process_max > 64 {
        return Err(ConfigError::invalid(format!(
            "`backup.process_max` = {}: give 1 to 64 processes",
            b.process_max
        )));
    }
    if b.enabled()
        && let Some(name) = cfg
            .parameters
            .keys()
            .find(|k| ARCHIVE_PARAMETERS.contains(&k.as_str()))
    {
        return Err(ConfigError::invalid(format!(
            "parameter `{name}` is managed by pgkeel while `[backup]` has a repository: pgkeel archives through pgBackRest; remove it from [parameters]"
        )));
    }
    Ok(())
}

fn check_parameters(cfg: &Config) -> Result<(), ConfigError> {
    for name in cfg.parameters.keys() {
        if let Some((_, instead)) = MANAGED_PARAMETERS.iter().find(|(p, _)| p == name) {
            return Err(ConfigError::invalid(format!(
                "parameter `{name}` is managed by pgkeel: {instead}"
            )));
        }
        let valid = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if !valid {
            return Err(ConfigError::invalid(format!(
                "`[parameters]` key `{name}` is not a PostgreSQL parameter name (lower-case, like `work_mem`)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigSources, load};

    fn load_text(text: &str) -> Result<super::Config, String> {
        load(&ConfigSources {
            file: Some(("t.toml".into(), text.into())),
            ..Default::default()
        })
        .map_err(|e| e.to_string())
    }

    fn nodes(spec: &[(&str, u16)]) -> String {
        spec.iter()
            .map(|(n, p)| format!("[[nodes]]\nname = \"{n}\"\nhost = \"127.0.0.1\"\nport = {p}\n"))
            .collect()
    }

    #[test]
    fn sync_count_larger_than_replicas() {
        let e = load_text("[replication]\nmode = \"sync\"\nsync_count = 3\n").expect_err("bad");
        assert!(e.contains("only 2 replicas"), "{e}");
    }

    #[test]
    fn sync_count_irrelevant_in_async_mode() {
        assert!(load_text("[replication]\nmode = \"async\"\nsync_count = 9\n").is_ok());
    }

    #[test]
    fn duplicate_names_and_ports() {
        let e = load_text(&nodes(&[("a", 1), ("a", 2)])).expect_err("dup name");
        assert!(e.contains("`a` is used twice"), "{e}");
        let e = load_text(&nodes(&[("a", 7), ("b", 7)])).expect_err("dup port");
        assert!(e.contains("both use 127.0.0.1:7"), "{e}");
    }

    #[test]
    fn explicit_nodes_conflict_with_generation() {
        let e = load_text(&format!("[cluster]\nreplicas = 1\n{}", nodes(&[("a", 1)])))
            .expect_err("conflict");
        assert!(e.contains("remove one or the other"), "{e}");
    }

    #[test]
    fn bad_node_name_says_the_rule() {
        let e = load_text(&nodes(&[("Node-1", 1)])).expect_err("bad name");
        assert!(e.contains("lower-case"), "{e}");
    }

    #[test]
    fn managed_parameter_points_to_the_right_key() {
        let e = load_text("[parameters]\nport = 5000\n").expect_err("managed");
        assert!(e.contains("[[nodes]]"), "{e}");
        assert!(load_text("[parameters]\nwork_mem = \"64MB\"\njit = false\n").is_ok());
    }

    #[test]
    fn a_backup_repository_is_checked_with_the_fix() {
        let ok = load_text("[backup]\npath = \"/mnt/b\"\n").expect("path repository");
        assert!(ok.backup.enabled() && !ok.backup.encrypted());
        assert!(!load_text("").expect("defaults").backup.enabled());
        let s3 = "[backup.s3]\nendpoint = \"127.0.0.1:9000\"\nbucket = \"b\"\nregion = \"r\"\n";
        let ok = load_text(s3).expect("s3 repository");
        assert!(
            ok.backup.encrypted(),
            "object storage is encrypted by default"
        );
        for (text, says) in [
            ("[backup]\npath = \"b\"\n", "absolute path"),
            (&format!("[backup]\npath = \"/b\"\n{s3}"), "remove one"),
            (
                "[backup]\npath = \"/b\"\nretention_full = 0\n",
                "at least 1",
            ),
            ("[backup]\ncompress = \"xz\"\n", "zst, lz4"),
            (
                "[backup]\nfull_schedule = \"sundays\"\n",
                "weekly DAY HH:MM",
            ),
            ("[backup]\nprocess_max = 0\n", "1 to 64"),
            (&s3.replace("\"b\"", "\"\""), "needs an endpoint, a bucket"),
            (&format!("{s3}uri_style = \"virtual\"\n"), "\"path\""),
            (
                "[backup]\npath = \"/b\"\n[parameters]\narchive_command = \"cp %p /x\"\n",
                "remove it from [parameters]",
            ),
        ] {
            let e = load_text(text).expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
        // Without a repository, another archiver stays possible.
        assert!(load_text("[parameters]\narchive_command = \"wal-g wal-push %p\"\n").is_ok());
    }

    #[test]
    fn bad_sizes_and_networks() {
        let e = load_text("[replication]\nwal_keep_size = \"lots\"\n").expect_err("size");
        assert!(e.contains("512MB"), "{e}");
        let e = load_text("[access]\nnetworks = [\"10.0.0.0/33\"]\n").expect_err("cidr");
        assert!(e.contains("CIDR"), "{e}");
        let e =
            load_text("[replication]\nwal_keep_size = \"2GB\"\nmax_slot_wal_keep_size = \"1GB\"\n")
                .expect_err("order");
        assert!(e.contains("smaller"), "{e}");
    }

    #[test]
    fn replication_role_must_differ_from_app_role() {
        let e = load_text("[roles]\nreplication = \"app\"\n").expect_err("same");
        assert!(e.contains("must not be"), "{e}");
    }
}

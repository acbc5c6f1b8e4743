//! The `pgkeel.toml` baked into the compose image: the user's
//! configuration with what differs inside the containers rewritten (node
//! addresses, etcd members, secrets and data paths, networks). Pure.

use anyhow::{Context, Result};
use pgkeel_core::config::multi_host::ETCD_USER;
use pgkeel_core::config::{ConfigSources, load};
use toml::{Table, Value};

use super::plan::{ComposePlan, ETCD_CLIENT_PORT, ETCD_PEER_PORT};

/// Where the config sits in the image.
pub const CONFIG_PATH: &str = "/etc/pgkeel/pgkeel.toml";
/// Where compose mounts file secrets.
pub const SECRETS_PATH: &str = "/run/secrets";
/// The data root in each node's container (its own volume).
pub const DATA_ROOT: &str = "/var/lib/pgkeel";

/// Renders the container configuration from the user's file text.
/// Settings that mean the same in a container (replication, roles, HA
/// timing, tuning, proxy pooling, parameters) are kept as written.
pub fn container_config(source: &str, plan: &ComposePlan) -> Result<String> {
    let mut table: Table = toml::from_str(source).context("the configuration is not valid TOML")?;

    let mut cluster = take(&mut table, "cluster");
    cluster.insert("data_dir".into(), DATA_ROOT.into());
    cluster.insert("secrets_dir".into(), SECRETS_PATH.into());
    // Generated nodes are listed explicitly below; a host's bin_dir may
    // not exist in the image (PostgreSQL is found there by itself).
    for key in ["replicas", "base_port", "host", "bin_dir"] {
        cluster.remove(key);
    }

    table.insert("cluster".into(), Value::Table(cluster));

    let mut access = take(&mut table, "access");
    let mut networks: Vec<Value> = match access.get("networks") {
        Some(Value::Array(list)) => list.clone(),
        _ => vec!["127.0.0.1/32".into(), "::1/128".into()],
    };
    // The members' own host addresses (`pgkeel init` lists them) mean
    // nothing on the compose network.
    let old_hosts: Vec<String> = source_hosts(&table);
    networks.retain(|n| {
        n.as_str().is_none_or(|n| {
            !old_hosts
                .iter()
                .any(|h| n == format!("{h}/32") || n == format!("{h}/128"))
        })
    });
    let subnet = Value::from(plan.subnet.to_string());
    if !networks.contains(&subnet) {
        networks.push(subnet);
    }
    access.insert("networks".into(), Value::Array(networks));

    table.insert("access".into(), Value::Table(access));

    let mut etcd = take(&mut table, "etcd");
    etcd.remove("endpoints");
    let members = plan.nodes.iter().map(|n| Value::from(n.name.as_str()));
    etcd.insert("members".into(), Value::Array(members.collect()));
    etcd.insert("client_port".into(), i64::from(ETCD_CLIENT_PORT).into());
    etcd.insert("peer_port".into(), i64::from(ETCD_PEER_PORT).into());
    // The containers' etcd is pgkeel's own: TLS (certificates made for
    // the containers' addresses by the export) and authentication.
    etcd.insert("tls".into(), true.into());
    if etcd
        .get("user")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        etcd.insert("user".into(), ETCD_USER.into());
    }

    table.insert("etcd".into(), Value::Table(etcd));

    let mut proxy = take(&mut table, "proxy");
    // Published ports reach the proxy on its container address.
    proxy.insert("host".into(), "0.0.0.0".into());
    proxy.insert("port".into(), i64::from(plan.proxy_port).into());
    table.insert("proxy".into(), Value::Table(proxy));

    let nodes = plan.nodes.iter().map(|n| {
        let mut t = Table::new();
        t.insert("name".into(), n.name.as_str().into());
        t.insert("host".into(), n.ip.to_string().into());
        t.insert("port".into(), i64::from(n.port).into());
        if let Some(api) = n.api_port_set {
            t.insert("api_port".into(), i64::from(api).into());
        }
        if n.nofailover {
            t.insert("nofailover".into(), true.into());
        }
        Value::Table(t)
    });
    table.insert("nodes".into(), Value::Array(nodes.collect()));

    let body = toml::to_string(&table).context("cannot write the container configuration")?;
    let text = format!(
        "# pgkeel.toml inside the containers, written by `pgkeel export compose`\n\
         # from your configuration: node addresses, etcd members, paths and\n\
         # networks are rewritten for compose network {}. Edit your own\n\
         # file and export again rather than this one.\n\n{body}",
        plan.subnet
    );
    // What the agents will load must load here first.
    load(&ConfigSources {
        file: Some(("container pgkeel.toml".into(), text.clone())),
        ..Default::default()
    })
    .context(
        "the container configuration would not load (a bug in `pgkeel export`; please report it)",
    )?;
    Ok(text)
}

/// The `host` of every `[[nodes]]` entry of the user's file.
fn source_hosts(table: &Table) -> Vec<String> {
    match table.get("nodes") {
        Some(Value::Array(nodes)) => nodes
            .iter()
            .filter_map(|n| n.get("host")?.as_str().map(String::from))
            .collect(),
        _ => vec![],
    }
}

/// The table `name`, removed from `table` to be edited and put back
/// (empty when missing; a non-table was already refused by `load`).
fn take(table: &mut Table, name: &str) -> Table {
    match table.remove(name) {
        Some(Value::Table(t)) => t,
        _ => Table::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::{DEFAULT_SUBNET, Subnet, plan};
    use super::*;

    const SOURCE: &str = "[cluster]\nname = \"prod\"\ndata_dir = \"/srv/pg\"\n\
        secrets_dir = \"secrets\"\nbin_dir = \"/opt/pg/bin\"\n\
        [replication]\nmode = \"quorum\"\n\
        [access]\nnetworks = [\"10.0.0.0/8\", \"192.0.2.1/32\"]\n\
        [etcd]\nendpoints = [\"http://10.0.0.5:2379\"]\n\
        [tuning]\nmemory = \"1GB\"\n\
        [[nodes]]\nname = \"pg1\"\nhost = \"192.0.2.1\"\nport = 5432\n\
        [[nodes]]\nname = \"pg2\"\nhost = \"db2.example\"\nport = 5432\napi_port = 8008\n";

    fn rendered(source: &str) -> Result<pgkeel_core::Config> {
        let config = load(&ConfigSources {
            file: Some(("in".into(), source.into())),
            ..Default::default()
        })?;
        let p = plan(&config, Subnet::parse(DEFAULT_SUBNET)?, 5432)?;
        let text = container_config(source, &p)?;
        Ok(load(&ConfigSources {
            file: Some(("out".into(), text)),
            ..Default::default()
        })?)
    }

    #[test]
    fn addresses_etcd_and_paths_are_rewritten_the_rest_kept() -> Result<()> {
        let c = rendered(SOURCE)?;
        let hosts: Vec<&str> = c.nodes.iter().map(|n| n.host.as_str()).collect();
        assert_eq!(hosts, ["10.89.54.11", "10.89.54.12"]);
        assert_eq!(c.nodes[1].api_port, Some(8008));
        assert_eq!(
            c.etcd_endpoints(),
            ["https://10.89.54.11:2379", "https://10.89.54.12:2379"]
        );
        assert!(c.etcd.tls && c.etcd.user == ETCD_USER);
        assert_eq!(c.cluster.data_dir.to_str(), Some(DATA_ROOT));
        assert_eq!(
            c.cluster.secrets_dir.as_deref().and_then(|p| p.to_str()),
            Some(SECRETS_PATH)
        );
        assert_eq!(c.cluster.bin_dir, None);
        // The old member address 192.0.2.1/32 is dropped.
        assert_eq!(c.access.networks, ["10.0.0.0/8", DEFAULT_SUBNET]);
        assert_eq!(c.tuning.memory, "1GB");
        assert_eq!((c.proxy.host.as_str(), c.proxy_port()), ("0.0.0.0", 6432));
        Ok(())
    }

    #[test]
    fn generated_nodes_become_explicit() -> Result<()> {
        let c = rendered("[cluster]\nreplicas = 2\nbase_port = 6000\n")?;
        let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["primary", "replica1", "replica2"]);
        assert_eq!(c.nodes[2].port, 6002);
        assert_eq!(c.etcd_members().len(), 3);
        assert_eq!(
            c.access.networks,
            ["127.0.0.1/32", "::1/128", DEFAULT_SUBNET]
        );
        Ok(())
    }
}

//! The configuration `pgkeel init --node NAME=HOST[:PORT] ...` writes for a
//! cluster whose nodes live on their own hosts: pure rendering, validated
//! by loading it back.

use std::net::IpAddr;

use super::ConfigError;
use super::model::url_host;
use crate::NodeName;

/// PostgreSQL's port when `--node` gives none: every node has a host of
/// its own, so all can use the standard port.
pub const DEFAULT_NODE_PORT: u16 = 5432;
/// etcd's standard client port, used on every member host.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's standard peer port.
pub const ETCD_PEER_PORT: u16 = 2380;

/// One `--node` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Member name.
    pub name: NodeName,
    /// Address (IP or DNS name) it listens on and is reached at.
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
}

/// Parses `NAME=HOST` or `NAME=HOST:PORT` (`NAME=[v6]:PORT` for IPv6).
pub fn parse_node_spec(text: &str) -> Result<NodeSpec, ConfigError> {
    let bad = |why: &str| {
        ConfigError::invalid(format!(
            "--node `{text}`: {why}; write NAME=HOST or NAME=HOST:PORT, e.g. --node pg1=10.0.0.11"
        ))
    };
    let (name, address) = text.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let name = NodeName::new(name.trim()).map_err(|e| bad(&e.to_string()))?;
    let address = address.trim();
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        match tail.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if tail.is_empty() => (host, None),
            None => return Err(bad("text after `]`")),
        }
    } else if address.parse::<IpAddr>().is_ok() {
        (address, None)
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad(&format!("port `{p}` is not a number from 1 to 65535"))),
        },
        None => DEFAULT_NODE_PORT,
    };
    Ok(NodeSpec {
        name,
        host: host.to_string(),
        port,
    })
}

/// What `pgkeel init --node ...` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiHostSpec {
    /// Cluster name.
    pub name: String,
    /// Data root on every host.
    pub data_dir: String,
    /// The nodes, in the order given.
    pub nodes: Vec<NodeSpec>,
    /// An existing etcd's client URLs; empty: one member per node host.
    pub etcd_endpoints: Vec<String>,
}

/// Renders the multi-host `pgkeel.toml`.
pub fn render_multi_host(spec: &MultiHostSpec) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut networks: Vec<String> = vec![];
    let mut named_hosts: Vec<&str> = vec![];
    for node in &spec.nodes {
        match node.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => networks.push(format!("{ip}/32")),
            Ok(IpAddr::V6(ip)) => networks.push(format!("{ip}/128")),
            Err(_) => named_hosts.push(&node.host),
        }
    }
    networks.dedup();
    networks.push("127.0.0.1/32".into());
    let mut out = String::new();
    out.push_str(
        "# pgkeel.toml for a cluster whose nodes run on their own hosts, written by\n\
         # `pgkeel init --node ...`. Copy this file and the secrets/ directory\n\
         # beside it (keep it 0700) to every host, then on each host run:\n\
         #   pgkeel agent --config pgkeel.toml --node <name>\n\
         # The first agent to claim the cluster in etcd runs initdb; the others\n\
         # clone from it. `pgkeel init` without --node lists every other key.\n\n",
    );
    out.push_str(&format!(
        "[cluster]\nname = {}\n# Data root on each host (it holds only that host's node).\ndata_dir = {}\n\
         # Passwords and the API token, relative to this file.\nsecrets_dir = \"secrets\"\n\n",
        quote(&spec.name),
        quote(&spec.data_dir)
    ));
    out.push_str(
        "[roles]\n# The same superuser name on every host (initdb's, for the proxy's auth query).\nsuperuser = \"postgres\"\n\n",
    );
    out.push_str(
        "[access]\n# Networks allowed to connect over TCP (SCRAM). The members are listed;\n\
         # add your applications' networks.\n",
    );
    if !named_hosts.is_empty() {
        out.push_str(&format!(
            "# Replication from {} is allowed by name; add their networks here for\n# ordinary connections.\n",
            named_hosts.join(", ")
        ));
    }
    out.push_str(&format!("networks = [{}]\n\n", list(&networks)));
    out.push_str("[etcd]\n");
    if spec.etcd_endpoints.is_empty() {
        let members: Vec<String> = spec.nodes.iter().map(|n| n.name.to_string()).collect();
        out.push_str(&format!(
            "# One etcd member per node host, run by that host's agent or its own unit\n\
             # (`pgkeel export systemd`): a real quorum that survives any one host.\n\
             members = [{}]\nclient_port = {ETCD_CLIENT_PORT}\npeer_port = {ETCD_PEER_PORT}\n\n",
            list(&members)
        ));
    } else {
        out.push_str(&format!(
            "# An existing etcd cluster.\nendpoints = [{}]\n\n",
            list(&spec.etcd_endpoints)
        ));
    }
    out.push_str(
        "[proxy]\n# Run `pgkeel proxy --config pgkeel.toml` on any host (or several).\nhost = \"0.0.0.0\"\n\n",
    );
    for node in &spec.nodes {
        out.push_str(&format!(
            "[[nodes]]\nname = {}\nhost = {}\nport = {}\n\n",
            quote(node.name.as_str()),
            quote(&node.host),
            node.port
        ));
    }
    out
}

/// The etcd client URLs a multi-host config's members serve.
pub fn member_urls(spec: &MultiHostSpec) -> Vec<String> {
    spec.nodes
        .iter()
        .map(|n| format!("http://{}:{ETCD_CLIENT_PORT}", url_host(&n.host)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigSources, load};

    fn spec(nodes: &[&str]) -> Result<MultiHostSpec, ConfigError> {
        Ok(MultiHostSpec {
            name: "prod".into(),
            data_dir: "/var/lib/pgkeel".into(),
            nodes: nodes
                .iter()
                .map(|n| parse_node_spec(n))
                .collect::<Result<_, _>>()?,
            etcd_endpoints: vec![],
        })
    }

    fn load_text(text: &str) -> Result<crate::Config, ConfigError> {
        load(&ConfigSources {
            file: Some(("pgkeel.toml".into(), text.into())),
            ..Default::default()
        })
    }

    #[test]
    fn node_specs_with_and_without_ports() -> Result<(), ConfigError> {
        let n = parse_node_spec("pg1=10.0.0.11")?;
        assert_eq!(
            (n.name.as_str(), n.host.as_str(), n.port),
            ("pg1", "10.0.0.11", 5432)
        );
        let n = parse_node_spec("pg2=db2.example:5433")?;
        assert_eq!((n.host.as_str(), n.port), ("db2.example", 5433));
        let n = parse_node_spec("pg3=[fd00::3]:6000")?;
        assert_eq!((n.host.as_str(), n.port), ("fd00::3", 6000));
        let n = parse_node_spec("pg4=fd00::4")?;
        assert_eq!((n.host.as_str(), n.port), ("fd00::4", 5432));
        Ok(())
    }

    #[test]
    fn bad_node_specs_say_the_form() {
        for bad in [
            "pg1",
            "pg1=",
            "Bad-Name=10.0.0.1",
            "pg1=10.0.0.1:0",
            "pg1=h:x",
        ] {
            let e = parse_node_spec(bad).expect_err(bad).to_string();
            assert!(e.contains("NAME=HOST"), "{bad}: {e}");
        }
    }

    #[test]
    fn rendered_config_loads_with_one_etcd_member_per_host() -> Result<(), ConfigError> {
        let s = spec(&["pg1=10.0.0.11", "pg2=10.0.0.12", "pg3=10.0.0.13"])?;
        let config = load_text(&render_multi_host(&s))?;
        assert_eq!(config.cluster.name, "prod");
        assert_eq!(config.nodes.len(), 3);
        assert_eq!(config.etcd_members().len(), 3);
        assert_eq!(config.etcd_endpoints(), member_urls(&s));
        assert_eq!(
            config.access.networks,
            [
                "10.0.0.11/32",
                "10.0.0.12/32",
                "10.0.0.13/32",
                "127.0.0.1/32"
            ]
        );
        assert_eq!(
            config.cluster.secrets_dir.as_deref(),
            Some(std::path::Path::new("secrets"))
        );
        Ok(())
    }

    #[test]
    fn external_etcd_replaces_the_members() -> Result<(), ConfigError> {
        let mut s = spec(&["pg1=10.0.0.11", "pg2=10.0.0.12"])?;
        s.etcd_endpoints = vec!["http://10.0.0.5:2379".into()];
        let config = load_text(&render_multi_host(&s))?;
        assert!(config.etcd_members().is_empty());
        assert_eq!(config.etcd_endpoints(), ["http://10.0.0.5:2379"]);
        Ok(())
    }

    #[test]
    fn two_nodes_on_one_address_and_port_are_refused() -> Result<(), ConfigError> {
        let s = spec(&["pg1=10.0.0.11", "pg2=10.0.0.11"])?;
        let e = load_text(&render_multi_host(&s)).expect_err("same address");
        assert!(e.to_string().contains("10.0.0.11:5432"), "{e}");
        Ok(())
    }
}

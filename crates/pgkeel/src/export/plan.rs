//! Where each container of an exported compose cluster lives: its static
//! address on the compose network and the host port it is published on.
//! Pure: computed from the configuration and the flags only.

use std::net::Ipv4Addr;

use anyhow::{Result, bail};
use pgkeel_core::Config;

/// The compose network's subnet when `--subnet` is not given: private,
/// and outside the 172.17-31.0.0/16 and 192.168.0.0/16 ranges Docker
/// hands out to networks it creates itself.
pub const DEFAULT_SUBNET: &str = "10.89.54.0/24";
/// First host port published when `--publish-base` is not given: the
/// guide's 5432, 5433, ... for the nodes and 6432 for the proxy.
pub const DEFAULT_PUBLISH_BASE: u16 = 5432;
/// The proxy is published this far above the first node.
pub const PROXY_PUBLISH_OFFSET: u16 = 1000;
/// Host number (in the subnet) of the proxy; nodes follow it.
const PROXY_HOST: u32 = 10;
/// Host number of the first node.
const FIRST_NODE_HOST: u32 = 11;
/// etcd's standard ports: each container has an address of its own.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's standard peer port.
pub const ETCD_PEER_PORT: u16 = 2380;

/// An IPv4 network, `10.89.54.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Network address (host bits zero).
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `A.B.C.D/N`; host bits must be zero, as Docker demands.
    pub fn parse(text: &str) -> Result<Subnet> {
        let form = "write an IPv4 network such as 10.89.54.0/24";
        let Some((addr, prefix)) = text.trim().split_once('/') else {
            bail!("--subnet `{text}` has no prefix length: {form}");
        };
        let Ok(network) = addr.parse::<Ipv4Addr>() else {
            bail!("--subnet `{text}`: `{addr}` is not an IPv4 address: {form}");
        };
        let prefix = match prefix.parse::<u8>() {
            Ok(p) if (8..=28).contains(&p) => p,
            _ => bail!("--subnet `{text}`: the prefix length must be 8 to 28: {form}"),
        };
        let subnet = Subnet { network, prefix };
        if u32::from(network) & !subnet.mask() != 0 {
            let fixed = Ipv4Addr::from(u32::from(network) & subnet.mask());
            bail!("--subnet `{text}` has host bits set: did you mean {fixed}/{prefix}?");
        }
        Ok(subnet)
    }

    fn mask(self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Addresses in the subnet, network and broadcast included.
    fn size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address of the subnet, if it is a usable host address.
    pub fn host(self, n: u32) -> Option<Ipv4Addr> {
        (n > 0 && u64::from(n) < self.size() - 1)
            .then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// One node's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    /// Node (and compose service) name.
    pub name: String,
    /// Static address on the compose network.
    pub ip: Ipv4Addr,
    /// PostgreSQL's port in the container.
    pub port: u16,
    /// The agent's REST port in the container.
    pub api_port: u16,
    /// The configured `api_port`, if any (kept in the container config).
    pub api_port_set: Option<u16>,
    /// Never promoted automatically.
    pub nofailover: bool,
    /// Host port PostgreSQL is published on.
    pub published: u16,
}

/// The whole layout of an exported compose cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposePlan {
    /// Cluster name.
    pub cluster: String,
    /// The compose network.
    pub subnet: Subnet,
    /// One per node, in configuration order.
    pub nodes: Vec<NodePlan>,
    /// The proxy's static address.
    pub proxy_ip: Ipv4Addr,
    /// The proxy's port in its container.
    pub proxy_port: u16,
    /// Host port the proxy is published on.
    pub proxy_published: u16,
}

/// Lays out `config`'s nodes on `subnet`, published from `publish_base`.
pub fn plan(config: &Config, subnet: Subnet, publish_base: u16) -> Result<ComposePlan> {
    if config.nodes.is_empty() {
        bail!("the configuration has no nodes; write them with `pgkeel init --node NAME=HOST ...`");
    }
    if config.node(super::compose::PROXY_SERVICE).is_some() {
        bail!(
            "a node is named `{}`, the compose service of the proxy: rename the node in the configuration",
            super::compose::PROXY_SERVICE
        );
    }
    let needed = FIRST_NODE_HOST as usize + config.nodes.len();
    let too_small = || {
        anyhow::anyhow!(
            "--subnet {subnet} is too small for {} nodes and the proxy (they take host numbers {PROXY_HOST} to {needed}); give a larger one, e.g. /24",
            config.nodes.len()
        )
    };
    let proxy_ip = subnet.host(PROXY_HOST).ok_or_else(too_small)?;
    let published = |offset: usize| {
        u16::try_from(offset)
            .ok()
            .and_then(|o| publish_base.checked_add(o))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--publish-base {publish_base} leaves no room for {} nodes and the proxy at +{PROXY_PUBLISH_OFFSET}: choose a lower port",
                    config.nodes.len()
                )
            })
    };
    let mut nodes = vec![];
    for (i, node) in config.nodes.iter().enumerate() {
        let n = FIRST_NODE_HOST + i as u32;
        nodes.push(NodePlan {
            name: node.name.to_string(),
            ip: subnet.host(n).ok_or_else(too_small)?,
            port: node.port,
            api_port: node.api_port(),
            api_port_set: node.api_port,
            nofailover: node.nofailover,
            published: published(i)?,
        });
    }
    let proxy_published = published(PROXY_PUBLISH_OFFSET as usize)?;
    if nodes.iter().any(|n| n.published == proxy_published) {
        bail!(
            "with {} nodes the nodes' published ports reach the proxy's ({proxy_published}); use fewer nodes",
            nodes.len()
        );
    }
    Ok(ComposePlan {
        cluster: config.cluster.name.clone(),
        subnet,
        nodes,
        proxy_ip,
        proxy_port: config.proxy_port(),
        proxy_published,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgkeel_core::config::{ConfigSources, load};

    pub(crate) fn three_nodes() -> Result<Config> {
        let text = "[cluster]\nname = \"prod\"\n\
            [[nodes]]\nname = \"pg1\"\nhost = \"10.0.0.11\"\nport = 5432\n\
            [[nodes]]\nname = \"pg2\"\nhost = \"10.0.0.12\"\nport = 5432\napi_port = 8008\n\
            [[nodes]]\nname = \"pg3\"\nhost = \"10.0.0.13\"\nport = 5432\nnofailover = true\n";
        Ok(load(&ConfigSources {
            file: Some(("pgkeel.toml".into(), text.into())),
            ..Default::default()
        })?)
    }

    #[test]
    fn subnets_parse_and_refuse_host_bits() -> Result<()> {
        let s = Subnet::parse("10.1.2.0/24")?;
        assert_eq!(s.host(11), Some(Ipv4Addr::new(10, 1, 2, 11)));
        assert_eq!(s.host(255), None, "broadcast");
        assert_eq!(s.host(0), None, "network");
        let e = Subnet::parse("10.1.2.3/24")
            .expect_err("host bits")
            .to_string();
        assert!(e.contains("10.1.2.0/24"), "{e}");
        for bad in ["10.1.2.0", "fd00::/64", "10.1.2.0/31", "x/24"] {
            assert!(Subnet::parse(bad).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn nodes_get_consecutive_addresses_and_ports() -> Result<()> {
        let p = plan(&three_nodes()?, Subnet::parse(DEFAULT_SUBNET)?, 5432)?;
        let ips: Vec<String> = p.nodes.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(ips, ["10.89.54.11", "10.89.54.12", "10.89.54.13"]);
        let ports: Vec<u16> = p.nodes.iter().map(|n| n.published).collect();
        assert_eq!(ports, [5432, 5433, 5434]);
        assert_eq!(
            (p.proxy_ip.to_string().as_str(), p.proxy_published),
            ("10.89.54.10", 6432)
        );
        assert_eq!(p.proxy_port, 6432);
        assert_eq!((p.nodes[0].api_port, p.nodes[1].api_port), (7432, 8008));
        assert!(p.nodes[2].nofailover);
        Ok(())
    }

    #[test]
    fn small_subnets_and_high_ports_are_refused() -> Result<()> {
        let config = three_nodes()?;
        // .11-.13 fit a /28 (.1-.14); five nodes would reach its broadcast.
        plan(&config, Subnet::parse("10.0.0.0/28")?, 5432)?;
        let mut five = config.clone();
        for name in ["pg4", "pg5"] {
            let mut node = five.nodes[0].clone();
            node.name = pgkeel_core::NodeName::new(name)?;
            five.nodes.push(node);
        }
        let e = plan(&five, Subnet::parse("10.0.0.0/28")?, 5432).expect_err("/28");
        assert!(e.to_string().contains("too small"), "{e}");
        let e = plan(&config, Subnet::parse(DEFAULT_SUBNET)?, 65000).expect_err("port");
        assert!(e.to_string().contains("--publish-base"), "{e}");
        Ok(())
    }
}

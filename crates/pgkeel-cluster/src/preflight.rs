//! Checks made before anything is created, so a bad setup fails cleanly
//! with nothing left behind.

use std::io::ErrorKind;
use std::net::TcpListener;

use pgkeel_core::NodeConfig;

use crate::{Cluster, ClusterError, Layout};

/// Longest Unix socket path the kernel accepts (`sun_path` minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Refuses a data root that exists, is not empty and is not a pgkeel
/// cluster: pgkeel never writes into someone else's directory. A
/// `secrets/` directory alone is accepted: secrets pgkeel cannot generate
/// (an object store's keys) are put there before the first `up`.
pub fn check_data_root(layout: &Layout) -> Result<(), ClusterError> {
    let root = layout.root();
    if layout.cluster_file().exists() {
        return Ok(());
    }
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ClusterError::io("read", root, e)),
    };
    let found: Vec<String> = entries
        .flatten()
        .filter(|e| !(e.file_name() == "secrets" && e.path().is_dir()))
        .take(4)
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::ForeignDirectory {
            dir: root.to_path_buf(),
            found: found.join(", "),
        })
    }
}

/// Checks that each node about to start can bind its address and port.
pub fn check_ports<'a>(
    nodes: impl IntoIterator<Item = &'a NodeConfig>,
) -> Result<(), ClusterError> {
    for node in nodes {
        match TcpListener::bind((node.host.as_str(), node.port)) {
            Ok(listener) => drop(listener),
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                return Err(ClusterError::PortInUse {
                    node: node.name.to_string(),
                    host: node.host.clone(),
                    port: node.port,
                });
            }
            Err(e) => {
                return Err(ClusterError::NotLocal {
                    node: node.name.to_string(),
                    host: node.host.clone(),
                    detail: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Checks the ports the HA processes need: each agent's API port and the
/// local etcd member's client and peer ports.
pub fn check_ha_ports(cluster: &Cluster) -> Result<(), ClusterError> {
    let mut wanted: Vec<NodeConfig> = cluster
        .nodes()
        .iter()
        .map(|n| NodeConfig {
            name: n.name.clone(),
            host: n.host.clone(),
            port: n.api_port(),
            api_port: None,
            nofailover: false,
        })
        .collect();
    if let (Some(port), Some(first)) = (cluster.config.local_etcd_port(), cluster.nodes().first()) {
        for p in [port, port.saturating_add(1)] {
            wanted.push(NodeConfig {
                name: first.name.clone(),
                host: "127.0.0.1".into(),
                port: p,
                api_port: None,
                nofailover: false,
            });
        }
    }
    check_ports(wanted.iter()).map_err(|e| match e {
        ClusterError::PortInUse { host, port, .. } => ClusterError::PortInUse {
            node: "agent API or local etcd".into(),
            host,
            port,
        },
        other => other,
    })
}

/// Checks the proxy's client and admin ports (when the cluster has a
/// proxy).
pub fn check_proxy_ports(cluster: &Cluster) -> Result<(), ClusterError> {
    let c = &cluster.config;
    let Some(first) = cluster.nodes().first() else {
        return Ok(());
    };
    if !c.proxy.enabled {
        return Ok(());
    }
    let wanted: Vec<NodeConfig> = [c.proxy_port(), c.proxy_admin_port()]
        .into_iter()
        .map(|port| NodeConfig {
            name: first.name.clone(),
            host: c.proxy.host.clone(),
            port,
            api_port: None,
            nofailover: false,
        })
        .collect();
    check_ports(wanted.iter()).map_err(|e| match e {
        ClusterError::PortInUse { host, port, .. } => ClusterError::PortInUse {
            node: "the proxy (`proxy.port`/`proxy.admin_port`, or `pgkeel up --proxy-port`)".into(),
            host,
            port,
        },
        other => other,
    })
}

/// Everything `up` checks before creating a new cluster.
pub fn check_new_cluster(cluster: &Cluster) -> Result<(), ClusterError> {
    check_data_root(&cluster.layout)?;
    cluster.os_user().check_reachable(cluster.layout.root())?;
    for node in cluster.nodes() {
        let path = cluster.layout.socket_path(node.name.as_str(), node.port);
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(ClusterError::SocketPathTooLong { path, len });
        }
    }
    check_ports(cluster.nodes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_directory_is_refused_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("important.db"), "x").expect("write");
        let layout = Layout::new(dir.path()).expect("layout");
        let err = check_data_root(&layout).expect_err("foreign");
        assert!(err.to_string().contains("important.db"), "{err}");
    }

    #[test]
    fn prepared_secrets_alone_are_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("secrets")).expect("mkdir");
        assert!(check_data_root(&Layout::new(dir.path()).expect("layout")).is_ok());
        // A file named like it is still someone else's.
        let other = tempfile::tempdir().expect("tempdir");
        std::fs::write(other.path().join("secrets"), "x").expect("write");
        assert!(check_data_root(&Layout::new(other.path()).expect("layout")).is_err());
    }

    #[test]
    fn empty_or_missing_directory_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check_data_root(&Layout::new(dir.path()).expect("layout")).is_ok());
        let missing = dir.path().join("nope");
        assert!(check_data_root(&Layout::new(&missing).expect("layout")).is_ok());
    }

    #[test]
    fn busy_port_is_reported_with_the_node() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let node = NodeConfig {
            name: pgkeel_core::NodeName::new("primary").expect("name"),
            host: "127.0.0.1".into(),
            port,
            api_port: None,
            nofailover: false,
        };
        let err = check_ports([&node]).expect_err("busy");
        let text = err.to_string();
        assert!(text.contains(&format!("port {port}")), "{text}");
        assert!(text.contains("--base-port"), "{text}");
    }
}

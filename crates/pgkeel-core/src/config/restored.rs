//! The configuration of a cluster restored from another's backup: the same
//! nodes, settings and repository, under a name, data root and ports of
//! its own, so both can run side by side on one host without sharing etcd
//! keys, a backup stanza or a port.

use std::path::Path;

use super::{Config, ConfigError, ConfigSources, load};

/// `source`'s configuration renamed `name`, rooted at `root`, with every
/// port moved so that the first node listens on `first_port` (the others,
/// the agents' APIs, etcd and the proxy keep their distance from it). Its
/// secrets live under `root`; its API token is generated afresh.
pub fn restored_config(
    source: &Config,
    name: &str,
    root: &Path,
    first_port: u16,
) -> Result<Config, ConfigError> {
    if name == source.cluster.name {
        return Err(ConfigError::invalid(format!(
            "the restored cluster is named `{name}` like the cluster it comes from: it needs a name of its own (its etcd keys and backup stanza are named after it); pass --name"
        )));
    }
    let old_first = source.nodes.first().map_or(first_port, |n| n.port);
    let shift = |port: u16| -> Result<u16, ConfigError> {
        let moved = i32::from(port) - i32::from(old_first) + i32::from(first_port);
        u16::try_from(moved)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                ConfigError::invalid(format!(
                    "port {port} moved to start at {first_port} falls outside 1-65535: choose another --base-port"
                ))
            })
    };
    let mut config = source.clone();
    config.cluster.name = name.to_string();
    config.cluster.data_dir = root.to_path_buf();
    config.cluster.secrets_dir = None;
    config.ha.api_token = String::new();
    for node in &mut config.nodes {
        node.port = shift(node.port)?;
        node.api_port = node.api_port.map(shift).transpose()?;
    }
    config.etcd.client_port = config.etcd.client_port.map(shift).transpose()?;
    config.etcd.peer_port = config.etcd.peer_port.map(shift).transpose()?;
    config.proxy.port = config.proxy.port.map(shift).transpose()?;
    config.proxy.admin_port = config.proxy.admin_port.map(shift).transpose()?;
    // Validated as if read from a file, the way it will be stored.
    let text = toml::to_string(&config).map_err(|e| ConfigError::invalid(e.to_string()))?;
    load(&ConfigSources {
        file: Some(("the restored cluster's configuration".into(), text)),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Result<Config, ConfigError> {
        load(&ConfigSources {
            file: Some((
                "test".into(),
                "[cluster]\nname = \"main\"\nbase_port = 5432\n[proxy]\nport = 6500\n[backup]\npath = \"/srv/backups\"\n"
                    .into(),
            )),
            ..Default::default()
        })
    }

    #[test]
    fn every_port_moves_with_the_first_node() -> Result<(), ConfigError> {
        let source = source()?;
        let restored = restored_config(&source, "main_restored", Path::new("/srv/r"), 5542)?;
        let ports: Vec<u16> = restored.nodes.iter().map(|n| n.port).collect();
        assert_eq!(ports, [5542, 5543, 5544]);
        assert_eq!(restored.nodes[1].api_port(), 7543);
        assert_eq!(restored.proxy.port, Some(6610));
        assert_eq!(restored.local_etcd_port(), Some(8542));
        assert_eq!(restored.cluster.name, "main_restored");
        assert_eq!(restored.cluster.data_dir, Path::new("/srv/r"));
        // The same repository: the new cluster archives under its own stanza.
        assert_eq!(restored.backup.path, source.backup.path);
        Ok(())
    }

    #[test]
    fn the_same_name_is_refused_with_the_fix() -> Result<(), ConfigError> {
        let Err(e) = restored_config(&source()?, "main", Path::new("/srv/r"), 5542) else {
            panic!("a restored cluster named like its source was accepted");
        };
        assert!(e.to_string().contains("pass --name"), "{e}");
        Ok(())
    }

    #[test]
    fn ports_out_of_range_are_refused() -> Result<(), ConfigError> {
        assert!(restored_config(&source()?, "r", Path::new("/srv/r"), 65_534).is_err());
        Ok(())
    }
}

//! `[standby_cluster]`: this cluster follows another one (in another
//! region or data centre). Its leader streams from the primary cluster and
//! reads the primary cluster's archive when the stream cannot serve; its
//! other members cascade from that leader. It fails over among its own
//! members, and `pgkeel promote-cluster` makes it a primary cluster.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// The name a standby cluster's leader records as its upstream: the
/// primary cluster, which is not one of its members (no node may be named
/// so).
pub const STANDBY_SOURCE: &str = "standby_source";

/// `[standby_cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyClusterSection {
    /// Where the primary cluster takes replication connections: its
    /// primary's address (or a name that follows its failovers).
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The primary cluster's pgBackRest stanza in this cluster's
    /// repository (`[backup]`, shared): `restore_command` reads its WAL
    /// when the stream cannot serve. `None`: streaming only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stanza: Option<String>,
}

/// Checks `[standby_cluster]` against the rest of the configuration.
pub(crate) fn check_standby_cluster(cfg: &Config) -> Result<(), ConfigError> {
    let Some(standby) = &cfg.standby_cluster else {
        return Ok(());
    };
    if standby.host.trim().is_empty() || standby.port == 0 {
        return Err(ConfigError::invalid(
            "[standby_cluster] needs the primary cluster's `host` and `port` (where its primary takes replication connections)",
        ));
    }
    if cfg.nodes.iter().any(|n| n.name.as_str() == STANDBY_SOURCE) {
        return Err(ConfigError::invalid(format!(
            "a node is named `{STANDBY_SOURCE}`, the name a standby cluster gives the primary cluster it follows: rename the node"
        )));
    }
    if standby.stanza.is_some() && !cfg.backup.enabled() {
        return Err(ConfigError::invalid(
            "[standby_cluster] names the primary cluster's `stanza`, but [backup] has no repository to read it from: set `backup.path` (or [backup.s3]) to the repository the primary cluster archives into, or remove `stanza`",
        ));
    }
    if standby.stanza.as_deref() == Some(cfg.cluster.name.as_str()) {
        return Err(ConfigError::invalid(format!(
            "[standby_cluster] stanza `{}` is this cluster's own name: the standby cluster needs a name of its own (`cluster.name`), since it archives under it once promoted",
            cfg.cluster.name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigSources, load};

    fn config(text: &str) -> Result<super::Config, super::ConfigError> {
        load(&ConfigSources {
            file: Some(("test".into(), text.into())),
            ..Default::default()
        })
    }

    #[test]
    fn a_standby_cluster_names_its_source() -> Result<(), super::ConfigError> {
        let cfg = config(
            "[cluster]\nname = \"dr\"\n[standby_cluster]\nhost = \"10.0.0.11\"\nport = 5432\nstanza = \"main\"\n[backup]\npath = \"/srv/backups\"\n",
        )?;
        let standby = cfg
            .standby_cluster
            .ok_or_else(|| super::ConfigError::invalid("no section"))?;
        assert_eq!((standby.host.as_str(), standby.port), ("10.0.0.11", 5432));
        assert_eq!(standby.stanza.as_deref(), Some("main"));
        Ok(())
    }

    #[test]
    fn bad_sections_are_refused_with_the_fix() {
        for (text, says) in [
            (
                "[standby_cluster]\nhost = \"\"\nport = 5432\n",
                "needs the primary cluster's",
            ),
            (
                "[standby_cluster]\nhost = \"h\"\nport = 5432\nstanza = \"main\"\n",
                "no repository",
            ),
            (
                "[cluster]\nname = \"main\"\n[standby_cluster]\nhost = \"h\"\nport = 5432\nstanza = \"main\"\n[backup]\npath = \"/b\"\n",
                "name of its own",
            ),
            (
                "[replication]\nmode = \"async\"\n[standby_cluster]\nhost = \"h\"\nport = 5432\n[[nodes]]\nname = \"standby_source\"\nhost = \"127.0.0.1\"\nport = 5432\n",
                "rename the node",
            ),
        ] {
            match config(text) {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => assert!(e.to_string().contains(says), "{e}"),
            }
        }
    }
}

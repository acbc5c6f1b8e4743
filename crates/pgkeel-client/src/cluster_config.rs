//! A pool over the cluster a pgkeel config file describes: the shared
//! `pgkeel.toml` of a multi-host cluster (its secrets beside it) or a
//! local cluster's `cluster.toml`. Every node is listed, the application
//! role logs in with its password from the secrets, and every agent's REST
//! API is a topology source, so the pool keeps working while any one host
//! is down.

use std::path::Path;

use pgkeel_core::Config;
use pgkeel_core::config::{ConfigSources, load, url_host};

use crate::{AgentTopology, Error, ErrorKind, NodeAddr, PoolConfig, ReplicatedPool, Result};

/// The pool settings and agent URLs for the cluster configured in `path`.
pub fn from_pgkeel_config(path: &Path) -> Result<(PoolConfig, AgentTopology)> {
    let config_error = |detail: String| Error::new(ErrorKind::Config, detail);
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
    let mut config = load(&ConfigSources {
        file: Some((path.display().to_string(), text)),
        ..Default::default()
    })
    .map_err(|e| config_error(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    config.anchor_secrets_dir(dir);
    let secrets = secrets_dir(&config, dir);
    let password_file = secrets.join("app.password");
    let password = std::fs::read_to_string(&password_file)
        .map_err(|e| {
            config_error(format!(
                "cannot read the application role's password {}: {e} (copy the cluster's secrets directory with its config)",
                password_file.display()
            ))
        })?
        .trim()
        .to_string();
    let pool = PoolConfig {
        nodes: config
            .nodes
            .iter()
            .map(|n| NodeAddr::new(n.host.clone(), n.port))
            .collect(),
        user: config.roles.app.clone(),
        password: Some(password),
        dbname: config.roles.database.clone(),
        ..PoolConfig::default()
    };
    let agents = AgentTopology::new(
        config
            .nodes
            .iter()
            .map(|n| format!("http://{}:{}", url_host(&n.host), n.api_port())),
    );
    Ok((pool, agents))
}

/// The secrets directory: configured, or the data root's (a local
/// cluster's `cluster.toml` sits in its data root).
fn secrets_dir(config: &Config, config_dir: &Path) -> std::path::PathBuf {
    match &config.cluster.secrets_dir {
        Some(dir) => dir.clone(),
        None => config_dir.join("secrets"),
    }
}

impl ReplicatedPool {
    /// A pool over the cluster `path` configures (see
    /// [`from_pgkeel_config`]), following its agents.
    pub async fn from_pgkeel_config(path: impl AsRef<Path>) -> Result<Self> {
        let (config, agents) = from_pgkeel_config(path.as_ref())?;
        Self::with_topology(config, agents).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_agents_and_password_come_from_the_file_and_its_secrets() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("pgkeel-client-cfg-{}", std::process::id()));
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets)
            .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
        std::fs::write(secrets.join("app.password"), "s3cret\n")
            .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
        let file = dir.join("pgkeel.toml");
        std::fs::write(
            &file,
            "[cluster]\nsecrets_dir = \"secrets\"\n\
             [[nodes]]\nname = \"pg1\"\nhost = \"10.0.0.11\"\nport = 5432\n\
             [[nodes]]\nname = \"pg2\"\nhost = \"10.0.0.12\"\nport = 5432\n",
        )
        .map_err(|e| Error::new(ErrorKind::Config, e.to_string()))?;
        let (pool, agents) = from_pgkeel_config(&file)?;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            pool.nodes,
            [
                NodeAddr::new("10.0.0.11", 5432),
                NodeAddr::new("10.0.0.12", 5432)
            ]
        );
        assert_eq!(pool.password.as_deref(), Some("s3cret"));
        assert_eq!((pool.user.as_str(), pool.dbname.as_str()), ("app", "app"));
        assert_eq!(
            format!("{agents:?}"),
            r#"AgentTopology { agents: ["http://10.0.0.11:7432", "http://10.0.0.12:7432"] }"#
        );
        Ok(())
    }
}

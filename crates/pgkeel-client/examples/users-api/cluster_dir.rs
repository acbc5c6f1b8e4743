//! Connection settings of a local pgkeel cluster, read from its data
//! directory: nodes and role names from `cluster.toml`, the application
//! role's password from `secrets/app.password`.

use std::path::{Path, PathBuf};

use pgkeel_client::{NodeAddr, PoolConfig};
use serde::Deserialize;

/// The parts of `cluster.toml` the service needs; the rest is ignored.
#[derive(Debug, Deserialize)]
struct ClusterFile {
    #[serde(default)]
    roles: Roles,
    #[serde(default)]
    nodes: Vec<NodeEntry>,
}

#[derive(Debug, Deserialize)]
struct Roles {
    #[serde(default = "default_name")]
    app: String,
    #[serde(default = "default_name")]
    database: String,
}

impl Default for Roles {
    fn default() -> Self {
        Roles {
            app: default_name(),
            database: default_name(),
        }
    }
}

/// pgkeel's default application role and database.
fn default_name() -> String {
    "app".into()
}

#[derive(Debug, Deserialize)]
struct NodeEntry {
    host: String,
    port: u16,
}

/// Pool settings for the cluster whose data root is `dir`.
pub fn pool_config(dir: &Path) -> Result<PoolConfig, String> {
    let file = dir.join("cluster.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "{} does not exist: --dir must be the data directory of a pgkeel cluster (`pgkeel up --dir DIR`; default ./pgkeel-data)",
            file.display()
        ),
        _ => format!("cannot read {}: {e}", file.display()),
    })?;
    let parsed: ClusterFile = toml::from_str(&text)
        .map_err(|e| format!("{} is not a pgkeel cluster file: {e}", file.display()))?;
    if parsed.nodes.is_empty() {
        return Err(format!(
            "{} lists no [[nodes]]: is this the data directory of a pgkeel cluster?",
            file.display()
        ));
    }
    let password = read_password(&dir.join("secrets").join("app.password"))?;
    Ok(PoolConfig {
        nodes: parsed
            .nodes
            .into_iter()
            .map(|n| NodeAddr::new(n.host, n.port))
            .collect(),
        user: parsed.roles.app,
        password: Some(password),
        dbname: parsed.roles.database,
        application_name: "users-api".into(),
        ..PoolConfig::default()
    })
}

fn read_password(path: &PathBuf) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim_end_matches(['\n', '\r']).to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "cannot read {}: permission denied: run as root or as the cluster's OS user (the file is 0600), or configure with the POSTGRES_* variables instead",
            path.display()
        )),
        Err(e) => Err(format!(
            "cannot read the application password {}: {e}",
            path.display()
        )),
    }
}

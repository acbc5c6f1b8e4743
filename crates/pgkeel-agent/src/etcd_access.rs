//! etcd's TLS material and credentials, from the secrets directory, for
//! the agents, the CLI and the etcd members.

use pgkeel_cluster::Layout;
use pgkeel_cluster::etcd_pki::files;
use pgkeel_core::Config;
use pgkeel_dcs::{EtcdAccess, EtcdTls};
use pgkeel_pg::secrets::read_password;

use crate::AgentError;

/// Reads a secret file whole (certificates keep their line breaks).
fn read_secret(layout: &Layout, name: &str) -> Result<String, AgentError> {
    let path = layout.secrets_dir().join(name);
    std::fs::read_to_string(&path).map_err(|e| AgentError::Process {
        action: format!("read {}", path.display()),
        detail: format!(
            "{e}; `pgkeel init --node ...` writes it into the secrets directory every host gets a copy of"
        ),
    })
}

/// TLS and credentials as `config` asks for them.
pub fn etcd_access(config: &Config, layout: &Layout) -> Result<EtcdAccess, AgentError> {
    let tls = if config.etcd.tls {
        Some(EtcdTls {
            ca: read_secret(layout, files::CA_CERT)?,
            cert: read_secret(layout, files::CLIENT_CERT)?,
            key: read_secret(layout, files::CLIENT_KEY)?,
        })
    } else {
        None
    };
    let user = if config.etcd.user.is_empty() {
        None
    } else {
        let password = read_password(&layout.secrets_dir().join(files::PASSWORD))?;
        Some((config.etcd.user.clone(), password))
    };
    Ok(EtcdAccess { tls, user })
}

/// etcd's root password, to enable authentication.
pub fn root_password(layout: &Layout) -> Result<String, AgentError> {
    Ok(read_password(
        &layout.secrets_dir().join(files::ROOT_PASSWORD),
    )?)
}

//! `pgkeel secrets rotate ROLE`: a new password for one of pgkeel's roles,
//! set on the primary (only a SCRAM verifier crosses the wire), written
//! into the secrets, picked up by the agents (their next loop rewrites
//! PostgreSQL's password files) and by a proxy of this host (SIGHUP).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgkeel_agent::remote::RemoteCluster;
use pgkeel_cluster::Cluster;
use pgkeel_cluster::layout::Secret;
use pgkeel_cluster::skeleton::PASSWORD_LEN;
use pgkeel_core::status::ClusterStatus;
use pgkeel_pg::OsUser;
use pgkeel_pg::fsutil::write_owned;
use pgkeel_pg::secrets::generate_password;

/// Which secret a `ROLE` argument names: `app`, `replication`,
/// `superuser`, or the role's own name.
pub fn secret_for(remote: &RemoteCluster, role: &str) -> Result<(Secret, String)> {
    let roles = &remote.config.roles;
    let found = match role {
        "app" => Some(Secret::App),
        "replication" => Some(Secret::Replication),
        "superuser" => Some(Secret::Superuser),
        r if r == roles.app => Some(Secret::App),
        r if r == roles.replication => Some(Secret::Replication),
        r if r == remote.superuser => Some(Secret::Superuser),
        _ => None,
    };
    let Some(secret) = found else {
        bail!(
            "`{role}` is not a role pgkeel manages: rotate `app` ({}), `replication` ({}) or `superuser` ({})",
            roles.app,
            roles.replication,
            remote.superuser
        );
    };
    let name = match secret {
        Secret::App => roles.app.clone(),
        Secret::Replication => roles.replication.clone(),
        Secret::Superuser => remote.superuser.clone(),
    };
    Ok((secret, name))
}

/// Rotates `role`'s password. `local`: the cluster when this host holds
/// every node (its primary is reached over its socket, its proxy signalled).
pub async fn rotate(
    remote: &RemoteCluster,
    local: Option<&Cluster>,
    status: &ClusterStatus,
    role: &str,
) -> Result<()> {
    let (secret, name) = secret_for(remote, role)?;
    let (conn, node) = remote.connect_primary(local, status).await?;
    let password = generate_password(PASSWORD_LEN)?;
    conn.set_password(&name, &password).await?;
    let file = remote.layout.password_file(secret);
    replace_secret(&file, &password)?;
    say!(
        "{name}: new password set on {} and written to {}",
        node.name,
        file.display()
    );
    match local {
        Some(cluster) => {
            cluster.write_passfiles()?;
            if let Some(pid) = pgkeel_cluster::pidfile::alive_pid(&cluster.layout.proxy_pid_file())
                && let Ok(raw) = i32::try_from(pid)
            {
                kill(Pid::from_raw(raw), Signal::SIGHUP)
                    .context("cannot signal the proxy to reload the secrets")?;
                say!("the proxy (pid {pid}) reloads the secrets");
            }
            say!("the agents pick the new password up within a loop");
        }
        None => say!(
            "copy {} to the same place on every host (the agents there pick it up within a loop), then send SIGHUP to every `pgkeel proxy`",
            file.display()
        ),
    }
    Ok(())
}

/// Replaces a secret file atomically, keeping its owner and mode 0600.
fn replace_secret(path: &Path, value: &str) -> Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut owner = OsUser::current()?;
    owner.uid = meta.uid();
    owner.gid = meta.gid();
    write_owned(path, value, &owner, 0o600)?;
    Ok(())
}

//! What a host needs before any node's data exists: the data root with its
//! marker (`cluster.toml`), the secrets, and the libpq password files
//! derived from them.
//!
//! Secrets under the data root are generated here (`pgkeel up` on one
//! machine). Secrets in a directory of their own (`cluster.secrets_dir`,
//! written by `pgkeel init --node ...` and copied to every host) are only
//! checked: every host must use the same ones, so none is ever generated
//! on a host.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pgkeel_core::Config;
use pgkeel_pg::OsUser;
use pgkeel_pg::fsutil::{ensure_dir, write_owned};
use pgkeel_pg::secrets::{generate_password, pgpass_line, read_password};

use crate::etcd_pki::{EtcdPki, files};
use crate::layout::Secret;
use crate::{Cluster, ClusterError};

/// Length of generated passwords and tokens.
pub const PASSWORD_LEN: usize = 32;

/// Files every secrets directory holds.
pub const SECRET_FILES: [&str; 4] = [
    "superuser.password",
    "replication.password",
    "app.password",
    "api.token",
];

/// The backup repository's encryption passphrase: generated with the
/// others, needed once an encrypted repository is configured.
pub const BACKUP_CIPHER: &str = "backup-cipher.pass";
/// The object storage access key and its secret, written by the operator.
pub const S3_KEY: &str = "s3-key";
/// See [`S3_KEY`].
pub const S3_KEY_SECRET: &str = "s3-key-secret";

/// Writes every missing secret into `dir` (0700; files 0600, owned by
/// `owner`). `api_token`: the configured token, or empty to generate one.
pub fn generate_secrets(dir: &Path, owner: &OsUser, api_token: &str) -> Result<(), ClusterError> {
    ensure_dir(dir, owner, 0o700)?;
    for name in SECRET_FILES.into_iter().chain([BACKUP_CIPHER]) {
        let path = dir.join(name);
        if path.exists() {
            continue;
        }
        let value = if name == "api.token" && !api_token.is_empty() {
            api_token.to_string()
        } else {
            generate_password(PASSWORD_LEN)?
        };
        write_owned(&path, &value, owner, 0o600)?;
    }
    Ok(())
}

/// The secret files a cluster with `config` needs: the passwords and the
/// API token, and with etcd TLS or authentication their certificates and
/// passwords.
pub fn required_secrets(config: &Config) -> Vec<&'static str> {
    let mut names = SECRET_FILES.to_vec();
    if config.etcd.tls {
        names.extend([
            files::CA_CERT,
            files::SERVER_CERT,
            files::SERVER_KEY,
            files::CLIENT_CERT,
            files::CLIENT_KEY,
        ]);
    }
    if !config.etcd.user.is_empty() {
        names.extend([files::PASSWORD, files::ROOT_PASSWORD]);
    }
    if config.backup.enabled() && config.backup.encrypted() {
        names.push(BACKUP_CIPHER);
    }
    if config.backup.s3.is_some() {
        names.extend([S3_KEY, S3_KEY_SECRET]);
    }
    names
}

/// Writes the etcd PKI (if given) and the etcd passwords (if `user`) into
/// `dir`, keeping files that exist.
pub fn generate_etcd_secrets(
    dir: &Path,
    owner: &OsUser,
    pki: Option<&EtcdPki>,
    user: bool,
) -> Result<(), ClusterError> {
    let mut wanted: Vec<(&str, String)> = vec![];
    if let Some(pki) = pki {
        wanted.extend([
            (files::CA_CERT, pki.ca_cert.clone()),
            (files::CA_KEY, pki.ca_key.clone()),
            (files::SERVER_CERT, pki.server_cert.clone()),
            (files::SERVER_KEY, pki.server_key.clone()),
            (files::CLIENT_CERT, pki.client_cert.clone()),
            (files::CLIENT_KEY, pki.client_key.clone()),
        ]);
    }
    if user {
        wanted.push((files::PASSWORD, generate_password(PASSWORD_LEN)?));
        wanted.push((files::ROOT_PASSWORD, generate_password(PASSWORD_LEN)?));
    }
    for (name, value) in wanted {
        let path = dir.join(name);
        if !path.exists() {
            write_owned(&path, &value, owner, 0o600)?;
        }
    }
    Ok(())
}

/// Why a secrets directory cannot be used, if it cannot: one of `names`
/// missing or empty, anything readable by other users, or a directory
/// others may write to.
pub fn check_secrets(dir: &Path, names: &[&str]) -> Result<(), ClusterError> {
    let init_hint = "run `pgkeel init --node NAME=ADDRESS ...` to write the config and its secrets/, then copy both to every host";
    let meta = std::fs::metadata(dir).map_err(|e| ClusterError::Secret {
        path: dir.to_path_buf(),
        problem: format!("cannot be read: {e}"),
        fix: init_hint.into(),
    })?;
    if !meta.is_dir() {
        return Err(ClusterError::Secret {
            path: dir.to_path_buf(),
            problem: "is not a directory".into(),
            fix: init_hint.into(),
        });
    }
    // The directory may be listable (Docker mounts /run/secrets 0755), but
    // nobody else may replace what is in it.
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(ClusterError::Secret {
            path: dir.to_path_buf(),
            problem: format!(
                "is writable by other users (mode {:o}): anyone on the host could replace the cluster's passwords",
                mode & 0o777
            ),
            fix: format!("`chmod 700 {}`", dir.display()),
        });
    }
    for name in names {
        let path = dir.join(name);
        let meta = std::fs::metadata(&path).map_err(|e| ClusterError::Secret {
            path: path.clone(),
            problem: format!("is missing ({e})"),
            fix: if *name == S3_KEY || *name == S3_KEY_SECRET {
                format!(
                    "write the object storage access key into {}/{S3_KEY} and its secret into {}/{S3_KEY_SECRET} (mode 0600), on every host",
                    dir.display(),
                    dir.display()
                )
            } else {
                format!(
                    "copy the whole secrets directory written by `pgkeel init` to {}",
                    dir.display()
                )
            },
        })?;
        check_private(&path, meta.permissions().mode(), "chmod 600")?;
        if read_password(&path)?.is_empty() {
            return Err(ClusterError::Secret {
                path,
                problem: "is empty".into(),
                fix: format!(
                    "copy the whole secrets directory written by `pgkeel init` to {}",
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a mode that lets the group or others in.
fn check_private(path: &Path, mode: u32, chmod: &str) -> Result<(), ClusterError> {
    if mode & 0o077 == 0 {
        return Ok(());
    }
    Err(ClusterError::Secret {
        path: path.to_path_buf(),
        problem: format!(
            "is readable by other users (mode {:o}): anyone on the host could read the cluster's passwords",
            mode & 0o777
        ),
        fix: format!("`{chmod} {}` (and check who read it)", path.display()),
    })
}

impl Cluster {
    /// The data root, its marker, the secrets and the derived password
    /// files. The marker is written first, so an interrupted bootstrap is
    /// resumed (and `destroy` works) rather than mistaken for a foreign
    /// directory; a marker naming another cluster is refused. Missing
    /// secrets are generated only when `generate` (`pgkeel up`, secrets
    /// under the data root); an agent only checks them, since every host
    /// must use the same ones.
    pub fn ensure_skeleton(&self, generate: bool) -> Result<(), ClusterError> {
        let layout = &self.layout;
        let owner = self.os_user();
        if !generate || !layout.secrets_inside_root() {
            // Before anything is created: bad secrets leave no trace.
            check_secrets(&layout.secrets_dir(), &required_secrets(&self.config))?;
        }
        self.check_backup_repository()?;
        ensure_dir(layout.root(), owner, 0o700)?;
        match Cluster::stored_config(layout.root())? {
            Some(stored) if stored.cluster.name != self.config.cluster.name => {
                return Err(ClusterError::OtherCluster {
                    dir: layout.root().to_path_buf(),
                    found: stored.cluster.name,
                    wanted: self.config.cluster.name.clone(),
                });
            }
            Some(_) => {}
            None => {
                let text = toml::to_string(&self.config).map_err(|e| {
                    ClusterError::io(
                        "serialize",
                        layout.cluster_file(),
                        std::io::Error::other(e.to_string()),
                    )
                })?;
                let header =
                    "# Written by pgkeel: the configuration this cluster was created with.\n";
                write_owned(
                    &layout.cluster_file(),
                    &format!("{header}{text}"),
                    owner,
                    0o644,
                )?;
            }
        }
        if generate && layout.secrets_inside_root() {
            generate_secrets(&layout.secrets_dir(), owner, &self.config.ha.api_token)?;
        }
        self.write_passfiles()?;
        self.write_backup_config()
    }

    /// The libpq password files PostgreSQL and pg_rewind use, derived from
    /// the secrets and owned by the OS user (rewritten when a password
    /// changed).
    pub fn write_passfiles(&self) -> Result<(), ClusterError> {
        let layout = &self.layout;
        let owner = self.os_user();
        ensure_dir(&layout.auth_dir(), owner, 0o700)?;
        let files = [
            (
                layout.replication_passfile(),
                &self.config.roles.replication,
                Secret::Replication,
            ),
            (
                layout.superuser_passfile(),
                &self.superuser,
                Secret::Superuser,
            ),
        ];
        for (path, role, secret) in files {
            let password = read_password(&layout.password_file(secret))?;
            let wanted = pgpass_line(role, &password);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(wanted.as_str()) {
                write_owned(&path, &wanted, owner, 0o600)?;
            }
        }
        Ok(())
    }

    /// Runs `f` with the superuser's password in a file the OS user can
    /// read (initdb runs as that user; the secrets may be root's), removed
    /// afterwards.
    pub(crate) async fn with_initdb_password<T, F, Fut>(&self, f: F) -> Result<T, ClusterError>
    where
        F: FnOnce(std::path::PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClusterError>>,
    {
        let path = self.layout.initdb_password_file();
        let password = read_password(&self.layout.password_file(Secret::Superuser))?;
        ensure_dir(&self.layout.auth_dir(), self.os_user(), 0o700)?;
        write_owned(&path, &password, self.os_user(), 0o600)?;
        let result = f(path.clone()).await;
        let _ = std::fs::remove_file(&path);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Result<(tempfile::TempDir, std::path::PathBuf), ClusterError> {
        let tmp = tempfile::tempdir().map_err(|e| ClusterError::io("create", "tmp", e))?;
        let dir = tmp.path().join("secrets");
        generate_secrets(&dir, &OsUser::current()?, "")?;
        Ok((tmp, dir))
    }

    #[test]
    fn generated_secrets_pass_the_check() -> Result<(), ClusterError> {
        let (_tmp, dir) = fixture()?;
        check_secrets(&dir, &SECRET_FILES)
    }

    #[test]
    fn a_missing_secret_is_named() -> Result<(), ClusterError> {
        let (_tmp, dir) = fixture()?;
        std::fs::remove_file(dir.join("app.password"))
            .map_err(|e| ClusterError::io("remove", &dir, e))?;
        let e = check_secrets(&dir, &SECRET_FILES)
            .expect_err("missing secret")
            .to_string();
        assert!(
            e.contains("app.password") && e.contains("is missing"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn secrets_readable_by_others_are_refused_with_the_chmod() -> Result<(), ClusterError> {
        let (_tmp, dir) = fixture()?;
        let file = dir.join("superuser.password");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| ClusterError::io("chmod", &file, e))?;
        let e = check_secrets(&dir, &SECRET_FILES)
            .expect_err("world-readable")
            .to_string();
        assert!(
            e.contains("readable by other users") && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ClusterError::io("chmod", &file, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| ClusterError::io("chmod", &dir, e))?;
        check_secrets(&dir, &SECRET_FILES)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| ClusterError::io("chmod", &dir, e))?;
        let e = check_secrets(&dir, &SECRET_FILES)
            .expect_err("writable directory")
            .to_string();
        assert!(
            e.contains("writable by other users") && e.contains("chmod 700"),
            "{e}"
        );
        Ok(())
    }
}

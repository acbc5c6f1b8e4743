//! The cluster's side of backups: pgBackRest's configuration on this host,
//! the archive settings every node's `postgresql.conf` carries, and the
//! repository prepared when the cluster is bootstrapped.

use std::collections::BTreeSet;

use pgkeel_backup::pgbackrest::conf::ConfInput;
use pgkeel_backup::pgbackrest::{find_program, write_config};
use pgkeel_backup::wal::{current_timeline, missing, previous_timeline_segments};
use pgkeel_backup::{BackupEngine, BackupError, PgBackRest, PgTarget};
use pgkeel_core::NodeConfig;
use pgkeel_pg::conf::ArchiveSettings;
use pgkeel_pg::secrets::read_password;

use crate::skeleton::{BACKUP_CIPHER, S3_KEY, S3_KEY_SECRET};
use crate::{Cluster, ClusterError};

impl Cluster {
    /// pgBackRest for this cluster, when `[backup]` has a repository.
    pub fn backup_engine(&self) -> Result<Option<PgBackRest>, ClusterError> {
        if !self.config.backup.enabled() {
            return Ok(None);
        }
        Ok(Some(PgBackRest::new(
            self.runner.clone(),
            find_program()?,
            self.layout.backup_config(),
            &self.config.cluster.name,
        )))
    }

    /// How backup tools reach `node` on this host.
    pub fn pg_target(&self, node: &NodeConfig) -> PgTarget {
        let name = node.name.as_str();
        PgTarget {
            node: name.to_string(),
            data_dir: self.layout.data_dir(name),
            port: node.port,
            socket_dir: self.layout.socket_dir(name),
            user: self.superuser.clone(),
        }
    }

    /// `archive_command` and `restore_command` for `node`, when backups
    /// are configured.
    pub fn archive_settings(
        &self,
        node: &NodeConfig,
    ) -> Result<Option<ArchiveSettings>, ClusterError> {
        let Some(engine) = self.backup_engine()? else {
            return Ok(None);
        };
        let target = self.pg_target(node);
        // A standby cluster reads the primary cluster's archive; it
        // archives under its own stanza only once promoted.
        let restore_command = match self
            .config
            .standby_cluster
            .as_ref()
            .and_then(|s| s.stanza.as_deref())
        {
            Some(stanza) => PgBackRest::new(
                self.runner.clone(),
                find_program()?,
                self.layout.backup_config(),
                stanza,
            )
            .restore_command(&target),
            None => engine.restore_command(&target),
        };
        Ok(Some(ArchiveSettings {
            archive_command: engine.archive_command(&target),
            restore_command,
        }))
    }

    /// Checks, before anything is created, that pgBackRest is installed
    /// and a path repository is there (when backups are configured): a
    /// missing mount must not turn into a directory on the local disk.
    pub fn check_backup_repository(&self) -> Result<(), ClusterError> {
        let backup = &self.config.backup;
        if !backup.enabled() {
            return Ok(());
        }
        find_program()?;
        if let Some(path) = &backup.path {
            let problem = match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => None,
                Ok(_) => Some("is not a directory".to_string()),
                Err(e) => Some(format!("cannot be reached ({e})")),
            };
            if let Some(problem) = problem {
                return Err(BackupError::Repository {
                    path: path.clone(),
                    problem,
                    fix: format!(
                        "mount the repository there (or create the directory), writable by `{}`, on every host; or change `backup.path`",
                        self.os_user().name
                    ),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Renders pgBackRest's configuration file on this host (when backups
    /// are configured).
    pub fn write_backup_config(&self) -> Result<(), ClusterError> {
        let backup = &self.config.backup;
        if !backup.enabled() {
            return Ok(());
        }
        self.check_backup_repository()?;
        let secrets = self.layout.secrets_dir();
        let cipher = if backup.encrypted() {
            Some(read_password(&secrets.join(BACKUP_CIPHER))?)
        } else {
            None
        };
        let s3 = if backup.s3.is_some() {
            Some((
                read_password(&secrets.join(S3_KEY))?,
                read_password(&secrets.join(S3_KEY_SECRET))?,
            ))
        } else {
            None
        };
        let work_dir = self.layout.backup_dir();
        write_config(
            &self.layout.backup_config(),
            &ConfInput {
                backup,
                work_dir: &work_dir,
                cipher_pass: cipher.as_deref(),
                s3_key: s3.as_ref().map(|(k, s)| (k.as_str(), s.as_str())),
            },
            self.os_user(),
        )?;
        Ok(())
    }

    /// Makes the repository ready for this cluster with `primary` running
    /// (idempotent); nothing when backups are not configured.
    pub async fn prepare_backup_repository(
        &self,
        primary: &NodeConfig,
    ) -> Result<(), ClusterError> {
        if let Some(engine) = self.backup_engine()? {
            engine.prepare_repository(&self.pg_target(primary)).await?;
            tracing::info!(stanza = %self.config.cluster.name, "backup repository ready");
        }
        Ok(())
    }

    /// After `node` was promoted: archives the segments of the previous
    /// timeline it holds and the archive lacks, oldest first, so that the
    /// archive has no gap before the new timeline (the old primary may
    /// have vanished before archiving its last segments, and PostgreSQL
    /// archives only what it wrote itself). Returns how many it archived.
    pub async fn archive_previous_timeline(
        &self,
        node: &NodeConfig,
    ) -> Result<usize, ClusterError> {
        let Some(engine) = self.backup_engine()? else {
            return Ok(0);
        };
        let wal_dir = self.layout.data_dir(node.name.as_str()).join("pg_wal");
        let names: Vec<String> = std::fs::read_dir(&wal_dir)
            .map_err(|e| ClusterError::io("list", &wal_dir, e))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect();
        let candidates = previous_timeline_segments(&names, current_timeline(&names));
        let mut archived = BTreeSet::new();
        let directories: BTreeSet<String> = candidates.iter().map(|s| s.directory()).collect();
        for directory in &directories {
            archived.extend(engine.archived_segments(directory).await?);
        }
        let target = self.pg_target(node);
        let lacking = missing(&candidates, &archived);
        for segment in &lacking {
            engine
                .archive_push(&target, &wal_dir.join(segment.name()))
                .await?;
        }
        Ok(lacking.len())
    }
}

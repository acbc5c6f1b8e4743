//! What pgkeel needs from a backup tool. pgBackRest is the one engine;
//! the interface is small so that another (barman-cloud, WAL-G) can be
//! added behind it.

use crate::BackupError;
use std::collections::BTreeSet;
use std::path::Path;

use crate::model::{BackupKind, PgTarget, RepositoryInfo};

/// A tool that archives WAL, takes base backups and lists them.
pub trait BackupEngine {
    /// PostgreSQL's `archive_command` for `node`.
    fn archive_command(&self, node: &PgTarget) -> String;

    /// PostgreSQL's `restore_command` for `node`.
    fn restore_command(&self, node: &PgTarget) -> String;

    /// Makes the repository ready for this cluster (idempotent); refuses a
    /// repository that belongs to another cluster. `primary` is running.
    fn prepare_repository(
        &self,
        primary: &PgTarget,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

    /// Takes a backup; the files are read from `standby` when given (the
    /// primary only starts and stops the backup). `progress` gets the
    /// percentage done as it moves. Returns the new backup's label.
    fn backup(
        &self,
        kind: BackupKind,
        primary: &PgTarget,
        standby: Option<&PgTarget>,
        progress: &(dyn Fn(f64) + Send + Sync),
    ) -> impl Future<Output = Result<String, BackupError>> + Send;

    /// What the repository holds.
    fn info(&self) -> impl Future<Output = Result<RepositoryInfo, BackupError>> + Send;

    /// Archives one WAL file of `node` now (a file the archive already
    /// holds with the same content is accepted).
    fn archive_push(
        &self,
        node: &PgTarget,
        file: &Path,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

    /// The names of the archived WAL segments in `directory` (a segment's
    /// first 16 digits: timeline and log).
    fn archived_segments(
        &self,
        directory: &str,
    ) -> impl Future<Output = Result<BTreeSet<String>, BackupError>> + Send;
}

//! What pgkeel needs from a backup tool. pgBackRest is the one engine;
//! the interface is small so that another (barman-cloud, WAL-G) can be
//! added behind it.

use crate::BackupError;
use std::collections::BTreeSet;
use std::path::Path;

use crate::model::{BackupKind, PgTarget, RepositoryInfo, RestoreTarget};

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
    /// primary only starts and stops the backup) and `annotations` are
    /// recorded with it. `progress` gets the percentage done as it moves.
    /// Returns the new backup's label.
    fn backup(
        &self,
        kind: BackupKind,
        primary: &PgTarget,
        standby: Option<&PgTarget>,
        annotations: &[(String, String)],
        progress: &(dyn Fn(f64) + Send + Sync),
    ) -> impl Future<Output = Result<String, BackupError>> + Send;

    /// Restores backup `label` into `dir` (as `node` for messages), to
    /// `target`, with archiving off in the copy (it must never write into
    /// the cluster's archive before pgkeel configures it). The copy
    /// promotes itself when it reaches the target, except a standby. The
    /// recovery settings the engine writes (`postgresql.auto.conf`) stay
    /// until pgkeel writes the node's own configuration. `dir` is empty, or with `delta` a
    /// stopped data directory of the same cluster whose unchanged files are
    /// kept.
    fn restore(
        &self,
        node: &str,
        label: &str,
        target: &RestoreTarget,
        dir: &Path,
        delta: bool,
    ) -> impl Future<Output = Result<(), BackupError>> + Send;

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

    /// Files of backup `label` (and of the WAL it needs) whose contents in
    /// the repository no longer match their recorded checksums, or that
    /// are missing, each named.
    fn damaged_files(
        &self,
        label: &str,
    ) -> impl Future<Output = Result<Vec<String>, BackupError>> + Send;
}

//! What backups are, independent of the tool that takes them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// How much a backup copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every file.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any kind.
    Incr,
}

impl BackupKind {
    /// The name pgBackRest and users use.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Diff => "diff",
            BackupKind::Incr => "incr",
        }
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PostgreSQL server a backup tool reaches on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// The node's name.
    pub node: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its port.
    pub port: u16,
    /// Its Unix socket directory.
    pub socket_dir: PathBuf,
    /// The superuser the tool logs in as (peer authentication on the socket).
    pub user: String,
}

/// One backup in the repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupInfo {
    /// Its label (`20261207-010000F`, an incremental one names its base:
    /// `20261207-010000F_20261208-010000I`).
    pub label: String,
    /// Full, differential or incremental.
    #[serde(rename = "type")]
    pub kind: BackupKind,
    /// When it started and stopped (seconds since the Unix epoch).
    pub start: i64,
    /// See `start`.
    pub stop: i64,
    /// The WAL position at its start (`0/3000028`).
    pub lsn_start: String,
    /// The WAL position at its stop: restoring it needs WAL up to here.
    pub lsn_stop: String,
    /// First WAL segment it needs.
    pub wal_start: String,
    /// Last WAL segment it needs.
    pub wal_stop: String,
    /// Size of the database it copied, in bytes.
    pub database_bytes: u64,
    /// Bytes it takes in the repository (compressed, without what it
    /// shares with the backups it depends on).
    pub repository_bytes: u64,
    /// The backup it depends on (`None` for a full backup).
    pub prior: Option<String>,
    /// Whether the tool found page checksum errors while copying.
    pub error: bool,
    /// Key/value pairs recorded with it (pgkeel's fingerprint).
    pub annotations: BTreeMap<String, String>,
}

#[cfg(test)]
impl BackupInfo {
    /// A backup for pure tests: `label`, `kind`, ten minutes long, ending
    /// at `stop` and `lsn_stop`.
    pub(crate) fn fixture(label: &str, kind: BackupKind, stop: i64, lsn_stop: &str) -> Self {
        BackupInfo {
            label: label.into(),
            kind,
            start: stop - 600,
            stop,
            lsn_start: String::new(),
            lsn_stop: lsn_stop.into(),
            wal_start: String::new(),
            wal_stop: String::new(),
            database_bytes: 0,
            repository_bytes: 0,
            prior: None,
            error: false,
            annotations: BTreeMap::new(),
        }
    }
}

/// How far a restore replays WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// To the end of the backup: the earliest consistent state, then promote.
    EndOfBackup,
    /// Through every archived segment: the newest restorable commit, then
    /// promote.
    Latest,
    /// To the last commit at or before this time (PostgreSQL's
    /// `recovery_target_time` text), then promote.
    Time(String),
    /// To this WAL position (`recovery_target_lsn`), then promote.
    Lsn(String),
    /// A standby: replays the archive and keeps following (the caller
    /// points it at its upstream).
    Standby,
}

/// The repository's view of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepositoryInfo {
    /// The stanza (the cluster's name).
    pub stanza: String,
    /// `ok`, or what is wrong, as the tool says it.
    pub status: String,
    /// The database system identifier the repository belongs to.
    pub system_id: Option<u64>,
    /// Oldest and newest archived WAL segment of the current database.
    pub wal_min: Option<String>,
    /// See `wal_min`.
    pub wal_max: Option<String>,
    /// The backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// The tool's name for the current database's archive (pgBackRest:
    /// `15-1`, version and database id).
    #[serde(skip)]
    pub archive_id: Option<String>,
}

impl RepositoryInfo {
    /// The newest backup of `kind` (any kind when `None`).
    pub fn newest(&self, kind: Option<BackupKind>) -> Option<&BackupInfo> {
        self.backups
            .iter()
            .filter(|b| kind.is_none_or(|k| b.kind == k))
            .max_by_key(|b| b.start)
    }
}

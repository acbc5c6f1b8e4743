//! The WAL archive and base backups. pgBackRest does the work; this crate
//! holds what pgkeel needs from any backup tool ([`BackupEngine`]) and the
//! pgBackRest implementation: its configuration file and command lines
//! (pure, in [`pgbackrest::conf`]), the decoding of its `info` output and
//! progress lines (pure), and running it as the cluster's OS user.

pub mod engine;
pub mod error;
pub mod failure;
pub mod model;
pub mod pgbackrest;
pub mod schedule;
pub mod source;
pub mod target;
pub mod wal;

pub use engine::BackupEngine;
pub use error::BackupError;
pub use model::{BackupInfo, BackupKind, PgTarget, RepositoryInfo, RestoreTarget};
pub use pgbackrest::PgBackRest;
pub use target::{RecoveryPoint, choose_backup};

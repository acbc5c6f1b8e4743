//! This host's PostgreSQL, driven from Rust: finding the binaries, running
//! them as the right OS user, rendering `postgresql.conf`/`pg_hba.conf`,
//! cloning standbys and asking running servers what they are doing.
//!
//! Rendering (`conf`, `hba`) and output parsing are pure functions; the rest
//! runs processes or SQL and returns [`PgError`]s that name the node, the
//! command and what PostgreSQL said.

pub mod basebackup;
pub mod bins;
pub mod conf;
pub mod control;
pub mod error;
pub mod fsutil;
pub mod hba;
pub mod osuser;
pub mod pgctl;
pub mod probe;
pub mod run;
pub mod secrets;
pub mod sql;

pub use bins::PgBinaries;
pub use error::PgError;
pub use osuser::OsUser;
pub use run::PgRunner;

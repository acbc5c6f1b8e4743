//! pgkeel's failover logic as a pure function: [`decide`] takes what an
//! agent knows (the cluster view from etcd, its own PostgreSQL, the
//! configuration) and returns the actions to take. No I/O happens here, so
//! every transition is unit-tested and random event sequences are checked
//! against the invariants: at most one leader, never promote a node behind a
//! synchronous one, never start a former primary as primary without the key.

mod bootstrap;
mod decide;
mod state;

pub use bootstrap::{BootstrapStep, LocalData, bootstrap_step};
pub use decide::{candidate_rank, decide, sync_plan};
pub use state::{Action, DataState, HaConfig, Local, LocalPg, Peer, View};

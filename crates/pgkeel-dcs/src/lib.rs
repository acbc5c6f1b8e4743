//! The distributed configuration store (DCS) pgkeel's agents coordinate
//! through, on etcd v3. It is the only crate that sees `etcd-client`.
//!
//! Keys, under `<namespace>/<cluster>/` so one etcd serves many clusters:
//!
//! | key | value | lifetime |
//! | --- | --- | --- |
//! | `leader` | node name | the leader agent's lease |
//! | `members/<node>` | [`MemberState`] JSON | that agent's lease |
//! | `optime` | [`Optime`] JSON: the leader's last WAL position | persistent |
//! | `sync` | [`SyncState`] JSON: standbys that may hold acknowledged commits | persistent |
//! | `config` | [`DynamicConfig`] JSON (pause) | persistent |
//! | `switchover` / `failover` | [`Handover`] JSON requests | until done |
//! | `history` | [`HistoryEntry`] JSON list | persistent |
//! | `initialize` | [`pgkeel_core::ClusterIdentity`] JSON: who initialised, system identifier | claimer's lease until initdb is done, then persistent |

mod access;
mod auth;
mod connection;
mod error;
mod etcd;
mod model;
mod raft_leader;

pub use access::{EtcdAccess, EtcdTls};
pub use error::DcsError;
pub use etcd::{Dcs, LeaderEvent, LeaseHandle};
pub use model::{
    ClusterView, DynamicConfig, Handover, HistoryEntry, MemberState, Optime, SyncState,
};

//! The pgkeel agent: one per node. It supervises the node's PostgreSQL,
//! publishes the node's state in etcd, holds (or contends for) the leader
//! lease, fences a primary that loses it, and carries out the decisions of
//! `pgkeel_ha::decide`. It also serves the REST health API that load
//! balancers, the proxy and the CLI use.
//!
//! `orchestrate` is the process side: starting the local etcd member and
//! the agents as daemons for `pgkeel up`, and stopping them by PID.

pub mod api;
pub mod backup_schedule;
pub mod bootstrap;
pub mod error;
pub mod etcd_access;
pub mod etcd_local;
pub mod execute;
pub mod http;
pub mod lease;
pub mod logs;
pub mod observe;
pub mod orchestrate;
pub mod proxy_daemon;
pub mod ready;
pub mod remote;
pub mod runner;
pub mod shared;

pub use error::AgentError;
/// PID files live in `pgkeel-cluster` (status reads them too).
pub use pgkeel_cluster::pidfile;
pub use runner::run_agent;

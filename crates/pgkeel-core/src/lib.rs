//! pgkeel's shared vocabulary: names, LSNs, replication modes, the config
//! model and the status report shape. Nothing here touches a process, a file
//! or the network, so every rule can be tested in isolation.

pub mod config;
pub mod identity;
pub mod lsn;
pub mod mode;
pub mod names;
pub mod size;
pub mod status;
pub mod tuning;

pub use config::{Config, ConfigError, NodeConfig};
pub use identity::ClusterIdentity;
pub use lsn::Lsn;
pub use mode::ReplicationMode;
pub use names::{NameError, NodeName};
pub use status::{ClusterStatus, NodeStatus, ProxyStatus, Role, SlotStatus};

//! The cluster configuration (`pgkeel.toml`): its model, defaults, layering
//! (file, then `PGKEEL_*` environment, then command-line flags) and
//! validation. Every key has a default, so an empty file (or none) is a
//! valid 3-node local cluster.

mod backup;
mod error;
mod layers;
mod model;
pub mod multi_host;
mod proxy;
mod restored;
mod standby;
mod template;
mod validate;

pub use backup::{BackupSection, BackupSource, S3Repository, Schedule, ScheduleError};
pub use error::ConfigError;
pub use layers::{ConfigSources, load, parse};
pub use model::{
    AccessSection, ClusterSection, Config, EtcdSection, HaSection, NodeConfig, ParamValue,
    ReplicationSection, RolesSection, TuningSection, url_host,
};
pub use proxy::{NoReplica, PROXY_PORT_OFFSET, PoolMode, ProxySection, ReplicaChoice, TlsMode};
pub use restored::restored_config;
pub use standby::{STANDBY_SOURCE, StandbyClusterSection};
pub use template::annotated_default;
pub use validate::{ARCHIVE_PARAMETERS, MANAGED_PARAMETERS};

//! A local pgkeel cluster: stand it up from nothing (`up`), inspect it
//! (`status`), hand out connection URLs, stop it (`down`) and remove it
//! (`destroy`). Everything about one cluster lives under its data root;
//! `cluster.toml` there is both the marker that the directory is pgkeel's
//! and the configuration it was created with.

pub mod archive_flush;
pub mod backup;
pub mod compare;
pub mod context;
pub mod error;
pub mod etcd_pki;
pub mod initdb;
pub mod layout;
pub mod pidfile;
pub mod preflight;
pub mod progress;
pub mod render;
pub mod replica;
pub mod restore;
pub mod skeleton;
pub mod status;
pub mod stop;
pub mod up;
pub mod url;
pub mod verify;
pub mod wait;

pub use context::Cluster;
pub use error::ClusterError;
pub use layout::Layout;
pub use progress::{Progress, SilentProgress};
pub use up::{UpOutcome, up};

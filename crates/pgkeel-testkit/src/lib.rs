//! Helpers for tests that need real PostgreSQL or etcd: temporary
//! directories the `postgres` user can reach, blocks of free loopback
//! ports, a lone etcd, and cluster guards that stop every server they
//! started by PID, also when a test panics; and private networks of
//! namespaces ([`netlab`]) for tests of partitions between hosts. A
//! failing test keeps its directory and prints the tails of the logs in
//! it; what a killed test process left behind is stopped and removed by
//! the next one.

mod cluster;
mod etcd;
mod leftovers;
pub mod netlab;
mod ports;
mod reap;

pub use cluster::{KEEP_TEST_DIRS, TempCluster, TestDir, TestResult, connect_url};
pub use etcd::TempEtcd;
pub use leftovers::{TEST_DIR_PREFIX, sweep_dir, sweep_orphans_in};
pub use ports::free_port_block;
pub use reap::{ClusterGuard, pid_in, stop_pid};

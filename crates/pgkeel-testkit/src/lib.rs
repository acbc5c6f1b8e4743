//! Helpers for tests that need real PostgreSQL: temporary directories the
//! `postgres` user can reach, blocks of free loopback ports, and cluster
//! guards that stop every server they started by PID, also when a test
//! panics.

mod cluster;
mod ports;
mod reap;

pub use cluster::{TempCluster, TestDir, connect_url};
pub use ports::free_port_block;
pub use reap::{ClusterGuard, pid_in, stop_pid};

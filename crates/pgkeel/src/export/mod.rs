//! `pgkeel export`: deployment files generated from a cluster's
//! configuration. The renderers here are pure; `crate::cmd_export` reads
//! the configuration and writes what they return.

pub mod compose;
pub mod container_config;
pub mod dockerfile;
pub mod plan;
pub mod systemd;

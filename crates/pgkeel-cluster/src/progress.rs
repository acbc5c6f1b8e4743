//! Progress reporting for slow operations, so the library stays free of
//! terminal concerns: the CLI draws bars, tests stay silent.

/// Receives progress of a long operation.
pub trait Progress: Send + Sync {
    /// A step started (e.g. "initdb primary").
    fn step(&self, node: &str, message: &str);
    /// Bytes copied so far while cloning `node`.
    fn clone_progress(&self, node: &str, done_kb: u64, total_kb: u64);
    /// Cloning `node` finished.
    fn clone_done(&self, node: &str);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct SilentProgress;

impl Progress for SilentProgress {
    fn step(&self, _node: &str, _message: &str) {}
    fn clone_progress(&self, _node: &str, _done_kb: u64, _total_kb: u64) {}
    fn clone_done(&self, _node: &str) {}
}

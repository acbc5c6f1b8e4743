//! A client's sticky replica: the node its reads keep going to under the
//! sticky replica choice, counted per node so new clients go where the
//! fewest read, and uncounted when the client leaves or moves.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::topology::Topology;

/// A client's claim on one node for its reads; dropping it gives the
/// claim back.
#[derive(Debug)]
pub struct ReadAffinity {
    topology: Arc<Topology>,
    node: usize,
}

impl ReadAffinity {
    /// Counts a client as reading from `node`.
    pub fn new(topology: Arc<Topology>, node: usize) -> Self {
        if let Some(c) = topology.readers.get(node) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        ReadAffinity { topology, node }
    }

    /// The node.
    pub fn node(&self) -> usize {
        self.node
    }
}

impl Drop for ReadAffinity {
    fn drop(&mut self) {
        if let Some(c) = self.topology.readers.get(self.node) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_claims() {
        let backend = |name: &str| crate::config::Backend {
            name: name.into(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            socket: None,
        };
        let topology = Arc::new(Topology::new(vec![backend("a"), backend("b")]));
        let count = |i: usize| topology.readers[i].load(Ordering::Relaxed);
        let a = ReadAffinity::new(topology.clone(), 1);
        let b = ReadAffinity::new(topology.clone(), 1);
        assert_eq!((count(0), count(1), a.node()), (0, 2, 1));
        drop(a);
        assert_eq!(count(1), 1);
        drop(b);
        assert_eq!(count(1), 0);
        // A node id past the list (the list shrank on reload): nothing to
        // count, nothing to panic about.
        drop(ReadAffinity::new(topology.clone(), 7));
    }
}

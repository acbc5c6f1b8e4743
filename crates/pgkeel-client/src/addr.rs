//! Where a PostgreSQL node is reached.

use std::fmt;

/// A node's address: a host name, an IP address, or a Unix socket
/// directory (a host starting with `/`), and a port. It identifies the node
/// inside the pool, so one node must always be given the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host name, IP address, or socket directory.
    pub host: String,
    /// TCP port (or the socket file's port suffix).
    pub port: u16,
}

impl NodeAddr {
    /// An address from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        NodeAddr {
            host: host.into(),
            port,
        }
    }

    /// True when the host is a Unix socket directory.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

impl fmt::Display for NodeAddr {
    /// `host:port`, with IPv6 addresses bracketed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_a_socket_address() {
        assert_eq!(NodeAddr::new("db1", 5432).to_string(), "db1:5432");
        assert_eq!(NodeAddr::new("::1", 5433).to_string(), "[::1]:5433");
        assert!(NodeAddr::new("/run/pg", 5432).is_unix_socket());
        assert!(!NodeAddr::new("127.0.0.1", 5432).is_unix_socket());
    }
}

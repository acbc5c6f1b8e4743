//! Read/write-split access to a replicated PostgreSQL cluster for Rust
//! services.
//!
//! A [`ReplicatedPool`] holds a connection pool per node and routes:
//! [`write`](ReplicatedPool::write) opens a transaction on the primary
//! (committed by [`WriteTx::commit`], rolled back on drop);
//! [`read`](ReplicatedPool::read) picks a healthy, not-too-far-behind
//! replica round-robin (lock-free), falling back to the primary;
//! [`read_after`](ReplicatedPool::read_after) takes the [`WriteToken`] a
//! commit returned and reads only where that write is visible. The pool
//! probes every node in the background and rediscovers the primary after a
//! failover, when a write meets a read-only node (SQLSTATE 25006) or when a
//! connection to the primary is lost.
//!
//! It replaces the application-side split of the replication guide (a
//! global round-robin counter, a session factory per request, no health
//! check, no fallback, no lag awareness, no read-your-writes).
//!
//! ```no_run
//! use pgkeel_client::{ErrorKind, ReplicatedPool};
//!
//! # async fn demo() -> Result<(), pgkeel_client::Error> {
//! // POSTGRES_MASTER_HOST, POSTGRES_REPLICA1_HOST, POSTGRES_USER, ...
//! let pool = ReplicatedPool::from_env().await?;
//!
//! let tx = pool.write().await?;
//! tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &[&7_i64]).await?;
//! let token = tx.commit().await?;
//!
//! let mut conn = pool.read_after(&token).await?;
//! let row = conn.query_one("SELECT balance FROM accounts WHERE id = $1", &[&7_i64]).await?;
//! let balance: i64 = row.get(0);
//! # let _ = balance;
//!
//! match pool.write().await {
//!     Err(e) if e.kind() == ErrorKind::NoPrimary => { /* failover in progress: answer 503 */ }
//!     other => { other?; }
//! }
//! # Ok(())
//! # }
//! ```

mod addr;
mod agent_topology;
mod cluster_config;
mod config;
mod env;
mod error;
mod inner;
mod lag;
mod monitor;
mod node;
mod pool;
mod probe;
mod read;
mod select;
mod token;
mod topology;
mod urls;
mod write;

pub use addr::NodeAddr;
pub use agent_topology::AgentTopology;
pub use cluster_config::from_pgkeel_config;
pub use config::PoolConfig;
pub use error::{Error, ErrorKind, Result};
pub use pgkeel_core::Lsn;
pub use pool::{PoolStatus, ReplicaStatus, ReplicatedPool};
pub use read::ReadConn;
pub use token::WriteToken;
pub use topology::{BoxFuture, Member, ProbeTopology, Role, TopologySource};
pub use write::WriteTx;

/// The driver types that appear in this crate's API (rows, parameter and
/// column conversions), re-exported so applications use the same version.
pub use tokio_postgres::{self, Row, types::ToSql};

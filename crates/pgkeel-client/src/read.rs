//! A connection for reads: on a replica when one qualifies, else on the
//! primary. A statement that fails because its node went away is run again
//! once on another node, so reads survive a replica stopping.

use std::sync::Arc;

use deadpool_postgres::Object;
use pgkeel_core::Lsn;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::error::is_connection_loss;
use crate::inner::Inner;
use crate::node::Node;
use crate::{Error, ErrorKind, NodeAddr, Result};

/// A pooled connection chosen for reading, from
/// [`ReplicatedPool::read`](crate::ReplicatedPool::read) or
/// [`read_after`](crate::ReplicatedPool::read_after). Dropping it returns
/// the connection to its node's pool.
///
/// Statements go through the connection's prepared-statement cache. Use it
/// for reads only: a write on a replica fails with
/// [`ErrorKind::ReadOnly`].
pub struct ReadConn {
    obj: Object,
    node: Arc<Node>,
    inner: Arc<Inner>,
    need: Option<Lsn>,
    pinned: bool,
}

impl ReadConn {
    pub(crate) fn new(obj: Object, node: Arc<Node>, inner: Arc<Inner>, need: Option<Lsn>) -> Self {
        ReadConn {
            obj,
            node,
            inner,
            need,
            pinned: false,
        }
    }

    /// The node serving this connection.
    pub fn node(&self) -> &NodeAddr {
        &self.node.addr
    }

    /// True when no replica qualified and the read went to the primary.
    pub fn is_primary(&self) -> bool {
        let view = self.inner.view.load();
        view.primary
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &self.node))
    }

    /// Runs `sql` and returns every row.
    pub async fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        match run(&self.obj, sql, params).await {
            Ok(rows) => Ok(rows),
            // Boxed: keeps the common path's future small.
            Err(e) if !self.pinned && is_connection_loss(&e) => {
                Box::pin(self.retry_elsewhere(e, sql, params)).await
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Runs `sql` again on another node after this one failed with `e`, a
    /// lost connection.
    async fn retry_elsewhere(
        &mut self,
        e: tokio_postgres::Error,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let err = Error::from_pg("reading", &self.node.addr, e);
        self.node.mark_down(&err);
        tracing::info!(node = %self.node.addr, error = %err, "read retried on another node");
        let (obj, node) = self
            .inner
            .acquire_read(self.need, Some(&self.node.addr))
            .await?;
        self.obj = obj;
        self.node = node;
        run(&self.obj, sql, params).await.map_err(|e| self.error(e))
    }

    /// Runs `sql`, which must return exactly one row.
    pub async fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            1 => rows.pop().ok_or_else(|| row_count(sql, 0, "exactly one")),
            n => Err(row_count(sql, n, "exactly one")),
        }
    }

    /// Runs `sql`, which must return at most one row.
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            n => Err(row_count(sql, n, "at most one")),
        }
    }

    /// The underlying client, for anything the methods above do not cover
    /// (streaming, `COPY TO`, a read-only transaction). Statements run
    /// through it are not retried, and from then on neither are this
    /// connection's: state set on the session must not silently move to
    /// another node.
    pub fn client(&mut self) -> &Client {
        self.pinned = true;
        &self.obj
    }

    fn error(&self, e: tokio_postgres::Error) -> Error {
        let err = Error::from_pg("reading", &self.node.addr, e);
        if err.kind() == ErrorKind::ConnectionLost {
            self.node.mark_down(&err);
        }
        err
    }
}

async fn run(
    obj: &Object,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, tokio_postgres::Error> {
    let stmt = obj.prepare_cached(sql).await?;
    obj.query(&stmt, params).await
}

pub(crate) fn row_count(sql: &str, got: usize, wanted: &str) -> Error {
    Error::new(
        ErrorKind::Query,
        format!("`{sql}` returned {got} rows where {wanted} was expected"),
    )
}

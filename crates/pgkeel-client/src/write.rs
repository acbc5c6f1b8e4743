//! A transaction on the primary that commits only when told to and rolls
//! back otherwise, and whose commit yields a read-your-writes token.

use std::sync::Arc;

use deadpool_postgres::Object;
use pgkeel_core::Lsn;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, SimpleQueryMessage};

use crate::inner::Inner;
use crate::node::Node;
use crate::read::row_count;
use crate::token::{AfterCommit, parse_setting_bytes};
use crate::{Error, ErrorKind, NodeAddr, Result, WriteToken};

/// Commit and the positions a token is made from, in one round trip. The
/// first `SELECT` fails in an aborted transaction (where `COMMIT` would
/// silently roll back), and reads `synchronous_commit` as the transaction
/// sees it (`SET LOCAL` included).
const COMMIT_SQL: &str = "SELECT current_setting('synchronous_commit'); COMMIT; \
     SELECT pg_current_wal_flush_lsn(), pg_current_wal_insert_lsn(), \
     current_setting('wal_block_size'), current_setting('wal_segment_size')";

/// An open transaction on the primary, from
/// [`ReplicatedPool::write`](crate::ReplicatedPool::write).
///
/// [`commit`](WriteTx::commit) makes it durable and returns a
/// [`WriteToken`]; dropping it without committing (an early `?` return, a
/// panic, a cancelled request) rolls it back. Statements go through the
/// connection's prepared-statement cache.
pub struct WriteTx {
    obj: Option<Object>,
    node: Arc<Node>,
    inner: Arc<Inner>,
}

impl WriteTx {
    pub(crate) fn new(obj: Object, node: Arc<Node>, inner: Arc<Inner>) -> Self {
        WriteTx {
            obj: Some(obj),
            node,
            inner,
        }
    }

    /// The primary this transaction runs on.
    pub fn node(&self) -> &NodeAddr {
        &self.node.addr
    }

    /// Runs `sql` and returns every row.
    pub async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let obj = self.obj()?;
        let stmt = obj
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error("writing", e))?;
        obj.query(&stmt, params)
            .await
            .map_err(|e| self.error("writing", e))
    }

    /// Runs `sql`, which must return exactly one row.
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            1 => rows.pop().ok_or_else(|| row_count(sql, 0, "exactly one")),
            n => Err(row_count(sql, n, "exactly one")),
        }
    }

    /// Runs `sql`, which must return at most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let mut rows = self.query(sql, params).await?;
        match rows.len() {
            0 | 1 => Ok(rows.pop()),
            n => Err(row_count(sql, n, "at most one")),
        }
    }

    /// Runs `sql` and returns the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let obj = self.obj()?;
        let stmt = obj
            .prepare_cached(sql)
            .await
            .map_err(|e| self.error("writing", e))?;
        obj.execute(&stmt, params)
            .await
            .map_err(|e| self.error("writing", e))
    }

    /// Runs one or more statements without parameters (DDL, `SET LOCAL`).
    pub async fn batch_execute(&self, sql: &str) -> Result<()> {
        let obj = self.obj()?;
        obj.batch_execute(sql)
            .await
            .map_err(|e| self.error("writing", e))
    }

    /// The underlying client, inside the transaction, for what the methods
    /// above do not cover (`COPY FROM`, streaming). Do not end the
    /// transaction through it.
    pub fn client(&self) -> Result<&Client> {
        Ok(self.obj()?)
    }

    /// Commits and returns the token of this write. On error the
    /// transaction is rolled back, except when the connection was lost
    /// during `COMMIT` ([`ErrorKind::ConnectionLost`]): then whether it
    /// committed is unknown.
    pub async fn commit(mut self) -> Result<WriteToken> {
        let obj = self.take()?;
        match obj.simple_query(COMMIT_SQL).await {
            Ok(messages) => parse_after_commit(&messages)
                .map(|after| after.token())
                .map_err(|why| {
                    Error::new(
                        ErrorKind::Query,
                        format!(
                            "committed on {}, but its WAL position could not be read ({why})",
                            self.node.addr
                        ),
                    )
                }),
            Err(e) => {
                let err = self.error("committing", e);
                // After a lost connection the session is useless; otherwise
                // end whatever is left of the transaction (an aborted one).
                let reusable = err.kind() != ErrorKind::ConnectionLost
                    && obj.batch_execute("ROLLBACK").await.is_ok();
                if !reusable {
                    drop(Object::take(obj));
                }
                Err(err)
            }
        }
    }

    /// Rolls back explicitly (dropping does the same, in the background).
    pub async fn rollback(mut self) -> Result<()> {
        let obj = self.take()?;
        match obj.batch_execute("ROLLBACK").await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = self.error("rolling back", e);
                drop(Object::take(obj));
                Err(err)
            }
        }
    }

    fn obj(&self) -> Result<&Object> {
        self.obj
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Query, "the transaction has already ended"))
    }

    fn take(&mut self) -> Result<Object> {
        self.obj
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Query, "the transaction has already ended"))
    }

    /// Wraps a driver error; a lost connection or a read-only node makes
    /// the pool look for the primary again.
    fn error(&self, what: &str, e: tokio_postgres::Error) -> Error {
        let err = Error::from_pg(what, &self.node.addr, e);
        match err.kind() {
            ErrorKind::ConnectionLost => {
                self.node.mark_down(&err);
                self.inner.suspect_primary();
            }
            ErrorKind::ReadOnly => self.inner.suspect_primary(),
            _ => {}
        }
        err
    }
}

impl Drop for WriteTx {
    /// Rolls back an open transaction before the session goes back to the
    /// pool. Without a runtime to do that on, the session is closed, which
    /// rolls back too.
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if obj.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(obj));
                    }
                });
            }
            Err(_) => drop(Object::take(obj)),
        }
    }
}

/// Reads the rows of [`COMMIT_SQL`].
pub(crate) fn parse_after_commit(
    messages: &[SimpleQueryMessage],
) -> std::result::Result<AfterCommit, String> {
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect();
    let [setting, positions] = rows.as_slice() else {
        return Err(format!("{} rows instead of 2", rows.len()));
    };
    let text = |row: &tokio_postgres::SimpleQueryRow, i: usize| {
        row.get(i)
            .map(str::to_string)
            .ok_or_else(|| format!("column {i} is NULL"))
    };
    let lsn = |i: usize| -> std::result::Result<Lsn, String> {
        text(positions, i)?
            .parse()
            .map_err(|e: pgkeel_core::lsn::LsnParseError| e.to_string())
    };
    let bytes = |i: usize| -> std::result::Result<u64, String> {
        let t = text(positions, i)?;
        parse_setting_bytes(&t).ok_or_else(|| format!("size `{t}`"))
    };
    Ok(AfterCommit {
        synchronous_commit: text(setting, 0)?,
        flush: lsn(0)?,
        insert: lsn(1)?,
        block_size: bytes(2)?,
        segment_size: bytes(3)?,
    })
}

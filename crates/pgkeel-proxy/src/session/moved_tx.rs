//! Moving a read-only transaction a replica refused at its start to the
//! primary (see [`crate::tx_start`]).

use super::*;

impl Session {
    /// The replica refused a statement of a read-only transaction that
    /// has not read yet (0A000: a hot standby runs no serializable
    /// transactions): the replica connection is closed, which ends the
    /// transaction there, and the statements that opened it run again on
    /// a primary connection, answers hidden, before the refused unit,
    /// whose held answers (the error) are dropped. A unit that opened the
    /// transaction itself simply runs again on the primary.
    pub(super) async fn move_transaction(&mut self, mut refused: Retry) -> Result<(), ProxyError> {
        let start = self.tx_start.take();
        self.drop_attached();
        self.tx_start = start.filter(|s| !s.units().is_empty()).map(|mut s| {
            s.set_replay();
            s
        });
        self.shared
            .metrics
            .retries_on_primary
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            "a replica refused a read-only transaction at its start: moving it to the primary"
        );
        let unit = refused.rerun(&mut self.statements);
        self.dispatch(unit, true).await?;
        if let Some(unit) = self.queued.take() {
            Box::pin(self.dispatch(unit, false)).await?;
        }
        Ok(())
    }

    /// Runs the statements that opened a transaction being moved (see
    /// [`Session::move_transaction`]) on the attached primary connection,
    /// after the client's startup settings; the connection is then in
    /// that transaction.
    pub(super) async fn replay_tx_start(&mut self) -> Result<(), ProxyError> {
        let (Some(start), Some(att)) = (self.tx_start.take(), self.attached.as_mut()) else {
            return Ok(());
        };
        let refused = match settings_now(att, self.settings.as_ref(), &self.shared.metrics).await? {
            Some(message) => Some(message),
            None => run_units(&mut att.lease.conn, start.units()).await?,
        };
        if let Some(message) = refused {
            return Err(ProxyError::TransactionNotMoved(message));
        }
        att.tx = TxStatus::InTransaction;
        Ok(())
    }
}

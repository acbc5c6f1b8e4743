//! Session state a client changes without being pinned: plain
//! `SET`/`RESET` statements, whose values become the client's settings,
//! and the resets client-side pools send (see
//! [`pgkeel_sql::session_set`]), settled on the same connection once the
//! unit is answered.

use super::*;

/// What a client changed in its session without being pinned, settled on
/// the same connection once the unit is answered, before the connection
/// goes back to the pool (see [`Session::unpinned_state`]).
pub(super) struct AfterUnit {
    pub(super) change: SessionChange,
    /// The unit got an error: it changed nothing (a string of statements
    /// runs in one implicit transaction, rolled back whole).
    pub(super) failed: bool,
}

/// The kind of session change an [`AfterUnit`] settles.
pub(super) enum SessionChange {
    /// A plain `SET`/`RESET` of these: their values are read back and
    /// become the client's settings.
    Learn(Vec<SetTarget>),
    /// A reset of the session (a client-side pool handing its connection
    /// back): the client's settings return to its login ones.
    Reset(Resets),
}

/// Adds `frames` (ParameterStatus messages of a query the proxy ran after
/// the client's unit, on its behalf) to what the client is sent, ahead of
/// the unit's ReadyForQuery when that is still waiting to go, where
/// PostgreSQL would have sent them.
pub(super) fn before_ready(out: &mut Vec<u8>, frames: &[u8]) {
    let at = out.len().saturating_sub(6);
    if out.get(at..at + 5) == Some(&[b'Z', 0, 0, 0, 5][..]) {
        out.splice(at..at, frames.iter().copied());
    } else {
        out.extend_from_slice(frames);
    }
}

/// Puts the client's login `settings` back on `conn` after a reset (see
/// [`restore_query`]), their ParameterStatus messages going into `out`
/// ahead of the reset's ReadyForQuery; whether the server refused.
async fn restore_login(
    conn: &mut ServerConn,
    settings: Option<&Settings>,
    out: &mut Vec<u8>,
) -> Result<bool, ProxyError> {
    let Some(query) = settings.and_then(restore_query) else {
        return Ok(false);
    };
    let mut q = Vec::new();
    FrontendMessage::Query(query.as_bytes()).encode(&mut q);
    let mut reports = Vec::new();
    let ran = conn.run_reporting(&q, Some(&mut reports)).await?;
    before_ready(out, &reports);
    Ok(ran.error.is_some())
}

/// The text of `unit` when it runs exactly one string of SQL as a unit
/// of its own: one simple Query; or a Parse (as JDBC sends everything),
/// or none (a statement the client parsed in a
/// unit of its own first, as tokio-postgres does), then a Bind of that
/// statement to the unnamed portal, perhaps a Describe, an Execute and
/// Sync.
pub(super) fn lone_statement<'a>(unit: &'a [u8], statements: &'a Statements) -> Option<&'a [u8]> {
    let mut msgs = frames(unit).map(FrontendMessage::decode);
    let mut next = msgs.next()?.ok()?;
    let parsed = match next {
        FrontendMessage::Query(sql) => return msgs.next().is_none().then_some(sql),
        FrontendMessage::Parse { name, query, .. } => {
            next = msgs.next()?.ok()?;
            Some((name, query))
        }
        _ => None,
    };
    let FrontendMessage::Bind {
        portal: b"",
        statement,
        ..
    } = next
    else {
        return None;
    };
    let sql = match parsed {
        Some((name, query)) => (name == statement).then_some(query)?,
        None => statements.text_of(statement)?,
    };
    next = msgs.next()?.ok()?;
    if matches!(next, FrontendMessage::Describe { name: b"", .. }) {
        next = msgs.next()?.ok()?;
    }
    let executes = matches!(next, FrontendMessage::Execute { portal: b"", .. });
    let synced = matches!(msgs.next(), Some(Ok(FrontendMessage::Sync)));
    (executes && synced && msgs.next().is_none()).then_some(sql)
}

/// Settings that change how a statement's text is read: a statement
/// parsed under one value must not be parsed again under another.
pub(super) const TEXT_RULES: [&str; 2] = ["client_encoding", "standard_conforming_strings"];

/// True when a Bind of `unit` passes a NULL parameter.
pub(super) fn binds_null(unit: &[u8]) -> bool {
    frames(unit).any(|f| match FrontendMessage::decode(f) {
        Ok(FrontendMessage::Bind { tail, .. }) => {
            BindTail::decode(tail).is_ok_and(|t| t.params.iter().any(Option::is_none))
        }
        _ => false,
    })
}

impl Session {
    /// The settings `unit` changes when it is one simple Query of plain
    /// session-level `SET`/`RESET` statements (see
    /// [`pgkeel_sql::session_set`]) that the proxy can carry to the
    /// client's next connections instead of pinning it: between
    /// transactions, in transaction pooling. A change of
    /// `client_encoding` or `standard_conforming_strings` (which change
    /// what a statement's text means) is carried only while the client has
    /// no prepared statement, whose text would be parsed again elsewhere.
    pub(super) fn unpinned_state(&self, unit: &[u8]) -> Option<SessionChange> {
        if self.pinned
            || self.after_unit.is_some()
            || self.shared.config.pool_mode == PoolMode::Session
        {
            return None;
        }
        let sql = std::str::from_utf8(lone_statement(unit, &self.statements)?).ok()?;
        let Some(targets) = plain_settings(sql) else {
            let resets = resets_only(sql)?;
            // Back at its login settings, the client's statements would
            // be parsed again under other string rules.
            let login = Settings::login(self.settings.as_ref());
            let rules_change = TEXT_RULES.iter().any(|n| {
                let now = self.settings.as_deref().and_then(|s| s.get(n));
                now != login.as_deref().and_then(|s| s.get(n))
            });
            if resets.settings && rules_change && !self.statements.is_empty() {
                return None;
            }
            return Some(SessionChange::Reset(resets));
        };
        let rereads = |t: &SetTarget| TEXT_RULES.contains(&t.name.as_str());
        if targets.iter().any(rereads) && !self.statements.is_empty() {
            return None;
        }
        // `set_config(name, NULL, false)` is a RESET (to the login value):
        // a NULL parameter is the value of the one call there is.
        let mut targets = targets;
        if binds_null(unit) {
            match targets.as_mut_slice() {
                [only] => only.reset = true,
                _ => return None,
            }
        }
        Some(SessionChange::Learn(targets))
    }

    /// Makes `settings` the client's (after its own SET or reset): its
    /// statements are named anew for them, since another client's
    /// server-side statement of the same text, prepared under other
    /// settings (`search_path`), is not the same statement.
    pub(super) fn change_settings(&mut self, settings: Option<Arc<Settings>>) {
        self.settings = settings;
        let salt = self
            .settings
            .as_deref()
            .map_or(0, |s| s.fingerprint(&self.shared.hasher));
        if salt != self.statement_salt {
            self.statement_salt = salt;
            self.statements.rename(StatementNaming {
                hasher: &self.shared.hasher,
                salt,
            });
        }
    }

    /// Settles what the answered unit changed without pinning the client
    /// (see [`AfterUnit`]).
    pub(super) async fn settle_after_unit(&mut self) -> Result<(), ProxyError> {
        let Some(after) = self.after_unit.take() else {
            return Ok(());
        };
        if after.failed {
            return Ok(());
        }
        match after.change {
            SessionChange::Learn(targets) => self.learn_settings(targets).await,
            SessionChange::Reset(resets) => self.finish_reset(resets).await,
        }
    }

    /// The client's reset (see [`Session::unpinned_state`]) was answered.
    /// Having held no session state but its settings and prepared
    /// statements (the relay forgets those a `DISCARD ALL`/`DEALLOCATE
    /// ALL` removed), it is back to its login: after `RESET ALL` or
    /// `DISCARD ALL` its login settings are put back on the connection
    /// at once, and their ParameterStatus messages forwarded, so the
    /// client, which heard the reset's reports, hears its values come
    /// back, as in PostgreSQL.
    pub(super) async fn finish_reset(&mut self, resets: Resets) -> Result<(), ProxyError> {
        if !resets.settings {
            return Ok(());
        }
        self.change_settings(Settings::login(self.settings.as_ref()));
        let Some(att) = self.attached.as_mut() else {
            return Ok(());
        };
        // The reset left the connection at its defaults.
        att.lease.conn.applied = None;
        let settings = self.settings.as_deref();
        if restore_login(&mut att.lease.conn, settings, &mut self.to_client).await? {
            // It holds part of them: closed; the client's next connection
            // is given them.
            self.drop_attached();
        } else {
            att.lease.conn.applied = self.settings.clone();
        }
        Ok(())
    }

    /// A pinned (or session-mode) client's reset (`RESET ALL`, `DISCARD
    /// ALL`, in any unit) was answered, the transaction status being
    /// `tx`. If it failed (`DISCARD ALL` inside a transaction: 25001) it
    /// changed nothing. Otherwise the client is back at its login
    /// settings: outside a transaction they are put back on its
    /// connection at once (where the server's defaults now are), their
    /// ParameterStatus messages going ahead of the reset's ReadyForQuery,
    /// before anything it pipelined behind runs; inside one, ahead of its
    /// next unit outside a transaction. The connection holds the client's
    /// session state: if the restore fails, the session ends.
    pub(super) async fn finish_pinned_reset(&mut self, tx: TxStatus) -> Result<(), ProxyError> {
        let Some(after) = self.after_unit.take() else {
            return Ok(());
        };
        if after.failed {
            return Ok(());
        }
        // Not `change_settings`: a pinned client's statements keep the
        // names (and server-side statements) they have on its connection.
        self.settings = Settings::login(self.settings.as_ref());
        let Some(att) = self.attached.as_mut() else {
            return Ok(());
        };
        if tx != TxStatus::Idle {
            att.relay.restore_settings();
            return Ok(());
        }
        let settings = self.settings.as_deref();
        if restore_login(&mut att.lease.conn, settings, &mut self.to_client).await? {
            // The session ends with the reset: its FATAL error takes the
            // place of the ReadyForQuery, as when a server ends one.
            let at = self.to_client.len().saturating_sub(6);
            if self.to_client.get(at..at + 5) == Some(&[b'Z', 0, 0, 0, 5][..]) {
                self.to_client.truncate(at);
            }
            return Err(ProxyError::SessionStateLost);
        }
        Ok(())
    }

    /// The client's plain `SET`/`RESET` (see [`Session::unpinned_state`])
    /// was answered: the values it left on the connection become the
    /// client's settings, given to every connection it is handed from now
    /// on, and the connection is known to hold them. A `RESET` returns to
    /// the value the client logged in with, as in PostgreSQL (the
    /// connection, to its own default). If the values cannot be read
    /// back, the client keeps this connection, as for other session state.
    pub(super) async fn learn_settings(
        &mut self,
        targets: Vec<SetTarget>,
    ) -> Result<(), ProxyError> {
        let Some(att) = self.attached.as_mut() else {
            return Ok(());
        };
        let set: Vec<&str> = targets
            .iter()
            .filter(|t| !t.reset)
            .map(|t| t.name.as_str())
            .collect();
        let mut shown: Vec<Option<String>> = Vec::new();
        if !set.is_empty() {
            let mut q = Vec::new();
            FrontendMessage::Query(values_query(set.iter().copied()).as_bytes()).encode(&mut q);
            let ran = att.lease.conn.run(&q).await?;
            let row = match (ran.error, ran.row.as_deref().map(BackendMessage::decode)) {
                (None, Some(Ok(BackendMessage::DataRow(cells)))) if cells.len() == set.len() => {
                    // NULL: no such setting; text that is not hex: not
                    // this query's answer.
                    cells
                        .iter()
                        .map(|c| match c {
                            None => Some(None),
                            Some(hex) => from_hex(hex).map(Some),
                        })
                        .collect::<Option<Vec<_>>>()
                }
                _ => None,
            };
            let Some(row) = row else {
                self.pin();
                return Ok(());
            };
            shown = row;
        }
        let mut shown = shown.into_iter();
        let login = Settings::login(self.settings.as_ref());
        let mut held = Vec::with_capacity(targets.len());
        let mut mine = Vec::with_capacity(targets.len());
        for t in targets.iter() {
            if t.reset {
                // A RESET defines a custom placeholder (`app.x`) the
                // session never set, as ''.
                let placeholder = t.name.contains('.').then(String::new);
                held.push((t.name.clone(), placeholder.clone()));
                let start = login.as_ref().and_then(|l| l.get(&t.name));
                mine.push((t.name.clone(), start.map(str::to_string).or(placeholder)));
            } else {
                let value = shown.next().flatten();
                held.push((t.name.clone(), value.clone()));
                mine.push((t.name.clone(), value));
            }
        }
        let now_held = Settings::changed(self.settings.as_ref(), &held);
        let mine = if mine == held {
            now_held.clone()
        } else {
            Settings::changed(self.settings.as_ref(), &mine)
        };
        let conn = &mut att.lease.conn;
        conn.applied = now_held;
        // A RESET of a setting the client logged in with left the
        // connection at its default and told the client so: its login
        // value is put back now, and the client hears of it.
        let mut failed = false;
        if let Some(query) = sync_query(changes(
            conn.applied.as_deref(),
            mine.as_deref(),
            &conn.params,
        )) {
            let mut q = Vec::new();
            FrontendMessage::Query(query.as_bytes()).encode(&mut q);
            let mut reports = Vec::new();
            failed = conn
                .run_reporting(&q, Some(&mut reports))
                .await?
                .error
                .is_some();
            before_ready(&mut self.to_client, &reports);
        }
        if failed {
            // It holds part of them: closed; the next connection is
            // given them.
            self.drop_attached();
        } else {
            conn.applied = mine.clone();
        }
        self.change_settings(mine);
        self.shared
            .metrics
            .settings_carried
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

//! One client connection after login: collects its messages into units
//! (a simple Query, or extended messages up to Sync/Flush), routes each
//! unit that starts outside a transaction, keeps the server until the
//! transaction ends (ReadyForQuery says idle), and relays the answers.
//!
//! Session state (SET, LISTEN, SQL PREPARE, temp tables, WITH HOLD
//! cursors, session advisory locks) pins the client to its server
//! connection, on the primary, until it disconnects; the connection is
//! then reset with `DISCARD ALL` before reuse. A `DEALLOCATE` of one of
//! the client's protocol-level statements (which the proxy keeps, see
//! `relay`) is answered here and does not pin.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use pgkeel_sql::deallocate::{Deallocate, deallocate_target};
use pgkeel_sql::session_set::{Resets, SetTarget, plain_settings, resets_only};
use pgkeel_sql::{Classifier, StatementKind};
use pgkeel_wire::backend::{ErrorFields, encode_error, error_code};
use pgkeel_wire::frontend::BindTail;
use pgkeel_wire::{BackendMessage, FrontendMessage, MAX_MESSAGE_LEN, TxStatus, split_message};

use crate::affinity::ReadAffinity;
use crate::config::{PoolMode, ReplicaChoice};
use crate::io::{frames, read_into};
use crate::metrics::Metrics;
use crate::pool::{Lease, Pool, PoolKey};
use crate::relay::{Relay, StatementNaming, Statements, may_end_block};
use crate::replica_state::{ReplicaState, replay, run_units};
use crate::sequence;
use crate::server::{ServerConn, read_message, send_all, write_all};
use crate::settings::{
    Settings, changes, from_hex, in_sync, may_reset_all, restore_query, sync_query, values_query,
};
use crate::spare;
use crate::stream::ClientStream;
use crate::tx_start::TxStart;
use crate::{CancelSlot, CancelTarget, Credential, ProxyError, Shared};

mod carried;
mod moved_tx;

use carried::{AfterUnit, SessionChange};

/// Responses held back for a possible retry on the primary are flushed
/// past this size (the retry is then given up).
const HOLD_LIMIT: usize = 256 * 1024;

/// Errors a replica gives for what the primary runs: a write it was
/// taken for a read (25006 read_only_sql_transaction), and serializable
/// isolation, which a hot standby refuses (0A000, e.g. a role or client
/// with `default_transaction_isolation = serializable`). A read that got
/// one is run again on the primary: it had no effect, and an error the
/// primary gives too reaches the client from there.
fn refused_by_replica(code: Option<&str>) -> bool {
    matches!(code, Some("25006" | "0A000"))
}

/// A unit routed to a replica, kept until its answer is complete in case
/// the replica refuses it (see [`refused_by_replica`]) or the connection
/// breaks; plain reads the client pipelines behind it join it, so they
/// run again on the primary with it.
struct Retry {
    unit: Bytes,
    held: Vec<u8>,
    read_only_error: bool,
    /// The error was 0A000 (a hot standby's refusal of serializable
    /// isolation, among others): inside a transaction that has not read
    /// yet, it moves the transaction (see `tx_start`).
    feature_refused: bool,
    /// `unit` holds plain reads only (outside a transaction): a pipelined
    /// read may join it.
    reads: bool,
    /// `unit` was sent inside a transaction (see `tx_start`): it may run
    /// again only with the statements that opened the transaction, never
    /// alone (it may have ended the transaction: `COMMIT; SELECT 1`).
    within_tx: bool,
    /// The client's named statements recorded from this `seq` on were
    /// parsed by `unit` (nothing else is sent while it is held).
    since: u64,
}

impl Retry {
    /// Holds the answers to `unit`; `reads`: see [`Retry::reads`].
    fn new(unit: Bytes, reads: bool) -> Self {
        Retry {
            unit,
            held: spare::take(),
            read_only_error: false,
            feature_refused: false,
            reads,
            within_tx: false,
            since: Statements::next_seq(),
        }
    }

    /// The unit, to run again elsewhere.
    fn take_unit(&mut self) -> Bytes {
        std::mem::take(&mut self.unit)
    }

    /// The unit, to run again elsewhere as if it had not run: the named
    /// statements it recorded are forgotten (its Parses would otherwise
    /// find their names taken, 42P05).
    fn rerun(&mut self, statements: &mut Statements) -> Bytes {
        statements.forget_since(self.since);
        self.take_unit()
    }

    /// Adds a read pipelined behind the held ones when it may run again
    /// with them (a plain read, outside a transaction and a batch, within
    /// the hold limit); false when it may not (the hold then ends).
    fn join(&mut self, unit: &[u8], kind: StatementKind) -> bool {
        if !self.reads
            || !matches!(kind, StatementKind::Read | StatementKind::Empty)
            || !simple_queries(unit)
            || self.unit.len() + unit.len() > HOLD_LIMIT
        {
            return false;
        }
        // A copy, only when a client pipelines reads.
        let mut joined = Vec::with_capacity(self.unit.len() + unit.len());
        joined.extend_from_slice(&self.unit);
        joined.extend_from_slice(unit);
        self.unit = joined.into();
        true
    }
}

impl Drop for Retry {
    fn drop(&mut self) {
        spare::give(std::mem::take(&mut self.held));
    }
}

struct Attached {
    lease: Lease,
    relay: Relay,
    tx: TxStatus,
    /// Extended messages were flushed without a Sync yet.
    open_batch: bool,
    is_primary: bool,
    retry: Option<Retry>,
    since: Instant,
}

/// A logged-in client.
pub struct Session {
    shared: Arc<Shared>,
    client: ClientStream,
    cbuf: BytesMut,
    /// Length of the complete messages at the start of `cbuf` that belong
    /// to the unit being collected (not yet ended by Sync/Flush/Query).
    unit_len: usize,
    to_client: Vec<u8>,
    user: Box<str>,
    database: Box<str>,
    credential: Credential,
    /// The settings the client asked for at login, applied to every
    /// server connection it is given (`None`: the servers' defaults).
    settings: Option<Arc<Settings>>,
    /// Fingerprint of `settings` in its statements' server-side names.
    statement_salt: u64,
    statements: Statements,
    /// This client's pools by node, looked up once.
    pools: Vec<Option<Arc<Pool>>>,
    /// The replica this client's reads stick to (sticky choice).
    reader: Option<ReadAffinity>,
    /// A unit that must wait until the attached server is released.
    queued: Option<Bytes>,
    attached: Option<Attached>,
    pinned: bool,
    /// Settings made while pinned to a replica (see `replica_state`);
    /// boxed: rare, and every idle client pays for the session's size.
    replica_state: Option<Box<ReplicaState>>,
    /// The next primary connection must first get `replica_state`'s
    /// settings (the session is moving off its replica).
    moving: bool,
    /// The start of the read-only transaction on the attached replica,
    /// kept while it may still move to the primary (see `tx_start`);
    /// boxed: only while such a transaction starts.
    tx_start: Option<Box<TxStart>>,
    /// Session state the client changed without being pinned, to settle
    /// once the unit is answered (boxed: rare, and every idle client pays
    /// for the session's size).
    after_unit: Option<Box<AfterUnit>>,
    discard_until_sync: bool,
    /// A replica refused the client's startup settings (a standby cannot
    /// take `transaction_read_only=off`, say): its reads run on the
    /// primary, which took them at login.
    reads_on_primary: bool,
    /// Set when the unit being dispatched is classified, taken when it is
    /// sent: kept here, not in `dispatch`'s locals, so it does not grow
    /// the session's future across the awaits in between.
    named_kinds: NamedKinds,
    /// Where this client's cancel requests go (see [`CancelSlot`]).
    cancel: Arc<CancelSlot>,
    /// This client's `nextval()` values, on the primary connection whose
    /// [`ServerConn::values`] this refers to, while that connection lives
    /// and nobody else has written there (see [`crate::sequence`]).
    sequence_values: Weak<sequence::Owner>,
}

/// Whether `unit` runs anything (a Query, an Execute, a function call),
/// not only prepares or describes.
fn executes(unit: &[u8]) -> bool {
    frames(unit).any(|f| matches!(f.first(), Some(b'Q' | b'E' | b'F')))
}

fn rfq(out: &mut Vec<u8>, status: TxStatus) {
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, status.byte()]);
}

/// Where SQL text (a Query's or a Parse's) may run. Text that is not
/// UTF-8 (a client in another `client_encoding`, such as LATIN1, or bytes
/// PostgreSQL will refuse with 22021) cannot be parsed here: it is a
/// write, relayed unchanged to the primary, as PostgreSQL would take it.
/// The one place the text is checked for UTF-8 (the classifier's cache is
/// keyed by string).
fn classify_text(classifier: &Classifier, sql: &[u8]) -> StatementKind {
    match std::str::from_utf8(sql) {
        Ok(sql) => classifier.classify(sql),
        Err(_) => StatementKind::Write,
    }
}

/// How many named Parses of a unit keep the kind found when it was routed:
/// as many as fit in the session's padding (its size is unchanged). A
/// unit with more (rare) has the rest classified again when sent (cache
/// hits).
const NAMED_KINDS: usize = 5;

/// The kinds of a unit's first named Parses, in order, as classified when
/// it was routed: a named statement keeps its own kind (for its later
/// Binds), and sending the unit neither checks nor classifies its text
/// again.
type NamedKinds = [Option<StatementKind>; NAMED_KINDS];

const NO_NAMED_KINDS: NamedKinds = [None; NAMED_KINDS];

/// The query that gives `conn` the client's settings (`wanted`), or
/// `None` when it has them already; the connection is then taken to hold
/// them (if the query fails, it is closed). Allocates nothing when they
/// are the same.
fn sync_settings(
    conn: &mut ServerConn,
    wanted: Option<&Arc<Settings>>,
    metrics: &Metrics,
) -> Option<String> {
    if in_sync(conn.applied.as_ref(), wanted) {
        return None;
    }
    let query = sync_query(changes(
        conn.applied.as_deref(),
        wanted.map(|w| &**w),
        &conn.params,
    ));
    conn.applied = wanted.cloned();
    if query.is_some() {
        metrics.settings_applied.fetch_add(1, Ordering::Relaxed);
    }
    query
}

/// Gives a freshly attached connection the client's startup settings
/// now, waiting for the answer (ahead of statements the proxy replays
/// there); the server's error message if it refuses them.
async fn settings_now(
    att: &mut Attached,
    wanted: Option<&Arc<Settings>>,
    metrics: &Metrics,
) -> Result<Option<String>, ProxyError> {
    if !att.relay.first_send() {
        return Ok(None);
    }
    let Some(query) = sync_settings(&mut att.lease.conn, wanted, metrics) else {
        return Ok(None);
    };
    let mut q = Vec::new();
    FrontendMessage::Query(query.as_bytes()).encode(&mut q);
    run_units(&mut att.lease.conn, &[Bytes::from(q)]).await
}

/// True when something `unit` runs may reset every setting (see
/// [`may_reset_all`]): a simple Query's text, or the statement a Bind
/// runs (named, or the unnamed one; a Parse alone runs nothing).
/// `statements` as after the unit was sent.
fn resets_all(unit: &[u8], statements: &Statements) -> bool {
    frames(unit).any(|f| match FrontendMessage::decode(f) {
        Ok(FrontendMessage::Query(q)) => may_reset_all(q),
        Ok(FrontendMessage::Bind { statement, .. }) => {
            statements.text_of(statement).is_some_and(may_reset_all)
        }
        _ => false,
    })
}

/// True when `unit` is simple Queries only: it can run again as it is
/// (extended messages depend on the unnamed and named statements, which
/// later units may change).
fn simple_queries(unit: &[u8]) -> bool {
    frames(unit).all(|f| f.first() == Some(&b'Q'))
}

/// The name of the client's protocol-level statement that `unit` removes
/// when it is one simple Query of exactly `DEALLOCATE [PREPARE] name`.
/// The server has no statement of that name (the proxy prepares it under
/// its own), so the proxy answers: Rails' adapter sends this when its
/// statement cache evicts. Looked at only for units classified as
/// session state.
fn deallocated_statement<'a>(unit: &'a [u8], statements: &Statements) -> Option<Cow<'a, [u8]>> {
    let mut all = frames(unit);
    let (Some(frame), None) = (all.next(), all.next()) else {
        return None;
    };
    let Ok(FrontendMessage::Query(sql)) = FrontendMessage::decode(frame) else {
        return None;
    };
    match deallocate_target(sql)? {
        Deallocate::Name(name) if statements.get(&name).is_some() => Some(name),
        _ => None,
    }
}

/// What becomes of a `DEALLOCATE` of one of the client's protocol-level
/// statements (see [`deallocated_statement`]).
enum OwnDeallocate {
    /// Not one: the unit goes its way.
    No,
    /// Removed and answered by the proxy.
    Answered,
    /// Answers are still owed on the attached connection: the unit waits
    /// for them (and the transaction status they end with).
    Wait,
    /// In a failed transaction block: the server refuses it (25P02) as
    /// PostgreSQL would, the statement stays; it does not pin.
    Refused,
}

/// True when the unit ends with Flush (an extended batch left open).
fn ends_with_flush(unit: &[u8]) -> bool {
    frames(unit)
        .last()
        .is_some_and(|f| f.first() == Some(&b'H'))
}

/// True when the unit ends with a message that gets a ReadyForQuery.
fn ends_batch(unit: &[u8]) -> bool {
    frames(unit)
        .last()
        .is_some_and(|f| matches!(f.first(), Some(b'S' | b'Q' | b'F')))
}

/// Completes after `limit` (never when `None`), giving it back. The timer
/// is boxed: it exists only while a client idles inside a transaction
/// with a limit set, and would otherwise size every session's future.
async fn expire(limit: Option<Duration>) -> Duration {
    match limit {
        Some(d) => {
            Box::pin(tokio::time::sleep(d)).await;
            d
        }
        None => std::future::pending().await,
    }
}

async fn read_attached(a: Option<&mut Attached>) -> std::io::Result<usize> {
    match a {
        Some(a) => read_into(&mut a.lease.conn.stream, &mut a.lease.conn.buf).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// A session for a client that has logged in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        client: ClientStream,
        cbuf: BytesMut,
        user: String,
        database: String,
        credential: Credential,
        settings: Option<Arc<Settings>>,
        cancel: Arc<CancelSlot>,
    ) -> Self {
        let statement_salt = settings
            .as_deref()
            .map_or(0, |s| s.fingerprint(&shared.hasher));
        Session {
            statement_salt,
            shared,
            client,
            cbuf,
            unit_len: 0,
            to_client: Vec::new(),
            user: user.into_boxed_str(),
            database: database.into_boxed_str(),
            credential,
            settings,
            statements: Statements::default(),
            pools: Vec::new(),
            reader: None,
            queued: None,
            attached: None,
            pinned: false,
            replica_state: None,
            moving: false,
            tx_start: None,
            after_unit: None,
            discard_until_sync: false,
            reads_on_primary: false,
            named_kinds: NO_NAMED_KINDS,
            cancel,
            sequence_values: Weak::new(),
        }
    }

    /// This client's pool on `node`, looked up once per node.
    fn pool_for(&mut self, node: usize) -> Arc<Pool> {
        if self.pools.len() <= node {
            self.pools.resize(node + 1, None);
        }
        match &self.pools[node] {
            Some(p) => p.clone(),
            None => {
                let p = self.shared.pools.pool(&PoolKey {
                    user: self.user.to_string(),
                    database: self.database.to_string(),
                    node,
                });
                self.pools[node] = Some(p.clone());
                p
            }
        }
    }

    /// Serves the client until it leaves or breaks the protocol.
    pub fn run(self) -> impl Future<Output = Result<(), ProxyError>> {
        // The session lives in a box of its own: an `async fn` taking
        // `self` by value would keep two copies of it in its state.
        Box::new(self).run_boxed()
    }

    async fn run_boxed(mut self: Box<Self>) -> Result<(), ProxyError> {
        let result = self.serve().await;
        if let Err(e) = &result {
            let severity = "FATAL";
            let mut out = std::mem::take(&mut self.to_client);
            encode_error(&mut out, severity, e.sqlstate(), &e.to_string());
            let _ = write_all(&mut self.client, &out).await;
        }
        self.detach_on_exit().await;
        result
    }

    async fn serve(&mut self) -> Result<(), ProxyError> {
        loop {
            if self.queued.is_none() && self.process_client().await? {
                return Ok(());
            }
            if self.cbuf.is_empty() && self.cbuf.capacity() > 0 {
                self.cbuf = BytesMut::new();
            }
            if !self.to_client.is_empty() {
                send_all(&mut self.client, &self.to_client).await?;
                self.to_client.clear();
            }
            if self.attached.is_none() && self.to_client.capacity() > 0 {
                // An idle client holds no buffers: its next unit takes one
                // again (see `spare`).
                spare::give(std::mem::take(&mut self.to_client));
                self.statements.shrink();
            }
            let want_client = self.queued.is_none();
            let idle_limit = self.idle_transaction_limit();
            // Reads land in a per-thread buffer and only what arrived is
            // kept: an idle client costs no read buffer.
            tokio::select! {
                biased;
                r = read_attached(self.attached.as_mut()) => {
                    let lost = match r {
                        Ok(0) => ProxyError::io(
                            "server closed the connection",
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ),
                        Err(e) => ProxyError::io("read from server", e),
                        Ok(_) => {
                            self.process_server().await?;
                            continue;
                        }
                    };
                    self.server_lost(lost).await?;
                }
                r = read_into(&mut self.client, &mut self.cbuf), if want_client => {
                    let n = r.map_err(|e| ProxyError::io("read from client", e))?;
                    if n == 0 {
                        return Ok(());
                    }
                }
                limit = expire(idle_limit) => {
                    self.shared
                        .metrics
                        .idle_transaction_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        user = %self.user,
                        database = %self.database,
                        "client idle in a transaction for {limit:?}: disconnected, its transaction rolled back"
                    );
                    return Err(ProxyError::IdleInTransaction(limit));
                }
            }
        }
    }

    /// `idle_transaction_timeout` while the client is idle inside a
    /// transaction: its server has answered everything and waits for it.
    fn idle_transaction_limit(&self) -> Option<Duration> {
        let att = self.attached.as_ref()?;
        // As PostgreSQL, which arms its timer at ReadyForQuery only: not
        // between a Flush-ended batch and its Sync, nor while a unit is
        // half sent.
        if att.tx == TxStatus::Idle
            || !att.relay.is_idle()
            || att.open_batch
            || self.unit_len > 0
            || self.queued.is_some()
        {
            return None;
        }
        self.shared.idle_transaction_timeout()
    }

    /// Handles complete client messages; true when the client said goodbye.
    async fn process_client(&mut self) -> Result<bool, ProxyError> {
        while self.queued.is_none() {
            let start = self.unit_len;
            let Some((tag, len)) = split_message(&self.cbuf[start..], MAX_MESSAGE_LEN)? else {
                break;
            };
            match tag {
                b'X' => return Ok(true),
                b'd' | b'c' | b'f' if start == 0 => {
                    // COPY IN data goes straight to the attached server.
                    let frame = self.cbuf.split_to(len).freeze();
                    if self.attached.is_some() {
                        self.send_unit(frame, StatementKind::Empty).await?;
                    }
                }
                b'P' | b'B' | b'D' | b'E' | b'C' => {
                    FrontendMessage::decode(&self.cbuf[start..start + len])?;
                    self.unit_len += len;
                }
                b'S' | b'H' | b'Q' | b'F' => {
                    FrontendMessage::decode(&self.cbuf[start..start + len])?;
                    // The unit is contiguous in the buffer: one slice, no
                    // copy, shared with a possible retry.
                    let unit = self.cbuf.split_to(start + len).freeze();
                    self.unit_len = 0;
                    self.dispatch(unit, false).await?;
                }
                other => {
                    return Err(ProxyError::Protocol(format!(
                        "unexpected message type {:?} from client",
                        char::from(other)
                    )));
                }
            }
        }
        Ok(false)
    }

    /// Where a unit may run: the strongest kind among its statements
    /// (for Parse/Query: the statement's; Bind: its statement's, looked
    /// up, not classified again), and its named Parses' own kinds. A unit
    /// of transaction control only (`BEGIN`, `COMMIT`...) is
    /// [`StatementKind::TransactionControl`]: the primary, but no write.
    fn classify_unit(&self, unit: &[u8]) -> (StatementKind, NamedKinds) {
        let mut named = NO_NAMED_KINDS;
        // Names of those first named Parses, for Binds later in the unit
        // (a driver's first execution sends Parse and Bind of a name
        // together, before the proxy has recorded the statement).
        let mut names: [&[u8]; NAMED_KINDS] = [&[]; NAMED_KINDS];
        let mut named_seen = 0;
        // The unnamed statement's kind: parsed in this unit, else the
        // client's from before (looked up when first bound).
        let mut last_unnamed: Option<StatementKind> = None;
        let mut session = false;
        let mut sequence = false;
        let mut write = false;
        // Only BEGIN and transaction control among the statements that
        // need the primary: nothing that may call nextval().
        let mut control_only = true;
        let mut begin_ro = false;
        for frame in frames(unit) {
            if !matches!(frame.first(), Some(b'Q' | b'P' | b'B' | b'F')) {
                // Describe, Execute, Close, Sync, Flush: nothing to route by.
                continue;
            }
            let kind = match FrontendMessage::decode_again(frame) {
                Ok(FrontendMessage::Query(q)) => classify_text(&self.shared.classifier, q),
                Ok(FrontendMessage::Parse { name, query, .. }) => {
                    let k = classify_text(&self.shared.classifier, query);
                    if name.is_empty() {
                        last_unnamed = Some(k);
                    } else {
                        if let (Some(slot), Some(n)) =
                            (named.get_mut(named_seen), names.get_mut(named_seen))
                        {
                            *slot = Some(k);
                            *n = name;
                        }
                        named_seen += 1;
                    }
                    // A Parse runs nothing: what it prepares changes
                    // session state or reads sequence values only when
                    // bound (its Bind says so); until then it goes where a
                    // write would.
                    if matches!(
                        k,
                        StatementKind::SessionState | StatementKind::SequenceValue { .. }
                    ) {
                        StatementKind::Write
                    } else {
                        k
                    }
                }
                Ok(FrontendMessage::Bind { statement, .. }) => {
                    if statement.is_empty() {
                        *last_unnamed.get_or_insert_with(|| self.unnamed_kind())
                    } else {
                        // The latest Parse of that name in this unit, else
                        // the recorded statement; unknown: the primary.
                        let seen = named_seen.min(NAMED_KINDS);
                        names[..seen]
                            .iter()
                            .zip(&named[..seen])
                            .rev()
                            .find(|(n, _)| **n == statement)
                            .and_then(|(_, k)| *k)
                            .or_else(|| {
                                // Past the names kept, a Parse may have
                                // redefined it: not known.
                                (named_seen <= NAMED_KINDS)
                                    .then(|| self.statements.get(statement).map(|s| s.kind))
                                    .flatten()
                            })
                            .unwrap_or(StatementKind::Write)
                    }
                }
                Ok(FrontendMessage::FunctionCall(_)) => StatementKind::Write,
                _ => StatementKind::Empty,
            };
            match kind {
                StatementKind::SessionState => session = true,
                StatementKind::SequenceValue { writes } => {
                    sequence = true;
                    write |= writes;
                    control_only &= !writes;
                }
                StatementKind::Begin { read_only: true } => begin_ro = true,
                k @ (StatementKind::Begin { .. } | StatementKind::TransactionControl) => {
                    write |= !k.replica_ok();
                }
                k if !k.replica_ok() => {
                    write = true;
                    control_only = false;
                }
                _ => {}
            }
        }
        let kind = if session {
            StatementKind::SessionState
        } else if sequence {
            // With BEGIN or transaction control too, it is no lone read
            // (a standby could not run the rest).
            StatementKind::SequenceValue { writes: write }
        } else if write && control_only {
            StatementKind::TransactionControl
        } else if write {
            StatementKind::Write
        } else if begin_ro {
            StatementKind::Begin { read_only: true }
        } else {
            StatementKind::Read
        };
        (kind, named)
    }

    /// Keeps the client on its server connection (it changed session
    /// state there). Its statements parsed from now on get names of their
    /// own: a `SET standard_conforming_strings`, `search_path` or
    /// `client_encoding` it made changes what the same text means, so
    /// they must not be answered with another client's server-side
    /// statement of that text (nor leave theirs for others: the pinned
    /// connection is reset with `DISCARD ALL` when the client leaves).
    fn pin(&mut self) {
        // The connection keeps whatever a SET in flight leaves.
        self.after_unit = None;
        if !self.pinned {
            self.pinned = true;
            static PINS: AtomicU64 = AtomicU64::new(0);
            let mut h = self.shared.hasher.build_hasher();
            h.write_u64(self.statement_salt);
            h.write_u64(PINS.fetch_add(1, Ordering::Relaxed));
            self.statement_salt = h.finish();
        }
    }

    /// True when `unit` (which parses named statements) must wait for the
    /// answers still owed on the attached connection to earlier batches:
    /// it parses a name the client has, or a Close of a named statement
    /// is pending there. Whether the name is still taken once they are
    /// in depends on them (a Parse of it that fails, a Close an error
    /// skips, a `DEALLOCATE ALL`), and the proxy must know to refuse a
    /// second Parse (42P05) as PostgreSQL would. Only when a client
    /// pipelines; within an open batch (after a Flush) the unit goes on:
    /// an error there skips it anyway.
    fn parse_waits(&self, unit: &[u8]) -> bool {
        let Some(att) = self.attached.as_ref() else {
            return false;
        };
        if att.relay.is_idle() || att.open_batch {
            return false;
        }
        self.statements.names_aside()
            || frames(unit).any(|f| {
                // The name alone: no decoding of the parameter types.
                let name = match f.split_first() {
                    Some((b'P', rest)) => rest.get(4..).and_then(|r| r.split(|&b| b == 0).next()),
                    _ => None,
                };
                name.is_some_and(|n| !n.is_empty() && self.statements.get(n).is_some())
            })
    }

    /// Where the client's unnamed statement from an earlier unit may run
    /// (none: the primary, which answers 26000).
    fn unnamed_kind(&self) -> StatementKind {
        self.statements
            .text_of(b"")
            .map_or(StatementKind::Write, |q| {
                classify_text(&self.shared.classifier, q)
            })
    }

    /// Handles a `DEALLOCATE` of one of the client's protocol-level
    /// statements (see [`deallocated_statement`]) as PostgreSQL would:
    /// CommandComplete and ReadyForQuery with the client's transaction
    /// status (idle when not attached), without a server or a pin.
    fn deallocate_own(&mut self, unit: &[u8]) -> OwnDeallocate {
        let Some(name) = deallocated_statement(unit, &self.statements) else {
            return OwnDeallocate::No;
        };
        let status = match self.attached.as_mut() {
            None => TxStatus::Idle,
            // Mid-batch (a Query after a Flush): as before, the server.
            Some(att) if att.open_batch => return OwnDeallocate::No,
            Some(att) if !att.relay.is_idle() => return OwnDeallocate::Wait,
            Some(att) if att.tx == TxStatus::Failed => return OwnDeallocate::Refused,
            Some(att) => {
                if let Some(r) = att.retry.take() {
                    self.to_client.extend_from_slice(&r.held);
                }
                att.tx
            }
        };
        self.statements.remove(&name);
        self.named_kinds = NO_NAMED_KINDS;
        BackendMessage::CommandComplete("DEALLOCATE").encode(&mut self.to_client);
        rfq(&mut self.to_client, status);
        OwnDeallocate::Answered
    }

    /// Answers a unit that cannot run with an error (and the
    /// ReadyForQuery the client waits for).
    fn fail_unit(&mut self, unit: &[u8], err: &ProxyError) {
        self.tx_start = None;
        self.after_unit = None;
        if !matches!(err, ProxyError::Cancelled) {
            self.shared
                .metrics
                .routing_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        // Reads joined for a retry are several units: each is answered
        // (a unit ended by Flush gets its error, the rest is skipped).
        let ends = frames(unit)
            .filter(|f| matches!(f.first(), Some(b'S' | b'Q' | b'F')))
            .count();
        for i in 0..ends.max(1) {
            encode_error(
                &mut self.to_client,
                "ERROR",
                err.sqlstate(),
                &err.to_string(),
            );
            if i < ends {
                rfq(&mut self.to_client, TxStatus::Idle);
            }
        }
        if !ends_batch(unit) {
            self.discard_until_sync = true;
        }
    }

    /// The wait for a server connection ended without one: the unit is
    /// answered with why (a cancel request: 57014).
    fn wait_failed(&mut self, unit: &[u8], err: &ProxyError) {
        self.cancel.end_wait();
        self.fail_unit(unit, err);
    }

    async fn dispatch(&mut self, unit: Bytes, force_primary: bool) -> Result<(), ProxyError> {
        if self.discard_until_sync {
            if frames(&unit)
                .last()
                .is_some_and(|f| f.first() == Some(&b'S'))
            {
                self.discard_until_sync = false;
                rfq(&mut self.to_client, TxStatus::Idle);
            }
            return Ok(());
        }
        if let Some(att) = self.attached.as_ref()
            && (att.relay.hidden_pending() || (att.relay.failed() && !att.open_batch))
        {
            // Nothing more runs on the connection until the client's
            // settings are known to be in place (if they are not, it is
            // closed and this unit goes to another).
            self.queued = Some(unit);
            return Ok(());
        }
        let (mut kind, named_kinds) = self.classify_unit(&unit);
        if named_kinds[0].is_some() && self.parse_waits(&unit) {
            self.queued = Some(unit);
            return Ok(());
        }
        self.named_kinds = named_kinds;
        if kind == StatementKind::SessionState {
            match self.deallocate_own(&unit) {
                OwnDeallocate::No => {}
                OwnDeallocate::Answered => return Ok(()),
                OwnDeallocate::Wait => {
                    self.queued = Some(unit);
                    return Ok(());
                }
                OwnDeallocate::Refused => kind = StatementKind::Write,
            }
            if let Some(change) = self.unpinned_state(&unit) {
                match self.attached.as_ref() {
                    None => {
                        // A SET runs as a write would; a reset stays
                        // session state for the relay (a DISCARD ALL
                        // removes the connection's statements) but does
                        // not pin either.
                        if matches!(change, SessionChange::Learn(_)) {
                            kind = StatementKind::Write;
                        }
                        self.after_unit = Some(Box::new(AfterUnit {
                            change,
                            failed: false,
                        }));
                    }
                    Some(att) if att.tx == TxStatus::Idle && !att.open_batch => {
                        // Behind a unit still being answered (tokio-postgres
                        // sends a Close of a dropped statement ahead): it
                        // waits, then runs on a connection of its own.
                        self.queued = Some(unit);
                        return Ok(());
                    }
                    // Inside a transaction: it pins, as before.
                    Some(_) => {}
                }
            }
        }
        // A unit ended by Flush leaves its implicit transaction open for
        // whatever the client sends next (a write, perhaps), and its
        // answers must reach the client before a Sync: it is not routed
        // to a replica (where they would be held) outside a transaction.
        // A read of sequence values a client does not have (it never
        // wrote, or they are gone) needs no primary connection, whose
        // owner's values would have to be discarded first: a standby,
        // where no session has any, gives PostgreSQL's own answer.
        let no_values = kind == StatementKind::SequenceValue { writes: false }
            && self.sequence_values.strong_count() == 0;
        let replica_ok = (kind.replica_ok() || no_values) && !ends_with_flush(&unit);
        let session_mode = self.shared.config.pool_mode == PoolMode::Session;
        // Pinned to a replica by settings made in a read-only transaction
        // there, and now something only the primary can run: the session
        // moves (its settings applied again on the primary) or, if they
        // cannot move, the client is told why.
        if !replica_ok
            && self.pinned
            && let Some(att) = self.attached.as_ref()
            && !att.is_primary
            && att.tx == TxStatus::Idle
            && !att.open_batch
        {
            if !att.relay.is_idle() {
                // Answers still owed (pipelined after COMMIT): decide once
                // they are in and the transaction status is known.
                self.queued = Some(unit);
                return Ok(());
            }
            if let Some(stuck) = self.replica_state.as_ref().and_then(|s| s.stuck.clone()) {
                self.fail_unit(&unit, &ProxyError::PinnedToReplica(stuck));
                return Ok(());
            }
            // The replica connection carries the settings: closed, not pooled.
            self.drop_attached();
            self.pinned = false;
            self.moving = true;
        }
        if self.attached.is_some() && self.after_unit.is_some() {
            // What the unit in flight changed is settled first.
            self.queued = Some(unit);
            return Ok(());
        }
        if let Some(att) = self.attached.as_mut() {
            let compatible = att.tx != TxStatus::Idle
                || self.pinned
                || session_mode
                || att.open_batch
                || att.is_primary
                || replica_ok;
            if !compatible {
                self.queued = Some(unit);
                return Ok(());
            }
            if kind == StatementKind::SessionState && !att.is_primary {
                self.replica_state
                    .get_or_insert_with(Default::default)
                    .record(&unit);
            }
            let joined = !self.pinned
                && !att.open_batch
                && att.tx == TxStatus::Idle
                && att.retry.as_mut().is_some_and(|r| r.join(&unit, kind));
            if !joined && let Some(r) = att.retry.take() {
                self.to_client.extend_from_slice(&r.held);
            }
            if self.tx_start.is_some() {
                if att.tx == TxStatus::InTransaction
                    && att.relay.is_idle()
                    && !att.open_batch
                    && !self.pinned
                    && kind != StatementKind::SessionState
                    && !ends_with_flush(&unit)
                {
                    // A statement of a read-only transaction that has not
                    // read yet: its answers are held, so that if the
                    // replica refuses it, the transaction moves.
                    let mut retry = Retry::new(unit.clone(), false);
                    retry.within_tx = true;
                    att.retry = Some(retry);
                } else {
                    self.tx_start = None;
                }
            }
            if kind == StatementKind::SessionState {
                self.pin();
            }
            return self.send_unit(unit, kind).await;
        }
        let shared = self.shared.clone();
        let topology = &shared.topology;
        let to_replica = !force_primary
            && !session_mode
            && replica_ok
            && !self.reads_on_primary
            && !Settings::serializable(self.settings.as_ref());
        // A node that refuses connections is marked down and the unit is
        // routed once more: during a failover the dead primary is found
        // here before the next health check, and the write waits for the
        // new one instead of failing.
        let rules = shared.rules();
        let mut attempt = 0;
        // From here until a connection is attached, a cancel request
        // ends the wait (see `CancelSlot`).
        self.cancel.begin_wait();
        let (node, is_primary, lease) = loop {
            attempt += 1;
            let current = self.reader.as_ref().map(ReadAffinity::node);
            let routed = match topology.route(to_replica, &rules, current) {
                Some(r) => Some(r),
                // A read of values the client does not have, with no
                // usable standby: the primary answers it as well.
                None if no_values && to_replica => topology.route(false, &rules, current),
                // During a failover there is briefly no primary: hold the
                // write (like a full pool) rather than fail it.
                // Boxed: rare, and its timer would otherwise size every
                // session's future.
                None if !to_replica => {
                    let cancel = &*self.cancel;
                    let waited = Box::pin(async {
                        tokio::select! {
                            p = topology.wait_primary(shared.queue_wait()) => Some(p),
                            () = cancel.cancelled() => None,
                        }
                    })
                    .await;
                    let Some(primary) = waited else {
                        self.wait_failed(&unit, &ProxyError::Cancelled);
                        return Ok(());
                    };
                    primary.map(|p| (p, true))
                }
                None => None,
            };
            if let Some((node, false)) = routed
                && to_replica
                && rules.choice == ReplicaChoice::Sticky
                && current != Some(node)
            {
                // First read, or the old replica became unusable: the
                // client moves (a fallback to the primary keeps the claim,
                // so it returns once its replica is usable again).
                self.reader = Some(ReadAffinity::new(topology.clone(), node));
            }
            let Some((node, is_primary)) = routed else {
                let err = ProxyError::NoNode(if to_replica { "readable" } else { "primary" });
                self.wait_failed(&unit, &err);
                return Ok(());
            };
            let pool = self.pool_for(node);
            // The connection that holds the client's `nextval()` values is
            // busy with another client's unit that leaves them alone (a
            // read, a Close): a unit that reads them waits for it. Boxed:
            // rare, and its timer would otherwise size every session's
            // future.
            let mut wait_ms = u32::MAX;
            if is_primary
                && sequence::reads_values(kind)
                && sequence::node_of(&self.sequence_values) == Some(node)
            {
                let until = tokio::time::Instant::now() + shared.queue_wait();
                let mine = &self.sequence_values;
                let cancel = &*self.cancel;
                let waited = Box::pin(async {
                    tokio::select! {
                        _ = shared.pools.wait_for_idle(&pool, mine, until) => true,
                        () = cancel.cancelled() => false,
                    }
                })
                .await;
                if !waited {
                    self.wait_failed(&unit, &ProxyError::Cancelled);
                    return Ok(());
                }
                // What is left of the queue wait, for a free connection.
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                wait_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX - 1);
            }
            match self
                .shared
                .pools
                .acquire_in(
                    &pool,
                    topology,
                    &self.credential,
                    Some(&*self.cancel),
                    sequence::Want {
                        mine: is_primary.then_some(&self.sequence_values),
                        will_write: is_primary
                            && self.after_unit.is_none()
                            && (executes(&unit) || ends_with_flush(&unit)),
                        wait_ms,
                    },
                )
                .await
            {
                Ok(lease) => break (node, is_primary, lease),
                Err(ProxyError::Cancelled) => {
                    tracing::debug!(
                        "a client cancelled its statement while it waited for a server connection"
                    );
                    self.wait_failed(&unit, &ProxyError::Cancelled);
                    return Ok(());
                }
                Err(e) if attempt == 1 && e.is_unreachable() => {
                    tracing::info!(error = %e, "server unreachable; marking it down and routing again");
                    topology.suspect(node);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot get a server connection");
                    self.wait_failed(&unit, &e);
                    return Ok(());
                }
            }
        };
        let target = CancelTarget {
            addr: lease.conn.addr,
            pid: lease.conn.pid,
            key: lease.conn.key,
        };
        if !self.cancel.attach(target) {
            // Cancelled just as the connection came: it goes back unused
            // (nothing of the unit ran), the client has 57014.
            self.shared.pools.release(lease);
            self.fail_unit(&unit, &ProxyError::Cancelled);
            return Ok(());
        }
        if kind == StatementKind::SessionState && self.after_unit.is_none() {
            self.pin();
        }
        topology.outstanding[node].fetch_add(1, Ordering::Relaxed);
        if let Some(c) = self.shared.metrics.routed.get(node) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let retry = (!is_primary).then(|| {
            let reads = !self.pinned
                && matches!(kind, StatementKind::Read | StatementKind::Empty)
                && simple_queries(&unit);
            Retry::new(unit.clone(), reads)
        });
        if self.to_client.capacity() == 0 {
            self.to_client = spare::take();
        }
        self.statements.new_connection();
        self.attached = Some(Attached {
            lease,
            relay: Relay::default(),
            tx: TxStatus::Idle,
            open_batch: false,
            is_primary,
            retry,
            since: Instant::now(),
        });
        if self.tx_start.as_ref().is_some_and(|s| s.is_replay())
            && let Err(e) = Box::pin(self.replay_tx_start()).await
        {
            // The client's transaction is gone (it ended on the replica).
            self.drop_attached();
            self.fail_unit(&unit, &e);
            return Ok(());
        }
        if std::mem::take(&mut self.moving) {
            // Boxed: rare, and its state would otherwise size every
            // session's future.
            if let Err(e) = Box::pin(self.move_state()).await {
                // The connection holds part of the settings: closed.
                self.drop_attached();
                self.pinned = false;
                tracing::info!(error = %e, "could not move a session's settings to the primary");
                self.fail_unit(&unit, &e);
                return Ok(());
            }
        }
        match self.send_unit(unit, kind).await {
            Err(e) if e.is_unreachable() => self.server_lost(e).await,
            other => other,
        }
    }

    /// Sends `unit` to the attached server; `unit_kind` is how it was
    /// classified when routed (its named Parses' kinds are in
    /// `named_kinds`).
    async fn send_unit(&mut self, unit: Bytes, unit_kind: StatementKind) -> Result<(), ProxyError> {
        let named_kinds = std::mem::replace(&mut self.named_kinds, NO_NAMED_KINDS);
        let Some(att) = self.attached.as_mut() else {
            return Ok(());
        };
        // Another client's `nextval()` values on the connection go before
        // the client's first unit outside a transaction that runs
        // something there (a transaction's first is its BEGIN) or opens a
        // batch: from then on what runs there is the client's (see
        // `sequence`). A plain SET or reset calls no `nextval()` and leaves
        // them alone; a Parse alone runs nothing.
        let runs = executes(&unit);
        let carried = self.after_unit.is_some();
        let mine = sequence::is_mine(att.lease.conn.values.as_ref(), &self.sequence_values);
        let touches = att.is_primary && !carried && (runs || ends_with_flush(&unit));
        let discard = touches
            && !mine
            && att.lease.conn.values.is_some()
            && att.tx == TxStatus::Idle
            && !att.open_batch;
        if discard && !att.relay.is_idle() {
            // Behind answers still owed: sent once they are in.
            self.queued = Some(unit);
            return Ok(());
        }
        let mut named = 0;
        let mut to_server = spare::take();
        // Only between transactions (and batches): the query has a
        // transaction block of its own. Either the connection is given the
        // client's settings (first unit), or the client's own reset of
        // them is undone (as PostgreSQL resets to startup values).
        let settings_query = if att.tx == TxStatus::Idle && att.relay.is_idle() && !att.open_batch {
            if att.relay.first_send() {
                sync_settings(
                    &mut att.lease.conn,
                    self.settings.as_ref(),
                    &self.shared.metrics,
                )
                .map(|q| (q, false))
            } else if att.relay.take_restore() {
                self.settings
                    .as_deref()
                    .and_then(restore_query)
                    .map(|q| (q, true))
            } else {
                None
            }
        } else {
            None
        };
        let settings = settings_query.is_some();
        let hidden = match settings_query {
            Some((query, restore)) if discard => {
                Some((format!("{query}; {}", sequence::DISCARD), restore))
            }
            None if discard => Some((sequence::DISCARD.to_string(), false)),
            other => other,
        };
        if discard {
            att.lease.conn.values = None;
            self.shared
                .metrics
                .sequence_discarded
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some((query, restore)) = hidden {
            FrontendMessage::Query(query.as_bytes()).encode(&mut to_server);
            att.relay.hidden_query(restore);
            if settings && may_end_block(&unit, &self.statements) {
                // Should the query fail, the unit's first statement would
                // end its failed block and the rest would run without the
                // settings: the unit waits for the outcome (a round trip;
                // rare: transaction control first, settings to change).
                att.relay.hold_unit();
                write_all(&mut att.lease.conn.stream, &to_server).await?;
                self.queued = Some(unit);
                return Ok(());
            }
            // Pipelined ahead of the unit: no round trip of its own (if it
            // fails, every statement of the unit is refused in its failed
            // block).
        }
        if runs
            && sequence::reads_values(unit_kind)
            && !mine
            && sequence::ever_wrote(&self.sequence_values)
        {
            // Its values are gone: PostgreSQL's answer (55000, or a value
            // of this unit's own nextval()) comes with why (held with the
            // answers of a read that may run again elsewhere).
            let out = match att.retry.as_mut() {
                Some(r) => &mut r.held,
                None => &mut self.to_client,
            };
            BackendMessage::NoticeResponse(ErrorFields::new(
                "NOTICE",
                "55000",
                sequence::LOST_NOTICE,
            ))
            .encode(out);
            self.shared
                .metrics
                .sequence_lost
                .fetch_add(1, Ordering::Relaxed);
        }
        if touches && runs {
            match att.lease.conn.values.as_ref() {
                Some(v) if mine => v.touch(),
                _ => {
                    let values = sequence::Owner::new(att.lease.node);
                    self.sequence_values = Arc::downgrade(&values);
                    att.lease.conn.values = Some(values);
                }
            }
        }
        for frame in frames(&unit) {
            if unit_kind != StatementKind::SessionState {
                // Execute, Sync, Flush: relayed as they are.
                let out = match att.retry.as_mut() {
                    Some(r) => &mut r.held,
                    None => &mut self.to_client,
                };
                if att
                    .relay
                    .send_plain(frame, &mut self.statements, &mut to_server, out)
                {
                    match frame.first() {
                        Some(b'H') => att.open_batch = true,
                        Some(b'S') => att.open_batch = false,
                        _ => {}
                    }
                    continue;
                }
            }
            let msg = FrontendMessage::decode_again(frame)?;
            let kind = match &msg {
                FrontendMessage::Flush => {
                    att.open_batch = true;
                    StatementKind::Empty
                }
                FrontendMessage::Sync => {
                    att.open_batch = false;
                    StatementKind::Empty
                }
                // Only a named statement keeps its kind (for its Binds),
                // as classified when the unit was routed (past the first
                // few of a unit, classified again: a cache hit).
                FrontendMessage::Parse { name, query, .. } if !name.is_empty() => {
                    let known = named_kinds.get(named).copied().flatten();
                    named += 1;
                    known.unwrap_or_else(|| classify_text(&self.shared.classifier, query))
                }
                // Tells the relay the unit changes session state (it may
                // be a DISCARD ALL or DEALLOCATE).
                _ if unit_kind == StatementKind::SessionState => StatementKind::SessionState,
                _ => StatementKind::Empty,
            };
            let out = match att.retry.as_mut() {
                Some(r) => &mut r.held,
                None => &mut self.to_client,
            };
            att.relay.send(
                frame,
                &msg,
                kind,
                att.tx,
                &mut self.statements,
                &mut att.lease.conn.prepared,
                StatementNaming {
                    hasher: &self.shared.hasher,
                    salt: self.statement_salt,
                },
                &mut to_server,
                out,
            )?;
        }
        if unit_kind == StatementKind::SessionState
            && self.after_unit.is_none()
            && resets_all(&unit, &self.statements)
        {
            // A pinned (or session-mode) client's reset: settled once it
            // is answered (see `finish_pinned_reset`); what it pipelined
            // behind waits until then.
            self.after_unit = Some(Box::new(AfterUnit {
                change: SessionChange::Reset(Resets { settings: true }),
                failed: false,
            }));
        }
        if !to_server.is_empty() {
            send_all(&mut att.lease.conn.stream, &to_server).await?;
        }
        spare::give(to_server);
        Ok(())
    }

    async fn process_server(&mut self) -> Result<(), ProxyError> {
        let Some(att) = self.attached.as_mut() else {
            return Ok(());
        };
        let conn = &mut att.lease.conn;
        let hidden_before = att.relay.hidden_pending();
        let mut done = 0;
        {
            let out = match att.retry.as_mut() {
                Some(r) => &mut r.held,
                None => &mut self.to_client,
            };
            // Most of what arrived goes to the client: one allocation.
            out.reserve(conn.buf.len());
        }
        while let Some((tag, len)) = split_message(&conn.buf[done..], MAX_MESSAGE_LEN)? {
            let frame = &conn.buf[done..done + len];
            done += len;
            if tag == b'E' {
                if let Some(after) = self.after_unit.as_mut() {
                    after.failed = true;
                }
                if let Some(state) = self.replica_state.as_mut() {
                    state.failed();
                }
            }
            let out = match att.retry.as_mut() {
                Some(r) => {
                    if tag == b'E' {
                        let code = error_code(&frame[5..]);
                        if refused_by_replica(code) {
                            r.read_only_error = true;
                            r.feature_refused |= code == Some("0A000");
                        }
                    }
                    &mut r.held
                }
                None => &mut self.to_client,
            };
            if let Some(status) =
                att.relay
                    .receive(frame, &mut self.statements, &mut conn.prepared, out)?
            {
                att.tx = status;
            }
        }
        conn.buf.advance(done);
        if let Some(r) = att.retry.as_ref()
            && r.held.len() > HOLD_LIMIT
            && let Some(r) = att.retry.take()
        {
            self.to_client.extend_from_slice(&r.held);
        }
        if hidden_before && att.relay.release_unit() {
            return Box::pin(self.resume_held_unit()).await;
        }
        if !att.relay.is_idle() || att.open_batch {
            // The settings are in place: what waited for them goes on
            // (if they failed, only the rest of an open batch does; the
            // rest waits for the connection to be closed).
            if hidden_before
                && !att.relay.hidden_pending()
                && let Some(unit) = self.queued.take()
            {
                Box::pin(self.dispatch(unit, false)).await?;
            }
            return Ok(());
        }
        // Every answer owed is in: the held answers are final unless the
        // connection can go back and the unit be retried elsewhere.
        if let Some(state) = self.replica_state.as_mut() {
            state.settle();
        }
        let retry = att.retry.take();
        if att.relay.failed() {
            if att.relay.restore_failed() {
                self.settings_refused(retry, false);
                return Err(ProxyError::SessionStateLost);
            }
            let cancelled = att.relay.settings_cancelled();
            // The client's settings could not be applied; nothing of the
            // unit ran (its statements were refused in the failed block).
            // Without a read to run again, the client has the error and
            // the ReadyForQuery.
            if let Some(unit) = self.settings_refused(retry, cancelled) {
                Box::pin(self.dispatch(unit, true)).await?;
            }
            if let Some(unit) = self.queued.take() {
                Box::pin(self.dispatch(unit, false)).await?;
            }
            return Ok(());
        }
        let session_mode = self.shared.config.pool_mode == PoolMode::Session;
        if att.tx != TxStatus::Idle || self.pinned || session_mode {
            // A transaction on a replica may still move to the primary
            // while it has not read (see `tx_start`).
            let movable = !self.pinned && !session_mode && !att.is_primary;
            let tx = att.tx;
            if self.after_unit.is_some() && (self.pinned || session_mode) {
                Box::pin(self.finish_pinned_reset(tx)).await?;
            }
            match retry {
                Some(r) if movable && r.feature_refused => {
                    return Box::pin(self.move_transaction(r)).await;
                }
                Some(r) => {
                    let kept = movable
                        && tx == TxStatus::InTransaction
                        && self
                            .tx_start
                            .get_or_insert_with(Default::default)
                            .push(&r.unit);
                    if !kept {
                        self.tx_start = None;
                    }
                    self.to_client.extend_from_slice(&r.held);
                }
                None => self.tx_start = None,
            }
            // A unit that waited for this answer (pipelined behind a
            // `BEGIN READ ONLY` on a replica, say) now belongs to the
            // transaction and goes to the same server.
            if let Some(unit) = self.queued.take() {
                Box::pin(self.dispatch(unit, false)).await?;
            }
            return Ok(());
        }
        if self.after_unit.is_some() {
            Box::pin(self.settle_after_unit()).await?;
            if self.pinned {
                // The values could not be read back: the client keeps
                // this connection, which holds them.
                if let Some(unit) = self.queued.take() {
                    Box::pin(self.dispatch(unit, false)).await?;
                }
                return Ok(());
            }
        }
        self.detach();
        match retry {
            Some(mut r) if r.read_only_error && !r.within_tx => {
                self.shared
                    .metrics
                    .retries_on_primary
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!("read-only error on a replica: retrying on the primary");
                let unit = r.rerun(&mut self.statements);
                self.dispatch(unit, true).await?;
            }
            Some(mut r) if self.to_client.is_empty() => {
                // The held answers become what goes to the client.
                std::mem::swap(&mut self.to_client, &mut r.held);
            }
            Some(r) => self.to_client.extend_from_slice(&r.held),
            None => {}
        }
        if let Some(unit) = self.queued.take() {
            Box::pin(self.dispatch(unit, false)).await?;
        }
        Ok(())
    }

    /// The hidden query sent alone ahead of the queued unit is answered:
    /// with the settings in place the unit goes to the same connection;
    /// if they failed it is run on the primary (a replica refused them)
    /// or answered with the error.
    async fn resume_held_unit(&mut self) -> Result<(), ProxyError> {
        let Some(unit) = self.queued.take() else {
            return Ok(());
        };
        let Some(att) = self.attached.as_mut() else {
            return Ok(());
        };
        if !att.relay.failed() {
            let (kind, named_kinds) = self.classify_unit(&unit);
            self.named_kinds = named_kinds;
            return match self.send_unit(unit, kind).await {
                Err(e) if e.is_unreachable() => self.server_lost(e).await,
                other => other,
            };
        }
        let retry = att.retry.take();
        if att.relay.restore_failed() {
            self.settings_refused(retry, false);
            return Err(ProxyError::SessionStateLost);
        }
        let cancelled = att.relay.settings_cancelled();
        match self.settings_refused(retry, cancelled) {
            Some(unit) => Box::pin(self.dispatch(unit, true)).await,
            None => {
                // The error is the unit's answer; its ReadyForQuery comes
                // with its Sync.
                if ends_batch(&unit) {
                    rfq(&mut self.to_client, TxStatus::Idle);
                } else {
                    self.discard_until_sync = true;
                }
                Ok(())
            }
        }
    }

    /// The attached connection could not take the client's settings: it
    /// is closed (in a failed block, holding part of them). A read held
    /// for a retry (on a replica) is returned, its answers (the error)
    /// dropped, to run on the primary, where this client's reads go from
    /// now on; otherwise (or when the client's own cancel stopped the
    /// query: `cancelled`) the client has the error.
    fn settings_refused(&mut self, retry: Option<Retry>, cancelled: bool) -> Option<Bytes> {
        self.drop_attached();
        self.pinned = false;
        self.shared
            .metrics
            .settings_failed
            .fetch_add(1, Ordering::Relaxed);
        match retry {
            Some(r) if cancelled => {
                self.to_client.extend_from_slice(&r.held);
                None
            }
            Some(mut r) => {
                tracing::info!(
                    user = %self.user,
                    "a replica refused a client's startup settings: its reads run on the primary"
                );
                self.reads_on_primary = true;
                Some(r.rerun(&mut self.statements))
            }
            None => {
                tracing::info!(
                    "could not apply a client's startup settings on a server connection: closed it"
                );
                None
            }
        }
    }

    /// The attached server connection broke (the backend was terminated,
    /// the server crashed or went away). A read routed to a replica whose
    /// answers are all still held (nothing reached the client) runs again
    /// on the primary, once; anything else fails the client as before.
    async fn server_lost(&mut self, err: ProxyError) -> Result<(), ProxyError> {
        // Decided without awaiting: nothing of the broken connection is
        // kept in the session's future (every idle client pays its size).
        let unit = self.take_lost_read(err)?;
        Box::pin(self.dispatch(unit, true)).await
    }

    /// Applies the settings made on a replica to the attached (primary)
    /// connection and pins the session to it.
    async fn move_state(&mut self) -> Result<(), ProxyError> {
        let (Some(mut state), Some(att)) = (self.replica_state.take(), self.attached.as_mut())
        else {
            return Ok(());
        };
        state.settle();
        // The client's startup settings first, then what it changed.
        if let Some(message) =
            settings_now(att, self.settings.as_ref(), &self.shared.metrics).await?
        {
            return Err(ProxyError::StateNotMoved(message));
        }
        replay(&mut att.lease.conn, &state.replayable).await?;
        if state
            .replayable
            .iter()
            .any(|u| resets_all(u, &self.statements))
        {
            // A RESET ALL made there: the startup settings come back
            // before the next unit, as they did on the replica.
            att.relay.restore_settings();
        }
        if !state.replayable.is_empty() {
            self.pin();
        }
        Ok(())
    }

    /// Detaches the attached connection without pooling it (it is
    /// closed, its pool slot freed) and returns what it held.
    fn drop_attached(&mut self) -> Option<Attached> {
        self.tx_start = None;
        self.after_unit = None;
        let att = self.attached.take()?;
        self.shared.topology.outstanding[att.lease.node].fetch_sub(1, Ordering::Relaxed);
        self.cancel.detach();
        Some(att)
    }

    /// Detaches the broken connection (closing it, freeing its pool slot)
    /// and returns the read to run again, or `err` when there is none.
    fn take_lost_read(&mut self, err: ProxyError) -> Result<Bytes, ProxyError> {
        let start = self.tx_start.take();
        let Some(mut att) = self.drop_attached() else {
            return Err(err);
        };
        let node = att.lease.node;
        let Some(mut retry) = att.retry.take() else {
            return Err(err);
        };
        if retry.within_tx && start.is_none() {
            return Err(err);
        }
        // Within a read-only transaction that has not read yet, the
        // statements that opened it run again first (see `tx_start`).
        self.tx_start = start.map(|mut s| {
            s.set_replay();
            s
        });
        self.shared
            .metrics
            .retries_on_primary
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(node, error = %err, "lost a replica connection during a read: running it on the primary");
        Ok(retry.rerun(&mut self.statements))
    }

    /// Gives the idle server connection back to its pool.
    fn detach(&mut self) {
        self.tx_start = None;
        if let Some(att) = self.attached.take() {
            self.shared.topology.outstanding[att.lease.node].fetch_sub(1, Ordering::Relaxed);
            self.shared.metrics.hold_time.observe(att.since.elapsed());
            self.cancel.detach();
            self.shared.pools.release(att.lease);
        }
    }

    /// On disconnect: an idle connection without session state goes back;
    /// one with session state is reset first; one mid-transaction or
    /// mid-request is closed.
    async fn detach_on_exit(&mut self) {
        let Some(att) = self.attached.as_mut() else {
            return;
        };
        let idle = att.relay.is_idle() && att.tx == TxStatus::Idle && !att.open_batch;
        if !idle {
            if let Some(att) = self.attached.take() {
                self.shared.topology.outstanding[att.lease.node].fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let needs_reset = self.pinned || self.shared.config.pool_mode == PoolMode::Session;
        if needs_reset {
            let conn = &mut att.lease.conn;
            // DISCARD ALL discards the sequence values too.
            conn.values = None;
            let mut q = Vec::new();
            FrontendMessage::Query(b"DISCARD ALL").encode(&mut q);
            let ok = async {
                write_all(&mut conn.stream, &q).await?;
                loop {
                    let len = read_message(&mut conn.stream, &mut conn.buf).await?;
                    let frame = conn.buf.split_to(len);
                    match frame.first() {
                        Some(b'Z') => return Ok::<bool, ProxyError>(frame.get(5) == Some(&b'I')),
                        Some(b'E') => return Ok(false),
                        _ => {}
                    }
                }
            }
            .await;
            if !matches!(ok, Ok(true)) {
                if let Some(att) = self.attached.take() {
                    self.shared.topology.outstanding[att.lease.node]
                        .fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
            conn.prepared.clear();
            // Settings are back to the connection's defaults.
            conn.applied = None;
        }
        self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_frames_and_batch_end() {
        let mut unit = Vec::new();
        FrontendMessage::Parse {
            name: b"",
            query: b"SELECT 1",
            param_types: vec![],
        }
        .encode(&mut unit);
        FrontendMessage::Sync.encode(&mut unit);
        let tags: Vec<u8> = frames(&unit).filter_map(|f| f.first().copied()).collect();
        assert_eq!(tags, b"PS");
        assert!(ends_batch(&unit));
        let mut flush = Vec::new();
        FrontendMessage::Flush.encode(&mut flush);
        assert!(!ends_batch(&flush));
    }

    /// Text the classifier cannot read (not UTF-8: another client
    /// encoding) goes to the primary, whatever it says.
    #[test]
    fn text_in_another_encoding_is_a_write() {
        let c = Classifier::default();
        assert_eq!(classify_text(&c, b"SELECT 1"), StatementKind::Read);
        assert_eq!(classify_text(&c, b"SELECT 'caf\xe9'"), StatementKind::Write);
    }

    /// Every connected client keeps its session future in memory: it
    /// must stay small (a regression shows up as memory per idle client).
    #[tokio::test]
    async fn session_future_stays_small() -> Result<(), Box<dyn std::error::Error>> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let c = ClientStream::Plain(tokio::net::TcpStream::connect(l.local_addr()?).await?);
        let config = crate::ProxyConfig::new(l.local_addr()?, Vec::new(), Default::default());
        let s = Session::new(
            Arc::new(Shared::new(config)),
            c,
            BytesMut::new(),
            String::new(),
            String::new(),
            crate::Credential::password(""),
            None,
            Arc::default(),
        );
        // A large client stream (e.g. a TLS connection held inline) belongs
        // in a box: every idle client pays for this size.
        assert!(
            std::mem::size_of::<Session>() <= 768,
            "Session is {} bytes",
            std::mem::size_of::<Session>()
        );
        let run = s.run();
        assert!(
            std::mem::size_of_val(&run) <= 1024,
            "{}",
            std::mem::size_of_val(&run)
        );
        Ok(())
    }
}

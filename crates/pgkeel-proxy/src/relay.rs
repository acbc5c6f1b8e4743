//! The extended-protocol bookkeeping between one client and the server it
//! is attached to, without I/O.
//!
//! Named prepared statements survive transaction pooling: a client's
//! `Parse` of statement `s1` is recorded per client and sent to servers
//! under a name derived from its text (`pgkeel_<hash>`), so identical
//! statements of different clients share one server-side statement and
//! names never collide. Before a `Bind`/`Describe` of a statement the
//! server lacks, the `Parse` is injected and its `ParseComplete` hidden;
//! a `Parse` the server already has, or a `Close` of a named statement, is
//! answered by the proxy itself; a `DEALLOCATE ALL` or `DISCARD ALL` the
//! server completes removes the client's statements as in PostgreSQL.
//! Names behave as in PostgreSQL: a `Parse` of a name the client has is
//! refused by the server itself (42P05, see `Relay::duplicate`), and a
//! named `Parse` that fails or is skipped, or a `Close` that is skipped,
//! leaves the client's statements as they were. A client reaches only its
//! own statements: a `Bind`/`Describe` of a `pgkeel_` name it has not
//! parsed is refused by the server (26000, see `Relay::missing`), and an
//! error naming a statement's server-side name names the client's.
//! Every request sent is queued as an
//! expectation so answers reach the client in order, errors skip to the
//! next `Sync` exactly as PostgreSQL does, and COPY in the extended
//! protocol (where the server ignores `Sync` while copying) stays counted.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use pgkeel_sql::StatementKind;
use pgkeel_wire::backend::{encode_error, error_code, error_message};
use pgkeel_wire::{FrontendMessage, TxStatus};

use crate::ProxyError;
use crate::server::StatementIds;

/// A client's named prepared statement.
#[derive(Debug)]
pub struct ClientStatement {
    /// Id of the statement text (see [`statement_id`]).
    pub id: u64,
    /// Name used on servers.
    pub server_name: String,
    /// The Parse frame sent to servers (under `server_name`).
    pub parse: Bytes,
    /// Where it may run.
    pub kind: StatementKind,
    /// Order in which named statements were recorded (from 1, across
    /// clients): a `DEALLOCATE ALL` removes only those recorded before it
    /// was sent (see [`Relay::receive`]).
    pub seq: u64,
}

/// How a client's statements are named on servers: the proxy's keyed
/// hasher and a fingerprint of the client's startup settings (`salt`, 0
/// without any), since the same bytes are another statement under another
/// `client_encoding`, `standard_conforming_strings` or `search_path`.
#[derive(Debug, Clone, Copy)]
pub struct StatementNaming<'a> {
    /// The proxy's keyed hasher.
    pub hasher: &'a RandomState,
    /// The client's settings fingerprint.
    pub salt: u64,
}

/// Identity of a statement's text (the bytes the client sent, in its
/// encoding), parameter types and the client's settings: identical
/// statements of clients with the same settings share one server-side
/// statement.
pub fn statement_id(naming: StatementNaming<'_>, query: &[u8], param_types: &[u32]) -> u64 {
    let mut h = naming.hasher.build_hasher();
    h.write_u64(naming.salt);
    h.write(query);
    h.write_u8(0);
    for t in param_types {
        h.write_u32(*t);
    }
    h.finish()
}

impl ClientStatement {
    /// Builds the server-side form of `Parse(name, query, types)`.
    pub fn new(
        naming: StatementNaming<'_>,
        query: &[u8],
        param_types: &[u32],
        kind: StatementKind,
    ) -> Self {
        let id = statement_id(naming, query, param_types);
        let server_name = format!("pgkeel_{id:016x}");
        let mut parse = Vec::with_capacity(query.len() + 40);
        FrontendMessage::Parse {
            name: server_name.as_bytes(),
            query,
            param_types: param_types.to_vec(),
        }
        .encode(&mut parse);
        ClientStatement {
            id,
            server_name,
            parse: parse.into(),
            kind,
            seq: 0,
        }
    }

    /// Gives the statement a server-side statement of its own (not
    /// shared with the other names of its text), for a Parse the
    /// server must answer although it has the text (see
    /// [`Relay::send`]): if it fails or is skipped there, the name it
    /// leaves on the server does not exist, as the client's does not.
    /// Its `seq` must be set: it tells the statement apart.
    fn make_own(&mut self) {
        // Re-encodes the Parse under the new name (built by the proxy:
        // it decodes).
        let Ok(FrontendMessage::Parse {
            query, param_types, ..
        }) = FrontendMessage::decode(&self.parse)
        else {
            return;
        };
        let mut h = foldhash::fast::FixedState::with_seed(self.id).build_hasher();
        h.write_u64(self.seq);
        let id = h.finish();
        let server_name = format!("pgkeel_{id:016x}");
        let mut parse = Vec::with_capacity(self.parse.len());
        FrontendMessage::Parse {
            name: server_name.as_bytes(),
            query,
            param_types,
        }
        .encode(&mut parse);
        self.id = id;
        self.parse = parse.into();
        self.server_name = server_name;
    }
}

/// True when `query` may remove prepared statements (`DISCARD ALL`,
/// `DEALLOCATE`): a case-insensitive look for the keywords, so a false
/// positive (a column named `discard`) only costs a re-prepare. Works on
/// the bytes sent, whatever the client's encoding: keywords are ASCII
/// bytes in every client encoding (a multibyte character's trail bytes
/// that look like one only make another false positive).
pub fn may_deallocate(query: &[u8]) -> bool {
    query.windows(7).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(b"discard")
            || (w.eq_ignore_ascii_case(b"dealloc")
                && query
                    .get(i..i + 10)
                    .is_some_and(|d| d.eq_ignore_ascii_case(b"deallocate")))
    })
}

/// True when `msg`, in a unit classified as changing session state, may
/// remove prepared statements (see [`may_deallocate`]): a Query or Parse
/// by its text, a Bind by the text of the statement it runs.
fn deallocates(msg: &FrontendMessage<'_>, statements: &Statements) -> bool {
    match msg {
        FrontendMessage::Query(q) | FrontendMessage::Parse { query: q, .. } => may_deallocate(q),
        FrontendMessage::Bind { statement, .. } => {
            statements.text_of(statement).is_some_and(may_deallocate)
        }
        _ => false,
    }
}

/// True when `frame` is the CommandComplete of a statement that removed
/// every prepared statement of the session (`DEALLOCATE ALL`, `DISCARD
/// ALL`): the server says it ran, so the client's statements are gone as
/// in PostgreSQL.
fn removed_all(frame: &[u8]) -> bool {
    matches!(frame.get(5..), Some(b"DEALLOCATE ALL\0" | b"DISCARD ALL\0"))
}

/// True when the unit's first statement may run in a failed transaction
/// block (see [`pgkeel_sql::block_exit`]): then it must not follow a
/// hidden query that may fail, since it would end the failed block and
/// what comes after it would run without the client's settings. A Bind
/// of a statement the unit did not parse counts by the statement's
/// recorded kind (transaction control), an unknown one as "may".
pub fn may_end_block(unit: &[u8], statements: &Statements) -> bool {
    for frame in crate::io::frames(unit) {
        match FrontendMessage::decode(frame) {
            Ok(FrontendMessage::Query(q) | FrontendMessage::Parse { query: q, .. }) => {
                return pgkeel_sql::block_exit::may_end_block(q);
            }
            Ok(FrontendMessage::Bind { statement: [], .. }) => {
                // The client's unnamed statement from an earlier unit,
                // parsed again ahead of it (none: the Bind fails).
                return statements
                    .text_of(b"")
                    .is_some_and(pgkeel_sql::block_exit::may_end_block);
            }
            Ok(FrontendMessage::Bind { statement, .. }) => {
                return statements
                    .get(statement)
                    .is_none_or(|s| s.kind == StatementKind::TransactionControl);
            }
            Ok(FrontendMessage::FunctionCall(_)) => return false,
            // Describe, Close, Execute, Flush, Sync run no statement.
            _ => {}
        }
    }
    false
}

/// A client's prepared statements, which outlive the server connections
/// it is given.
///
/// Named ones by client-side name, as the bytes it sent (a name in the
/// client's encoding need not be UTF-8; looked up by `&[u8]` without
/// allocating). The unnamed one as the Parse the client sent: PostgreSQL
/// keeps it until the next unnamed Parse or simple Query, and drivers use
/// it across a Sync (asyncpg with `statement_cache_size=0`, pgx's
/// describe-exec mode, libpq's `PQprepare(conn, "", ...)`: Parse +
/// Describe + Sync, then Bind + Execute + Sync), by when the client may
/// have another server connection, whose unnamed statement is another
/// client's: the Parse is sent again there first.
#[derive(Debug, Default)]
pub struct Statements {
    /// Looked up for every Bind: a fast seeded hash (SipHash cost as much
    /// as the rest of classifying a Bind).
    named: HashMap<Box<[u8]>, Arc<ClientStatement>, foldhash::fast::RandomState>,
    /// The rest, which many clients never need: boxed (every idle client
    /// pays for the session's size).
    more: Option<Box<More>>,
}

/// A client's statement name kept aside while answers are owed before
/// its message (see [`More::aside`]), with the statement a Close removed.
type Aside = (Box<[u8]>, Option<Arc<ClientStatement>>);

/// The less used part of a client's [`Statements`].
#[derive(Debug, Default)]
struct More {
    /// The Parse frame of the unnamed statement (empty: none); its buffer
    /// is reused, so recording it costs a copy, not an allocation.
    unnamed: Vec<u8>,
    /// The names of the [`Expect::Duplicate`] and [`Expect::Closed`] in
    /// the attached connection's queue, in order, with the statement the
    /// Close removed: empty but while a client pipelines them. Kept here
    /// (the relay of every attached client would pay for it otherwise)
    /// and cleared when another connection is attached (see
    /// [`Statements::new_connection`]).
    aside: VecDeque<Aside>,
    /// The statements forgotten while answers are owed on the attached
    /// connection (their Parse failed or was skipped), most recent last:
    /// a Bind or Describe of one sent before that was known gets the
    /// server's 26000 naming its server-side name, given back the
    /// client's (see [`Statements::client_name`]). Cleared once nothing
    /// is owed.
    gone: Vec<(Box<[u8]>, Arc<ClientStatement>)>,
}

/// At most this many [`More::gone`] are kept (a client pipelining
/// failures without end), the oldest dropped.
const GONE: usize = 64;

/// The last `seq` given to a named statement: a process-wide counter
/// rather than a field of every client's [`Statements`] (every idle
/// client pays for the session's size).
static RECORDED: AtomicU64 = AtomicU64::new(0);

/// The `seq` of the next named statement recorded.
fn next_seq() -> NonZeroU64 {
    let seq = RECORDED.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    NonZeroU64::new(seq).unwrap_or(NonZeroU64::MIN)
}

impl Statements {
    /// The named statement `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Arc<ClientStatement>> {
        self.named.get(name)
    }

    /// Forgets the named statement `name` (a `DEALLOCATE name` the proxy
    /// answered); false when the client has none of that name.
    pub fn remove(&mut self, name: &[u8]) -> bool {
        self.named.remove(name).is_some()
    }

    /// Forgets the named statements recorded before `bound` (a `seq`):
    /// those a `DEALLOCATE ALL` sent then removed; later ones stay.
    fn forget_before(&mut self, bound: u64) {
        self.named.retain(|_, s| s.seq >= bound);
    }

    /// The `seq` from which statements recorded from now on are numbered
    /// (see [`Statements::forget_since`]).
    pub fn next_seq() -> u64 {
        RECORDED.load(Ordering::Relaxed).wrapping_add(1)
    }

    /// Forgets the named statements recorded from `since` on (a value of
    /// [`Statements::next_seq`] taken before a unit was sent): the unit
    /// is to run again elsewhere as if it had never run, and its Parses
    /// must not find their own names taken.
    pub fn forget_since(&mut self, since: u64) {
        self.named.retain(|_, s| s.seq < since);
    }

    /// Forgets the statement recorded as `seq`, whose Parse failed or was
    /// skipped (an error earlier in its batch): as in PostgreSQL, the name
    /// does not exist. A scan, on that error path only.
    fn forget(&mut self, seq: NonZeroU64) {
        let seq = seq.get();
        let mut gone: Vec<_> = self.named.extract_if(|_, s| s.seq == seq).collect();
        if let Some(m) = self.more.as_mut() {
            // A Close kept aside: nothing to put back if it is skipped.
            for (name, closed) in m.aside.iter_mut() {
                if closed.as_ref().is_some_and(|s| s.seq == seq)
                    && let Some(stmt) = closed.take()
                {
                    gone.push((name.clone(), stmt));
                }
            }
        }
        if gone.is_empty() {
            return;
        }
        let kept = &mut self.more.get_or_insert_default().gone;
        kept.extend(gone);
        if kept.len() > GONE {
            kept.drain(..kept.len() - GONE);
        }
    }

    /// Nothing is owed on the attached connection any more: no answer
    /// can name a statement forgotten before.
    fn settled(&mut self) {
        if let Some(m) = self.more.as_mut() {
            m.gone.clear();
        }
    }

    /// The client's name for the server-side statement `server_name` (the
    /// error of a Bind or Describe sent under it): one forgotten while
    /// the Bind was on its way, most recent first, or one the client has.
    /// A scan, on that error path only. `None` for a name the proxy
    /// never gave this client.
    fn client_name(&self, server_name: &[u8]) -> Option<&[u8]> {
        let named = |s: &Arc<ClientStatement>| s.server_name.as_bytes() == server_name;
        let more = self.more.as_deref();
        more.and_then(|m| m.gone.iter().rev().find(|(_, s)| named(s)))
            .map(|(n, _)| &n[..])
            .or_else(|| {
                self.named
                    .iter()
                    .find(|(_, s)| named(s))
                    .map(|(n, _)| &n[..])
            })
            .or_else(|| {
                more?
                    .aside
                    .iter()
                    .find(|(_, s)| s.as_ref().is_some_and(named))
                    .map(|(n, _)| &n[..])
            })
    }

    /// Names the client's statements anew under `naming` (its settings
    /// changed: the same text is another statement under them, and must
    /// not share a server-side statement prepared under the old ones).
    pub fn rename(&mut self, naming: StatementNaming<'_>) {
        for stmt in self.named.values_mut() {
            let Ok(FrontendMessage::Parse {
                query, param_types, ..
            }) = FrontendMessage::decode(&stmt.parse)
            else {
                continue;
            };
            let mut renamed = ClientStatement::new(naming, query, &param_types, stmt.kind);
            renamed.seq = stmt.seq;
            *stmt = Arc::new(renamed);
        }
    }

    /// True when the client has no statement, named or unnamed.
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.unnamed_parse().is_none()
    }

    /// The Parse frame of the unnamed statement, if there is one.
    pub fn unnamed_parse(&self) -> Option<&[u8]> {
        self.more
            .as_deref()
            .map(|m| m.unnamed.as_slice())
            .filter(|p| !p.is_empty())
    }

    /// True while a Parse of a name the client has, or a Close of a named
    /// statement, waits on the attached connection for answers owed
    /// before it (see `Relay::duplicate`): whether the name is taken
    /// then is not known yet.
    pub fn names_aside(&self) -> bool {
        self.more.as_deref().is_some_and(|m| !m.aside.is_empty())
    }

    /// Another server connection is attached: names kept aside for the
    /// last one (given up with its answers, a broken connection) are
    /// dropped, the Closes taking effect.
    pub fn new_connection(&mut self) {
        if let Some(m) = self.more.as_mut() {
            m.aside.clear();
            m.gone.clear();
        }
    }

    fn put_aside(&mut self, name: Box<[u8]>, closed: Option<Arc<ClientStatement>>) {
        self.more
            .get_or_insert_default()
            .aside
            .push_back((name, closed));
    }

    fn take_aside(&mut self) -> Option<Aside> {
        self.more.as_mut()?.aside.pop_front()
    }

    fn first_aside(&self) -> Option<&[u8]> {
        self.more.as_deref()?.aside.front().map(|(n, _)| &n[..])
    }

    /// The text of the statement a Bind of `name` runs (`""`: the
    /// unnamed one), as the client sent it.
    pub fn text_of(&self, name: &[u8]) -> Option<&[u8]> {
        let frame = if name.is_empty() {
            self.unnamed_parse()?
        } else {
            &self.get(name)?.parse[..]
        };
        match FrontendMessage::decode(frame) {
            Ok(FrontendMessage::Parse { query, .. }) => Some(query),
            _ => None,
        }
    }

    fn set_unnamed(&mut self, parse: &[u8]) {
        let buf = &mut self.more.get_or_insert_default().unnamed;
        buf.clear();
        buf.extend_from_slice(parse);
    }

    fn clear_unnamed(&mut self) {
        if let Some(m) = self.more.as_mut() {
            m.unnamed.clear();
        }
    }

    /// Lets an idle client hold no large buffer for its unnamed statement
    /// (it is kept, in a buffer of its size).
    pub fn shrink(&mut self) {
        if let Some(m) = self.more.as_mut()
            && m.unnamed.capacity() > 1024
        {
            m.unnamed.shrink_to_fit();
        }
    }
}

/// The server-side name under which a client's Parse of a name it
/// already has is sent (see [`Relay::duplicate`]): the proxy's own
/// prefix, and no statement id (those are hexadecimal).
const DUPLICATE: &[u8] = b"pgkeel_duplicate";

/// The prefix of every server-side statement name the proxy gives: a
/// client's Bind or Describe of a name of its own with this prefix must
/// not reach one (see [`Relay::missing`]).
const PREFIX: &[u8] = b"pgkeel_";

/// The server-side name under which a Bind or Describe of a `pgkeel_`
/// name the client has not parsed is sent (see [`Relay::missing`]):
/// closed just before, so it does not exist.
const MISSING: &[u8] = b"pgkeel_missing";

/// An answer the client is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A Parse sent to the server; `prepared` = statement id to forget if
    /// it fails; `hidden` = injected by the proxy, answer not forwarded;
    /// `recorded` = the client's named statement it records (its `seq`),
    /// forgotten if it fails or is skipped.
    Parse {
        prepared: Option<u64>,
        hidden: bool,
        recorded: Option<NonZeroU64>,
    },
    /// A made-up ParseComplete for a client's named Parse whose text the
    /// server has prepared already; the statement recorded (its `seq`)
    /// is forgotten if it is skipped.
    Known(NonZeroU64),
    /// A client's Parse of a name it already has, sent under
    /// [`DUPLICATE`], which exists on the server then: PostgreSQL's
    /// refusal (42P05) or an earlier error of the text. Its name is kept
    /// aside in [`Statements`].
    Duplicate,
    /// A client's Bind or Describe of a `pgkeel_` name it does not have,
    /// sent under [`MISSING`], which does not exist on the server then:
    /// PostgreSQL's 26000. Its name is kept aside in [`Statements`].
    Missing,
    /// A made-up CloseComplete for a client's named statement, removed
    /// when the Close was sent behind answers still owed: put back if it
    /// is skipped. Its name and statement are kept aside in
    /// [`Statements`].
    Closed,
    Bind,
    /// A `Close` of a server-side statement sent just before the proxy
    /// prepares it (it may exist after all); answer not forwarded.
    CloseBeforeParse,
    /// A simple query the proxy sent ahead of the client's (the client's
    /// settings, see [`crate::settings::sync_query`]); nothing of its
    /// answer is forwarded unless it fails.
    Hidden,
    Describe,
    Execute,
    Close,
    /// Ends at ReadyForQuery.
    Sync,
    /// Simple query or function call: ends at ReadyForQuery.
    Query,
    /// An answer the proxy makes up (`ParseComplete`, `CloseComplete`).
    Synth(u8),
    /// Where the client ended a COPY it sent before the server said it
    /// was copying.
    CopyEnd,
}

/// The expectations for one attached server connection.
#[derive(Debug)]
pub struct Relay {
    /// Taken from the thread's spares and given back on drop: a Relay
    /// lives for one attach, often one transaction.
    queue: VecDeque<Expect>,
    /// The server is in COPY IN from the extended protocol: it ignores
    /// Sync until the client ends the copy.
    copy_ignores_sync: bool,
    /// The hidden query failed: the client got its error instead of the
    /// answers to what it sent (which did not run: the hidden query left
    /// its transaction block aborted), and the connection is to be closed.
    failed: bool,
    /// The client's settings were compared with the connection's (done
    /// once, before the first thing sent; kept here, in the padding of a
    /// struct every session holds, rather than in a field of its own).
    settings_checked: bool,
    /// The hidden query went alone: the unit behind it (the session's
    /// queued one) waits for its outcome (see [`may_end_block`]).
    unit_held: bool,
    /// The server has this client's unnamed statement (parsed since the
    /// connection was attached, and not destroyed by a simple Query).
    unnamed_here: bool,
    /// The client may have reset its settings (`RESET ALL`, `DISCARD
    /// ALL`): its startup values are restored ahead of its next unit
    /// outside a transaction.
    restore_pending: bool,
    /// The hidden query in flight restores settings the client saw reset:
    /// its ParameterStatus messages are the client's news.
    hidden_reports: bool,
    /// The hidden query failed because it was cancelled (57014: the
    /// client's own cancel request landed on it).
    hidden_cancelled: bool,
    /// A statement that may remove every prepared statement was sent:
    /// if the server says it did (see [`removed_all`]), the client's
    /// named statements recorded before this `seq` are forgotten.
    removing: Option<NonZeroU64>,
}

/// Emptied queues of finished relays, kept per thread (see `crate::spare`).
const SPARE_QUEUES: usize = 32;

thread_local! {
    static QUEUES: std::cell::RefCell<Vec<VecDeque<Expect>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            queue: crate::spare::take_from(&QUEUES),
            copy_ignores_sync: false,
            failed: false,
            settings_checked: false,
            unit_held: false,
            unnamed_here: false,
            restore_pending: false,
            hidden_reports: false,
            hidden_cancelled: false,
            removing: None,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let mut queue = std::mem::take(&mut self.queue);
        if queue.capacity() > 0 && queue.capacity() <= 64 {
            queue.clear();
            crate::spare::give_to(&QUEUES, queue, SPARE_QUEUES);
        }
    }
}

fn push_empty(out: &mut Vec<u8>, tag: u8) {
    out.extend_from_slice(&[tag, 0, 0, 0, 4]);
}

/// Appends the server's ErrorResponse `frame` to a message sent under the
/// proxy's statement name `from` ([`DUPLICATE`], [`MISSING`], a
/// `pgkeel_<hex>`) with the client's statement `name` in its place in
/// the message (PostgreSQL's `prepared statement "x" already exists` or
/// `does not exist`, in the server's language), the other fields as they
/// are. The name is the bytes the client sent, as PostgreSQL would quote
/// them back.
fn renamed_error(frame: &[u8], from: &[u8], name: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(b'E');
    out.extend_from_slice(&[0; 4]);
    let mut rest = frame.get(5..).unwrap_or_default();
    while let Some((&ty, tail)) = rest.split_first()
        && ty != 0
    {
        let Some(end) = tail.iter().position(|&b| b == 0) else {
            break;
        };
        let value = &tail[..end];
        rest = &tail[end + 1..];
        out.push(ty);
        if ty == b'M' {
            let mut v = value;
            while let Some(at) = v.windows(from.len()).position(|w| w == from) {
                out.extend_from_slice(&v[..at]);
                out.extend_from_slice(name);
                v = &v[at + from.len()..];
            }
            out.extend_from_slice(v);
        } else {
            out.extend_from_slice(value);
        }
        out.push(0);
    }
    out.push(0);
    match i32::try_from(out.len() - start - 1) {
        Ok(len) => out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes()),
        Err(_) => {
            out.truncate(start);
            out.extend_from_slice(frame);
        }
    }
}

/// The message (`M` field) of the ErrorResponse `frame`, as bytes: in
/// the client's encoding, not necessarily UTF-8.
fn message_bytes(frame: &[u8]) -> Option<&[u8]> {
    let mut rest = frame.get(5..)?;
    while let Some((&ty, tail)) = rest.split_first()
        && ty != 0
    {
        let end = tail.iter().position(|&b| b == 0)?;
        if ty == b'M' {
            return Some(&tail[..end]);
        }
        rest = &tail[end + 1..];
    }
    None
}

impl Relay {
    /// True when every answer owed has been delivered.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// True the first time only: the client's settings are then compared
    /// with the connection's (see [`Relay::hidden_query`]).
    pub fn first_send(&mut self) -> bool {
        !std::mem::replace(&mut self.settings_checked, true)
    }

    /// The client may have reset all its settings (`RESET ALL`, `DISCARD
    /// ALL`), which in PostgreSQL returns them to its startup values: they
    /// are restored before its next unit outside a transaction (see
    /// [`crate::settings::restore_query`]).
    pub fn restore_settings(&mut self) {
        self.restore_pending = true;
    }

    /// True once after [`Relay::restore_settings`].
    pub fn take_restore(&mut self) -> bool {
        std::mem::replace(&mut self.restore_pending, false)
    }

    /// Expects the answer to a hidden simple query, sent before anything
    /// else on the connection; `reports`: its ParameterStatus messages go
    /// to the client (a restore of settings it saw reset).
    pub fn hidden_query(&mut self, reports: bool) {
        self.queue.push_back(Expect::Hidden);
        self.hidden_reports = reports;
        // A simple Query destroys the unnamed statement: the client's is
        // parsed again when next bound.
        self.unnamed_here = false;
    }

    /// The unit that asked for the hidden query waits, unsent, for its
    /// outcome.
    pub fn hold_unit(&mut self) {
        self.unit_held = true;
    }

    /// True once for a unit held by [`Relay::hold_unit`] (whose hidden
    /// query has been answered): the caller sends it, or fails it.
    pub fn release_unit(&mut self) -> bool {
        !self.hidden_pending() && std::mem::replace(&mut self.unit_held, false)
    }

    /// True while the answer to a hidden query is awaited: what the
    /// client sends next waits (it must not run if the query fails).
    pub fn hidden_pending(&self) -> bool {
        self.queue.front() == Some(&Expect::Hidden)
    }

    /// True when the hidden query that failed was a restore of settings
    /// after the client's reset (on its pinned connection, whose session
    /// state is lost with it).
    pub fn restore_failed(&self) -> bool {
        self.failed && self.hidden_reports
    }

    /// True when the hidden query failed by a cancel (the client's): its
    /// error is the client's answer, not a sign the node refuses the
    /// settings.
    pub fn settings_cancelled(&self) -> bool {
        self.failed && self.hidden_cancelled
    }

    /// True when a hidden query failed: the connection must be closed
    /// once the answers owed are in.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Number of ReadyForQuery messages still owed.
    pub fn pending_ready(&self) -> usize {
        self.queue
            .iter()
            .filter(|e| matches!(e, Expect::Sync | Expect::Query))
            .count()
    }

    fn ensure_prepared(
        &mut self,
        stmt: &ClientStatement,
        prepared: &mut StatementIds,
        to_server: &mut Vec<u8>,
    ) {
        if prepared.insert(stmt.id) {
            self.prepare(stmt, true, None, to_server);
        }
    }

    /// Before a Bind or Describe of the unnamed statement: unless this
    /// server has the client's, the client's Parse goes first (answer
    /// hidden); without one, a Close of the unnamed statement, so the
    /// server answers 26000 as PostgreSQL would rather than run the
    /// statement another client left on the connection.
    fn ensure_unnamed(&mut self, statements: &Statements, to_server: &mut Vec<u8>) {
        if self.unnamed_here {
            return;
        }
        match statements.unnamed_parse() {
            Some(parse) => {
                to_server.extend_from_slice(parse);
                self.queue.push_back(Expect::Parse {
                    prepared: None,
                    hidden: true,
                    recorded: None,
                });
                self.unnamed_here = true;
            }
            None => {
                FrontendMessage::Close {
                    kind: b'S',
                    name: b"",
                }
                .encode(to_server);
                self.queue.push_back(Expect::CloseBeforeParse);
            }
        }
    }

    /// Sends the server-side Parse of `stmt`, preceded by a Close of its
    /// name: the proxy's record of what a connection holds is forgotten
    /// conservatively (see [`may_deallocate`]), and a Parse of a name that
    /// still exists would fail. A Close of a missing statement is no error.
    /// `recorded`: the client's Parse that recorded it.
    fn prepare(
        &mut self,
        stmt: &ClientStatement,
        hidden: bool,
        recorded: Option<NonZeroU64>,
        to_server: &mut Vec<u8>,
    ) {
        FrontendMessage::Close {
            kind: b'S',
            name: stmt.server_name.as_bytes(),
        }
        .encode(to_server);
        self.queue.push_back(Expect::CloseBeforeParse);
        to_server.extend_from_slice(&stmt.parse);
        self.queue.push_back(Expect::Parse {
            prepared: Some(stmt.id),
            hidden,
            recorded,
        });
    }

    /// Sends an Execute, Sync or Flush, which carry nothing to track (no
    /// statement names): what [`Relay::send`] does for them, without
    /// decoding; false (nothing sent) for any other message.
    pub fn send_plain(
        &mut self,
        frame: &[u8],
        statements: &mut Statements,
        to_server: &mut Vec<u8>,
        to_client: &mut Vec<u8>,
    ) -> bool {
        let expect = match frame.first() {
            Some(b'E') => Some(Expect::Execute),
            Some(b'S') => (!self.copy_ignores_sync).then_some(Expect::Sync),
            Some(b'H') => None,
            _ => return false,
        };
        to_server.extend_from_slice(frame);
        if let Some(e) = expect {
            self.queue.push_back(e);
        }
        self.drain(statements, to_client);
        true
    }

    /// A client's Parse of a name it already has: PostgreSQL parses and
    /// analyses the text, then refuses the name (42P05), keeping the old
    /// statement, and the error skips the rest of the batch (aborting
    /// its transaction). The server does just that: the Parse goes under
    /// [`DUPLICATE`], made to exist first as an empty statement (which
    /// parses in any transaction state), so its errors come in
    /// PostgreSQL's order (a syntax error first, 25P02 in a failed
    /// block); the refusal names the client's statement (see
    /// [`renamed_error`]). The empty statement stays on the connection.
    fn duplicate(
        &mut self,
        name: &[u8],
        query: &[u8],
        param_types: &[u32],
        statements: &mut Statements,
        to_server: &mut Vec<u8>,
    ) {
        FrontendMessage::Close {
            kind: b'S',
            name: DUPLICATE,
        }
        .encode(to_server);
        self.queue.push_back(Expect::CloseBeforeParse);
        FrontendMessage::Parse {
            name: DUPLICATE,
            query: b"",
            param_types: Vec::new(),
        }
        .encode(to_server);
        self.queue.push_back(Expect::Parse {
            prepared: None,
            hidden: true,
            recorded: None,
        });
        FrontendMessage::Parse {
            name: DUPLICATE,
            query,
            param_types: param_types.to_vec(),
        }
        .encode(to_server);
        self.queue.push_back(Expect::Duplicate);
        statements.put_aside(name.into(), None);
    }

    /// Before a client's Bind or Describe of a name it does not have that
    /// has the proxy's prefix (a server-side name it learnt, as another
    /// client's `pgkeel_<hex>` or `pgkeel_duplicate`): the message goes
    /// under [`MISSING`] (the caller sends it), closed just before (a
    /// Close of a missing statement is no error, and runs in any
    /// transaction state), so the server refuses it as PostgreSQL would
    /// the client's name (26000, renamed back, see [`renamed_error`]),
    /// with PostgreSQL's effect (the batch's implicit transaction or the
    /// block aborted, the rest skipped to Sync). Other names the client
    /// does not have go as they are: a server connection holds no other
    /// client's statement under them (those are all named by the proxy),
    /// and a pinned client's own SQL `PREPARE`d ones are its to bind.
    #[cold]
    fn missing(&mut self, name: &[u8], statements: &mut Statements, to_server: &mut Vec<u8>) {
        FrontendMessage::Close {
            kind: b'S',
            name: MISSING,
        }
        .encode(to_server);
        self.queue.push_back(Expect::CloseBeforeParse);
        self.queue.push_back(Expect::Missing);
        statements.put_aside(name.into(), None);
    }

    /// The error of a Bind or Describe of a client's named statement,
    /// sent under its server-side name: that name in the message (26000
    /// when its Parse pipelined ahead failed, a wrong parameter count)
    /// is replaced by the client's own (see [`Statements::client_name`]).
    /// False (nothing appended) when the message names none.
    #[cold]
    fn renamed_statement_error(frame: &[u8], statements: &Statements, out: &mut Vec<u8>) -> bool {
        // Errors about the statement itself (a parameter's value, which
        // may be anything, is in others).
        if !matches!(
            error_code(frame.get(5..).unwrap_or_default()),
            Some("26000" | "08P01")
        ) {
            return false;
        }
        let Some(message) = message_bytes(frame) else {
            return false;
        };
        let Some(at) = message.windows(PREFIX.len()).position(|w| w == PREFIX) else {
            return false;
        };
        let hex = message[at + PREFIX.len()..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if hex != 16 {
            return false;
        }
        let server_name = &message[at..at + PREFIX.len() + hex];
        match statements.client_name(server_name) {
            Some(name) => {
                renamed_error(frame, server_name, name, out);
                true
            }
            None => false,
        }
    }

    /// Undoes what the proxy recorded, when the message was sent, for a
    /// request the server skipped (an error earlier in its batch) or
    /// that failed: a Parse's statement is forgotten (the name does not
    /// exist, as in PostgreSQL), a Close's put back.
    fn undo(e: Expect, statements: &mut Statements, prepared: &mut StatementIds) {
        match e {
            Expect::Parse {
                prepared: id,
                recorded,
                ..
            } => {
                if let Some(id) = id {
                    prepared.remove(&id);
                }
                if let Some(seq) = recorded {
                    statements.forget(seq);
                }
            }
            Expect::Known(seq) => statements.forget(seq),
            Expect::Duplicate | Expect::Missing => {
                statements.take_aside();
            }
            Expect::Closed => {
                if let Some((name, Some(stmt))) = statements.take_aside() {
                    statements.named.insert(name, stmt);
                }
            }
            _ => {}
        }
    }

    /// Translates one client message for the server: appends what to send
    /// to `to_server` and answers made up by the proxy to `to_client`.
    /// `kind` is a named Parse's statement kind (kept for its Binds), or
    /// `SessionState` when the message's unit changes session state (only
    /// then is a Query, Parse or Bind searched for DISCARD/DEALLOCATE).
    /// `tx`: the transaction status the last ReadyForQuery gave (in a
    /// failed block a client's Parse goes to the server even when it has
    /// the text, to be refused there, 25P02, unless it ends the block).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        frame: &[u8],
        msg: &FrontendMessage<'_>,
        kind: StatementKind,
        tx: TxStatus,
        statements: &mut Statements,
        prepared: &mut StatementIds,
        naming: StatementNaming<'_>,
        to_server: &mut Vec<u8>,
        to_client: &mut Vec<u8>,
    ) -> Result<(), ProxyError> {
        if kind == StatementKind::SessionState && deallocates(msg, statements) {
            // DISCARD ALL / DEALLOCATE from the client removes the
            // server's `pgkeel_*` statements too: they are prepared again
            // when next used. The client's own go once the server says
            // it removed them all.
            prepared.clear();
            self.removing = NonZeroU64::new(RECORDED.load(Ordering::Relaxed) + 1);
        }
        match msg {
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => {
                if name.is_empty() {
                    to_server.extend_from_slice(frame);
                    self.queue.push_back(Expect::Parse {
                        prepared: None,
                        hidden: false,
                        recorded: None,
                    });
                    statements.set_unnamed(frame);
                    self.unnamed_here = true;
                } else {
                    // One lookup (and the key's allocation) as for an
                    // insert.
                    match statements.named.entry((*name).into()) {
                        Entry::Occupied(_) => {
                            self.duplicate(name, query, param_types, statements, to_server);
                        }
                        Entry::Vacant(slot) => {
                            let mut stmt = ClientStatement::new(naming, query, param_types, kind);
                            let seq = next_seq();
                            stmt.seq = seq.get();
                            if prepared.insert(stmt.id) {
                                self.prepare(&stmt, false, Some(seq), to_server);
                            } else if tx == TxStatus::Failed || !self.queue.is_empty() {
                                // The server has the text, but may refuse
                                // or skip this Parse: in a failed block
                                // (unless it ends the block), or behind
                                // answers still owed (an error there skips
                                // it; a batch ahead may abort the block,
                                // be the failing Parse that prepared the
                                // text, or create what it needs). It
                                // decides, on a statement of this one's
                                // own: the shared one stays as it is, and
                                // a Bind pipelined behind finds no
                                // statement when the Parse did not happen.
                                stmt.make_own();
                                prepared.insert(stmt.id);
                                self.prepare(&stmt, false, Some(seq), to_server);
                            } else {
                                self.queue.push_back(Expect::Known(seq));
                            }
                            slot.insert(Arc::new(stmt));
                        }
                    }
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                tail,
            } => match statements.named.get(*statement) {
                Some(stmt) if !statement.is_empty() => {
                    self.ensure_prepared(stmt, prepared, to_server);
                    FrontendMessage::Bind {
                        portal,
                        statement: stmt.server_name.as_bytes(),
                        tail,
                    }
                    .encode(to_server);
                    self.queue.push_back(Expect::Bind);
                }
                _ if statement.starts_with(PREFIX) => {
                    self.missing(statement, statements, to_server);
                    FrontendMessage::Bind {
                        portal,
                        statement: MISSING,
                        tail,
                    }
                    .encode(to_server);
                }
                _ => {
                    if statement.is_empty() {
                        self.ensure_unnamed(statements, to_server);
                    }
                    to_server.extend_from_slice(frame);
                    self.queue.push_back(Expect::Bind);
                }
            },
            FrontendMessage::Describe { kind: b'S', name } if !name.is_empty() => {
                match statements.named.get(*name) {
                    Some(stmt) => {
                        self.ensure_prepared(stmt, prepared, to_server);
                        FrontendMessage::Describe {
                            kind: b'S',
                            name: stmt.server_name.as_bytes(),
                        }
                        .encode(to_server);
                        self.queue.push_back(Expect::Describe);
                    }
                    None if name.starts_with(PREFIX) => {
                        self.missing(name, statements, to_server);
                        FrontendMessage::Describe {
                            kind: b'S',
                            name: MISSING,
                        }
                        .encode(to_server);
                    }
                    None => {
                        to_server.extend_from_slice(frame);
                        self.queue.push_back(Expect::Describe);
                    }
                }
            }
            FrontendMessage::Describe { kind, .. } => {
                if *kind == b'S' {
                    self.ensure_unnamed(statements, to_server);
                }
                to_server.extend_from_slice(frame);
                self.queue.push_back(Expect::Describe);
            }
            FrontendMessage::Close { kind: b'S', name } if !name.is_empty() => {
                // Other clients may share the server-side statement: only
                // the client's name goes. Behind answers still owed, an
                // error may yet skip the Close: the statement is kept
                // until then.
                match statements.named.remove_entry(*name) {
                    Some((name, closed)) if !self.queue.is_empty() || self.failed => {
                        statements.put_aside(name, Some(closed));
                        self.queue.push_back(Expect::Closed);
                    }
                    _ => self.queue.push_back(Expect::Synth(b'3')),
                }
            }
            FrontendMessage::Close { kind, .. } => {
                if *kind == b'S' {
                    statements.clear_unnamed();
                    self.unnamed_here = false;
                }
                to_server.extend_from_slice(frame);
                self.queue.push_back(Expect::Close);
            }
            FrontendMessage::Execute { .. } => {
                to_server.extend_from_slice(frame);
                self.queue.push_back(Expect::Execute);
            }
            FrontendMessage::Sync => {
                to_server.extend_from_slice(frame);
                if !self.copy_ignores_sync {
                    self.queue.push_back(Expect::Sync);
                }
            }
            FrontendMessage::Flush | FrontendMessage::CopyData(_) => {
                to_server.extend_from_slice(frame)
            }
            FrontendMessage::CopyDone | FrontendMessage::CopyFail(_) => {
                to_server.extend_from_slice(frame);
                if self.copy_ignores_sync {
                    self.copy_ignores_sync = false;
                } else {
                    self.queue.push_back(Expect::CopyEnd);
                }
            }
            FrontendMessage::Query(_) => {
                // A simple Query destroys the unnamed statement.
                statements.clear_unnamed();
                self.unnamed_here = false;
                to_server.extend_from_slice(frame);
                self.queue.push_back(Expect::Query);
            }
            FrontendMessage::FunctionCall(_) => {
                to_server.extend_from_slice(frame);
                self.queue.push_back(Expect::Query);
            }
            FrontendMessage::Terminate | FrontendMessage::Password(_) => {
                return Err(ProxyError::Protocol(format!(
                    "unexpected {:?} message",
                    char::from(msg.tag())
                )));
            }
        }
        self.drain(statements, to_client);
        Ok(())
    }

    /// Delivers made-up answers that are next in line (none after a
    /// failed hidden query: the client has its error, and what they
    /// answered did not happen).
    #[inline]
    fn drain(&mut self, statements: &mut Statements, to_client: &mut Vec<u8>) {
        // Called around every message: the usual case (a server answer
        // next in line) is one look at the queue.
        if matches!(
            self.queue.front(),
            Some(Expect::Synth(_) | Expect::Known(_) | Expect::Closed | Expect::CopyEnd)
        ) {
            self.drain_made_up(statements, to_client);
        }
    }

    #[inline(never)]
    fn drain_made_up(&mut self, statements: &mut Statements, to_client: &mut Vec<u8>) {
        while let Some(head) = self.queue.front().copied() {
            match head {
                Expect::Synth(_) if self.failed => {}
                Expect::Known(seq) if self.failed => statements.forget(seq),
                Expect::Closed if self.failed => {
                    if let Some((name, Some(stmt))) = statements.take_aside() {
                        statements.named.insert(name, stmt);
                    }
                }
                Expect::Synth(tag) => push_empty(to_client, tag),
                Expect::Known(_) => push_empty(to_client, b'1'),
                Expect::Closed => {
                    statements.take_aside();
                    push_empty(to_client, b'3');
                }
                Expect::CopyEnd => {}
                _ => return,
            }
            self.queue.pop_front();
        }
    }

    fn desync(&self, tag: u8) -> ProxyError {
        ProxyError::Protocol(format!(
            "server sent {:?} while the proxy expected {:?}",
            char::from(tag),
            self.queue.front()
        ))
    }

    /// One message of the answer to a hidden query: swallowed, but an
    /// error goes to the client (with the server's SQLSTATE) as the answer
    /// to what it sent behind the query.
    fn receive_hidden(
        &mut self,
        tag: u8,
        frame: &[u8],
        statements: &mut Statements,
        to_client: &mut Vec<u8>,
    ) {
        match tag {
            b'E' if !self.failed => {
                let body = frame.get(5..).unwrap_or_default();
                self.hidden_cancelled = error_code(body) == Some("57014");
                let message = format!(
                    "the proxy could not apply this client's startup settings on a server \
                     connection: {}",
                    error_message(body).unwrap_or("unknown error")
                );
                encode_error(
                    to_client,
                    "ERROR",
                    error_code(body).unwrap_or("XX000"),
                    &message,
                );
                self.failed = true;
            }
            b'Z' => {
                self.queue.pop_front();
                // Kept when it failed: see `restore_failed`.
                self.hidden_reports &= self.failed;
                self.drain(statements, to_client);
            }
            b'S' if self.hidden_reports => to_client.extend_from_slice(frame),
            // Its CommandComplete, rows, ParameterStatus, notices.
            _ => {}
        }
    }

    /// After a failed hidden query: the server's answers (errors of the
    /// aborted transaction block) are swallowed, and the batch ends with
    /// ReadyForQuery, idle (the connection is closed, rolling the block
    /// back). Only that batch is owed: nothing else is sent to the
    /// connection once a hidden query is out, but what completes it.
    fn receive_failed(
        &mut self,
        tag: u8,
        statements: &mut Statements,
        prepared: &mut StatementIds,
        to_client: &mut Vec<u8>,
    ) -> Result<Option<TxStatus>, ProxyError> {
        if tag != b'Z' {
            return Ok(None);
        }
        loop {
            match self.queue.pop_front() {
                Some(Expect::Sync | Expect::Query) => break,
                Some(e) => Self::undo(e, statements, prepared),
                None => return Err(self.desync(tag)),
            }
        }
        to_client.extend_from_slice(&[b'Z', 0, 0, 0, 5, TxStatus::Idle.byte()]);
        self.drain(statements, to_client);
        Ok(Some(TxStatus::Idle))
    }

    /// Handles one server message: forwards it (or not) to `to_client`.
    /// Returns the transaction status when it was a ReadyForQuery. A
    /// `DEALLOCATE ALL` or `DISCARD ALL` the server completed removes the
    /// client's named statements (recorded before it was sent), as in
    /// PostgreSQL.
    pub fn receive(
        &mut self,
        frame: &[u8],
        statements: &mut Statements,
        prepared: &mut StatementIds,
        to_client: &mut Vec<u8>,
    ) -> Result<Option<TxStatus>, ProxyError> {
        let tag = frame.first().copied().unwrap_or(0);
        let head = self.queue.front().copied();
        if matches!(tag, b'D' | b'N' | b'd')
            && !self.failed
            && matches!(
                head,
                Some(Expect::Execute | Expect::Query | Expect::Describe | Expect::Sync)
            )
        {
            // Rows (most of any large answer), notices and copy data
            // change nothing tracked: forwarded at once.
            to_client.extend_from_slice(frame);
            return Ok(None);
        }
        self.drain(statements, to_client);
        let head = self.queue.front().copied();
        if head == Some(Expect::Hidden) {
            self.receive_hidden(tag, frame, statements, to_client);
            return Ok(None);
        }
        if self.failed {
            return self.receive_failed(tag, statements, prepared, to_client);
        }
        let mut forward = true;
        let mut status = None;
        match tag {
            b'N' | b'S' | b'A' | b't' | b'D' | b'V' | b'd' | b'c' | b'H' | b'W' => {}
            b'E' => {
                self.copy_ignores_sync = false;
                match head {
                    Some(e @ (Expect::Duplicate | Expect::Missing)) => {
                        if let Some(name) = statements.first_aside() {
                            let from = if e == Expect::Duplicate {
                                DUPLICATE
                            } else {
                                MISSING
                            };
                            renamed_error(frame, from, name, to_client);
                            forward = false;
                        }
                    }
                    Some(Expect::Bind | Expect::Describe) => {
                        forward = !Self::renamed_statement_error(frame, statements, to_client);
                    }
                    _ => {}
                }
                // The failed request and everything up to the next Sync
                // are skipped by the server.
                while let Some(e) = self.queue.front().copied() {
                    if matches!(e, Expect::Sync | Expect::Query) {
                        break;
                    }
                    self.queue.pop_front();
                    Self::undo(e, statements, prepared);
                }
            }
            b'Z' => {
                if !matches!(head, Some(Expect::Sync | Expect::Query)) {
                    return Err(self.desync(tag));
                }
                self.queue.pop_front();
                if self.queue.is_empty() {
                    self.removing = None;
                    statements.settled();
                }
                let byte = frame.get(5).copied().unwrap_or(0);
                status = Some(TxStatus::from_byte(byte)?);
            }
            b'1' => match head {
                Some(Expect::Parse { hidden, .. }) => {
                    forward = !hidden;
                    self.queue.pop_front();
                }
                _ => return Err(self.desync(tag)),
            },
            b'2' | b'3' => {
                let ok = matches!(
                    (tag, head),
                    (b'2', Some(Expect::Bind))
                        | (b'3', Some(Expect::Close | Expect::CloseBeforeParse))
                );
                if !ok {
                    return Err(self.desync(tag));
                }
                forward = head != Some(Expect::CloseBeforeParse);
                self.queue.pop_front();
            }
            b'T' | b'n' => {
                if head == Some(Expect::Describe) {
                    self.queue.pop_front();
                } else if tag == b'n' {
                    return Err(self.desync(tag));
                }
            }
            b'C' | b'I' | b's' => {
                if let Some(bound) = self.removing
                    && removed_all(frame)
                {
                    statements.forget_before(bound.get());
                }
                if head == Some(Expect::Execute) {
                    self.queue.pop_front();
                }
            }
            b'G' => {
                if head == Some(Expect::Execute) {
                    // Syncs already sent behind the Execute are ignored by
                    // the server until the copy ends.
                    let mut i = 1;
                    let mut ended = false;
                    while i < self.queue.len() {
                        match self.queue[i] {
                            Expect::Sync => {
                                self.queue.remove(i);
                            }
                            Expect::CopyEnd => {
                                self.queue.remove(i);
                                ended = true;
                                break;
                            }
                            _ => i += 1,
                        }
                    }
                    self.copy_ignores_sync = !ended;
                }
            }
            _ => return Err(self.desync(tag)),
        }
        if forward {
            to_client.extend_from_slice(frame);
        }
        self.drain(statements, to_client);
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Side {
        relay: Relay,
        stmts: Statements,
        prepared: StatementIds,
        hasher: RandomState,
        /// As the last ReadyForQuery said.
        tx: TxStatus,
    }

    fn frame(msg: &FrontendMessage<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        msg.encode(&mut v);
        v
    }

    fn tags(buf: &[u8]) -> String {
        let mut out = String::new();
        let mut rest = buf;
        while let Ok(Some((tag, len))) = pgkeel_wire::split_message(rest, 1 << 20) {
            out.push(char::from(tag));
            rest = &rest[len..];
        }
        out
    }

    impl Side {
        fn new() -> Self {
            Side {
                relay: Relay::default(),
                stmts: Statements::default(),
                prepared: StatementIds::default(),
                hasher: RandomState::new(),
                tx: TxStatus::Idle,
            }
        }

        fn send(&mut self, msgs: &[FrontendMessage<'_>]) -> Result<(String, String), ProxyError> {
            self.send_as(StatementKind::Read, msgs)
        }

        fn send_as(
            &mut self,
            kind: StatementKind,
            msgs: &[FrontendMessage<'_>],
        ) -> Result<(String, String), ProxyError> {
            let (s, c) = self.send_bytes(kind, msgs)?;
            Ok((tags(&s), tags(&c)))
        }

        /// What went to the server and to the client.
        fn send_bytes(
            &mut self,
            kind: StatementKind,
            msgs: &[FrontendMessage<'_>],
        ) -> Result<(Vec<u8>, Vec<u8>), ProxyError> {
            let (mut s, mut c) = (Vec::new(), Vec::new());
            for m in msgs {
                self.relay.send(
                    &frame(m),
                    m,
                    kind,
                    self.tx,
                    &mut self.stmts,
                    &mut self.prepared,
                    StatementNaming {
                        hasher: &self.hasher,
                        salt: 0,
                    },
                    &mut s,
                    &mut c,
                )?;
            }
            Ok((s, c))
        }

        fn receive(&mut self, server_tags: &str) -> Result<String, ProxyError> {
            let mut c = Vec::new();
            for t in server_tags.bytes() {
                let f: Vec<u8> = if t == b'Z' {
                    vec![b'Z', 0, 0, 0, 5, b'I']
                } else {
                    vec![t, 0, 0, 0, 4]
                };
                self.relay
                    .receive(&f, &mut self.stmts, &mut self.prepared, &mut c)?;
            }
            Ok(tags(&c))
        }
    }

    fn parse(name: &[u8]) -> FrontendMessage<'_> {
        FrontendMessage::Parse {
            name,
            query: b"SELECT 1",
            param_types: vec![],
        }
    }

    fn bind(statement: &[u8]) -> FrontendMessage<'_> {
        FrontendMessage::Bind {
            portal: b"",
            statement,
            tail: b"\0\0\0\0\0\0",
        }
    }

    const EXEC: FrontendMessage<'static> = FrontendMessage::Execute {
        portal: b"",
        max_rows: 0,
    };

    #[test]
    fn named_statement_is_prepared_once_per_server_and_reinjected_elsewhere()
    -> Result<(), ProxyError> {
        let mut a = Side::new();
        let (s, c) = a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        assert_eq!((s.as_str(), c.as_str()), ("CPS", ""));
        assert_eq!(a.receive("31Z")?, "1Z");
        assert!(a.relay.is_idle());

        // Same client, a fresh server connection: Bind injects the Parse
        // and hides its answer.
        let mut fresh = StatementIds::default();
        std::mem::swap(&mut a.prepared, &mut fresh);
        let (s, _) = a.send(&[bind(b"s1"), EXEC, FrontendMessage::Sync])?;
        assert_eq!(s, "CPBES");
        assert_eq!(a.receive("312DCZ")?, "2DCZ");

        // Parse again on a server that has it: answered by the proxy.
        let (s, c) = a.send(&[parse(b"s2"), FrontendMessage::Sync])?;
        assert_eq!((s.as_str(), c.as_str()), ("S", "1"));
        assert_eq!(a.receive("Z")?, "Z");
        Ok(())
    }

    /// A name in another client encoding (LATIN1 here) is a key like any
    /// other; the server only ever sees the proxy's ASCII name.
    #[test]
    fn names_in_another_encoding_are_kept_as_bytes() -> Result<(), ProxyError> {
        let mut a = Side::new();
        let name = b"caf\xe9";
        let (s, _) = a.send_bytes(
            StatementKind::Read,
            &[parse(name), bind(name), EXEC, FrontendMessage::Sync],
        )?;
        assert_eq!(tags(&s), "CPBES");
        assert!(a.stmts.get(&name[..]).is_some());
        assert!(!s.windows(name.len()).any(|w| w == name));
        Ok(())
    }

    #[test]
    fn close_of_named_statement_is_answered_in_order() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        let (s, c) = a.send(&[
            bind(b""),
            FrontendMessage::Close {
                kind: b'S',
                name: b"s1",
            },
            FrontendMessage::Sync,
        ])?;
        // No unnamed statement: the server's (another client's) is closed
        // first, so the Bind fails as in PostgreSQL.
        assert_eq!((s.as_str(), c.as_str()), ("CBS", ""));
        assert_eq!(a.receive("32Z")?, "23Z");
        assert!(a.stmts.get(b"s1").is_none());
        Ok(())
    }

    #[test]
    fn the_unnamed_statement_is_parsed_again_on_another_connection() -> Result<(), ProxyError> {
        let mut a = Side::new();
        let unnamed = FrontendMessage::Parse {
            name: b"",
            query: b"SELECT $1::int",
            param_types: vec![23],
        };
        let describe = FrontendMessage::Describe {
            kind: b'S',
            name: b"",
        };
        let (s, _) = a.send(&[unnamed, describe.clone(), FrontendMessage::Sync])?;
        assert_eq!(s, "PDS");
        assert_eq!(a.receive("1tTZ")?, "1tTZ");
        // Same connection: the server has it.
        assert_eq!(a.send(&[bind(b""), EXEC, FrontendMessage::Sync])?.0, "BES");
        assert_eq!(a.receive("2DCZ")?, "2DCZ");
        // Another connection: parsed there first, its answer hidden; once.
        a.relay = Relay::default();
        let (s, c) = a.send(&[bind(b""), EXEC, describe, FrontendMessage::Sync])?;
        assert_eq!((s.as_str(), c.as_str()), ("PBEDS", ""));
        assert_eq!(a.receive("12DCtTZ")?, "2DCtTZ");
        // A simple Query destroys it: later Binds are refused by the
        // server (the Close makes sure it has no other client's).
        a.send(&[FrontendMessage::Query(b"SELECT 1")])?;
        a.receive("TDCZ")?;
        a.relay = Relay::default();
        assert_eq!(a.send(&[bind(b""), EXEC, FrontendMessage::Sync])?.0, "CBES");
        assert_eq!(a.receive("3EZ")?, "EZ");
        Ok(())
    }

    #[test]
    fn error_skips_to_sync_and_forgets_failed_parse() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"bad"), bind(b"bad"), EXEC, FrontendMessage::Sync])?;
        assert_eq!(a.prepared.len(), 1);
        assert_eq!(a.receive("3EZ")?, "EZ");
        assert!(a.prepared.is_empty(), "a failed Parse is not prepared");
        assert!(a.relay.is_idle());
        Ok(())
    }

    #[test]
    fn extended_copy_in_ignores_syncs_until_copy_done() -> Result<(), ProxyError> {
        let mut a = Side::new();
        let copy = FrontendMessage::Parse {
            name: b"",
            query: b"COPY t FROM STDIN",
            param_types: vec![],
        };
        a.send(&[copy, bind(b""), EXEC, FrontendMessage::Sync])?;
        assert_eq!(a.receive("12G")?, "12G");
        a.send(&[FrontendMessage::CopyData(b"1\n"), FrontendMessage::CopyDone])?;
        a.send(&[FrontendMessage::Sync])?;
        assert_eq!(a.relay.pending_ready(), 1);
        assert_eq!(a.receive("CZ")?, "CZ");
        assert!(a.relay.is_idle());
        // Copy data sent before the server's CopyInResponse arrives.
        a.send(&[bind(b""), EXEC, FrontendMessage::Sync])?;
        a.send(&[FrontendMessage::CopyData(b"1\n"), FrontendMessage::CopyDone])?;
        a.send(&[FrontendMessage::Sync])?;
        assert_eq!(a.receive("2GCZ")?, "2GCZ");
        assert!(a.relay.is_idle());
        Ok(())
    }

    #[test]
    fn discard_or_deallocate_forgets_the_servers_statements() -> Result<(), ProxyError> {
        assert!(may_deallocate(b"DISCARD ALL"));
        assert!(may_deallocate(b"/* x */ deallocate prepare all"));
        assert!(may_deallocate(b"DeAlLoCaTe ALL"));
        assert!(may_deallocate(b"SELECT 'caf\xe9'; DISCARD ALL"));
        assert!(!may_deallocate(b"SELECT dealloc, discar FROM t"));
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        // Only a unit classified as changing session state is looked at.
        let (s, _) = a.send(&[FrontendMessage::Query(b"SELECT 'discard'")])?;
        assert_eq!(s, "Q");
        assert_eq!(a.receive("CZ")?, "CZ");
        assert_eq!(a.prepared.len(), 1);
        let (s, _) = a.send_as(
            StatementKind::SessionState,
            &[FrontendMessage::Query(b"DISCARD ALL")],
        )?;
        assert_eq!(s, "Q");
        assert_eq!(a.receive("CZ")?, "CZ");
        // Used again: prepared again (after a Close, in case the DISCARD
        // failed and the statement is still there).
        let (s, _) = a.send(&[bind(b"s1"), EXEC, FrontendMessage::Sync])?;
        assert_eq!(s, "CPBES");
        assert_eq!(a.receive("312DCZ")?, "2DCZ");
        Ok(())
    }

    /// `DEALLOCATE ALL` (or `DISCARD ALL`) removes the client's named
    /// statements too, once the server says it ran, as in PostgreSQL
    /// (a later Bind gets 26000); one parsed behind it before its answer
    /// stays, and a failed one removes nothing.
    #[test]
    fn a_completed_deallocate_all_forgets_the_clients_statements() -> Result<(), ProxyError> {
        let complete = |tag: &str| {
            let mut f = Vec::new();
            pgkeel_wire::BackendMessage::CommandComplete(tag).encode(&mut f);
            f
        };
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        a.send_as(
            StatementKind::SessionState,
            &[FrontendMessage::Query(b"DEALLOCATE ALL")],
        )?;
        a.send(&[parse(b"s2"), FrontendMessage::Sync])?;
        let mut c = Vec::new();
        for f in [complete("DEALLOCATE ALL"), vec![b'Z', 0, 0, 0, 5, b'I']] {
            a.relay.receive(&f, &mut a.stmts, &mut a.prepared, &mut c)?;
        }
        assert_eq!(tags(&c), "CZ");
        assert!(a.stmts.get(b"s1").is_none());
        assert!(a.stmts.get(b"s2").is_some());
        assert_eq!(a.receive("31Z")?, "1Z");
        // The Bind goes to the server under the client's name: 26000.
        let (s, _) = a.send(&[bind(b"s1"), EXEC, FrontendMessage::Sync])?;
        assert_eq!(s, "BES");
        a.receive("EZ")?;
        // Refused (inside a transaction block): nothing is forgotten.
        a.send_as(
            StatementKind::SessionState,
            &[FrontendMessage::Query(b"DISCARD ALL")],
        )?;
        a.receive("EZ")?;
        assert!(a.stmts.get(b"s2").is_some());
        // Another statement's tag while one may be pending removes nothing.
        a.send_as(
            StatementKind::SessionState,
            &[FrontendMessage::Query(b"SELECT 1; DISCARD PLANS")],
        )?;
        let mut c = Vec::new();
        for f in [
            complete("SELECT 1"),
            complete("DISCARD PLANS"),
            vec![b'Z', 0, 0, 0, 5, b'I'],
        ] {
            a.relay.receive(&f, &mut a.stmts, &mut a.prepared, &mut c)?;
        }
        assert!(a.stmts.get(b"s2").is_some());
        Ok(())
    }

    /// The client's settings sent ahead of its query: the answer is not
    /// forwarded, what follows is.
    #[test]
    fn a_hidden_query_is_answered_to_nobody() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.relay.hidden_query(false);
        assert!(a.relay.hidden_pending());
        a.send(&[FrontendMessage::Query(b"SELECT 1")])?;
        assert_eq!(a.receive("TDSCZ")?, "");
        assert!(!a.relay.hidden_pending() && !a.relay.failed());
        assert_eq!(a.receive("TDCZ")?, "TDCZ");
        assert!(a.relay.is_idle());
        Ok(())
    }

    /// A failed hidden query: its error (the server's SQLSTATE) stands for
    /// the answer to what the client sent behind it, made-up answers
    /// included, and the batch ends idle.
    #[test]
    fn a_cancelled_hidden_query_is_told_apart() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.relay.hidden_query(false);
        let mut err = Vec::new();
        encode_error(
            &mut err,
            "ERROR",
            "57014",
            "canceling statement due to user request",
        );
        let mut c = Vec::new();
        a.relay
            .receive(&err, &mut a.stmts, &mut a.prepared, &mut c)?;
        assert!(a.relay.settings_cancelled());
        assert_eq!(error_code(&c[5..]), Some("57014"));
        Ok(())
    }

    #[test]
    fn a_failed_hidden_query_fails_what_follows() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        a.relay.hidden_query(false);
        // The same text under another name: the server has it.
        let (_, c) = a.send(&[parse(b"s2"), bind(b"s2"), EXEC, FrontendMessage::Sync])?;
        assert_eq!(
            c, "",
            "the made-up ParseComplete waits behind the hidden query"
        );
        let mut err = Vec::new();
        encode_error(&mut err, "ERROR", "22023", "invalid value");
        let mut c = Vec::new();
        a.relay
            .receive(&err, &mut a.stmts, &mut a.prepared, &mut c)?;
        a.relay.receive(
            &[b'Z', 0, 0, 0, 5, b'E'],
            &mut a.stmts,
            &mut a.prepared,
            &mut c,
        )?;
        assert_eq!(tags(&c), "E");
        assert_eq!(error_code(&c[5..]), Some("22023"));
        assert!(a.relay.failed() && !a.relay.hidden_pending());
        assert!(!a.relay.settings_cancelled());
        // The aborted block's own errors are not forwarded.
        let mut c = Vec::new();
        a.relay
            .receive(&err, &mut a.stmts, &mut a.prepared, &mut c)?;
        let status = a.relay.receive(
            &[b'Z', 0, 0, 0, 5, b'E'],
            &mut a.stmts,
            &mut a.prepared,
            &mut c,
        )?;
        assert_eq!((tags(&c).as_str(), status), ("Z", Some(TxStatus::Idle)));
        assert_eq!(c.last(), Some(&b'I'));
        assert!(a.relay.is_idle());
        // Nothing of it ran: its Parse recorded nothing.
        assert!(a.stmts.get(b"s2").is_none());
        assert!(a.stmts.get(b"s1").is_some());
        Ok(())
    }

    #[test]
    fn units_whose_first_statement_may_end_a_failed_block() -> Result<(), ProxyError> {
        let mut side = Side::new();
        let unit = |msgs: &[FrontendMessage<'_>]| -> Vec<u8> {
            msgs.iter().flat_map(|m| frame(m)).collect()
        };
        let query = |q: &'static [u8]| FrontendMessage::Query(q);
        let execute = FrontendMessage::Execute {
            portal: b"",
            max_rows: 0,
        };
        let s = &side.stmts;
        assert!(may_end_block(
            &unit(&[query(b"ROLLBACK; INSERT INTO t VALUES (1)")]),
            s
        ));
        assert!(!may_end_block(&unit(&[query(b"SELECT 1; ROLLBACK")]), s));
        assert!(may_end_block(
            &unit(&[
                FrontendMessage::Close {
                    kind: b'S',
                    name: b"x"
                },
                FrontendMessage::Parse {
                    name: b"",
                    query: b"commit",
                    param_types: vec![]
                },
                bind(b""),
                execute.clone(),
                FrontendMessage::Sync
            ]),
            s
        ));
        // A Bind of a name the client never parsed: not known, so "may";
        // of the unnamed statement: by its text (none: the Bind fails).
        assert!(may_end_block(
            &unit(&[bind(b"nope"), FrontendMessage::Sync]),
            s
        ));
        assert!(!may_end_block(
            &unit(&[bind(b""), FrontendMessage::Sync]),
            s
        ));
        side.send(&[
            FrontendMessage::Parse {
                name: b"",
                query: b"ROLLBACK",
                param_types: vec![],
            },
            FrontendMessage::Sync,
        ])?;
        assert!(may_end_block(
            &unit(&[bind(b""), FrontendMessage::Sync]),
            &side.stmts
        ));
        side.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        assert!(!may_end_block(
            &unit(&[bind(b"s1"), execute, FrontendMessage::Sync]),
            &side.stmts
        ));
        assert!(!may_end_block(&unit(&[FrontendMessage::Sync]), &side.stmts));
        Ok(())
    }

    fn error(code: &str, message: &str) -> Vec<u8> {
        let mut e = Vec::new();
        encode_error(&mut e, "ERROR", code, message);
        e
    }

    /// Feeds the server's `frames` and returns what reached the client.
    fn feed(a: &mut Side, frames: &[Vec<u8>]) -> Result<Vec<u8>, ProxyError> {
        let mut c = Vec::new();
        for f in frames {
            if let Some(tx) = a.relay.receive(f, &mut a.stmts, &mut a.prepared, &mut c)? {
                a.tx = tx;
            }
        }
        Ok(c)
    }

    const READY: [u8; 6] = [b'Z', 0, 0, 0, 5, b'I'];
    const FAILED: [u8; 6] = [b'Z', 0, 0, 0, 5, b'E'];

    fn empty(tag: u8) -> Vec<u8> {
        vec![tag, 0, 0, 0, 4]
    }

    /// A second Parse of a name the client has goes to the server under
    /// the proxy's name for it, made to exist first (Close, empty Parse,
    /// answers hidden): the server's refusal reaches the client with the
    /// client's name, and the statement is the old one.
    #[test]
    fn a_second_parse_of_a_name_is_refused_by_the_server() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        let old = a.stmts.get(b"s1").map(|s| s.seq);
        let second = FrontendMessage::Parse {
            name: b"s1",
            query: b"SELECT 2",
            param_types: vec![23],
        };
        let (s, c) = a.send_bytes(
            StatementKind::Read,
            &[second, bind(b"s1"), EXEC, FrontendMessage::Sync],
        )?;
        assert_eq!((tags(&s).as_str(), tags(&c).as_str()), ("CPPBES", ""));
        let dup = frame(&FrontendMessage::Parse {
            name: DUPLICATE,
            query: b"SELECT 2",
            param_types: vec![23],
        });
        assert!(s.windows(dup.len()).any(|w| w == dup));
        let c = feed(
            &mut a,
            &[
                empty(b'3'),
                empty(b'1'),
                error(
                    "42P05",
                    "prepared statement \"pgkeel_duplicate\" already exists",
                ),
                READY.to_vec(),
            ],
        )?;
        assert_eq!(tags(&c), "EZ");
        assert_eq!(error_code(&c[5..]), Some("42P05"));
        assert_eq!(
            error_message(&c[5..]),
            Some("prepared statement \"s1\" already exists")
        );
        assert_eq!(a.stmts.get(b"s1").map(|s| s.seq), old);
        assert!(a.relay.is_idle() && !a.stmts.names_aside());
        // A syntax error of the text comes first, unchanged.
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        let c = feed(
            &mut a,
            &[
                empty(b'3'),
                empty(b'1'),
                error("42601", "syntax error at or near \"SELEC\""),
                READY.to_vec(),
            ],
        )?;
        assert_eq!(error_code(&c[5..]), Some("42601"));
        assert!(!a.stmts.names_aside());
        // Closed first in the batch: a Parse like any other.
        let (s, c) = a.send(&[
            FrontendMessage::Close {
                kind: b'S',
                name: b"s1",
            },
            parse(b"s1"),
            FrontendMessage::Sync,
        ])?;
        assert_eq!((s.as_str(), c.as_str()), ("S", "31"));
        assert_ne!(a.stmts.get(b"s1").map(|s| s.seq), old);
        Ok(())
    }

    /// A named Parse that fails, or that an error before it skips, leaves
    /// no statement (a later Bind gets the server's 26000); a Close an
    /// error skips leaves it.
    #[test]
    fn what_an_error_skips_is_undone() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"bad"), FrontendMessage::Sync])?;
        assert_eq!(a.receive("3EZ")?, "EZ");
        assert!(a.stmts.get(b"bad").is_none());
        let (s, _) = a.send(&[bind(b"bad"), EXEC, FrontendMessage::Sync])?;
        assert_eq!(s, "BES");
        a.receive("EZ")?;

        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        // The same text: the proxy answers, once the Bind before it has.
        let (_, c) = a.send(&[bind(b"x"), parse(b"s2"), FrontendMessage::Sync])?;
        assert_eq!(c, "");
        assert!(a.stmts.get(b"s2").is_some());
        assert_eq!(a.receive("EZ")?, "EZ");
        assert!(a.stmts.get(b"s2").is_none());
        // A Close behind an answer owed: put back when skipped...
        let close = FrontendMessage::Close {
            kind: b'S',
            name: b"s1",
        };
        a.send(&[bind(b"x"), close.clone(), FrontendMessage::Sync])?;
        assert!(a.stmts.get(b"s1").is_none() && a.stmts.names_aside());
        assert_eq!(a.receive("EZ")?, "EZ");
        assert!(a.stmts.get(b"s1").is_some() && !a.stmts.names_aside());
        // ...gone when answered.
        a.send(&[bind(b"x"), close, FrontendMessage::Sync])?;
        assert_eq!(a.receive("2Z")?, "23Z");
        assert!(a.stmts.get(b"s1").is_none() && !a.stmts.names_aside());
        Ok(())
    }

    /// A Parse of a text the server has is answered by the proxy when
    /// nothing is owed ahead of it; behind answers still owed it goes to
    /// the server, under a statement of its own, which the shared one's
    /// users never see.
    #[test]
    fn a_parse_behind_an_unanswered_batch_goes_to_the_server() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        let (s, c) = a.send(&[parse(b"s2"), FrontendMessage::Sync])?;
        assert_eq!((s.as_str(), c.as_str()), ("S", "1"));
        a.receive("Z")?;
        let (s, _) = a.send(&[
            FrontendMessage::Query(b"SELECT 2"),
            parse(b"s3"),
            FrontendMessage::Sync,
        ])?;
        assert_eq!(s, "QCPS");
        let c = a.receive("CZ3")?;
        assert_eq!(c, "CZ");
        let c = a.receive("1Z")?;
        assert_eq!(c, "1Z");
        let name = |n: &[u8]| a.stmts.get(n).map(|s| s.server_name.clone());
        assert_eq!(name(b"s1"), name(b"s2"));
        assert!(name(b"s3").is_some() && name(b"s3") != name(b"s1"));
        assert_eq!(a.prepared.len(), 2);
        Ok(())
    }

    /// In a failed transaction block a Parse goes to the server even when
    /// it has the text: it refuses it (25P02), as PostgreSQL would.
    #[test]
    fn a_parse_in_a_failed_block_goes_to_the_server() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        a.send(&[FrontendMessage::Query(b"SELECT 1/0")])?;
        feed(
            &mut a,
            &[error("22012", "division by zero"), FAILED.to_vec()],
        )?;
        let (s, _) = a.send(&[parse(b"s2"), FrontendMessage::Sync])?;
        assert_eq!(s, "CPS");
        let c = feed(
            &mut a,
            &[
                empty(b'3'),
                error("25P02", "current transaction is aborted"),
                FAILED.to_vec(),
            ],
        )?;
        assert_eq!(tags(&c), "EZ");
        assert!(a.stmts.get(b"s2").is_none());
        // The refused Parse was of a statement of s2's own: the one s1
        // uses is still there, and the own one is forgotten.
        let s1 = a.stmts.get(b"s1").map(|s| s.id);
        assert_eq!(
            a.prepared.iter().copied().collect::<Vec<_>>(),
            Vec::from_iter(s1)
        );
        Ok(())
    }

    /// The refusal's message names the client's statement, its bytes as
    /// sent (another encoding), wherever the server's language puts it;
    /// the other fields are kept.
    #[test]
    fn the_refusal_names_the_clients_statement() -> Result<(), ProxyError> {
        let mut e = Vec::new();
        pgkeel_wire::BackendMessage::ErrorResponse(pgkeel_wire::backend::ErrorFields {
            fields: vec![
                (b'S', "FEHLER"),
                (b'C', "42P05"),
                (
                    b'M',
                    "vorbereitete Anweisung »pgkeel_duplicate« existiert bereits",
                ),
                (b'F', "prepare.c"),
            ],
        })
        .encode(&mut e);
        let mut out = b"x".to_vec();
        renamed_error(&e, DUPLICATE, b"caf\xe9", &mut out);
        let renamed = out.get(1..).unwrap_or_default();
        assert_eq!(
            pgkeel_wire::split_message(renamed, 1 << 20)?,
            Some((b'E', renamed.len()))
        );
        let mut want = "vorbereitete Anweisung »".as_bytes().to_vec();
        want.extend_from_slice(b"caf\xe9");
        want.extend_from_slice("« existiert bereits".as_bytes());
        assert!(renamed.windows(want.len()).any(|w| w == want));
        assert_eq!(error_code(&renamed[5..]), Some("42P05"));
        assert!(renamed.ends_with(b"Fprepare.c\0\0"));
        Ok(())
    }

    /// A Bind or Describe of a `pgkeel_` name the client does not have
    /// goes under the proxy's missing name, closed just before: the
    /// server's 26000 reaches the client with its own name; other names
    /// go as they are.
    #[test]
    fn a_proxy_name_the_client_lacks_is_missing() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[parse(b"s1"), FrontendMessage::Sync])?;
        a.receive("31Z")?;
        let theirs = a.stmts.get(b"s1").map(|s| s.server_name.clone());
        let theirs = theirs.as_deref().unwrap_or_default().as_bytes();
        let mut b = Side::new();
        let (s, c) = b.send_bytes(
            StatementKind::Read,
            &[
                bind(theirs),
                EXEC,
                FrontendMessage::Describe {
                    kind: b'S',
                    name: DUPLICATE,
                },
                FrontendMessage::Sync,
            ],
        )?;
        assert_eq!((tags(&s).as_str(), tags(&c).as_str()), ("CBECDS", ""));
        assert!(!s.windows(theirs.len()).any(|w| w == theirs));
        assert!(!s.windows(DUPLICATE.len()).any(|w| w == DUPLICATE));
        assert!(b.stmts.names_aside());
        let c = feed(
            &mut b,
            &[
                empty(b'3'),
                error(
                    "26000",
                    "prepared statement \"pgkeel_missing\" does not exist",
                ),
                READY.to_vec(),
            ],
        )?;
        assert_eq!(tags(&c), "EZ");
        let mut want = b"prepared statement \"".to_vec();
        want.extend_from_slice(theirs);
        want.extend_from_slice(b"\" does not exist");
        assert_eq!(message_bytes(&c), Some(&want[..]));
        assert!(b.relay.is_idle() && !b.stmts.names_aside());
        // A name without the prefix goes as it is.
        let (s, _) = b.send(&[bind(b"other"), FrontendMessage::Sync])?;
        assert_eq!(s, "BS");
        Ok(())
    }

    /// A Bind sent behind a Parse of its statement that fails: the
    /// server's 26000 names the statement's server-side name, given back
    /// the client's.
    #[test]
    fn a_bind_behind_a_failed_parse_is_renamed() -> Result<(), ProxyError> {
        let mut a = Side::new();
        let (s, _) = a.send(&[
            parse(b"s1"),
            FrontendMessage::Sync,
            bind(b"s1"),
            EXEC,
            FrontendMessage::Sync,
        ])?;
        assert_eq!(s, "CPSBES");
        let server = a.stmts.get(b"s1").map(|s| s.server_name.clone());
        let server = server.unwrap_or_default();
        let c = feed(
            &mut a,
            &[empty(b'3'), error("42601", "syntax error"), READY.to_vec()],
        )?;
        assert_eq!(tags(&c), "EZ");
        assert!(a.stmts.get(b"s1").is_none());
        let c = feed(
            &mut a,
            &[
                error(
                    "26000",
                    &format!("prepared statement \"{server}\" does not exist"),
                ),
                READY.to_vec(),
            ],
        )?;
        assert_eq!(
            error_message(&c[5..]),
            Some("prepared statement \"s1\" does not exist")
        );
        // Nothing owed: forgotten for good.
        assert!(a.stmts.more.as_ref().is_none_or(|m| m.gone.is_empty()));

        // A Close that the failed Parse's error skips puts nothing back.
        a.send(&[
            parse(b"s2"),
            FrontendMessage::Close {
                kind: b'S',
                name: b"s2",
            },
            FrontendMessage::Sync,
        ])?;
        assert!(a.stmts.get(b"s2").is_none() && a.stmts.names_aside());
        let c = feed(
            &mut a,
            &[empty(b'3'), error("42601", "syntax error"), READY.to_vec()],
        )?;
        assert_eq!(tags(&c), "EZ");
        assert!(a.stmts.get(b"s2").is_none() && !a.stmts.names_aside());
        Ok(())
    }

    #[test]
    fn unexpected_server_message_is_a_desync() -> Result<(), ProxyError> {
        let mut a = Side::new();
        a.send(&[FrontendMessage::Query(b"SELECT 1")])?;
        assert!(a.receive("2").is_err());
        Ok(())
    }
}

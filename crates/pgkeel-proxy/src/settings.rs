//! A client's startup settings, without I/O: what the startup packet asks
//! for (its parameters and the `-c`/`--name=value` switches of `options`),
//! what differs between that and what a server connection holds, and the
//! SQL that applies the difference.
//!
//! PostgreSQL takes every startup parameter other than `user`,
//! `database`, `replication` and `options` as a setting for the session
//! (`client_encoding`, `application_name`, `DateStyle`, `TimeZone`, ...).
//! Through the proxy a client shares server connections with others, so
//! its settings are validated once at login (on a server, which
//! normalises them), and applied on each server connection it is given,
//! only where that connection differs ([`changes`]).
//!
//! Values are applied with `pg_catalog.set_config(name, value, false)`,
//! which takes the text as PostgreSQL takes a startup value (a
//! `search_path` of `a,b` is two schemas, where `SET search_path = 'a,b'`
//! would be one), and `NULL` as the value resets the setting. The SQL is
//! pure ASCII (see [`push_literal`]), so it means the same whatever
//! `client_encoding` or `standard_conforming_strings` the connection is in.

use std::sync::Arc;

/// Why a client's startup parameters cannot be honoured (before any
/// server sees them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartupError {
    /// A switch in `options` other than `-c`/`--name=value`: the server
    /// would take some of them (`-B`, `-F`...), the proxy cannot apply
    /// them to shared connections.
    #[error(
        "the startup option {0} is not supported through the proxy: only -c name=value and \
         --name=value are (in the options parameter)"
    )]
    UnsupportedSwitch(String),
    /// `-c name` or `--name` without `=value` (PostgreSQL's wording).
    #[error("{0} requires a value")]
    NoValue(String),
    /// A word in `options` that is not a switch (PostgreSQL's wording).
    #[error("invalid command-line argument for server process: {0}")]
    Stray(String),
    /// A replication connection (`replication=true`/`database`): it
    /// needs a walsender of its own, which a pool cannot give.
    #[error(
        "replication connections are not supported through the proxy: connect to the server \
         directly"
    )]
    Replication,
}

impl StartupError {
    /// The SQLSTATE a client is told.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            StartupError::UnsupportedSwitch(_) | StartupError::Replication => "0A000",
            StartupError::NoValue(_) | StartupError::Stray(_) => "42601",
        }
    }
}

/// A client's settings: lower-case names (GUC names are case-insensitive)
/// and values as the server shows them once validated (`latin1` is kept
/// as `LATIN1`, `iso` as `ISO, MDY`), so they compare with what servers
/// report. Shared by a session and the connections it was applied to.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    entries: Vec<(String, String)>,
    /// Set when these are a client's settings changed by its own plain
    /// `SET`/`RESET` after login (see [`Settings::changed`]).
    changed: Option<Changed>,
    /// `default_transaction_isolation` is serializable (see
    /// [`Settings::serializable`]).
    serializable: bool,
}

/// What changed settings remember of the login.
#[derive(Debug, Clone)]
struct Changed {
    /// The settings the client logged in with (`None`: it gave none),
    /// which `RESET` and `RESET ALL` return to, as in PostgreSQL.
    login: Option<Arc<Settings>>,
}

/// Settings are equal when they hold the same values, however they came
/// to be (a connection holds values, not their history).
impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Settings {}

impl Settings {
    /// Settings from `(name, value)` pairs, names lower-cased, a later
    /// value of a name replacing an earlier one (as PostgreSQL applies
    /// them in turn). `None` when there are none: a client without
    /// settings costs nothing.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Option<Arc<Settings>> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            entries.retain(|(n, _)| *n != name);
            entries.push((name, value));
        }
        (!entries.is_empty()).then(|| Arc::new(Settings::with(entries, None)))
    }

    /// `base` (a client's settings, or a connection's) with `values` in
    /// place: a name with `Some(value)` set to it, with `None` removed
    /// (the server's default). The result remembers the login settings
    /// of `base` (see [`Settings::login`]); it exists even when empty,
    /// if those do.
    pub fn changed(
        base: Option<&Arc<Settings>>,
        values: &[(String, Option<String>)],
    ) -> Option<Arc<Settings>> {
        let mut entries = base.map(|b| b.entries.clone()).unwrap_or_default();
        for (name, value) in values {
            let name = name.to_ascii_lowercase();
            entries.retain(|(n, _)| *n != name);
            if let Some(v) = value {
                entries.push((name, v.clone()));
            }
        }
        let login = Settings::login(base);
        (!entries.is_empty() || login.is_some())
            .then(|| Arc::new(Settings::with(entries, Some(Changed { login }))))
    }

    fn with(entries: Vec<(String, String)>, changed: Option<Changed>) -> Settings {
        let serializable = entries.iter().any(|(n, v)| {
            n == "default_transaction_isolation" && v.eq_ignore_ascii_case("serializable")
        });
        Settings {
            entries,
            changed,
            serializable,
        }
    }

    /// True when the client's transactions are serializable by default: a
    /// hot standby refuses every one of them (0A000), so its reads go
    /// straight to the primary instead of being refused and run again.
    pub fn serializable(settings: Option<&Arc<Settings>>) -> bool {
        settings.is_some_and(|s| s.serializable)
    }

    /// The settings the client of `settings` logged in with: what `RESET
    /// ALL` and `RESET name` return to.
    pub fn login(settings: Option<&Arc<Settings>>) -> Option<Arc<Settings>> {
        let s = settings?;
        match &s.changed {
            None => Some(s.clone()),
            Some(c) => c.login.clone(),
        }
    }

    /// A keyed hash of the settings that can change what a statement's
    /// text means (all but `application_name`), for naming server-side
    /// statements; 0 when there are none of those (as for no settings).
    pub fn fingerprint(&self, hasher: &std::hash::RandomState) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = hasher.build_hasher();
        let mut any = false;
        for (name, value) in self.iter().filter(|(n, _)| *n != "application_name") {
            h.write(name.as_bytes());
            h.write_u8(0);
            h.write(value.as_bytes());
            h.write_u8(0);
            any = true;
        }
        if any { h.finish().max(1) } else { 0 }
    }

    /// The value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The settings in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// True when a connection that holds `applied` already has `wanted`:
/// the check made on every attach, cheap when true (no allocation; a
/// pointer or a short list compared). False does not mean something must
/// be sent: [`changes`] decides.
pub fn in_sync(applied: Option<&Arc<Settings>>, wanted: Option<&Arc<Settings>>) -> bool {
    match (applied, wanted) {
        (None, None) => true,
        (Some(a), Some(w)) => Arc::ptr_eq(a, w) || a == w,
        _ => false,
    }
}

/// What the startup packet asks for, as `(name, value)` pairs in the
/// order PostgreSQL applies them (`options` first, then the other
/// parameters); `user`, `database` and protocol options (`_pq_.*`) are
/// not settings. Names keep the client's case.
pub fn startup_settings(params: &[(&str, &str)]) -> Result<Vec<(String, String)>, StartupError> {
    let mut out = Vec::new();
    for (name, value) in params {
        if *name == "options" {
            out.extend(parse_options(value)?);
        } else if *name == "replication" && !is_false(value) {
            return Err(StartupError::Replication);
        }
    }
    out.extend(
        params
            .iter()
            .filter(|(n, _)| {
                !matches!(*n, "user" | "database" | "options" | "replication")
                    && !n.starts_with("_pq_.")
            })
            .map(|(n, v)| (n.to_string(), v.to_string())),
    );
    Ok(out)
}

/// PostgreSQL's spellings of false (`parse_bool`, the usual ones).
fn is_false(value: &str) -> bool {
    // PostgreSQL's parse_bool: any prefix of "false" or "no", "of"/"off",
    // "0".
    let v = value.trim().to_ascii_lowercase();
    !v.is_empty()
        && ("false".starts_with(&v)
            || "no".starts_with(&v)
            || (v.len() >= 2 && "off".starts_with(&v))
            || v == "0")
}

/// White space as C's `isspace` (which `pg_split_opts` uses): ASCII
/// white space and the vertical tab.
fn is_c_space(c: &char) -> bool {
    c.is_ascii_whitespace() || *c == '\x0b'
}

/// The words of `options` as PostgreSQL splits them (`pg_split_opts`):
/// separated by white space, a backslash taking the next character as is
/// (`\ ` a space, `\\` a backslash).
fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.next_if(is_c_space).is_some() {}
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !is_c_space(c)) {
            match c {
                '\\' => word.extend(chars.next()),
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

/// `name=value` of a `-c` or `--` switch, `-` in the name read as `_`
/// (PostgreSQL's `ParseLongOption`); `switch` names it in the error.
fn long_option(arg: &str, switch: &str) -> Result<(String, String), StartupError> {
    match arg.split_once('=') {
        Some((name, value)) => Ok((name.replace('-', "_"), value.to_string())),
        None => Err(StartupError::NoValue(format!("{switch}{arg}"))),
    }
}

/// The settings of an `options` parameter: `-c name=value`,
/// `-cname=value` and `--name=value`; any other switch or word is an
/// error naming it.
pub fn parse_options(options: &str) -> Result<Vec<(String, String)>, StartupError> {
    let mut out = Vec::new();
    let mut words = split_options(options).into_iter();
    while let Some(word) = words.next() {
        if word == "--" {
            // The end of the switches: nothing may follow.
            if let Some(stray) = words.next() {
                return Err(StartupError::Stray(stray));
            }
        } else if let Some(arg) = word.strip_prefix("--") {
            out.push(long_option(arg, "--")?);
        } else if let Some(arg) = word.strip_prefix("-c") {
            let arg = match arg {
                "" => words
                    .next()
                    .ok_or_else(|| StartupError::NoValue("-c".into()))?,
                arg => arg.to_string(),
            };
            out.push(long_option(&arg, "-c ")?);
        } else if word.len() > 1 && word.starts_with('-') {
            let switch: String = word.chars().take(2).collect();
            return Err(StartupError::UnsupportedSwitch(switch));
        } else {
            return Err(StartupError::Stray(word));
        }
    }
    Ok(out)
}

/// One change to a server connection's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Set `name` to the value.
    Set(&'a str, &'a str),
    /// Back to the connection's default.
    Reset(&'a str),
}

/// The value `name` has on a connection that holds no settings of the
/// proxy's: what it reported at login (only for reported parameters).
fn default_of<'a>(defaults: &'a [(String, String)], name: &str) -> Option<&'a str> {
    defaults
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// True when `query` may reset every setting (`RESET ALL`, `DISCARD
/// ALL`): a case-insensitive look for the keywords, so a false positive
/// only costs the client's settings being applied again.
pub fn may_reset_all(query: &[u8]) -> bool {
    let words: Vec<&[u8]> = query
        .split(|b| b.is_ascii_whitespace() || *b == b';')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|w| {
        (w[0].eq_ignore_ascii_case(b"reset") || w[0].eq_ignore_ascii_case(b"discard"))
            && w[1].eq_ignore_ascii_case(b"all")
    })
}

/// What to run on a connection that holds `applied` (over `defaults`,
/// the values it reported at login) to give it `wanted`: a `Set` where
/// its value differs, a `Reset` of what it holds that is not wanted (and
/// not its default anyway). Allocates nothing: nothing to do is an empty
/// iterator.
pub fn changes<'a>(
    applied: Option<&'a Settings>,
    wanted: Option<&'a Settings>,
    defaults: &'a [(String, String)],
) -> impl Iterator<Item = Change<'a>> + 'a {
    let sets = wanted
        .into_iter()
        .flat_map(|w| w.iter())
        .filter_map(move |(n, v)| {
            let now = applied
                .and_then(|a| a.get(n))
                .or_else(|| default_of(defaults, n));
            (now != Some(v)).then_some(Change::Set(n, v))
        });
    let resets = applied
        .into_iter()
        .flat_map(|a| a.iter())
        .filter_map(move |(n, v)| {
            let kept = wanted.is_some_and(|w| w.get(n).is_some());
            (!kept && default_of(defaults, n) != Some(v)).then_some(Change::Reset(n))
        });
    sets.chain(resets)
}

/// Appends `text` as an SQL expression of type text that is pure ASCII:
/// a quoted literal (`E'...'` when it holds a backslash, so it reads the
/// same whatever `standard_conforming_strings` is), or, for text that is
/// not ASCII, its UTF-8 bytes in hex converted on the server (the bytes
/// of the query are then read the same whatever `client_encoding` the
/// connection is in).
pub fn push_literal(out: &mut String, text: &str) {
    if !text.is_ascii() {
        out.push_str("pg_catalog.convert_from(pg_catalog.decode('");
        for b in text.bytes() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out.push_str("','hex'),'UTF8')");
        return;
    }
    if text.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_call(out: &mut String, change: Change<'_>) {
    out.push_str("pg_catalog.set_config(");
    match change {
        Change::Set(name, value) => {
            push_literal(out, name);
            out.push(',');
            push_literal(out, value);
        }
        Change::Reset(name) => {
            push_literal(out, name);
            out.push_str(",NULL");
        }
    }
    out.push_str(",false)");
}

/// The query that gives the client its startup settings back after its
/// own `RESET ALL` or `DISCARD ALL` (PostgreSQL resets to the values the
/// session started with; the pooled connection resets to its own). Only
/// settings still at the connection's reset value are set: one the client
/// set again after the reset (`RESET ALL; SET application_name = 'x'`),
/// or a reset rolled back with its transaction, or a keyword match that
/// was no reset at all (see [`may_reset_all`]) keeps what the client
/// made. `None` without startup settings. Like [`sync_query`]: pure
/// ASCII, its own READ COMMITTED block.
pub fn restore_query(wanted: &Settings) -> Option<String> {
    let mut pairs = wanted.iter();
    let (name, value) = pairs.next()?;
    let mut sql = String::with_capacity(256);
    sql.push_str(
        "BEGIN ISOLATION LEVEL READ COMMITTED;\
         SELECT pg_catalog.set_config(s.name,v.value,false) FROM (VALUES (",
    );
    push_literal(&mut sql, name);
    sql.push(',');
    push_literal(&mut sql, value);
    for (name, value) in pairs {
        sql.push_str("),(");
        push_literal(&mut sql, name);
        sql.push(',');
        push_literal(&mut sql, value);
    }
    sql.push_str(
        ")) v(name,value) JOIN pg_catalog.pg_settings s \
         ON pg_catalog.lower(s.name)=pg_catalog.lower(v.name) \
         WHERE s.setting IS NOT DISTINCT FROM s.reset_val;COMMIT",
    );
    Some(sql)
}

/// The query that applies `changes` to an attached connection, sent
/// ahead of the client's statements; `None` (nothing allocated) when
/// there is nothing to change. One SELECT inside its own transaction
/// block: when it fails the block stays aborted, so what the client sent
/// behind it does not run with the wrong settings (the proxy then closes
/// the connection). The block is READ COMMITTED whatever the previous
/// client's `default_transaction_isolation` (a hot standby refuses
/// SERIALIZABLE).
pub fn sync_query<'a>(mut changes: impl Iterator<Item = Change<'a>>) -> Option<String> {
    let first = changes.next()?;
    let mut sql = String::with_capacity(96);
    sql.push_str("BEGIN ISOLATION LEVEL READ COMMITTED;SELECT ");
    push_call(&mut sql, first);
    for c in changes {
        sql.push(',');
        push_call(&mut sql, c);
    }
    sql.push_str(";COMMIT");
    Some(sql)
}

/// The query that reads, after a client's plain `SET`/`RESET` of
/// `names`, the values the connection now holds: one row, a column per
/// name, each the value as the server shows it in hex of its UTF-8 (see
/// [`from_hex`]), NULL for a setting that does not exist.
pub fn values_query<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut sql = String::from("SELECT ");
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("pg_catalog.encode(pg_catalog.convert_to(pg_catalog.current_setting(");
        push_literal(&mut sql, name);
        sql.push_str(",true),'UTF8'),'hex')");
    }
    sql
}

/// The login check of a client's `given` settings on a connection at its
/// defaults: each given value set, its column the value as the server
/// shows it (in hex of its UTF-8, so it reads the same whatever encoding
/// the answer is sent in). One statement: when it fails, the connection
/// keeps what it had.
pub fn validation_query(given: &[(String, String)]) -> String {
    let mut sql = String::from("SELECT ");
    for (i, (name, value)) in given.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("pg_catalog.encode(pg_catalog.convert_to(");
        push_call(&mut sql, Change::Set(name, value));
        sql.push_str(",'UTF8'),'hex')");
    }
    sql
}

/// Text from the hex of its UTF-8 bytes (a column of
/// [`validation_query`]); `None` when it is not that.
pub fn from_hex(hex: &[u8]) -> Option<String> {
    let digit = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = hex
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(digit(*hi)? << 4 | digit(*lo)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The ParameterStatus values a client is told at login: the servers'
/// (`params`), with the client's own settings in place of theirs.
pub fn overlay(params: &mut [(String, String)], settings: &Settings) {
    for (name, value) in params.iter_mut() {
        if let Some(mine) = settings.get(name) {
            mine.clone_into(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_and_white_space_read_as_postgresql_reads_them() {
        for v in ["false", "fa", "F", "no", "n", "off", "of", "0", " OFF "] {
            assert!(is_false(v), "{v}");
        }
        for v in ["true", "on", "o", "database", "1", "", "offf"] {
            assert!(!is_false(v), "{v}");
        }
        assert_eq!(split_options("-c\x0ba=1\tb"), vec!["-c", "a=1", "b"]);
    }

    #[test]
    fn resets_of_everything_are_recognised() {
        for q in ["RESET ALL", "discard  all;", "BEGIN; reset\nall; COMMIT"] {
            assert!(may_reset_all(q.as_bytes()), "{q}");
        }
        for q in [
            "RESET search_path",
            "DISCARD PLANS",
            "SELECT 'all'",
            "SET x = 1",
        ] {
            assert!(!may_reset_all(q.as_bytes()), "{q}");
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn settings(list: &[(&str, &str)]) -> Option<Arc<Settings>> {
        Settings::new(pairs(list))
    }

    #[test]
    fn options_are_split_like_postgresql() -> Result<(), StartupError> {
        assert_eq!(
            parse_options("-c statement_timeout=5s  -c search_path=foo")?,
            pairs(&[("statement_timeout", "5s"), ("search_path", "foo")])
        );
        assert_eq!(
            parse_options("-capplication_name=a\\ b\\\\c --work-mem=4MB")?,
            pairs(&[("application_name", "a b\\c"), ("work_mem", "4MB")])
        );
        assert_eq!(
            parse_options("-c search_path=a,b -c x.y=")?,
            pairs(&[("search_path", "a,b"), ("x.y", "")])
        );
        assert_eq!(parse_options("  ")?, Vec::new());
        assert_eq!(parse_options("--")?, Vec::new());
        Ok(())
    }

    #[test]
    fn other_switches_and_words_are_refused_by_name() {
        let err = parse_options("-B 10").err();
        assert_eq!(err, Some(StartupError::UnsupportedSwitch("-B".into())));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("-B") && msg.contains("-c name=value"), "{msg}");
        assert_eq!(
            parse_options("-c statement_timeout"),
            Err(StartupError::NoValue("-c statement_timeout".into()))
        );
        assert_eq!(parse_options("-c"), Err(StartupError::NoValue("-c".into())));
        assert_eq!(
            parse_options("--foo"),
            Err(StartupError::NoValue("--foo".into()))
        );
        assert_eq!(
            parse_options("-c a=1 stray"),
            Err(StartupError::Stray("stray".into()))
        );
        assert_eq!(
            parse_options("-- -c a=1"),
            Err(StartupError::Stray("-c".into()))
        );
        assert_eq!(
            StartupError::UnsupportedSwitch("-F".into()).sqlstate(),
            "0A000"
        );
    }

    #[test]
    fn startup_parameters_are_settings_after_options() -> Result<(), StartupError> {
        let given = startup_settings(&[
            ("user", "app"),
            ("database", "db"),
            ("client_encoding", "LATIN1"),
            ("options", "-c TimeZone=UTC"),
            ("_pq_.ext", "1"),
            ("replication", "off"),
            ("application_name", "myapp"),
        ])?;
        assert_eq!(
            given,
            pairs(&[
                ("TimeZone", "UTC"),
                ("client_encoding", "LATIN1"),
                ("application_name", "myapp")
            ])
        );
        for on in ["true", "database", "1"] {
            assert_eq!(
                startup_settings(&[("user", "a"), ("replication", on)]),
                Err(StartupError::Replication)
            );
        }
        Ok(())
    }

    #[test]
    fn names_are_case_insensitive_and_the_last_value_wins() {
        let s = settings(&[
            ("TimeZone", "UTC"),
            ("a", "1"),
            ("timezone", "Europe/Paris"),
        ]);
        let s = s.as_deref();
        assert_eq!(s.and_then(|s| s.get("TIMEZONE")), Some("Europe/Paris"));
        assert_eq!(s.map(Settings::len), Some(2));
        assert!(Settings::new(Vec::new()).is_none());
    }

    #[test]
    fn only_what_differs_is_changed() {
        let defaults = pairs(&[("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY")]);
        let latin = settings(&[("client_encoding", "LATIN1"), ("statement_timeout", "5s")]);
        let utf8 = settings(&[("client_encoding", "UTF8")]);
        let all = |a: &Option<Arc<Settings>>, w: &Option<Arc<Settings>>| -> Vec<String> {
            changes(a.as_deref(), w.as_deref(), &defaults)
                .map(|c| format!("{c:?}"))
                .collect()
        };
        let exp =
            |cs: &[Change<'_>]| -> Vec<String> { cs.iter().map(|c| format!("{c:?}")).collect() };
        // A fresh connection: what differs from its defaults.
        assert_eq!(
            all(&None, &latin),
            exp(&[
                Change::Set("client_encoding", "LATIN1"),
                Change::Set("statement_timeout", "5s")
            ])
        );
        // The default asked for explicitly: nothing to do.
        assert!(all(&None, &utf8).is_empty());
        assert!(all(&utf8, &None).is_empty());
        // Back from LATIN1: one set, one reset.
        assert_eq!(
            all(&latin, &utf8),
            exp(&[
                Change::Set("client_encoding", "UTF8"),
                Change::Reset("statement_timeout")
            ])
        );
        assert_eq!(
            all(&latin, &None),
            exp(&[
                Change::Reset("client_encoding"),
                Change::Reset("statement_timeout")
            ])
        );
        assert!(all(&latin, &latin.clone()).is_empty());
        assert!(in_sync(latin.as_ref(), latin.clone().as_ref()));
        assert!(in_sync(None, None));
        assert!(!in_sync(utf8.as_ref(), None));
        // Equal settings of two clients: in sync without a pointer match.
        assert!(in_sync(
            settings(&[("a", "1")]).as_ref(),
            settings(&[("A", "1")]).as_ref()
        ));
    }

    #[test]
    fn literals_are_quoted_and_ascii() {
        let lit = |t: &str| {
            let mut s = String::new();
            push_literal(&mut s, t);
            s
        };
        assert_eq!(lit("UTC"), "'UTC'");
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit("a\\b'"), "E'a\\\\b'''");
        assert_eq!(
            lit("café"),
            "pg_catalog.convert_from(pg_catalog.decode('636166c3a9','hex'),'UTF8')"
        );
        assert_eq!(lit("'); DROP TABLE t; --"), "'''); DROP TABLE t; --'");
    }

    #[test]
    fn queries_apply_changes_in_one_statement() {
        assert_eq!(sync_query(std::iter::empty()), None);
        assert_eq!(
            sync_query(
                [
                    Change::Set("client_encoding", "LATIN1"),
                    Change::Reset("search_path")
                ]
                .into_iter()
            )
            .as_deref(),
            Some(
                "BEGIN ISOLATION LEVEL READ COMMITTED;\
                 SELECT pg_catalog.set_config('client_encoding','LATIN1',false),\
                 pg_catalog.set_config('search_path',NULL,false);COMMIT"
            )
        );
        assert_eq!(
            validation_query(&pairs(&[("work_mem", "2MB")])),
            "SELECT pg_catalog.encode(pg_catalog.convert_to(\
             pg_catalog.set_config('work_mem','2MB',false),'UTF8'),'hex')"
        );
    }

    #[test]
    fn the_restore_query_sets_only_what_is_at_its_reset_value() {
        let Some(wanted) = Settings::new([
            ("application_name".to_string(), "start".to_string()),
            ("search_path".to_string(), "a'b".to_string()),
        ]) else {
            panic!("settings");
        };
        let Some(q) = restore_query(&wanted) else {
            panic!("query");
        };
        assert!(q.is_ascii());
        assert!(
            q.starts_with("BEGIN ISOLATION LEVEL READ COMMITTED;SELECT "),
            "{q}"
        );
        assert!(
            q.contains("(VALUES ('application_name','start'),('search_path','a''b'))"),
            "{q}"
        );
        assert!(
            q.ends_with("WHERE s.setting IS NOT DISTINCT FROM s.reset_val;COMMIT"),
            "{q}"
        );
    }

    #[test]
    fn hex_answers_and_login_parameters() {
        assert_eq!(from_hex(b"4c4154494e31").as_deref(), Some("LATIN1"));
        assert_eq!(from_hex(b"636166c3a9").as_deref(), Some("café"));
        assert_eq!(from_hex(b"").as_deref(), Some(""));
        assert_eq!(from_hex(b"4"), None);
        assert_eq!(from_hex(b"zz"), None);
        assert_eq!(from_hex(b"ff"), None);
        let mut params = pairs(&[("client_encoding", "UTF8"), ("TimeZone", "Etc/UTC")]);
        if let Some(s) = settings(&[("timezone", "Europe/Paris")]) {
            overlay(&mut params, &s);
        }
        assert_eq!(
            params,
            pairs(&[("client_encoding", "UTF8"), ("TimeZone", "Europe/Paris")])
        );
    }
}

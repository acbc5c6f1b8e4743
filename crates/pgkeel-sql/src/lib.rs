//! Decides where a statement may run, with PostgreSQL's own grammar
//! (`pg_query`, i.e. libpg_query): reads may go to a replica; writes, DDL,
//! locking reads, writable CTEs, `SELECT INTO` and calls to functions not
//! known to be read-only go to the primary; transaction control and
//! session state are reported so the proxy can keep a transaction on one
//! node and pin a session that changed server state.
//!
//! No parser knows function volatility: a function is read-only only when
//! it is on the [`FunctionPolicy`] allow-list. Results are cached by
//! statement text with literals masked (see [`normalize`]), so a workload
//! that differs only in constants is parsed once.

mod classify;
pub mod functions;
pub mod normalize;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

pub use functions::FunctionPolicy;

/// What a statement (or a string of statements) is, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// Reads only: may run on a replica.
    Read,
    /// Changes data or schema, or is unknown: primary only.
    Write,
    /// `BEGIN`/`START TRANSACTION`; a read-only one may run on a replica.
    Begin {
        /// `READ ONLY` was requested.
        read_only: bool,
    },
    /// COMMIT, ROLLBACK, SAVEPOINT, RELEASE, PREPARE TRANSACTION...
    TransactionControl,
    /// Changes state that outlives the transaction (SET, PREPARE, LISTEN,
    /// temp tables, WITH HOLD cursors, session advisory locks...): the
    /// client must keep its server connection.
    SessionState,
    /// Nothing to run (empty string or only comments).
    Empty,
}

impl StatementKind {
    /// True when the statement may run on a replica outside a transaction
    /// (or opens a read-only transaction).
    pub fn replica_ok(self) -> bool {
        matches!(
            self,
            StatementKind::Read | StatementKind::Empty | StatementKind::Begin { read_only: true }
        )
    }
}

/// Default number of cached classifications.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Classifies statements and remembers the answers.
#[derive(Debug)]
pub struct Classifier {
    policy: FunctionPolicy,
    capacity: usize,
    cache: Mutex<HashMap<Box<str>, StatementKind>>,
}

impl Classifier {
    /// A classifier with `policy` and a cache of at most `capacity` entries
    /// (when full it is emptied: a simple bound that keeps hot statements
    /// coming back cheaply).
    pub fn new(policy: FunctionPolicy, capacity: usize) -> Self {
        Classifier {
            policy,
            capacity: capacity.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The kind of `sql` (one or more statements). Never fails: text the
    /// grammar rejects is a [`StatementKind::Write`], so the primary
    /// reports the syntax error.
    pub fn classify(&self, sql: &str) -> StatementKind {
        // The masked key is built in a per-thread buffer: a cache hit
        // allocates nothing and never calls the parser.
        thread_local! {
            static KEY: RefCell<String> = const { RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            let key_str: &str = if normalize::cache_key_into(sql, key) {
                key
            } else {
                sql
            };
            if let Ok(cache) = self.cache.lock()
                && let Some(kind) = cache.get(key_str)
            {
                return *kind;
            }
            let kind = classify::classify(sql, &self.policy);
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= self.capacity {
                    cache.clear();
                }
                cache.insert(key_str.into(), kind);
            }
            if key.capacity() > 4096 {
                // A huge statement should not keep its buffer.
                *key = String::new();
            }
            kind
        })
    }

    /// Entries currently cached.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(FunctionPolicy::default(), DEFAULT_CACHE_CAPACITY)
    }
}

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

pub mod block_exit;
mod classify;
pub mod deallocate;
pub mod functions;
pub mod normalize;
pub mod session_set;
pub mod snapshot;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

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
    /// Calls `currval()`/`lastval()`: their values come from the
    /// session's last `nextval()`, which only the server connection that
    /// ran it holds, so it must run there (primary only).
    SequenceValue {
        /// It may also write (and call `nextval()`); otherwise it only
        /// reads, apart from those values.
        writes: bool,
    },
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
///
/// The function allow-list can be replaced while the classifier is in use
/// ([`Classifier::set_policy`], a proxy reload): answers cached under the
/// old list are dropped with it, and a classification that was running
/// while the list changed is not cached, so no statement is routed by a
/// list that is no longer configured.
#[derive(Debug)]
pub struct Classifier {
    capacity: usize,
    state: RwLock<State>,
}

/// The policy and the answers given under it, behind one lock so that a
/// policy change and the emptying of the cache are a single step.
#[derive(Debug)]
struct State {
    policy: Arc<FunctionPolicy>,
    /// Bumped by every policy change: a miss classified under an older
    /// generation is not inserted.
    generation: u64,
    /// A fast seeded hash: looked up for every statement routed.
    cache: HashMap<Box<str>, StatementKind, foldhash::fast::RandomState>,
}

impl Classifier {
    /// A classifier with `policy` and a cache of at most `capacity` entries
    /// (when full it is emptied: a simple bound that keeps hot statements
    /// coming back cheaply).
    pub fn new(policy: FunctionPolicy, capacity: usize) -> Self {
        Classifier {
            capacity: capacity.max(1),
            state: RwLock::new(State {
                policy: Arc::new(policy),
                generation: 0,
                cache: HashMap::default(),
            }),
        }
    }

    // Nothing under the lock can panic halfway through an update (a map
    // insert or clear, two field stores), so a poisoned lock still holds
    // consistent state and is used as is.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kind of `sql` (one or more statements). Never fails: text the
    /// grammar rejects is a [`StatementKind::Write`], so the primary
    /// reports the syntax error.
    pub fn classify(&self, sql: &str) -> StatementKind {
        // The masked key is built in a per-thread buffer: a cache hit
        // allocates nothing, takes only a shared (read) lock and never
        // calls the parser.
        thread_local! {
            static KEY: RefCell<String> = const { RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            let key_str: &str = if normalize::cache_key_into(sql, key) {
                key
            } else {
                sql
            };
            let (policy, generation) = {
                let state = self.read();
                if let Some(kind) = state.cache.get(key_str) {
                    return *kind;
                }
                (state.policy.clone(), state.generation)
            };
            // Parsed without the lock: a slow statement holds up nobody.
            let kind = classify::classify(sql, &policy);
            self.remember(key_str, kind, generation);
            if key.capacity() > 4096 {
                // A huge statement should not keep its buffer.
                *key = String::new();
            }
            kind
        })
    }

    /// Caches `kind` for `key` if the policy is still the one of
    /// `generation`. If it changed meanwhile, the answer still serves the
    /// statement that asked (it was asked before the change) but must not
    /// outlive the old policy.
    fn remember(&self, key: &str, kind: StatementKind, generation: u64) {
        let mut state = self.write();
        if state.generation != generation {
            return;
        }
        if state.cache.len() >= self.capacity {
            state.cache.clear();
        }
        state.cache.insert(key.into(), kind);
    }

    /// Replaces the function allow-list (a reload changed
    /// `read_only_functions`): statements are classified with `policy`
    /// from now on, and every answer cached under the old one is dropped.
    pub fn set_policy(&self, policy: FunctionPolicy) {
        let mut state = self.write();
        state.policy = Arc::new(policy);
        state.generation = state.generation.wrapping_add(1);
        state.cache.clear();
    }

    /// Entries currently cached.
    pub fn cached(&self) -> usize {
        self.read().cache.len()
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(FunctionPolicy::default(), DEFAULT_CACHE_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classification that was running when the policy changed must not
    /// put its (old-policy) answer into the new cache.
    #[test]
    fn an_answer_from_before_a_policy_change_is_not_cached() {
        let c = Classifier::default();
        let before = c.read().generation;
        c.set_policy(FunctionPolicy::with_read_only(["f"]));
        c.remember("SELECT f()", StatementKind::Write, before);
        assert_eq!(c.cached(), 0);
        let now = c.read().generation;
        c.remember("SELECT f()", StatementKind::Read, now);
        assert_eq!(c.cached(), 1);
    }
}

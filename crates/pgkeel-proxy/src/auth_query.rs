//! Looking up roles that are not in the proxy's user list on the current
//! primary (PgBouncer's `auth_query`), as the configured `auth_user`, and
//! caching the answers briefly so logins do not each query the primary.
//! Concurrent first logins of one role share a single query (single
//! flight): a burst of clients of a new role costs the primary one
//! connection and one query, not one each.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use pgkeel_wire::md5::is_md5_secret;
use pgkeel_wire::scram::ScramVerifier;
use tokio::sync::watch;
use tokio_postgres::NoTls;

use crate::{ProxyError, Shared};

/// How long one lookup (connect and query) may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Roles found not to exist are looked up again after at most this long,
/// so a role created just after a failed login is not locked out for long.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// A role's stored secret, as `pg_authid.rolpassword` holds it.
#[derive(Debug, Clone)]
pub enum StoredSecret {
    /// A SCRAM-SHA-256 verifier: clients are checked against it and the
    /// proxy logs in with the keys their proofs reveal.
    Scram(ScramVerifier),
    /// An md5 secret (`md5` + hex).
    Md5(String),
}

impl StoredSecret {
    /// Parses a `rolpassword` value; `None` for anything the proxy cannot
    /// use (NULL, clear text from old servers).
    pub fn parse(text: &str) -> Option<Self> {
        if is_md5_secret(text) {
            return Some(StoredSecret::Md5(text.to_string()));
        }
        ScramVerifier::parse(text).ok().map(StoredSecret::Scram)
    }
}

/// What a lookup ended with, as every login waiting for it sees it: the
/// secret (or its absence), or why the query failed (a `String`, so one
/// failure can be handed to every waiter).
pub type Outcome = Result<Option<StoredSecret>, String>;

/// Looked-up secrets (and absences) with the time they were fetched, and
/// the lookups running now (one per role).
#[derive(Debug, Default)]
pub struct SecretCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, (Instant, Option<StoredSecret>)>,
    /// Lookups under way, by role: later logins wait for their outcome.
    flights: HashMap<String, Flight>,
    /// Identifies flights, so a finished one never removes its successor.
    next_flight: u64,
}

#[derive(Debug)]
struct Flight {
    id: u64,
    /// `None` until the lookup ends; closed without a value if the client
    /// running it went away first.
    outcome: watch::Receiver<Option<Outcome>>,
}

/// What a login does about a role's secret (see [`SecretCache::join`]).
#[derive(Debug)]
pub enum Join<'a> {
    /// A fresh cached answer.
    Hit(Option<StoredSecret>),
    /// Another login is running the query: wait for its outcome.
    Wait(watch::Receiver<Option<Outcome>>),
    /// Nobody is: run the query and hand the outcome to [`Leader::finish`].
    Lead(Leader<'a>),
}

/// The login that runs a role's lookup. Dropped without
/// [`Leader::finish`] (its client left, its login timed out), the flight
/// ends without an outcome and a waiting login takes over.
#[derive(Debug)]
pub struct Leader<'a> {
    cache: &'a SecretCache,
    user: String,
    id: u64,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Leader<'_> {
    /// Ends the flight: a found secret (or absence) is cached, a failure
    /// is not (the next login asks again), and every waiting login gets
    /// `outcome`.
    pub fn finish(self, outcome: Outcome) {
        {
            let mut inner = self.cache.lock();
            if let Ok(secret) = &outcome {
                inner.insert(&self.user, secret.clone());
            }
            inner.land(&self.user, self.id);
        }
        // Waiters hold receivers: they see it even though the flight is
        // gone from the map (and the sender is dropped right after).
        self.outcome.send_replace(Some(outcome));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // After `finish` this finds a newer flight or none: a no-op.
        self.cache.lock().land(&self.user, self.id);
    }
}

impl Inner {
    fn fresh(&self, user: &str, ttl: Duration) -> Option<Option<StoredSecret>> {
        let (at, secret) = self.entries.get(user)?;
        let ttl = if secret.is_some() {
            ttl
        } else {
            ttl.min(NEGATIVE_TTL)
        };
        (at.elapsed() < ttl).then(|| secret.clone())
    }

    fn insert(&mut self, user: &str, secret: Option<StoredSecret>) {
        // Bounded: stale entries go before the map grows further.
        if self.entries.len() >= 10_000 {
            self.entries
                .retain(|_, (at, _)| at.elapsed() < NEGATIVE_TTL);
        }
        self.entries
            .insert(user.to_string(), (Instant::now(), secret));
    }

    /// Removes flight `id` of `user`, if it is still the current one.
    fn land(&mut self, user: &str, id: u64) {
        if self.flights.get(user).is_some_and(|f| f.id == id) {
            self.flights.remove(user);
        }
    }
}

impl SecretCache {
    // Every update under the lock is a single map operation: a poisoned
    // lock still guards consistent maps.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer for `user`, if fresh (`Some(None)`: the role was
    /// found not to exist or to have no usable secret).
    pub fn get(&self, user: &str, ttl: Duration) -> Option<Option<StoredSecret>> {
        self.lock().fresh(user, ttl)
    }

    /// Records an answer.
    pub fn put(&self, user: &str, secret: Option<StoredSecret>) {
        self.lock().insert(user, secret);
    }

    /// Drops `user`'s entry (after a failed login: the password may have
    /// changed on the server).
    pub fn forget(&self, user: &str) {
        self.lock().entries.remove(user);
    }

    /// In one step: the fresh cached answer for `user`, or the lookup
    /// already running for it, or the right (and duty) to run it. One
    /// step, so two logins never both decide to run the query.
    pub fn join(&self, user: &str, ttl: Duration) -> Join<'_> {
        let mut inner = self.lock();
        if let Some(hit) = inner.fresh(user, ttl) {
            return Join::Hit(hit);
        }
        if let Some(flight) = inner.flights.get(user) {
            return Join::Wait(flight.outcome.clone());
        }
        let id = inner.next_flight;
        inner.next_flight = id.wrapping_add(1);
        let (tx, rx) = watch::channel(None);
        inner
            .flights
            .insert(user.to_string(), Flight { id, outcome: rx });
        Join::Lead(Leader {
            cache: self,
            user: user.to_string(),
            id,
            outcome: tx,
        })
    }
}

/// The stored secret of `user` from the cache or the primary; `Ok(None)`
/// when the role does not exist, cannot log in, or has no usable secret.
/// Logins of the same role arriving while its query runs wait for that
/// query's outcome (an error included) instead of running their own; the
/// caller's login timeout bounds the wait.
pub async fn lookup(shared: &Shared, user: &str) -> Result<Option<StoredSecret>, ProxyError> {
    let config = &shared.config;
    let Some(auth_user) = config.auth_user.as_deref() else {
        return Ok(None);
    };
    let failed = |reason: String| ProxyError::AuthLookup {
        user: user.to_string(),
        reason,
    };
    loop {
        match shared.secrets.join(user, config.auth_cache_ttl) {
            Join::Hit(secret) => return Ok(secret),
            Join::Wait(mut outcome) => {
                let outcome = outcome
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|o| o.clone());
                match outcome {
                    Some(Ok(secret)) => return Ok(secret),
                    Some(Err(reason)) => return Err(failed(reason)),
                    // The login running it went away first: run it here
                    // (or wait for whoever got there first).
                    None => continue,
                }
            }
            Join::Lead(leader) => {
                shared.metrics.auth_queries.fetch_add(1, Ordering::Relaxed);
                let outcome = query(shared, auth_user, user).await;
                leader.finish(outcome.clone());
                return outcome.map_err(failed);
            }
        }
    }
}

/// Runs the auth query for `user` on the primary: the secret (`None`: no
/// such role, or no usable secret), or why it could not be found.
async fn query(shared: &Shared, auth_user: &str, user: &str) -> Outcome {
    let config = &shared.config;
    let node = shared
        .topology
        .primary()
        .ok_or("no primary is available to run the auth query")?;
    let addr = shared
        .topology
        .backends
        .get(node)
        .map(|b| b.addr)
        .ok_or("no primary is available to run the auth query")?;
    let password = config
        .users
        .get(auth_user)
        .map(|u| u.password.clone())
        .unwrap_or_default();
    let database = config
        .auth_database
        .as_deref()
        .unwrap_or(&config.health_database);
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user(auth_user)
        .password(password)
        .dbname(database)
        .application_name("pgkeel-proxy-auth")
        .connect_timeout(LOOKUP_TIMEOUT);
    let query = async {
        let (client, conn) = cfg.connect(NoTls).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let row = client.query_opt(config.auth_query.as_str(), &[&user]).await;
        drop(client);
        let _ = driver.await;
        row
    };
    let row = tokio::time::timeout(LOOKUP_TIMEOUT, query)
        .await
        .map_err(|_| format!("the primary at {addr} did not answer within {LOOKUP_TIMEOUT:?}"))?
        .map_err(|e| {
            format!(
                "auth query on the primary at {addr} failed: {}",
                db_message(&e)
            )
        })?;
    let text = match row {
        Some(r) => r
            .try_get::<_, Option<String>>(1)
            .map_err(|e| format!("the auth query's second column is not the secret: {e}"))?,
        None => None,
    };
    Ok(text.as_deref().and_then(StoredSecret::parse))
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stored_secrets_and_caches_with_ttls() {
        let scram = postgres_protocol::password::scram_sha_256(b"pw");
        assert!(matches!(
            StoredSecret::parse(&scram),
            Some(StoredSecret::Scram(_))
        ));
        let md5 = pgkeel_wire::md5::md5_secret("u", "pw");
        assert!(matches!(
            StoredSecret::parse(&md5),
            Some(StoredSecret::Md5(_))
        ));
        assert!(StoredSecret::parse("plain text").is_none());

        let cache = SecretCache::default();
        cache.put("a", StoredSecret::parse(&md5));
        cache.put("b", None);
        assert!(matches!(
            cache.get("a", Duration::from_secs(30)),
            Some(Some(_))
        ));
        assert!(matches!(
            cache.get("b", Duration::from_secs(30)),
            Some(None)
        ));
        assert!(cache.get("a", Duration::ZERO).is_none());
        assert!(cache.get("c", Duration::from_secs(30)).is_none());
        cache.forget("a");
        assert!(cache.get("a", Duration::from_secs(30)).is_none());
    }

    const TTL: Duration = Duration::from_secs(30);

    /// One lookup per role at a time: the second login waits and gets the
    /// first one's answer, which is then cached.
    #[tokio::test]
    async fn concurrent_logins_share_one_lookup() {
        let cache = SecretCache::default();
        let Join::Lead(leader) = cache.join("a", TTL) else {
            panic!("the first login should run the query");
        };
        let Join::Wait(mut waiter) = cache.join("a", TTL) else {
            panic!("the second login should wait");
        };
        assert!(
            matches!(cache.join("b", TTL), Join::Lead(_)),
            "other roles run their own"
        );
        let md5 = pgkeel_wire::md5::md5_secret("a", "pw");
        leader.finish(Ok(StoredSecret::parse(&md5)));
        let got = waiter
            .wait_for(Option::is_some)
            .await
            .expect("outcome")
            .clone();
        assert!(
            matches!(got, Some(Ok(Some(StoredSecret::Md5(_))))),
            "{got:?}"
        );
        assert!(matches!(cache.join("a", TTL), Join::Hit(Some(_))));
    }

    /// A failure reaches the waiting logins and is not cached; a lookup
    /// abandoned by its login (timeout, client gone) lets a waiter run it.
    #[tokio::test]
    async fn failures_reach_waiters_and_abandoned_lookups_are_taken_over() {
        let cache = SecretCache::default();
        let Join::Lead(leader) = cache.join("a", TTL) else {
            panic!("lead");
        };
        let Join::Wait(mut waiter) = cache.join("a", TTL) else {
            panic!("wait");
        };
        leader.finish(Err("boom".into()));
        let got = waiter
            .wait_for(Option::is_some)
            .await
            .expect("outcome")
            .clone();
        assert!(matches!(got, Some(Err(ref r)) if r == "boom"), "{got:?}");
        let Join::Lead(leader) = cache.join("a", TTL) else {
            panic!("a failure must not be cached");
        };
        let Join::Wait(mut waiter) = cache.join("a", TTL) else {
            panic!("wait");
        };
        drop(leader);
        assert!(waiter.wait_for(Option::is_some).await.is_err(), "closed");
        assert!(matches!(cache.join("a", TTL), Join::Lead(_)), "taken over");
    }
}

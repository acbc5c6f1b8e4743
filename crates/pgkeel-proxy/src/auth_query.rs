//! Looking up roles that are not in the proxy's user list on the current
//! primary (PgBouncer's `auth_query`), as the configured `auth_user`, and
//! caching the answers briefly so logins do not each query the primary.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgkeel_wire::md5::is_md5_secret;
use pgkeel_wire::scram::ScramVerifier;
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

/// Looked-up secrets (and absences) with the time they were fetched.
#[derive(Debug, Default)]
pub struct SecretCache {
    entries: Mutex<HashMap<String, (Instant, Option<StoredSecret>)>>,
}

impl SecretCache {
    /// The cached answer for `user`, if fresh (`Some(None)`: the role was
    /// found not to exist or to have no usable secret).
    pub fn get(&self, user: &str, ttl: Duration) -> Option<Option<StoredSecret>> {
        let entries = self.entries.lock().ok()?;
        let (at, secret) = entries.get(user)?;
        let ttl = if secret.is_some() {
            ttl
        } else {
            ttl.min(NEGATIVE_TTL)
        };
        (at.elapsed() < ttl).then(|| secret.clone())
    }

    /// Records an answer.
    pub fn put(&self, user: &str, secret: Option<StoredSecret>) {
        if let Ok(mut entries) = self.entries.lock() {
            // Bounded: stale entries go before the map grows further.
            if entries.len() >= 10_000 {
                entries.retain(|_, (at, _)| at.elapsed() < NEGATIVE_TTL);
            }
            entries.insert(user.to_string(), (Instant::now(), secret));
        }
    }

    /// Drops `user`'s entry (after a failed login: the password may have
    /// changed on the server).
    pub fn forget(&self, user: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(user);
        }
    }
}

/// The stored secret of `user` from the cache or the primary; `Ok(None)`
/// when the role does not exist, cannot log in, or has no usable secret.
pub async fn lookup(shared: &Shared, user: &str) -> Result<Option<StoredSecret>, ProxyError> {
    let config = &shared.config;
    let Some(auth_user) = config.auth_user.as_deref() else {
        return Ok(None);
    };
    if let Some(hit) = shared.secrets.get(user, config.auth_cache_ttl) {
        return Ok(hit);
    }
    let fail = |reason: String| ProxyError::AuthLookup {
        user: user.to_string(),
        reason,
    };
    let node = shared
        .topology
        .primary()
        .ok_or_else(|| fail("no primary is available to run the auth query".into()))?;
    let addr = shared
        .topology
        .backends
        .get(node)
        .map(|b| b.addr)
        .ok_or_else(|| fail("no primary is available to run the auth query".into()))?;
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
        .map_err(|_| {
            fail(format!(
                "the primary at {addr} did not answer within {LOOKUP_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| {
            fail(format!(
                "auth query on the primary at {addr} failed: {}",
                db_message(&e)
            ))
        })?;
    let text = match row {
        Some(r) => r.try_get::<_, Option<String>>(1).map_err(|e| {
            fail(format!(
                "the auth query's second column is not the secret: {e}"
            ))
        })?,
        None => None,
    };
    let secret = text.as_deref().and_then(StoredSecret::parse);
    shared.secrets.put(user, secret.clone());
    Ok(secret)
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
}

//! The server side of SCRAM-SHA-256 (RFC 5802/7677 as PostgreSQL uses it):
//! the proxy authenticates clients against stored verifiers and never
//! needs to see a password on the wire.
//!
//! Passwords go through SASLprep first, as PostgreSQL does (see
//! [`prepared_password`]), so roles with non-ASCII passwords log in
//! through the proxy exactly as they do directly.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The mechanism name announced in AuthenticationSASL.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Iterations used for verifiers pgkeel computes (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Why an exchange failed. `BadProof` is the wrong-password case (FATAL
/// 28P01); the others are protocol violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The client's proof does not match the verifier.
    #[error("password authentication failed")]
    BadProof,
    /// A malformed or out-of-order message.
    #[error("malformed SCRAM message: {0}")]
    Protocol(String),
    /// A verifier string that is not `SCRAM-SHA-256$iter:salt$stored:server`.
    #[error("invalid SCRAM verifier: {0}")]
    BadVerifier(String),
    /// No randomness for the server nonce.
    #[error("cannot generate a nonce: {0}")]
    Random(String),
}

fn protocol(msg: &str) -> ScramError {
    ScramError::Protocol(msg.to_string())
}

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// PBKDF2-HMAC-SHA-256 with one output block: SCRAM's `Hi`.
/// The bytes SCRAM hashes for `password`: its SASLprep form (RFC 4013:
/// NFKC, non-ASCII spaces to space, ignorable characters dropped), or the
/// password as given when SASLprep rejects it (prohibited or unassigned
/// characters), which is what PostgreSQL's `pg_saslprep` callers do. A
/// client and a server that disagree here fail every login of a role whose
/// password SASLprep changes.
pub fn prepared_password(password: &str) -> std::borrow::Cow<'_, [u8]> {
    match stringprep::saslprep(password) {
        Ok(std::borrow::Cow::Borrowed(p)) => std::borrow::Cow::Borrowed(p.as_bytes()),
        Ok(std::borrow::Cow::Owned(p)) if !p.is_empty() => std::borrow::Cow::Owned(p.into_bytes()),
        _ => std::borrow::Cow::Borrowed(password.as_bytes()),
    }
}

pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, b) in out.iter_mut().zip(u.iter()) {
            *o ^= b;
        }
    }
    out
}

pub(crate) fn xor(a: &[u8], b: &[u8; 32]) -> [u8; 32] {
    let mut out = *b;
    for (o, x) in out.iter_mut().zip(a) {
        *o ^= x;
    }
    out
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a proxy keeps after a client proved its password against a
/// verifier it cannot reverse: enough to log in to PostgreSQL servers
/// holding that verifier (SCRAM pass-through, as PgBouncer does).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// ClientKey = HMAC(SaltedPassword, "Client Key").
    pub client_key: [u8; 32],
    /// ServerKey, to check the server's signature.
    pub server_key: [u8; 32],
    /// Salt of the verifier the keys belong to.
    pub salt: Vec<u8>,
    /// Iteration count of that verifier.
    pub iterations: u32,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramKeys {
    /// The keys for `password` with a server-chosen salt and count.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(&prepared_password(password), salt, iterations.max(1));
        ScramKeys {
            client_key: hmac(&salted, &[b"Client Key"]),
            server_key: hmac(&salted, &[b"Server Key"]),
            salt: salt.to_vec(),
            iterations: iterations.max(1),
        }
    }
}

/// What the server stores instead of a password (`pg_authid.rolpassword`
/// form): salt, iterations and the two derived keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Derives a verifier from a password with a fresh random salt.
    pub fn from_password(password: &str) -> Result<Self, ScramError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| ScramError::Random(e.to_string()))?;
        Ok(Self::with_salt(password, &salt, DEFAULT_ITERATIONS))
    }

    /// Derives a verifier with a given salt (deterministic, for tests).
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(&prepared_password(password), salt, iterations.max(1));
        let client_key = hmac(&salted, &[b"Client Key"]);
        ScramVerifier {
            iterations: iterations.max(1),
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// A stand-in for a role that does not exist, so the exchange looks
    /// the same as for a real one: the salt is derived from `secret` (kept
    /// for the proxy's lifetime) and the user name, as PostgreSQL's mock
    /// authentication does, so repeated attempts see the same salt. No
    /// proof matches it.
    pub fn mock(secret: &[u8], user: &str) -> Self {
        let salt = hmac(secret, &[b"salt", user.as_bytes()]);
        ScramVerifier {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..16].to_vec(),
            stored_key: hmac(secret, &[b"stored", user.as_bytes()]),
            server_key: hmac(secret, &[b"server", user.as_bytes()]),
        }
    }

    /// The keys a proxy may use to log in to servers holding this
    /// verifier, once a client has proven `client_key` (see
    /// [`ScramServer::client_final_with_key`]).
    pub fn keys(&self, client_key: [u8; 32]) -> ScramKeys {
        ScramKeys {
            client_key,
            server_key: self.server_key,
            salt: self.salt.clone(),
            iterations: self.iterations,
        }
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let bad = |why: &str| ScramError::BadVerifier(why.to_string());
        let rest = s
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or_else(|| bad("does not start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("missing keys"))?;
        let (iter, salt) = params.split_once(':').ok_or_else(|| bad("missing salt"))?;
        let (stored, server) = keys
            .split_once(':')
            .ok_or_else(|| bad("missing server key"))?;
        let iterations: u32 = iter.parse().map_err(|_| bad("bad iteration count"))?;
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| bad("salt is not base64"))?;
        let key = |k: &str| -> Result<[u8; 32], ScramError> {
            STANDARD
                .decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                .ok_or_else(|| bad("key is not 32 base64 bytes"))
        };
        if iterations == 0 {
            return Err(bad("zero iterations"));
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

enum State {
    Initial,
    SentFirst {
        client_first_bare: String,
        server_first: String,
        gs2_header: String,
        nonce: String,
    },
    Done,
}

/// One server-side exchange: feed it the client's two messages, send back
/// what it returns.
pub struct ScramServer {
    verifier: ScramVerifier,
    state: State,
}

impl ScramServer {
    /// An exchange against `verifier`.
    pub fn new(verifier: ScramVerifier) -> Self {
        ScramServer {
            verifier,
            state: State::Initial,
        }
    }

    /// Handles client-first-message with a random server nonce; returns
    /// server-first-message.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<String, ScramError> {
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw).map_err(|e| ScramError::Random(e.to_string()))?;
        self.client_first_with_nonce(msg, &STANDARD.encode(raw))
    }

    /// As [`Self::client_first`] with a given server nonce (tests).
    pub fn client_first_with_nonce(
        &mut self,
        msg: &[u8],
        server_nonce: &str,
    ) -> Result<String, ScramError> {
        if !matches!(self.state, State::Initial) {
            return Err(protocol("client-first-message out of order"));
        }
        let msg = std::str::from_utf8(msg).map_err(|_| protocol("not UTF-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or_else(|| protocol("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(protocol("channel binding is not supported"));
            }
            _ => return Err(protocol("bad channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| protocol("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(protocol("authorization identities are not supported"));
        }
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(r) = attr.strip_prefix("r=") {
                client_nonce = Some(r);
            } else if attr.starts_with("m=") {
                return Err(protocol("mandatory extensions are not supported"));
            }
        }
        let client_nonce = client_nonce
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            .ok_or_else(|| protocol("missing or invalid client nonce"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        self.state = State::SentFirst {
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            gs2_header: format!("{flag},{authzid},"),
            nonce,
        };
        Ok(server_first)
    }

    /// Handles client-final-message; returns server-final-message when the
    /// proof matches, [`ScramError::BadProof`] when it does not.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<String, ScramError> {
        self.client_final_with_key(msg)
            .map(|(server_final, _)| server_final)
    }

    /// As [`Self::client_final`], also returning the ClientKey the proof
    /// revealed (ClientProof XOR HMAC(StoredKey, AuthMessage), checked
    /// against StoredKey): with it and the ServerKey a proxy can log in to
    /// servers that hold the same verifier without knowing the password.
    pub fn client_final_with_key(&mut self, msg: &[u8]) -> Result<(String, [u8; 32]), ScramError> {
        let State::SentFirst {
            client_first_bare,
            server_first,
            gs2_header,
            nonce,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(protocol("client-final-message out of order"));
        };
        let msg = std::str::from_utf8(msg).map_err(|_| protocol("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or_else(|| protocol("missing proof"))?;
        let mut channel = None;
        let mut final_nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                final_nonce = Some(r);
            }
        }
        if channel != Some(STANDARD.encode(gs2_header.as_bytes()).as_str()) {
            return Err(protocol("channel binding data does not match"));
        }
        if final_nonce != Some(nonce.as_str()) {
            return Err(protocol("nonce does not match"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| protocol("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(protocol("proof has the wrong length"));
        }
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let client_key = xor(&proof, &signature);
        if !constant_time_eq(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok((
            format!("v={}", STANDARD.encode(server_signature)),
            client_key,
        ))
    }
}

/// Splits a SASLInitialResponse body into mechanism and client data.
pub fn parse_initial_response(body: &[u8]) -> Result<(&str, &[u8]), ScramError> {
    let end = body
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| protocol("unterminated mechanism"))?;
    let mech = std::str::from_utf8(&body[..end]).map_err(|_| protocol("mechanism not UTF-8"))?;
    let rest = &body[end + 1..];
    if rest.len() < 4 {
        return Err(protocol("truncated initial response"));
    }
    let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let data = &rest[4..];
    if len == -1 {
        return Ok((mech, &[]));
    }
    if usize::try_from(len).ok() != Some(data.len()) {
        return Err(protocol("initial response length mismatch"));
    }
    Ok((mech, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn exchange(verifier: &ScramVerifier, password: &str) -> Result<(), ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let mut server = ScramServer::new(verifier.clone());
        let first = server.client_first(client.message())?;
        client
            .update(first.as_bytes())
            .map_err(|e| protocol(&e.to_string()))?;
        let last = server.client_final(client.message())?;
        client
            .finish(last.as_bytes())
            .map_err(|e| protocol(&format!("client rejected server: {e}")))
    }

    #[test]
    fn postgres_protocol_client_authenticates() -> Result<(), ScramError> {
        let v = ScramVerifier::from_password("s3cret")?;
        exchange(&v, "s3cret")
    }

    #[test]
    fn non_ascii_passwords_are_prepared_like_postgres() -> Result<(), ScramError> {
        // NFKC (the roman numeral), a no-break space mapped to a space, a
        // soft hyphen dropped: postgres-protocol's client applies SASLprep,
        // as libpq does.
        let password = "\u{2168} pa\u{00A0}ss\u{00AD}word \u{e4}";
        assert_eq!(
            &*prepared_password(password),
            "IX pa ssword \u{e4}".as_bytes()
        );
        exchange(&ScramVerifier::from_password(password)?, password)?;
        // A verifier PostgreSQL would store for it.
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        exchange(&ScramVerifier::parse(&text)?, password)?;
        // The proxy's own client side derives the same keys.
        let salt = b"0123456789abcdef";
        assert_eq!(
            ScramKeys::from_password(password, salt, 4096).client_key,
            ScramKeys::from_password("IX pa ssword \u{e4}", salt, 4096).client_key
        );
        // SASLprep refuses prohibited characters: used as given.
        assert_eq!(&*prepared_password("a\u{0007}b"), b"a\x07b");
        Ok(())
    }

    #[test]
    fn wrong_password_is_bad_proof() -> Result<(), ScramError> {
        let v = ScramVerifier::from_password("s3cret")?;
        assert_eq!(exchange(&v, "nope"), Err(ScramError::BadProof));
        Ok(())
    }

    #[test]
    fn verifier_text_round_trips_and_matches_postgres() -> Result<(), ScramError> {
        let text = postgres_protocol::password::scram_sha_256(b"pw");
        let v = ScramVerifier::parse(&text)?;
        assert_eq!(v.to_string(), text);
        exchange(&v, "pw")?;
        assert!(ScramVerifier::parse("md5abc").is_err());
        Ok(())
    }

    #[test]
    fn rejects_channel_binding_and_replayed_steps() -> Result<(), ScramError> {
        let v = ScramVerifier::with_salt("pw", b"salt", 4096);
        let mut s = ScramServer::new(v.clone());
        assert!(s.client_first(b"p=tls-server-end-point,,n=,r=abc").is_err());
        let mut s = ScramServer::new(v.clone());
        assert!(s.client_final(b"c=biws,r=x,p=AAAA").is_err());
        // A failed step ends the exchange.
        assert!(s.client_first(b"n,,n=,r=abc").is_err());
        let mut s = ScramServer::new(v);
        s.client_first_with_nonce(b"n,,n=,r=abc", "def")?;
        assert!(s.client_final(b"c=biws,r=abcZZZ,p=AAAA").is_err());
        Ok(())
    }
}

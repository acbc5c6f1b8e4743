//! The client side of SCRAM-SHA-256, as the proxy logs in to PostgreSQL:
//! from a clear-text password, or from [`ScramKeys`] recovered while a
//! client authenticated (pass-through), in which case the proxy never
//! knows the password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::scram::{ScramError, ScramKeys, constant_time_eq, hmac, sha256, xor};

/// What the client proves knowledge of.
#[derive(Clone)]
pub enum ClientSecret {
    /// A clear-text password (keys are derived with the server's salt).
    Password(String),
    /// Keys recovered from a client's proof; the server must hold the
    /// same verifier (salt and iteration count are checked).
    Keys(ScramKeys),
}

enum Step {
    First,
    Final {
        auth_message: String,
        server_key: [u8; 32],
    },
    Done,
}

/// One exchange: send [`Self::client_first`], feed the server's messages to
/// [`Self::server_first`] and [`Self::server_final`].
pub struct ScramClient {
    secret: ClientSecret,
    nonce: String,
    step: Step,
}

fn protocol(msg: &str) -> ScramError {
    ScramError::Protocol(msg.to_string())
}

impl ScramClient {
    /// A new exchange with a random client nonce.
    pub fn new(secret: ClientSecret) -> Result<Self, ScramError> {
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw).map_err(|e| ScramError::Random(e.to_string()))?;
        Ok(Self::with_nonce(secret, &STANDARD.encode(raw)))
    }

    /// As [`Self::new`] with a given nonce (tests).
    pub fn with_nonce(secret: ClientSecret, nonce: &str) -> Self {
        ScramClient {
            secret,
            nonce: nonce.to_string(),
            step: Step::First,
        }
    }

    /// client-first-message (PostgreSQL ignores the SCRAM user name: the
    /// startup message names the role).
    pub fn client_first(&self) -> String {
        format!("n,,n=,r={}", self.nonce)
    }

    /// Handles server-first-message; returns client-final-message.
    pub fn server_first(&mut self, msg: &[u8]) -> Result<String, ScramError> {
        if !matches!(self.step, Step::First) {
            return Err(protocol("server-first-message out of order"));
        }
        self.step = Step::Done;
        let text = std::str::from_utf8(msg).map_err(|_| protocol("not UTF-8"))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for attr in text.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = Some(v);
            } else if let Some(v) = attr.strip_prefix("i=") {
                iterations = Some(v);
            }
        }
        let nonce = nonce
            .filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len())
            .ok_or_else(|| protocol("server nonce does not extend ours"))?;
        let salt = STANDARD
            .decode(salt.ok_or_else(|| protocol("missing salt"))?)
            .map_err(|_| protocol("salt is not base64"))?;
        let iterations: u32 = iterations
            .and_then(|i| i.parse().ok())
            .filter(|i| *i > 0)
            .ok_or_else(|| protocol("missing or bad iteration count"))?;
        let keys = match &self.secret {
            ClientSecret::Password(p) => ScramKeys::from_password(p, &salt, iterations),
            ClientSecret::Keys(k) => {
                if k.salt != salt || k.iterations != iterations {
                    return Err(ScramError::BadVerifier(
                        "the server's verifier differs from the one the client proved \
                         (was the password changed?)"
                            .into(),
                    ));
                }
                k.clone()
            }
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", &self.client_first()[3..]);
        let signature = hmac(&sha256(&keys.client_key), &[auth_message.as_bytes()]);
        let proof = xor(&keys.client_key, &signature);
        self.step = Step::Final {
            auth_message,
            server_key: keys.server_key,
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)))
    }

    /// Checks server-final-message: the server must prove it holds the
    /// verifier too.
    pub fn server_final(&mut self, msg: &[u8]) -> Result<(), ScramError> {
        let Step::Final {
            auth_message,
            server_key,
        } = std::mem::replace(&mut self.step, Step::Done)
        else {
            return Err(protocol("server-final-message out of order"));
        };
        let text = std::str::from_utf8(msg).map_err(|_| protocol("not UTF-8"))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(protocol(&format!("server error: {e}")));
        }
        let signature = text
            .strip_prefix("v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or_else(|| protocol("missing server signature"))?;
        let expected = hmac(&server_key, &[auth_message.as_bytes()]);
        if !constant_time_eq(&signature, &expected) {
            return Err(protocol("the server's signature does not match"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::{ScramServer, ScramVerifier};

    fn login(verifier: &ScramVerifier, secret: ClientSecret) -> Result<(), ScramError> {
        let mut client = ScramClient::new(secret)?;
        let mut server = ScramServer::new(verifier.clone());
        let first = server.client_first(client.client_first().as_bytes())?;
        let last = client.server_first(first.as_bytes())?;
        let fin = server.client_final(last.as_bytes())?;
        client.server_final(fin.as_bytes())
    }

    #[test]
    fn password_client_logs_in() -> Result<(), ScramError> {
        let v = ScramVerifier::from_password("pw")?;
        login(&v, ClientSecret::Password("pw".into()))?;
        assert_eq!(
            login(&v, ClientSecret::Password("nope".into())),
            Err(ScramError::BadProof)
        );
        Ok(())
    }

    #[test]
    fn recovered_client_key_logs_in_without_the_password() -> Result<(), ScramError> {
        // A verifier as PostgreSQL stores it; a real client proves the
        // password to the proxy, which recovers ClientKey.
        let v = ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(b"pw"))?;
        let mut client = postgres_protocol::authentication::sasl::ScramSha256::new(
            b"pw",
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let mut proxy = ScramServer::new(v.clone());
        let first = proxy.client_first(client.message())?;
        client
            .update(first.as_bytes())
            .map_err(|e| protocol(&e.to_string()))?;
        let (fin, client_key) = proxy.client_final_with_key(client.message())?;
        client
            .finish(fin.as_bytes())
            .map_err(|e| protocol(&e.to_string()))?;
        let keys = v.keys(client_key);
        // The recovered key is the one the password derives.
        let derived = ScramKeys::from_password("pw", &keys.salt, keys.iterations);
        assert_eq!(keys, derived);
        // With the keys alone the proxy logs in to a server with the same
        // verifier, and checks that server's signature.
        login(&v, ClientSecret::Keys(keys.clone()))?;
        // A server with another verifier (password changed) is refused
        // before any proof is sent.
        let other = ScramVerifier::from_password("pw")?;
        assert!(matches!(
            login(&other, ClientSecret::Keys(keys)),
            Err(ScramError::BadVerifier(_))
        ));
        Ok(())
    }

    #[test]
    fn wrong_proof_recovers_no_key() -> Result<(), ScramError> {
        let v = ScramVerifier::from_password("pw")?;
        let mut client = ScramClient::new(ClientSecret::Password("bad".into()))?;
        let mut server = ScramServer::new(v);
        let first = server.client_first(client.client_first().as_bytes())?;
        let last = client.server_first(first.as_bytes())?;
        assert_eq!(
            server.client_final_with_key(last.as_bytes()),
            Err(ScramError::BadProof)
        );
        Ok(())
    }

    #[test]
    fn forged_server_signature_is_refused() -> Result<(), ScramError> {
        let v = ScramVerifier::from_password("pw")?;
        let mut client = ScramClient::new(ClientSecret::Password("pw".into()))?;
        let mut server = ScramServer::new(v);
        let first = server.client_first(client.client_first().as_bytes())?;
        client.server_first(first.as_bytes())?;
        assert!(client.server_final(b"v=AAAA").is_err());
        Ok(())
    }

    #[test]
    fn mock_salt_is_stable_per_user_and_secret() {
        let a = ScramVerifier::mock(b"k1", "alice").to_string();
        let salt = |s: &str| s.split('$').nth(1).map(str::to_string);
        assert_eq!(a, ScramVerifier::mock(b"k1", "alice").to_string());
        assert_ne!(
            salt(&a),
            salt(&ScramVerifier::mock(b"k1", "bob").to_string())
        );
        assert_ne!(
            salt(&a),
            salt(&ScramVerifier::mock(b"k2", "alice").to_string())
        );
    }
}

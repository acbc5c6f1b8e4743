//! What the proxy logs in to PostgreSQL servers with for a role: a
//! password (static users), SCRAM keys recovered from a client's proof
//! (auth-query users with SCRAM verifiers), or an md5 secret (auth-query
//! users with md5 passwords, when md5 is allowed). Cheap to clone: every
//! session of the role holds one.

use std::sync::Arc;

use pgkeel_wire::scram::ScramKeys;
use pgkeel_wire::scram_client::ClientSecret;

/// A role's server-side login secret.
#[derive(Clone)]
pub enum Credential {
    /// Clear-text password.
    Password(Arc<str>),
    /// ClientKey and ServerKey of the verifier the servers hold.
    Scram(Arc<ScramKeys>),
    /// The stored md5 secret (`md5` + hex), all md5 auth needs.
    Md5(Arc<str>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::Password(_) => "Credential::Password(..)",
            Credential::Scram(_) => "Credential::Scram(..)",
            Credential::Md5(_) => "Credential::Md5(..)",
        })
    }
}

impl Credential {
    /// A password credential.
    pub fn password(p: &str) -> Self {
        Credential::Password(p.into())
    }

    /// The SCRAM client secret, if this credential can do SCRAM.
    pub fn scram_secret(&self) -> Option<ClientSecret> {
        match self {
            Credential::Password(p) => Some(ClientSecret::Password(p.to_string())),
            Credential::Scram(k) => Some(ClientSecret::Keys(k.as_ref().clone())),
            Credential::Md5(_) => None,
        }
    }

    /// The answer to an md5 challenge, if this credential can give one.
    pub fn md5_answer(&self, user: &str, salt: [u8; 4]) -> Option<String> {
        use pgkeel_wire::md5::{md5_response, md5_secret};
        match self {
            Credential::Password(p) => Some(md5_response(&md5_secret(user, p), salt)),
            Credential::Md5(secret) => Some(md5_response(secret, salt)),
            Credential::Scram(_) => None,
        }
    }
}

//! PostgreSQL's md5 password scheme, for the proxy's opt-in md5 support:
//! the stored secret is `"md5" + hex(md5(password + user))` and a login
//! answers a 4-byte salt with `"md5" + hex(md5(hex_part_of_secret + salt))`.
//! Knowing the stored secret is enough to log in, which is why md5 is off
//! unless explicitly enabled.

use ::md5::{Digest, Md5};

use crate::scram::constant_time_eq;

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` looks like a stored md5 secret (`md5` + 32 hex digits), as
/// `pg_authid.rolpassword` holds it.
pub fn is_md5_secret(s: &str) -> bool {
    s.len() == 35
        && s.starts_with("md5")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The stored secret for `user` with `password` (what PostgreSQL keeps
/// when `password_encryption = md5`).
pub fn md5_secret(user: &str, password: &str) -> String {
    format!("md5{}", md5_hex(&[password.as_bytes(), user.as_bytes()]))
}

/// The PasswordMessage body (without the NUL) answering `salt` for a
/// stored `secret`: what a client computes from the password, and what
/// the proxy computes from the secret alone when passing md5 through.
pub fn md5_response(secret: &str, salt: [u8; 4]) -> String {
    let hex = secret.strip_prefix("md5").unwrap_or(secret);
    format!("md5{}", md5_hex(&[hex.as_bytes(), &salt]))
}

/// Checks a client's md5 answer (NUL already stripped) in constant time.
pub fn md5_verify(secret: &str, salt: [u8; 4], response: &[u8]) -> bool {
    constant_time_eq(md5_response(secret, salt).as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_postgres_protocol_client() {
        let salt = [1, 2, 3, 4];
        let secret = md5_secret("alice", "pw");
        assert!(is_md5_secret(&secret));
        let client = postgres_protocol::authentication::md5_hash(b"alice", b"pw", salt);
        assert_eq!(md5_response(&secret, salt), client);
        assert!(md5_verify(&secret, salt, client.as_bytes()));
        assert!(!md5_verify(&secret, [4, 3, 2, 1], client.as_bytes()));
        let other = postgres_protocol::authentication::md5_hash(b"alice", b"nope", salt);
        assert!(!md5_verify(&secret, salt, other.as_bytes()));
    }

    #[test]
    fn known_vector_and_shape() {
        // SELECT 'md5' || md5('pw' || 'alice') in PostgreSQL.
        assert_eq!(md5_secret("alice", "pw").len(), 35);
        assert_eq!(
            md5_secret("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        assert!(!is_md5_secret("SCRAM-SHA-256$4096:abc"));
        assert!(!is_md5_secret("md5XYZ"));
    }
}

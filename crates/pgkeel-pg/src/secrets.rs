//! Generated passwords. pgkeel never ships a default password: each role
//! gets a random one at bootstrap, stored in a 0600 file.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::PgError;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random password of `len` alphanumerics (URL- and conninfo-safe, so it
/// never needs escaping), drawn from the kernel's CSPRNG without modulo bias.
pub fn generate_password(len: usize) -> Result<String, PgError> {
    let path = Path::new("/dev/urandom");
    let mut source = File::open(path).map_err(|e| PgError::io("open", path, e))?;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    // 248 = 4 * 62: bytes at or above it would bias the first letters.
    while out.len() < len {
        source
            .read_exact(&mut buf)
            .map_err(|e| PgError::io("read", path, e))?;
        for &b in &buf {
            if b < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// Reads a password file written by pgkeel.
pub fn read_password(path: &Path) -> Result<String, PgError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| PgError::io("read password file", path, e))
}

/// A libpq password file line (`host:port:db:user:password`) matching any
/// host, port and database for `user`.
pub fn pgpass_line(user: &str, password: &str) -> String {
    format!("*:*:*:{user}:{password}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_safe() {
        let a = generate_password(32).expect("urandom");
        let b = generate_password(32).expect("urandom");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}

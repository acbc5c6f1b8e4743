//! TLS towards clients (rustls with the `ring` provider): loading the
//! certificate chain and key at startup, loading them again on a reload
//! (certificate renewal), and whether plaintext logins are still accepted.
//! Connections to PostgreSQL stay plaintext: the servers are on loopback or
//! a private network the proxy trusts.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::ProxyError;

/// Shared with the `[proxy]` section of the cluster configuration.
pub use pgkeel_core::config::TlsMode;

/// The configured client TLS: the acceptor new connections use. A reload
/// replaces it ([`ClientTls::reload`]) so that a renewed certificate is
/// served without a restart; connections already made keep the session
/// they negotiated.
pub struct ClientTls {
    current: RwLock<Loaded>,
}

/// One loaded certificate chain and key.
struct Loaded {
    acceptor: TlsAcceptor,
    /// The chain served, to tell whether a reload changed anything.
    chain: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An acceptor cannot be printed itself.
        f.write_str("ClientTls(..)")
    }
}

impl ClientTls {
    /// Loads `cert` and `key` (see [`acceptor`]).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, ProxyError> {
        Ok(ClientTls {
            current: RwLock::new(load(cert, key)?),
        })
    }

    /// The acceptor for a new connection (a cheap handle: the
    /// configuration behind it is shared).
    pub fn acceptor(&self) -> TlsAcceptor {
        // Only whole values are stored under the lock: a poisoned one is
        // still consistent.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .acceptor
            .clone()
    }

    /// Reads `cert` and `key` again (a reload: renewals replace the files
    /// in place, so this happens even when the paths did not change) and
    /// serves them to new connections. `Ok(true)` when the certificate
    /// chain differs from the one served before. On error nothing
    /// changes: the certificate in use stays, so a half-written or wrong
    /// file never takes TLS down.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<bool, ProxyError> {
        let loaded = load(cert, key)?;
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let changed = current.chain != loaded.chain;
        // Replaced even when the chain is the same: the key may be new.
        *current = loaded;
        Ok(changed)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ProxyError> {
    std::fs::read(path).map_err(|e| ProxyError::TlsFile {
        path: path.to_path_buf(),
        problem: format!("cannot read the {what}: {e}"),
    })
}

/// The acceptor for a PEM certificate chain (leaf first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1). Errors name the file and what to
/// fix, so a bad file stops the proxy at startup, not at the first login.
pub fn acceptor(cert: &Path, key: &Path) -> Result<ClientTls, ProxyError> {
    ClientTls::load(cert, key)
}

fn load(cert: &Path, key: &Path) -> Result<Loaded, ProxyError> {
    let bad_cert = |problem: String| ProxyError::TlsFile {
        path: cert.to_path_buf(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert, "certificate chain")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(bad_cert(
            "no CERTIFICATE block in it: give the PEM certificate chain, leaf first".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key, "private key")?).map_err(|e| {
        ProxyError::TlsFile {
            path: key.to_path_buf(),
            problem: format!(
                "no usable PEM private key in it ({e}): give an unencrypted PKCS#8, \
                     PKCS#1 (RSA) or SEC1 (EC) key"
            ),
        }
    })?;
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ProxyError::Config(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key_der)
            .map_err(|e| ProxyError::TlsFile {
                path: key.to_path_buf(),
                problem: format!(
                    "it does not go with the certificate in {} ({e}): give the key of the leaf \
             certificate",
                    cert.display()
                ),
            })?;
    let mut config = config;
    // What libpq 17+ offers; clients without ALPN are still served.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("pgkeel-tls-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let e = acceptor(&cert, &key).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|m| m.contains("cert.pem")),
            "{e:?}"
        );
        let _ = std::fs::write(&cert, "not pem");
        let _ = std::fs::write(&key, "not pem");
        let e = acceptor(&cert, &key).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("cert.pem") && m.contains("CERTIFICATE")),
            "{e:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A reload serves renewed files under the same paths; a bad file
    /// (unreadable, or a key that does not go with the certificate) is an
    /// error naming it and leaves the loaded certificate in place.
    #[test]
    fn reload_swaps_the_certificate_and_keeps_it_on_errors() {
        let dir = std::env::temp_dir().join(format!("pgkeel-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cert = dir.join("proxy.crt");
        let key = dir.join("proxy.key");
        let (one_cert, one_key) = self_signed("one.test");
        let (two_cert, two_key) = self_signed("two.test");
        std::fs::write(&cert, &one_cert).expect("write");
        std::fs::write(&key, &one_key).expect("write");
        let tls = ClientTls::load(&cert, &key).expect("load");
        let served = |tls: &ClientTls| tls.current.read().expect("lock").chain.clone();
        let first = served(&tls);
        assert!(!tls.reload(&cert, &key).expect("same files"), "unchanged");

        std::fs::write(&cert, &two_cert).expect("write");
        std::fs::write(&key, &two_key).expect("write");
        assert!(tls.reload(&cert, &key).expect("renewed files"));
        let second = served(&tls);
        assert_ne!(first, second);

        // Half a renewal: the new certificate with the old key.
        std::fs::write(&cert, &one_cert).expect("write");
        let e = tls.reload(&cert, &key).expect_err("mismatched key");
        assert!(e.to_string().contains("proxy.key"), "{e}");
        assert_eq!(served(&tls), second);
        std::fs::write(&cert, "garbage").expect("write");
        let e = tls.reload(&cert, &key).expect_err("garbage");
        assert!(e.to_string().contains("proxy.crt"), "{e}");
        assert_eq!(served(&tls), second);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

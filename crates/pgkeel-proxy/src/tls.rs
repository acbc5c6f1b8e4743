//! TLS towards clients (rustls with the `ring` provider): loading the
//! certificate chain and key at startup, and whether plaintext logins are
//! still accepted. Connections to PostgreSQL stay plaintext: the servers
//! are on loopback or a private network the proxy trusts.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::ProxyError;

/// Shared with the `[proxy]` section of the cluster configuration.
pub use pgkeel_core::config::TlsMode;

/// The configured client TLS (an acceptor cannot be printed itself).
#[derive(Clone)]
pub struct ClientTls(pub TlsAcceptor);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls(..)")
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
            .with_single_cert(chain, key_der)
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
    Ok(ClientTls(TlsAcceptor::from(Arc::new(config))))
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
}

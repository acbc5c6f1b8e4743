//! How the proxy reaches etcd's JSON gateway when the cluster's etcd runs
//! with TLS and authentication: a rustls connector trusting the cluster's
//! CA and presenting its client certificate, and the token
//! `/v3/auth/authenticate` hands out for the user's password (the gateway
//! does not map client certificates to users).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::EtcdError;

/// TLS material (PEM) and credentials for etcd, as configured.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GatewayAccess {
    /// CA, client certificate and key.
    pub tls: Option<(String, String, String)>,
    /// User and password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for GatewayAccess {
    /// Never prints keys or passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayAccess")
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// A byte stream to etcd, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens connections to etcd members.
#[derive(Clone)]
pub struct Connector {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Connector {
    /// Plain TCP, or TLS with `access`'s CA and client certificate.
    pub fn new(access: &GatewayAccess) -> Result<Self, EtcdError> {
        let Some((ca, cert, key)) = &access.tls else {
            return Ok(Connector { tls: None });
        };
        let bad = |detail: String| EtcdError::Unsupported {
            endpoint: "etcd".into(),
            detail,
        };
        let mut roots = rustls::RootCertStore::empty();
        for der in rustls_pemfile_certs(ca)? {
            roots
                .add(der)
                .map_err(|e| bad(format!("the etcd CA certificate is unusable: {e}")))?;
        }
        let chain = rustls_pemfile_certs(cert)?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| bad(format!("the etcd client key is unreadable: {e}")))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(format!("the etcd client certificate is unusable: {e}")))?;
        Ok(Connector {
            tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
        })
    }

    /// Whether connections use TLS (`https://` endpoints).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `host` (`name:port`).
    pub async fn connect(&self, host: &str) -> std::io::Result<Box<dyn Stream>> {
        let tcp = TcpStream::connect(host).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = host
            .rsplit_once(':')
            .map_or(host, |(name, _)| name)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server = rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Box::new(tls.connect(server, tcp).await?))
    }
}

fn rustls_pemfile_certs(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, EtcdError> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EtcdError::Unsupported {
            endpoint: "etcd".into(),
            detail: format!("a certificate is unreadable: {e}"),
        })
}

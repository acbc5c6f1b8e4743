//! How to reach etcd beyond its URLs: TLS (a CA to trust, a client
//! certificate to present) and a user to authenticate as.

/// TLS material, PEM.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates.
    pub ca: String,
    /// The client certificate (its common name is the etcd user).
    pub cert: String,
    /// Its key.
    pub key: String,
}

/// TLS and credentials for etcd; the default is neither.
#[derive(Clone, Default)]
pub struct EtcdAccess {
    /// TLS, for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// User name and password.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdAccess {
    /// Never prints keys or passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("tls", &self.tls.is_some())
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl EtcdAccess {
    /// etcd-client's connection options with this TLS (credentials are
    /// applied per member, lazily: see `connection`).
    pub(crate) fn options(&self) -> etcd_client::ConnectOptions {
        let options = etcd_client::ConnectOptions::new();
        match &self.tls {
            Some(tls) => options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca))
                    .identity(etcd_client::Identity::from_pem(&tls.cert, &tls.key)),
            ),
            None => options,
        }
    }
}

//! The certificates of an etcd cluster pgkeel runs: a CA, one certificate
//! every member serves to clients and peers (its names: every member
//! host), and the client certificate agents, the CLI and the proxy
//! present. Generated once by `pgkeel init` into the secrets directory
//! (rcgen, no openssl), pure: no file is touched here.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

use crate::ClusterError;

/// Secret file names of the etcd PKI and credentials.
pub mod files {
    /// The CA certificate every client and member trusts.
    pub const CA_CERT: &str = "etcd-ca.crt";
    /// The CA's key (to issue certificates for members added later).
    pub const CA_KEY: &str = "etcd-ca.key";
    /// The members' certificate (client and peer connections).
    pub const SERVER_CERT: &str = "etcd-server.crt";
    /// Its key.
    pub const SERVER_KEY: &str = "etcd-server.key";
    /// The certificate clients present.
    pub const CLIENT_CERT: &str = "etcd-client.crt";
    /// Its key.
    pub const CLIENT_KEY: &str = "etcd-client.key";
    /// The password of `etcd.user`.
    pub const PASSWORD: &str = "etcd.password";
    /// etcd's root password (enabling authentication needs a root user).
    pub const ROOT_PASSWORD: &str = "etcd-root.password";
}

/// PEM texts of the etcd PKI.
#[derive(Debug, Clone)]
pub struct EtcdPki {
    /// CA certificate.
    pub ca_cert: String,
    /// CA key.
    pub ca_key: String,
    /// Members' certificate.
    pub server_cert: String,
    /// Members' key.
    pub server_key: String,
    /// Clients' certificate (no common name: users authenticate with their
    /// password).
    pub client_cert: String,
    /// Clients' key.
    pub client_key: String,
}

fn pki_error(what: &str, e: rcgen::Error) -> ClusterError {
    ClusterError::Secret {
        path: what.into(),
        problem: format!("cannot be generated: {e}"),
        fix: "report this: certificate generation should not fail".into(),
    }
}

/// A new CA and the certificates signed by it. `hosts`: every member's
/// address or DNS name (loopback names are added); `user`: named in the
/// client certificate's organisation, for people reading it.
pub fn generate_pki(cluster: &str, hosts: &[String], user: &str) -> Result<EtcdPki, ClusterError> {
    let ca_key = KeyPair::generate().map_err(|e| pki_error("the etcd CA key", e))?;
    let ca_pem_key = ca_key.serialize_pem();
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("the etcd CA", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("pgkeel etcd CA ({cluster})"));
    let ca =
        CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| pki_error("the etcd CA", e))?;

    let mut names: Vec<String> = hosts.to_vec();
    for local in ["127.0.0.1", "::1", "localhost"] {
        if !names.iter().any(|n| n == local) {
            names.push(local.to_string());
        }
    }
    let server_key = KeyPair::generate().map_err(|e| pki_error("the etcd member key", e))?;
    let mut server =
        CertificateParams::new(names).map_err(|e| pki_error("the etcd member certificate", e))?;
    // No common name either: etcd's JSON gateway forwards requests with
    // this certificate, and refuses them when it names a user.
    server.distinguished_name = DistinguishedName::new();
    server.distinguished_name.push(
        DnType::OrganizationName,
        format!("pgkeel etcd member ({cluster})"),
    );
    server.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server_cert = server
        .signed_by(&server_key, &ca)
        .map_err(|e| pki_error("the etcd member certificate", e))?;

    let client_key = KeyPair::generate().map_err(|e| pki_error("the etcd client key", e))?;
    let mut client = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| pki_error("the etcd client certificate", e))?;
    // No common name: etcd would take it for the user (bypassing the
    // password), and its JSON gateway refuses requests from certificates
    // that carry one. Clients authenticate with the password instead.
    // (rcgen's default names a common name: start from none.)
    client.distinguished_name = DistinguishedName::new();
    client.distinguished_name.push(
        DnType::OrganizationName,
        format!("pgkeel {cluster} ({user})"),
    );
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client
        .signed_by(&client_key, &ca)
        .map_err(|e| pki_error("the etcd client certificate", e))?;

    Ok(EtcdPki {
        ca_cert: ca.pem(),
        ca_key: ca_pem_key,
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_pem_and_distinct() -> Result<(), ClusterError> {
        let pki = generate_pki("prod", &["10.0.0.11".into(), "pg2".into()], "pgkeel")?;
        for pem in [&pki.ca_cert, &pki.server_cert, &pki.client_cert] {
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        }
        for pem in [&pki.ca_key, &pki.server_key, &pki.client_key] {
            assert!(pem.contains("PRIVATE KEY"), "{pem}");
        }
        assert_ne!(pki.server_cert, pki.client_cert);
        assert_ne!(pki.server_key, pki.client_key);
        Ok(())
    }

    #[test]
    fn rcgen_names_a_common_name_unless_cleared() -> Result<(), ClusterError> {
        // etcd's JSON gateway refuses certificates with one (HTTP 400), so
        // generate_pki clears rcgen's default.
        let params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("params", e))?;
        assert!(params.distinguished_name.get(&DnType::CommonName).is_some());
        Ok(())
    }
}

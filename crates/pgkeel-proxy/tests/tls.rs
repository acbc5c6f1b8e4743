//! Client TLS: a rustls client connects through the proxy, queries and
//! cancels work over TLS; `require` refuses plaintext logins with a clear
//! message; `allow` still serves plaintext; GSSENCRequest gets `N`; bad
//! certificate files stop the proxy at startup.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Env, TestResult};
use pgkeel_proxy::{ClusterProxyOptions, TlsMode, start};
use pgkeel_testkit::{TestDir, free_port_block};
use pgkeel_wire::StartupPacket;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A test CA and a leaf certificate for 127.0.0.1 and localhost signed by
/// it, the leaf and its key written as PEM.
struct TestCert {
    cert: PathBuf,
    key: PathBuf,
    ca: CertificateDer<'static>,
    ca_pem: String,
    _dir: TestDir,
}

fn make_cert() -> TestResult<TestCert> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let dir = TestDir::new()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL takes a leaf whose issuer is its own subject
    // for self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgkeel test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "pgkeel proxy");
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
    let cert = dir.path().join("proxy.crt");
    let key = dir.path().join("proxy.key");
    std::fs::write(&cert, leaf.pem())?;
    std::fs::write(&key, leaf_key.serialize_pem())?;
    Ok(TestCert {
        cert,
        key,
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        _dir: dir,
    })
}

fn connector(cert: &TestCert) -> TestResult<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.ca.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

async fn tls_client(url: &str, tls: MakeRustlsConnect) -> TestResult<Client> {
    let (client, conn) = tokio_postgres::connect(&format!("{url}?sslmode=require"), tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test]
async fn tls_required_and_allowed() -> TestResult {
    common::within(240, tls_body()).await
}

async fn tls_body() -> TestResult {
    let cert = make_cert()?;
    let files = (cert.cert.clone(), cert.key.clone());
    let env = Env::start_with(
        1,
        |o| {
            o.tls = Some(files);
            o.tls_mode = Some(TlsMode::Require);
        },
        |_| {},
    )
    .await?;
    let replica_port = env.node_port("replica1")?;

    // Over TLS: reads on the replica, writes on the primary, a large
    // result, and a cancel (which also goes over TLS).
    let client = tls_client(&env.url(), connector(&cert)?).await?;
    let row = client
        .query_one(
            "SELECT current_setting('port')::int, pg_is_in_recovery()",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, i32>(0), i32::from(replica_port));
    assert!(row.get::<_, bool>(1));
    client
        .batch_execute("CREATE TABLE t AS SELECT g AS v FROM generate_series(1, 1000) g")
        .await?;
    let rows = client
        .query(
            "SELECT repeat('x', 1000) FROM generate_series(1, 5000)",
            &[],
        )
        .await?;
    assert_eq!(rows.len(), 5000);
    // Large input: one message spans many TLS records and reads.
    let big = "y".repeat(2 << 20);
    let row = client
        .query_one("SELECT length($1::text)", &[&big.as_str()])
        .await?;
    assert_eq!(row.get::<_, i32>(0), 2 << 20);
    // libpq (psql) verifying the certificate against the CA.
    psql_over_tls(&env.url(), &cert).await?;
    let sleeper = tls_client(&env.url(), connector(&cert)?).await?;
    let token = sleeper.cancel_token();
    let running = tokio::spawn(async move { sleeper.simple_query("SELECT pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(connector(&cert)?).await?;
    let outcome = tokio::time::timeout(Duration::from_secs(20), running).await??;
    let err = outcome.err().ok_or("pg_sleep(60) was not cancelled")?;
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("57014"));

    // Plaintext under `require`: refused, naming the fix.
    let plain = tokio_postgres::connect(
        &format!("{}?sslmode=disable", env.url()),
        tokio_postgres::NoTls,
    )
    .await;
    let err = plain.err().ok_or("plaintext login was accepted")?;
    let db = err.as_db_error().ok_or("no server error")?;
    assert_eq!(db.code().code(), "28000");
    assert!(db.message().contains("sslmode=require"), "{}", db.message());

    // GSSENCRequest gets `N` (then the client may go on in plaintext).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", env.port)).await?;
    let mut out = Vec::new();
    StartupPacket::GssEncRequest.encode(&mut out);
    s.write_all(&out).await?;
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await?;
    assert_eq!(&answer, b"N");

    // `allow`: TLS and plaintext both served.
    let port = free_port_block(1);
    let mut options = ClusterProxyOptions::new(([127, 0, 0, 1], port).into());
    options.tls = Some((cert.cert.clone(), cert.key.clone()));
    let allow = Env::proxy_for(&env.cluster, &options, 1, |_| {}).await?;
    let url = env.url_as(port, &env.user, &env.password);
    let plain = pgkeel_testkit::connect_url(&url).await?;
    let tls = tls_client(&url, connector(&cert)?).await?;
    for c in [&plain, &tls] {
        let row = c.query_one("SELECT count(*) FROM t", &[]).await;
        // The replica may lag a moment behind the CREATE TABLE.
        if let Ok(row) = row {
            assert!(row.get::<_, i64>(0) >= 1000);
        }
        c.batch_execute("INSERT INTO t VALUES (0)").await?;
    }
    allow.shutdown(Duration::from_millis(100)).await;

    // Bad files: startup fails naming the file.
    let mut config = pgkeel_proxy::config_for_cluster(
        env.cluster.cluster.layout.root(),
        &ClusterProxyOptions::new(([127, 0, 0, 1], free_port_block(1)).into()),
    )?;
    config.tls_cert = Some(cert.key.clone());
    config.tls_key = Some(cert.key.clone());
    let err = start(config.clone())
        .await
        .err()
        .ok_or("bad certificate accepted")?;
    assert!(err.to_string().contains("proxy.key"), "{err}");
    config.tls_cert = Some(cert.cert.clone());
    config.tls_key = Some(cert.cert.with_extension("missing"));
    let err = start(config).await.err().ok_or("missing key accepted")?;
    assert!(err.to_string().contains("proxy.missing"), "{err}");
    Ok(())
}

/// Runs `SELECT 1` with psql and `sslmode=verify-full` (skipped where no
/// psql is installed).
async fn psql_over_tls(url: &str, cert: &TestCert) -> TestResult {
    let ca = cert.cert.with_file_name("ca.crt");
    std::fs::write(&ca, &cert.ca_pem)?;
    let out = tokio::process::Command::new("psql")
        .arg(format!(
            "{url}?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ))
        .args([
            "-XAtc",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .output()
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("psql not installed: skipping the libpq check");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // The proxy's own server connection is plaintext: PostgreSQL reports
    // `f` for it, which is what reaching the query proves.
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "f");
    Ok(())
}

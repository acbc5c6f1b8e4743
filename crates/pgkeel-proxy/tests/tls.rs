//! Client TLS: a rustls client connects through the proxy, queries and
//! cancels work over TLS; `require` refuses plaintext logins with a clear
//! message; `allow` still serves plaintext; GSSENCRequest gets `N`; bad
//! certificate files stop the proxy at startup; a reload serves renewed
//! certificate files to new connections and keeps the old certificate
//! when the new files are bad.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Env, TestResult};
use pgkeel_proxy::reload::ReloadReport;
use pgkeel_proxy::{ClusterProxyOptions, TlsMode, config_for_cluster, start};
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
    // A cancel that arrives before the statement runs is ignored: sent
    // every 200 ms until the statement ends (for up to 20 s).
    let cancelling = std::time::Instant::now();
    while !running.is_finished() && cancelling.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !running.is_finished() {
            token.cancel_query(connector(&cert)?).await?;
        }
    }
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

#[tokio::test]
async fn a_reload_serves_renewed_certificate_files() -> TestResult {
    common::within(240, rotation_body()).await
}

/// Reloads the proxy as SIGHUP does, TLS files at `files`.
fn reload(env: &Env, files: &(PathBuf, PathBuf)) -> TestResult<ReloadReport> {
    let mut options = ClusterProxyOptions::new(([127, 0, 0, 1], env.port).into());
    options.tls = Some(files.clone());
    let mut config = config_for_cluster(env.cluster.cluster.layout.root(), &options)?;
    config.health_interval = Duration::from_millis(200);
    let proxy = env.proxy.as_ref().ok_or("no proxy")?;
    Ok(proxy.shared().reload(config)?)
}

async fn rotation_body() -> TestResult {
    // Two certificates from two CAs: a client trusting only one of them
    // tells which certificate the proxy serves.
    let old = make_cert()?;
    let new = make_cert()?;
    let files = (old.cert.clone(), old.key.clone());
    let start_files = files.clone();
    let env = Env::start_with(1, |o| o.tls = Some(start_files), |_| {}).await?;
    let before = tls_client(&env.url(), connector(&old)?).await?;
    before.simple_query("SELECT 1").await?;
    assert!(
        tls_client(&env.url(), connector(&new)?).await.is_err(),
        "the new CA was trusted before the renewal"
    );

    // A certbot-style renewal: new files under the same paths.
    std::fs::copy(&new.cert, &old.cert)?;
    std::fs::copy(&new.key, &old.key)?;
    let report = reload(&env, &files)?;
    assert_eq!(report.applied, ["tls certificate"], "{report:?}");
    assert!(
        report.needs_restart.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    let after = tls_client(&env.url(), connector(&new)?).await?;
    after.simple_query("SELECT 1").await?;
    assert!(
        tls_client(&env.url(), connector(&old)?).await.is_err(),
        "a new connection still got the old certificate"
    );
    // The connection made before the renewal carries on.
    before.simple_query("SELECT 1").await?;
    // The same files again: nothing to report.
    assert_eq!(reload(&env, &files)?, ReloadReport::default());

    // A broken renewal (garbage, then a key that is not the
    // certificate's): reported naming the file, the certificate in use
    // stays, the proxy keeps serving.
    std::fs::write(&old.cert, "not a certificate")?;
    let report = reload(&env, &files)?;
    assert!(report.applied.is_empty(), "{report:?}");
    let [failure] = report.failed.as_slice() else {
        return Err(format!("expected one failure: {report:?}").into());
    };
    assert!(
        failure.contains("proxy.crt")
            && failure.contains("CERTIFICATE")
            && failure.contains("previous certificate stays"),
        "{failure}"
    );
    std::fs::copy(&new.cert, &old.cert)?;
    let other_key = rcgen::KeyPair::generate()?;
    std::fs::write(&old.key, other_key.serialize_pem())?;
    let report = reload(&env, &files)?;
    let [failure] = report.failed.as_slice() else {
        return Err(format!("expected one failure: {report:?}").into());
    };
    assert!(
        failure.contains("proxy.key") && failure.contains("does not go with"),
        "{failure}"
    );
    let still = tls_client(&env.url(), connector(&new)?).await?;
    still.simple_query("SELECT 1").await?;
    before.simple_query("SELECT 1").await?;
    after.simple_query("SELECT 1").await?;
    Ok(())
}

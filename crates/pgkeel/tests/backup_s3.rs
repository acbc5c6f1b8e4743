//! Backups to S3-compatible object storage: moto's S3 server (from PyPI,
//! installed by `./dev deps` into ~/.cache/pgkeel/moto) on loopback, behind
//! stunnel for TLS with a certificate the test makes (pgBackRest speaks
//! only HTTPS, and moto's own TLS closes connections without the TLS
//! close that OpenSSL 3 requires). The certificate is checked
//! (`ca_file`). The repository is encrypted by default, WAL is archived
//! into the bucket, and a backup taken there verifies.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::repository::json;
use common::{CliCluster, KillOnDrop, TestResult, text};
use pgkeel_testkit::{connect_url, free_port_block};

/// The virtualenv holding moto (`PGKEEL_MOTO_DIR`, default
/// ~/.cache/pgkeel/moto).
fn moto_dir() -> TestResult<PathBuf> {
    let dir = match std::env::var_os("PGKEEL_MOTO_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
            PathBuf::from(home).join(".cache/pgkeel/moto")
        }
    };
    if !dir.join("bin/moto_server").is_file() {
        return Err(format!(
            "moto is not installed in {}: run `./dev deps` (it installs moto[server] from PyPI there)",
            dir.display()
        )
        .into());
    }
    Ok(dir)
}

/// Waits up to 30 s until something listens on `port`.
fn wait_listening(port: u16) -> TestResult {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!("nothing listens on {port} after 30 s").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

/// stunnel on `port` in front of the plain HTTP server on `backend`, with
/// a self-signed certificate for 127.0.0.1 written into `dir`. Returns the
/// process and the certificate.
fn tls_terminator(dir: &Path, port: u16, backend: u16) -> TestResult<(KillOnDrop, PathBuf)> {
    let (cert, key) = (dir.join("s3.crt"), dir.join("s3.key"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=DNS:127.0.0.1,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    if !made.status.success() {
        return Err(format!("openssl: {}", String::from_utf8_lossy(&made.stderr)).into());
    }
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644))?;
    let conf = dir.join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\n[s3]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{backend}\ncert = {}\nkey = {}\n",
            cert.display(),
            key.display()
        ),
    )?;
    let child = Command::new("stunnel")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    Ok((KillOnDrop(Some(child)), cert))
}

/// Runs a few lines of Python with boto3 (moto's dependency) against the
/// endpoint, trusting `cert`; `s3` is the client. Returns stdout.
fn boto(moto: &Path, endpoint: &str, cert: &Path, code: &str) -> TestResult<String> {
    let script = format!(
        "import boto3, sys\n\
         s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='key', \
         aws_secret_access_key='secret', region_name='us-east-1', verify=sys.argv[2])\n{code}"
    );
    let out = Command::new(moto.join("bin/python"))
        .args(["-c", &script, endpoint])
        .arg(cert)
        .output()?;
    if !out.status.success() {
        return Err(format!("boto3: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_go_to_object_storage_encrypted_and_restore() -> TestResult {
    let moto = moto_dir()?;
    let cluster = CliCluster::new(3)?;
    let (http_port, port) = (free_port_block(1), free_port_block(1));
    let server = Command::new(moto.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &http_port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let _server = KillOnDrop(Some(server));
    let (_tls, cert) = tls_terminator(cluster.dir.path(), port, http_port)?;
    for p in [http_port, port] {
        wait_listening(p)?;
    }
    let endpoint = format!("https://127.0.0.1:{port}");
    boto(&moto, &endpoint, &cert, "s3.create_bucket(Bucket='pgkeel')")?;

    // The keys go into the secrets before the first `up`.
    let secrets = cluster.root.join("secrets");
    std::fs::create_dir_all(&secrets)?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700))?;
    for (name, value) in [("s3-key", "key"), ("s3-key-secret", "secret")] {
        std::fs::write(secrets.join(name), value)?;
        std::fs::set_permissions(secrets.join(name), std::fs::Permissions::from_mode(0o600))?;
    }
    let config = cluster.dir.path().join("pgkeel.toml");
    std::fs::write(
        &config,
        format!(
            "[backup]\nfull_schedule = \"off\"\nincr_schedule = \"off\"\nverify_schedule = \"off\"\n\
             [backup.s3]\nendpoint = \"127.0.0.1:{port}\"\nbucket = \"pgkeel\"\nregion = \"us-east-1\"\n\
             path = \"/repo\"\nuri_style = \"path\"\nca_file = \"{}\"\n",
            cert.display()
        ),
    )?;
    let config = config.display().to_string();
    let base = cluster.base_port.to_string();
    let out = cluster.run("up", &["--config", &config, "--base-port", &base]);
    assert!(out.status.success(), "{}", text(&out));

    let primary = connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    primary
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await?;
    let full = json(&cluster.run("backup", &["--full", "--json"]))?;
    let label = full["label"].as_str().ok_or("no label")?;
    let verified = json(&cluster.run("backup", &["verify", label, "--to-latest", "--json"]))?;
    assert!(verified["problem"].is_null(), "{verified}");

    // In the bucket: archived WAL, and files encrypted (OpenSSL's salted
    // format), not pgBackRest's plain text.
    let keys = boto(
        &moto,
        &endpoint,
        &cert,
        "for o in s3.list_objects_v2(Bucket='pgkeel', Prefix='repo/')['Contents']: print(o['Key'])",
    )?;
    assert!(
        keys.lines()
            .any(|k| k.starts_with("repo/archive/pgkeel/") && k.contains("/00000001")),
        "no archived WAL in the bucket: {keys}"
    );
    let head = boto(
        &moto,
        &endpoint,
        &cert,
        "print(s3.get_object(Bucket='pgkeel', Key='repo/backup/pgkeel/backup.info')['Body'].read()[:8])",
    )?;
    assert_eq!(head.trim(), "b'Salted__'", "backup.info is not encrypted");
    Ok(())
}

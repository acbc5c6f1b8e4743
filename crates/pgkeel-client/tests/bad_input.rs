//! Bad input fails fast with an error that names the fix: malformed URLs,
//! inconsistent URLs, nodes nobody listens on.

use std::time::Duration;

use pgkeel_client::{ErrorKind, PoolConfig, ReplicatedPool};
use pgkeel_testkit::free_port_block;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn malformed_urls_are_config_errors_naming_the_shape() -> TestResult {
    for urls in [
        vec!["postgresql://app:secret@127.0.0.1:port/app"],
        vec!["postgresql://127.0.0.1:5432/app"],
        vec![
            "postgresql://app:secret@127.0.0.1:5432/app",
            "postgresql://other:secret@127.0.0.1:5433/app",
        ],
    ] {
        let err = ReplicatedPool::from_urls(&urls)
            .await
            .err()
            .ok_or("accepted")?;
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
                || text.contains("same user"),
            "{text}"
        );
        assert!(!text.contains("secret"), "password in the message: {text}");
    }
    Ok(())
}

#[tokio::test]
async fn unreachable_nodes_are_listed() -> TestResult {
    let base = free_port_block(2);
    let mut config = PoolConfig::from_urls([
        format!("postgresql://app:pw@127.0.0.1:{base}/app"),
        format!("postgresql://app:pw@127.0.0.1:{}/app", base + 1),
    ])?;
    config.connect_timeout = Duration::from_secs(2);
    let err = ReplicatedPool::new(config)
        .await
        .err()
        .ok_or("nobody listens, yet accepted")?;
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    let text = err.to_string();
    for port in [base, base + 1] {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }
    assert!(text.contains("check that the servers run"), "{text}");
    Ok(())
}

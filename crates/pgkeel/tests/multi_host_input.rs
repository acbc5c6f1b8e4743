//! Bad input to `pgkeel init --node` and to a multi-host agent: each is
//! refused with the problem and the fix, and nothing is written or created.

mod common;

use std::path::Path;

use common::{TestResult, text};
use pgkeel_testkit::TestDir;

/// Which entries a directory holds.
fn entries(dir: &Path) -> TestResult<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().to_string()))
        .collect::<TestResult<_>>()?;
    names.sort();
    Ok(names)
}

/// A directory with a two-node config and its secrets (`pgkeel init`),
/// and the data root an agent there would use (not created).
fn initialised() -> TestResult<(TestDir, std::path::PathBuf)> {
    let dir = TestDir::new()?;
    let out = common::pgkeel(
        dir.path(),
        &[
            "init",
            "--node",
            "pg1=127.0.0.1:15432",
            "--node",
            "pg2=127.0.0.2:15432",
        ],
        &[],
    );
    if !out.status.success() {
        return Err(text(&out).into());
    }
    let root = dir.path().join("data");
    Ok((dir, root))
}

#[test]
fn an_agent_for_a_node_not_in_the_config_creates_nothing() -> TestResult {
    let (dir, root) = initialised()?;
    let root_arg = root.display().to_string();
    let out = common::pgkeel(
        dir.path(),
        &[
            "agent",
            "--config",
            "pgkeel.toml",
            "--dir",
            &root_arg,
            "--node",
            "pg7",
        ],
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no node named `pg7`") && stderr.contains("pg1, pg2"),
        "{}",
        text(&out)
    );
    assert!(!root.exists(), "the agent created {}", root.display());
    Ok(())
}

#[test]
fn missing_or_world_readable_secrets_stop_the_agent_before_anything_is_created() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let (dir, root) = initialised()?;
    let root_arg = root.display().to_string();
    let agent = || {
        common::pgkeel(
            dir.path(),
            &[
                "agent",
                "--config",
                "pgkeel.toml",
                "--dir",
                &root_arg,
                "--node",
                "pg1",
            ],
            &[],
        )
    };
    let secret = dir.path().join("secrets/superuser.password");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
    let out = agent();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("superuser.password")
            && stderr.contains("readable by other users")
            && stderr.contains("chmod 600"),
        "{}",
        text(&out)
    );
    assert!(!root.exists(), "the agent created {}", root.display());

    std::fs::remove_file(&secret)?;
    let out = agent();
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("superuser.password") && stderr.contains("is missing"),
        "{}",
        text(&out)
    );
    assert!(!root.exists(), "the agent created {}", root.display());
    Ok(())
}

#[test]
fn init_refuses_two_nodes_on_one_address_and_port_writing_nothing() -> TestResult {
    let dir = TestDir::new()?;
    let cwd = dir.path().join("empty");
    std::fs::create_dir(&cwd)?;
    let out = common::pgkeel(
        &cwd,
        &[
            "init",
            "--node",
            "pg1=10.0.0.11",
            "--node",
            "pg2=10.0.0.11:5432",
        ],
        &[],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("both use 10.0.0.11:5432"),
        "{}",
        text(&out)
    );
    assert_eq!(entries(&cwd)?, Vec::<String>::new());
    Ok(())
}

#[test]
fn init_writes_the_config_and_private_secrets() -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new()?;
    let out = common::pgkeel(
        dir.path(),
        &[
            "init",
            "-o",
            "etc/pgkeel.toml",
            "--node",
            "pg1=10.0.0.11",
            "--node",
            "pg2=10.0.0.12",
            "--node",
            "pg3=10.0.0.13",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(dir.path().join("etc/pgkeel.toml"))?;
    assert!(
        config.contains("members = [\"pg1\", \"pg2\", \"pg3\"]"),
        "{config}"
    );
    let secrets = dir.path().join("etc/secrets");
    assert_eq!(
        std::fs::metadata(&secrets)?.permissions().mode() & 0o777,
        0o700
    );
    for name in pgkeel_cluster::skeleton::SECRET_FILES {
        let meta = std::fs::metadata(secrets.join(name))?;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        assert!(meta.len() >= 32, "{name}");
    }
    // Refuses to overwrite without --force.
    let again = common::pgkeel(
        dir.path(),
        &["init", "-o", "etc/pgkeel.toml", "--node", "pg1=10.0.0.11"],
        &[],
    );
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
    Ok(())
}

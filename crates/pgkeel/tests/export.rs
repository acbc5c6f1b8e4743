//! `pgkeel export`: the files it writes are accepted by the tools that read
//! them (`systemd-analyze verify`, `docker-compose config`), each check
//! skipped with a note where the tool is missing; bad input is refused
//! with nothing written. The compose files are run for real in
//! `tests/compose.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{TestResult, pgkeel, text};
use pgkeel_testkit::TestDir;

/// `pgkeel init --node ...` of three nodes into `dir/origin`.
fn init(dir: &Path) -> TestResult<String> {
    let config = dir.join("origin/pgkeel.toml").display().to_string();
    let out = pgkeel(
        dir,
        &[
            "init",
            "-o",
            &config,
            "--name",
            "prod",
            "--node",
            "pg1=10.0.0.11",
            "--node",
            "pg2=10.0.0.12",
            "--node",
            "pg3=10.0.0.13",
        ],
        &[],
    );
    if !out.status.success() {
        return Err(format!("pgkeel init: {}", text(&out)).into());
    }
    Ok(config)
}

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() -> TestResult {
    let dir = TestDir::new()?;
    let config = init(dir.path())?;
    let units = dir.path().join("units");
    let exe = env!("CARGO_BIN_EXE_pgkeel");
    let out = pgkeel(
        dir.path(),
        &[
            "export",
            "systemd",
            "--config",
            &config,
            "--node",
            "pg2",
            "-o",
            &units.display().to_string(),
            "--binary",
            exe,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut names: Vec<String> = std::fs::read_dir(&units)?
        .map(|e| Ok(e?.file_name().to_string_lossy().to_string()))
        .collect::<TestResult<_>>()?;
    names.sort();
    assert_eq!(
        names,
        [
            "pgkeel-agent.service",
            "pgkeel-etcd.service",
            "pgkeel-proxy.service"
        ]
    );
    if !tool("systemd-analyze") {
        eprintln!("systemd-analyze is not installed: unit files not verified");
        return Ok(());
    }
    let paths: Vec<String> = names
        .iter()
        .map(|n| units.join(n).display().to_string())
        .collect();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()?;
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    Ok(())
}

#[test]
fn systemd_export_refuses_an_unknown_node() -> TestResult {
    let dir = TestDir::new()?;
    let config = init(dir.path())?;
    let units = dir.path().join("units");
    let out = pgkeel(
        dir.path(),
        &[
            "export",
            "systemd",
            "--config",
            &config,
            "--node",
            "pg9",
            "-o",
            &units.display().to_string(),
        ],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg1, pg2, pg3"),
        "{}",
        text(&out)
    );
    assert!(!units.exists(), "nothing is written");
    Ok(())
}

#[test]
fn compose_export_is_valid_compose_with_private_secrets() -> TestResult {
    let dir = TestDir::new()?;
    let config = init(dir.path())?;
    let export = dir.path().join("export");
    let out = pgkeel(
        dir.path(),
        &[
            "export",
            "compose",
            "--config",
            &config,
            "-o",
            &export.display().to_string(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    for file in [
        "Dockerfile",
        ".dockerignore",
        "docker-compose.yml",
        "pgkeel.toml",
    ] {
        assert!(export.join(file).is_file(), "{file} missing");
    }
    for exe in ["bin/pgkeel", "bin/pgkeel-proxy"] {
        let mode = std::fs::metadata(export.join(exe))?.permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{exe} is not executable");
    }
    let secrets = export.join("secrets");
    assert_eq!(
        std::fs::metadata(&secrets)?.permissions().mode() & 0o777,
        0o700
    );
    for name in pgkeel_cluster::skeleton::SECRET_FILES {
        let path = secrets.join(name);
        assert_eq!(
            std::fs::read(&path)?,
            std::fs::read(dir.path().join("origin/secrets").join(name))?
        );
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o600
        );
    }
    // A second export into the same directory needs --force.
    let again = pgkeel(
        dir.path(),
        &[
            "export",
            "compose",
            "--config",
            &config,
            "-o",
            &export.display().to_string(),
        ],
        &[],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    if !tool("docker-compose") {
        eprintln!("docker-compose is not installed: compose file not validated");
        return Ok(());
    }
    let out = Command::new("docker-compose")
        .args(["config", "-q"])
        .current_dir(&export)
        .output()?;
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        text(&out)
    );
    Ok(())
}

#[test]
fn compose_export_refuses_bad_input_and_writes_nothing() -> TestResult {
    let dir = TestDir::new()?;
    let config = init(dir.path())?;
    let export = dir.path().join("export");
    let out_dir = export.display().to_string();
    for (args, expected) in [
        (vec!["--subnet", "10.1.2.3/24"], "10.1.2.0/24"),
        (vec!["--subnet", "10.1.2.0/30"], "prefix length"),
        (vec!["--publish-base", "65000"], "--publish-base"),
    ] {
        let mut all = vec!["export", "compose", "--config", &config, "-o", &out_dir];
        all.extend(args);
        let out = pgkeel(dir.path(), &all, &[]);
        assert!(!out.status.success(), "{all:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{all:?}: {}",
            text(&out)
        );
        assert!(!export.exists(), "{all:?} wrote something");
    }
    // Secrets readable by others are refused with the chmod to run.
    let secret = dir.path().join("origin/secrets/app.password");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
    let out = pgkeel(
        dir.path(),
        &["export", "compose", "--config", &config, "-o", &out_dir],
        &[],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out)
    );
    assert!(!export.exists());
    Ok(())
}

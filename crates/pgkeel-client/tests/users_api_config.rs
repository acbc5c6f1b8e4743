//! The users-api example's configuration errors name the fix: no settings
//! at all, missing variables, a directory that is not a pgkeel cluster.

#[allow(dead_code)]
#[path = "../examples/users-api/cluster_dir.rs"]
mod cluster_dir;
#[allow(dead_code)]
#[path = "../examples/users-api/settings.rs"]
mod settings;

use clap::Parser;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[test]
fn configuration_errors_name_the_fix() -> TestResult {
    let args = settings::Args::try_parse_from(["users-api"])?;
    assert_eq!(args.listen.to_string(), "127.0.0.1:8000");
    let err = settings::pool_config(&args, |_| None)
        .err()
        .ok_or("no settings accepted")?;
    assert!(
        err.contains("POSTGRES_MASTER_HOST") && err.contains("--dir"),
        "{err}"
    );

    let only_host = |name: &str| (name == "POSTGRES_MASTER_HOST").then(|| "db".to_string());
    let err = settings::pool_config(&args, only_host)
        .err()
        .ok_or("partial env accepted")?;
    assert!(
        err.contains("POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB are not set"),
        "{err}"
    );

    let dir = tempfile::tempdir()?;
    let args =
        settings::Args::try_parse_from(["users-api", "--dir", &dir.path().display().to_string()])?;
    let err = settings::pool_config(&args, |_| None)
        .err()
        .ok_or("empty dir accepted")?;
    assert!(
        err.contains("cluster.toml") && err.contains("pgkeel up --dir"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("cluster.toml"),
        "[[nodes]]\nname = \"primary\"\nhost = \"127.0.0.1\"\nport = 5432\n",
    )?;
    let err = settings::pool_config(&args, |_| None)
        .err()
        .ok_or("missing password accepted")?;
    assert!(err.contains("app.password"), "{err}");

    assert!(settings::Args::try_parse_from(["users-api", "--listen", "nowhere"]).is_err());
    Ok(())
}

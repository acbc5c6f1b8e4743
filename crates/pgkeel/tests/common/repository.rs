//! A backup repository for a test cluster, and `up` with it.

use std::path::{Path, PathBuf};

use pgkeel_pg::OsUser;

use super::{CliCluster, TestResult, text};

/// A repository directory the cluster's OS user may write.
pub fn repository(cluster: &CliCluster) -> TestResult<PathBuf> {
    let repo = cluster.dir.path().join("repo");
    std::fs::create_dir(&repo)?;
    let me = OsUser::current()?;
    let owner = if me.is_root() {
        OsUser::lookup("postgres")?
    } else {
        me
    };
    std::os::unix::fs::chown(&repo, Some(owner.uid), Some(owner.gid))?;
    Ok(repo)
}

/// `up` with a repository; no scheduled backups (they would hold the
/// repository's lock while a test takes its own), unless `scheduled`.
pub fn up_with(cluster: &CliCluster, repo: &Path, scheduled: bool) -> std::process::Output {
    let port = cluster.base_port.to_string();
    let repo = repo.display().to_string();
    let mut env = vec![("PGKEEL_BACKUP_PATH", repo.as_str())];
    if !scheduled {
        env.push(("PGKEEL_BACKUP_FULL_SCHEDULE", "off"));
        env.push(("PGKEEL_BACKUP_INCR_SCHEDULE", "off"));
        env.push(("PGKEEL_BACKUP_VERIFY_SCHEDULE", "off"));
    }
    cluster.run_env("up", &["--base-port", &port], &env)
}

/// `up` with a repository and no scheduled backups.
pub fn up_with_repository(cluster: &CliCluster, repo: &Path) -> std::process::Output {
    up_with(cluster, repo, false)
}

/// A command's stdout as JSON; its whole output as the error when it failed.
pub fn json(out: &std::process::Output) -> TestResult<serde_json::Value> {
    if !out.status.success() {
        return Err(text(out).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// A 3-node cluster up with a fresh repository (no scheduled backups),
/// and a superuser session on its primary.
pub async fn started_with_repository() -> TestResult<(CliCluster, PathBuf, tokio_postgres::Client)>
{
    let cluster = CliCluster::new(3)?;
    let repo = repository(&cluster)?;
    let out = up_with_repository(&cluster, &repo);
    if !out.status.success() {
        return Err(text(&out).into());
    }
    let primary = pgkeel_testkit::connect_url(&cluster.url(&["--primary", "--superuser"])?).await?;
    Ok((cluster, repo, primary))
}

/// The largest file under `dir` (a relation file of the backup).
pub fn largest_file(dir: &Path) -> TestResult<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if best.as_ref().is_none_or(|(size, _)| meta.len() > *size) {
                best = Some((meta.len(), entry.path()));
            }
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| format!("no file under {}", dir.display()).into())
}

/// Flips 16 bytes in the middle of the largest relation file of backup
/// `label` in the path repository `repo`; returns the file.
pub fn corrupt_backup_file(repo: &Path, label: &str) -> TestResult<PathBuf> {
    let files = repo.join(format!("backup/pgkeel/{label}/pg_data/base"));
    let victim = largest_file(&files)?;
    let mut bytes = std::fs::read(&victim)?;
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&victim, bytes)?;
    Ok(victim)
}

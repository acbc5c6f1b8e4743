//! pgBackRest as pgkeel's backup engine: it runs as the cluster's OS user
//! with the configuration file pgkeel renders, and its failures come back
//! with the command and the tail of what it printed.

pub mod conf;
pub mod damaged;
pub mod info;
pub mod progress;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use pgkeel_pg::fsutil::{ensure_dir, write_owned};
use pgkeel_pg::run::tail;
use pgkeel_pg::{OsUser, PgRunner};

use crate::engine::BackupEngine;
use crate::error::BackupError;
use crate::model::{BackupKind, PgTarget, RepositoryInfo, RestoreTarget};
use conf::{ConfInput, Invocation, render_conf};

/// Lines of a failed command's output kept in its error.
const ERROR_LINES: usize = 15;

/// pgBackRest for one cluster on this host.
#[derive(Debug, Clone)]
pub struct PgBackRest {
    runner: PgRunner,
    invocation: Invocation,
}

/// Finds `pgbackrest` on this host: in `PATH`, then `/usr/bin`.
pub fn find_program() -> Result<PathBuf, BackupError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("pgbackrest"))
        .find(|p| p.is_file())
        .ok_or_else(|| BackupError::NotInstalled {
            program: "pgbackrest".into(),
        })
}

/// Writes pgBackRest's configuration file at `config` and its working
/// directories under `input.work_dir`, owned by `owner`.
pub fn write_config(
    config: &Path,
    input: &ConfInput<'_>,
    owner: &OsUser,
) -> Result<(), BackupError> {
    ensure_dir(input.work_dir, owner, 0o700)?;
    for sub in ["log", "lock", "spool"] {
        ensure_dir(&input.work_dir.join(sub), owner, 0o700)?;
    }
    // 0600: it holds the repository's passphrase and storage keys.
    write_owned(config, &render_conf(input), owner, 0o600)?;
    Ok(())
}

/// Whether pgBackRest's output says the repository belongs to another
/// database (its errors 028 and 051: system identifier or version differ).
pub fn is_foreign_stanza(output: &str) -> bool {
    output.contains("[028]")
        || output.contains("[051]")
        || output.contains("do not match the database")
}

/// Whether pgBackRest's output says another process holds the stanza's
/// lock (its error 050).
pub fn is_lock_held(output: &str) -> bool {
    output.contains("[050]")
}

/// The label a finished backup reports (`new backup label = ...`).
pub fn new_label(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        l.split_once("new backup label = ")
            .map(|(_, label)| label.trim().to_string())
    })
}

impl PgBackRest {
    /// pgBackRest at `program`, with the configuration file `config`, for
    /// the cluster (stanza) `stanza`.
    pub fn new(runner: PgRunner, program: PathBuf, config: PathBuf, stanza: &str) -> Self {
        PgBackRest {
            runner,
            invocation: Invocation {
                program,
                config,
                stanza: stanza.to_string(),
            },
        }
    }

    /// The invocation (binary, configuration file, stanza).
    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    /// Runs `args` to completion; returns stdout and stderr together.
    pub async fn run(&self, node: &str, args: &[String]) -> Result<String, BackupError> {
        let line = self.describe(args);
        tracing::debug!(node, command = %line, "running pgBackRest");
        let output = self
            .runner
            .command_at(&self.invocation.program)
            .args(args)
            .output()
            .await
            .map_err(|source| BackupError::Spawn {
                node: node.to_string(),
                command: line.clone(),
                source,
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            return Ok(text);
        }
        Err(self.failure(node, line, &output.status, &text))
    }

    /// The error of a failed command from what it printed: another
    /// backup's lock, another database's stanza, or the output's tail.
    fn failure(
        &self,
        node: &str,
        command: String,
        status: &std::process::ExitStatus,
        output: &str,
    ) -> BackupError {
        if is_lock_held(output) {
            return BackupError::Busy {
                stanza: self.invocation.stanza.clone(),
            };
        }
        if is_foreign_stanza(output) {
            return BackupError::ForeignStanza {
                stanza: self.invocation.stanza.clone(),
                config: self.invocation.config.clone(),
                detail: tail(output, 3).trim().to_string(),
            };
        }
        BackupError::Command {
            node: node.to_string(),
            command,
            status: status.to_string(),
            output: tail(output, ERROR_LINES),
        }
    }

    fn describe(&self, args: &[String]) -> String {
        std::iter::once("pgbackrest")
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl BackupEngine for PgBackRest {
    fn archive_command(&self, node: &PgTarget) -> String {
        self.invocation.archive_command(node)
    }

    fn restore_command(&self, node: &PgTarget) -> String {
        self.invocation.restore_command(node)
    }

    async fn prepare_repository(&self, primary: &PgTarget) -> Result<(), BackupError> {
        // Idempotent: an existing stanza of this database is accepted, one
        // of another database is refused (errors 028/051).
        let args = self.invocation.args(&[primary], &[], "stanza-create");
        self.run(&primary.node, &args).await.map(|_| ())
    }

    async fn backup(
        &self,
        kind: BackupKind,
        primary: &PgTarget,
        standby: Option<&PgTarget>,
        annotations: &[(String, String)],
        progress: &(dyn Fn(f64) + Send + Sync),
    ) -> Result<String, BackupError> {
        let mut targets = vec![primary];
        let mut extra = vec![
            format!("--type={kind}"),
            "--log-level-console=detail".to_string(),
        ];
        for (key, value) in annotations {
            extra.push(format!("--annotation={key}={value}"));
        }
        if let Some(s) = standby {
            targets.push(s);
            extra.push("--backup-standby".into());
        }
        let args = self.invocation.args(&targets, &extra, "backup");
        let line = self.describe(&args);
        let node = standby.unwrap_or(primary).node.clone();
        let mut child = self
            .runner
            .command_at(&self.invocation.program)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| BackupError::Spawn {
                node: node.clone(),
                command: line.clone(),
                source,
            })?;
        let stderr = child.stderr.take();
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            if let Some(stderr) = stderr {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    text.push_str(&l);
                    text.push('\n');
                }
            }
            text
        });
        let mut kept = String::new();
        if let Some(stdout) = child.stdout.take() {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Some(pct) = progress::parse_percent(&l) {
                    progress(pct);
                } else {
                    kept.push_str(&l);
                    kept.push('\n');
                }
            }
        }
        let status = child.wait().await.map_err(|source| BackupError::Spawn {
            node: node.clone(),
            command: line.clone(),
            source,
        })?;
        kept.push_str(&errors.await.unwrap_or_default());
        if !status.success() {
            return Err(self.failure(&node, line, &status, &kept));
        }
        new_label(&kept).ok_or_else(|| BackupError::Output {
            command: line,
            detail: "no `new backup label` line".into(),
        })
    }

    async fn restore(
        &self,
        node: &str,
        label: &str,
        target: &RestoreTarget,
        dir: &Path,
        delta: bool,
    ) -> Result<(), BackupError> {
        let mut extra = vec![
            format!("--pg1-path={}", dir.display()),
            format!("--set={label}"),
            // The copy must not archive into the cluster's repository.
            "--archive-mode=off".to_string(),
        ];
        if delta {
            extra.push("--delta".into());
        }
        extra.extend(restore_target_options(target));
        let args = self.invocation.args(&[], &extra, "restore");
        self.run(node, &args).await.map(|_| ())
    }

    async fn damaged_files(&self, label: &str) -> Result<Vec<String>, BackupError> {
        let extra = [
            format!("--set={label}"),
            "--log-level-console=info".to_string(),
        ];
        let args = self.invocation.args(&[], &extra, "verify");
        let out = self.run("-", &args).await?;
        Ok(damaged::damaged_files(&out))
    }

    async fn archive_push(&self, node: &PgTarget, file: &Path) -> Result<(), BackupError> {
        let extra = [format!("--pg1-path={}", node.data_dir.display())];
        let mut args = self.invocation.args(&[], &extra, "archive-push");
        args.push(file.display().to_string());
        self.run(&node.node, &args).await.map(|_| ())
    }

    async fn archived_segments(&self, directory: &str) -> Result<BTreeSet<String>, BackupError> {
        let info = self.info().await?;
        let Some(id) = info.archive_id else {
            return Ok(BTreeSet::new());
        };
        let path = format!("archive/{}/{id}/{directory}", self.invocation.stanza);
        let mut args = self
            .invocation
            .args(&[], &["--output=json".to_string()], "repo-ls");
        args.push(path);
        let out = self.run("-", &args).await?;
        info::decode_segment_listing(&out).map_err(|detail| BackupError::Output {
            command: self.describe(&args),
            detail,
        })
    }

    async fn info(&self) -> Result<RepositoryInfo, BackupError> {
        let args = self
            .invocation
            .args(&[], &["--output=json".to_string()], "info");
        let out = self.run("-", &args).await?;
        info::decode_info(&out, &self.invocation.stanza).map_err(|detail| BackupError::Output {
            command: self.describe(&args),
            detail,
        })
    }
}

/// pgBackRest's options for a restore target.
fn restore_target_options(target: &RestoreTarget) -> Vec<String> {
    let promote = "--target-action=promote".to_string();
    match target {
        RestoreTarget::EndOfBackup => vec!["--type=immediate".into(), promote],
        // Without a target, recovery replays every archived segment and
        // then ends (promotes) by itself.
        RestoreTarget::Latest => vec!["--type=default".into()],
        RestoreTarget::Time(time) => {
            vec!["--type=time".into(), format!("--target={time}"), promote]
        }
        RestoreTarget::Lsn(lsn) => vec!["--type=lsn".into(), format!("--target={lsn}"), promote],
        RestoreTarget::Standby => vec!["--type=standby".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_has_its_options() {
        assert_eq!(
            restore_target_options(&RestoreTarget::Time("2026-12-07 10:00:00.000000+00".into())),
            [
                "--type=time",
                "--target=2026-12-07 10:00:00.000000+00",
                "--target-action=promote"
            ]
        );
        assert_eq!(
            restore_target_options(&RestoreTarget::Lsn("0/3000028".into())),
            [
                "--type=lsn",
                "--target=0/3000028",
                "--target-action=promote"
            ]
        );
        assert_eq!(
            restore_target_options(&RestoreTarget::Latest),
            ["--type=default"]
        );
        assert_eq!(
            restore_target_options(&RestoreTarget::Standby),
            ["--type=standby"]
        );
    }

    #[test]
    fn the_new_label_is_read_from_the_output() {
        let out = "P00 INFO: backup start archive = 000000010000000000000004, lsn = 0/4000028\nP00 INFO: new backup label = 20261207-201500F\nP00 INFO: full backup size = 22MB";
        assert_eq!(new_label(out).as_deref(), Some("20261207-201500F"));
        assert_eq!(new_label("nothing"), None);
    }

    #[test]
    fn a_foreign_stanza_is_recognised() {
        assert!(is_foreign_stanza(
            "ERROR: [028]: backup and archive info files exist but do not match the database"
        ));
        assert!(!is_foreign_stanza("ERROR: [041]: unable to open file"));
    }
}

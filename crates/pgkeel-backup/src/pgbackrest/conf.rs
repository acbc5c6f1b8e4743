//! pgBackRest's configuration file and command lines, rendered from
//! `[backup]` without running anything. The file holds the repository and
//! its secrets (0600 under the data root); each command names the
//! PostgreSQL servers it works on with `--pgN-*` options, so one file
//! serves every node on the host and no server is ever read from a stale
//! list.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pgkeel_core::config::BackupSection;

use crate::model::PgTarget;

/// Everything the configuration file needs.
#[derive(Debug, Clone)]
pub struct ConfInput<'a> {
    /// `[backup]`.
    pub backup: &'a BackupSection,
    /// pgkeel's directory for pgBackRest on this host (logs, locks, spool).
    pub work_dir: &'a Path,
    /// The repository's encryption passphrase, when it is encrypted.
    pub cipher_pass: Option<&'a str>,
    /// The object storage access key and its secret.
    pub s3_key: Option<(&'a str, &'a str)>,
}

/// The file's text.
pub fn render_conf(input: &ConfInput<'_>) -> String {
    let b = input.backup;
    let mut out = String::from(
        "# pgBackRest configuration rendered by pgkeel from [backup]; rewritten\n\
         # at every start: change pgkeel.toml instead.\n[global]\n",
    );
    let mut set = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key}={value}");
    };
    if let Some(path) = &b.path {
        set("repo1-type", &"posix");
        set("repo1-path", &path.display());
    }
    if let Some(s3) = &b.s3 {
        let (host, port) = split_endpoint(&s3.endpoint);
        set("repo1-type", &"s3");
        set("repo1-path", &s3.path);
        set("repo1-s3-endpoint", &host);
        if let Some(port) = port {
            set("repo1-storage-port", &port);
        }
        set("repo1-s3-bucket", &s3.bucket);
        set("repo1-s3-region", &s3.region);
        set("repo1-s3-uri-style", &s3.uri_style);
        set("repo1-storage-verify-tls", &yes_no(s3.verify_tls));
        if let Some(ca) = &s3.ca_file {
            set("repo1-storage-ca-file", &ca.display());
        }
        if let Some((key, secret)) = input.s3_key {
            set("repo1-s3-key", &key);
            set("repo1-s3-key-secret", &secret);
        }
    }
    set("repo1-retention-full-type", &"count");
    set("repo1-retention-full", &b.retention_full);
    if let Some(pass) = input.cipher_pass.filter(|_| b.encrypted()) {
        set("repo1-cipher-type", &"aes-256-cbc");
        set("repo1-cipher-pass", &pass);
    }
    set("compress-type", &b.compress);
    if let Some(level) = b.compress_level {
        set("compress-level", &level);
    }
    set("process-max", &b.process_max);
    // A backup starts with an immediate checkpoint instead of waiting for
    // the next one (up to checkpoint_timeout).
    set("start-fast", &"y");
    set("log-path", &input.work_dir.join("log").display());
    set("lock-path", &input.work_dir.join("lock").display());
    set("spool-path", &input.work_dir.join("spool").display());
    set("log-level-file", &"info");
    out
}

/// `host:port` split (a bare host keeps the default port).
fn split_endpoint(endpoint: &str) -> (&str, Option<u16>) {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (endpoint, None),
        },
        _ => (endpoint, None),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "y" } else { "n" }
}

/// How to invoke pgBackRest for one cluster on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The `pgbackrest` binary.
    pub program: PathBuf,
    /// The rendered configuration file.
    pub config: PathBuf,
    /// The stanza (the cluster's name).
    pub stanza: String,
}

impl Invocation {
    /// Arguments of `command` on the servers `targets` (in order: pg1,
    /// pg2, ...) with `extra` options before the command.
    pub fn args(&self, targets: &[&PgTarget], extra: &[String], command: &str) -> Vec<String> {
        let mut args = vec![
            format!("--config={}", self.config.display()),
            format!("--stanza={}", self.stanza),
        ];
        for (i, t) in targets.iter().enumerate() {
            args.extend(pg_options(i + 1, t));
        }
        args.extend(extra.iter().cloned());
        args.push(command.to_string());
        args
    }

    /// The shell command PostgreSQL runs for `command` (`archive-push %p`,
    /// `archive-get %f "%p"`) on `node`.
    fn wal_command(&self, node: &PgTarget, command: &str) -> String {
        format!(
            "{} --config={} --stanza={} --pg1-path={} {command}",
            shell_quote(&self.program.display().to_string()),
            shell_quote(&self.config.display().to_string()),
            shell_quote(&self.stanza),
            shell_quote(&node.data_dir.display().to_string()),
        )
    }

    /// `archive_command` for `node`.
    pub fn archive_command(&self, node: &PgTarget) -> String {
        self.wal_command(node, "archive-push %p")
    }

    /// `restore_command` for `node`.
    pub fn restore_command(&self, node: &PgTarget) -> String {
        self.wal_command(node, "archive-get %f \"%p\"")
    }
}

/// `--pgN-*` options naming one server.
pub fn pg_options(n: usize, t: &PgTarget) -> Vec<String> {
    vec![
        format!("--pg{n}-path={}", t.data_dir.display()),
        format!("--pg{n}-port={}", t.port),
        format!("--pg{n}-socket-path={}", t.socket_dir.display()),
        format!("--pg{n}-user={}", t.user),
    ]
}

/// Quotes `s` for `sh` (PostgreSQL runs archive commands through it).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgkeel_core::config::S3Repository;

    fn target(dir: &str) -> PgTarget {
        PgTarget {
            node: "pg1".into(),
            data_dir: dir.into(),
            port: 5432,
            socket_dir: "/r/run".into(),
            user: "postgres".into(),
        }
    }

    fn invocation() -> Invocation {
        Invocation {
            program: "/usr/bin/pgbackrest".into(),
            config: "/r/backup/pgbackrest.conf".into(),
            stanza: "main".into(),
        }
    }

    #[test]
    fn a_path_repository_has_no_secrets_and_keeps_logs_under_the_root() {
        let backup = BackupSection {
            path: Some("/mnt/b".into()),
            ..Default::default()
        };
        let text = render_conf(&ConfInput {
            backup: &backup,
            work_dir: Path::new("/r/backup"),
            cipher_pass: Some("secret"),
            s3_key: None,
        });
        assert!(
            text.contains("repo1-type=posix\nrepo1-path=/mnt/b\n"),
            "{text}"
        );
        assert!(text.contains("repo1-retention-full=2\n"));
        assert!(text.contains("log-path=/r/backup/log\n"));
        assert!(text.contains("compress-type=zst\n"));
        // Not encrypted unless asked: the passphrase stays out.
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn object_storage_is_encrypted_and_carries_its_keys() {
        let backup = BackupSection {
            s3: Some(S3Repository {
                endpoint: "127.0.0.1:9000".into(),
                bucket: "b".into(),
                region: "r".into(),
                path: "/x".into(),
                uri_style: "path".into(),
                verify_tls: false,
                ca_file: None,
            }),
            ..Default::default()
        };
        let text = render_conf(&ConfInput {
            backup: &backup,
            work_dir: Path::new("/r/backup"),
            cipher_pass: Some("pass"),
            s3_key: Some(("AK", "SK")),
        });
        for line in [
            "repo1-type=s3",
            "repo1-s3-endpoint=127.0.0.1",
            "repo1-storage-port=9000",
            "repo1-s3-uri-style=path",
            "repo1-storage-verify-tls=n",
            "repo1-s3-key=AK",
            "repo1-s3-key-secret=SK",
            "repo1-cipher-type=aes-256-cbc",
            "repo1-cipher-pass=pass",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn endpoints_split_into_host_and_port() {
        assert_eq!(split_endpoint("s3.example.net"), ("s3.example.net", None));
        assert_eq!(split_endpoint("h:9000"), ("h", Some(9000)));
        assert_eq!(split_endpoint("h:x"), ("h:x", None));
    }

    #[test]
    fn wal_commands_name_the_node_and_quote_paths() {
        let cmd = invocation().archive_command(&target("/data/it's here"));
        assert_eq!(
            cmd,
            "/usr/bin/pgbackrest --config=/r/backup/pgbackrest.conf --stanza=main --pg1-path='/data/it'\\''s here' archive-push %p"
        );
        assert!(
            invocation()
                .restore_command(&target("/d"))
                .ends_with("--pg1-path=/d archive-get %f \"%p\"")
        );
    }

    #[test]
    fn commands_list_their_servers_in_order() {
        let (a, b) = (target("/a"), target("/b"));
        let args = invocation().args(&[&a, &b], &["--type=full".into()], "backup");
        assert_eq!(args[0], "--config=/r/backup/pgbackrest.conf");
        assert!(args.contains(&"--pg1-path=/a".to_string()));
        assert!(args.contains(&"--pg2-path=/b".to_string()));
        assert_eq!(args[args.len() - 2..], ["--type=full", "backup"]);
    }
}

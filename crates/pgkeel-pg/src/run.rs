//! Running PostgreSQL binaries as the OS user, with a clean environment and
//! errors that carry the command and its output.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use tokio::process::Command;

use crate::{OsUser, PgBinaries, PgError};

/// Runs this host's PostgreSQL binaries as the configured OS user. When
/// pgkeel runs as root every child switches to that user (PostgreSQL refuses
/// root); otherwise pgkeel must already be that user.
#[derive(Debug, Clone)]
pub struct PgRunner {
    bins: PgBinaries,
    user: OsUser,
    switch_user: bool,
}

/// Lines of a failed command's output kept in its error.
const ERROR_TAIL_LINES: usize = 25;

impl PgRunner {
    /// Checks that `user` can run PostgreSQL from here.
    pub fn new(bins: PgBinaries, user: OsUser) -> Result<Self, PgError> {
        if user.is_root() {
            return Err(PgError::RootUser);
        }
        let me = OsUser::current()?;
        let switch_user = me.is_root();
        if !switch_user && me.uid != user.uid {
            return Err(PgError::CannotSwitchUser {
                current: me.name,
                wanted: user.name,
            });
        }
        Ok(PgRunner {
            bins,
            user,
            switch_user,
        })
    }

    /// The OS user PostgreSQL runs as.
    pub fn user(&self) -> &OsUser {
        &self.user
    }

    /// The binaries in use.
    pub fn bins(&self) -> &PgBinaries {
        &self.bins
    }

    /// A command for `binary`, as the OS user, with only a minimal, known
    /// environment (no inherited PG* variables can redirect it).
    pub fn command(&self, binary: &str) -> Command {
        self.command_at(&self.bins.path(binary))
    }

    /// A command for the program at `program` (a tool beside PostgreSQL,
    /// such as pgBackRest), as the OS user with the same clean environment.
    pub fn command_at(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.bins.dir().display()),
            )
            .env("HOME", &self.user.home)
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name)
            .env("LC_ALL", "C.UTF-8")
            .env("PGTZ", "UTC")
            .current_dir("/")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if self.switch_user {
            cmd.uid(self.user.uid).gid(self.user.gid);
        }
        cmd
    }

    /// Runs `binary args...` to completion; a non-zero exit is an error
    /// holding the tail of its output. Returns stdout.
    pub async fn run<I, S>(
        &self,
        node: &str,
        binary: &str,
        args: I,
        env: &[(&str, &Path)],
    ) -> Result<String, PgError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = self.command(binary);
        cmd.args(&args);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let line = describe(binary, &args);
        let output = cmd.output().await.map_err(|source| PgError::Spawn {
            node: node.to_string(),
            command: line.clone(),
            source,
        })?;
        check_output(node, &line, output)
    }
}

/// A command line for messages (pgkeel never puts secrets in arguments).
pub fn describe(binary: &str, args: &[std::ffi::OsString]) -> String {
    std::iter::once(binary.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns a finished process into its stdout or a [`PgError::Command`].
pub fn check_output(node: &str, command: &str, output: Output) -> Result<String, PgError> {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(PgError::Command {
        node: node.to_string(),
        command: command.to_string(),
        status: output.status.to_string(),
        stderr: tail(&format!("{stdout}{stderr}"), ERROR_TAIL_LINES),
    })
}

/// The last `n` non-empty lines of `text`, indented for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let text = "a\n\nb\nc\nd\n";
        assert_eq!(tail(text, 2), "    c\n    d");
        assert_eq!(tail("", 3), "");
    }
}

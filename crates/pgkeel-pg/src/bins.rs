//! Finding PostgreSQL's server binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::PgError;

/// Binaries pgkeel cannot work without.
pub const REQUIRED: [&str; 6] = [
    "initdb",
    "pg_ctl",
    "pg_basebackup",
    "postgres",
    "pg_controldata",
    "pg_rewind",
];

/// The directory holding this host's PostgreSQL server binaries. Found once
/// and passed around so every command runs the same installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Uses `configured` when given (and checks it), else searches: `PATH`
    /// (only if it holds the server binaries, not just `psql`), `pg_config
    /// --bindir`, then the newest `/usr/lib/postgresql/<version>/bin`.
    pub fn discover(configured: Option<&Path>) -> Result<Self, PgError> {
        if let Some(dir) = configured {
            return Self::check(dir);
        }
        let candidates = candidates();
        for dir in &candidates {
            if let Ok(found) = Self::check(dir) {
                return Ok(found);
            }
        }
        Err(PgError::BinariesNotFound {
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn check(dir: &Path) -> Result<Self, PgError> {
        for binary in REQUIRED {
            if !dir.join(binary).is_file() {
                return Err(PgError::MissingBinary {
                    dir: dir.to_path_buf(),
                    binary,
                });
            }
        }
        Ok(PgBinaries {
            dir: dir.to_path_buf(),
        })
    }

    /// Full path of one binary.
    pub fn path(&self, binary: &str) -> PathBuf {
        self.dir.join(binary)
    }

    /// The bin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !text.is_empty() {
            dirs.push(PathBuf::from(text));
        }
    }
    dirs.extend(versioned_dirs(Path::new("/usr/lib/postgresql")));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

/// `/usr/lib/postgresql/<v>/bin`, newest major version first.
fn versioned_dirs(root: &Path) -> Vec<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let major = name.split('.').next()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_dir_without_binaries_names_the_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = PgBinaries::discover(Some(dir.path())).expect_err("empty dir");
        let text = err.to_string();
        assert!(text.contains("`initdb` is missing"), "{text}");
        assert!(text.contains("bin_dir"), "{text}");
    }

    #[test]
    fn newest_version_first() {
        let root = tempfile::tempdir().expect("tempdir");
        for v in ["9.6", "15", "13"] {
            std::fs::create_dir_all(root.path().join(v).join("bin")).expect("mkdir");
        }
        let dirs = versioned_dirs(root.path());
        assert!(dirs[0].ends_with("15/bin"), "{dirs:?}");
        assert!(dirs[2].ends_with("9.6/bin"), "{dirs:?}");
    }
}

//! Files and directories owned by the PostgreSQL OS user with exact modes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, chown};
use std::path::Path;

use crate::{OsUser, PgError};

/// Creates `dir` (and missing parents) and gives it to `owner` with `mode`.
pub fn ensure_dir(dir: &Path, owner: &OsUser, mode: u32) -> Result<(), PgError> {
    fs::create_dir_all(dir).map_err(|e| PgError::io("create directory", dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(|e| PgError::io("chmod", dir, e))?;
    give(dir, owner)
}

/// Writes `contents` to `path` atomically (temp file + rename), owned by
/// `owner` with `mode`, so a crash never leaves a half-written config. The
/// temporary file is private to this process and call: several agents on
/// one host write the host's shared files (password files, pgBackRest's
/// configuration) at the same time.
pub fn write_owned(path: &Path, contents: &str, owner: &OsUser, mode: u32) -> Result<(), PgError> {
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".pgkeel-tmp.{}.{n}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| PgError::io("create", &tmp, e))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| PgError::io("write", &tmp, e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(|e| PgError::io("chmod", &tmp, e))?;
        give(&tmp, owner)?;
        fs::rename(&tmp, path).map_err(|e| PgError::io("rename into place", path, e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Hands `path` to `owner` when pgkeel runs as root; otherwise it already
/// belongs to the invoking user, who is the OS user.
pub fn give(path: &Path, owner: &OsUser) -> Result<(), PgError> {
    if nix::unistd::Uid::effective().is_root() {
        chown(path, Some(owner.uid), Some(owner.gid)).map_err(|e| PgError::io("chown", path, e))?;
    }
    Ok(())
}

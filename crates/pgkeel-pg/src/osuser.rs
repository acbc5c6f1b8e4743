//! The OS user PostgreSQL runs as, and whether it can reach a path.

use nix::unistd::{Gid, Uid, User, getgrouplist};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::PgError;

/// An OS account as pgkeel needs it: ids to switch to and the groups that
/// decide which directories it can enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// All group ids (primary and supplementary).
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: PathBuf,
}

impl OsUser {
    /// Looks up `name`; a missing user is an error that says how to create it.
    pub fn lookup(name: &str) -> Result<Self, PgError> {
        let missing = || PgError::OsUserMissing {
            user: name.to_string(),
        };
        let user = User::from_name(name).ok().flatten().ok_or_else(missing)?;
        let groups = CString::new(name)
            .ok()
            .and_then(|c| getgrouplist(&c, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid])
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(OsUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
        })
    }

    /// The user pgkeel itself runs as.
    pub fn current() -> Result<Self, PgError> {
        let uid = Uid::effective();
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| uid.to_string());
        Self::lookup(&name)
    }

    /// Whether this is root (then pgkeel switches to the OS user itself).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Checks that the user can enter every ancestor of `path` (the path
    /// itself may not exist yet). PostgreSQL as `postgres` cannot use a data
    /// directory under `/root`, and saying so up front beats a cryptic
    /// initdb failure.
    pub fn check_reachable(&self, path: &Path) -> Result<(), PgError> {
        if self.is_root() {
            return Ok(());
        }
        let mut current = PathBuf::new();
        for part in path.components() {
            current.push(part);
            let Ok(meta) = std::fs::metadata(&current) else {
                break; // does not exist yet: pgkeel creates it with the right owner
            };
            if meta.is_dir()
                && !can_search(meta.mode(), meta.uid(), meta.gid(), self.uid, &self.groups)
            {
                return Err(PgError::Unreachable {
                    user: self.name.clone(),
                    path: path.to_path_buf(),
                    blocker: current,
                });
            }
        }
        Ok(())
    }
}

/// The Unix rule for entering a directory: owner bits for the owner, group
/// bits for a member of its group, otherwise the "other" bits.
pub fn can_search(mode: u32, owner: u32, group: u32, uid: u32, groups: &[u32]) -> bool {
    if uid == 0 {
        return true;
    }
    if uid == owner {
        return mode & 0o100 != 0;
    }
    if groups.contains(&group) {
        return mode & 0o010 != 0;
    }
    mode & 0o001 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_permission_follows_unix_rules() {
        // /root: 0700 root:root: postgres (101:104) cannot enter.
        assert!(!can_search(0o700, 0, 0, 101, &[104]));
        // 0755: anyone may.
        assert!(can_search(0o755, 0, 0, 101, &[104]));
        // 0750 root:postgres: group member may.
        assert!(can_search(0o750, 0, 104, 101, &[104]));
        // owner without x but other with x: owner bits win, so no.
        assert!(!can_search(0o601, 101, 0, 101, &[104]));
        assert!(can_search(0o000, 5, 5, 0, &[]));
    }

    #[test]
    fn missing_user_says_how_to_create_it() {
        let err = OsUser::lookup("pgkeel_no_such_user").expect_err("missing");
        assert!(err.to_string().contains("useradd"), "{err}");
    }
}

//! Where a restore stops (`latest`, a time, a WAL position) as an operator
//! types it, and the backup a restore to that point starts from. Pure: the
//! engine turns the point into its own options.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use pgkeel_core::Lsn;

use crate::{BackupError, BackupInfo, RepositoryInfo, RestoreTarget};

/// The point a restore recovers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryPoint {
    /// Through every archived segment: the newest restorable commit.
    Latest,
    /// The last commit at or before this instant.
    Time(DateTime<Utc>),
    /// Up to this WAL position.
    Lsn(Lsn),
}

/// Why `--to` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a restore target: {why}\nfix: --to latest, --to '2026-12-07 14:03:00+01' (a time with its zone) or --to 0/3000028 (a WAL position)"
)]
pub struct RecoveryPointError {
    /// What was given.
    pub given: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for RecoveryPoint {
    type Err = RecoveryPointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let given = s.trim();
        let fail = |why: &str| RecoveryPointError {
            given: given.to_string(),
            why: why.to_string(),
        };
        if given.eq_ignore_ascii_case("latest") {
            return Ok(RecoveryPoint::Latest);
        }
        if given.contains('/') {
            return given
                .parse::<Lsn>()
                .map(RecoveryPoint::Lsn)
                .map_err(|_| fail("a WAL position is two hexadecimal numbers, like 0/3000028"));
        }
        // `Z` and `UTC` are the zone most people type; chrono wants an offset.
        let normalised = match given
            .strip_suffix('Z')
            .or_else(|| given.strip_suffix(" UTC"))
        {
            Some(rest) => format!("{rest}+00:00"),
            None => given.to_string(),
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(&normalised) {
            return Ok(RecoveryPoint::Time(t.with_timezone(&Utc)));
        }
        for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
            if let Ok(t) = DateTime::parse_from_str(&normalised, format) {
                return Ok(RecoveryPoint::Time(t.with_timezone(&Utc)));
            }
        }
        for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if NaiveDateTime::parse_from_str(&normalised, format).is_ok() {
                return Err(fail(
                    "it has no time zone, and the server's and yours may differ: add one (+00, +01:00, Z)",
                ));
            }
        }
        Err(fail("neither `latest`, a time nor a WAL position"))
    }
}

impl fmt::Display for RecoveryPoint {
    /// As PostgreSQL reads it (`recovery_target_time` / `_lsn`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryPoint::Latest => f.write_str("latest"),
            RecoveryPoint::Time(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f+00")),
            RecoveryPoint::Lsn(lsn) => write!(f, "{lsn}"),
        }
    }
}

impl RecoveryPoint {
    /// The engine's target for this point.
    pub fn restore_target(&self) -> RestoreTarget {
        match self {
            RecoveryPoint::Latest => RestoreTarget::Latest,
            RecoveryPoint::Time(_) => RestoreTarget::Time(self.to_string()),
            RecoveryPoint::Lsn(_) => RestoreTarget::Lsn(self.to_string()),
        }
    }

    /// Whether a restore of `backup` can stop here: the point is after the
    /// backup's end (its first consistent state). Backup times are whole
    /// seconds, so a time must fall in a later second.
    pub fn reachable_from(&self, backup: &BackupInfo) -> bool {
        match self {
            RecoveryPoint::Latest => true,
            RecoveryPoint::Time(t) => t.timestamp() > backup.stop,
            RecoveryPoint::Lsn(lsn) => backup
                .lsn_stop
                .parse::<Lsn>()
                .is_ok_and(|stop| *lsn >= stop),
        }
    }
}

/// The backup a restore to `point` starts from: `from` when given (refused
/// when the point is before its end), else the newest backup that ended
/// before the point. `now`: seconds since the epoch, for refusing a time
/// in the future (recovery would wait for WAL that does not exist).
pub fn choose_backup<'a>(
    info: &'a RepositoryInfo,
    point: &RecoveryPoint,
    from: Option<&str>,
    now: i64,
) -> Result<&'a BackupInfo, BackupError> {
    if let RecoveryPoint::Time(t) = point
        && t.timestamp() > now
    {
        return Err(BackupError::TargetUnreachable(format!(
            "the restore target {point} is in the future; nothing is archived past now\nfix: --to latest, or a time before now"
        )));
    }
    if let Some(label) = from {
        let backup = info
            .backups
            .iter()
            .find(|b| b.label == label)
            .ok_or_else(|| {
                BackupError::NoSuchBackup(format!(
                    "no backup labelled `{label}` in the repository: `pgkeel backup list` shows the labels"
                ))
            })?;
        if !point.reachable_from(backup) {
            return Err(BackupError::TargetUnreachable(format!(
                "the restore target {point} is before the end of backup {label} ({}, {}): a restore from it cannot stop earlier\nfix: leave out --from (pgkeel picks the newest backup that ended before the target), or choose a later target",
                describe_time(backup.stop),
                backup.lsn_stop
            )));
        }
        return Ok(backup);
    }
    let oldest = info.backups.iter().min_by_key(|b| b.stop).ok_or_else(|| {
        BackupError::NoSuchBackup(
            "the repository holds no backup yet, so there is nothing to restore from: take one with `pgkeel backup`".into(),
        )
    })?;
    info.backups
        .iter()
        .filter(|b| point.reachable_from(b))
        .max_by_key(|b| b.stop)
        .ok_or_else(|| {
            BackupError::TargetUnreachable(format!(
                "the restore target {point} is before the oldest backup, {} (it ended {}, at {}): the repository cannot restore to that point\nfix: choose a target after {}",
                oldest.label,
                describe_time(oldest.stop),
                oldest.lsn_stop,
                describe_time(oldest.stop + 1)
            ))
        })
}

/// A time in seconds since the epoch as `2026-12-07 14:03:00+00`.
pub fn describe_time(epoch: i64) -> String {
    DateTime::<Utc>::from_timestamp(epoch, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S+00").to_string())
        .unwrap_or_else(|| epoch.to_string())
}

#[cfg(test)]
mod tests;

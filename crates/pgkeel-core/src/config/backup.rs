//! `[backup]`: the WAL archive and base backups, kept by pgBackRest in one
//! repository shared by every host (a mounted path or S3-compatible object
//! storage). Without a repository the section is inert: no archiving, no
//! backups, and `pgkeel check` reports it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `[backup]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSection {
    /// The repository as a directory (local disk, a mounted volume, NFS):
    /// the same path on every host. Absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The repository in S3-compatible object storage (instead of `path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Repository>,
    /// Full backups kept; older ones are expired with the WAL only they
    /// needed (pgBackRest's `repo1-retention-full`).
    pub retention_full: u32,
    /// When full backups run (UTC): `weekly sun 01:00`, `daily 01:00` or
    /// `off`.
    pub full_schedule: Schedule,
    /// When incremental backups run (UTC), between full ones.
    pub incr_schedule: Schedule,
    /// When the newest backup is restored and checked (UTC).
    pub verify_schedule: Schedule,
    /// Whether backups read their files from a replica (`replica`, the
    /// default: the primary only starts and stops the backup) or from the
    /// primary.
    pub from: BackupSource,
    /// Compression of backups and archived WAL: `zst`, `lz4`, `gz`, `bz2`
    /// or `none`.
    pub compress: String,
    /// Compression level (pgBackRest's default for the type when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress_level: Option<u32>,
    /// Encrypt the repository (AES-256-CBC, the passphrase in
    /// `secrets/backup-cipher.pass`). Unset: on for object storage, off
    /// for a path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<bool>,
    /// Parallel processes for backup and restore.
    pub process_max: u32,
}

impl Default for BackupSection {
    fn default() -> Self {
        BackupSection {
            path: None,
            s3: None,
            retention_full: 2,
            full_schedule: Schedule::Weekly {
                weekday: 6,
                minute: 60,
            },
            incr_schedule: Schedule::Daily { minute: 60 },
            verify_schedule: Schedule::Weekly {
                weekday: 6,
                minute: 3 * 60,
            },
            from: BackupSource::Replica,
            compress: "zst".into(),
            compress_level: None,
            encrypt: None,
            process_max: 2,
        }
    }
}

impl BackupSection {
    /// Whether a repository is configured (archiving and backups on).
    pub fn enabled(&self) -> bool {
        self.path.is_some() || self.s3.is_some()
    }

    /// Whether the repository is encrypted.
    pub fn encrypted(&self) -> bool {
        self.encrypt.unwrap_or(self.s3.is_some())
    }
}

/// `[backup.s3]`: an S3-compatible bucket. The access key and its secret
/// are `secrets/s3-key` and `secrets/s3-key-secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Repository {
    /// Endpoint host (and `:port` when not 443).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Directory inside the bucket.
    #[serde(default = "root")]
    pub path: String,
    /// `host` (virtual-hosted buckets, AWS) or `path` (most emulators and
    /// self-hosted stores).
    #[serde(default = "host_style")]
    pub uri_style: String,
    /// Check the endpoint's TLS certificate.
    #[serde(default = "yes")]
    pub verify_tls: bool,
    /// CA bundle for the endpoint's certificate (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn root() -> String {
    "/".into()
}

fn host_style() -> String {
    "host".into()
}

fn yes() -> bool {
    true
}

/// Where a backup reads the data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupSource {
    /// A streaming replica (the primary only starts and stops the backup).
    #[default]
    Replica,
    /// The primary.
    Primary,
}

/// Minutes in a day and in a week.
const DAY: u32 = 24 * 60;
const WEEK: i64 = 7 * DAY as i64;
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A recurring time (UTC) at which a job is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Never.
    Off,
    /// Every day at `minute` past midnight.
    Daily {
        /// Minutes past midnight (0-1439).
        minute: u32,
    },
    /// Every week on `weekday` (0 = Monday) at `minute` past midnight.
    Weekly {
        /// 0 = Monday … 6 = Sunday.
        weekday: u32,
        /// Minutes past midnight (0-1439).
        minute: u32,
    },
}

impl Schedule {
    /// The latest time the job was due at or before `now` (seconds since
    /// the Unix epoch), `None` when off. A job whose last run started
    /// before this is due, which also runs once a job missed while the
    /// cluster was down.
    pub fn last_due(&self, now: i64) -> Option<i64> {
        let now_min = now.div_euclid(60);
        let (period, offset) = match *self {
            Schedule::Off => return None,
            Schedule::Daily { minute } => (i64::from(DAY), i64::from(minute)),
            // 1970-01-01 was a Thursday (weekday 3).
            Schedule::Weekly { weekday, minute } => (
                WEEK,
                (i64::from(weekday) + 4).rem_euclid(7) * i64::from(DAY) + i64::from(minute),
            ),
        };
        let due = now_min - (now_min - offset).rem_euclid(period);
        Some(due * 60)
    }

    /// Whether a job last started at `last_start` (`None`: never) is due
    /// at `now`.
    pub fn is_due(&self, last_start: Option<i64>, now: i64) -> bool {
        match self.last_due(now) {
            None => false,
            Some(due) => last_start.is_none_or(|s| s < due),
        }
    }
}

/// A schedule that cannot be read, with what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "schedule `{0}` is not understood: write `daily HH:MM`, `weekly DAY HH:MM` (DAY one of mon, tue, wed, thu, fri, sat, sun; UTC) or `off`"
)]
pub struct ScheduleError(String);

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ScheduleError(text.to_string());
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| w.to_ascii_lowercase())
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let time = |t: &str| -> Result<u32, ScheduleError> {
            let (h, m) = t.split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h < 24 && m < 60 && t.len() <= 5 {
                Ok(h * 60 + m)
            } else {
                Err(bad())
            }
        };
        match words.as_slice() {
            ["off"] => Ok(Schedule::Off),
            ["daily", t] => Ok(Schedule::Daily { minute: time(t)? }),
            ["weekly", day, t] => {
                let weekday = WEEKDAYS
                    .iter()
                    .position(|d| day.starts_with(d))
                    .ok_or_else(bad)?;
                Ok(Schedule::Weekly {
                    weekday: weekday as u32,
                    minute: time(t)?,
                })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Schedule::Off => write!(f, "off"),
            Schedule::Daily { minute } => write!(f, "daily {:02}:{:02}", minute / 60, minute % 60),
            Schedule::Weekly { weekday, minute } => write!(
                f,
                "weekly {} {:02}:{:02}",
                WEEKDAYS.get(weekday as usize).copied().unwrap_or("mon"),
                minute / 60,
                minute % 60
            ),
        }
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-07 is a Monday.
    const MON_2026_12_07_0000: i64 = 1_796_601_600;

    #[test]
    fn schedules_round_trip_through_text() {
        for text in ["off", "daily 01:00", "weekly sun 23:59", "weekly mon 00:00"] {
            let s: Schedule = text.parse().unwrap_or(Schedule::Off);
            assert_eq!(s.to_string(), text);
        }
        assert_eq!(
            "Weekly Sunday 1:05".parse(),
            Ok(Schedule::Weekly {
                weekday: 6,
                minute: 65
            })
        );
    }

    #[test]
    fn bad_schedules_name_the_accepted_forms() {
        for text in [
            "",
            "daily",
            "daily 24:00",
            "daily 1:60",
            "weekly 01:00",
            "weekly xyz 01:00",
            "hourly",
            "daily 001:00",
        ] {
            let e = text
                .parse::<Schedule>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("weekly DAY HH:MM"), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_last_due_time_is_at_or_before_now() {
        let daily = Schedule::Daily { minute: 60 };
        let now = MON_2026_12_07_0000 + 30 * 60; // Monday 00:30
        assert_eq!(daily.last_due(now), Some(MON_2026_12_07_0000 - 23 * 3600));
        assert_eq!(
            daily.last_due(MON_2026_12_07_0000 + 3600),
            Some(MON_2026_12_07_0000 + 3600)
        );
        let sunday = Schedule::Weekly {
            weekday: 6,
            minute: 60,
        };
        // The Sunday before, 01:00.
        assert_eq!(sunday.last_due(now), Some(MON_2026_12_07_0000 - 23 * 3600));
        let monday = Schedule::Weekly {
            weekday: 0,
            minute: 0,
        };
        assert_eq!(monday.last_due(now), Some(MON_2026_12_07_0000));
        assert_eq!(Schedule::Off.last_due(now), None);
    }

    #[test]
    fn a_job_missed_while_down_is_due_once() {
        let daily = Schedule::Daily { minute: 60 };
        let now = MON_2026_12_07_0000 + 5 * 3600;
        // Last ran three days ago: due now.
        assert!(daily.is_due(Some(now - 3 * 86_400), now));
        // Ran at 01:00 today (or later): not due until tomorrow.
        assert!(!daily.is_due(Some(MON_2026_12_07_0000 + 3600), now));
        assert!(daily.is_due(None, now));
        assert!(!Schedule::Off.is_due(None, now));
    }
}

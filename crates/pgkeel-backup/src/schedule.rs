//! Which backup is due, from the schedules and what the repository holds.
//! Pure: the leader's agent asks it every minute.

use pgkeel_core::config::BackupSection;

use crate::model::{BackupKind, RepositoryInfo};

/// The backup due at `now` (seconds since the epoch), if any: a full one
/// when the repository has none yet or the full schedule came round since
/// the newest full one started; else an incremental one when its schedule
/// came round since the newest backup of any kind. A time missed while the
/// cluster was down counts once.
pub fn due(backup: &BackupSection, info: &RepositoryInfo, now: i64) -> Option<BackupKind> {
    let newest_full = info.newest(Some(BackupKind::Full)).map(|b| b.start);
    let newest_any = info.newest(None).map(|b| b.start);
    let full_off = backup.full_schedule.last_due(now).is_none();
    if !full_off && (newest_full.is_none() || backup.full_schedule.is_due(newest_full, now)) {
        return Some(BackupKind::Full);
    }
    if newest_any.is_some() && backup.incr_schedule.is_due(newest_any, now) {
        return Some(BackupKind::Incr);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BackupInfo;
    use pgkeel_core::config::Schedule;

    // 2026-12-07 00:00 UTC, a Monday.
    const MONDAY: i64 = 1_796_601_600;
    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;

    fn backup(kind: BackupKind, start: i64) -> BackupInfo {
        BackupInfo::fixture(&format!("{start}"), kind, start + 600, "")
    }

    fn repo(backups: Vec<BackupInfo>) -> RepositoryInfo {
        RepositoryInfo {
            stanza: "c".into(),
            status: "ok".into(),
            system_id: None,
            wal_min: None,
            wal_max: None,
            backups,
            archive_id: None,
        }
    }

    #[test]
    fn an_empty_repository_gets_a_full_backup_at_once() {
        let defaults = BackupSection::default();
        assert_eq!(
            due(&defaults, &repo(vec![]), MONDAY + 5 * HOUR),
            Some(BackupKind::Full)
        );
    }

    #[test]
    fn defaults_take_a_weekly_full_and_daily_incrementals() {
        let b = BackupSection::default(); // full sun 01:00, incr daily 01:00
        // Full taken Sunday 01:00; Monday 00:30: nothing due.
        let sunday_full = backup(BackupKind::Full, MONDAY - 23 * HOUR);
        let r = repo(vec![sunday_full.clone()]);
        assert_eq!(due(&b, &r, MONDAY + 30 * 60), None);
        // Monday 01:00: an incremental.
        assert_eq!(due(&b, &r, MONDAY + HOUR), Some(BackupKind::Incr));
        let r = repo(vec![sunday_full, backup(BackupKind::Incr, MONDAY + HOUR)]);
        assert_eq!(due(&b, &r, MONDAY + 2 * HOUR), None);
        // The next Sunday 01:00: a full one again.
        assert_eq!(due(&b, &r, MONDAY + 6 * DAY + HOUR), Some(BackupKind::Full));
    }

    #[test]
    fn a_time_missed_while_down_runs_once() {
        let b = BackupSection::default();
        // Last backup a full 10 days ago: one full now, not one per week.
        let r = repo(vec![backup(BackupKind::Full, MONDAY - 10 * DAY)]);
        assert_eq!(due(&b, &r, MONDAY + 5 * HOUR), Some(BackupKind::Full));
        let r = repo(vec![
            backup(BackupKind::Full, MONDAY - 10 * DAY),
            backup(BackupKind::Full, MONDAY + 5 * HOUR),
        ]);
        assert_eq!(due(&b, &r, MONDAY + 6 * HOUR), None);
    }

    #[test]
    fn schedules_off_take_nothing() {
        let b = BackupSection {
            full_schedule: Schedule::Off,
            incr_schedule: Schedule::Off,
            ..Default::default()
        };
        assert_eq!(due(&b, &repo(vec![]), MONDAY), None);
        let only_incr = BackupSection {
            full_schedule: Schedule::Off,
            ..Default::default()
        };
        // No full to build on and no full schedule: nothing automatic.
        assert_eq!(due(&only_incr, &repo(vec![]), MONDAY + 2 * HOUR), None);
        let r = repo(vec![backup(BackupKind::Full, MONDAY - 3 * DAY)]);
        assert_eq!(
            due(&only_incr, &r, MONDAY + 2 * HOUR),
            Some(BackupKind::Incr)
        );
    }
}

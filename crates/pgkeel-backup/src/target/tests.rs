use super::*;
use crate::BackupKind;

fn backup(label: &str, stop: i64, lsn_stop: &str) -> BackupInfo {
    BackupInfo::fixture(label, BackupKind::Full, stop, lsn_stop)
}

fn repository(backups: Vec<BackupInfo>) -> RepositoryInfo {
    RepositoryInfo {
        stanza: "main".into(),
        status: "ok".into(),
        system_id: Some(1),
        wal_min: None,
        wal_max: None,
        backups,
        archive_id: None,
    }
}

fn time(s: &str) -> Result<i64, RecoveryPointError> {
    match s.parse()? {
        RecoveryPoint::Time(t) => Ok(t.timestamp()),
        other => panic!("{s} parsed as {other:?}"),
    }
}

#[test]
fn latest_positions_and_times_with_zones_are_read() -> Result<(), RecoveryPointError> {
    assert_eq!("latest".parse::<RecoveryPoint>()?, RecoveryPoint::Latest);
    assert_eq!(" LATEST ".parse::<RecoveryPoint>()?, RecoveryPoint::Latest);
    assert_eq!(
        "0/3000028".parse::<RecoveryPoint>()?,
        RecoveryPoint::Lsn(Lsn(0x300_0028))
    );
    let utc = time("2026-12-07T10:00:00Z")?;
    assert_eq!(time("2026-12-07 10:00:00+00")?, utc);
    assert_eq!(time("2026-12-07 11:00:00+01:00")?, utc);
    assert_eq!(time("2026-12-07 10:00:00 UTC")?, utc);
    assert_eq!(time("2026-12-07 10:00:00.250Z")?, utc);
    Ok(())
}

#[test]
fn a_time_without_zone_is_refused_with_the_fix() {
    let Err(e) = "2026-12-07 10:00:00".parse::<RecoveryPoint>() else {
        panic!("a time without zone was accepted");
    };
    let text = e.to_string();
    assert!(text.contains("no time zone"), "{text}");
    assert!(text.contains("fix: --to latest"), "{text}");
    assert!("yesterday".parse::<RecoveryPoint>().is_err());
    assert!("0/xyz".parse::<RecoveryPoint>().is_err());
}

#[test]
fn the_time_is_written_as_postgresql_reads_it() -> Result<(), RecoveryPointError> {
    let point: RecoveryPoint = "2026-12-07 11:00:00.5+01".parse()?;
    assert_eq!(point.to_string(), "2026-12-07 10:00:00.500000+00");
    assert_eq!(
        point.restore_target(),
        RestoreTarget::Time("2026-12-07 10:00:00.500000+00".into())
    );
    Ok(())
}

#[test]
fn the_newest_backup_ending_before_the_target_is_chosen() -> Result<(), BackupError> {
    let info = repository(vec![
        backup("A", 1_000, "0/2000000"),
        backup("B", 2_000, "0/4000000"),
        backup("C", 3_000, "0/6000000"),
    ]);
    let at = |secs: i64| RecoveryPoint::Time(DateTime::from_timestamp(secs, 0).unwrap_or_default());
    assert_eq!(choose_backup(&info, &at(2_500), None, 10_000)?.label, "B");
    // Within the second a backup ended: the one before it.
    assert_eq!(choose_backup(&info, &at(2_000), None, 10_000)?.label, "A");
    assert_eq!(
        choose_backup(&info, &RecoveryPoint::Latest, None, 10_000)?.label,
        "C"
    );
    assert_eq!(
        choose_backup(&info, &RecoveryPoint::Lsn(Lsn(0x500_0000)), None, 10_000)?.label,
        "B"
    );
    assert_eq!(
        choose_backup(&info, &at(3_500), Some("A"), 10_000)?.label,
        "A"
    );
    Ok(())
}

#[test]
fn a_target_before_the_oldest_backup_is_refused_naming_it() {
    let info = repository(vec![backup("A", 1_000, "0/2000000")]);
    let early = RecoveryPoint::Time(DateTime::from_timestamp(900, 0).unwrap_or_default());
    let Err(e) = choose_backup(&info, &early, None, 10_000) else {
        panic!("a target before every backup was accepted");
    };
    let text = e.to_string();
    assert!(text.contains("before the oldest backup, A"), "{text}");
    assert!(text.contains("fix: choose a target after"), "{text}");
    let Err(e) = choose_backup(&info, &RecoveryPoint::Lsn(Lsn(0x100_0000)), None, 10_000) else {
        panic!("an LSN before every backup was accepted");
    };
    assert!(e.to_string().contains("0/2000000"), "{e}");
}

#[test]
fn the_future_an_unknown_label_and_an_empty_repository_are_refused() {
    let info = repository(vec![backup("A", 1_000, "0/2000000")]);
    let future = RecoveryPoint::Time(DateTime::from_timestamp(20_000, 0).unwrap_or_default());
    assert!(matches!(
        choose_backup(&info, &future, None, 10_000),
        Err(BackupError::TargetUnreachable(m)) if m.contains("in the future")
    ));
    assert!(matches!(
        choose_backup(&info, &RecoveryPoint::Latest, Some("Z"), 10_000),
        Err(BackupError::NoSuchBackup(m)) if m.contains("`Z`")
    ));
    let early = RecoveryPoint::Time(DateTime::from_timestamp(900, 0).unwrap_or_default());
    assert!(matches!(
        choose_backup(&info, &early, Some("A"), 10_000),
        Err(BackupError::TargetUnreachable(m)) if m.contains("leave out --from")
    ));
    assert!(matches!(
        choose_backup(&repository(vec![]), &RecoveryPoint::Latest, None, 10_000),
        Err(BackupError::NoSuchBackup(m)) if m.contains("no backup yet")
    ));
}

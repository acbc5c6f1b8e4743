//! Decoding `pgbackrest info --output=json`: the stanza's status, its
//! archive range and its backups.

use serde::Deserialize;

use crate::model::{BackupInfo, BackupKind, RepositoryInfo};

#[derive(Deserialize)]
struct Stanza {
    name: String,
    status: Status,
    #[serde(default)]
    db: Vec<Db>,
    #[serde(default)]
    archive: Vec<Archive>,
    #[serde(default)]
    backup: Vec<Backup>,
}

#[derive(Deserialize)]
struct Status {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct Db {
    id: i64,
    #[serde(rename = "system-id")]
    system_id: u64,
}

#[derive(Deserialize)]
struct Archive {
    id: String,
    database: DbRef,
    min: Option<String>,
    max: Option<String>,
}

#[derive(Deserialize)]
struct DbRef {
    id: i64,
}

#[derive(Deserialize)]
struct Backup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: Span<i64>,
    #[serde(default)]
    lsn: Option<Span<String>>,
    archive: Span<Option<String>>,
    info: Sizes,
    prior: Option<String>,
    #[serde(default)]
    error: Option<bool>,
    #[serde(default)]
    annotation: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Span<T> {
    start: T,
    stop: T,
}

#[derive(Deserialize)]
struct Sizes {
    size: u64,
    repository: RepoSizes,
}

#[derive(Deserialize)]
struct RepoSizes {
    delta: u64,
}

/// The repository's view of `stanza` from `info`'s JSON (an array of
/// stanzas). A stanza that does not exist yet decodes with its status
/// message ("missing stanza path") and no backups.
pub fn decode_info(json: &str, stanza: &str) -> Result<RepositoryInfo, String> {
    let stanzas: Vec<Stanza> =
        serde_json::from_str(json).map_err(|e| format!("not pgBackRest's info JSON: {e}"))?;
    let s = stanzas
        .into_iter()
        .find(|s| s.name == stanza)
        .ok_or_else(|| format!("stanza `{stanza}` is not in the output"))?;
    let current = s.db.iter().max_by_key(|d| d.id);
    let archive = current.and_then(|d| s.archive.iter().find(|a| a.database.id == d.id));
    let backups = s
        .backup
        .into_iter()
        .map(|b| {
            let kind = match b.kind.as_str() {
                "full" => BackupKind::Full,
                "diff" => BackupKind::Diff,
                "incr" => BackupKind::Incr,
                other => return Err(format!("backup {} has unknown type `{other}`", b.label)),
            };
            let lsn = b.lsn.unwrap_or(Span {
                start: String::new(),
                stop: String::new(),
            });
            Ok(BackupInfo {
                label: b.label,
                kind,
                start: b.timestamp.start,
                stop: b.timestamp.stop,
                lsn_start: lsn.start,
                lsn_stop: lsn.stop,
                wal_start: b.archive.start.unwrap_or_default(),
                wal_stop: b.archive.stop.unwrap_or_default(),
                database_bytes: b.info.size,
                repository_bytes: b.info.repository.delta,
                prior: b.prior,
                error: b.error.unwrap_or(false),
                annotations: b.annotation.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RepositoryInfo {
        stanza: s.name,
        status: if s.status.code == 0 {
            "ok".into()
        } else {
            s.status.message
        },
        system_id: current.map(|d| d.system_id),
        wal_min: archive.and_then(|a| a.min.clone()),
        wal_max: archive.and_then(|a| a.max.clone()),
        backups,
        archive_id: archive.map(|a| a.id.clone()),
    })
}

/// Archived segment names from `repo-ls --output=json` of an archive
/// directory (its files are `<segment>-<sha1>.<compression>`).
pub fn decode_segment_listing(json: &str) -> Result<std::collections::BTreeSet<String>, String> {
    let entries: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("not a repo-ls listing: {e}"))?;
    Ok(entries
        .keys()
        .filter_map(|k| k.split('-').next())
        .filter(|name| crate::wal::Segment::parse(name).is_some())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_stanza_decodes_with_its_status() {
        let json = r#"[{"archive":[],"backup":[],"db":[],"name":"main","repo":[{"cipher":"none","key":1,"status":{"code":1,"message":"missing stanza path"}}],"status":{"code":1,"lock":{"backup":{"held":false}},"message":"missing stanza path"}}]"#;
        let info = decode_info(json, "main").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.status, "missing stanza path");
        assert!(info.backups.is_empty());
        assert_eq!(info.system_id, None);
    }

    #[test]
    fn a_directory_listing_yields_segment_names() {
        let json = r#"{".":{"type":"path"},"000000010000000000000003-2b3c.zst":{"type":"file","size":10},"000000010000000000000004.partial-ff.zst":{"type":"file"},"00000002.history-ab":{"type":"file"}}"#;
        let names = decode_segment_listing(json).unwrap_or_default();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["000000010000000000000003"]
        );
        assert!(decode_segment_listing("[").is_err());
    }

    #[test]
    fn garbage_and_other_stanzas_are_errors() {
        assert!(decode_info("nope", "main").is_err());
        let e = decode_info(
            r#"[{"name":"other","status":{"code":0,"message":"ok"}}]"#,
            "main",
        );
        assert!(e.err().is_some_and(|e| e.contains("`main`")));
    }
}

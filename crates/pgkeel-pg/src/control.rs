//! The cluster's identity as PostgreSQL records it in `global/pg_control`:
//! the system identifier initdb chose. Every copy made with pg_basebackup
//! keeps it, so it tells whether a data directory belongs to a cluster.

use std::path::Path;

use crate::{PgError, PgRunner};

/// The system identifier in the bytes of a `pg_control` file: its first
/// field, a `uint64` in the machine's byte order (the file is never moved
/// between architectures). `None` when the file is too short to hold it or
/// holds zero (initdb never writes zero).
pub fn system_identifier(control: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = control.get(..8)?.try_into().ok()?;
    let id = u64::from_ne_bytes(bytes);
    (id != 0).then_some(id)
}

/// The system identifier of the data directory `data` (also of an
/// unfinished `data.partial` once initdb or pg_basebackup has written its
/// control file). `Ok(None)` when there is no control file yet.
pub fn read_system_identifier(data: &Path) -> Result<Option<u64>, PgError> {
    let path = data.join("global").join("pg_control");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(system_identifier(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PgError::io("read", &path, e)),
    }
}

/// CRC-32C (Castagnoli), as PostgreSQL checksums `pg_control`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

/// Where the checksum of a `pg_control` file sits: the control data's last
/// field, covering every byte before it. Its offset differs between major
/// versions, so it is found rather than assumed (a false match is a one in
/// 2^32 chance per offset).
fn checksum_offset(control: &[u8]) -> Option<usize> {
    (8..control.len().min(1024).saturating_sub(4))
        .step_by(4)
        .find(|&at| {
            let stored = control
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_ne_bytes);
            stored == Some(crc32c(&control[..at]))
        })
}

/// A copy of the `pg_control` bytes with system identifier `id`, the
/// checksum recomputed. `None` when the file's checksum cannot be found
/// (damaged, or not a control file).
pub fn with_system_identifier(control: &[u8], id: u64) -> Option<Vec<u8>> {
    let at = checksum_offset(control)?;
    let mut out = control.to_vec();
    out[..8].copy_from_slice(&id.to_ne_bytes());
    let crc = crc32c(&out[..at]);
    out[at..at + 4].copy_from_slice(&crc.to_ne_bytes());
    Some(out)
}

/// A fresh system identifier made as initdb makes one: the time in
/// seconds in the high half, microseconds and 12 random bits below.
pub fn new_system_identifier(now: std::time::Duration, random: u16) -> u64 {
    (now.as_secs() << 32) | (u64::from(now.subsec_micros()) << 12) | u64::from(random & 0x0FFF)
}

/// Gives the cleanly stopped data directory `data` a new system
/// identifier, so that nothing mistakes it for the cluster it was restored
/// from (pgkeel's agents, pgBackRest's stanzas, a replica of the old
/// cluster). The identifier is written into `pg_control`, then
/// `pg_resetwal` starts a new WAL segment carrying it: existing WAL pages
/// name the old identifier and would be refused. Nothing is lost, since a
/// clean shutdown leaves nothing to replay. Returns the new identifier.
pub async fn give_new_system_identifier(
    runner: &PgRunner,
    node: &str,
    data: &Path,
) -> Result<u64, PgError> {
    let path = data.join("global").join("pg_control");
    let control = std::fs::read(&path).map_err(|e| PgError::io("read", &path, e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let id = new_system_identifier(now, (std::process::id() & 0x0FFF) as u16);
    let rewritten = with_system_identifier(&control, id).ok_or_else(|| PgError::Unexpected {
        node: node.to_string(),
        what: "pg_control checksum",
        detail: format!(
            "{} has no valid checksum: the restored copy is damaged; restore it again",
            path.display()
        ),
    })?;
    // In place: the file keeps its owner and mode.
    std::fs::write(&path, rewritten).map_err(|e| PgError::io("write", &path, e))?;
    runner
        .run(node, "pg_resetwal", ["-D".as_ref(), data.as_os_str()], &[])
        .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_field_in_native_order() {
        let id: u64 = 7_447_342_349_817_344_229;
        let mut control = id.to_ne_bytes().to_vec();
        control.extend_from_slice(&[0xAB; 100]);
        assert_eq!(system_identifier(&control), Some(id));
    }

    #[test]
    fn short_or_zero_is_no_identifier() {
        assert_eq!(system_identifier(&[1, 2, 3]), None);
        assert_eq!(system_identifier(&[0; 16]), None);
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    /// A control file as PostgreSQL lays it out: fields, the checksum over
    /// them, zero padding to 8 kB.
    fn control_file(id: u64, fields: usize) -> Vec<u8> {
        let mut bytes = id.to_ne_bytes().to_vec();
        bytes.extend((0..fields).map(|i| (i * 7 % 251) as u8));
        let crc = crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_ne_bytes());
        bytes.resize(8192, 0);
        bytes
    }

    #[test]
    fn a_new_identifier_keeps_the_checksum_valid() {
        for fields in [288, 292, 300] {
            let old = control_file(7_447_342_349_817_344_229, fields);
            let Some(new) = with_system_identifier(&old, 42) else {
                panic!("checksum not found with {fields} field bytes");
            };
            assert_eq!(system_identifier(&new), Some(42));
            assert_eq!(new.len(), old.len());
            assert_eq!(checksum_offset(&new), Some(8 + fields));
            assert_eq!(new[8..8 + fields], old[8..8 + fields]);
        }
    }

    #[test]
    fn a_damaged_control_file_is_not_rewritten() {
        let mut control = control_file(1, 288);
        control[20] ^= 0xFF;
        assert_eq!(with_system_identifier(&control, 2), None);
    }

    #[test]
    fn identifiers_follow_the_clock() {
        let id = new_system_identifier(std::time::Duration::new(1_800_000_000, 5_000), 0xFFFF);
        assert_eq!(id >> 32, 1_800_000_000);
        assert_eq!((id >> 12) & 0xF_FFFF, 5);
        assert_eq!(id & 0xFFF, 0xFFF);
    }

    #[test]
    fn missing_control_file_is_none() -> Result<(), PgError> {
        let dir = tempfile::tempdir().map_err(|e| PgError::io("create", "tmp", e))?;
        assert_eq!(read_system_identifier(dir.path())?, None);
        Ok(())
    }
}

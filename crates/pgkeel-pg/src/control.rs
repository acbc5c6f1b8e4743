//! The cluster's identity as PostgreSQL records it in `global/pg_control`:
//! the system identifier initdb chose. Every copy made with pg_basebackup
//! keeps it, so it tells whether a data directory belongs to a cluster.

use std::path::Path;

use crate::PgError;

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
    fn missing_control_file_is_none() -> Result<(), PgError> {
        let dir = tempfile::tempdir().map_err(|e| PgError::io("create", "tmp", e))?;
        assert_eq!(read_system_identifier(dir.path())?, None);
        Ok(())
    }
}

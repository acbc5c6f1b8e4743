//! Splitting a byte stream into messages. A declared length is checked
//! before anything is reserved for it, so a client announcing a 2 GB
//! message costs nothing and gets a clear error.

use crate::WireError;

/// Largest regular message accepted (PostgreSQL itself allows up to 1 GB
/// for a few types; a pooler has no business buffering that much).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Largest startup packet accepted (PostgreSQL's own limit).
pub const MAX_STARTUP_LEN: usize = 10_000;

fn checked_len(raw: [u8; 4], min: u32, max: usize) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(raw);
    if len < min {
        return Err(WireError::LengthTooShort { len });
    }
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize > max {
        return Err(WireError::LengthTooLong { len, max });
    }
    Ok(len_usize)
}

/// A complete tagged message at the start of `buf`: `(tag, total length
/// including the tag byte)`, `None` when more bytes are needed, an error
/// when the length is impossible or above `max`.
pub fn split_message(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = checked_len([buf[1], buf[2], buf[3], buf[4]], 4, max)?;
    if buf.len() < 1 + len {
        return Ok(None);
    }
    Ok(Some((buf[0], 1 + len)))
}

/// A complete untagged startup-phase packet (startup, SSL/GSS request,
/// cancel) at the start of `buf`: its total length, or `None` when more
/// bytes are needed.
pub fn split_startup(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = checked_len([buf[0], buf[1], buf[2], buf[3]], 8, MAX_STARTUP_LEN)?;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_complete_messages() {
        assert_eq!(split_message(b"Q\0\0", MAX_MESSAGE_LEN), Ok(None));
        assert_eq!(split_message(b"Q\0\0\0\x06a", MAX_MESSAGE_LEN), Ok(None));
        assert_eq!(
            split_message(b"Q\0\0\0\x06a\0rest", MAX_MESSAGE_LEN),
            Ok(Some((b'Q', 7)))
        );
    }

    #[test]
    fn rejects_impossible_and_absurd_lengths() {
        assert_eq!(
            split_message(b"Q\0\0\0\x03", MAX_MESSAGE_LEN),
            Err(WireError::LengthTooShort { len: 3 })
        );
        assert!(matches!(
            split_message(b"Q\x7f\xff\xff\xff", MAX_MESSAGE_LEN),
            Err(WireError::LengthTooLong { .. })
        ));
        assert!(matches!(
            split_startup(b"\xff\xff\xff\xff"),
            Err(WireError::LengthTooLong { .. })
        ));
        assert_eq!(
            split_startup(b"\0\0\0\x04"),
            Err(WireError::LengthTooShort { len: 4 })
        );
    }

    #[test]
    fn startup_packets_are_untagged() {
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(split_startup(&ssl), Ok(Some(8)));
        assert_eq!(split_startup(&ssl[..7]), Ok(None));
    }
}

//! Why bytes could not be read as a protocol message.

/// A decoding failure. Every variant names what was being read so a client
/// that sent garbage gets an error it can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A declared length below the minimum (the length counts itself).
    #[error("invalid message length {len} (the length field counts itself: at least 4)")]
    LengthTooShort {
        /// The declared length.
        len: u32,
    },
    /// A declared length above what the codec accepts; nothing is allocated
    /// for it.
    #[error("message length {len} exceeds the maximum of {max} bytes")]
    LengthTooLong {
        /// The declared length.
        len: u32,
        /// The limit in force.
        max: usize,
    },
    /// The body ended before a field was complete.
    #[error("truncated {what} in {message} message")]
    Truncated {
        /// Message type.
        message: &'static str,
        /// Field being read.
        what: &'static str,
    },
    /// Bytes left over after the last field.
    #[error("{extra} unexpected trailing bytes in {message} message")]
    TrailingBytes {
        /// Message type.
        message: &'static str,
        /// How many.
        extra: usize,
    },
    /// A string field that is not UTF-8.
    #[error("{what} in {message} message is not valid UTF-8")]
    NotUtf8 {
        /// Message type.
        message: &'static str,
        /// Field.
        what: &'static str,
    },
    /// A field with a value the protocol does not allow.
    #[error("invalid {what} in {message} message: {detail}")]
    Invalid {
        /// Message type.
        message: &'static str,
        /// Field.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A message type byte this side of the protocol does not define.
    #[error("unknown message type {tag:?} (byte {byte})", tag = char::from(*.byte))]
    UnknownTag {
        /// The type byte.
        byte: u8,
    },
    /// A startup packet with a protocol version other than 3.x or the
    /// special request codes.
    #[error("unsupported frontend protocol {major}.{minor}: pgkeel speaks 3.0")]
    UnsupportedProtocol {
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
}

//! The untagged packets a client may send first: a startup message, an SSL
//! or GSS encryption request, or a cancel request.

use crate::WireError;
use crate::cursor::{Cursor, put_cstr};

/// Protocol 3.0 as sent in a startup message.
pub const PROTOCOL_3_0: u32 = 196_608;
/// The magic version of an SSLRequest.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The magic version of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The magic version of a CancelRequest.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A decoded startup-phase packet (the body after the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// StartupMessage: protocol 3.x and `name=value` parameters (`user`,
    /// `database`, `application_name`, options...).
    Startup {
        /// Minor protocol version the client asked for (we answer 3.0).
        minor: u16,
        /// Parameters in the order sent.
        params: Vec<(&'a str, &'a str)>,
    },
    /// SSLRequest: the client wants TLS before the startup message.
    SslRequest,
    /// GSSENCRequest: the client wants GSSAPI encryption.
    GssEncRequest,
    /// CancelRequest: cancel the query running for this backend key.
    Cancel {
        /// Backend process id (as handed out in BackendKeyData).
        pid: i32,
        /// Secret key.
        key: i32,
    },
}

impl<'a> StartupPacket<'a> {
    /// Decodes a packet body: `packet` is everything after the 4-byte
    /// length (see [`crate::split_startup`]).
    pub fn decode(packet: &'a [u8]) -> Result<Self, WireError> {
        let mut c = Cursor::new(packet, "startup");
        let code = c.u32("protocol version")?;
        match code {
            SSL_REQUEST_CODE => c.finish().map(|()| StartupPacket::SslRequest),
            GSSENC_REQUEST_CODE => c.finish().map(|()| StartupPacket::GssEncRequest),
            CANCEL_REQUEST_CODE => {
                let pid = c.i32("process id")?;
                let key = c.i32("secret key")?;
                c.finish()?;
                Ok(StartupPacket::Cancel { pid, key })
            }
            _ => {
                let major = (code >> 16) as u16;
                let minor = (code & 0xffff) as u16;
                if major != 3 {
                    return Err(WireError::UnsupportedProtocol { major, minor });
                }
                let mut params = Vec::new();
                loop {
                    let name = c.cstr("parameter name")?;
                    if name.is_empty() {
                        break;
                    }
                    let value = c.cstr("parameter value")?;
                    params.push((name, value));
                }
                c.finish()?;
                Ok(StartupPacket::Startup { minor, params })
            }
        }
    }

    /// The whole packet, length included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        match self {
            StartupPacket::Startup { minor, params } => {
                out.extend_from_slice(&(0x0003_0000 | u32::from(*minor)).to_be_bytes());
                for (k, v) in params {
                    put_cstr(out, k);
                    put_cstr(out, v);
                }
                out.push(0);
            }
            StartupPacket::SslRequest => out.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes()),
            StartupPacket::GssEncRequest => {
                out.extend_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes())
            }
            StartupPacket::Cancel { pid, key } => {
                out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&key.to_be_bytes());
            }
        }
        let len = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Every parameter of a startup message, in the order sent (none
    /// for the other packets): the proxy takes those it does not handle
    /// itself as the client's settings.
    pub fn params(&self) -> &[(&'a str, &'a str)] {
        match self {
            StartupPacket::Startup { params, .. } => params,
            _ => &[],
        }
    }

    /// A startup parameter by name.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        match self {
            StartupPacket::Startup { params, .. } => {
                params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_startup_and_requests() -> Result<(), WireError> {
        let mut buf = Vec::new();
        StartupPacket::Startup {
            minor: 0,
            params: vec![("user", "app"), ("database", "db")],
        }
        .encode(&mut buf);
        let p = StartupPacket::decode(&buf[4..])?;
        assert_eq!(p.param("user"), Some("app"));
        assert_eq!(p.param("database"), Some("db"));
        assert_eq!(
            StartupPacket::decode(&[0x04, 0xd2, 0x16, 0x2f])?,
            StartupPacket::SslRequest
        );
        Ok(())
    }

    #[test]
    fn rejects_other_protocols_and_unterminated_params() {
        assert_eq!(
            StartupPacket::decode(&[0, 2, 0, 0, 0]),
            Err(WireError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        assert!(StartupPacket::decode(&[0, 3, 0, 0, b'u', b's']).is_err());
    }
}

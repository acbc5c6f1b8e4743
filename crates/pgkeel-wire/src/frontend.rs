//! Messages a client sends after startup, as borrowed views of the frame so
//! the proxy can route and relay without copying.
//!
//! Text a client writes (SQL, statement and portal names, a COPY failure
//! reason) is kept as the bytes sent: it is in the client's
//! `client_encoding`, which need not be UTF-8 (LATIN1, say), and the server
//! converts it, or refuses it with SQLSTATE 22021. Decoding therefore never
//! fails on encoding, and encoding a decoded message gives back its frame.

use crate::WireError;
use crate::cursor::{Cursor, begin, count_i16, finish, len_i32, put_cbytes};

/// A frontend message. Decoded from a complete frame (see
/// [`crate::split_message`]); `encode` produces the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// `Q`: simple query (one or more statements), in the client's
    /// encoding.
    Query(&'a [u8]),
    /// `P`: prepare `query` as statement `name` ("" = unnamed).
    Parse {
        /// Statement name (client encoding).
        name: &'a [u8],
        /// SQL text (client encoding).
        query: &'a [u8],
        /// Parameter type OIDs (0 = unspecified).
        param_types: Vec<u32>,
    },
    /// `B`: bind parameters to `statement`, creating `portal`.
    Bind {
        /// Portal name (client encoding).
        portal: &'a [u8],
        /// Statement name (client encoding).
        statement: &'a [u8],
        /// Formats, values and result formats, kept raw (see [`BindTail`]).
        tail: &'a [u8],
    },
    /// `D`: describe a statement (`b'S'`) or portal (`b'P'`).
    Describe {
        /// `S` or `P`.
        kind: u8,
        /// Its name (client encoding).
        name: &'a [u8],
    },
    /// `E`: run a portal.
    Execute {
        /// Portal name (client encoding).
        portal: &'a [u8],
        /// Row limit (0 = all).
        max_rows: i32,
    },
    /// `C`: close a statement (`S`) or portal (`P`).
    Close {
        /// `S` or `P`.
        kind: u8,
        /// Its name (client encoding).
        name: &'a [u8],
    },
    /// `S`: end of an extended-protocol batch.
    Sync,
    /// `H`: ask for pending output without ending the batch.
    Flush,
    /// `d`: COPY data.
    CopyData(&'a [u8]),
    /// `c`: COPY finished.
    CopyDone,
    /// `f`: COPY aborted with a reason (client encoding).
    CopyFail(&'a [u8]),
    /// `X`: the client is leaving.
    Terminate,
    /// `p`: password, SASLInitialResponse or SASLResponse (the meaning
    /// depends on the authentication step; see [`crate::scram`]).
    Password(&'a [u8]),
    /// `F`: legacy function call, relayed raw.
    FunctionCall(&'a [u8]),
}

fn describe_kind(c: &mut Cursor<'_>) -> Result<u8, WireError> {
    let kind = c.u8("kind")?;
    if kind == b'S' || kind == b'P' {
        Ok(kind)
    } else {
        Err(WireError::Invalid {
            message: "Describe/Close",
            what: "kind",
            detail: format!("{:?} is neither 'S' nor 'P'", char::from(kind)),
        })
    }
}

impl<'a> FrontendMessage<'a> {
    /// Decodes `frame` (tag, length, body).
    pub fn decode(frame: &'a [u8]) -> Result<Self, WireError> {
        let (&tag, rest) = frame.split_first().ok_or(WireError::Truncated {
            message: "frontend",
            what: "type",
        })?;
        let body = rest.get(4..).ok_or(WireError::Truncated {
            message: "frontend",
            what: "length",
        })?;
        Self::decode_body(tag, body)
    }

    /// Decodes a frame that [`FrontendMessage::decode`] accepted before.
    /// The proxy decodes each message of a unit as it arrives (to refuse
    /// garbage at once), then again to route the unit and to relay it: a
    /// Bind's parameters, the costliest part of the check, are not walked
    /// again. Every read is still bounds-checked.
    pub fn decode_again(frame: &'a [u8]) -> Result<Self, WireError> {
        match frame {
            // Checked to hold one NUL, its last byte.
            [b'Q', _, _, _, _, query @ .., 0] => Ok(FrontendMessage::Query(query)),
            [b'B', _, _, _, _, body @ ..] => {
                let mut c = Cursor::new(body, "Bind");
                let portal = c.cbytes("portal name")?;
                let statement = c.cbytes("statement name")?;
                Ok(FrontendMessage::Bind {
                    portal,
                    statement,
                    tail: c.rest(),
                })
            }
            _ => Self::decode(frame),
        }
    }

    /// Decodes a body whose tag is known.
    pub fn decode_body(tag: u8, body: &'a [u8]) -> Result<Self, WireError> {
        let msg = match tag {
            b'Q' => {
                let mut c = Cursor::new(body, "Query");
                let q = c.cbytes("query")?;
                c.finish()?;
                FrontendMessage::Query(q)
            }
            b'P' => {
                let mut c = Cursor::new(body, "Parse");
                let name = c.cbytes("statement name")?;
                let query = c.cbytes("query")?;
                let n = c.count16("parameter count")?;
                if c.remaining() < n * 4 {
                    return Err(WireError::Truncated {
                        message: "Parse",
                        what: "parameter types",
                    });
                }
                let mut param_types = Vec::with_capacity(n);
                for _ in 0..n {
                    param_types.push(c.u32("parameter type")?);
                }
                c.finish()?;
                FrontendMessage::Parse {
                    name,
                    query,
                    param_types,
                }
            }
            b'B' => {
                let mut c = Cursor::new(body, "Bind");
                let portal = c.cbytes("portal name")?;
                let statement = c.cbytes("statement name")?;
                let tail = c.rest();
                BindTail::check(tail)?;
                FrontendMessage::Bind {
                    portal,
                    statement,
                    tail,
                }
            }
            b'D' | b'C' => {
                let mut c = Cursor::new(body, if tag == b'D' { "Describe" } else { "Close" });
                let kind = describe_kind(&mut c)?;
                let name = c.cbytes("name")?;
                c.finish()?;
                if tag == b'D' {
                    FrontendMessage::Describe { kind, name }
                } else {
                    FrontendMessage::Close { kind, name }
                }
            }
            b'E' => {
                let mut c = Cursor::new(body, "Execute");
                let portal = c.cbytes("portal name")?;
                let max_rows = c.i32("row limit")?;
                c.finish()?;
                FrontendMessage::Execute { portal, max_rows }
            }
            b'S' | b'H' | b'c' | b'X' => {
                Cursor::new(body, "Sync/Flush/CopyDone/Terminate").finish()?;
                match tag {
                    b'S' => FrontendMessage::Sync,
                    b'H' => FrontendMessage::Flush,
                    b'c' => FrontendMessage::CopyDone,
                    _ => FrontendMessage::Terminate,
                }
            }
            b'd' => FrontendMessage::CopyData(body),
            b'f' => {
                let mut c = Cursor::new(body, "CopyFail");
                let reason = c.cbytes("reason")?;
                c.finish()?;
                FrontendMessage::CopyFail(reason)
            }
            b'p' => FrontendMessage::Password(body),
            b'F' => FrontendMessage::FunctionCall(body),
            byte => return Err(WireError::UnknownTag { byte }),
        };
        Ok(msg)
    }

    /// The type byte.
    pub fn tag(&self) -> u8 {
        match self {
            FrontendMessage::Query(_) => b'Q',
            FrontendMessage::Parse { .. } => b'P',
            FrontendMessage::Bind { .. } => b'B',
            FrontendMessage::Describe { .. } => b'D',
            FrontendMessage::Execute { .. } => b'E',
            FrontendMessage::Close { .. } => b'C',
            FrontendMessage::Sync => b'S',
            FrontendMessage::Flush => b'H',
            FrontendMessage::CopyData(_) => b'd',
            FrontendMessage::CopyDone => b'c',
            FrontendMessage::CopyFail(_) => b'f',
            FrontendMessage::Terminate => b'X',
            FrontendMessage::Password(_) => b'p',
            FrontendMessage::FunctionCall(_) => b'F',
        }
    }

    /// Appends the complete frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = begin(out, self.tag());
        match self {
            FrontendMessage::Query(q) => put_cbytes(out, q),
            FrontendMessage::Parse {
                name,
                query,
                param_types,
            } => {
                put_cbytes(out, name);
                put_cbytes(out, query);
                out.extend_from_slice(&count_i16(param_types.len()));
                for t in param_types {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
            FrontendMessage::Bind {
                portal,
                statement,
                tail,
            } => {
                put_cbytes(out, portal);
                put_cbytes(out, statement);
                out.extend_from_slice(tail);
            }
            FrontendMessage::Describe { kind, name } | FrontendMessage::Close { kind, name } => {
                out.push(*kind);
                put_cbytes(out, name);
            }
            FrontendMessage::Execute { portal, max_rows } => {
                put_cbytes(out, portal);
                out.extend_from_slice(&max_rows.to_be_bytes());
            }
            FrontendMessage::Sync
            | FrontendMessage::Flush
            | FrontendMessage::CopyDone
            | FrontendMessage::Terminate => {}
            FrontendMessage::CopyData(b)
            | FrontendMessage::Password(b)
            | FrontendMessage::FunctionCall(b) => out.extend_from_slice(b),
            FrontendMessage::CopyFail(r) => put_cbytes(out, r),
        }
        finish(out, at);
    }
}

/// The part of a Bind after the two names, decoded for validation and
/// tests (the proxy relays it raw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindTail<'a> {
    /// Parameter format codes.
    pub param_formats: Vec<i16>,
    /// Parameter values (`None` = NULL).
    pub params: Vec<Option<&'a [u8]>>,
    /// Result column format codes.
    pub result_formats: Vec<i16>,
}

impl<'a> BindTail<'a> {
    /// Checks the tail of a Bind body as [`BindTail::decode`] does, without
    /// building it: the relay forwards a Bind as sent, and every client's
    /// every Bind passes here, so the check allocates nothing.
    pub fn check(tail: &[u8]) -> Result<(), WireError> {
        let mut c = Cursor::new(tail, "Bind");
        let n = c.count16("format count")?;
        c.bytes(n * 2, "parameter formats")?;
        let n = c.count16("parameter count")?;
        if c.remaining() < n * 4 {
            return Err(WireError::Truncated {
                message: "Bind",
                what: "parameters",
            });
        }
        for _ in 0..n {
            c.nullable("parameter")?;
        }
        let n = c.count16("result format count")?;
        c.bytes(n * 2, "result formats")?;
        c.finish()
    }

    /// Decodes and checks the tail of a Bind body.
    pub fn decode(tail: &'a [u8]) -> Result<Self, WireError> {
        let mut c = Cursor::new(tail, "Bind");
        let n = c.count16("format count")?;
        if c.remaining() < n * 2 {
            return Err(WireError::Truncated {
                message: "Bind",
                what: "parameter formats",
            });
        }
        let param_formats = (0..n)
            .map(|_| c.i16("format"))
            .collect::<Result<Vec<_>, _>>()?;
        let n = c.count16("parameter count")?;
        if c.remaining() < n * 4 {
            return Err(WireError::Truncated {
                message: "Bind",
                what: "parameters",
            });
        }
        let params = (0..n)
            .map(|_| c.nullable("parameter"))
            .collect::<Result<Vec<_>, _>>()?;
        let n = c.count16("result format count")?;
        if c.remaining() < n * 2 {
            return Err(WireError::Truncated {
                message: "Bind",
                what: "result formats",
            });
        }
        let result_formats = (0..n)
            .map(|_| c.i16("result format"))
            .collect::<Result<Vec<_>, _>>()?;
        c.finish()?;
        Ok(BindTail {
            param_formats,
            params,
            result_formats,
        })
    }

    /// The raw tail bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&count_i16(self.param_formats.len()));
        for f in &self.param_formats {
            out.extend_from_slice(&f.to_be_bytes());
        }
        out.extend_from_slice(&count_i16(self.params.len()));
        for p in &self.params {
            match p {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    out.extend_from_slice(&len_i32(v.len()));
                    out.extend_from_slice(v);
                }
            }
        }
        out.extend_from_slice(&count_i16(self.result_formats.len()));
        for f in &self.result_formats {
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_checks_counts() -> Result<(), WireError> {
        let msg = FrontendMessage::Parse {
            name: b"s1",
            query: b"SELECT $1",
            param_types: vec![23],
        };
        let mut buf = Vec::new();
        msg.encode(&mut buf);
        assert_eq!(FrontendMessage::decode(&buf)?, msg);
        // Claims 1000 parameter types but carries none.
        let mut bad = Vec::new();
        let at = begin(&mut bad, b'P');
        bad.extend_from_slice(b"\0q\0\x03\xe8");
        finish(&mut bad, at);
        assert!(FrontendMessage::decode(&bad).is_err());
        Ok(())
    }

    /// A client in LATIN1 (or one sending bytes the server will refuse)
    /// is no protocol error: every text field comes back as sent, and the
    /// frame encodes to the same bytes.
    #[test]
    fn text_in_another_encoding_is_kept_as_sent() -> Result<(), WireError> {
        let msgs = [
            FrontendMessage::Query(b"SELECT 'caf\xe9'"),
            FrontendMessage::Parse {
                name: b"s\xe9",
                query: b"SELECT '\xff\xfe'",
                param_types: vec![],
            },
            FrontendMessage::Bind {
                portal: b"p\xe9",
                statement: b"s\xe9",
                tail: b"\0\0\0\0\0\0",
            },
            FrontendMessage::Describe {
                kind: b'S',
                name: b"s\xe9",
            },
            FrontendMessage::Execute {
                portal: b"p\xe9",
                max_rows: 0,
            },
            FrontendMessage::Close {
                kind: b'P',
                name: b"p\xe9",
            },
            FrontendMessage::CopyFail(b"donn\xe9es"),
        ];
        for msg in msgs {
            let mut buf = Vec::new();
            msg.encode(&mut buf);
            let decoded = FrontendMessage::decode(&buf)?;
            let mut again = Vec::new();
            decoded.encode(&mut again);
            assert_eq!(decoded, msg);
            assert_eq!(again, buf);
        }
        // A name without its NUL is still an error, not a panic.
        let mut bad = Vec::new();
        let at = begin(&mut bad, b'E');
        bad.extend_from_slice(b"p\xe9");
        finish(&mut bad, at);
        assert_eq!(
            FrontendMessage::decode(&bad),
            Err(WireError::Truncated {
                message: "Execute",
                what: "portal name"
            })
        );
        Ok(())
    }

    #[test]
    fn bind_tail_is_validated() {
        let mut buf = Vec::new();
        let at = begin(&mut buf, b'B');
        // portal "", statement "", 0 formats, 1 param of length 100 with 1 byte.
        buf.extend_from_slice(b"\0\0\0\0\0\x01\0\0\0\x64x");
        finish(&mut buf, at);
        assert!(matches!(
            FrontendMessage::decode(&buf),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_tags_are_errors() {
        assert_eq!(
            FrontendMessage::decode(b"z\0\0\0\x04"),
            Err(WireError::UnknownTag { byte: b'z' })
        );
    }
}

//! Messages a server sends, as borrowed views; the proxy decodes only the
//! few it acts on (authentication, ReadyForQuery, errors, completions) and
//! relays the rest by tag.

use crate::WireError;
use crate::cursor::{Cursor, begin, count_i16, finish, len_i32, put_cstr};

/// Transaction status carried by ReadyForQuery: it tells the proxy when a
/// server connection may go back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// `I`: not in a transaction.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

impl TxStatus {
    /// The status byte.
    pub fn byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }

    /// Parses the status byte.
    pub fn from_byte(b: u8) -> Result<Self, WireError> {
        match b {
            b'I' => Ok(TxStatus::Idle),
            b'T' => Ok(TxStatus::InTransaction),
            b'E' => Ok(TxStatus::Failed),
            _ => Err(WireError::Invalid {
                message: "ReadyForQuery",
                what: "status",
                detail: format!("byte {b}"),
            }),
        }
    }
}

/// Fields of an ErrorResponse or NoticeResponse (type byte, value).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields<'a> {
    /// Fields in order (`S` severity, `V` non-localized severity, `C`
    /// SQLSTATE, `M` message, `D` detail, `H` hint, ...).
    pub fields: Vec<(u8, &'a str)>,
}

impl<'a> ErrorFields<'a> {
    /// The usual fields of an error the proxy itself raises.
    pub fn new(severity: &'a str, code: &'a str, message: &'a str) -> Self {
        ErrorFields {
            fields: vec![
                (b'S', severity),
                (b'V', severity),
                (b'C', code),
                (b'M', message),
            ],
        }
    }

    /// A field by type byte.
    pub fn get(&self, ty: u8) -> Option<&'a str> {
        self.fields.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
    }

    /// The SQLSTATE.
    pub fn code(&self) -> Option<&'a str> {
        self.get(b'C')
    }

    /// The primary message.
    pub fn message(&self) -> Option<&'a str> {
        self.get(b'M')
    }

    fn decode(body: &'a [u8], message: &'static str) -> Result<Self, WireError> {
        let mut c = Cursor::new(body, message);
        let mut fields = Vec::new();
        loop {
            let ty = c.u8("field type")?;
            if ty == 0 {
                break;
            }
            fields.push((ty, c.cstr("field value")?));
        }
        c.finish()?;
        Ok(ErrorFields { fields })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for (ty, v) in &self.fields {
            out.push(*ty);
            put_cstr(out, v);
        }
        out.push(0);
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    /// Column name.
    pub name: &'a str,
    /// Table OID (0 if none).
    pub table_oid: u32,
    /// Column number in the table (0 if none).
    pub column: i16,
    /// Type OID.
    pub type_oid: u32,
    /// Type size.
    pub type_size: i16,
    /// Type modifier.
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// Authentication requests (`R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    /// 0: authenticated.
    Ok,
    /// 3: send the password in clear.
    CleartextPassword,
    /// 5: send an md5 hash with this salt.
    Md5Password([u8; 4]),
    /// 10: SASL with one of these mechanisms.
    Sasl(Vec<&'a str>),
    /// 11: SASL challenge data.
    SaslContinue(&'a [u8]),
    /// 12: SASL outcome data.
    SaslFinal(&'a [u8]),
}

/// A backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    /// `R`.
    Authentication(Authentication<'a>),
    /// `S`: a run-time parameter's current value.
    ParameterStatus {
        /// Name.
        name: &'a str,
        /// Value.
        value: &'a str,
    },
    /// `K`: what a client needs to cancel its queries.
    BackendKeyData {
        /// Process id.
        pid: i32,
        /// Secret key.
        key: i32,
    },
    /// `Z`: ready for the next query.
    ReadyForQuery(TxStatus),
    /// `T`: result columns.
    RowDescription(Vec<FieldDescription<'a>>),
    /// `D`: one row (`None` = NULL).
    DataRow(Vec<Option<&'a [u8]>>),
    /// `C`: a statement finished, with its tag (`SELECT 1`).
    CommandComplete(&'a str),
    /// `I`: the query string was empty.
    EmptyQueryResponse,
    /// `E`.
    ErrorResponse(ErrorFields<'a>),
    /// `N`.
    NoticeResponse(ErrorFields<'a>),
    /// `1`.
    ParseComplete,
    /// `2`.
    BindComplete,
    /// `3`.
    CloseComplete,
    /// `n`: the statement returns no rows.
    NoData,
    /// `s`: Execute hit its row limit.
    PortalSuspended,
    /// `t`: parameter types of a statement.
    ParameterDescription(Vec<u32>),
    /// `G`: the server waits for COPY data.
    CopyInResponse {
        /// Overall format.
        format: u8,
        /// Per column.
        columns: Vec<i16>,
    },
    /// `H`: COPY data follows.
    CopyOutResponse {
        /// Overall format.
        format: u8,
        /// Per column.
        columns: Vec<i16>,
    },
    /// `d`.
    CopyData(&'a [u8]),
    /// `c`.
    CopyDone,
    /// `A`: NOTIFY delivered.
    NotificationResponse {
        /// Notifying backend.
        pid: i32,
        /// Channel.
        channel: &'a str,
        /// Payload.
        payload: &'a str,
    },
    /// `V`: result of a legacy function call, relayed raw.
    FunctionCallResponse(&'a [u8]),
}

fn copy_response(c: &mut Cursor<'_>) -> Result<(u8, Vec<i16>), WireError> {
    let format = c.u8("format")?;
    let n = c.count16("column count")?;
    if c.remaining() < n * 2 {
        return Err(WireError::Truncated {
            message: "CopyResponse",
            what: "column formats",
        });
    }
    let columns = (0..n)
        .map(|_| c.i16("column format"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((format, columns))
}

impl<'a> BackendMessage<'a> {
    /// Decodes a complete frame (tag, length, body).
    pub fn decode(frame: &'a [u8]) -> Result<Self, WireError> {
        let (&tag, rest) = frame.split_first().ok_or(WireError::Truncated {
            message: "backend",
            what: "type",
        })?;
        let body = rest.get(4..).ok_or(WireError::Truncated {
            message: "backend",
            what: "length",
        })?;
        Self::decode_body(tag, body)
    }

    /// Decodes a body whose tag is known.
    pub fn decode_body(tag: u8, body: &'a [u8]) -> Result<Self, WireError> {
        let name = match tag {
            b'R' => "Authentication",
            b'S' => "ParameterStatus",
            b'K' => "BackendKeyData",
            b'Z' => "ReadyForQuery",
            b'T' => "RowDescription",
            b'D' => "DataRow",
            b'C' => "CommandComplete",
            b'E' => "ErrorResponse",
            b'N' => "NoticeResponse",
            b't' => "ParameterDescription",
            b'A' => "NotificationResponse",
            _ => "backend",
        };
        let mut c = Cursor::new(body, name);
        let msg = match tag {
            b'R' => {
                let code = c.i32("request code")?;
                let auth = match code {
                    0 => Authentication::Ok,
                    3 => Authentication::CleartextPassword,
                    5 => {
                        let s = c.bytes(4, "salt")?;
                        Authentication::Md5Password([s[0], s[1], s[2], s[3]])
                    }
                    10 => {
                        let mut mechs = Vec::new();
                        loop {
                            let m = c.cstr("mechanism")?;
                            if m.is_empty() {
                                break;
                            }
                            mechs.push(m);
                        }
                        Authentication::Sasl(mechs)
                    }
                    11 => Authentication::SaslContinue(c.rest()),
                    12 => Authentication::SaslFinal(c.rest()),
                    other => {
                        return Err(WireError::Invalid {
                            message: name,
                            what: "request code",
                            detail: format!("{other} is not supported"),
                        });
                    }
                };
                BackendMessage::Authentication(auth)
            }
            b'S' => BackendMessage::ParameterStatus {
                name: c.cstr("name")?,
                value: c.cstr("value")?,
            },
            b'K' => BackendMessage::BackendKeyData {
                pid: c.i32("process id")?,
                key: c.i32("secret key")?,
            },
            b'Z' => BackendMessage::ReadyForQuery(TxStatus::from_byte(c.u8("status")?)?),
            b'T' => {
                let n = c.count16("field count")?;
                let mut fields = Vec::with_capacity(n.min(c.remaining() / 19));
                for _ in 0..n {
                    fields.push(FieldDescription {
                        name: c.cstr("field name")?,
                        table_oid: c.u32("table oid")?,
                        column: c.i16("column number")?,
                        type_oid: c.u32("type oid")?,
                        type_size: c.i16("type size")?,
                        type_modifier: c.i32("type modifier")?,
                        format: c.i16("format")?,
                    });
                }
                BackendMessage::RowDescription(fields)
            }
            b'D' => {
                let n = c.count16("column count")?;
                let mut cols = Vec::with_capacity(n.min(c.remaining() / 4));
                for _ in 0..n {
                    cols.push(c.nullable("column value")?);
                }
                BackendMessage::DataRow(cols)
            }
            b'C' => BackendMessage::CommandComplete(c.cstr("command tag")?),
            b'I' => BackendMessage::EmptyQueryResponse,
            b'E' => BackendMessage::ErrorResponse(ErrorFields::decode(c.rest(), name)?),
            b'N' => BackendMessage::NoticeResponse(ErrorFields::decode(c.rest(), name)?),
            b'1' => BackendMessage::ParseComplete,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'n' => BackendMessage::NoData,
            b's' => BackendMessage::PortalSuspended,
            b't' => {
                let n = c.count16("parameter count")?;
                if c.remaining() < n * 4 {
                    return Err(WireError::Truncated {
                        message: name,
                        what: "parameter types",
                    });
                }
                BackendMessage::ParameterDescription(
                    (0..n)
                        .map(|_| c.u32("parameter type"))
                        .collect::<Result<_, _>>()?,
                )
            }
            b'G' => {
                let (format, columns) = copy_response(&mut c)?;
                BackendMessage::CopyInResponse { format, columns }
            }
            b'H' => {
                let (format, columns) = copy_response(&mut c)?;
                BackendMessage::CopyOutResponse { format, columns }
            }
            b'd' => BackendMessage::CopyData(c.rest()),
            b'c' => BackendMessage::CopyDone,
            b'A' => BackendMessage::NotificationResponse {
                pid: c.i32("process id")?,
                channel: c.cstr("channel")?,
                payload: c.cstr("payload")?,
            },
            b'V' => BackendMessage::FunctionCallResponse(c.rest()),
            byte => return Err(WireError::UnknownTag { byte }),
        };
        c.finish()?;
        Ok(msg)
    }

    /// The type byte.
    pub fn tag(&self) -> u8 {
        match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::ReadyForQuery(_) => b'Z',
            BackendMessage::RowDescription(_) => b'T',
            BackendMessage::DataRow(_) => b'D',
            BackendMessage::CommandComplete(_) => b'C',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::ParseComplete => b'1',
            BackendMessage::BindComplete => b'2',
            BackendMessage::CloseComplete => b'3',
            BackendMessage::NoData => b'n',
            BackendMessage::PortalSuspended => b's',
            BackendMessage::ParameterDescription(_) => b't',
            BackendMessage::CopyInResponse { .. } => b'G',
            BackendMessage::CopyOutResponse { .. } => b'H',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::FunctionCallResponse(_) => b'V',
        }
    }

    /// Appends the complete frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = begin(out, self.tag());
        match self {
            BackendMessage::Authentication(a) => match a {
                Authentication::Ok => out.extend_from_slice(&0i32.to_be_bytes()),
                Authentication::CleartextPassword => out.extend_from_slice(&3i32.to_be_bytes()),
                Authentication::Md5Password(salt) => {
                    out.extend_from_slice(&5i32.to_be_bytes());
                    out.extend_from_slice(salt);
                }
                Authentication::Sasl(mechs) => {
                    out.extend_from_slice(&10i32.to_be_bytes());
                    for m in mechs {
                        put_cstr(out, m);
                    }
                    out.push(0);
                }
                Authentication::SaslContinue(d) => {
                    out.extend_from_slice(&11i32.to_be_bytes());
                    out.extend_from_slice(d);
                }
                Authentication::SaslFinal(d) => {
                    out.extend_from_slice(&12i32.to_be_bytes());
                    out.extend_from_slice(d);
                }
            },
            BackendMessage::ParameterStatus { name, value } => {
                put_cstr(out, name);
                put_cstr(out, value);
            }
            BackendMessage::BackendKeyData { pid, key } => {
                out.extend_from_slice(&pid.to_be_bytes());
                out.extend_from_slice(&key.to_be_bytes());
            }
            BackendMessage::ReadyForQuery(s) => out.push(s.byte()),
            BackendMessage::RowDescription(fields) => {
                out.extend_from_slice(&count_i16(fields.len()));
                for f in fields {
                    put_cstr(out, f.name);
                    out.extend_from_slice(&f.table_oid.to_be_bytes());
                    out.extend_from_slice(&f.column.to_be_bytes());
                    out.extend_from_slice(&f.type_oid.to_be_bytes());
                    out.extend_from_slice(&f.type_size.to_be_bytes());
                    out.extend_from_slice(&f.type_modifier.to_be_bytes());
                    out.extend_from_slice(&f.format.to_be_bytes());
                }
            }
            BackendMessage::DataRow(cols) => {
                out.extend_from_slice(&count_i16(cols.len()));
                for col in cols {
                    match col {
                        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                        Some(v) => {
                            out.extend_from_slice(&len_i32(v.len()));
                            out.extend_from_slice(v);
                        }
                    }
                }
            }
            BackendMessage::CommandComplete(t) => put_cstr(out, t),
            BackendMessage::ErrorResponse(f) | BackendMessage::NoticeResponse(f) => f.encode(out),
            BackendMessage::EmptyQueryResponse
            | BackendMessage::ParseComplete
            | BackendMessage::BindComplete
            | BackendMessage::CloseComplete
            | BackendMessage::NoData
            | BackendMessage::PortalSuspended
            | BackendMessage::CopyDone => {}
            BackendMessage::ParameterDescription(types) => {
                out.extend_from_slice(&count_i16(types.len()));
                for t in types {
                    out.extend_from_slice(&t.to_be_bytes());
                }
            }
            BackendMessage::CopyInResponse { format, columns }
            | BackendMessage::CopyOutResponse { format, columns } => {
                out.push(*format);
                out.extend_from_slice(&count_i16(columns.len()));
                for c in columns {
                    out.extend_from_slice(&c.to_be_bytes());
                }
            }
            BackendMessage::CopyData(d) | BackendMessage::FunctionCallResponse(d) => {
                out.extend_from_slice(d)
            }
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => {
                out.extend_from_slice(&pid.to_be_bytes());
                put_cstr(out, channel);
                put_cstr(out, payload);
            }
        }
        finish(out, at);
    }
}

/// Appends an ErrorResponse with severity, SQLSTATE and message: the
/// proxy's own errors look like the server's.
pub fn encode_error(out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    BackendMessage::ErrorResponse(ErrorFields::new(severity, code, message)).encode(out);
}

/// The SQLSTATE of an ErrorResponse body without decoding all fields.
pub fn error_code(body: &[u8]) -> Option<&str> {
    error_field(body, b'C')
}

/// The message (`M` field) of an ErrorResponse body, likewise.
pub fn error_message(body: &[u8]) -> Option<&str> {
    error_field(body, b'M')
}

fn error_field(body: &[u8], field: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&ty, tail)) = rest.split_first() {
        if ty == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if ty == field {
            return std::str::from_utf8(&tail[..end]).ok();
        }
        rest = &tail[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_is_found_without_decoding() -> Result<(), WireError> {
        let mut buf = Vec::new();
        encode_error(&mut buf, "ERROR", "25006", "read-only");
        assert_eq!(error_code(&buf[5..]), Some("25006"));
        assert_eq!(error_message(&buf[5..]), Some("read-only"));
        let BackendMessage::ErrorResponse(f) = BackendMessage::decode(&buf)? else {
            return Err(WireError::UnknownTag { byte: buf[0] });
        };
        assert_eq!(f.message(), Some("read-only"));
        Ok(())
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        // DataRow claiming 32767 columns with no data.
        assert!(BackendMessage::decode(b"D\0\0\0\x06\x7f\xff").is_err());
        assert!(BackendMessage::decode(b"T\0\0\0\x06\x7f\xff").is_err());
    }

    #[test]
    fn ready_for_query_status() -> Result<(), WireError> {
        assert_eq!(
            BackendMessage::decode(b"Z\0\0\0\x05T")?,
            BackendMessage::ReadyForQuery(TxStatus::InTransaction)
        );
        assert!(BackendMessage::decode(b"Z\0\0\0\x05x").is_err());
        Ok(())
    }
}

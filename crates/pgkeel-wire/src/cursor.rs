//! Bounds-checked reading of message bodies.

use crate::WireError;

/// Reads fields off a message body; every read checks the remaining length.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], message: &'static str) -> Self {
        Cursor { buf, message }
    }

    fn truncated(&self, what: &'static str) -> WireError {
        WireError::Truncated {
            message: self.message,
            what,
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| self.truncated(what))?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        let b = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count field (int16) that must not be negative.
    pub(crate) fn count16(&mut self, what: &'static str) -> Result<usize, WireError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| WireError::Invalid {
            message: self.message,
            what,
            detail: format!("negative count {n}"),
        })
    }

    /// A NUL-terminated byte string, as sent: text a client writes in its
    /// own `client_encoding` (SQL, statement and portal names) need not be
    /// UTF-8, and only the server knows how to convert it.
    pub(crate) fn cbytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        // Names are short: a plain loop finds their end. Past a few bytes
        // (a statement's text, scanned on every statement the proxy
        // relays) memchr is faster.
        let head = self.buf.len().min(16);
        let end = match self.buf[..head].iter().position(|&b| b == 0) {
            Some(end) => end,
            None => memchr::memchr(0, &self.buf[head..])
                .map(|end| end + head)
                .ok_or_else(|| self.truncated(what))?,
        };
        let (s, rest) = self.buf.split_at(end);
        self.buf = &rest[1..];
        Ok(s)
    }

    /// A NUL-terminated UTF-8 string.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let message = self.message;
        let s = self.cbytes(what)?;
        std::str::from_utf8(s).map_err(|_| WireError::NotUtf8 { message, what })
    }

    /// A length-prefixed (int32) value where -1 means NULL.
    pub(crate) fn nullable(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        let len = self.i32(what)?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| WireError::Invalid {
            message: self.message,
            what,
            detail: format!("length {len}"),
        })?;
        self.bytes(len, what).map(Some)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes {
                message: self.message,
                extra: self.buf.len(),
            })
        }
    }
}

/// Appends a NUL-terminated string.
pub(crate) fn put_cstr(out: &mut Vec<u8>, s: &str) {
    put_cbytes(out, s.as_bytes());
}

/// Appends a NUL-terminated byte string (the inverse of
/// [`Cursor::cbytes`]); `s` must not contain NUL, as decoded ones cannot.
pub(crate) fn put_cbytes(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// Starts a message with `tag` and a length placeholder; returns where the
/// length goes.
pub(crate) fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Writes the length of the message started at `at`.
pub(crate) fn finish(out: &mut [u8], at: usize) {
    let len = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Length as the protocol's int16 count.
pub(crate) fn count_i16(n: usize) -> [u8; 2] {
    i16::try_from(n).unwrap_or(i16::MAX).to_be_bytes()
}

/// Length as the protocol's int32.
pub(crate) fn len_i32(n: usize) -> [u8; 4] {
    i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes()
}

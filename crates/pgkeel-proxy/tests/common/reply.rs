//! The answers of a raw session as the statement-name tests compare them
//! with a direct connection's: tags, every DataRow's first column, errors
//! with their messages, the transaction status; and the extended-protocol
//! messages they send.

use pgkeel_wire::FrontendMessage;
use pgkeel_wire::backend::{error_code, error_message};

use super::{Raw, TestResult, first_column};

/// What a client got up to a ReadyForQuery: tags, every DataRow's first
/// column, errors (SQLSTATE and message), the transaction status.
#[derive(Debug, Default, PartialEq)]
pub struct Reply {
    pub tags: String,
    pub values: Vec<Option<String>>,
    pub errors: Vec<(String, String)>,
    pub status: Option<char>,
}

impl Reply {
    pub fn codes(&self) -> Vec<&str> {
        self.errors.iter().map(|(c, _)| c.as_str()).collect()
    }
}

pub async fn reply(raw: &mut Raw) -> TestResult<Reply> {
    let mut r = Reply::default();
    loop {
        let (tag, frame) = raw.next().await?;
        r.tags.push(char::from(tag));
        match tag {
            b'D' => r.values.push(first_column(&frame)),
            b'E' => {
                let body = frame.get(5..).unwrap_or_default();
                r.errors.push((
                    error_code(body).unwrap_or("?").to_string(),
                    error_message(body).unwrap_or("?").to_string(),
                ));
            }
            b'Z' => {
                r.status = frame.get(5).copied().map(char::from);
                return Ok(r);
            }
            _ => {}
        }
    }
}

/// Asserts that the proxy's answers (`got`) are the direct
/// connection's (`want`), step by step.
pub fn same_as_direct(want: &[Reply], got: &[Reply]) {
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert_eq!(g, w, "step {i}: proxy {got:#?}\ndirect {want:#?}");
    }
    assert_eq!(got.len(), want.len());
}

/// Sends `msgs` at once and reads one reply per Sync or Query among them
/// (several batches are pipelined).
pub async fn exchange(raw: &mut Raw, msgs: &[FrontendMessage<'_>]) -> TestResult<Vec<Reply>> {
    raw.send(msgs).await?;
    let batches = msgs
        .iter()
        .filter(|m| matches!(m, FrontendMessage::Sync | FrontendMessage::Query(_)))
        .count();
    let mut out = Vec::with_capacity(batches);
    for _ in 0..batches {
        out.push(reply(raw).await?);
    }
    Ok(out)
}

/// As [`exchange`] for one batch.
pub async fn batch(raw: &mut Raw, msgs: &[FrontendMessage<'_>]) -> TestResult<Reply> {
    let mut all = exchange(raw, msgs).await?;
    if all.len() != 1 {
        return Err(format!("{} replies to one batch", all.len()).into());
    }
    Ok(all.remove(0))
}

pub fn close(name: &str) -> FrontendMessage<'_> {
    FrontendMessage::Close {
        kind: b'S',
        name: name.as_bytes(),
    }
}

pub fn describe(name: &str) -> FrontendMessage<'_> {
    FrontendMessage::Describe {
        kind: b'S',
        name: name.as_bytes(),
    }
}

pub fn q(sql: &str) -> FrontendMessage<'_> {
    FrontendMessage::Query(sql.as_bytes())
}

pub const SYNC: FrontendMessage<'static> = FrontendMessage::Sync;

//! One etcd key through the v3 JSON gateway (`/v3/kv/range`,
//! `/v3/watch`): its value with the store's revision, and a watch that
//! reports every change after a revision.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::EtcdError;
use super::http::{Body, bounded};
use super::session::Session;

/// A key read at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Its value (`None`: vacant).
    pub value: Option<String>,
    /// The store's revision when it was read; a watch from the next one
    /// misses nothing.
    pub revision: i64,
}

/// A change of the watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Written with this value.
    Put(String),
    /// Deleted (or its lease expired).
    Delete,
}

/// Reads `key` from the first of `endpoints` that answers, each attempt
/// bounded by `timeout`. Returns the endpoint that answered.
pub async fn range<'a>(
    session: &Session,
    endpoints: &'a [String],
    key: &str,
    timeout: Duration,
) -> Result<(Read, &'a str), EtcdError> {
    let request = format!(r#"{{"key":"{}"}}"#, B64.encode(key));
    let mut last = EtcdError::NoEndpoint;
    for endpoint in endpoints {
        let attempt = async {
            let mut body = session
                .post(endpoint, "/v3/kv/range", &request, timeout)
                .await?;
            let bytes = bounded(endpoint, timeout, body.read_all()).await?;
            let answer: RangeAnswer =
                serde_json::from_slice(&bytes).map_err(|e| protocol(endpoint, &e))?;
            decode_range(answer).map_err(|detail| EtcdError::Protocol {
                endpoint: endpoint.clone(),
                detail,
            })
        };
        match attempt.await {
            Ok(read) => return Ok((read, endpoint)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A watch on one key: [`Watch::next`] yields its changes in order.
pub struct Watch {
    endpoint: String,
    body: Body,
    pending: Vec<u8>,
}

impl Watch {
    /// Watches `key` on `endpoint` from `start_revision` (inclusive). The
    /// stream's first message (the watch created) is awaited within
    /// `timeout`.
    pub async fn start(
        session: &Session,
        endpoint: &str,
        key: &str,
        start_revision: i64,
        timeout: Duration,
    ) -> Result<Watch, EtcdError> {
        let request = format!(
            r#"{{"create_request":{{"key":"{}","start_revision":"{start_revision}"}}}}"#,
            B64.encode(key)
        );
        let body = session
            .post(endpoint, "/v3/watch", &request, timeout)
            .await?;
        let mut watch = Watch {
            endpoint: endpoint.into(),
            body,
            pending: Vec::new(),
        };
        let created = tokio::time::timeout(timeout, watch.message())
            .await
            .map_err(|_| EtcdError::timeout(endpoint, timeout))??;
        if !created.created {
            return Err(EtcdError::Protocol {
                endpoint: endpoint.into(),
                detail: "the watch was not created".into(),
            });
        }
        Ok(watch)
    }

    /// The next changes (one message may carry several). An error when
    /// the stream ends or etcd cancels the watch (compaction, restart):
    /// the caller reads the key again and starts a new watch.
    pub async fn next(&mut self) -> Result<Vec<Change>, EtcdError> {
        loop {
            let result = self.message().await?;
            if result.canceled {
                return Err(EtcdError::Protocol {
                    endpoint: self.endpoint.clone(),
                    detail: format!("watch canceled: {}", result.cancel_reason),
                });
            }
            if result.events.is_empty() {
                continue; // progress notification
            }
            return result
                .events
                .into_iter()
                .map(|event| match event.kind.as_str() {
                    "DELETE" => Ok(Change::Delete),
                    "" | "PUT" => Ok(Change::Put(decode(&event.kv.value)?)),
                    other => Err(format!("unknown event type {other}")),
                })
                .collect::<Result<_, _>>()
                .map_err(|detail| EtcdError::Protocol {
                    endpoint: self.endpoint.clone(),
                    detail,
                });
        }
    }

    /// The next message of the stream (JSON objects, one after another,
    /// in chunks that need not align with them).
    async fn message(&mut self) -> Result<WatchResult, EtcdError> {
        loop {
            let mut stream =
                serde_json::Deserializer::from_slice(&self.pending).into_iter::<WatchMessage>();
            match stream.next() {
                Some(Ok(message)) => {
                    let used = stream.byte_offset();
                    self.pending.drain(..used);
                    return match message {
                        WatchMessage {
                            result: Some(result),
                            ..
                        } => Ok(result),
                        WatchMessage { error, .. } => Err(EtcdError::Protocol {
                            endpoint: self.endpoint.clone(),
                            detail: format!("watch failed: {error}"),
                        }),
                    };
                }
                Some(Err(e)) if !e.is_eof() => return Err(protocol(&self.endpoint, &e)),
                _ => {}
            }
            match self.body.next().await {
                Ok(Some(chunk)) => self.pending.extend_from_slice(&chunk),
                Ok(None) => {
                    return Err(EtcdError::Io {
                        endpoint: self.endpoint.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    });
                }
                Err(source) => {
                    return Err(EtcdError::Io {
                        endpoint: self.endpoint.clone(),
                        source,
                    });
                }
            }
        }
    }
}

fn protocol(endpoint: &str, e: &serde_json::Error) -> EtcdError {
    EtcdError::Protocol {
        endpoint: endpoint.into(),
        detail: format!("unexpected JSON: {e}"),
    }
}

fn decode(b64: &str) -> Result<String, String> {
    let bytes = B64
        .decode(b64)
        .map_err(|e| format!("value is not base64: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn decode_range(answer: RangeAnswer) -> Result<Read, String> {
    let revision = answer
        .header
        .revision
        .parse()
        .map_err(|_| format!("bad revision {:?}", answer.header.revision))?;
    let value = match answer.kvs.first() {
        Some(kv) => Some(decode(&kv.value)?),
        None => None,
    };
    Ok(Read { value, revision })
}

// The gateway's JSON (proto3 mapping: 64-bit numbers as strings, default
// values such as an empty value or the PUT event type left out).

#[derive(Deserialize)]
struct RangeAnswer {
    header: Header,
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    revision: String,
}

#[derive(Deserialize, Default)]
struct Kv {
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    #[serde(default)]
    error: serde_json::Value,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    kv: Kv,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_answers_decode() -> Result<(), String> {
        let held: RangeAnswer = serde_json::from_str(
            r#"{"header":{"revision":"1340"},"kvs":[{"key":"eA==","create_revision":"3","value":"cHJpbWFyeQ==","lease":"65"}],"count":"1"}"#,
        )
        .map_err(|e| e.to_string())?;
        assert_eq!(
            decode_range(held)?,
            Read {
                value: Some("primary".into()),
                revision: 1340
            }
        );
        let vacant: RangeAnswer =
            serde_json::from_str(r#"{"header":{"cluster_id":"1","revision":"7"}}"#)
                .map_err(|e| e.to_string())?;
        assert_eq!(
            decode_range(vacant)?,
            Read {
                value: None,
                revision: 7
            }
        );
        Ok(())
    }
}

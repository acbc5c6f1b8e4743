//! Just enough HTTP/1.1 to talk to etcd's JSON gateway: a POST with a
//! JSON body, a 200 answer whose body is read whole (`Content-Length`,
//! chunked, or up to the close) or chunk by chunk (a watch stream). A gRPC
//! client (tonic, hyper, h2, prost) would keep about a megabyte of code
//! resident in every proxy for one key.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::EtcdError;
use super::access::{Connector, Stream};

/// Bound on the status line and headers, and on one chunk or body.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 4 * 1024 * 1024;

/// An etcd client URL as host and port: `http://host:port`,
/// `https://host:port` (with `tls`) or `host:port`.
pub fn authority(endpoint: &str, tls: bool) -> Result<&str, EtcdError> {
    let rest = match endpoint.split_once("://") {
        Some(("http", rest)) if !tls => rest,
        Some(("https", rest)) if tls => rest,
        Some(_) => {
            return Err(EtcdError::Unsupported {
                endpoint: endpoint.into(),
                detail: if tls {
                    "etcd.tls is on: its endpoints must be https:// URLs".into()
                } else {
                    "only http:// endpoints without etcd.tls (set `etcd.tls = true` and give the CA and client certificate in the secrets for https://)".into()
                },
            });
        }
        None => endpoint,
    };
    Ok(rest.trim_end_matches('/'))
}

/// An answer being read: its body framing and the connection.
pub struct Body {
    reader: BufReader<Box<dyn Stream>>,
    framing: Framing,
    done: bool,
}

enum Framing {
    Chunked,
    Length(usize),
    UntilClose,
}

/// Sends `POST path` with `json` to `endpoint` and reads the status line
/// and headers, all within `timeout`. Anything but 200 is an error that
/// carries the start of the body.
pub async fn post(
    connector: &Connector,
    endpoint: &str,
    path: &str,
    json: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Body, EtcdError> {
    let host = authority(endpoint, connector.tls())?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{json}",
        json.len()
    );
    let exchange = async {
        let mut stream = connector.connect(host).await?;
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await?;
        let mut reader = BufReader::new(stream);
        let (status, framing) = read_head(&mut reader).await?;
        Ok::<_, std::io::Error>((
            status,
            Body {
                reader,
                framing,
                done: false,
            },
        ))
    };
    let (status, mut body) = bounded(endpoint, timeout, exchange).await?;
    if status != 200 {
        let text = tokio::time::timeout(timeout, body.read_all())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(EtcdError::Status {
            endpoint: endpoint.into(),
            status,
            body: String::from_utf8_lossy(&text[..text.len().min(200)]).into_owned(),
        });
    }
    Ok(body)
}

/// Runs `io` within `timeout`; errors name `endpoint`.
pub async fn bounded<T>(
    endpoint: &str,
    timeout: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> Result<T, EtcdError> {
    tokio::time::timeout(timeout, io)
        .await
        .map_err(|_| EtcdError::timeout(endpoint, timeout))?
        .map_err(|source| EtcdError::Io {
            endpoint: endpoint.into(),
            source,
        })
}

impl Body {
    /// The next piece of the body (a chunk, or what the connection
    /// delivered); `None` at its end.
    pub async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            Framing::Chunked => {
                let line = read_line(&mut self.reader).await?;
                let size = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| invalid(format!("bad chunk size {size:?}")))?;
                if size > MAX_BODY {
                    return Err(invalid(format!("chunk of {size} bytes")));
                }
                if size == 0 {
                    // Trailers, up to the empty line.
                    while !read_line(&mut self.reader).await?.is_empty() {}
                    self.done = true;
                    return Ok(None);
                }
                let mut chunk = vec![0; size];
                self.reader.read_exact(&mut chunk).await?;
                if !read_line(&mut self.reader).await?.is_empty() {
                    return Err(invalid("chunk not followed by CRLF".into()));
                }
                Ok(Some(chunk))
            }
            Framing::Length(left) => {
                let mut chunk = vec![0; left];
                self.reader.read_exact(&mut chunk).await?;
                self.done = true;
                Ok(Some(chunk))
            }
            Framing::UntilClose => {
                let mut chunk = vec![0; 16 * 1024];
                let n = self.reader.read(&mut chunk).await?;
                chunk.truncate(n);
                self.done = n == 0;
                Ok((n > 0).then_some(chunk))
            }
        }
    }

    /// The whole body.
    pub async fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next().await? {
            all.extend_from_slice(&chunk);
            if all.len() > MAX_BODY {
                return Err(invalid(format!("body over {MAX_BODY} bytes")));
            }
        }
        Ok(all)
    }
}

/// Status code and body framing from the head of an answer.
async fn read_head(reader: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<(u16, Framing)> {
    let status_line = read_line(reader).await?;
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("not an HTTP answer: {status_line:?}")))?;
    let mut framing = Framing::UntilClose;
    let mut seen = status_line.len();
    loop {
        let line = read_line(reader).await?;
        if line.is_empty() {
            return Ok((status, framing));
        }
        seen += line.len();
        if seen > MAX_HEAD {
            return Err(invalid("headers too long".into()));
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            let n: usize = value
                .parse()
                .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?;
            if n > MAX_BODY {
                return Err(invalid(format!("body of {n} bytes")));
            }
            framing = Framing::Length(n);
        }
    }
}

/// One CRLF-terminated line without its terminator; an error at EOF or
/// past [`MAX_HEAD`].
async fn read_line(reader: &mut BufReader<Box<dyn Stream>>) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_HEAD as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed inside an HTTP answer",
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("header line is not UTF-8".into()))
}

fn invalid(detail: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_and_without_scheme() {
        assert!(matches!(
            authority("http://127.0.0.1:2379/", false),
            Ok("127.0.0.1:2379")
        ));
        assert!(matches!(authority("etcd1:2379", false), Ok("etcd1:2379")));
        assert!(matches!(
            authority("https://etcd1:2379", false),
            Err(EtcdError::Unsupported { .. })
        ));
        assert!(matches!(
            authority("https://etcd1:2379", true),
            Ok("etcd1:2379")
        ));
        assert!(matches!(
            authority("http://etcd1:2379", true),
            Err(EtcdError::Unsupported { .. })
        ));
    }
}

//! A client connection that is plain TCP or TLS over TCP, so login and the
//! session code run unchanged over either.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::ProxyError;

/// A client socket, plaintext or TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS; `buffered` is set when decrypted bytes may be waiting inside
    /// rustls (the socket then need not become readable again).
    Tls {
        /// The TLS session.
        stream: Box<TlsStream<TcpStream>>,
        /// Decrypted data may be pending.
        buffered: bool,
    },
}

impl ClientStream {
    /// Runs the TLS handshake on a plain connection (after the `S` answer
    /// to SSLRequest).
    pub async fn upgrade(self, acceptor: &tokio_rustls::TlsAcceptor) -> Result<Self, ProxyError> {
        match self {
            ClientStream::Plain(tcp) => {
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| ProxyError::io("TLS handshake with client", e))?;
                Ok(ClientStream::Tls {
                    stream: Box::new(tls),
                    buffered: true,
                })
            }
            tls @ ClientStream::Tls { .. } => Ok(tls),
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls { .. })
    }

    /// Waits until [`Self::try_read_buf`] may make progress (cancel-safe,
    /// like [`TcpStream::readable`]).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.readable().await,
            ClientStream::Tls { buffered: true, .. } => Ok(()),
            ClientStream::Tls { stream, .. } => stream.get_ref().0.readable().await,
        }
    }

    /// Reads what is available without waiting; `WouldBlock` when nothing
    /// is, `Ok(0)` at end of stream.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_read_buf(buf),
            ClientStream::Tls { stream, buffered } => {
                if buf.capacity() == buf.len() {
                    buf.reserve(8192);
                }
                let start = buf.len();
                buf.resize(buf.capacity(), 0);
                let mut rb = ReadBuf::new(&mut buf[start..]);
                // A no-op waker: readiness is awaited in `readable`, which
                // registers the real one.
                let mut cx = Context::from_waker(Waker::noop());
                let r = Pin::new(stream.as_mut()).poll_read(&mut cx, &mut rb);
                let n = rb.filled().len();
                buf.truncate(start + n);
                match r {
                    Poll::Ready(Ok(())) => {
                        *buffered = n > 0;
                        Ok(n)
                    }
                    Poll::Ready(Err(e)) => Err(e),
                    Poll::Pending => {
                        *buffered = false;
                        Err(io::ErrorKind::WouldBlock.into())
                    }
                }
            }
        }
    }
}

impl crate::server::TryWriteNow for ClientStream {
    fn try_write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.try_write(data),
            // rustls buffers and must be flushed: the async path.
            ClientStream::Tls { .. } => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls { stream, buffered } => {
                let r = Pin::new(stream.as_mut()).poll_read(cx, buf);
                // Data may be left in rustls past what fitted in `buf`.
                *buffered = r.is_ready();
                r
            }
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, data),
            ClientStream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls { stream, .. } => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

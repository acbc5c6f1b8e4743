//! A connection to a server over TCP or, for a node on this machine, its
//! Unix socket: the local socket skips the loopback TCP stack, which is
//! most of a pooler's CPU time per statement.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// Bound on the TCP handshake. A server on the same network answers in
/// well under a millisecond; a host that vanished never answers (no RST),
/// and without a bound the connect waits for the kernel's SYN retries
/// (over two minutes). Two seconds leaves room for one SYN retransmit.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Keepalive on idle server connections: a host that vanished is noticed
/// within `IDLE + INTERVAL * PROBES` (16 s) instead of the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 3;

/// A statement sent to a host that vanished fails after this long without
/// an acknowledgement (TCP_USER_TIMEOUT) instead of after the kernel's
/// retransmissions (about 15 minutes); the client gets an error it can
/// retry on the new primary. Acknowledgements come from the kernel, so a
/// slow query is not affected.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// A server socket.
#[derive(Debug)]
pub enum ServerStream {
    /// TCP (remote nodes, or when the socket cannot be reached).
    Tcp(TcpStream),
    /// The node's Unix socket.
    Unix(UnixStream),
}

impl ServerStream {
    /// Connects to `socket` when given and reachable, else to `addr` over
    /// TCP (with Nagle off).
    pub async fn connect(addr: std::net::SocketAddr, socket: Option<&Path>) -> io::Result<Self> {
        if let Some(path) = socket
            && let Ok(s) = UnixStream::connect(path).await
        {
            return Ok(ServerStream::Unix(s));
        }
        let tcp = tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer to the TCP handshake within {TCP_CONNECT_TIMEOUT:?}"),
                )
            })??;
        tcp.set_nodelay(true)?;
        let sock = socket2::SockRef::from(&tcp);
        sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_PROBES),
        )?;
        sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
        Ok(ServerStream::Tcp(tcp))
    }

    /// Whether this is the local socket.
    pub fn is_unix(&self) -> bool {
        matches!(self, ServerStream::Unix(_))
    }

    /// Whether an idle pooled connection may be handed out: an idle server
    /// owes nothing, so anything readable (the FATAL and close of a
    /// server shutting down or terminating the backend, an end of stream)
    /// means the connection is gone. Free for a healthy connection: the
    /// reactor's readiness is consulted first and the socket is read only
    /// when it saw something arrive.
    pub fn idle_is_clean(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let ready = match self {
            ServerStream::Tcp(s) => s.poll_read_ready(&mut cx),
            ServerStream::Unix(s) => s.poll_read_ready(&mut cx),
        };
        match ready {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                let read = match self {
                    ServerStream::Tcp(s) => s.try_read(&mut probe),
                    ServerStream::Unix(s) => s.try_read(&mut probe),
                };
                matches!(read, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

impl ServerStream {
    /// Says goodbye (a Terminate message) without waiting: a pooled
    /// connection closed by the proxy then ends cleanly in the server's
    /// log instead of as "unexpected EOF on client connection". Nothing
    /// is lost if the socket cannot take it now.
    pub fn say_goodbye(&mut self) {
        const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];
        let _ = match self {
            ServerStream::Tcp(s) => s.try_write(&TERMINATE),
            ServerStream::Unix(s) => s.try_write(&TERMINATE),
        };
    }
}

impl crate::server::TryWriteNow for ServerStream {
    fn try_write_now(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            ServerStream::Tcp(s) => s.try_write(data),
            ServerStream::Unix(s) => s.try_write(data),
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            ServerStream::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

//! One connection from the proxy to a PostgreSQL server (plaintext: the
//! servers are on loopback or a trusted network): login with SCRAM from a
//! password or pass-through keys (md5 or clear text only if the server
//! asks and the credential allows), the parameters it reported, its
//! cancel key, and the statements prepared on it.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgkeel_wire::backend::Authentication;
use pgkeel_wire::scram::MECHANISM as SCRAM_SHA_256;
use pgkeel_wire::scram_client::ScramClient;
use pgkeel_wire::{BackendMessage, FrontendMessage, MAX_MESSAGE_LEN, StartupPacket, split_message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server_stream::ServerStream;
use crate::settings::Settings;
use crate::{Credential, ProxyError};

/// How long a server login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in server connection.
#[derive(Debug)]
pub struct ServerConn {
    /// The socket.
    pub stream: ServerStream,
    /// Bytes read but not yet processed.
    pub buf: BytesMut,
    /// Server address (for cancel requests).
    pub addr: SocketAddr,
    /// Backend process id.
    pub pid: i32,
    /// Cancel key.
    pub key: i32,
    /// ParameterStatus values from login.
    pub params: Box<[(String, String)]>,
    /// Ids of the statements prepared on this connection (see
    /// `relay::statement_id`).
    pub prepared: StatementIds,
    /// The client settings the proxy applied on top of what the
    /// connection reported at login (`params`): `None` when it holds only
    /// its defaults. Compared on each attach so that only what differs is
    /// sent (see [`crate::settings`]).
    pub applied: Option<Arc<Settings>>,
    /// Topology generation the connection was made in; a connection from an
    /// older generation is not reused (the node restarted or changed role).
    pub generation: u64,
    /// When it logged in (for `server_lifetime`).
    pub created: Instant,
    /// When it last went back to its pool (for `server_idle_timeout`).
    pub idle_since: Instant,
    /// Whose `nextval()` values the backend holds (see
    /// [`crate::sequence`]): the client with a weak reference to this
    /// token; `None`: nobody's.
    pub values: Option<crate::sequence::Values>,
}

/// The answer to a query the proxy ran itself (see [`ServerConn::run`]),
/// undecoded: its text may be in any client encoding.
#[derive(Debug, Default)]
pub struct Ran {
    /// The last DataRow.
    pub row: Option<BytesMut>,
    /// The first ErrorResponse.
    pub error: Option<BytesMut>,
}

/// Reads one complete message into `buf`, returning its length.
pub async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<usize, ProxyError> {
    loop {
        if let Some((_, len)) = split_message(buf, MAX_MESSAGE_LEN)? {
            return Ok(len);
        }
        buf.reserve(8192);
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| ProxyError::io("read from server", e))?;
        if n == 0 {
            return Err(ProxyError::io(
                "read from server",
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
    }
}

fn sasl_body(mech: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(m) = mech {
        body.extend_from_slice(m.as_bytes());
        body.push(0);
        body.extend_from_slice(&i32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    }
    body.extend_from_slice(data);
    body
}

/// Hashes a statement id as itself: ids are already hashes, keyed by the
/// proxy's secret (`relay::statement_id`), so hashing them again only
/// costs time, and a stateless hasher costs no space in every connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The ids of the statements prepared on a connection.
pub type StatementIds = HashSet<u64, BuildHasherDefault<IdHasher>>;

impl ServerConn {
    /// Sends `message` (a simple Query of the proxy's own, encoded) and
    /// reads its answer through ReadyForQuery.
    pub async fn run(&mut self, message: &[u8]) -> Result<Ran, ProxyError> {
        self.run_reporting(message, None).await
    }

    /// As [`ServerConn::run`], appending the ParameterStatus messages the
    /// server sends to `reports` (a client's, when the query restores
    /// settings it was told were reset).
    pub async fn run_reporting(
        &mut self,
        message: &[u8],
        mut reports: Option<&mut Vec<u8>>,
    ) -> Result<Ran, ProxyError> {
        write_all(&mut self.stream, message).await?;
        let mut ran = Ran::default();
        loop {
            let len = read_message(&mut self.stream, &mut self.buf).await?;
            let frame = self.buf.split_to(len);
            match frame.first() {
                Some(b'D') => ran.row = Some(frame),
                Some(b'E') if ran.error.is_none() => ran.error = Some(frame),
                Some(b'S') => {
                    if let Some(out) = reports.as_deref_mut() {
                        out.extend_from_slice(&frame);
                    }
                }
                Some(b'Z') => return Ok(ran),
                _ => {}
            }
        }
    }

    /// Connects and logs in as `user` to `database`.
    pub async fn connect(
        addr: SocketAddr,
        socket: Option<&Path>,
        user: &str,
        database: &str,
        credential: &Credential,
        generation: u64,
    ) -> Result<Self, ProxyError> {
        tokio::time::timeout(
            LOGIN_TIMEOUT,
            Self::connect_inner(addr, socket, user, database, credential, generation),
        )
        .await
        .map_err(|_| ProxyError::ServerLogin {
            addr,
            message: format!("login took longer than {LOGIN_TIMEOUT:?}"),
        })?
    }

    async fn connect_inner(
        addr: SocketAddr,
        socket: Option<&Path>,
        user: &str,
        database: &str,
        credential: &Credential,
        generation: u64,
    ) -> Result<Self, ProxyError> {
        let refused = |message: String| ProxyError::ServerLogin { addr, message };
        let mut stream = ServerStream::connect(addr, socket)
            .await
            .map_err(|e| ProxyError::io(format!("connect to {addr}"), e))?;
        let mut out = Vec::new();
        StartupPacket::Startup {
            minor: 0,
            params: vec![
                ("user", user),
                ("database", database),
                ("application_name", "pgkeel-proxy"),
            ],
        }
        .encode(&mut out);
        write_all(&mut stream, &out).await?;
        let mut buf = BytesMut::with_capacity(8192);
        let mut scram: Option<ScramClient> = None;
        let mut params = Vec::new();
        let mut conn = ServerConn {
            stream,
            buf: BytesMut::new(),
            addr,
            pid: 0,
            key: 0,
            params: Box::default(),
            prepared: StatementIds::default(),
            applied: None,
            generation,
            created: Instant::now(),
            idle_since: Instant::now(),
            values: None,
        };
        loop {
            let len = read_message(&mut conn.stream, &mut buf).await?;
            let frame = buf.split_to(len);
            let mut reply = Vec::new();
            match BackendMessage::decode(&frame)? {
                BackendMessage::Authentication(auth) => match auth {
                    Authentication::Ok => {}
                    Authentication::Sasl(mechs) => {
                        if !mechs.contains(&SCRAM_SHA_256) {
                            return Err(refused(format!("unsupported SASL mechanisms {mechs:?}")));
                        }
                        let secret = credential.scram_secret().ok_or_else(|| {
                            refused(
                                "the server asks for SCRAM but the proxy only knows the \
                                 role's md5 secret"
                                    .into(),
                            )
                        })?;
                        let s = ScramClient::new(secret)
                            .map_err(|e| ProxyError::Protocol(format!("SCRAM: {e}")))?;
                        let first = s.client_first();
                        FrontendMessage::Password(&sasl_body(
                            Some(SCRAM_SHA_256),
                            first.as_bytes(),
                        ))
                        .encode(&mut reply);
                        scram = Some(s);
                    }
                    Authentication::SaslContinue(data) => {
                        let s = scram.as_mut().ok_or_else(|| {
                            ProxyError::Protocol("SASL continue before SASL start".into())
                        })?;
                        let last = s
                            .server_first(data)
                            .map_err(|e| refused(format!("SCRAM: {e}")))?;
                        FrontendMessage::Password(last.as_bytes()).encode(&mut reply);
                    }
                    Authentication::SaslFinal(data) => {
                        let s = scram.as_mut().ok_or_else(|| {
                            ProxyError::Protocol("SASL final before SASL start".into())
                        })?;
                        s.server_final(data)
                            .map_err(|e| refused(format!("server signature rejected: {e}")))?;
                    }
                    Authentication::Md5Password(salt) => {
                        let answer = credential.md5_answer(user, salt).ok_or_else(|| {
                            refused(
                                "the server asks for md5 but the proxy only has SCRAM keys \
                                 for the role"
                                    .into(),
                            )
                        })?;
                        let mut body = answer.into_bytes();
                        body.push(0);
                        FrontendMessage::Password(&body).encode(&mut reply);
                    }
                    Authentication::CleartextPassword => {
                        let Credential::Password(password) = credential else {
                            return Err(refused(
                                "the server asks for a clear-text password, which the proxy \
                                 does not know for the role"
                                    .into(),
                            ));
                        };
                        let mut body = password.as_bytes().to_vec();
                        body.push(0);
                        FrontendMessage::Password(&body).encode(&mut reply);
                    }
                },
                BackendMessage::ParameterStatus { name, value } => {
                    params.push((name.to_string(), value.to_string()));
                }
                BackendMessage::BackendKeyData { pid, key } => {
                    conn.pid = pid;
                    conn.key = key;
                }
                BackendMessage::ReadyForQuery(_) => {
                    conn.buf = buf;
                    conn.params = params.into_boxed_slice();
                    return Ok(conn);
                }
                BackendMessage::ErrorResponse(f) => {
                    return Err(ProxyError::ServerLogin {
                        addr,
                        message: f.message().unwrap_or("unknown error").to_string(),
                    });
                }
                BackendMessage::NoticeResponse(_) => {}
                other => {
                    return Err(ProxyError::Protocol(format!(
                        "unexpected message {:?} during server login",
                        char::from(other.tag())
                    )));
                }
            }
            if !reply.is_empty() {
                write_all(&mut conn.stream, &reply).await?;
            }
        }
    }
}

/// Writes all of `data` to a socket (client or server, plain or TLS).
pub async fn write_all<S>(stream: &mut S, data: &[u8]) -> Result<(), ProxyError>
where
    S: AsyncWrite + Unpin + ?Sized,
{
    stream
        .write_all(data)
        .await
        .map_err(|e| ProxyError::io("write", e))?;
    stream.flush().await.map_err(|e| ProxyError::io("write", e))
}

/// A socket that can take bytes at once, without the future machinery
/// of an async write (and its flush): what a transaction's two writes
/// try first.
pub trait TryWriteNow {
    /// Writes what the socket takes now; `WouldBlock` when it takes
    /// nothing, or when only an async write may do (TLS).
    fn try_write_now(&mut self, data: &[u8]) -> std::io::Result<usize>;
}

/// As [`write_all`], trying a plain write first: on a socket with room
/// (nearly always, for the proxy's small writes) one system call and
/// nothing else.
pub async fn send_all<S>(stream: &mut S, data: &[u8]) -> Result<(), ProxyError>
where
    S: AsyncWrite + TryWriteNow + Unpin + ?Sized,
{
    let sent = match stream.try_write_now(data) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(ProxyError::io("write", e)),
    };
    match data.get(sent..) {
        Some([]) | None => Ok(()),
        Some(rest) => write_all(stream, rest).await,
    }
}

/// Sends a CancelRequest for `pid`/`key` to the server at `addr`.
pub async fn send_cancel(addr: SocketAddr, pid: i32, key: i32) -> Result<(), ProxyError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| ProxyError::io(format!("connect to {addr} to cancel"), e))?;
    let mut out = Vec::new();
    StartupPacket::Cancel { pid, key }.encode(&mut out);
    write_all(&mut stream, &out).await?;
    // The server closes the connection once it has read the request.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
    Ok(())
}

//! Client login: the startup phase (SSL/GSS requests answered `N`, cancel
//! requests) and SCRAM-SHA-256 against the configured verifiers. An
//! unknown user goes through the same exchange as a wrong password and
//! gets the same FATAL 28P01, so nothing tells which one it was.

use bytes::BytesMut;
use pgkeel_wire::backend::{Authentication, encode_error};
use pgkeel_wire::scram::{
    MECHANISM, ScramError, ScramServer, ScramVerifier, parse_initial_response,
};
use pgkeel_wire::{
    BackendMessage, FrontendMessage, MAX_STARTUP_LEN, StartupPacket, split_message, split_startup,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::ProxyError;
use crate::server::write_all;

/// What the startup phase ended with.
#[derive(Debug)]
pub enum Startup {
    /// A login attempt with these parameters.
    Login {
        /// `user`.
        user: String,
        /// `database` (defaults to the user name).
        database: String,
    },
    /// A cancel request (the connection ends after it).
    Cancel {
        /// Proxy-issued process id.
        pid: i32,
        /// Proxy-issued key.
        key: i32,
    },
}

async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), ProxyError> {
    buf.reserve(4096);
    let n = stream
        .read_buf(buf)
        .await
        .map_err(|e| ProxyError::io("read from client", e))?;
    if n == 0 {
        return Err(ProxyError::io(
            "read from client",
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(())
}

/// Reads startup packets until a login or cancel request.
pub async fn read_startup(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<Startup, ProxyError> {
    loop {
        let Some(len) = split_startup(buf)? else {
            fill(stream, buf).await?;
            continue;
        };
        let packet = buf.split_to(len);
        match StartupPacket::decode(&packet[4..])? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                write_all(stream, b"N").await?;
            }
            StartupPacket::Cancel { pid, key } => return Ok(Startup::Cancel { pid, key }),
            p @ StartupPacket::Startup { .. } => {
                let user = p
                    .param("user")
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| {
                        ProxyError::Protocol("no user name in the startup message".into())
                    })?
                    .to_string();
                let database = p
                    .param("database")
                    .filter(|d| !d.is_empty())
                    .unwrap_or(&user)
                    .to_string();
                return Ok(Startup::Login { user, database });
            }
        }
    }
}

async fn read_password(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<BytesMut, ProxyError> {
    loop {
        if let Some((tag, len)) = split_message(buf, MAX_STARTUP_LEN)? {
            if tag != b'p' {
                return Err(ProxyError::Protocol(format!(
                    "expected a password message, got {:?}",
                    char::from(tag)
                )));
            }
            return Ok(buf.split_to(len));
        }
        fill(stream, buf).await?;
    }
}

/// Outcome of the SCRAM exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Authenticated (AuthenticationOk sent).
    Ok,
    /// Wrong password or unknown user (FATAL 28P01 sent).
    Failed,
}

/// Runs SCRAM-SHA-256 with the client. `verifier` is `None` for an unknown
/// user: a throwaway verifier makes the exchange look the same.
pub async fn authenticate(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    user: &str,
    verifier: Option<&ScramVerifier>,
) -> Result<AuthOutcome, ProxyError> {
    let known = verifier.is_some();
    let verifier = match verifier {
        Some(v) => v.clone(),
        None => ScramVerifier::from_password(&pgkeel_pg::secrets::generate_password(32)?)
            .map_err(|e| ProxyError::Protocol(e.to_string()))?,
    };
    let mut out = Vec::new();
    BackendMessage::Authentication(Authentication::Sasl(vec![MECHANISM])).encode(&mut out);
    write_all(stream, &out).await?;
    let first = read_password(stream, buf).await?;
    let (mech, data) =
        parse_initial_response(&first[5..]).map_err(|e| ProxyError::Protocol(e.to_string()))?;
    if mech != MECHANISM {
        return Err(ProxyError::Protocol(format!(
            "unsupported SASL mechanism {mech:?}"
        )));
    }
    let mut server = ScramServer::new(verifier);
    let server_first = server
        .client_first(data)
        .map_err(|e| ProxyError::Protocol(e.to_string()))?;
    out.clear();
    BackendMessage::Authentication(Authentication::SaslContinue(server_first.as_bytes()))
        .encode(&mut out);
    write_all(stream, &out).await?;
    let last = read_password(stream, buf).await?;
    let FrontendMessage::Password(body) = FrontendMessage::decode(&last)? else {
        return Err(ProxyError::Protocol("expected a SASL response".into()));
    };
    out.clear();
    match server.client_final(body) {
        Ok(server_final) if known => {
            BackendMessage::Authentication(Authentication::SaslFinal(server_final.as_bytes()))
                .encode(&mut out);
            BackendMessage::Authentication(Authentication::Ok).encode(&mut out);
            write_all(stream, &out).await?;
            Ok(AuthOutcome::Ok)
        }
        Ok(_) | Err(ScramError::BadProof) => {
            encode_error(
                &mut out,
                "FATAL",
                "28P01",
                &format!("password authentication failed for user \"{user}\""),
            );
            write_all(stream, &out).await?;
            Ok(AuthOutcome::Failed)
        }
        Err(e) => Err(ProxyError::Protocol(e.to_string())),
    }
}

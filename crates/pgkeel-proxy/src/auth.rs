//! Client login: the startup phase (TLS on SSLRequest when configured,
//! `N` to GSSENCRequest, cancel requests) and authentication.
//!
//! Roles in the user list are checked with SCRAM-SHA-256 against their
//! verifiers. Other roles are looked up with the auth query
//! ([`crate::auth_query`]): SCRAM verifiers are checked the same way and
//! the ClientKey the proof reveals is kept to log in to the servers (SCRAM
//! pass-through); md5 secrets are asked for MD5 only when `allow_md5` is
//! on. An unknown role goes through a SCRAM exchange with a mock salt
//! that is stable per name, and a wrong password or unknown role both get
//! the same FATAL 28P01, so nothing tells which one it was.

use std::sync::Arc;

use bytes::BytesMut;
use pgkeel_wire::backend::{Authentication, encode_error};
use pgkeel_wire::md5::md5_verify;
use pgkeel_wire::scram::{
    MECHANISM, ScramError, ScramServer, ScramVerifier, parse_initial_response,
};
use pgkeel_wire::{
    BackendMessage, FrontendMessage, MAX_STARTUP_LEN, StartupPacket, split_message, split_startup,
};
use tokio::io::AsyncReadExt;

use crate::auth_query::{self, StoredSecret};
use crate::server::write_all;
use crate::settings::startup_settings;
use crate::stream::ClientStream;
use crate::tls::TlsMode;
use crate::{Credential, ProxyError, Shared};

/// What the startup phase ended with.
#[derive(Debug)]
pub enum Startup {
    /// A login attempt with these parameters.
    Login {
        /// `user`.
        user: String,
        /// `database` (defaults to the user name).
        database: String,
        /// The settings asked for (see [`crate::settings::startup_settings`]),
        /// not yet checked by a server.
        settings: Vec<(String, String)>,
    },
    /// A cancel request (the connection ends after it).
    Cancel {
        /// Proxy-issued process id.
        pid: i32,
        /// Proxy-issued key.
        key: i32,
    },
}

async fn fill(stream: &mut ClientStream, buf: &mut BytesMut) -> Result<(), ProxyError> {
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

/// Sends FATAL for `e` (best effort) and returns it.
pub async fn fatal(stream: &mut ClientStream, e: ProxyError) -> ProxyError {
    let mut out = Vec::new();
    encode_error(&mut out, "FATAL", e.sqlstate(), &e.to_string());
    let _ = write_all(stream, &out).await;
    e
}

/// Reads startup packets until a login or cancel request, switching to
/// TLS when the client asks and the proxy has a certificate. Errors are
/// also sent to the client as FATAL where the connection allows.
pub async fn startup(
    mut stream: ClientStream,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<(ClientStream, Startup), ProxyError> {
    loop {
        let len = match split_startup(buf) {
            Ok(Some(len)) => len,
            Ok(None) => match fill(&mut stream, buf).await {
                Ok(()) => continue,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(fatal(&mut stream, e.into()).await),
        };
        let packet = buf.split_to(len);
        let decoded = match StartupPacket::decode(&packet[4..]) {
            Ok(p) => p,
            Err(e) => return Err(fatal(&mut stream, e.into()).await),
        };
        match decoded {
            StartupPacket::SslRequest => {
                let tls = match &shared.tls {
                    Some(t) if !stream.is_tls() => t,
                    _ => {
                        write_all(&mut stream, b"N").await?;
                        continue;
                    }
                };
                if !buf.is_empty() {
                    // Bytes sent before the handshake would be taken as
                    // if they had come encrypted.
                    let e = ProxyError::Protocol("unencrypted data after SSL request".into());
                    return Err(fatal(&mut stream, e).await);
                }
                write_all(&mut stream, b"S").await?;
                stream = stream.upgrade(&tls.acceptor()).await?;
            }
            StartupPacket::GssEncRequest => write_all(&mut stream, b"N").await?,
            StartupPacket::Cancel { pid, key } => {
                return Ok((stream, Startup::Cancel { pid, key }));
            }
            p @ StartupPacket::Startup { .. } => {
                let Some(user) = p.param("user").filter(|u| !u.is_empty()) else {
                    let e = ProxyError::Protocol("no user name in the startup message".into());
                    return Err(fatal(&mut stream, e).await);
                };
                if shared.config.tls_mode == TlsMode::Require && !stream.is_tls() {
                    return Err(fatal(&mut stream, ProxyError::SslRequired).await);
                }
                let database = p
                    .param("database")
                    .filter(|d| !d.is_empty())
                    .unwrap_or(user)
                    .to_string();
                let settings = match startup_settings(p.params()) {
                    Ok(s) => s,
                    Err(e) => return Err(fatal(&mut stream, e.into()).await),
                };
                let user = user.to_string();
                return Ok((
                    stream,
                    Startup::Login {
                        user,
                        database,
                        settings,
                    },
                ));
            }
        }
    }
}

async fn read_password(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
) -> Result<BytesMut, ProxyError> {
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

/// Runs SCRAM-SHA-256 against `verifier`; on a matching proof returns
/// server-final-message and the ClientKey, `None` on a wrong one.
async fn scram(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    verifier: ScramVerifier,
) -> Result<Option<(String, [u8; 32])>, ProxyError> {
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
    match server.client_final_with_key(body) {
        Ok(done) => Ok(Some(done)),
        Err(ScramError::BadProof) => Ok(None),
        Err(e) => Err(ProxyError::Protocol(e.to_string())),
    }
}

/// Asks for MD5 with a random salt; true when the answer matches `secret`.
async fn md5(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    secret: &str,
) -> Result<bool, ProxyError> {
    let mut salt = [0u8; 4];
    getrandom::fill(&mut salt).map_err(|e| ProxyError::Config(format!("no randomness: {e}")))?;
    let mut out = Vec::new();
    BackendMessage::Authentication(Authentication::Md5Password(salt)).encode(&mut out);
    write_all(stream, &out).await?;
    let msg = read_password(stream, buf).await?;
    let FrontendMessage::Password(body) = FrontendMessage::decode(&msg)? else {
        return Err(ProxyError::Protocol("expected a password message".into()));
    };
    let answer = body.strip_suffix(&[0]).unwrap_or(body);
    Ok(md5_verify(secret, salt, answer))
}

/// How a role's client login is checked.
enum Check {
    /// SCRAM against a verifier; a static user's password goes to servers.
    Static(ScramVerifier, Credential),
    /// SCRAM against a looked-up verifier; recovered keys go to servers.
    PassThrough(ScramVerifier),
    /// MD5 against a looked-up md5 secret, which goes to servers.
    Md5(String),
    /// No usable secret: a mock exchange that always fails.
    Mock,
}

async fn check_for(shared: &Shared, user: &str) -> Result<(Check, bool), ProxyError> {
    if let Some(u) = shared.live().users.get(user) {
        let cred = Credential::password(&u.password);
        return Ok((Check::Static(u.verifier.clone(), cred), false));
    }
    Ok(match auth_query::lookup(shared, user).await? {
        Some(StoredSecret::Scram(v)) => (Check::PassThrough(v), true),
        Some(StoredSecret::Md5(s)) if shared.config.allow_md5 => (Check::Md5(s), true),
        Some(StoredSecret::Md5(_)) => {
            tracing::warn!(
                user,
                "role has an md5 password and md5 is not allowed: set a SCRAM password \
                 (password_encryption = 'scram-sha-256') or start the proxy with --allow-md5"
            );
            (Check::Mock, true)
        }
        None => (Check::Mock, false),
    })
}

/// Authenticates the client as `user`. `Ok(Some)`: AuthenticationOk was
/// sent, with what to log in to servers with; `Ok(None)`: FATAL 28P01 was
/// sent. Lookup and protocol errors are returned (not sent).
pub async fn login(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    shared: &Shared,
    user: &str,
) -> Result<Option<Credential>, ProxyError> {
    let (check, looked_up) = check_for(shared, user).await?;
    let mut out = Vec::new();
    let credential = match check {
        Check::Static(v, cred) => scram(stream, buf, v).await?.map(|(fin, _)| (fin, cred)),
        Check::PassThrough(v) => scram(stream, buf, v.clone())
            .await?
            .map(|(fin, key)| (fin, Credential::Scram(Arc::new(v.keys(key))))),
        Check::Mock => {
            let mock = ScramVerifier::mock(&shared.mock_key, user);
            scram(stream, buf, mock).await?;
            None
        }
        Check::Md5(secret) => {
            if md5(stream, buf, &secret).await? {
                BackendMessage::Authentication(Authentication::Ok).encode(&mut out);
                write_all(stream, &out).await?;
                return Ok(Some(Credential::Md5(secret.into())));
            }
            None
        }
    };
    if let Some((server_final, credential)) = credential {
        BackendMessage::Authentication(Authentication::SaslFinal(server_final.as_bytes()))
            .encode(&mut out);
        BackendMessage::Authentication(Authentication::Ok).encode(&mut out);
        write_all(stream, &out).await?;
        return Ok(Some(credential));
    }
    if looked_up {
        // The password may have changed on the server: look again next time.
        shared.secrets.forget(user);
    }
    encode_error(
        &mut out,
        "FATAL",
        "28P01",
        &format!("password authentication failed for user \"{user}\""),
    );
    write_all(stream, &out).await?;
    Ok(None)
}

//! Requests to etcd's gateway as one authenticated client: the connector
//! (plain or TLS) and, with a user configured, the token every request
//! carries, fetched once and again when etcd no longer accepts it.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;

use super::EtcdError;
use super::access::{Connector, GatewayAccess};
use super::http::{Body, bounded, post};

/// etcd's answer when its authentication is off (no token needed).
const NOT_ENABLED: &str = "authentication is not enabled";

/// A client of the gateway.
pub struct Session {
    connector: Connector,
    user: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct Authenticated {
    token: String,
}

impl Session {
    /// A session with `access`'s TLS material and credentials.
    pub fn new(access: &GatewayAccess) -> Result<Self, EtcdError> {
        Ok(Session {
            connector: Connector::new(access)?,
            user: access.user.clone(),
            token: Mutex::new(None),
        })
    }

    /// `POST path` with `json` to `endpoint`, authenticated; a token etcd
    /// refuses (expired, or etcd restarted) is renewed once.
    pub async fn post(
        &self,
        endpoint: &str,
        path: &str,
        json: &str,
        timeout: Duration,
    ) -> Result<Body, EtcdError> {
        let token = self.token(endpoint, timeout).await?;
        let first = post(
            &self.connector,
            endpoint,
            path,
            json,
            token.as_deref(),
            timeout,
        )
        .await;
        match first {
            Err(EtcdError::Status { status, body, .. })
                if self.user.is_some()
                    && matches!(status, 400 | 401 | 403)
                    && (body.contains("token") || body.contains("user name")) =>
            {
                *self.token.lock().await = None;
                let token = self.token(endpoint, timeout).await?;
                post(
                    &self.connector,
                    endpoint,
                    path,
                    json,
                    token.as_deref(),
                    timeout,
                )
                .await
            }
            other => other,
        }
    }

    /// The token to send (`None`: no user, or authentication is off).
    async fn token(&self, endpoint: &str, timeout: Duration) -> Result<Option<String>, EtcdError> {
        let Some((user, password)) = &self.user else {
            return Ok(None);
        };
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            return Ok(Some(token.clone()));
        }
        let request = serde_json::json!({ "name": user, "password": password }).to_string();
        let answer = post(
            &self.connector,
            endpoint,
            "/v3/auth/authenticate",
            &request,
            None,
            timeout,
        )
        .await;
        let mut body = match answer {
            Ok(body) => body,
            Err(EtcdError::Status { body, .. }) if body.contains(NOT_ENABLED) => return Ok(None),
            Err(EtcdError::Status { status, body, .. }) => {
                return Err(EtcdError::Refused {
                    endpoint: endpoint.into(),
                    user: user.clone(),
                    detail: format!("HTTP {status}: {body}"),
                });
            }
            Err(e) => return Err(e),
        };
        let bytes = bounded(endpoint, timeout, body.read_all()).await?;
        let token = serde_json::from_slice::<Authenticated>(&bytes)
            .map_err(|e| EtcdError::Protocol {
                endpoint: endpoint.into(),
                detail: format!("unexpected answer to /v3/auth/authenticate: {e}"),
            })?
            .token;
        *cached = Some(token.clone());
        Ok(Some(token))
    }
}

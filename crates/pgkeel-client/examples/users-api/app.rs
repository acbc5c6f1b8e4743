//! The HTTP service: the guide's two routes, with read-your-writes across
//! requests. `POST /users` answers with a `pgkeel-token` header; a
//! `GET /users/{id}` carrying it back is served only where that write is
//! visible.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pgkeel_client::{ErrorKind, ReplicatedPool, Row, WriteToken};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Header carrying a write's read-your-writes token.
pub const TOKEN_HEADER: &str = "pgkeel-token";

/// The table, created when missing.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// Body of `POST /users`.
#[derive(Debug, Deserialize)]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Unique e-mail address.
    pub email: String,
}

/// A stored user as the API returns it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    /// Generated identifier.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

impl User {
    fn from_row(row: &Row) -> Result<User, ApiError> {
        Ok(User {
            id: row.try_get(0).map_err(ApiError::internal)?,
            name: row.try_get(1).map_err(ApiError::internal)?,
            email: row.try_get(2).map_err(ApiError::internal)?,
        })
    }
}

/// Creates the `users` table if it does not exist.
pub async fn ensure_schema(pool: &ReplicatedPool) -> Result<(), pgkeel_client::Error> {
    let tx = pool.write().await?;
    tx.batch_execute(SCHEMA).await?;
    tx.commit().await?;
    Ok(())
}

/// The service's routes over `pool`.
pub fn router(pool: ReplicatedPool) -> Router {
    Router::new()
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user))
        .with_state(pool)
}

async fn create_user(
    State(pool): State<ReplicatedPool>,
    Json(new): Json<NewUser>,
) -> Result<Response, ApiError> {
    let name = new.name.trim();
    let email = new.email.trim();
    if name.is_empty() || !email.contains('@') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`name` must not be empty and `email` must be an e-mail address",
        ));
    }
    let tx = pool.write().await?;
    let row = tx
        .query_one(
            "INSERT INTO users (name, email) VALUES ($1, $2) RETURNING id, name, email",
            &[&name, &email],
        )
        .await?;
    let user = User::from_row(&row)?;
    let token = tx.commit().await?;
    let mut response = (StatusCode::CREATED, Json(user)).into_response();
    if let Ok(value) = HeaderValue::from_str(&token.to_string()) {
        response.headers_mut().insert(TOKEN_HEADER, value);
    }
    Ok(response)
}

async fn get_user(
    State(pool): State<ReplicatedPool>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Json<User>, ApiError> {
    let token = match headers.get(TOKEN_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|t| t.parse::<WriteToken>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "the pgkeel-token header must be a token returned by POST /users",
                    )
                })?,
        ),
        None => None,
    };
    let mut conn = match &token {
        Some(token) => pool.read_after(token).await?,
        None => pool.read().await?,
    };
    let row = conn
        .query_opt("SELECT id, name, email FROM users WHERE id = $1", &[&id])
        .await?;
    match row {
        Some(row) => Ok(Json(User::from_row(&row)?)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no user with id {id}"),
        )),
    }
}

/// An error answer: a status and a JSON `{"error": ...}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<pgkeel_client::Error> for ApiError {
    fn from(e: pgkeel_client::Error) -> Self {
        let status = match e.kind() {
            ErrorKind::NoPrimary
            | ErrorKind::Unavailable
            | ErrorKind::Connect
            | ErrorKind::ConnectionLost
            | ErrorKind::ReadOnly => StatusCode::SERVICE_UNAVAILABLE,
            _ if e.code()
                == Some(&pgkeel_client::tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                return ApiError::new(StatusCode::CONFLICT, "this email is already registered");
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(error = %e, "request failed");
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

//! Errors: [`ServerError`] for the entry points, [`ApiError`] for answers to requests.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mlci_core::StoreError;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("serve HTTP: {0}")]
    Serve(std::io::Error),
    #[error("recover runs left by the previous process: {0}")]
    Recover(StoreError),
    #[error("create the artifacts folder {path}: {source}")]
    Artifacts {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// An error answered as `{"error": "...", "field": "..."}` with its status. Internal
/// failures are logged once here and answered without their details.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for a `Retry-After` header (429s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub(crate) fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.into()),
            retry_after: None,
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    pub(crate) fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!(error = %what, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error (the service log has the details)",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "field": self.field});
        crate::limits::with_retry_after((self.status, Json(body)).into_response(), self.retry_after)
    }
}

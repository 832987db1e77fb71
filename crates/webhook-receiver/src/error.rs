//! The one error type of the receiver's handlers: every refusal and failure is logged with its
//! cause and answered `{"error": "…"}` with a message that names no internals (a database
//! failure is a fixed 503 text; Cloudflare retries it).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ingest::IngestError;

/// Why a request was not answered 2xx.
#[derive(Debug)]
pub enum AppError {
    /// The request is refused (bad secret, body, method): the sender can fix it. `message` is
    /// ours (it may quote the JSON parser about the sender's own body).
    Refused {
        /// The `mt_webhooks_rejected_total` reason.
        reason: &'static str,
        /// The HTTP status.
        status: StatusCode,
        /// What the sender is told.
        message: String,
    },
    /// A valid webhook that could not be stored: not acknowledged, so it is redelivered.
    NotStored(IngestError),
    /// No such path.
    NotFound,
}

impl AppError {
    /// A refusal.
    pub fn refused(reason: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            status,
            message: message.into(),
        }
    }

    /// The `mt_webhooks_rejected_total` reason (`None`: not counted).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Self::Refused { reason, .. } => Some(reason),
            Self::NotStored(IngestError::Store(_)) => Some("database"),
            Self::NotStored(IngestError::WriterGone) => Some("stopping"),
            Self::NotFound => None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Refused {
                reason,
                status,
                message,
            } => {
                tracing::warn!(reason, status = status.as_u16(), "webhook rejected");
                (status, message)
            }
            Self::NotStored(e) => {
                tracing::error!(error = %e, "webhook not stored; the sender will retry");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily unable to store the webhook".to_owned(),
                )
            }
            Self::NotFound => (StatusCode::NOT_FOUND, "not found".to_owned()),
        };
        (status, axum::Json(json!({ "error": message }))).into_response()
    }
}

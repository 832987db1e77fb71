//! The one error type of the dashboard's handlers: the cause goes to the log, the client gets a
//! status and a message that names no internals (no SQLite text, no paths).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The database could not be read or written (logged; the client sees a fixed message).
    #[error("database: {0}")]
    Database(#[from] mt_store::Error),
    /// The client can fix the request; the message is ours and says what to change.
    #[error("{0}")]
    BadRequest(String),
}

impl AppError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A page title for the error.
    pub fn title(&self) -> &'static str {
        match self {
            Self::Database(_) => "Database unavailable",
            Self::BadRequest(_) => "Bad request",
        }
    }

    /// What the client may see.
    pub fn public_message(&self) -> String {
        match self {
            Self::Database(_) => {
                "The database could not be read. Nothing was changed; reload to retry (the cause is in the dashboard's log).".to_owned()
            }
            Self::BadRequest(message) => message.clone(),
        }
    }

    /// Logs the cause once, where the response is made.
    pub fn log(&self) {
        match self {
            Self::Database(e) => tracing::error!(error = %e, "request failed: database"),
            Self::BadRequest(message) => tracing::debug!(%message, "bad request"),
        }
    }
}

/// The JSON answer of `/api/…`: `{"error": "…"}`. HTML pages render the same error inside
/// their frame (`pages::failed`).
impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        (
            self.status(),
            Json(serde_json::json!({ "error": self.public_message() })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_shows_no_internals() {
        let e = AppError::from(mt_store::Error::BackupTargetExists(
            "/var/lib/magic-transit/secret-path.db".into(),
        ));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.public_message().contains("secret-path"));
        assert!(
            e.to_string().contains("secret-path"),
            "the log keeps the cause"
        );
    }
}

//! Errors of Cloudflare calls, keeping Cloudflare's own codes and messages.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// One entry of an envelope's `errors[]` / `messages[]`, or of GraphQL `errors[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiMessage {
    /// Cloudflare's numeric code (REST), if any.
    #[serde(default)]
    pub code: Option<i64>,
    /// The message text.
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for ApiMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn list(errors: &[ApiMessage]) -> String {
    if errors.is_empty() {
        return "no error details".into();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What went wrong talking to Cloudflare.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An error status with a JSON envelope (Cloudflare's codes and messages kept).
    #[error("Cloudflare API HTTP {status}: {}", list(errors))]
    Api {
        /// HTTP status.
        status: u16,
        /// `errors[]` of the envelope.
        errors: Vec<ApiMessage>,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// A 2xx whose envelope says `success: false`.
    #[error("Cloudflare API refused the request: {}", list(errors))]
    Rejected {
        /// `errors[]` of the envelope.
        errors: Vec<ApiMessage>,
    },
    /// A body that is not JSON (an HTML error page from a proxy or an outage).
    #[error("Cloudflare answered HTTP {status} with a non-JSON body: {snippet:?}")]
    NotJson {
        /// HTTP status.
        status: u16,
        /// The first characters of the body.
        snippet: String,
    },
    /// A GraphQL answer carrying `errors` (even with HTTP 200).
    #[error("Cloudflare GraphQL error: {}", list(errors))]
    GraphQl {
        /// The GraphQL errors.
        errors: Vec<ApiMessage>,
    },
    /// The request timed out.
    #[error("request to Cloudflare timed out")]
    Timeout,
    /// No connection could be made.
    #[error("cannot connect to Cloudflare: {0}")]
    Connect(String),
    /// Another transport failure.
    #[error("request to Cloudflare failed: {0}")]
    Transport(String),
    /// Not sent: the GraphQL budget was spent and its hold has not ended.
    #[error("GraphQL budget spent: no query sent for another {}s", remaining.as_secs())]
    BudgetHold {
        /// How long the hold still lasts.
        remaining: Duration,
    },
    /// A JSON answer without the expected fields.
    #[error("unexpected answer from Cloudflare: {0}")]
    Decode(String),
}

impl Error {
    /// The HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::NotJson { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Cloudflare's error codes.
    pub fn codes(&self) -> Vec<i64> {
        match self {
            Self::Api { errors, .. } | Self::Rejected { errors } | Self::GraphQl { errors } => {
                errors.iter().filter_map(|e| e.code).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Cloudflare's refusal to change a prefix's advertisement within 15 minutes of the last
    /// change (HTTP 429 with code 1002): a hold on that prefix for minutes, not an account
    /// rate limit. Retry at the next cycle, not within this call.
    pub fn is_prefix_hold(&self) -> bool {
        matches!(self, Self::Api { status: 429, errors, .. } if errors.iter().any(|e| e.code == Some(1002)))
    }

    /// HTTP 429 (other than a prefix hold), or a GraphQL budget error: not an attack, not
    /// calm, retry later.
    pub fn is_rate_limited(&self) -> bool {
        if self.is_prefix_hold() {
            return false;
        }
        match self {
            Self::Api { status: 429, .. }
            | Self::NotJson { status: 429, .. }
            | Self::BudgetHold { .. } => true,
            // Cloudflare sends no code for these; its documented messages are "rate limiter
            // budget depleted…" and "quota exceeded, please repeat your request…". ("limit
            // reached, please try reduced time period" is about the query's size, not the
            // budget: an ordinary failed query.)
            Self::GraphQl { errors } => errors.iter().any(|e| {
                let m = e.message.to_ascii_lowercase();
                m.contains("rate limit") || m.contains("budget") || m.contains("quota exceeded")
            }),
            _ => false,
        }
    }

    /// HTTP 401/403: the token is wrong or lacks permissions.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// `Retry-After` of a 429, if Cloudflare gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The request may have been carried out although no success came back: a timeout or a
    /// transport failure after the connection was made, a 5xx (a gateway may answer after the
    /// change went through), or a 2xx whose body could not be read. Not for a connection that
    /// was never made, nor a 4xx (Cloudflare refused it).
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Self::Timeout | Self::Transport(_) | Self::Decode(_) => true,
            Self::Api { status, .. } | Self::NotJson { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Worth retrying: connection failures, timeouts, 429 and 5xx. A 4xx is final, and so is
    /// a prefix hold (it lasts minutes).
    pub fn is_transient(&self) -> bool {
        if self.is_prefix_hold() {
            return false;
        }
        match self {
            Self::Timeout | Self::Connect(_) | Self::Transport(_) => true,
            Self::Api { status, .. } | Self::NotJson { status, .. } => {
                *status == 429 || *status >= 500
            }
            _ => false,
        }
    }
}

//! The Cloudflare client of the Magic Transit suite: the only code that builds Cloudflare URLs.
//!
//! One [`Client`] is built once from `[cloudflare]` (base URLs, token, request timeout) and
//! shared. It speaks REST (IP prefixes, BGP prefixes and their on-demand advertisement) and
//! GraphQL (dropped traffic for calm tracking, dosd events for analytics). Errors keep
//! Cloudflare's codes and messages ([`Error`]); retries follow an explicit schedule and only
//! for connection errors, timeouts, 429 (honouring `Retry-After` up to a cap) and 5xx.

mod error;
pub mod graphql;
pub mod rest;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub use error::{ApiMessage, Error};

/// Result of a Cloudflare call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How long a GraphQL budget error (no `Retry-After`) is assumed to last: Cloudflare's budget
/// window is five minutes.
const GRAPHQL_BUDGET_WINDOW: Duration = Duration::from_secs(300);
/// Longest GraphQL hold, whatever `Retry-After` says.
const MAX_GRAPHQL_HOLD: Duration = Duration::from_secs(3600);

/// Retry schedule.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before each retry; its length is the number of retries.
    pub delays: Vec<Duration>,
    /// A `Retry-After` longer than this is not waited for: the call fails at once with the
    /// rate-limit error, so a caller's cycle is never stalled for minutes.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(3),
                Duration::from_secs(8),
            ],
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// How the client waits between retries (tests record the delays instead of sleeping).
pub type Sleeper = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Options of a [`Client`].
#[derive(Clone)]
pub struct ClientOptions {
    /// Total timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Waits between retries.
    pub sleeper: Sleeper,
    /// "Now" for holds that last minutes (the GraphQL budget window): injected in tests.
    pub clock: mt_common::SharedClock,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            sleeper: Arc::new(|d| Box::pin(tokio::time::sleep(d))),
            clock: mt_common::SystemClock::shared(),
        }
    }
}

/// A JSON answer and Cloudflare's `Date` header (to detect clock skew).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub body: Value,
    pub date: Option<DateTime<Utc>>,
}

/// The Cloudflare client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api_base: url::Url,
    graphql_url: url::Url,
    account_id: String,
    retry: RetryPolicy,
    sleeper: Sleeper,
    rate_limited_until: Arc<Mutex<Option<tokio::time::Instant>>>,
    graphql_held_until: Arc<Mutex<Option<DateTime<Utc>>>>,
    clock: mt_common::SharedClock,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("api_base", &self.api_base.as_str())
            .field("graphql_url", &self.graphql_url.as_str())
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// Why [`Client::from_config`] could not build a client.
#[derive(Debug, thiserror::Error)]
pub enum FromConfigError {
    /// No usable API token (`cloudflare.api_token_file` or the environment).
    #[error(transparent)]
    Token(#[from] mt_common::ConfigError),
    /// The token or a configured URL cannot be used.
    #[error(transparent)]
    Client(#[from] Error),
}

impl Client {
    /// The client a process builds once and keeps (its connection pool and its rate-limit
    /// and GraphQL-budget holds are shared by every call): the token from
    /// `cloudflare.api_token_file` or the environment, `cloudflare.request_timeout`, and
    /// `retry` (the daemons use the default; an operator's CLI call a shorter one).
    pub fn from_config(
        config: &mt_common::Config,
        retry: RetryPolicy,
    ) -> std::result::Result<Self, FromConfigError> {
        let (token, _) = config.cloudflare_api_token()?;
        Ok(Self::new(
            &config.cloudflare,
            &token,
            ClientOptions {
                request_timeout: config.cloudflare.request_timeout,
                retry,
                ..ClientOptions::default()
            },
        )?)
    }
    /// A client for `[cloudflare]` with the given token.
    pub fn new(
        config: &mt_common::config::CloudflareConfig,
        token: &SecretString,
        options: ClientOptions,
    ) -> Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| {
                Error::Decode("the API token contains characters not allowed in a header".into())
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!(
                "magic-transit-ondemand/",
                env!("CARGO_PKG_VERSION")
            ))
            .connect_timeout(options.connect_timeout.min(options.request_timeout))
            .timeout(options.request_timeout)
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        let parse = |key: &str, value: &str| {
            url::Url::parse(value)
                .map_err(|e| Error::Decode(format!("cloudflare.{key} {value:?}: {e}")))
        };
        Ok(Self {
            http,
            api_base: parse("api_base_url", &config.api_base_url)?,
            graphql_url: parse("graphql_url", &config.graphql_url)?,
            account_id: config.account_id.clone(),
            retry: options.retry,
            sleeper: options.sleeper,
            rate_limited_until: Arc::default(),
            graphql_held_until: Arc::default(),
            clock: options.clock,
        })
    }

    /// How long Cloudflare's REST API still asks us to hold off (after a 429); `None` when not
    /// rate-limited. Lets callers say "rate limited" rather than "calm".
    pub fn rate_limited_for(&self) -> Option<Duration> {
        let until = *self
            .rate_limited_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.and_then(|t| t.checked_duration_since(tokio::time::Instant::now()))
    }

    /// How long this client still sends no GraphQL query after a budget error (HTTP 429, or
    /// `errors` about the rate limiter budget); `None` when it may query.
    pub fn graphql_held_for(&self) -> Option<Duration> {
        let until = *self
            .graphql_held_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        until.and_then(|t| {
            (t - self.clock.now())
                .to_std()
                .ok()
                .filter(|d| !d.is_zero())
        })
    }

    /// One GraphQL request. A budget error is never retried: every GraphQL call of this client
    /// then fails at once, without sending, until the hold ends — `Retry-After` when Cloudflare
    /// gives one, else its documented five-minute budget window — so a spent budget is not made
    /// worse by a burst of retries. Other transient failures are retried per the policy. A 200
    /// carrying `errors` is an error (never "no rows").
    pub(crate) async fn graphql(&self, what: &str, query: &str, variables: Value) -> Result<Reply> {
        if let Some(remaining) = self.graphql_held_for() {
            return Err(Error::BudgetHold { remaining });
        }
        let body = serde_json::json!({ "query": query, "variables": variables });
        let url = self.graphql_url.clone();
        let result = self
            .call_with(what, false, |http| http.post(url.clone()).json(&body))
            .await
            .and_then(|reply| match graphql::graphql_errors(&reply.body) {
                Some(e) => Err(e),
                None => Ok(reply),
            });
        if let Err(e) = &result
            && e.is_rate_limited()
        {
            // An absurd Retry-After must not blind the daemons for days.
            let hold = e
                .retry_after()
                .unwrap_or(GRAPHQL_BUDGET_WINDOW)
                .min(MAX_GRAPHQL_HOLD);
            let until = chrono::Duration::from_std(hold)
                .ok()
                .and_then(|d| self.clock.now().checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            *self
                .graphql_held_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(until);
            tracing::warn!(call = what, hold_secs = hold.as_secs(), error = %e, "GraphQL budget error; no GraphQL query until the hold ends");
        }
        result
    }

    fn note_rate_limit(&self, error: &Error) {
        if error.is_rate_limited() {
            let hold = error.retry_after().unwrap_or(GRAPHQL_BUDGET_WINDOW);
            *self
                .rate_limited_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now() + hold);
        }
    }

    /// `api_base` + path segments (each escaped, so an id can never change the path).
    pub(crate) fn endpoint(&self, segments: &[&str]) -> url::Url {
        let mut url = self.api_base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    pub(crate) fn account_id(&self) -> &str {
        &self.account_id
    }

    /// Sends a request built by `build`, retrying per the policy; returns the JSON answer.
    pub(crate) async fn call(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply> {
        self.call_with(what, true, build).await
    }

    /// [`Self::call`]; `retry_rate_limited: false` returns a 429 at once (GraphQL budget).
    async fn call_with(
        &self,
        what: &str,
        retry_rate_limited: bool,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply> {
        let mut attempt = 0;
        loop {
            let result = self.once(build(&self.http)).await;
            let error = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            if retry_rate_limited {
                self.note_rate_limit(&error);
            }
            let delay = match (error.is_transient(), error.retry_after()) {
                (false, _) => None,
                (true, _) if !retry_rate_limited && error.is_rate_limited() => None,
                (true, Some(after)) if after > self.retry.max_retry_after => None,
                (true, Some(after)) => self.retry.delays.get(attempt).map(|_| after),
                (true, None) => self.retry.delays.get(attempt).copied(),
            };
            let Some(delay) = delay else {
                return Err(error);
            };
            attempt += 1;
            tracing::warn!(call = what, attempt, retry_in_ms = delay.as_millis() as u64, error = %error, "cloudflare call failed; retrying");
            (self.sleeper)(delay).await;
        }
    }

    async fn once(&self, request: reqwest::RequestBuilder) -> Result<Reply> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
            .map(|d| d.with_timezone(&Utc));
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(transport)?;
        let body: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) => {
                return Err(Error::NotJson {
                    status,
                    snippet: text.chars().take(120).collect(),
                });
            }
        };
        if !(200..300).contains(&status) {
            return Err(Error::Api {
                status,
                errors: messages(&body, "errors"),
                retry_after,
            });
        }
        Ok(Reply { body, date })
    }
}

fn transport(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout
    } else if e.is_connect() {
        Error::Connect(e.to_string())
    } else {
        Error::Transport(e.to_string())
    }
}

/// `errors[]` (or `messages[]`) of an envelope or GraphQL answer; tolerant of odd shapes.
pub(crate) fn messages(body: &Value, key: &str) -> Vec<ApiMessage> {
    body.get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    serde_json::from_value(item.clone()).unwrap_or_else(|_| ApiMessage {
                        code: None,
                        message: item.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

//! Users, sessions, CSRF tokens and login rate limiting.
//!
//! Sessions live in memory: a restart logs everyone out, which is the safe failure. A session
//! token is 32 random bytes from the OS; the cookie carrying it is `HttpOnly`, `SameSite=Strict`
//! and `Secure` unless configured otherwise. Every session has its own CSRF token, required on
//! every form; the login form has a pre-session token in its own short-lived cookie
//! (double-submit), so a login cannot be forged from another site either.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use mt_common::config::{DashboardConfig, DashboardRole};
use subtle::ConstantTimeEq;

/// Session cookie name.
pub const SESSION_COOKIE: &str = "mt_session";
/// Pre-login CSRF cookie name.
pub const LOGIN_COOKIE: &str = "mt_login";
/// How long the login form stays valid.
const LOGIN_FORM_TTL_SECS: i64 = 600;
/// At most this many live sessions; the oldest are dropped beyond it.
const MAX_SESSIONS: usize = 10_000;
/// At most this many remembered failure keys (user names and addresses).
const MAX_FAILURE_KEYS: usize = 100_000;
/// Longer user names are refused without a password check (and never stored as a key).
pub const MAX_NAME_CHARS: usize = 100;
/// Password checks running at once (each argon2 check takes ~19 MiB and tens of ms); more
/// logins wait, so a flood of logins cannot exhaust memory or the blocking pool.
const MAX_CONCURRENT_CHECKS: usize = 4;

/// One configured user.
#[derive(Clone)]
struct User {
    name: String,
    hash: String,
    role: DashboardRole,
}

/// A message shown once on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// Success (`true`) or error.
    pub ok: bool,
    /// The text.
    pub text: String,
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    /// Login name.
    pub user: String,
    /// What they may do.
    pub role: DashboardRole,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// Logged in at.
    pub created: DateTime<Utc>,
    /// Ends at.
    pub expires: DateTime<Utc>,
    flash: Option<Flash>,
}

impl Session {
    /// Whether the user may act.
    pub fn is_operator(&self) -> bool {
        self.role == DashboardRole::Operator
    }

    /// `viewer` / `operator`.
    pub fn role_name(&self) -> &'static str {
        match self.role {
            DashboardRole::Viewer => "viewer",
            DashboardRole::Operator => "operator",
        }
    }
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    /// Too many failures: retry after this many seconds.
    Locked(i64),
    /// Wrong user name or password (never says which).
    Denied,
}

/// Users, sessions and the login limiter.
pub struct Auth {
    users: Vec<User>,
    /// Verified when the user name is unknown, so the response time does not tell.
    dummy_hash: String,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
    checks: tokio::sync::Semaphore,
    ttl: chrono::Duration,
    lockout: chrono::Duration,
    max_failures: usize,
    secure: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.len())
            .field("secure_cookies", &self.secure)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes from the OS, hex-encoded.
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    // The OS RNG failing is not something a web request can recover from.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    hex::encode(buf)
}

/// Constant-time equality of two tokens.
pub fn tokens_match(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these maps leaves them consistent (single inserts/removes).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Auth {
    /// From `[dashboard]`. Fails if a password hash does not parse.
    pub fn new(config: &DashboardConfig) -> Result<Self, String> {
        let mut users = Vec::new();
        for (i, u) in config.users.iter().enumerate() {
            if !mt_control::password::is_valid_hash(&u.password_hash) {
                return Err(format!(
                    "dashboard.users[{i}].password_hash: not a valid PHC string (make one with `mtctl hash-password`)"
                ));
            }
            users.push(User {
                name: u.name.clone(),
                hash: u.password_hash.clone(),
                role: u.role,
            });
        }
        let dummy_hash = mt_control::password::hash(&random_token())?;
        let span = |d: std::time::Duration| {
            chrono::Duration::from_std(d).unwrap_or(chrono::Duration::hours(12))
        };
        Ok(Self {
            users,
            dummy_hash,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            checks: tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS),
            ttl: span(config.session_ttl),
            lockout: span(config.login_lockout),
            max_failures: config.login_max_failures.max(1) as usize,
            secure: config.secure_cookies,
        })
    }

    /// Whether any user is configured.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Failures count per client address and per user name from that address. Not per user
    /// name alone: anyone could then lock a named operator out during an attack.
    fn failure_keys(name: &str, client: &str) -> [String; 2] {
        let name: String = name
            .trim()
            .to_lowercase()
            .chars()
            .take(MAX_NAME_CHARS)
            .collect();
        [format!("addr:{client}"), format!("pair:{name}|{client}")]
    }

    /// Refuses a login attempt while its user name or client address is locked out.
    pub fn check_limit(&self, name: &str, client: &str, now: DateTime<Utc>) -> Result<(), i64> {
        let mut failures = lock(&self.failures);
        let mut retry = 0i64;
        for key in Self::failure_keys(name, client) {
            if let Some(times) = failures.get_mut(&key) {
                while times.front().is_some_and(|t| *t + self.lockout <= now) {
                    times.pop_front();
                }
                if times.len() >= self.max_failures
                    && let Some(oldest) = times.front()
                {
                    retry = retry.max((*oldest + self.lockout - now).num_seconds().max(1));
                }
            }
        }
        if retry > 0 { Err(retry) } else { Ok(()) }
    }

    fn record_failure(&self, name: &str, client: &str, now: DateTime<Utc>) {
        let mut failures = lock(&self.failures);
        if failures.len() >= MAX_FAILURE_KEYS {
            let lockout = self.lockout;
            failures.retain(|_, times| times.back().is_some_and(|t| *t + lockout > now));
            if failures.len() >= MAX_FAILURE_KEYS {
                // Still full of live entries: forget the oldest tenth (bounded memory wins
                // over remembering every address of a very wide spray).
                let mut newest: Vec<(DateTime<Utc>, String)> = failures
                    .iter()
                    .filter_map(|(k, t)| t.back().map(|t| (*t, k.clone())))
                    .collect();
                newest.sort();
                for (_, k) in newest.into_iter().take(MAX_FAILURE_KEYS / 10) {
                    failures.remove(&k);
                }
            }
        }
        for key in Self::failure_keys(name, client) {
            let times = failures.entry(key).or_default();
            times.push_back(now);
            while times.len() > self.max_failures {
                times.pop_front();
            }
        }
    }

    /// Checks the credentials (argon2, on a blocking thread) and opens a session. Returns the
    /// session token.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Session), LoginRefused> {
        self.check_limit(name, client, now)
            .map_err(LoginRefused::Locked)?;
        if name.chars().count() > MAX_NAME_CHARS {
            self.record_failure(name, client, now);
            return Err(LoginRefused::Denied);
        }
        let user = self.users.iter().find(|u| u.name == name).cloned();
        let hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.hash.clone());
        let password = password.to_owned();
        let matches = match self.checks.acquire().await {
            Ok(_permit) => {
                // Checked again: other attempts may have failed while this one waited, and a
                // locked-out flood must not cost a password check each.
                self.check_limit(name, client, now)
                    .map_err(LoginRefused::Locked)?;
                tokio::task::spawn_blocking(move || mt_control::password::verify(&password, &hash))
                    .await
                    .unwrap_or(false)
            }
            Err(_) => false,
        };
        match user {
            Some(user) if matches => {
                let key = Self::failure_keys(name, client);
                lock(&self.failures).remove(&key[1]);
                let token = random_token();
                let session = Session {
                    user: user.name,
                    role: user.role,
                    csrf: random_token(),
                    created: now,
                    expires: now + self.ttl,
                    flash: None,
                };
                let mut sessions = lock(&self.sessions);
                sessions.retain(|_, s| s.expires > now);
                if sessions.len() >= MAX_SESSIONS
                    && let Some(oldest) = sessions
                        .iter()
                        .min_by_key(|(_, s)| s.created)
                        .map(|(k, _)| k.clone())
                {
                    sessions.remove(&oldest);
                }
                sessions.insert(token.clone(), session.clone());
                Ok((token, session))
            }
            _ => {
                self.record_failure(name, client, now);
                Err(LoginRefused::Denied)
            }
        }
    }

    /// Whether `name` is a configured user (failed logins of real users are audited).
    pub fn is_user(&self, name: &str) -> bool {
        self.users.iter().any(|u| u.name == name)
    }

    /// The live session of `token`.
    pub fn session(&self, token: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        match sessions.get(token) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                sessions.remove(token);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn logout(&self, token: &str) -> Option<Session> {
        lock(&self.sessions).remove(token)
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, token: &str, flash: Flash) {
        if let Some(s) = lock(&self.sessions).get_mut(token) {
            s.flash = Some(flash);
        }
    }

    /// Takes the waiting message, if any.
    pub fn take_flash(&self, token: &str) -> Option<Flash> {
        lock(&self.sessions)
            .get_mut(token)
            .and_then(|s| s.flash.take())
    }

    fn attributes(&self, path: &str, max_age: i64) -> String {
        format!(
            "Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` value opening a session.
    pub fn session_cookie(&self, token: &str) -> String {
        format!(
            "{SESSION_COOKIE}={token}; {}",
            self.attributes("/", self.ttl.num_seconds())
        )
    }

    /// `Set-Cookie` value ending the session cookie.
    pub fn clear_session_cookie(&self) -> String {
        format!("{SESSION_COOKIE}=; {}", self.attributes("/", 0))
    }

    /// `Set-Cookie` value removing the login form's token.
    pub fn clear_login_cookie(&self) -> String {
        format!("{LOGIN_COOKIE}=; {}", self.attributes("/login", 0))
    }

    /// `Set-Cookie` value for the login form's token.
    pub fn login_cookie(&self, token: &str) -> String {
        format!(
            "{LOGIN_COOKIE}={token}; {}",
            self.attributes("/login", LOGIN_FORM_TTL_SECS)
        )
    }
}

/// Every value of cookie `name` in a `Cookie` header (a cookie set by a sibling domain can
/// carry the same name; callers try each).
pub fn cookies<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The first value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &'a str) -> Option<&'a str> {
    cookies(header, name).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_failures: u32) -> DashboardConfig {
        DashboardConfig {
            login_max_failures: max_failures,
            users: vec![mt_common::config::DashboardUser {
                name: "alice".into(),
                password_hash: mt_control::password::hash("alice's long password")
                    .unwrap_or_default(),
                role: DashboardRole::Operator,
            }],
            ..DashboardConfig::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
    }

    #[tokio::test]
    async fn lockout_per_address_and_per_user_from_that_address_then_expiry() {
        let auth = Auth::new(&config(3)).unwrap();
        for _ in 0..3 {
            assert_eq!(
                auth.login("alice", "wrong", "10.0.0.1", now()).await.err(),
                Some(LoginRefused::Denied)
            );
        }
        // That address is locked, even with the right password, for any user name.
        let locked = auth
            .login("alice", "alice's long password", "10.0.0.1", now())
            .await;
        assert_eq!(locked.err(), Some(LoginRefused::Locked(900)));
        assert!(matches!(
            auth.login("bob", "x", "10.0.0.1", now()).await,
            Err(LoginRefused::Locked(_))
        ));
        // Someone guessing from elsewhere cannot lock alice out of her own address.
        let ok = auth
            .login("alice", "alice's long password", "10.0.0.2", now())
            .await;
        assert!(ok.is_ok());
        let later = now() + chrono::Duration::minutes(15);
        let ok = auth
            .login("alice", "alice's long password", "10.0.0.1", later)
            .await;
        assert!(ok.is_ok());
        // Absurd user names are refused without a check and never stored whole.
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            auth.login(&long, "pw", "10.0.0.3", later).await.err(),
            Some(LoginRefused::Denied)
        );
        assert!(lock(&auth.failures).keys().all(|k| k.len() < 200));
    }

    #[tokio::test]
    async fn sessions_expire_and_tokens_differ() {
        let auth = Auth::new(&config(5)).unwrap();
        let Ok((token, session)) = auth
            .login("alice", "alice's long password", "10.0.0.1", now())
            .await
        else {
            panic!("login failed");
        };
        assert_eq!(token.len(), 64);
        assert_ne!(token, session.csrf);
        assert!(auth.session(&token, now()).is_some());
        assert!(
            auth.session(&token, now() + chrono::Duration::hours(12))
                .is_none()
        );
        assert!(auth.session(&token, now()).is_none(), "expired is removed");
    }

    #[test]
    fn cookie_parsing_and_token_compare() {
        assert_eq!(
            cookie("a=1; mt_session=abc; b=2", "mt_session"),
            Some("abc")
        );
        assert_eq!(cookie("mt_session_x=abc", "mt_session"), None);
        assert_eq!(
            cookies("mt_session=a; mt_session=b", "mt_session").collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("", ""));
    }

    #[test]
    fn a_bad_hash_is_a_config_error() {
        let mut c = config(5);
        c.users[0].password_hash = "$argon2id$nonsense".into();
        let err = Auth::new(&c).unwrap_err();
        assert!(err.contains("dashboard.users[0].password_hash"), "{err}");
    }
}

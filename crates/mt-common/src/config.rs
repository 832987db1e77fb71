//! The configuration model of SPEC §3: one TOML file shared by every binary, `MT_<SECTION>__<KEY>`
//! environment overrides (env wins), human durations, secrets from env or `*_file` keys, unknown
//! keys rejected by name, and validation done once at load.
//!
//! Secrets are not part of the parsed file: the file only names where they live
//! (`api_token_file`, `secret_file`, `bot_token_file`). They are resolved on demand by the
//! binary that needs them ([`Config::cloudflare_api_token`] …), so `mtctl status` run by a SOC
//! operator does not need read access to the bot token.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the config lives when neither `--config` nor `$MT_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/magic-transit/config.toml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "MT_CONFIG";
/// Environment variable carrying the Cloudflare API token.
pub const CLOUDFLARE_TOKEN_ENV: &str = "MT_CLOUDFLARE_API_TOKEN";
/// Environment variable carrying the webhook shared secret.
pub const WEBHOOK_SECRET_ENV: &str = "MT_WEBHOOK_SECRET";
/// Environment variable carrying the Telegram bot token.
pub const TELEGRAM_TOKEN_ENV: &str = "MT_TELEGRAM_BOT_TOKEN";
/// Set by systemd when a unit uses `LoadCredential=`.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

const SECRET_ENVS: [&str; 3] = [CLOUDFLARE_TOKEN_ENV, WEBHOOK_SECRET_ENV, TELEGRAM_TOKEN_ENV];

/// A configuration problem. Its `Display` is the one line a binary prints before exiting 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the model (unknown key, wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// An `MT_*` environment variable is unknown or has a bad value.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// A key has a value that parses but is not acceptable.
    #[error("config key {key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `prefixes[1].cidr`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A secret that this binary needs is configured nowhere.
    #[error("the {name} is not configured: set {env} or {key}")]
    MissingSecret {
        /// Human name of the secret.
        name: &'static str,
        /// The environment variable that may carry it.
        env: &'static str,
        /// The `*_file` key that may point at it.
        key: &'static str,
    },
    /// A secret file could not be read or is empty.
    #[error("config key {key}: cannot use secret file {path}: {message}")]
    SecretFile {
        /// The `*_file` key.
        key: &'static str,
        /// The resolved path.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration. `Default` is the documented default of every key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[cloudflare]`
    pub cloudflare: CloudflareConfig,
    /// `[[prefixes]]`: the protected prefixes.
    pub prefixes: Vec<PrefixConfig>,
    /// `[webhook]`
    pub webhook: WebhookConfig,
    /// `[autowithdraw]`
    pub autowithdraw: AutowithdrawConfig,
    /// `[network_analytics]`
    pub network_analytics: NetworkAnalyticsConfig,
    /// `[telegram]`
    pub telegram: TelegramConfig,
    /// `[dashboard]`
    pub dashboard: DashboardConfig,
    /// Secrets given through the environment, captured at load time.
    #[serde(skip)]
    secrets: SecretSources,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// The SQLite file shared by every daemon.
    pub path: PathBuf,
    /// How long a writer waits for the database lock before giving up. Several daemons write
    /// the same file; this only has to outlast the longest transaction (milliseconds).
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/magic-transit/magic_transit.db"),
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// `[cloudflare]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudflareConfig {
    /// The Cloudflare account owning the prefixes.
    pub account_id: String,
    /// REST API base URL; tests point it at a fake.
    pub api_base_url: String,
    /// GraphQL endpoint.
    pub graphql_url: String,
    /// File holding the API token (or env `MT_CLOUDFLARE_API_TOKEN`).
    pub api_token_file: String,
    /// Total timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for CloudflareConfig {
    fn default() -> Self {
        Self {
            account_id: String::new(),
            api_base_url: "https://api.cloudflare.com/client/v4".into(),
            graphql_url: "https://api.cloudflare.com/client/v4/graphql".into(),
            api_token_file: String::new(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// One `[[prefixes]]` table: a protected prefix, IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixConfig {
    /// The prefix, normalised to its network address at load.
    #[serde(deserialize_with = "de_cidr", serialize_with = "ser_display")]
    pub cidr: IpNet,
    /// Cloudflare IP prefix id.
    pub prefix_id: String,
    /// Cloudflare BGP prefix id (the on-demand advertisement handle).
    pub bgp_prefix_id: String,
    /// Free text shown in messages and `mtctl status`.
    #[serde(default)]
    pub description: String,
    /// `false`: never withdrawn automatically.
    #[serde(default = "yes")]
    pub auto_withdraw: bool,
}

/// `[webhook]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Address the receiver binds.
    pub listen: SocketAddr,
    /// URL path Cloudflare posts to.
    pub path: String,
    /// File holding the shared secret (or env `MT_WEBHOOK_SECRET`).
    pub secret_file: String,
    /// Accept webhooks without `cf-webhook-auth` when no secret is configured. Off by default:
    /// without a secret the receiver refuses to start.
    pub allow_unauthenticated: bool,
    /// Raw JSON copy of every accepted webhook.
    pub archive_dir: PathBuf,
    /// Larger bodies are answered 413.
    pub max_body_bytes: usize,
    /// Total time allowed for one request, body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDRs).
    #[serde(deserialize_with = "de_proxies", serialize_with = "ser_display_vec")]
    pub trusted_proxies: Vec<IpNet>,
    /// A request header not complete within this time, or a connection idle this long between
    /// requests, is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open TCP connections at most (more wait in the accept queue).
    pub max_connections: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/webhook".into(),
            secret_file: String::new(),
            allow_unauthenticated: false,
            archive_dir: PathBuf::from("/var/lib/magic-transit/webhooks"),
            max_body_bytes: 1_048_576,
            request_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// `[autowithdraw]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutowithdrawConfig {
    /// Cycle period.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long a prefix must be judged calm before it is withdrawn.
    #[serde(with = "humantime_serde")]
    pub calm_period: Duration,
    /// Never withdraw sooner than this after the advertisement.
    #[serde(with = "humantime_serde")]
    pub min_advertised: Duration,
    /// Widest analytics window judged by one query.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The most recent minutes of analytics are partial; they are not judged yet.
    #[serde(with = "humantime_serde")]
    pub analytics_delay: Duration,
    /// Windows before `advertised_modified_at + advertise_settle` never count as calm.
    #[serde(with = "humantime_serde")]
    pub advertise_settle: Duration,
    /// A window is an attack if its average dropped rate is at least this many packets/s …
    pub attack_min_pps: f64,
    /// … or at least this many Mbit/s.
    pub attack_min_mbps: f64,
    /// Mitigation systems whose drops count as attack traffic.
    pub mitigation_systems: Vec<String>,
    /// Executable run with the CIDR before a withdrawal; non-zero exit blocks it. Empty: none.
    pub pre_withdraw_command: String,
    /// Alert if Cloudflare still reports the prefix advertised this long after a withdrawal.
    #[serde(with = "humantime_serde")]
    pub withdraw_verify_after: Duration,
    /// Remind on Telegram while a prefix stays advertised longer than this.
    #[serde(with = "humantime_serde")]
    pub advertised_reminder: Duration,
    /// Decide and notify, but never call Cloudflare's PATCH.
    pub dry_run: bool,
    /// `/metrics` and `/healthz`.
    pub metrics_listen: SocketAddr,
}

impl Default for AutowithdrawConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            calm_period: Duration::from_secs(15 * 60),
            min_advertised: Duration::from_secs(15 * 60),
            window: Duration::from_secs(5 * 60),
            analytics_delay: Duration::from_secs(3 * 60),
            advertise_settle: Duration::from_secs(7 * 60),
            attack_min_pps: 1000.0,
            attack_min_mbps: 10.0,
            mitigation_systems: vec!["dosd".into(), "flowtrackd".into()],
            pre_withdraw_command: String::new(),
            withdraw_verify_after: Duration::from_secs(20 * 60),
            advertised_reminder: Duration::from_secs(6 * 3600),
            dry_run: false,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9102)),
        }
    }
}

/// `[network_analytics]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkAnalyticsConfig {
    /// Poll period.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How far back each poll looks; at least `interval` so no time falls between polls.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// MaxMind-format ASN database; empty: no enrichment.
    pub geoip_asn_db: String,
    /// MaxMind-format country database; empty: no enrichment.
    pub geoip_country_db: String,
    /// How often the GeoIP files are checked for a new version (`geoipupdate` replaces them);
    /// SIGHUP reloads them at once.
    #[serde(with = "humantime_serde")]
    pub geoip_check_interval: Duration,
    /// `/metrics` and `/healthz`.
    pub metrics_listen: SocketAddr,
}

impl Default for NetworkAnalyticsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5 * 60),
            lookback: Duration::from_secs(15 * 60),
            geoip_asn_db: String::new(),
            geoip_country_db: String::new(),
            geoip_check_interval: Duration::from_secs(60),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9103)),
        }
    }
}

/// `[telegram]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramConfig {
    /// `false`: messages are only logged.
    pub enabled: bool,
    /// Bot API base URL; tests point it at a fake.
    pub api_url: String,
    /// File holding the bot token (or env `MT_TELEGRAM_BOT_TOKEN`).
    pub bot_token_file: String,
    /// Chat (group or channel) receiving the messages.
    pub chat_id: String,
    /// Footer of every message.
    pub org_name: String,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            api_url: "https://api.telegram.org".into(),
            bot_token_file: String::new(),
            chat_id: String::new(),
            org_name: "SOC".into(),
        }
    }
}

/// `[dashboard]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Address the dashboard binds.
    pub listen: SocketAddr,
    /// Mark the session cookie `Secure` (sent over HTTPS only; browsers also accept it from
    /// `http://localhost`/`127.0.0.1`). Turn off only behind nothing but plain HTTP on a
    /// trusted network.
    pub secure_cookies: bool,
    /// How long a login lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Failed logins (per client address, and per user name from one address) before
    /// attempts are refused for `login_lockout`.
    pub login_max_failures: u32,
    /// How long failed logins are remembered and a locked-out login stays refused.
    #[serde(with = "humantime_serde")]
    pub login_lockout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (addresses or CIDRs). Behind a
    /// proxy that is not listed, every login comes from the proxy's address and shares one
    /// failure count.
    #[serde(deserialize_with = "de_proxies", serialize_with = "ser_display_vec")]
    pub trusted_proxies: Vec<IpNet>,
    /// A request header not complete within this time, or a connection idle this long between
    /// requests, is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open TCP connections at most (more wait in the accept queue).
    pub max_connections: usize,
    /// `[[dashboard.users]]`
    pub users: Vec<DashboardUser>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            secure_cookies: true,
            session_ttl: Duration::from_secs(12 * 3600),
            login_max_failures: 5,
            login_lockout: Duration::from_secs(15 * 60),
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 256,
            users: Vec::new(),
        }
    }
}

/// One dashboard user.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardUser {
    /// Login name.
    pub name: String,
    /// Argon2 PHC string (`$argon2id$…`).
    pub password_hash: String,
    /// What the user may do.
    pub role: DashboardRole,
}

impl fmt::Debug for DashboardUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DashboardUser")
            .field("name", &self.name)
            .field("password_hash", &"[REDACTED]")
            .field("role", &self.role)
            .finish()
    }
}

/// Dashboard roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DashboardRole {
    /// Reads everything, changes nothing.
    Viewer,
    /// May also pin, advertise and withdraw.
    Operator,
}

/// Secrets and the credentials directory as found in the environment at load time.
#[derive(Debug, Clone, Default)]
struct SecretSources {
    cloudflare_api_token: Option<SecretString>,
    webhook_secret: Option<SecretString>,
    telegram_bot_token: Option<SecretString>,
    credentials_directory: Option<PathBuf>,
}

/// Where a resolved secret came from, for `check-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// The dedicated environment variable.
    Env(&'static str),
    /// A file.
    File(PathBuf),
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "env {var}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

fn yes() -> bool {
    true
}

impl Config {
    /// The config path: `--config`, else `$MT_CONFIG`, else [`DEFAULT_CONFIG_PATH`].
    pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
        cli.map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
    }

    /// Loads the config for a binary: path from `--config`, `$MT_CONFIG` or the default; on any
    /// error prints one line naming the key and exits with status 2 (SPEC §3).
    pub fn load_or_exit(cli: Option<&Path>) -> Self {
        let path = Self::resolve_path(cli);
        match Self::load(&path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }

    /// Loads and validates `path` with the process environment's overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, process_env())
    }

    /// Loads and validates `path` with the given environment (tests pass their own instead of
    /// mutating the process's).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path, env)
    }

    /// Parses `text` (read from `origin`), applies `env` and validates.
    pub fn from_toml_str(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: message.trim().replace('\n', " "),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let env: BTreeMap<String, String> = env.into_iter().collect();
        apply_env_overrides(&mut table, &env)?;
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        config.secrets = SecretSources::from_env(&env);
        config.validate()?;
        Ok(config)
    }

    /// Checks every cross-field rule once, and normalises CIDRs.
    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.database.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("database.path", "must not be empty"));
        }
        positive("database.busy_timeout", self.database.busy_timeout)?;
        self.validate_cloudflare()?;
        self.validate_prefixes()?;
        self.validate_webhook()?;
        self.validate_autowithdraw()?;
        self.validate_network_analytics()?;
        self.validate_telegram()?;
        self.validate_dashboard()
    }

    fn validate_cloudflare(&self) -> Result<(), ConfigError> {
        let cf = &self.cloudflare;
        http_url("cloudflare.api_base_url", &cf.api_base_url)?;
        http_url("cloudflare.graphql_url", &cf.graphql_url)?;
        positive("cloudflare.request_timeout", cf.request_timeout)?;
        if !self.prefixes.is_empty() && cf.account_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "cloudflare.account_id",
                "must be set when [[prefixes]] are configured",
            ));
        }
        Ok(())
    }

    fn validate_prefixes(&mut self) -> Result<(), ConfigError> {
        for (i, p) in self.prefixes.iter_mut().enumerate() {
            p.cidr = p.cidr.trunc();
            for (key, value) in [
                ("prefix_id", &p.prefix_id),
                ("bgp_prefix_id", &p.bgp_prefix_id),
            ] {
                if value.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        format!("prefixes[{i}].{key}"),
                        format!("must be set for {}", p.cidr),
                    ));
                }
            }
        }
        for (i, a) in self.prefixes.iter().enumerate() {
            for (j, b) in self.prefixes.iter().enumerate().skip(i + 1) {
                if a.cidr.contains(&b.cidr) || b.cidr.contains(&a.cidr) {
                    return Err(ConfigError::invalid(
                        format!("prefixes[{j}].cidr"),
                        format!(
                            "{} overlaps prefixes[{i}].cidr {}; each address must belong to one prefix",
                            b.cidr, a.cidr
                        ),
                    ));
                }
                if a.bgp_prefix_id == b.bgp_prefix_id {
                    return Err(ConfigError::invalid(
                        format!("prefixes[{j}].bgp_prefix_id"),
                        format!("{:?} is also used by prefixes[{i}]", b.bgp_prefix_id),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_webhook(&self) -> Result<(), ConfigError> {
        let w = &self.webhook;
        if !w.path.starts_with('/') {
            return Err(ConfigError::invalid("webhook.path", "must start with '/'"));
        }
        if w.path == "/healthz" || w.path == "/metrics" {
            return Err(ConfigError::invalid(
                "webhook.path",
                "must not shadow /healthz or /metrics",
            ));
        }
        // What the router can take as one literal path (it would panic on a capture such as
        // "{id}" or "*rest", an empty segment, or more than one path).
        let literal = w.path.len() <= 256
            && !w.path.contains("//")
            && w.path[1..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c));
        if !literal {
            return Err(ConfigError::invalid(
                "webhook.path",
                "must be a literal path of at most 256 characters: letters, digits, '-', '.', '_', '~' and single '/' (no '{', '}', '*', spaces or empty segments)",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&w.max_body_bytes) {
            return Err(ConfigError::invalid(
                "webhook.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        positive("webhook.request_timeout", w.request_timeout)?;
        positive("webhook.header_read_timeout", w.header_read_timeout)?;
        connection_cap("webhook.max_connections", w.max_connections)
    }

    fn validate_autowithdraw(&self) -> Result<(), ConfigError> {
        let a = &self.autowithdraw;
        positive("autowithdraw.interval", a.interval)?;
        positive("autowithdraw.calm_period", a.calm_period)?;
        positive("autowithdraw.window", a.window)?;
        positive(
            "autowithdraw.withdraw_verify_after",
            a.withdraw_verify_after,
        )?;
        positive("autowithdraw.advertised_reminder", a.advertised_reminder)?;
        for (key, v) in [
            ("autowithdraw.attack_min_pps", a.attack_min_pps),
            ("autowithdraw.attack_min_mbps", a.attack_min_mbps),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::invalid(key, "must be a positive number"));
            }
        }
        if a.mitigation_systems.is_empty() {
            return Err(ConfigError::invalid(
                "autowithdraw.mitigation_systems",
                "must name at least one system (an empty list would judge every window calm)",
            ));
        }
        if let Some(i) = a
            .mitigation_systems
            .iter()
            .position(|s| s.trim().is_empty())
        {
            return Err(ConfigError::invalid(
                format!("autowithdraw.mitigation_systems[{i}]"),
                "must not be empty",
            ));
        }
        Ok(())
    }

    fn validate_network_analytics(&self) -> Result<(), ConfigError> {
        let n = &self.network_analytics;
        positive("network_analytics.interval", n.interval)?;
        positive(
            "network_analytics.geoip_check_interval",
            n.geoip_check_interval,
        )?;
        if n.lookback < n.interval {
            return Err(ConfigError::invalid(
                "network_analytics.lookback",
                format!(
                    "{} is shorter than network_analytics.interval {}; events between polls would never be fetched",
                    humantime::format_duration(n.lookback),
                    humantime::format_duration(n.interval)
                ),
            ));
        }
        Ok(())
    }

    fn validate_telegram(&self) -> Result<(), ConfigError> {
        let t = &self.telegram;
        http_url("telegram.api_url", &t.api_url)?;
        if t.enabled && t.chat_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "telegram.chat_id",
                "must be set when telegram.enabled = true",
            ));
        }
        Ok(())
    }

    fn validate_dashboard(&self) -> Result<(), ConfigError> {
        let d = &self.dashboard;
        positive("dashboard.session_ttl", d.session_ttl)?;
        positive("dashboard.login_lockout", d.login_lockout)?;
        positive("dashboard.header_read_timeout", d.header_read_timeout)?;
        connection_cap("dashboard.max_connections", d.max_connections)?;
        if d.login_max_failures == 0 {
            return Err(ConfigError::invalid(
                "dashboard.login_max_failures",
                "must be at least 1",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, u) in self.dashboard.users.iter().enumerate() {
            if u.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("dashboard.users[{i}].name"),
                    "must not be empty",
                ));
            }
            if !seen.insert(u.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("dashboard.users[{i}].name"),
                    format!("{:?} is listed twice", u.name),
                ));
            }
            if !u.password_hash.starts_with("$argon2") {
                return Err(ConfigError::invalid(
                    format!("dashboard.users[{i}].password_hash"),
                    "must be an argon2 PHC string ($argon2id$…)",
                ));
            }
        }
        Ok(())
    }

    /// The configured prefix containing `ip`, if any (prefixes never overlap).
    pub fn prefix_for(&self, ip: std::net::IpAddr) -> Option<&PrefixConfig> {
        self.prefixes.iter().find(|p| p.cidr.contains(&ip))
    }

    /// The Cloudflare API token: env `MT_CLOUDFLARE_API_TOKEN`, else `cloudflare.api_token_file`.
    pub fn cloudflare_api_token(&self) -> Result<(SecretString, SecretOrigin), ConfigError> {
        self.secret(
            "Cloudflare API token",
            CLOUDFLARE_TOKEN_ENV,
            self.secrets.cloudflare_api_token.as_ref(),
            "cloudflare.api_token_file",
            &self.cloudflare.api_token_file,
        )
    }

    /// The webhook shared secret: env `MT_WEBHOOK_SECRET`, else `webhook.secret_file`.
    pub fn webhook_secret(&self) -> Result<(SecretString, SecretOrigin), ConfigError> {
        self.secret(
            "webhook secret",
            WEBHOOK_SECRET_ENV,
            self.secrets.webhook_secret.as_ref(),
            "webhook.secret_file",
            &self.webhook.secret_file,
        )
    }

    /// The Telegram bot token: env `MT_TELEGRAM_BOT_TOKEN`, else `telegram.bot_token_file`.
    pub fn telegram_bot_token(&self) -> Result<(SecretString, SecretOrigin), ConfigError> {
        self.secret(
            "Telegram bot token",
            TELEGRAM_TOKEN_ENV,
            self.secrets.telegram_bot_token.as_ref(),
            "telegram.bot_token_file",
            &self.telegram.bot_token_file,
        )
    }

    fn secret(
        &self,
        name: &'static str,
        env: &'static str,
        from_env: Option<&SecretString>,
        key: &'static str,
        file: &str,
    ) -> Result<(SecretString, SecretOrigin), ConfigError> {
        if let Some(secret) = from_env {
            return Ok((secret.clone(), SecretOrigin::Env(env)));
        }
        if file.trim().is_empty() {
            return Err(ConfigError::MissingSecret { name, env, key });
        }
        let path = self.expand_credentials_path(key, file)?;
        let fail = |message: String| ConfigError::SecretFile {
            key,
            path: path.clone(),
            message,
        };
        let raw = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let value = raw.trim_end_matches(['\n', '\r']);
        if value.trim().is_empty() {
            return Err(fail("file is empty".into()));
        }
        Ok((
            SecretString::from(value.to_owned()),
            SecretOrigin::File(path),
        ))
    }

    /// Expands a leading `$CREDENTIALS_DIRECTORY` (or `${CREDENTIALS_DIRECTORY}`) so one config
    /// works under systemd `LoadCredential=`.
    fn expand_credentials_path(
        &self,
        key: &'static str,
        file: &str,
    ) -> Result<PathBuf, ConfigError> {
        let rest = file
            .strip_prefix("$CREDENTIALS_DIRECTORY")
            .or_else(|| file.strip_prefix("${CREDENTIALS_DIRECTORY}"));
        let Some(rest) = rest else {
            return Ok(PathBuf::from(file));
        };
        let dir = self.secrets.credentials_directory.as_ref().ok_or_else(|| {
            ConfigError::SecretFile {
                key,
                path: PathBuf::from(file),
                message: "$CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential=, or set it)".into(),
            }
        })?;
        Ok(dir.join(rest.trim_start_matches('/')))
    }

    /// The effective configuration as TOML, for `check-config`. Holds no secret values: the
    /// file only names where secrets live.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for user in &mut shown.dashboard.users {
            user.password_hash = "[REDACTED]".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

impl SecretSources {
    fn from_env(env: &BTreeMap<String, String>) -> Self {
        let secret = |name: &str| {
            env.get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| SecretString::from(v.trim_end_matches(['\n', '\r']).to_owned()))
        };
        Self {
            cloudflare_api_token: secret(CLOUDFLARE_TOKEN_ENV),
            webhook_secret: secret(WEBHOOK_SECRET_ENV),
            telegram_bot_token: secret(TELEGRAM_TOKEN_ENV),
            credentials_directory: env
                .get(CREDENTIALS_DIRECTORY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// The process environment, skipping variables that are not valid UTF-8.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Applies `MT_<SECTION>__<KEY>` variables to the parsed file. The target key's type is taken
/// from the defaults, so `MT_TELEGRAM__CHAT_ID=-100…` stays a string and
/// `MT_AUTOWITHDRAW__DRY_RUN=true` becomes a boolean. Unknown sections and keys are errors, and
/// so is any other `MT_*` variable: a misspelt override must not be silently ignored.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let defaults = match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    for (var, raw) in env {
        let Some(name) = var.strip_prefix("MT_") else {
            continue;
        };
        if var == CONFIG_ENV || SECRET_ENVS.contains(&var.as_str()) {
            continue;
        }
        let env_err = |message: String| ConfigError::Env {
            var: var.clone(),
            message,
        };
        let Some((section, key)) = name.split_once("__") else {
            return Err(env_err(
                "unknown variable; overrides are named MT_<SECTION>__<KEY> (double underscore)"
                    .into(),
            ));
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section == "prefixes" {
            return Err(env_err(
                "[[prefixes]] come from the config file only".into(),
            ));
        }
        let Some(toml::Value::Table(section_defaults)) = defaults.get(&section) else {
            return Err(env_err(format!("unknown config section [{section}]")));
        };
        let Some(default) = section_defaults.get(&key) else {
            return Err(env_err(format!("unknown config key {section}.{key}")));
        };
        let value = match default {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Boolean(_) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
                "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
                _ => return Err(env_err(format!("{raw:?} is not a boolean (true/false)"))),
            },
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim()
                    .parse()
                    .map_err(|_| env_err(format!("{raw:?} is not an integer")))?,
            ),
            toml::Value::Float(_) => toml::Value::Float(
                raw.trim()
                    .parse()
                    .map_err(|_| env_err(format!("{raw:?} is not a number")))?,
            ),
            _ => {
                return Err(env_err(format!(
                    "{section}.{key} is a list or table; set it in the config file"
                )));
            }
        };
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = section_table else {
            return Err(env_err(format!(
                "[{section}] in the config file is not a table"
            )));
        };
        section_table.insert(key, value);
    }
    Ok(())
}

fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than zero"));
    }
    Ok(())
}

/// A connection cap the units' `LimitNOFILE` (8192) stays above, with room for the database,
/// the outgoing clients and the log.
fn connection_cap(key: &str, n: usize) -> Result<(), ConfigError> {
    if !(1..=4096).contains(&n) {
        return Err(ConfigError::invalid(key, "must be between 1 and 4096"));
    }
    Ok(())
}

fn http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            key,
            format!("{value:?} is not an http(s) URL"),
        )),
        Err(e) => Err(ConfigError::invalid(key, format!("{value:?}: {e}"))),
    }
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.trim().parse::<IpNet>().map_err(|_| {
        format!("{s:?} is not a CIDR (expected e.g. \"203.0.113.0/24\" or \"2001:db8::/48\")")
    })
}

fn de_cidr<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    let s = String::deserialize(d)?;
    parse_cidr(&s).map_err(serde::de::Error::custom)
}

/// Trusted proxies may be written as single addresses or as CIDRs.
fn de_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| match s.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(IpNet::from(ip)),
            Err(_) => parse_cidr(s).map(|n| n.trunc()),
        })
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

fn ser_display<S: Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_display_vec<S: Serializer, T: fmt::Display>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

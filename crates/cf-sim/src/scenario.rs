//! What the simulator simulates: the account, its prefixes, and a traffic timeline whose times
//! are offsets from the simulator's start (negative offsets describe the past, so a test can
//! read an attack that "already happened" without waiting).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// A simulated account. Also the format of `cf-sim serve --scenario FILE` (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// The API token the REST and GraphQL endpoints accept (`Authorization: Bearer …`).
    pub token: String,
    /// The bot token the Telegram fake accepts (`/bot<token>/sendMessage`).
    pub telegram_token: String,
    /// The chats the bot is a member of. Empty: every well-formed chat id (an integer or an
    /// `@username`) is one. Otherwise any other id is answered as Telegram answers an unknown
    /// chat: 400 `Bad Request: chat not found`.
    pub telegram_chats: Vec<String>,
    /// Groups upgraded to supergroups, `(old id, new id)`: Telegram answers 400 `Bad Request:
    /// group chat was upgraded to a supergroup chat` with `parameters.migrate_to_chat_id`.
    pub telegram_migrated: Vec<(String, i64)>,
    /// Chats the bot was removed from: 403 `Forbidden: bot was kicked from the supergroup chat`.
    pub telegram_kicked: Vec<String>,
    /// The account id.
    pub account_id: String,
    /// Cloudflare refuses a withdrawal this soon after an advertisement, and a
    /// re-advertisement this soon after a withdrawal (15 minutes; shorten it for demos).
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// Width of one analytics bucket (`datetimeMinute` is its start): 60 s like Cloudflare,
    /// shorter for accelerated demos.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// Pipeline lag: buckets starting later than `now - lag` are not available yet.
    #[serde(with = "humantime_serde")]
    pub lag: Duration,
    /// Buckets in `[now - lag - partial, now - lag)` are reported at half their volume (the
    /// most recent minutes of Cloudflare's analytics are partial).
    #[serde(with = "humantime_serde")]
    pub partial: Duration,
    /// The `sampleInterval` dimension of every row (Cloudflare's adaptive sampling ratio).
    /// Sums are reported as estimates of the full traffic (already scaled up, as Cloudflare
    /// documents), whatever the interval.
    pub sample_interval: u32,
    /// Clean (passed) packets per second sent to the first address of every prefix, so data
    /// freshness is visible even when nothing is dropped.
    pub clean_pps: f64,
    /// The account's prefixes.
    pub prefixes: Vec<PrefixSpec>,
    /// Traffic timeline.
    pub traffic: Vec<TrafficSpec>,
    /// The `settings` node per dataset (`magicTransitNetworkAnalyticsAdaptiveGroups`,
    /// `dosdNetworkAnalyticsAdaptiveGroups`); a dataset not listed has the defaults. The
    /// simulator enforces them on queries as Cloudflare does.
    pub settings: BTreeMap<String, DatasetSettings>,
}

/// A dataset's access settings (Cloudflare's `Settings` node).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSettings {
    /// Available to the account.
    pub enabled: bool,
    /// Widest time range of one query.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Largest `limit`.
    pub max_page_size: u64,
    /// Most fields in one query node.
    pub max_number_of_fields: u64,
    /// How far back data can be queried.
    #[serde(with = "humantime_serde")]
    pub not_older_than: Duration,
    /// `availableFields`; `None`: every field the simulator serves.
    pub available_fields: Option<Vec<String>>,
}

impl Default for DatasetSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_duration: Duration::from_secs(7 * 86_400),
            max_page_size: 10_000,
            max_number_of_fields: 30,
            not_older_than: Duration::from_secs(32 * 86_400),
            available_fields: None,
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            token: "cf-sim-token".into(),
            telegram_token: "123456:cf-sim".into(),
            telegram_chats: Vec::new(),
            telegram_migrated: Vec::new(),
            telegram_kicked: Vec::new(),
            account_id: "4f3a9c2e81d64b7a9e0c5d1f2a3b4c5d".into(),
            hold: Duration::from_secs(15 * 60),
            bucket: Duration::from_secs(60),
            lag: Duration::from_secs(60),
            partial: Duration::from_secs(120),
            sample_interval: 1,
            clean_pps: 100.0,
            prefixes: Vec::new(),
            traffic: Vec::new(),
            settings: BTreeMap::new(),
        }
    }
}

/// One IP prefix with its BGP prefix (one each, as on-demand accounts have).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixSpec {
    /// IP prefix id.
    pub id: String,
    /// BGP prefix id.
    pub bgp_id: String,
    /// The prefix.
    pub cidr: IpNet,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Advertised at start.
    #[serde(default)]
    pub advertised: bool,
    /// Seconds before start when the advertisement last changed (default: long ago).
    #[serde(default = "long_ago")]
    pub changed_secs_ago: i64,
    /// Advertisement locked.
    #[serde(default)]
    pub locked: bool,
}

fn long_ago() -> i64 {
    86_400
}

/// Traffic to one destination from `from_secs` to `to_secs` (offsets from start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSpec {
    /// Destination address.
    pub destination: IpAddr,
    /// `dosd`, `flowtrackd`, `magic-firewall` (dropped) or `""` (clean, passed).
    pub system: String,
    /// Start offset in seconds (may be negative).
    pub from_secs: i64,
    /// End offset in seconds (exclusive).
    pub to_secs: i64,
    /// Packets per second.
    pub pps: f64,
    /// Megabits per second.
    pub mbps: f64,
    /// dosd attack id.
    #[serde(default)]
    pub attack_id: Option<String>,
    /// Attack vector.
    #[serde(default)]
    pub vector: Option<String>,
    /// Distinct source addresses per bucket in the dosd dataset.
    #[serde(default = "one")]
    pub sources: u32,
    /// Destination port.
    #[serde(default)]
    pub port: u16,
    /// Protocol name.
    #[serde(default = "udp")]
    pub protocol: String,
}

fn one() -> u32 {
    1
}

fn udp() -> String {
    "UDP".into()
}

impl TrafficSpec {
    /// A dosd-mitigated attack on `destination` from `from_secs` to `to_secs`.
    pub fn attack(destination: IpAddr, from_secs: i64, to_secs: i64, pps: f64, mbps: f64) -> Self {
        Self {
            destination,
            system: "dosd".into(),
            from_secs,
            to_secs,
            pps,
            mbps,
            attack_id: Some(format!("sim-{destination}-{from_secs}")),
            vector: Some("UDP Flood".into()),
            sources: 1,
            port: 53,
            protocol: "UDP".into(),
        }
    }

    /// The same traffic counted by another mitigation system.
    pub fn by(mut self, system: &str) -> Self {
        self.system = system.into();
        self
    }

    /// With `n` distinct sources per bucket in the dosd dataset.
    pub fn sources(mut self, n: u32) -> Self {
        self.sources = n.max(1);
        self
    }
}

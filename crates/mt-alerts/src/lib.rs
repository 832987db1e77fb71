//! What a webhook is (SPEC §6): a pure function of the parsed body, the configured prefixes and
//! the reception time. Parsing is lenient, as the fixtures' README asks: every `data` field may
//! be missing, numbers may arrive as numeric strings, unknown fields are ignored, unknown alert
//! types are kept.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use mt_common::config::Config;
use mt_store::ActionTaken;
use serde_json::{Map, Value};

/// Alert types that report a DDoS attack with START/END.
const ATTACK_TYPES: &[&str] = &[
    "advanced_ddos_attack_l4_alert",
    "dos_attack_l4",
    "advanced_ddos_attack_l7_alert",
    "dos_attack_l7",
    "fbm_volumetric_attack",
    "fbm_dosd_attack",
];

/// Network Flow (MNM) alerts: Cloudflare only notifies, it does not mitigate by itself.
const ALERT_ONLY_TYPES: &[&str] = &["fbm_volumetric_attack", "fbm_dosd_attack"];

/// Alert types counted by name in metrics; anything else is counted as `other`.
pub const KNOWN_TYPES: &[&str] = &[
    "advanced_ddos_attack_l4_alert",
    "dos_attack_l4",
    "advanced_ddos_attack_l7_alert",
    "dos_attack_l7",
    "fbm_volumetric_attack",
    "fbm_dosd_attack",
    "fbm_auto_advertisement",
    "magic_tunnel_health_check_event",
];

/// Keys of `data` that may carry the correlation id, in the original suite's order.
const ALERT_ID_KEYS: &[&str] = &[
    "attack_id",
    "alert_id",
    "incident_id",
    "tunnel_id",
    "health_check_id",
];

/// Deepest nesting of arrays and objects accepted in a body (Cloudflare's are 3 deep).
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest number literal accepted in a body (a 64-bit integer or a float with exponent is
/// well under it).
pub const MAX_NUMBER_CHARS: usize = 40;

/// Checks a body's shape before it is parsed, in one pass over its bytes: nesting at most
/// [`MAX_JSON_DEPTH`], number literals at most [`MAX_NUMBER_CHARS`]. A body that fails is
/// refused (400) before any other work; one that passes may still be invalid JSON, which the
/// parser then reports.
pub fn check_shape(raw: &[u8]) -> Result<(), String> {
    let (mut depth, mut number, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in raw {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            number += 1;
            if number > MAX_NUMBER_CHARS {
                return Err(format!(
                    "a number longer than {MAX_NUMBER_CHARS} characters"
                ));
            }
            continue;
        }
        number = 0;
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!("nesting deeper than {MAX_JSON_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Keys whose id names an object (a tunnel, a health check) rather than one event.
const OBJECT_ID_KEYS: &[&str] = &["tunnel_id", "health_check_id"];

/// The first 16 hex characters of the SHA-256 of the parsed body, re-serialised, so a
/// redelivery of the same body gets the same event id.
fn body_hash(body: &Map<String, Value>) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&canonical)[..8])
}

/// A classified webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    /// `alert_type`, if any.
    pub alert_type: Option<String>,
    /// `alert_event`, if any.
    pub event_state: Option<String>,
    /// Correlation id (SPEC §6 derivation).
    pub alert_id: String,
    /// True when `alert_id` is the `webhook-<time>` fallback (no id in the body).
    pub alert_id_synthetic: bool,
    /// For a tunnel or health-check event: the object's bare id (`alert_id` is then
    /// `<id>@<ts>`, SPEC §6).
    pub object_id: Option<String>,
    /// Top-level `name`.
    pub name: Option<String>,
    /// Top-level `text`.
    pub text: Option<String>,
    /// Top-level `policy_id`.
    pub policy_id: Option<String>,
    /// Top-level `policy_name`.
    pub policy_name: Option<String>,
    /// `data.target_ip`, as given.
    pub target_ip: Option<String>,
    /// The configured prefix the webhook concerns (canonical CIDR).
    pub prefix: Option<String>,
    /// `data.target_port`.
    pub target_port: Option<i64>,
    /// `data.protocol`.
    pub protocol: Option<String>,
    /// `data.attack_vector` (or `attack_type`).
    pub attack_vector: Option<String>,
    /// `data.packets_per_second`, as text.
    pub packets_per_second: Option<String>,
    /// `data.megabits_per_second`, as text.
    pub megabits_per_second: Option<String>,
    /// `data.severity`.
    pub severity: Option<String>,
    /// What kind of alert it is.
    pub kind: Kind,
}

/// The kinds of webhook the receiver acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Cloudflare's "Save and Test" (no `alert_type`): stored, no attack rows.
    Test,
    /// A DDoS attack alert.
    Attack {
        /// START or END.
        phase: Phase,
        /// `action_taken` of a START row.
        start_action: ActionTaken,
    },
    /// `fbm_auto_advertisement`: Cloudflare advertised prefixes.
    AutoAdvertisement {
        /// The configured prefixes the alert lists, each once (an entry equal to or inside a
        /// configured prefix counts for it; advertised wins over any other status).
        prefixes: Vec<ListedPrefix>,
        /// Entries that are not a configured prefix (not a CIDR, or outside every one): kept in
        /// the raw body and named in the message, never turned into rows.
        ignored: Ignored,
    },
    /// `magic_tunnel_health_check_event`.
    TunnelHealth {
        /// END event (recovered).
        ended: bool,
        /// Tunnel name or id.
        tunnel: Option<String>,
        /// Reported status.
        state: Option<String>,
    },
    /// Any other alert type: stored as-is and notified generically.
    Other,
}

/// START or END of an attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `ALERT_STATE_EVENT_START`, or no/unknown state (an alert means an attack: when in
    /// doubt, it blocks withdrawal rather than allowing it).
    Start,
    /// `ALERT_STATE_EVENT_END`.
    End,
}

/// One prefix of an auto-advertisement alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPrefix {
    /// The prefix as the alert wrote it.
    pub listed: String,
    /// Its status (Advertised, Already Advertised, Delayed, …).
    pub status: String,
    /// The configured prefix it is (canonical CIDR), if any.
    pub configured: Option<String>,
}

impl Classified {
    /// The `webhook_events` row of this alert. The duplicate rule lives here so the receiver
    /// and `mtctl import-webhooks` can never disagree: by `(alert_id, event_state)`, or by the
    /// body when the alert has no id of its own or no state (SPEC §6).
    pub fn webhook_event(
        &self,
        received_at: DateTime<Utc>,
        source_ip: Option<String>,
        action_taken: &str,
        payload: String,
    ) -> mt_store::NewWebhookEvent {
        mt_store::NewWebhookEvent {
            received_at,
            alert_type: self.alert_type.clone(),
            event_state: self.event_state.clone(),
            alert_id: Some(self.alert_id.clone()),
            policy_id: self.policy_id.clone(),
            policy_name: self.policy_name.clone(),
            target_ip: self.target_ip.clone(),
            target_prefix: self.prefix.clone(),
            source_ip,
            action_taken: action_taken.to_owned(),
            payload,
            dedup: if self.alert_id_synthetic || self.event_state.is_none() {
                mt_store::WebhookDedup::Body
            } else if let Some(bare_id) = &self.object_id {
                mt_store::WebhookDedup::ObjectEvent {
                    bare_id: bare_id.clone(),
                }
            } else {
                mt_store::WebhookDedup::AlertAndState
            },
        }
    }
}

impl ListedPrefix {
    /// Whether the status says Cloudflare advertises the prefix now.
    pub fn is_advertised(&self) -> bool {
        matches!(
            self.status.trim().to_ascii_lowercase().as_str(),
            "advertised" | "already advertised"
        )
    }
}

/// Classifies a webhook body received at `received_at`.
pub fn classify(
    body: &Map<String, Value>,
    config: &Config,
    received_at: DateTime<Utc>,
) -> Classified {
    let empty = Map::new();
    let data = body
        .get("data")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let top = |k: &str| body.get(k).and_then(text);
    let field = |k: &str| data.get(k).and_then(text);

    let alert_type = top("alert_type");
    let event_state = top("alert_event");
    let found = ALERT_ID_KEYS
        .iter()
        .find_map(|k| field(k).map(|id| (*k, id)))
        .or_else(|| top("alert_correlation_id").map(|id| ("alert_correlation_id", id)));
    let alert_id_synthetic = found.is_none();
    // A tunnel or health-check id names the object, not the event: every state change of it
    // is kept by appending the envelope's `ts` (or a hash of the body), SPEC §6.
    let object_id = found
        .as_ref()
        .filter(|(key, _)| OBJECT_ID_KEYS.contains(key))
        .map(|(_, id)| id.clone());
    let alert_id = match (found, &object_id) {
        (Some((_, id)), Some(_)) => {
            let event = top("ts").unwrap_or_else(|| body_hash(body));
            format!("{id}@{event}")
        }
        (Some((_, id)), None) => id,
        (None, _) => format!("webhook-{}", received_at.format("%Y%m%d%H%M%S%6f")),
    };

    let target_ip = field("target_ip");
    let prefix = target_ip
        .as_deref()
        .and_then(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .and_then(|ip| config.prefix_for(ip))
        .map(|p| p.cidr.to_string())
        .or_else(|| {
            listed_prefixes(data)
                .iter()
                .find_map(|(cidr, _)| configured_prefix(config, cidr))
        });

    let kind = match alert_type.as_deref() {
        None => Kind::Test,
        Some(t) if ATTACK_TYPES.contains(&t) => Kind::Attack {
            phase: match event_state.as_deref() {
                Some("ALERT_STATE_EVENT_END") => Phase::End,
                _ => Phase::Start,
            },
            start_action: if ALERT_ONLY_TYPES.contains(&t) {
                ActionTaken::Notified
            } else {
                ActionTaken::Mitigating
            },
        },
        Some("fbm_auto_advertisement") => {
            let (prefixes, ignored) = advertised_prefixes(config, listed_prefixes(data));
            Kind::AutoAdvertisement { prefixes, ignored }
        }
        Some("magic_tunnel_health_check_event") => Kind::TunnelHealth {
            ended: event_state.as_deref() == Some("ALERT_STATE_EVENT_END"),
            tunnel: field("tunnel_name").or_else(|| field("tunnel_id")),
            state: field("tunnel_status").or_else(|| field("new_status")),
        },
        Some(_) => Kind::Other,
    };

    Classified {
        alert_type,
        event_state,
        alert_id,
        alert_id_synthetic,
        object_id,
        name: top("name"),
        text: top("text"),
        policy_id: top("policy_id"),
        policy_name: top("policy_name"),
        target_ip,
        prefix,
        target_port: data.get("target_port").and_then(integer),
        protocol: field("protocol"),
        attack_vector: field("attack_vector").or_else(|| field("attack_type")),
        packets_per_second: field("packets_per_second"),
        megabits_per_second: field("megabits_per_second"),
        severity: field("severity"),
        kind,
    }
}

/// Prefixes listed in `data.prefix`, `data.prefixes` (strings or `{prefix, status}` objects)
/// and `data.advertise_status` (the original suite's key), with their status if given.
fn listed_prefixes(data: &Map<String, Value>) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    if let Some(p) = data.get("prefix").and_then(text) {
        out.push((p, None));
    }
    for key in ["prefixes", "advertise_status"] {
        for item in data
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match item {
                Value::Object(o) => {
                    if let Some(p) = o.get("prefix").and_then(text) {
                        out.push((p, o.get("status").and_then(text)));
                    }
                }
                other => {
                    if let Some(p) = text(other) {
                        out.push((p, None));
                    }
                }
            }
        }
    }
    out
}

/// Entries of an auto-advertisement that name no configured prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignored {
    /// The first [`MAX_NAMED_IGNORED`] of them, as listed (cut to 64 characters).
    pub named: Vec<String>,
    /// How many there were in all.
    pub total: usize,
}

/// Ignored entries named in a message; the rest are counted ("… and N more").
pub const MAX_NAMED_IGNORED: usize = 10;

/// Reduces an auto-advertisement's entries to one per configured prefix (so a body listing
/// thousands of entries writes at most one row per configured prefix) and the rest.
pub fn advertised_prefixes(
    config: &Config,
    listed: Vec<(String, Option<String>)>,
) -> (Vec<ListedPrefix>, Ignored) {
    let mut prefixes: Vec<ListedPrefix> = Vec::new();
    let mut ignored = Ignored::default();
    for (entry, status) in listed {
        let status = status.unwrap_or_else(|| "unknown".into());
        let Some(configured) = configured_prefix(config, &entry) else {
            ignored.total += 1;
            if ignored.named.len() < MAX_NAMED_IGNORED {
                ignored.named.push(entry.chars().take(64).collect());
            }
            continue;
        };
        let candidate = ListedPrefix {
            listed: entry,
            status,
            configured: Some(configured),
        };
        match prefixes
            .iter_mut()
            .find(|p| p.configured == candidate.configured)
        {
            Some(known) if !known.is_advertised() && candidate.is_advertised() => {
                *known = candidate;
            }
            Some(_) => {}
            None => prefixes.push(candidate),
        }
    }
    (prefixes, ignored)
}

/// The configured prefix equal to or containing `cidr`, canonical.
fn configured_prefix(config: &Config, cidr: &str) -> Option<String> {
    let net: IpNet = cidr.trim().parse().ok()?;
    config
        .prefixes
        .iter()
        .find(|p| p.cidr == net.trunc() || p.cidr.contains(&net))
        .map(|p| p.cidr.to_string())
}

/// A scalar as text: strings (trimmed, non-empty), numbers in decimal, booleans.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An integer given as a number or a numeric string.
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn config() -> Config {
        let text = r#"
[cloudflare]
account_id = "acc"
[[prefixes]]
cidr = "203.0.113.0/24"
prefix_id = "p1"
bgp_prefix_id = "b1"
[[prefixes]]
cidr = "2001:db8:1000::/48"
prefix_id = "p2"
bgp_prefix_id = "b2"
[telegram]
enabled = false
"#;
        Config::from_toml_str(text, std::path::Path::new("t.toml"), Vec::new()).unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 19, 0, 15, 0).unwrap()
            + chrono::Duration::microseconds(123456)
    }

    fn run(v: Value) -> Classified {
        classify(v.as_object().unwrap(), &config(), at())
    }

    #[test]
    fn alert_id_follows_the_original_rule() {
        assert_eq!(
            run(json!({"alert_type": "x", "data": {"attack_id": "a1", "alert_id": "b"}})).alert_id,
            "a1"
        );
        assert_eq!(
            run(json!({"alert_type": "x", "data": {"attack_id": "", "incident_id": "i9"}}))
                .alert_id,
            "i9"
        );
        // A tunnel or health check names the object: the event is `<id>@<ts>`.
        let tunnel = run(json!({"alert_type": "x", "ts": 1741961100, "data": {"tunnel_id": 42}}));
        assert_eq!(tunnel.alert_id, "42@1741961100");
        assert_eq!(tunnel.object_id.as_deref(), Some("42"));
        let check = run(json!({"alert_type": "x", "data": {"health_check_id": "hc"}}));
        assert!(check.alert_id.starts_with("hc@") && check.alert_id.len() == "hc@".len() + 16);
        assert_eq!(
            check.alert_id,
            run(json!({"alert_type": "x", "data": {"health_check_id": "hc"}})).alert_id,
            "without ts, a redelivery of the same body gets the same id"
        );
        assert_ne!(
            check.alert_id,
            run(json!({"alert_type": "x", "data": {"health_check_id": "hc", "x": 1}})).alert_id
        );
        assert_eq!(
            run(json!({"alert_type": "x", "data": {"attack_id": "a", "tunnel_id": 42}})).object_id,
            None,
            "an attack id comes first and names the event"
        );
        let c = run(json!({"alert_type": "x", "alert_correlation_id": "corr", "data": {}}));
        assert_eq!((c.alert_id.as_str(), c.alert_id_synthetic), ("corr", false));
        let c = run(json!({"text": "Hello World!"}));
        assert_eq!(c.alert_id, "webhook-20260119001500123456");
        assert!(c.alert_id_synthetic);
        assert_eq!(c.kind, Kind::Test);
    }

    #[test]
    fn targets_map_to_configured_prefixes_v4_and_v6() {
        let c = run(json!({"alert_type": "dos_attack_l4", "data": {"target_ip": "203.0.113.77"}}));
        assert_eq!(c.prefix.as_deref(), Some("203.0.113.0/24"));
        let c = run(
            json!({"alert_type": "dos_attack_l4", "data": {"target_ip": "2001:db8:1000:ffff::1"}}),
        );
        assert_eq!(c.prefix.as_deref(), Some("2001:db8:1000::/48"));
        let c = run(json!({"alert_type": "dos_attack_l4", "data": {"target_ip": "203.0.114.1"}}));
        assert_eq!(c.prefix, None, "neighbouring prefix");
        let c = run(
            json!({"alert_type": "fbm_volumetric_attack", "data": {"prefixes": ["203.0.113.0/24"]}}),
        );
        assert_eq!(c.prefix.as_deref(), Some("203.0.113.0/24"));
        let c = run(
            json!({"alert_type": "fbm_dosd_attack", "data": {"advertise_status": [{"prefix": "203.0.113.128/25", "status": "advertised"}]}}),
        );
        assert_eq!(
            c.prefix.as_deref(),
            Some("203.0.113.0/24"),
            "a more specific CIDR inside a configured prefix"
        );
    }

    #[test]
    fn numbers_or_numeric_strings() {
        let c = run(
            json!({"alert_type": "dos_attack_l4", "data": {"target_port": "443", "packets_per_second": 1840000, "megabits_per_second": "3500"}}),
        );
        assert_eq!(c.target_port, Some(443));
        assert_eq!(c.packets_per_second.as_deref(), Some("1840000"));
        assert_eq!(c.megabits_per_second.as_deref(), Some("3500"));
        let c = run(json!({"alert_type": "dos_attack_l4", "data": {"target_port": "https"}}));
        assert_eq!(c.target_port, None);
    }

    #[test]
    fn attack_phases_and_actions() {
        let c =
            run(json!({"alert_type": "fbm_dosd_attack", "alert_event": "ALERT_STATE_EVENT_START"}));
        assert_eq!(
            c.kind,
            Kind::Attack {
                phase: Phase::Start,
                start_action: ActionTaken::Notified
            }
        );
        let c = run(
            json!({"alert_type": "advanced_ddos_attack_l4_alert", "alert_event": "ALERT_STATE_EVENT_END"}),
        );
        assert_eq!(
            c.kind,
            Kind::Attack {
                phase: Phase::End,
                start_action: ActionTaken::Mitigating
            }
        );
        let c = run(json!({"alert_type": "dos_attack_l4"}));
        assert!(
            matches!(
                c.kind,
                Kind::Attack {
                    phase: Phase::Start,
                    ..
                }
            ),
            "no state: START"
        );
        assert_eq!(
            run(json!({"alert_type": "bgp_hijack_notification"})).kind,
            Kind::Other
        );
        assert_eq!(run(json!({"alert_type": 7, "data": 5})).kind, Kind::Other);
    }
}

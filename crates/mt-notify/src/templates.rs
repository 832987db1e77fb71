//! Message templates (SPEC §10), modelled on the original suite's: a header, emoji sections, and
//! the configured organisation in the footer. Each kind is a typed event rendered by a pure
//! function to MarkdownV2; every interpolated value goes through [`escape`] or
//! [`escape_code`], and is cut to a sane length first, so no value can break a message or push
//! one line past Telegram's limit.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::markdown::{escape, escape_code};

/// Longest interpolated value, in characters (longer ones end in "…").
const MAX_VALUE_CHARS: usize = 512;
/// Longest free text (an unknown alert's `text`), in characters.
const MAX_TEXT_CHARS: usize = 3000;
/// Rows shown in each "top N" section of a summary.
const TOP_N: usize = 5;

/// Delivery class: lower is sent first. Event messages keep their chronological order; only
/// summaries wait behind them (withdrawal, failure and blind alerts go before summaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Attack, advertisement, withdrawal, failure, blind and tunnel messages.
    Event = 0,
    /// Network-analytics summaries.
    Summary = 1,
}

/// A DDoS alert webhook (START or END).
#[derive(Debug, Clone, Default)]
pub struct AttackAlert {
    /// Cloudflare alert type, e.g. `advanced_ddos_attack_l4_alert`.
    pub alert_type: Option<String>,
    /// The alert's human name (`name` of the webhook).
    pub alert_name: Option<String>,
    /// Cloudflare attack id.
    pub attack_id: Option<String>,
    /// Policy name.
    pub policy_name: Option<String>,
    /// Configured prefix the target belongs to.
    pub prefix: Option<String>,
    /// Target IP.
    pub target_ip: Option<String>,
    /// Target port.
    pub target_port: Option<i64>,
    /// Protocol.
    pub protocol: Option<String>,
    /// Attack vector.
    pub attack_vector: Option<String>,
    /// Packets per second (as received).
    pub packets_per_second: Option<String>,
    /// Megabits per second (as received).
    pub megabits_per_second: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// When it was received.
    pub at: DateTime<Utc>,
    /// Whether the prefix is currently advertised by Cloudflare.
    pub prefix_state: PrefixState,
}

/// What is known of a prefix's advertisement when an alert arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PrefixState {
    /// Not known (no judgement yet, or the target maps to no configured prefix).
    #[default]
    Unknown,
    /// Cloudflare advertises it: traffic is scrubbed.
    Advertised,
    /// Withdrawn: traffic reaches the origin directly. Cloudflare refuses a re-advertisement
    /// until the given time (15 minutes after the withdrawal), when known.
    Withdrawn {
        /// Earliest re-advertisement.
        readvertise_allowed_at: Option<DateTime<Utc>>,
    },
}

/// An `fbm_auto_advertisement` webhook.
#[derive(Debug, Clone, Default)]
pub struct AutoAdvertisement {
    /// `(prefix, status)` pairs as Cloudflare reported them (Advertised, Already Advertised,
    /// Delayed, Locked, Could not Advertise, Error).
    pub prefixes: Vec<(String, String)>,
    /// The first few listed entries that are not configured prefixes (at most 10 are named).
    pub not_configured: Vec<String>,
    /// How many entries were not configured prefixes in all.
    pub not_configured_total: usize,
    /// Policy name.
    pub policy_name: Option<String>,
    /// When it was received.
    pub at: DateTime<Utc>,
}

/// A `magic_tunnel_health_check_event` webhook.
#[derive(Debug, Clone, Default)]
pub struct TunnelHealth {
    /// Tunnel name (or id).
    pub tunnel: Option<String>,
    /// Reported state, e.g. "down", "degraded", "healthy".
    pub state: Option<String>,
    /// `true` for an END event (recovered).
    pub ended: bool,
    /// Alert text.
    pub text: Option<String>,
    /// When it was received.
    pub at: DateTime<Utc>,
}

/// How a withdrawal was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithdrawKind {
    /// Calm for the configured period (autowithdraw).
    Automatic,
    /// A `pending_withdrawals` request came due.
    Scheduled,
    /// An operator.
    Manual,
}

impl WithdrawKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Automatic => "Automatic (calm period elapsed)",
            Self::Scheduled => "Scheduled request",
            Self::Manual => "Manual",
        }
    }
}

/// A prefix was withdrawn.
#[derive(Debug, Clone)]
pub struct WithdrawalSuccess {
    /// The prefix.
    pub prefix: String,
    /// How it was decided.
    pub kind: WithdrawKind,
    /// When.
    pub withdrawn_at: DateTime<Utc>,
    /// How long it had been calm.
    pub calm_for: Option<Duration>,
    /// How long it had been advertised.
    pub advertised_for: Option<Duration>,
    /// Peak dropped packets/s of the incident.
    pub peak_pps: Option<f64>,
    /// Peak dropped Mbit/s of the incident.
    pub peak_mbps: Option<f64>,
    /// Mitigation systems that dropped traffic.
    pub mitigation_systems: Option<String>,
    /// Who: "autowithdraw" or the operator's name.
    pub operator: String,
}

/// A withdrawal attempt failed (one message per prefix per incident).
#[derive(Debug, Clone)]
pub struct WithdrawalFailure {
    /// The prefix.
    pub prefix: String,
    /// How it was decided.
    pub kind: WithdrawKind,
    /// The error, as Cloudflare or the network reported it.
    pub error: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it will be tried again, if it will.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it failed.
    pub at: DateTime<Utc>,
}

/// Dry run: what would have been withdrawn.
#[derive(Debug, Clone)]
pub struct WouldWithdraw {
    /// The prefix.
    pub prefix: String,
    /// How long it has been calm.
    pub calm_for: Option<Duration>,
    /// When it was decided.
    pub at: DateTime<Utc>,
}

/// Telemetry has been unknown for longer than the calm period: nothing will be withdrawn.
#[derive(Debug, Clone)]
pub struct TelemetryBlind {
    /// Advertised prefixes affected.
    pub prefixes: Vec<String>,
    /// Since when the data could not be judged.
    pub since: DateTime<Utc>,
    /// Why (GraphQL errors, rate limit, pipeline lag, clock skew…).
    pub reason: String,
}

/// Telemetry is back after a blind episode.
#[derive(Debug, Clone)]
pub struct TelemetryRecovered {
    /// Prefixes affected.
    pub prefixes: Vec<String>,
    /// How long it was blind.
    pub blind_for: Duration,
    /// When it recovered.
    pub at: DateTime<Utc>,
}

/// One poll's new network-analytics events, summarised.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsSummary {
    /// Start of the polled window.
    pub from: DateTime<Utc>,
    /// End of the polled window.
    pub to: DateTime<Utc>,
    /// New events stored.
    pub new_events: u64,
    /// Distinct attack ids (first few).
    pub attack_ids: Vec<String>,
    /// `(vector, packets)`, largest first.
    pub vectors: Vec<(String, u64)>,
    /// `(destination, packets)`, largest first.
    pub targets: Vec<(String, u64)>,
    /// `(source ASN label, packets)`, largest first.
    pub source_asns: Vec<(String, u64)>,
    /// `(country code, packets)`, largest first.
    pub source_countries: Vec<(String, u64)>,
    /// Dropped packets in the new events.
    pub total_packets: u64,
    /// Dropped megabits in the new events.
    pub total_megabits: f64,
}

/// The independent watchdog (run by the analytics daemon): autowithdraw's judgements are older
/// than three of its intervals while a prefix is advertised, so nothing is being withdrawn.
#[derive(Debug, Clone)]
pub struct AutowithdrawStale {
    /// Newest judgement time, if there ever was one.
    pub last_judgement: Option<DateTime<Utc>>,
    /// The advertised prefixes waiting for it.
    pub advertised: Vec<String>,
    /// The staleness threshold (three autowithdraw intervals).
    pub threshold: Duration,
    /// When it was noticed.
    pub at: DateTime<Utc>,
}

/// autowithdraw judges again after a stale episode.
#[derive(Debug, Clone)]
pub struct AutowithdrawRecovered {
    /// How long its judgements were stale.
    pub stale_for: Duration,
    /// When it recovered.
    pub at: DateTime<Utc>,
}

/// Something an operator must look at (a config that does not match the account, an advertised
/// prefix nobody manages, a refused API token, a withdrawal Cloudflare did not carry out, a
/// prefix advertised for long).
#[derive(Debug, Clone)]
pub struct OperatorAlert {
    /// What it is about, e.g. "CONFIG DOES NOT MATCH THE ACCOUNT".
    pub title: String,
    /// The prefix concerned, if one.
    pub prefix: Option<String>,
    /// Details.
    pub details: String,
    /// What is (not) done about it.
    pub consequence: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl OperatorAlert {
    /// A Cloudflare analytics dataset became unusable (`Some(why)`: disabled, a queried field
    /// missing) or usable again (`None`); `consequence` says what the daemon does meanwhile.
    pub fn dataset(
        dataset: &str,
        unusable: Option<&str>,
        consequence: &str,
        at: DateTime<Utc>,
    ) -> Self {
        match unusable {
            Some(why) => Self {
                title: "Cloudflare analytics dataset unusable".into(),
                prefix: None,
                details: format!("{dataset}: {why}"),
                consequence: format!(
                    "{consequence} until this is fixed (check the account's plan and the API token: `mtctl cloudflare check`)"
                ),
                at,
            },
            None => Self {
                title: "Cloudflare analytics dataset usable again".into(),
                prefix: None,
                details: dataset.to_owned(),
                consequence: "back to normal".into(),
                at,
            },
        }
    }
}

/// An operator advertised a prefix by hand (`mtctl advertise`, the dashboard).
#[derive(Debug, Clone)]
pub struct ManualAdvertisement {
    /// The prefix.
    pub prefix: String,
    /// Who.
    pub operator: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// `mtctl telegram test`: proves the bot can post to the configured chat.
#[derive(Debug, Clone)]
pub struct TestMessage {
    /// Who ran the test.
    pub operator: String,
    /// The host it ran on.
    pub host: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// An alert of a type without its own template (kept and notified generically).
#[derive(Debug, Clone, Default)]
pub struct GenericAlert {
    /// Cloudflare alert type, if any.
    pub alert_type: Option<String>,
    /// The alert's name.
    pub name: Option<String>,
    /// The alert's text.
    pub text: Option<String>,
    /// Policy name.
    pub policy_name: Option<String>,
    /// Event state, if any.
    pub event_state: Option<String>,
    /// When it was received.
    pub at: DateTime<Utc>,
}

/// Every message the suite sends.
#[derive(Debug, Clone)]
pub enum Message {
    /// DDoS attack started.
    AttackStart(AttackAlert),
    /// DDoS attack ended.
    AttackEnd(AttackAlert),
    /// Cloudflare auto-advertised prefixes.
    AutoAdvertisement(AutoAdvertisement),
    /// Tunnel health changed.
    TunnelHealth(TunnelHealth),
    /// A prefix was withdrawn.
    WithdrawalSuccess(WithdrawalSuccess),
    /// A withdrawal failed.
    WithdrawalFailure(WithdrawalFailure),
    /// Dry run: a prefix would have been withdrawn.
    WouldWithdraw(WouldWithdraw),
    /// Telemetry blind for too long.
    TelemetryBlind(TelemetryBlind),
    /// Telemetry recovered.
    TelemetryRecovered(TelemetryRecovered),
    /// Network-analytics summary.
    AnalyticsSummary(AnalyticsSummary),
    /// autowithdraw stopped judging while prefixes are advertised.
    AutowithdrawStale(AutowithdrawStale),
    /// autowithdraw judges again.
    AutowithdrawRecovered(AutowithdrawRecovered),
    /// An operator advertised a prefix.
    ManualAdvertisement(ManualAdvertisement),
    /// Something an operator must look at.
    OperatorAlert(OperatorAlert),
    /// Any other alert.
    Generic(GenericAlert),
    /// `mtctl telegram test`.
    Test(TestMessage),
}

impl Message {
    /// Stable name of the kind (stored with the queued message, used in metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AttackStart(_) => "attack_start",
            Self::AttackEnd(_) => "attack_end",
            Self::AutoAdvertisement(_) => "auto_advertisement",
            Self::TunnelHealth(_) => "tunnel_health",
            Self::WithdrawalSuccess(_) => "withdrawal_success",
            Self::WithdrawalFailure(_) => "withdrawal_failure",
            Self::WouldWithdraw(_) => "would_withdraw",
            Self::TelemetryBlind(_) => "telemetry_blind",
            Self::TelemetryRecovered(_) => "telemetry_recovered",
            Self::AnalyticsSummary(_) => "analytics_summary",
            Self::AutowithdrawStale(_) => "autowithdraw_stale",
            Self::AutowithdrawRecovered(_) => "autowithdraw_recovered",
            Self::ManualAdvertisement(_) => "manual_advertisement",
            Self::OperatorAlert(_) => "operator_alert",
            Self::Generic(_) => "generic_alert",
            Self::Test(_) => "test",
        }
    }

    /// Delivery class.
    pub fn priority(&self) -> Priority {
        match self {
            Self::AnalyticsSummary(_) => Priority::Summary,
            _ => Priority::Event,
        }
    }

    /// The MarkdownV2 text, with `org` in the footer.
    pub fn render(&self, org: &str) -> String {
        let mut d = Doc::new();
        match self {
            Self::AttackStart(a) => attack(&mut d, a, true),
            Self::AttackEnd(a) => attack(&mut d, a, false),
            Self::AutoAdvertisement(a) => auto_advertisement(&mut d, a),
            Self::TunnelHealth(t) => tunnel(&mut d, t),
            Self::WithdrawalSuccess(w) => withdrawal_success(&mut d, w),
            Self::WithdrawalFailure(w) => withdrawal_failure(&mut d, w),
            Self::WouldWithdraw(w) => would_withdraw(&mut d, w),
            Self::TelemetryBlind(b) => blind(&mut d, b),
            Self::TelemetryRecovered(r) => recovered(&mut d, r),
            Self::AnalyticsSummary(s) => summary(&mut d, s),
            Self::AutowithdrawStale(w) => autowithdraw_stale(&mut d, w),
            Self::AutowithdrawRecovered(r) => autowithdraw_recovered(&mut d, r),
            Self::ManualAdvertisement(m) => manual_advertisement(&mut d, m),
            Self::OperatorAlert(a) => operator_alert(&mut d, a),
            Self::Generic(g) => generic(&mut d, g),
            Self::Test(t) => test_message(&mut d, t),
        }
        d.footer(org);
        d.text
    }
}

fn attack(d: &mut Doc, a: &AttackAlert, start: bool) {
    if start {
        d.title("🚨", "DDoS ATTACK DETECTED");
    } else {
        d.title("✅", "DDoS ATTACK ENDED");
    }
    d.opt(
        "📋",
        "Alert",
        a.alert_name.as_deref().or(a.alert_type.as_deref()),
    );
    d.opt_code("🆔", "Attack ID", a.attack_id.as_deref());
    d.opt("📜", "Policy", a.policy_name.as_deref());
    d.blank();
    d.section("🎯", "TARGET");
    d.opt_code("📍", "IP", a.target_ip.as_deref());
    d.opt_code("🌐", "Prefix", a.prefix.as_deref());
    if let Some(port) = a.target_port {
        d.field("🔌", "Port", &port.to_string());
    }
    d.opt("📶", "Protocol", a.protocol.as_deref());
    if start {
        d.blank();
        d.section("📊", "ATTACK");
        d.opt("⚔️", "Vector", a.attack_vector.as_deref());
        d.opt("📦", "Packets/s", a.packets_per_second.as_deref());
        d.opt("📈", "Mbit/s", a.megabits_per_second.as_deref());
        d.opt("⚠️", "Severity", a.severity.as_deref());
    }
    d.blank();
    d.section("🔄", "BGP STATUS");
    match (&a.prefix_state, start) {
        (PrefixState::Advertised, true) => {
            d.line("🛡️ Prefix advertised by Cloudflare: traffic is scrubbed")
        }
        (PrefixState::Advertised, false) => {
            d.line("⏳ Prefix stays advertised until it has been calm long enough;");
            d.line("autowithdraw will withdraw it and report here");
        }
        (
            PrefixState::Withdrawn {
                readvertise_allowed_at,
            },
            _,
        ) => {
            d.line("⚠️ *Prefix is WITHDRAWN: traffic reaches the origin unprotected*");
            match readvertise_allowed_at {
                Some(t) => d.field("⏱️", "Re-advertisement allowed from", &utc(*t)),
                None => d.line("Re\\-advertise it if the attack is not absorbed"),
            }
        }
        (PrefixState::Unknown, true) => d.line("❔ Advertisement state not known yet"),
        (PrefixState::Unknown, false) => {
            d.line("autowithdraw decides when the prefix is withdrawn")
        }
    }
    d.blank();
    d.field("🕐", "Received", &utc(a.at));
}

fn auto_advertisement(d: &mut Doc, a: &AutoAdvertisement) {
    d.title("📢", "PREFIX AUTO-ADVERTISEMENT");
    d.opt("📜", "Policy", a.policy_name.as_deref());
    d.blank();
    d.section("📡", "PREFIXES");
    if a.prefixes.is_empty() {
        d.line("No configured prefix listed in the alert");
    }
    for (prefix, status) in &a.prefixes {
        let icon = match status.to_ascii_lowercase().as_str() {
            "advertised" | "already advertised" => "✅",
            "delayed" => "⏳",
            _ => "❌",
        };
        d.line(&format!(
            "{icon} `{}` {}",
            escape_code(&cut(prefix, MAX_VALUE_CHARS)),
            escape(&cut(status, MAX_VALUE_CHARS))
        ));
    }
    if a.not_configured_total > 0 {
        d.blank();
        d.section("❔", "NOT IN THE CONFIG (ignored)");
        for entry in &a.not_configured {
            d.line(&format!(
                "• `{}`",
                escape_code(&cut(entry, MAX_VALUE_CHARS))
            ));
        }
        let more = a
            .not_configured_total
            .saturating_sub(a.not_configured.len());
        if more > 0 {
            d.line(&escape(&format!("… and {more} more")));
        }
    }
    d.blank();
    d.line("🛡️ Traffic for advertised prefixes is routed through Cloudflare");
    d.field("🕐", "Received", &utc(a.at));
}

fn tunnel(d: &mut Doc, t: &TunnelHealth) {
    if t.ended {
        d.title("✅", "TUNNEL HEALTH RECOVERED");
    } else {
        d.title("🔧", "TUNNEL HEALTH ALERT");
    }
    d.opt_code("🚇", "Tunnel", t.tunnel.as_deref());
    d.opt("📶", "State", t.state.as_deref());
    d.opt("📝", "Details", t.text.as_deref());
    d.field("🕐", "Received", &utc(t.at));
}

fn withdrawal_success(d: &mut Doc, w: &WithdrawalSuccess) {
    d.title("🔚", "BGP WITHDRAWAL");
    d.blank();
    d.field("✅", "Status", "PREFIX WITHDRAWN");
    d.field("🎯", "Method", w.kind.describe());
    d.blank();
    d.section("📡", "PREFIX INFO");
    d.code_field("📍", "CIDR", &w.prefix);
    d.blank();
    d.section("⏱️", "TIMING");
    d.field("🕐", "Withdrawn at", &utc(w.withdrawn_at));
    if let Some(c) = w.calm_for {
        d.field("😌", "Calm for", &human(c));
    }
    if let Some(a) = w.advertised_for {
        d.field("🛡️", "Protected for", &human(a));
    }
    d.field("⏳", "BGP withdrawal", "takes ~15 minutes to propagate");
    if w.peak_pps.is_some() || w.peak_mbps.is_some() || w.mitigation_systems.is_some() {
        d.blank();
        d.section("📊", "INCIDENT PEAK");
        if let Some(p) = w.peak_pps {
            d.field("📦", "Dropped", &pps(p));
        }
        if let Some(m) = w.peak_mbps {
            d.field("📈", "Dropped", &mbps(m));
        }
        d.opt("🧰", "Mitigation", w.mitigation_systems.as_deref());
    }
    d.blank();
    d.section("🔄", "BGP STATUS");
    d.line("🔙 Traffic returning to origin path");
    d.line("⚠️ Direct routing resumed");
    d.line("📊 Magic Transit protection disabled");
    d.blank();
    d.field("🤖", "Operator", &w.operator);
}

fn withdrawal_failure(d: &mut Doc, w: &WithdrawalFailure) {
    d.title("❌", "WITHDRAWAL FAILED");
    d.blank();
    d.field("❌", "Status", "WITHDRAWAL FAILED");
    d.field("🎯", "Method", w.kind.describe());
    d.blank();
    d.section("📡", "PREFIX INFO");
    d.code_field("📍", "CIDR", &w.prefix);
    d.blank();
    d.section("❌", "ERROR");
    d.line(&format!(
        "`{}`",
        escape_code(&cut(&w.error, MAX_VALUE_CHARS))
    ));
    d.field("🔁", "Attempts", &w.attempts.to_string());
    match w.next_attempt_at {
        Some(t) => d.field("⏭️", "Next attempt", &utc(t)),
        None => d.line("⚠️ *Action required:* manual intervention needed"),
    }
    d.field("🕐", "At", &utc(w.at));
    d.line("The prefix stays advertised \\(traffic still scrubbed\\)");
}

fn would_withdraw(d: &mut Doc, w: &WouldWithdraw) {
    d.title("🧪", "DRY RUN: WOULD WITHDRAW");
    d.code_field("📍", "CIDR", &w.prefix);
    if let Some(c) = w.calm_for {
        d.field("😌", "Calm for", &human(c));
    }
    d.field("🕐", "At", &utc(w.at));
    d.line("Nothing was changed: autowithdraw runs with dry\\_run \\= true");
}

fn blind(d: &mut Doc, b: &TelemetryBlind) {
    d.title("🙈", "TELEMETRY BLIND");
    d.line("Dropped\\-traffic analytics cannot be judged: *no prefix will be withdrawn* until they can\\.");
    d.field("🕐", "Since", &utc(b.since));
    d.field("❔", "Reason", &b.reason);
    list(d, "📡", "Advertised prefixes", &b.prefixes);
}

fn recovered(d: &mut Doc, r: &TelemetryRecovered) {
    d.title("👀", "TELEMETRY RECOVERED");
    d.field("⏱️", "Blind for", &human(r.blind_for));
    d.field("🕐", "At", &utc(r.at));
    list(d, "📡", "Prefixes", &r.prefixes);
    d.line("Calm time is counted again from observed windows only");
}

fn summary(d: &mut Doc, s: &AnalyticsSummary) {
    d.title("📊", "NETWORK ANALYTICS");
    d.field("🕐", "Window", &format!("{} → {}", utc(s.from), utc(s.to)));
    d.field("🆕", "New events", &s.new_events.to_string());
    d.field("📦", "Dropped packets", &s.total_packets.to_string());
    d.field("📈", "Dropped", &format!("{:.1} Mbit", s.total_megabits));
    if !s.attack_ids.is_empty() {
        list(d, "🆔", "Attack IDs", &s.attack_ids);
    }
    top(d, "⚔️", "Top vectors", &s.vectors);
    top(d, "🎯", "Top targets", &s.targets);
    top(d, "🏢", "Top source ASNs", &s.source_asns);
    top(d, "🌍", "Top source countries", &s.source_countries);
}

fn autowithdraw_stale(d: &mut Doc, w: &AutowithdrawStale) {
    d.title("⏰", "AUTOWITHDRAW NOT JUDGING");
    d.line("mt\\-autowithdraw has not judged the prefixes recently: *advertised prefixes will not be withdrawn* until it runs again\\.");
    match w.last_judgement {
        Some(t) => d.field("🕐", "Last judgement", &utc(t)),
        None => d.line("🕐 No judgement recorded yet"),
    }
    d.field("⏱️", "Threshold", &human(w.threshold));
    list(d, "📡", "Advertised prefixes", &w.advertised);
    d.line("Check: systemctl status mt\\-autowithdraw");
    d.field("🕐", "At", &utc(w.at));
}

fn autowithdraw_recovered(d: &mut Doc, r: &AutowithdrawRecovered) {
    d.title("✅", "AUTOWITHDRAW JUDGING AGAIN");
    d.field("⏱️", "Silent for", &human(r.stale_for));
    d.field("🕐", "At", &utc(r.at));
}

fn operator_alert(d: &mut Doc, a: &OperatorAlert) {
    d.title("⚠️", &a.title.to_uppercase());
    d.opt_code("📍", "CIDR", a.prefix.as_deref());
    d.field("📝", "Details", &a.details);
    d.field("🛡️", "Consequence", &a.consequence);
    d.field("🕐", "At", &utc(a.at));
}

fn test_message(d: &mut Doc, t: &TestMessage) {
    d.title("🧪", "TEST MESSAGE");
    d.field("👤", "Operator", &t.operator);
    d.field("🖥️", "Host", &t.host);
    d.field("🕐", "At", &utc(t.at));
    d.line("✅ The suite's notifications reach this chat");
}

fn manual_advertisement(d: &mut Doc, m: &ManualAdvertisement) {
    d.title("📢", "PREFIX ADVERTISED MANUALLY");
    d.code_field("📍", "CIDR", &m.prefix);
    d.field("👤", "Operator", &m.operator);
    d.field("🕐", "At", &utc(m.at));
    d.line("🛡️ Traffic is routed through Cloudflare within minutes; autowithdraw withdraws it once calm");
}

fn generic(d: &mut Doc, g: &GenericAlert) {
    d.title("🔔", "CLOUDFLARE ALERT");
    d.opt_code("🏷️", "Type", g.alert_type.as_deref());
    d.opt("📋", "Name", g.name.as_deref());
    d.opt("📜", "Policy", g.policy_name.as_deref());
    d.opt("📶", "State", g.event_state.as_deref());
    if let Some(text) = &g.text {
        d.blank();
        for line in cut(text, MAX_TEXT_CHARS).lines() {
            d.line(&escape(&cut(line, MAX_VALUE_CHARS)));
        }
    }
    d.blank();
    d.field("🕐", "Received", &utc(g.at));
}

fn list(d: &mut Doc, emoji: &str, label: &str, items: &[String]) {
    d.blank();
    d.section(emoji, label);
    if items.is_empty() {
        d.line("none");
    }
    for item in items.iter().take(TOP_N * 4) {
        d.line(&format!("• `{}`", escape_code(&cut(item, MAX_VALUE_CHARS))));
    }
    if items.len() > TOP_N * 4 {
        d.line(&escape(&format!("… and {} more", items.len() - TOP_N * 4)));
    }
}

fn top(d: &mut Doc, emoji: &str, label: &str, rows: &[(String, u64)]) {
    if rows.is_empty() {
        return;
    }
    d.blank();
    d.section(emoji, label);
    for (name, packets) in rows.iter().take(TOP_N) {
        d.line(&format!(
            "• `{}` {}",
            escape_code(&cut(name, MAX_VALUE_CHARS)),
            escape(&format!("{packets} pkts"))
        ));
    }
}

/// Builds a MarkdownV2 message line by line; every method escapes what it is given except
/// [`Doc::line`], which takes already-escaped text.
struct Doc {
    text: String,
}

impl Doc {
    fn new() -> Self {
        let mut d = Self {
            text: String::with_capacity(512),
        };
        d.line("🛡️ *CLOUDFLARE DDoS PROTECTION*");
        d.blank();
        d
    }

    fn title(&mut self, emoji: &str, title: &str) {
        self.line(&format!("{emoji} *{}*", escape(title)));
    }

    fn section(&mut self, emoji: &str, title: &str) {
        self.line(&format!("{emoji} *{}*", escape(&title.to_uppercase())));
    }

    fn field(&mut self, emoji: &str, label: &str, value: &str) {
        self.line(&format!(
            "{emoji} *{}:* {}",
            escape(label),
            escape(&cut(value, MAX_VALUE_CHARS))
        ));
    }

    fn code_field(&mut self, emoji: &str, label: &str, value: &str) {
        self.line(&format!(
            "{emoji} *{}:* `{}`",
            escape(label),
            escape_code(&cut(value, MAX_VALUE_CHARS))
        ));
    }

    fn opt(&mut self, emoji: &str, label: &str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            self.field(emoji, label, v);
        }
    }

    fn opt_code(&mut self, emoji: &str, label: &str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.trim().is_empty()) {
            self.code_field(emoji, label, v);
        }
    }

    fn line(&mut self, escaped: &str) {
        self.text.push_str(escaped);
        self.text.push('\n');
    }

    fn blank(&mut self) {
        if !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }

    fn footer(&mut self, org: &str) {
        self.blank();
        self.line(&format!(
            "🏢 *{}* \\| _Magic Transit On\\-Demand_",
            escape(&cut(org, MAX_VALUE_CHARS))
        ));
    }
}

/// `s` cut to `max` characters (ending in "…" when cut), with line breaks removed unless the
/// caller splits lines itself.
fn cut(s: &str, max: usize) -> String {
    let flat: String = if max == MAX_TEXT_CHARS {
        s.to_owned()
    } else {
        s.replace(['\n', '\r'], " ")
    };
    if flat.chars().count() <= max {
        return flat;
    }
    let mut out: String = flat.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `18m 45s`, `2h 5m`, `45s`: the seed's duration style.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn pps(p: f64) -> String {
    if p >= 1e6 {
        format!("{:.2} Mpps", p / 1e6)
    } else if p >= 1e3 {
        format!("{:.1} kpps", p / 1e3)
    } else {
        format!("{p:.0} pps")
    }
}

fn mbps(m: f64) -> String {
    if m >= 1000.0 {
        format!("{:.2} Gbit/s", m / 1000.0)
    } else {
        format!("{m:.1} Mbit/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_seed() {
        assert_eq!(human(Duration::from_secs(1125)), "18m 45s");
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(7500)), "2h 5m");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(5000);
        assert_eq!(cut(&long, MAX_VALUE_CHARS).chars().count(), MAX_VALUE_CHARS);
        assert!(cut(&long, MAX_VALUE_CHARS).ends_with('…'));
        assert_eq!(cut("a\nb", MAX_VALUE_CHARS), "a b");
    }
}

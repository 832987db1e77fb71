//! What each page shows, assembled from the database. The JSON API returns these same
//! structures, so a tool sees exactly what the SOC sees.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use mt_common::timefmt::{from_db, to_db};
use mt_store::{AttackEvent, Dimension, SeriesPoint, Store, TopRow};
use serde::Serialize;

/// Most attack events one Attacks view reads.
pub const MAX_ATTACK_EVENTS: u32 = 5_000;

/// One step of an incident.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// `START`, `ADVERTISE`, `END`, `WITHDRAW`.
    pub event_type: String,
    /// When (UTC).
    pub at: String,
    /// `action_taken` of the event.
    pub action_taken: Option<String>,
    /// The attack (alert) id, if the event has one.
    pub attack_id: Option<String>,
}

/// One incident: from the first attack alert (or advertisement) of a prefix to its withdrawal.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// The prefix (events without one are grouped by attack id).
    pub prefix: Option<String>,
    /// `under attack`, `advertised`, `withdrawn`, `ended`.
    pub state: &'static str,
    /// Attack ids seen.
    pub attack_ids: Vec<String>,
    /// Policy names seen.
    pub policy_names: Vec<String>,
    /// Attack vectors seen.
    pub vectors: Vec<String>,
    /// First START.
    pub started_at: Option<String>,
    /// First ADVERTISE.
    pub advertised_at: Option<String>,
    /// Last END (when no attack is still open).
    pub ended_at: Option<String>,
    /// The WITHDRAW.
    pub withdrawn_at: Option<String>,
    /// START → END.
    pub attack_seconds: Option<i64>,
    /// ADVERTISE → WITHDRAW (or → now while advertised).
    pub protected_seconds: Option<i64>,
    /// Highest packets/s reported by the alerts.
    pub peak_pps: Option<f64>,
    /// Highest Mbit/s reported by the alerts.
    pub peak_mbps: Option<f64>,
    /// Every event, oldest first.
    pub steps: Vec<Step>,
}

fn number(s: Option<&str>) -> Option<f64> {
    s.and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

fn push_unique(list: &mut Vec<String>, value: Option<&str>) {
    if let Some(v) = value.map(str::trim).filter(|v| !v.is_empty())
        && !list.iter().any(|x| x == v)
    {
        list.push(v.to_owned());
    }
}

#[derive(Default)]
struct Building {
    prefix: Option<String>,
    attack_ids: Vec<String>,
    open_attacks: Vec<String>,
    policy_names: Vec<String>,
    vectors: Vec<String>,
    started: Option<DateTime<Utc>>,
    advertised: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
    withdrawn: Option<DateTime<Utc>>,
    peak_pps: Option<f64>,
    peak_mbps: Option<f64>,
    steps: Vec<Step>,
    anonymous_start_open: bool,
}

impl Building {
    fn finish(self, now: DateTime<Utc>) -> Incident {
        let under_attack = !self.open_attacks.is_empty() || self.anonymous_start_open;
        let state = if self.withdrawn.is_some() && under_attack {
            "withdrawn during attack"
        } else if self.withdrawn.is_some() {
            "withdrawn"
        } else if under_attack {
            "under attack"
        } else if self.advertised.is_some() {
            "advertised"
        } else {
            "ended"
        };
        let ended = self.ended.filter(|_| !under_attack);
        Incident {
            prefix: self.prefix,
            state,
            attack_ids: self.attack_ids,
            policy_names: self.policy_names,
            vectors: self.vectors,
            started_at: self.started.map(to_db),
            advertised_at: self.advertised.map(to_db),
            ended_at: ended.map(to_db),
            withdrawn_at: self.withdrawn.map(to_db),
            attack_seconds: match (self.started, ended) {
                (Some(s), Some(e)) if e >= s => Some((e - s).num_seconds()),
                (Some(s), None) if under_attack => Some((now - s).num_seconds().max(0)),
                _ => None,
            },
            protected_seconds: self
                .advertised
                .map(|a| (self.withdrawn.unwrap_or(now) - a).num_seconds().max(0)),
            peak_pps: self.peak_pps,
            peak_mbps: self.peak_mbps,
            steps: self.steps,
        }
    }
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Groups attack events (oldest first) into incidents, newest incident first. `now` is the end
/// of the range shown: open attacks are measured up to it.
///
/// Per prefix, an incident opens with the first START or ADVERTISE after the previous
/// incident's WITHDRAW and closes with the next WITHDRAW; several STARTs within it (multi-vector
/// attacks) merge into it. An event without a prefix joins the prefix its attack id was first
/// seen with, else it is grouped by attack id. A WITHDRAW while attacks are still open closes
/// the incident as "withdrawn during attack" and the open attacks carry on into the next one.
pub fn incidents(events: &[AttackEvent], now: DateTime<Utc>) -> Vec<Incident> {
    let mut open: BTreeMap<String, Building> = BTreeMap::new();
    let mut done: Vec<(DateTime<Utc>, Incident)> = Vec::new();
    let mut key_of_attack: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    for e in events {
        let Some(kind) = e.event_type.as_deref().map(str::to_uppercase) else {
            continue;
        };
        let Some(at) = e.created_at.as_deref().and_then(from_db) else {
            continue;
        };
        let prefix = e.prefix.clone().filter(|p| !p.trim().is_empty());
        let attack_id = e.attack_id.clone().filter(|a| !a.trim().is_empty());
        let key = match (&prefix, &attack_id) {
            (Some(p), _) => format!("p:{p}"),
            (None, Some(a)) => key_of_attack
                .get(a)
                .cloned()
                .unwrap_or_else(|| format!("a:{a}")),
            (None, None) => continue,
        };
        if let Some(a) = &attack_id {
            key_of_attack
                .entry(a.clone())
                .or_insert_with(|| key.clone());
        }
        let b = open.entry(key.clone()).or_insert_with(|| Building {
            prefix: prefix.clone(),
            ..Building::default()
        });
        if b.prefix.is_none() {
            b.prefix.clone_from(&prefix);
        }
        b.steps.push(Step {
            event_type: kind.clone(),
            at: to_db(at),
            action_taken: e.action_taken.clone(),
            attack_id: attack_id.clone(),
        });
        push_unique(&mut b.attack_ids, attack_id.as_deref());
        push_unique(&mut b.policy_names, e.policy_name.as_deref());
        push_unique(&mut b.vectors, e.attack_vector.as_deref());
        b.peak_pps = max_opt(b.peak_pps, number(e.packets_per_second.as_deref()));
        b.peak_mbps = max_opt(b.peak_mbps, number(e.megabits_per_second.as_deref()));
        match kind.as_str() {
            "START" => {
                b.started.get_or_insert(at);
                match &attack_id {
                    Some(a) => push_unique(&mut b.open_attacks, Some(a)),
                    None => b.anonymous_start_open = true,
                }
            }
            "END" => {
                b.ended = Some(at);
                match &attack_id {
                    Some(a) => b.open_attacks.retain(|x| x != a),
                    None => b.anonymous_start_open = false,
                }
            }
            "ADVERTISE" => {
                b.advertised.get_or_insert(at);
            }
            "WITHDRAW" => {
                b.withdrawn = Some(at);
                if let Some(finished) = open.remove(&key) {
                    let carry = (!finished.open_attacks.is_empty()
                        || finished.anonymous_start_open)
                        .then(|| Building {
                            prefix: finished.prefix.clone(),
                            attack_ids: finished.open_attacks.clone(),
                            open_attacks: finished.open_attacks.clone(),
                            anonymous_start_open: finished.anonymous_start_open,
                            vectors: finished.vectors.clone(),
                            policy_names: finished.policy_names.clone(),
                            started: finished.started,
                            peak_pps: finished.peak_pps,
                            peak_mbps: finished.peak_mbps,
                            ..Building::default()
                        });
                    done.push((at, finished.finish(now)));
                    if let Some(next) = carry {
                        open.insert(key, next);
                    }
                }
            }
            _ => {}
        }
    }
    for b in open.into_values() {
        let last = b.steps.last().and_then(|s| from_db(&s.at)).unwrap_or(now);
        done.push((last, b.finish(now)));
    }
    done.sort_by_key(|d| std::cmp::Reverse(d.0));
    done.into_iter().map(|(_, i)| i).collect()
}

/// The Attacks view.
#[derive(Debug, Clone, Serialize)]
pub struct AttacksView {
    /// Filter: prefix.
    pub prefix: Option<String>,
    /// Filter: from (UTC).
    pub since: String,
    /// Filter: to (UTC), if bounded.
    pub until: Option<String>,
    /// Whether the event limit cut the range (older events not shown).
    pub truncated: bool,
    /// Incidents, newest first.
    pub incidents: Vec<Incident>,
}

/// Reads the Attacks view.
pub async fn attacks(
    store: &Store,
    prefix: Option<String>,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> mt_store::Result<AttacksView> {
    let mut events = store
        .attack_events_between(Some(since), until, prefix.as_deref(), MAX_ATTACK_EVENTS + 1)
        .await?;
    // One more than shown tells whether older events were cut off (they are the first).
    let truncated = events.len() > MAX_ATTACK_EVENTS as usize;
    if truncated {
        events.remove(0);
    }
    let end = until.map_or(now, |u| u.min(now));
    Ok(AttacksView {
        truncated,
        incidents: incidents(&events, end),
        prefix,
        since: to_db(since),
        until: until.map(to_db),
    })
}

/// An analytics window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Window {
    /// Last hour, 5-minute buckets.
    #[serde(rename = "1h")]
    Hour,
    /// Last day, hourly buckets.
    #[serde(rename = "24h")]
    Day,
    /// Last week, 6-hour buckets.
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    /// Every window, in display order.
    pub const ALL: [Window; 3] = [Window::Hour, Window::Day, Window::Week];

    /// From a query value (`1h`, `24h`, `7d`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }

    /// `1h`, `24h`, `7d`.
    pub fn name(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    fn span(self) -> Duration {
        match self {
            Window::Hour => Duration::hours(1),
            Window::Day => Duration::hours(24),
            Window::Week => Duration::days(7),
        }
    }

    fn bucket(self) -> Duration {
        match self {
            Window::Hour => Duration::minutes(5),
            Window::Day => Duration::hours(1),
            Window::Week => Duration::hours(6),
        }
    }
}

/// One ranking.
#[derive(Debug, Clone, Serialize)]
pub struct Ranking {
    /// What is ranked.
    pub dimension: Dimension,
    /// Title.
    pub title: &'static str,
    /// Largest first.
    pub rows: Vec<TopRow>,
}

/// The analytics view.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyticsView {
    /// The window.
    pub window: Window,
    /// From (UTC).
    pub since: String,
    /// Bucket width in seconds.
    pub bucket_seconds: i64,
    /// Dropped traffic per bucket, every bucket of the window (zeros included), oldest first.
    pub series: Vec<SeriesPoint>,
    /// Totals.
    pub total_packets: i64,
    /// Totals.
    pub total_bits: i64,
    /// Top vectors, targets, source ASNs and countries.
    pub rankings: Vec<Ranking>,
}

/// Rows per ranking.
const TOP: u32 = 10;

/// Reads the analytics view.
pub async fn analytics(
    store: &Store,
    window: Window,
    now: DateTime<Utc>,
) -> mt_store::Result<AnalyticsView> {
    let since = now - window.span();
    let bucket = window.bucket().num_seconds();
    let stored = store.analytics_series(since, bucket).await?;
    let first = since.timestamp().div_euclid(bucket) * bucket;
    let mut series = Vec::new();
    let mut t = first;
    while t <= now.timestamp() {
        let found = stored.iter().find(|p| p.bucket == t);
        series.push(SeriesPoint {
            bucket: t,
            packets: found.map_or(0, |p| p.packets),
            bits: found.map_or(0, |p| p.bits),
        });
        t += bucket;
    }
    let mut rankings = Vec::new();
    for d in Dimension::ALL {
        rankings.push(Ranking {
            dimension: d,
            title: d.title(),
            rows: store.analytics_top(d, since, TOP).await?,
        });
    }
    Ok(AnalyticsView {
        window,
        since: to_db(since),
        bucket_seconds: bucket,
        total_packets: series.iter().map(|p| p.packets).sum(),
        total_bits: series.iter().map(|p| p.bits).sum(),
        series,
        rankings,
    })
}

/// `12,345,678`.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `1.5 Gbit`, `350.0 Mbit`, `12.0 kbit`, `800 bit`.
pub fn bits(n: i64) -> String {
    let v = n as f64;
    match v.abs() {
        x if x >= 1e12 => format!("{:.1} Tbit", v / 1e12),
        x if x >= 1e9 => format!("{:.1} Gbit", v / 1e9),
        x if x >= 1e6 => format!("{:.1} Mbit", v / 1e6),
        x if x >= 1e3 => format!("{:.1} kbit", v / 1e3),
        _ => format!("{n} bit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: &str, prefix: &str, attack: &str, at: &str) -> AttackEvent {
        AttackEvent {
            id,
            event_type: Some(kind.into()),
            alert_type: None,
            attack_id: (!attack.is_empty()).then(|| attack.to_owned()),
            policy_id: None,
            policy_name: None,
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            target_ip: None,
            target_port: None,
            protocol: None,
            attack_vector: Some("UDP flood".into()),
            packets_per_second: matches!(kind, "START" | "END").then(|| format!("{}", id * 1000)),
            megabits_per_second: None,
            severity: None,
            action_taken: None,
            raw_payload: None,
            created_at: Some(at.into()),
        }
    }

    #[test]
    fn lifecycle_is_grouped_per_prefix_with_durations() {
        let p = "203.0.113.0/24";
        let events = vec![
            event(1, "START", p, "a1", "2026-11-20 10:00:00"),
            event(2, "ADVERTISE", p, "", "2026-11-20 10:01:00"),
            event(3, "START", p, "a2", "2026-11-20 10:05:00"),
            event(4, "END", p, "a1", "2026-11-20 10:10:00"),
            event(5, "END", p, "a2", "2026-11-20 10:20:00"),
            event(6, "WITHDRAW", p, "", "2026-11-20 10:40:00"),
            event(7, "START", p, "a3", "2026-11-21 08:00:00"),
        ];
        let now = from_db("2026-11-21 08:03:00").unwrap_or_default();
        let list = incidents(&events, now);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].state, "under attack");
        assert_eq!(list[0].attack_seconds, Some(180));
        let first = &list[1];
        assert_eq!(first.state, "withdrawn");
        assert_eq!(first.attack_ids, ["a1", "a2"]);
        assert_eq!(first.attack_seconds, Some(20 * 60));
        assert_eq!(first.protected_seconds, Some(39 * 60));
        assert_eq!(first.peak_pps, Some(5000.0));
        assert_eq!(first.steps.len(), 6);
    }

    #[test]
    fn withdrawn_during_an_attack_and_prefixless_ends() {
        let p = "203.0.113.0/24";
        let events = vec![
            event(1, "START", p, "a1", "2026-11-20 10:00:00"),
            event(2, "WITHDRAW", p, "", "2026-11-20 10:05:00"),
            // The END arrives without a prefix: it still closes a1 in the carried incident.
            event(3, "END", "", "a1", "2026-11-20 10:20:00"),
        ];
        let now = from_db("2026-11-20 11:00:00").unwrap_or_default();
        let list = incidents(&events, now);
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[1].state, "withdrawn during attack");
        assert_eq!(list[0].prefix.as_deref(), Some(p));
        assert_eq!(list[0].state, "ended");
        assert_eq!(list[0].attack_seconds, Some(20 * 60));
        // Open attacks are measured to the end of the range, not to today.
        let open = incidents(
            &events[..1],
            from_db("2026-11-20 10:30:00").unwrap_or_default(),
        );
        assert_eq!(open[0].attack_seconds, Some(30 * 60));
    }

    #[test]
    fn formatting() {
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(bits(1_500_000_000), "1.5 Gbit");
        assert_eq!(bits(800), "800 bit");
        assert_eq!(Window::parse("24h"), Some(Window::Day));
        assert_eq!(Window::parse("2h"), None);
    }
}

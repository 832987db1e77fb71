//! GraphQL: dropped traffic per configured prefix (calm tracking, SPEC §7), dosd
//! dropped-traffic events (network analytics, SPEC §8), and the datasets' `settings`.
//!
//! Every document here is validated against Cloudflare's published schema by the crate's
//! schema test (`tests/it/schema.rs`), as sent, variables included. What the schema says that
//! matters here:
//! - `magicTransitNetworkAnalyticsAdaptiveGroups` is adaptively sampled and its `sum` fields
//!   are Cloudflare's estimates already scaled up from the sample: they are used as given.
//!   `sampleInterval` is a *dimension* of it; there is no `avg { sampleInterval }`.
//! - No `direction` filter: the docs say ingress/egress, the schema's possible values are
//!   inbound/outbound/lateral, and a value that matches nothing would read as calm.
//! - No `mitigationSystem` filter either: rows without a system must count, so the
//!   restriction to `mitigation_systems` is applied here, on the dimension.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::{Client, Error, Result, messages};

/// The calm-tracking dataset.
pub const CALM_DATASET: &str = "magicTransitNetworkAnalyticsAdaptiveGroups";
/// The network-analytics dataset.
pub const EVENTS_DATASET: &str = "dosdNetworkAnalyticsAdaptiveGroups";

/// Calm tracking: dropped traffic by destination subnet and mitigation system, and how far the
/// account's data reaches (the newest minute with any traffic, clean included).
const CALM_QUERY: &str = r#"query MtCalm($accountTag: string!, $start: Time!, $end: Time!, $probeStart: Time!, $until: Time!, $limit: uint64!) {
  viewer {
    accounts(filter: { accountTag: $accountTag }) {
      drops: magicTransitNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_geq: $start, datetime_lt: $end, outcome: "drop" }
        limit: $limit
        orderBy: [sum_packets_DESC]
      ) {
        dimensions { ipDestinationSubnet mitigationSystem }
        sum { packets bits }
      }
      latest: magicTransitNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_geq: $probeStart, datetime_leq: $until }
        limit: 1
        orderBy: [datetimeMinute_DESC]
      ) {
        dimensions { datetimeMinute }
      }
    }
  }
}"#;

/// The confirmation before a withdrawal (SPEC §7.4): the calm query's drops per five-minute
/// bucket over the range that must be calm, so rows that arrived after their window was
/// judged are caught.
const CONFIRM_QUERY: &str = r#"query MtConfirm($accountTag: string!, $start: Time!, $end: Time!, $probeStart: Time!, $until: Time!, $limit: uint64!) {
  viewer {
    accounts(filter: { accountTag: $accountTag }) {
      drops: magicTransitNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_geq: $start, datetime_lt: $end, outcome: "drop" }
        limit: $limit
        orderBy: [datetimeFiveMinutes_ASC]
      ) {
        dimensions { datetimeFiveMinutes ipDestinationSubnet mitigationSystem }
        sum { packets bits }
      }
      latest: magicTransitNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_geq: $probeStart, datetime_leq: $until }
        limit: 1
        orderBy: [datetimeMinute_DESC]
      ) {
        dimensions { datetimeMinute }
      }
    }
  }
}"#;

/// Fields of the calm and confirmation queries' nodes, in `settings.availableFields` form
/// (`parent_child`).
pub const CALM_FIELDS: &[&str] = &[
    "dimensions_ipDestinationSubnet",
    "dimensions_mitigationSystem",
    "sum_packets",
    "sum_bits",
    "dimensions_datetimeMinute",
    "dimensions_datetimeFiveMinutes",
];

/// Network analytics: dosd dropped-traffic events with every dimension the database stores.
const EVENTS_QUERY: &str = r#"query MtDosdEvents($accountTag: string!, $start: Time!, $end: Time!, $limit: uint64!) {
  viewer {
    accounts(filter: { accountTag: $accountTag }) {
      events: dosdNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_gt: $start, datetime_lt: $end, outcome: "drop" }
        limit: $limit
        orderBy: [datetime_DESC]
      ) {
        dimensions {
          datetime attackId attackVector ruleName ruleId mitigationReason outcome verdict
          ipSourceAddress sourcePort sourceAsn sourceAsnName sourceCountry
          ipDestinationAddress destinationPort ipProtocolName tcpFlagsString
          coloCode coloCountry coloCity
        }
        sum { packets bits }
      }
    }
  }
}"#;

/// Fields of the events query, in `settings.availableFields` form.
pub const EVENTS_FIELDS: &[&str] = &[
    "dimensions_datetime",
    "dimensions_attackId",
    "dimensions_attackVector",
    "dimensions_ruleName",
    "dimensions_ruleId",
    "dimensions_mitigationReason",
    "dimensions_outcome",
    "dimensions_verdict",
    "dimensions_ipSourceAddress",
    "dimensions_sourcePort",
    "dimensions_sourceAsn",
    "dimensions_sourceAsnName",
    "dimensions_sourceCountry",
    "dimensions_ipDestinationAddress",
    "dimensions_destinationPort",
    "dimensions_ipProtocolName",
    "dimensions_tcpFlagsString",
    "dimensions_coloCode",
    "dimensions_coloCountry",
    "dimensions_coloCity",
    "sum_packets",
    "sum_bits",
];

/// The access settings of both datasets the suite reads.
const SETTINGS_QUERY: &str = r#"query MtSettings($accountTag: string!) {
  viewer {
    accounts(filter: { accountTag: $accountTag }) {
      settings {
        magicTransitNetworkAnalyticsAdaptiveGroups {
          enabled maxDuration maxPageSize maxNumberOfFields notOlderThan availableFields
        }
        dosdNetworkAnalyticsAdaptiveGroups {
          enabled maxDuration maxPageSize maxNumberOfFields notOlderThan availableFields
        }
      }
    }
  }
}"#;

/// Every GraphQL document the client sends (the schema test validates each as sent).
pub const DOCUMENTS: &[&str] = &[CALM_QUERY, CONFIRM_QUERY, EVENTS_QUERY, SETTINGS_QUERY];

/// Width of the confirmation query's buckets (`datetimeFiveMinutes`).
pub const CONFIRM_BUCKET: Duration = Duration::from_secs(300);

/// What to judge.
#[derive(Debug, Clone)]
pub struct DroppedTrafficQuery<'a> {
    /// Window start (inclusive).
    pub start: DateTime<Utc>,
    /// Window end, exclusive (`datetime_lt`): consecutive windows count each bucket once.
    pub end: DateTime<Utc>,
    /// How far to look for the newest data of any kind (usually "now"). The freshness probe
    /// covers `[start, data_until]`, cut to the dataset's `maxDuration` (see
    /// [`DatasetLimits::probe_start`]).
    pub data_until: DateTime<Utc>,
    /// Where the freshness probe starts (at most `maxDuration` before `data_until`).
    pub probe_start: DateTime<Utc>,
    /// Whose drops count (rows without a system count too).
    pub mitigation_systems: &'a [String],
    /// The configured prefixes.
    pub prefixes: &'a [IpNet],
    /// Row limit of the query (at most the dataset's `maxPageSize`); a result with this many
    /// rows is incomplete.
    pub limit: u32,
}

/// Dropped traffic attributed to one configured prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixDrops {
    /// `sum.packets` of the attributed rows: Cloudflare's estimates, used as given.
    pub packets: f64,
    /// `sum.bits` of the attributed rows, as given.
    pub bits: f64,
    /// Mitigation systems seen (`(none)` for rows without one).
    pub systems: BTreeSet<String>,
    /// Attributed rows whose `sum.packets` or `sum.bits` was missing or not a number: the
    /// totals are unknown (never read as 0).
    pub malformed_rows: usize,
}

/// The answer to a [`DroppedTrafficQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DroppedTraffic {
    /// Per configured prefix (every queried prefix is present, zero when nothing dropped).
    pub per_prefix: BTreeMap<IpNet, PrefixDrops>,
    /// Rows returned (all mitigation systems).
    pub rows: usize,
    /// The result hit the row limit: totals may be too small, so it must not be read as calm.
    pub truncated: bool,
    /// Rows whose destination could not be parsed (they might concern a configured prefix).
    pub unparsed_rows: usize,
    /// Start of the newest minute with any traffic in `[probe_start, data_until]`; `None`: no
    /// data.
    pub latest_minute: Option<DateTime<Utc>>,
    /// Cloudflare's `Date` header (compare with the local clock for skew).
    pub served_at: Option<DateTime<Utc>>,
}

/// The answer to a confirmation query: [`DroppedTraffic`] per five-minute bucket (by the
/// bucket's start; buckets without drops are absent), and what concerns the whole answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DroppedBuckets {
    /// Drops per bucket start, per configured prefix.
    pub buckets: BTreeMap<DateTime<Utc>, BTreeMap<IpNet, PrefixDrops>>,
    /// The whole answer: rows, truncation, rows without a parsable subnet or bucket, the
    /// newest minute with data and Cloudflare's `Date` (its `per_prefix` is empty).
    pub overall: DroppedTraffic,
}

impl DroppedBuckets {
    /// The bucket starting at `start` as a [`DroppedTraffic`] (zero drops when absent).
    pub fn bucket(&self, start: DateTime<Utc>, prefixes: &[IpNet]) -> DroppedTraffic {
        let mut per_prefix: BTreeMap<IpNet, PrefixDrops> = prefixes
            .iter()
            .map(|p| (*p, PrefixDrops::default()))
            .collect();
        if let Some(found) = self.buckets.get(&start) {
            for (p, d) in found {
                per_prefix.insert(*p, d.clone());
            }
        }
        DroppedTraffic {
            per_prefix,
            ..self.overall.clone()
        }
    }
}

/// What a row of the mitigation-system dimension is recorded as when it has no system.
pub const NO_SYSTEM: &str = "(none)";

/// One dosd event row.
#[derive(Debug, Clone, PartialEq)]
pub struct DosdEvent {
    /// The row's `dimensions`, as returned (the dedup hash is computed from them).
    pub dimensions: Map<String, Value>,
    /// `sum.packets`.
    pub packets: u64,
    /// `sum.bits`.
    pub bits: u64,
}

/// The answer to [`Client::dosd_events`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DosdEvents {
    /// The rows.
    pub events: Vec<DosdEvent>,
    /// The result hit the row limit: split the window and fetch the rest.
    pub truncated: bool,
    /// Cloudflare's `Date` header.
    pub served_at: Option<DateTime<Utc>>,
}

/// A dataset's `settings` node (SPEC §7.2): what the account may query. A field Cloudflare
/// did not answer is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetSettings {
    /// The dataset is available to the account.
    pub enabled: Option<bool>,
    /// Widest time range of one query.
    pub max_duration: Option<Duration>,
    /// Largest `limit`.
    pub max_page_size: Option<u64>,
    /// Most fields in one query node.
    pub max_number_of_fields: Option<u64>,
    /// How far back data can be queried.
    pub not_older_than: Option<Duration>,
    /// Fields that may be queried, `parent_child` (e.g. `sum_packets`).
    pub available_fields: Option<Vec<String>>,
}

/// The settings of both datasets, keyed by dataset name ([`CALM_DATASET`], [`EVENTS_DATASET`]).
pub type Settings = BTreeMap<String, DatasetSettings>;

/// Why a dataset cannot serve one of the suite's queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsProblem {
    /// `enabled: false`.
    Disabled,
    /// Cloudflare did not answer this dataset's settings.
    Missing,
    /// These queried fields are not in `availableFields`.
    FieldsUnavailable(Vec<String>),
    /// A query node asks for more fields than `maxNumberOfFields`.
    TooManyFields {
        /// Fields the node asks for.
        asked: usize,
        /// `maxNumberOfFields`.
        allowed: u64,
    },
}

impl std::fmt::Display for SettingsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disabled => f.write_str("the dataset is not enabled for this account"),
            Self::Missing => {
                f.write_str("Cloudflare returned no settings (or no `enabled`) for the dataset")
            }
            Self::FieldsUnavailable(fields) => {
                write!(
                    f,
                    "fields not available to this account: {}",
                    fields.join(", ")
                )
            }
            Self::TooManyFields { asked, allowed } => write!(
                f,
                "the query asks for {asked} fields, the account may ask for {allowed}"
            ),
        }
    }
}

impl DatasetSettings {
    /// What keeps this dataset from answering a query of `fields` (in `parent_child` form).
    /// A dimension counts as available when listed as `dimensions_x` or as `x`: which form
    /// Cloudflare uses for dimensions is not documented, and either means the field exists.
    pub fn problems(&self, fields: &[&str]) -> Vec<SettingsProblem> {
        let mut out = Vec::new();
        match self.enabled {
            Some(true) => {}
            Some(false) => out.push(SettingsProblem::Disabled),
            // `enabled` is `bool!` in the schema: an answer without it is not one to trust.
            None => out.push(SettingsProblem::Missing),
        }
        if let Some(available) = &self.available_fields {
            let has = |f: &str| {
                available.iter().any(|a| a == f)
                    || f.strip_prefix("dimensions_")
                        .is_some_and(|bare| available.iter().any(|a| a == bare))
            };
            let missing: Vec<String> = fields
                .iter()
                .filter(|f| !has(f))
                .map(|f| (*f).to_owned())
                .collect();
            if !missing.is_empty() {
                out.push(SettingsProblem::FieldsUnavailable(missing));
            }
        }
        if let Some(allowed) = self.max_number_of_fields
            && fields.len() as u64 > allowed
        {
            out.push(SettingsProblem::TooManyFields {
                asked: fields.len(),
                allowed,
            });
        }
        out
    }

    /// The limits a query of this dataset must stay within: the given defaults, narrowed by
    /// the settings.
    pub fn limits(&self, window: Duration, limit: u32) -> DatasetLimits {
        DatasetLimits {
            max_window: self.max_duration.map_or(window, |m| window.min(m)),
            max_duration: self.max_duration,
            limit: self
                .max_page_size
                .map_or(limit, |m| limit.min(u32::try_from(m).unwrap_or(u32::MAX)))
                .max(1),
            not_older_than: self.not_older_than,
        }
    }
}

/// The limits one query obeys (from [`DatasetSettings::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetLimits {
    /// Widest window to ask for.
    pub max_window: Duration,
    /// `maxDuration`, if known: no time range of a query (the freshness probe's included) is
    /// wider.
    pub max_duration: Option<Duration>,
    /// `limit` to send.
    pub limit: u32,
    /// `notOlderThan`, if known.
    pub not_older_than: Option<Duration>,
}

impl DatasetLimits {
    /// Where a freshness probe ending at `until` may start, given it wants to start at `from`.
    pub fn probe_start(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> DateTime<Utc> {
        match self
            .max_duration
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| until.checked_sub_signed(d))
        {
            Some(earliest) => from.max(earliest),
            None => from,
        }
    }

    /// The oldest time a query built at `now` may ask for, keeping `margin` (one interval) for
    /// the time between building the query and Cloudflare receiving it; `None`: no limit known.
    pub fn oldest_queryable(&self, now: DateTime<Utc>, margin: Duration) -> Option<DateTime<Utc>> {
        let d = chrono::Duration::from_std(self.not_older_than?).ok()?;
        now.checked_sub_signed(d)?
            .checked_add_signed(chrono::Duration::from_std(margin).ok()?)
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `data.viewer.accounts[0]`.
fn account(body: &Value) -> Result<&Map<String, Value>> {
    body.pointer("/data/viewer/accounts/0")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            Error::Decode(
                "no account in the answer (is the token allowed to read this account's analytics?)"
                    .into(),
            )
        })
}

fn rows<'a>(account: &'a Map<String, Value>, alias: &str) -> Result<&'a Vec<Value>> {
    account
        .get(alias)
        .and_then(Value::as_array)
        .ok_or_else(|| Error::Decode(format!("answer without {alias}[]")))
}

/// A number as Cloudflare sends it (number or numeric string); `None` when missing or not a
/// finite, non-negative number.
fn number(v: Option<&Value>) -> Option<f64> {
    let n = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some(n)
}

/// Longest duration a setting is taken at: a larger value (or Cloudflare's way of saying
/// "unlimited") is read as no limit rather than overflowing time arithmetic.
const MAX_SETTING: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A duration setting in seconds; 0 or absurdly large means no limit (`None`). Either reading
/// is safe: a real limit the suite does not apply makes Cloudflare refuse the query, which is
/// judged unknown, never calm.
fn seconds(v: Option<&Value>) -> Option<Duration> {
    number(v)
        .and_then(|n| Duration::try_from_secs_f64(n).ok())
        .filter(|d| !d.is_zero() && *d <= MAX_SETTING)
}

/// A count setting; 0 means no limit (`None`), as for durations.
fn count(v: Option<&Value>) -> Option<u64> {
    number(v).map(|n| n as u64).filter(|n| *n > 0)
}

fn parse_settings(v: &Value) -> DatasetSettings {
    DatasetSettings {
        enabled: v.get("enabled").and_then(Value::as_bool),
        max_duration: seconds(v.get("maxDuration")),
        max_page_size: count(v.get("maxPageSize")),
        max_number_of_fields: count(v.get("maxNumberOfFields")),
        not_older_than: seconds(v.get("notOlderThan")),
        available_fields: v.get("availableFields").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        }),
    }
}

impl Client {
    /// Dropped traffic of `q.mitigation_systems` (and of rows without a system) per configured
    /// prefix, attributed by real CIDR containment (v4 and v6). A row whose subnet overlaps a
    /// prefix in either direction counts for it: when in doubt, traffic counts as attack.
    pub async fn dropped_traffic(&self, q: &DroppedTrafficQuery<'_>) -> Result<DroppedTraffic> {
        let variables = self.calm_variables(q);
        let reply = self
            .graphql("dropped_traffic", CALM_QUERY, variables)
            .await?;
        let account = account(&reply.body)?;
        let drops = rows(account, "drops")?;
        let mut out = DroppedTraffic {
            per_prefix: q
                .prefixes
                .iter()
                .map(|p| (*p, PrefixDrops::default()))
                .collect(),
            rows: drops.len(),
            truncated: drops.len() >= q.limit as usize,
            served_at: reply.date,
            ..Default::default()
        };
        for row in drops {
            if !attribute(row, q, &mut out.per_prefix) {
                out.unparsed_rows += 1;
            }
        }
        out.latest_minute = latest_minute(account)?;
        Ok(out)
    }

    /// The same drops as [`Client::dropped_traffic`], per five-minute bucket (the confirmation
    /// before a withdrawal, SPEC §7.4). A row whose bucket cannot be read counts as
    /// unattributable (the answer is then not calm).
    pub async fn dropped_traffic_buckets(
        &self,
        q: &DroppedTrafficQuery<'_>,
    ) -> Result<DroppedBuckets> {
        let variables = self.calm_variables(q);
        let reply = self
            .graphql("dropped_traffic_buckets", CONFIRM_QUERY, variables)
            .await?;
        let account = account(&reply.body)?;
        let drops = rows(account, "drops")?;
        let mut out = DroppedBuckets {
            overall: DroppedTraffic {
                rows: drops.len(),
                truncated: drops.len() >= q.limit as usize,
                served_at: reply.date,
                ..Default::default()
            },
            ..Default::default()
        };
        for row in drops {
            let Some(bucket) = row
                .pointer("/dimensions/datetimeFiveMinutes")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
            else {
                out.overall.unparsed_rows += 1;
                continue;
            };
            let per_prefix = out.buckets.entry(bucket).or_insert_with(|| {
                q.prefixes
                    .iter()
                    .map(|p| (*p, PrefixDrops::default()))
                    .collect()
            });
            if !attribute(row, q, per_prefix) {
                out.overall.unparsed_rows += 1;
            }
        }
        out.overall.latest_minute = latest_minute(account)?;
        Ok(out)
    }

    /// The variables of the calm and confirmation queries.
    fn calm_variables(&self, q: &DroppedTrafficQuery<'_>) -> Value {
        json!({
            "accountTag": self.account_id(),
            "start": time(q.start),
            "end": time(q.end),
            "probeStart": time(q.probe_start),
            "until": time(q.data_until),
            "limit": q.limit,
        })
    }

    /// dosd dropped-traffic events in `(start, end)`, newest first, at most `limit` rows.
    pub async fn dosd_events(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: u32,
    ) -> Result<DosdEvents> {
        let variables = json!({
            "accountTag": self.account_id(),
            "start": time(start),
            "end": time(end),
            "limit": limit,
        });
        let reply = self.graphql("dosd_events", EVENTS_QUERY, variables).await?;
        let account = account(&reply.body)?;
        let rows = rows(account, "events")?;
        let events = rows
            .iter()
            .map(|row| DosdEvent {
                dimensions: row
                    .get("dimensions")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                packets: number(row.pointer("/sum/packets")).unwrap_or(0.0) as u64,
                bits: number(row.pointer("/sum/bits")).unwrap_or(0.0) as u64,
            })
            .collect();
        Ok(DosdEvents {
            events,
            truncated: rows.len() >= limit as usize,
            served_at: reply.date,
        })
    }

    /// The `settings` of the calm-tracking and network-analytics datasets. A dataset missing
    /// from the answer is missing from the map.
    pub async fn dataset_settings(&self) -> Result<Settings> {
        let variables = json!({ "accountTag": self.account_id() });
        let reply = self.graphql("settings", SETTINGS_QUERY, variables).await?;
        let account = account(&reply.body)?;
        let settings = account
            .get("settings")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Decode("answer without settings".into()))?;
        Ok([CALM_DATASET, EVENTS_DATASET]
            .iter()
            .filter_map(|d| {
                settings
                    .get(*d)
                    .filter(|v| v.is_object())
                    .map(|v| ((*d).to_owned(), parse_settings(v)))
            })
            .collect())
    }
}

/// Adds one drops row to the prefixes it concerns (real CIDR containment, either direction).
/// Rows of other mitigation systems are skipped; a row without a system counts (when in
/// doubt, it is an attack's traffic). Returns false when the row's subnet cannot be read.
fn attribute(
    row: &Value,
    q: &DroppedTrafficQuery<'_>,
    per_prefix: &mut BTreeMap<IpNet, PrefixDrops>,
) -> bool {
    let system = row
        .pointer("/dimensions/mitigationSystem")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if system.is_some_and(|s| !q.mitigation_systems.iter().any(|m| m == s)) {
        return true;
    }
    let Some(subnet) = row
        .pointer("/dimensions/ipDestinationSubnet")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse::<IpNet>().ok())
    else {
        return false;
    };
    let (packets, bits) = (
        number(row.pointer("/sum/packets")),
        number(row.pointer("/sum/bits")),
    );
    for (prefix, drops) in per_prefix.iter_mut() {
        if prefix.contains(&subnet) || subnet.contains(prefix) {
            match (packets, bits) {
                (Some(p), Some(b)) => {
                    drops.packets += p;
                    drops.bits += b;
                }
                _ => drops.malformed_rows += 1,
            }
            drops.systems.insert(system.unwrap_or(NO_SYSTEM).to_owned());
        }
    }
    true
}

/// Start of the newest minute with any data (the freshness probe).
fn latest_minute(account: &Map<String, Value>) -> Result<Option<DateTime<Utc>>> {
    Ok(rows(account, "latest")?
        .first()
        .and_then(|r| r.pointer("/dimensions/datetimeMinute"))
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc)))
}

/// `errors[]` of a GraphQL answer as an error (a 200 may carry them).
pub(crate) fn graphql_errors(body: &Value) -> Option<Error> {
    let errors = messages(body, "errors");
    (!errors.is_empty()).then_some(Error::GraphQl { errors })
}

/// How often a daemon re-reads its dataset's settings (SPEC §7.2: at start and hourly).
pub const SETTINGS_EVERY: Duration = Duration::from_secs(3600);
/// How soon a failed settings read is tried again.
const SETTINGS_RETRY: Duration = Duration::from_secs(300);

/// What one daemon knows of its dataset's settings: read at start and hourly, shared between
/// its cycle and its `/metrics` (cheap to clone). Pure bookkeeping: the caller reads, alerts
/// and exposes.
#[derive(Debug, Clone)]
pub struct DatasetWatch {
    dataset: &'static str,
    fields: &'static [&'static str],
    state: std::sync::Arc<std::sync::Mutex<WatchState>>,
}

#[derive(Debug, Default)]
struct WatchState {
    next_read: Option<DateTime<Utc>>,
    settings: Option<DatasetSettings>,
    problems: Vec<SettingsProblem>,
    alerted: Option<String>,
}

/// What changed with a settings reading, for the caller to tell the SOC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchChange {
    /// The dataset became unusable (first reading included): alert once.
    Unusable(String),
    /// It is usable again after an alert.
    Usable,
}

impl DatasetWatch {
    /// A watch of `dataset`, queried for `fields` (`parent_child` form).
    pub fn new(dataset: &'static str, fields: &'static [&'static str]) -> Self {
        Self {
            dataset,
            fields,
            state: std::sync::Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A watch of the calm-tracking dataset (mt-autowithdraw).
    pub fn calm() -> Self {
        Self::new(CALM_DATASET, CALM_FIELDS)
    }

    /// A watch of the network-analytics dataset (mt-network-analytics).
    pub fn events() -> Self {
        Self::new(EVENTS_DATASET, EVENTS_FIELDS)
    }

    /// The dataset's name.
    pub fn dataset(&self) -> &'static str {
        self.dataset
    }

    /// Whether the settings should be read now (never read, an hour since, or a failed read's
    /// retry time reached).
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.lock().next_read.is_none_or(|t| now >= t)
    }

    /// Records a reading taken at `now`. A failed read keeps what was known (the queries
    /// themselves still fail or succeed on their own) and is retried in five minutes.
    pub fn record(&self, now: DateTime<Utc>, reading: &Result<Settings>) -> Option<WatchChange> {
        let mut state = self.lock();
        let settings = match reading {
            Ok(all) => all.get(self.dataset).cloned(),
            Err(e) => {
                tracing::warn!(dataset = self.dataset, error = %e, "cannot read the dataset's settings; retrying in 5 minutes");
                state.next_read =
                    Some(now + chrono::Duration::from_std(SETTINGS_RETRY).unwrap_or_default());
                return None;
            }
        };
        state.next_read =
            Some(now + chrono::Duration::from_std(SETTINGS_EVERY).unwrap_or_default());
        state.problems = match &settings {
            Some(s) => s.problems(self.fields),
            None => vec![SettingsProblem::Missing],
        };
        state.settings = settings;
        if state.problems.is_empty() {
            return state.alerted.take().map(|_| WatchChange::Usable);
        }
        let text = state
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if state.alerted.as_deref() == Some(text.as_str()) {
            return None;
        }
        state.alerted = Some(text.clone());
        Some(WatchChange::Unusable(text))
    }

    /// Reads the settings through `client` when due (at start, hourly, five minutes after a
    /// failed read) and records them; returns what changed, for the caller to tell the SOC.
    /// `Some(Some(why))`: it became unusable; `Some(None)`: usable again after an alert.
    pub async fn refresh(&self, client: &Client, now: DateTime<Utc>) -> Option<Option<String>> {
        if !self.due(now) {
            return None;
        }
        let reading = client.dataset_settings().await;
        match self.record(now, &reading)? {
            WatchChange::Unusable(why) => {
                tracing::error!(dataset = self.dataset, %why, "analytics dataset cannot be queried");
                Some(Some(why))
            }
            WatchChange::Usable => {
                tracing::info!(dataset = self.dataset, "analytics dataset usable again");
                Some(None)
            }
        }
    }

    /// Why the dataset cannot be queried now (empty: usable, or not read yet).
    pub fn problems(&self) -> Vec<SettingsProblem> {
        self.lock().problems.clone()
    }

    /// `1` usable, `0` unusable, `-1` settings not read yet (for `/metrics`).
    pub fn usable_gauge(&self) -> f64 {
        let state = self.lock();
        match (&state.settings, state.problems.is_empty()) {
            (_, false) => 0.0,
            (Some(_), true) => 1.0,
            (None, true) => -1.0,
        }
    }

    /// The limits to query within: `window` and `limit` narrowed by the last settings read.
    pub fn limits(&self, window: Duration, limit: u32) -> DatasetLimits {
        self.lock()
            .settings
            .clone()
            .unwrap_or_default()
            .limits(window, limit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn settings_of_zero_or_absurd_size_are_no_limit_and_never_overflow() {
        let s = parse_settings(&json!({
            "enabled": true, "maxDuration": 1e300, "maxPageSize": 0,
            "maxNumberOfFields": "30", "notOlderThan": 9.2e15, "availableFields": ["sum_packets"]
        }));
        assert_eq!(s.max_duration, None);
        assert_eq!(s.max_page_size, None);
        assert_eq!(s.max_number_of_fields, Some(30));
        assert_eq!(s.not_older_than, None);
        let limits = s.limits(Duration::from_secs(300), 10_000);
        assert_eq!(
            (limits.max_window, limits.limit),
            (Duration::from_secs(300), 10_000)
        );
        // Large but accepted values do not overflow either.
        let huge = DatasetLimits {
            max_window: Duration::from_secs(300),
            max_duration: Some(MAX_SETTING),
            limit: 1,
            not_older_than: Some(MAX_SETTING),
        };
        let t = DateTime::<Utc>::MIN_UTC + chrono::Duration::days(1);
        assert_eq!(huge.probe_start(t, t), t);
        assert_eq!(huge.oldest_queryable(t, Duration::from_secs(60)), None);
        let not_a_number = parse_settings(&json!({"enabled": true, "maxDuration": "soon"}));
        assert_eq!(not_a_number.max_duration, None);
    }

    #[test]
    fn an_answer_without_enabled_is_a_problem() {
        let s = parse_settings(&json!({"maxDuration": 3600}));
        assert_eq!(s.problems(CALM_FIELDS), vec![SettingsProblem::Missing]);
        let fields = parse_settings(&json!({
            "enabled": true,
            "availableFields": ["ipDestinationSubnet", "dimensions_mitigationSystem", "sum_packets", "sum_bits"]
        }));
        // Either spelling of a dimension counts; the time buckets are in neither.
        assert_eq!(
            fields.problems(CALM_FIELDS),
            vec![SettingsProblem::FieldsUnavailable(vec![
                "dimensions_datetimeMinute".into(),
                "dimensions_datetimeFiveMinutes".into()
            ])]
        );
    }

    mod properties {
        //! Properties of the settings decisions: the dataset is called usable only when every
        //! condition holds, and every limit derived from the settings stays within them.
        use super::*;
        use proptest::prelude::*;

        const NAMES: &[&str] = &[
            "ipDestinationSubnet",
            "mitigationSystem",
            "datetimeMinute",
            "outcome",
        ];

        fn settings() -> impl Strategy<Value = DatasetSettings> {
            (
                prop_oneof![Just(None), any::<bool>().prop_map(Some)],
                prop::option::of(1u64..10_000_000),
                prop::option::of(1u64..100_000),
                prop::option::of(1u64..40),
                prop::option::of(1u64..10_000_000),
                prop::option::of(prop::collection::vec(
                    prop_oneof![
                        prop::sample::select(NAMES).prop_map(str::to_owned),
                        prop::sample::select(NAMES).prop_map(|n| format!("dimensions_{n}")),
                        Just("sum_packets".to_owned()),
                        Just("sum_bits".to_owned()),
                    ],
                    0..10,
                )),
            )
                .prop_map(|(enabled, dur, page, fields, older, available)| {
                    DatasetSettings {
                        enabled,
                        max_duration: dur.map(Duration::from_secs),
                        max_page_size: page,
                        max_number_of_fields: fields,
                        not_older_than: older.map(Duration::from_secs),
                        available_fields: available,
                    }
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn usable_only_when_every_condition_holds(s in settings()) {
                let usable = s.problems(CALM_FIELDS).is_empty();
                let available = |f: &str| s.available_fields.as_ref().is_none_or(|a| {
                    a.iter().any(|x| x == f)
                        || f.strip_prefix("dimensions_").is_some_and(|b| a.iter().any(|x| x == b))
                });
                let expected = s.enabled == Some(true)
                    && CALM_FIELDS.iter().all(|f| available(f))
                    && s.max_number_of_fields.is_none_or(|m| CALM_FIELDS.len() as u64 <= m);
                prop_assert_eq!(usable, expected);
            }

            #[test]
            fn derived_limits_stay_within_the_settings(
                s in settings(),
                window_secs in 1u64..100_000,
                limit in 1u32..20_000,
                from_back in 0i64..10_000_000,
            ) {
                let l = s.limits(Duration::from_secs(window_secs), limit);
                prop_assert!(l.max_window <= Duration::from_secs(window_secs));
                prop_assert!(s.max_duration.is_none_or(|m| l.max_window <= m));
                prop_assert!(l.limit >= 1 && l.limit <= limit);
                prop_assert!(s.max_page_size.is_none_or(|m| u64::from(l.limit) <= m));
                let until = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
                let from = until - chrono::Duration::seconds(from_back);
                let probe = l.probe_start(from, until);
                prop_assert!(probe >= from);
                if let Some(m) = s.max_duration {
                    prop_assert!(until - probe <= chrono::Duration::from_std(m).unwrap());
                }
                if let (Some(oldest), Some(n)) = (l.oldest_queryable(until, Duration::from_secs(60)), s.not_older_than) {
                    prop_assert_eq!(until - oldest, chrono::Duration::from_std(n).unwrap() - chrono::Duration::seconds(60));
                }
            }
        }
    }
}

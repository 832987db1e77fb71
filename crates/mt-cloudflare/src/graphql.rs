//! GraphQL: dropped traffic per configured prefix (calm tracking, SPEC §7) and dosd
//! dropped-traffic events (network analytics, SPEC §8).
//!
//! Only field names documented in the fixtures are used: a guessed filter that Cloudflare
//! ignored would silently change what is counted. In particular the restriction to mitigation
//! systems is applied here, on the `mitigationSystem` dimension, not with a filter.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::{Client, Error, Result, messages};

/// Calm tracking: dropped ingress traffic by destination subnet and mitigation system, and how
/// far the account's data reaches (any traffic, clean included).
const CALM_QUERY: &str = r#"query MtCalm($accountTag: string!, $start: Time!, $end: Time!, $until: Time!, $limit: uint64!) {
  viewer {
    accounts(filter: { accountTag: $accountTag }) {
      drops: magicTransitNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_geq: $start, datetime_lt: $end, outcome: "drop", direction: "ingress" }
        limit: $limit
        orderBy: [sum_packets_DESC]
      ) {
        dimensions { ipDestinationSubnet mitigationSystem }
        sum { packets bits }
        avg { sampleInterval }
      }
      latest: magicTransitNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_geq: $start, datetime_leq: $until }
        limit: 1
        orderBy: [datetimeMinute_DESC]
      ) {
        dimensions { datetimeMinute }
      }
    }
  }
}"#;

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

/// What to judge.
#[derive(Debug, Clone)]
pub struct DroppedTrafficQuery<'a> {
    /// Window start (inclusive).
    pub start: DateTime<Utc>,
    /// Window end, exclusive (`datetime_lt`): consecutive windows count each bucket once.
    pub end: DateTime<Utc>,
    /// How far to look for the newest data of any kind (usually "now").
    pub data_until: DateTime<Utc>,
    /// Whose drops count.
    pub mitigation_systems: &'a [String],
    /// The configured prefixes.
    pub prefixes: &'a [IpNet],
    /// Row limit of the query; a result with this many rows is incomplete.
    pub limit: u32,
}

/// Dropped traffic attributed to one configured prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixDrops {
    /// `sum.packets` of the attributed rows, as Cloudflare returned it.
    pub packets: f64,
    /// `sum.bits` of the attributed rows, as Cloudflare returned it.
    pub bits: f64,
    /// Mitigation systems seen.
    pub systems: BTreeSet<String>,
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
    /// Largest `avg.sampleInterval` among the rows (1 = unsampled), if reported.
    pub sample_interval: Option<f64>,
    /// Start of the newest minute with any traffic in `[start, data_until]`; `None`: no data.
    pub latest_minute: Option<DateTime<Utc>>,
    /// Cloudflare's `Date` header (compare with the local clock for skew).
    pub served_at: Option<DateTime<Utc>>,
}

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

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `data.viewer.accounts[0]`, or the GraphQL errors.
fn account(body: &Value) -> Result<&Map<String, Value>> {
    let errors = messages(body, "errors");
    if !errors.is_empty() {
        return Err(Error::GraphQl { errors });
    }
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

fn number(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

impl Client {
    /// Dropped ingress traffic of `q.mitigation_systems` per configured prefix, attributed by
    /// real CIDR containment (v4 and v6). A row whose subnet overlaps a prefix in either
    /// direction counts for it: when in doubt, traffic counts as attack.
    pub async fn dropped_traffic(&self, q: &DroppedTrafficQuery<'_>) -> Result<DroppedTraffic> {
        let body = json!({
            "query": CALM_QUERY,
            "variables": {
                "accountTag": self.account_id(),
                "start": time(q.start),
                "end": time(q.end),
                "until": time(q.data_until),
                "limit": q.limit,
            }
        });
        let url = self.graphql_url.clone();
        let reply = self
            .call("dropped_traffic", |http| http.post(url.clone()).json(&body))
            .await?;
        let parsed = (|| {
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
                let system = row
                    .pointer("/dimensions/mitigationSystem")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !q.mitigation_systems.iter().any(|s| s == system) {
                    continue;
                }
                let Some(subnet) = row
                    .pointer("/dimensions/ipDestinationSubnet")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<IpNet>().ok())
                else {
                    out.unparsed_rows += 1;
                    continue;
                };
                if let Some(interval) = row.pointer("/avg/sampleInterval").map(|v| number(Some(v)))
                {
                    out.sample_interval = Some(
                        out.sample_interval
                            .map_or(interval, |s: f64| s.max(interval)),
                    );
                }
                for (prefix, drops) in out.per_prefix.iter_mut() {
                    if prefix.contains(&subnet) || subnet.contains(prefix) {
                        drops.packets += number(row.pointer("/sum/packets"));
                        drops.bits += number(row.pointer("/sum/bits"));
                        drops.systems.insert(system.to_owned());
                    }
                }
            }
            out.latest_minute = rows(account, "latest")?
                .first()
                .and_then(|r| r.pointer("/dimensions/datetimeMinute"))
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc));
            Ok(out)
        })();
        if let Err(e) = &parsed {
            self.note_rate_limit(e);
        }
        parsed
    }

    /// dosd dropped-traffic events in `(start, end)`, newest first, at most `limit` rows.
    pub async fn dosd_events(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: u32,
    ) -> Result<DosdEvents> {
        let body = json!({
            "query": EVENTS_QUERY,
            "variables": {
                "accountTag": self.account_id(),
                "start": time(start),
                "end": time(end),
                "limit": limit,
            }
        });
        let url = self.graphql_url.clone();
        let reply = self
            .call("dosd_events", |http| http.post(url.clone()).json(&body))
            .await?;
        let parsed = (|| {
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
                    packets: number(row.pointer("/sum/packets")) as u64,
                    bits: number(row.pointer("/sum/bits")) as u64,
                })
                .collect();
            Ok(DosdEvents {
                events,
                truncated: rows.len() >= limit as usize,
                served_at: reply.date,
            })
        })();
        if let Err(e) = &parsed {
            self.note_rate_limit(e);
        }
        parsed
    }
}

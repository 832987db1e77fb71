//! The GraphQL analytics endpoint: validates a query against the documented datasets, fields
//! and filters, and answers it from the traffic timeline.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::gql::Field;
use crate::{State, TrafficSpec};

const MAGIC_TRANSIT: &str = "magicTransitNetworkAnalyticsAdaptiveGroups";
const DOSD: &str = "dosdNetworkAnalyticsAdaptiveGroups";

/// Dimensions documented for calm tracking (fixtures/README.md), plus `datetimeMinute`.
const MT_DIMENSIONS: &[&str] = &[
    "ipDestinationSubnet",
    "mitigationSystem",
    "ipDestinationAddress",
    "direction",
    "datetimeMinute",
];
/// Dimensions documented for the dosd events query.
const DOSD_DIMENSIONS: &[&str] = &[
    "datetime",
    "datetimeMinute",
    "attackId",
    "attackVector",
    "ruleName",
    "ruleId",
    "mitigationReason",
    "outcome",
    "verdict",
    "ipSourceAddress",
    "sourcePort",
    "sourceAsn",
    "sourceAsnName",
    "sourceCountry",
    "ipDestinationAddress",
    "destinationPort",
    "ipProtocolName",
    "tcpFlagsString",
    "coloCode",
    "coloCountry",
    "coloCity",
];
const FILTERS: &[&str] = &[
    "datetime_geq",
    "datetime_leq",
    "datetime_gt",
    "datetime_lt",
    "outcome",
    "direction",
];
const ORDERS: &[&str] = &[
    "sum_packets_DESC",
    "sum_bits_DESC",
    "datetimeMinute_DESC",
    "datetimeMinute_ASC",
    "datetime_DESC",
    "datetime_ASC",
];
/// Cloudflare's maximum `limit`.
const MAX_LIMIT: i64 = 10_000;

/// Rows with the same requested dimension values, aggregated.
struct Group {
    dims: Map<String, Value>,
    packets: f64,
    bits: f64,
    count: u64,
    latest: DateTime<Utc>,
}

/// One generated raw row: dimension values, packets, bits, time.
struct Raw {
    dims: Map<String, Value>,
    at: DateTime<Utc>,
    packets: f64,
    bits: f64,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn unknown(field: &str, on: &str) -> String {
    format!("Cannot query field \"{field}\" on type \"{on}\"")
}

/// Answers a parsed query (`data` object) or returns the GraphQL error message.
pub fn execute(state: &State, top: &[Field], now: DateTime<Utc>) -> Result<Value, String> {
    let mut data = Map::new();
    for viewer in top {
        if viewer.name != "viewer" {
            return Err(unknown(&viewer.name, "Query"));
        }
        let mut viewer_out = Map::new();
        for accounts in &viewer.selections {
            if accounts.name != "accounts" {
                return Err(unknown(&accounts.name, "viewer"));
            }
            let tag = accounts
                .args
                .get("filter")
                .and_then(|f| f.get("accountTag"))
                .and_then(Value::as_str);
            let mut list = Vec::new();
            if tag == Some(state.scenario.account_id.as_str()) {
                let mut account = Map::new();
                for dataset in &accounts.selections {
                    account.insert(
                        dataset.key().to_owned(),
                        Value::Array(dataset_rows(state, dataset, now)?),
                    );
                }
                list.push(Value::Object(account));
            }
            viewer_out.insert(accounts.key().to_owned(), Value::Array(list));
        }
        data.insert(viewer.key().to_owned(), Value::Object(viewer_out));
    }
    Ok(Value::Object(data))
}

fn dataset_rows(state: &State, field: &Field, now: DateTime<Utc>) -> Result<Vec<Value>, String> {
    let allowed = match field.name.as_str() {
        MAGIC_TRANSIT => MT_DIMENSIONS,
        DOSD => DOSD_DIMENSIONS,
        other => return Err(unknown(other, "account")),
    };
    for arg in field.args.keys() {
        if !["filter", "limit", "orderBy"].contains(&arg.as_str()) {
            return Err(format!(
                "Unknown argument \"{arg}\" on field \"{}\"",
                field.name
            ));
        }
    }
    let filter = field
        .args
        .get("filter")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for key in filter.keys() {
        if !FILTERS.contains(&key.as_str()) {
            return Err(format!("unknown filter field \"{key}\" on {}", field.name));
        }
    }
    let limit = match field.args.get("limit") {
        None => 100,
        Some(v) => v.as_i64().ok_or("limit must be an integer")?,
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(format!("limit must be between 1 and {MAX_LIMIT}"));
    }
    let orders: Vec<String> = match field.args.get("orderBy") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(_) => return Err("orderBy must be a list".into()),
    };
    if let Some(bad) = orders.iter().find(|o| !ORDERS.contains(&o.as_str())) {
        return Err(format!("unknown orderBy value \"{bad}\""));
    }

    let mut dims = Vec::new();
    let (mut sums, mut avgs, mut count) = (Vec::new(), Vec::new(), false);
    for sel in &field.selections {
        match sel.name.as_str() {
            "dimensions" => {
                for d in &sel.selections {
                    if !allowed.contains(&d.name.as_str()) {
                        return Err(unknown(&d.name, &format!("{}Dimensions", field.name)));
                    }
                    dims.push(d.name.clone());
                }
            }
            "sum" => {
                for s in &sel.selections {
                    if !["packets", "bits"].contains(&s.name.as_str()) {
                        return Err(unknown(&s.name, &format!("{}Sum", field.name)));
                    }
                    sums.push(s.name.clone());
                }
            }
            "avg" => {
                for a in &sel.selections {
                    if a.name != "sampleInterval" {
                        return Err(unknown(&a.name, &format!("{}Avg", field.name)));
                    }
                    avgs.push(a.name.clone());
                }
            }
            "count" => count = true,
            other => return Err(unknown(other, &field.name)),
        }
    }

    let bound = |key: &str| -> Result<Option<DateTime<Utc>>, String> {
        match filter.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| format!("{key}: invalid Time {s:?}")),
            Some(other) => Err(format!("{key}: invalid Time {other}")),
        }
    };
    let (geq, leq, gt, lt) = (
        bound("datetime_geq")?,
        bound("datetime_leq")?,
        bound("datetime_gt")?,
        bound("datetime_lt")?,
    );
    let from = geq
        .or(gt)
        .ok_or("a datetime_geq or datetime_gt filter is required")?;
    let to = leq
        .or(lt)
        .ok_or("a datetime_leq or datetime_lt filter is required")?;
    let in_range = |t: DateTime<Utc>| {
        geq.is_none_or(|b| t >= b)
            && gt.is_none_or(|b| t > b)
            && leq.is_none_or(|b| t <= b)
            && lt.is_none_or(|b| t < b)
    };
    let text = |key: &str| filter.get(key).and_then(Value::as_str).map(str::to_owned);
    let (outcome, direction) = (text("outcome"), text("direction"));

    let raws = if field.name == DOSD {
        dosd_rows(state, from, to, now)
    } else {
        mt_rows(state, from, to, now)
    };
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for raw in raws {
        if !in_range(raw.at)
            || outcome
                .as_ref()
                .is_some_and(|o| raw.dims.get("outcome").and_then(Value::as_str) != Some(o))
            || direction
                .as_ref()
                .is_some_and(|d| raw.dims.get("direction").and_then(Value::as_str) != Some(d))
        {
            continue;
        }
        let key_dims: Map<String, Value> = dims
            .iter()
            .map(|d| (d.clone(), raw.dims.get(d).cloned().unwrap_or(Value::Null)))
            .collect();
        let key = Value::Object(key_dims.clone()).to_string();
        let entry = groups.entry(key).or_insert(Group {
            dims: key_dims,
            packets: 0.0,
            bits: 0.0,
            count: 0,
            latest: raw.at,
        });
        entry.packets += raw.packets;
        entry.bits += raw.bits;
        entry.count += 1;
        entry.latest = entry.latest.max(raw.at);
    }
    let mut rows: Vec<_> = groups.into_values().collect();
    for order in orders.iter().rev() {
        match order.as_str() {
            "sum_packets_DESC" => rows.sort_by(|a, b| b.packets.total_cmp(&a.packets)),
            "sum_bits_DESC" => rows.sort_by(|a, b| b.bits.total_cmp(&a.bits)),
            o if o.ends_with("_DESC") => rows.sort_by_key(|g| std::cmp::Reverse(g.latest)),
            _ => rows.sort_by_key(|g| g.latest),
        }
    }
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(rows
        .into_iter()
        .map(
            |Group {
                 dims: dims_out,
                 packets,
                 bits,
                 count: n,
                 ..
             }| {
                let mut row = Map::new();
                if !dims.is_empty() {
                    row.insert("dimensions".into(), Value::Object(dims_out));
                }
                if !sums.is_empty() {
                    let mut sum = Map::new();
                    for s in &sums {
                        let v = if s == "packets" { packets } else { bits };
                        sum.insert(s.clone(), json!(v.round() as u64));
                    }
                    row.insert("sum".into(), Value::Object(sum));
                }
                if !avgs.is_empty() {
                    row.insert(
                        "avg".into(),
                        json!({ "sampleInterval": state.scenario.sample_interval }),
                    );
                }
                if count {
                    row.insert("count".into(), json!(n));
                }
                Value::Object(row)
            },
        )
        .collect())
}

/// Bucket starts in `[from, to]` that the pipeline has delivered, with their completeness.
fn buckets(
    state: &State,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, f64)> {
    let width = Duration::from_std(state.scenario.bucket)
        .unwrap_or(Duration::seconds(60))
        .max(Duration::seconds(1));
    let lag = Duration::from_std(state.scenario.lag).unwrap_or_default();
    let partial = Duration::from_std(state.scenario.partial).unwrap_or_default();
    let origin = state.start;
    let steps = (from - origin)
        .num_milliseconds()
        .div_euclid(width.num_milliseconds());
    let mut b = origin + width * i32::try_from(steps).unwrap_or(i32::MIN);
    let mut out = Vec::new();
    while b <= to && out.len() < 100_000 {
        if b + lag > now {
            break;
        }
        let factor = if b + lag + partial > now { 0.5 } else { 1.0 };
        out.push((b, factor));
        b += width;
    }
    out
}

fn active(spec: &TrafficSpec, state: &State, bucket: DateTime<Utc>) -> bool {
    bucket >= state.start + Duration::seconds(spec.from_secs)
        && bucket < state.start + Duration::seconds(spec.to_secs)
}

fn subnet(ip: IpAddr) -> String {
    let len = if ip.is_ipv4() { 24 } else { 64 };
    IpNet::new(ip, len)
        .map(|n| n.trunc().to_string())
        .unwrap_or_default()
}

fn mt_rows(state: &State, from: DateTime<Utc>, to: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Raw> {
    let secs = state.scenario.bucket.as_secs_f64().max(1.0);
    let mut rows = Vec::new();
    for (b, factor) in buckets(state, from, to, now) {
        let mut push = |dest: IpAddr, system: &str, outcome: &str, pps: f64, mbps: f64| {
            let dims = json!({
                "datetimeMinute": time(b),
                "ipDestinationAddress": dest.to_string(),
                "ipDestinationSubnet": subnet(dest),
                "mitigationSystem": system,
                "direction": "ingress",
                "outcome": outcome,
            });
            rows.push(Raw {
                dims: dims.as_object().cloned().unwrap_or_default(),
                at: b,
                packets: pps * secs * factor,
                bits: mbps * 1e6 * secs * factor,
            });
        };
        for p in &state.prefixes {
            let first = p.cidr.hosts().next().unwrap_or_else(|| p.cidr.addr());
            push(
                first,
                "",
                "pass",
                state.scenario.clean_pps,
                state.scenario.clean_pps * 8e-6 * 500.0,
            );
        }
        for spec in state.traffic.iter().filter(|s| active(s, state, b)) {
            let outcome = if spec.system.is_empty() {
                "pass"
            } else {
                "drop"
            };
            push(spec.destination, &spec.system, outcome, spec.pps, spec.mbps);
        }
    }
    rows
}

const COUNTRIES: &[&str] = &["DE", "US", "CN", "BR", "RU", "NL", "IN"];
const COLOS: &[(&str, &str, &str)] = &[
    ("FRA", "DE", "Frankfurt"),
    ("AMS", "NL", "Amsterdam"),
    ("LHR", "GB", "London"),
];

fn dosd_rows(
    state: &State,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Raw> {
    let width = state.scenario.bucket.as_secs().max(1);
    let secs = state.scenario.bucket.as_secs_f64().max(1.0);
    let mut rows = Vec::new();
    for (b, factor) in buckets(state, from, to, now) {
        for spec in state
            .traffic
            .iter()
            .filter(|s| s.system == "dosd" && active(s, state, b))
        {
            let n = spec.sources.max(1);
            for s in 0..n {
                let at = b + Duration::seconds(i64::from(s) % i64::try_from(width).unwrap_or(60));
                let colo = COLOS[s as usize % COLOS.len()];
                let source = format!("45.{}.{}.{}", 10 + (s >> 16) % 200, (s >> 8) & 255, s & 255);
                let vector = spec.vector.clone().unwrap_or_else(|| "UDP Flood".into());
                let dims = json!({
                    "datetime": time(at),
                    "datetimeMinute": time(b),
                    "attackId": spec.attack_id.clone().unwrap_or_default(),
                    "attackVector": vector,
                    "ruleName": format!("{vector} protection"),
                    "ruleId": "a1b2c3d4e5f647389a0b1c2d3e4f5a6b",
                    "mitigationReason": "BLOCKED",
                    "outcome": "drop",
                    "verdict": "drop",
                    "ipSourceAddress": source,
                    "sourcePort": 1024 + (s % 60_000),
                    "sourceAsn": 64_500 + (s % 10),
                    "sourceAsnName": format!("SIM-NET-{}", s % 10),
                    "sourceCountry": COUNTRIES[s as usize % COUNTRIES.len()],
                    "ipDestinationAddress": spec.destination.to_string(),
                    "destinationPort": spec.port,
                    "ipProtocolName": spec.protocol,
                    "tcpFlagsString": if spec.protocol == "TCP" { "SYN" } else { "" },
                    "coloCode": colo.0,
                    "coloCountry": colo.1,
                    "coloCity": colo.2,
                });
                rows.push(Raw {
                    dims: dims.as_object().cloned().unwrap_or_default(),
                    at,
                    packets: spec.pps * secs * factor / f64::from(n),
                    bits: spec.mbps * 1e6 * secs * factor / f64::from(n),
                });
            }
        }
    }
    rows
}

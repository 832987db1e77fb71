//! The GraphQL analytics endpoint: answers a query (already validated against Cloudflare's
//! schema by [`crate::schema::validate`]) from the traffic timeline, enforcing the datasets'
//! `settings` as Cloudflare does. Every filter, `limit` and `orderBy` it accepts is evaluated;
//! one that is valid on Cloudflare but not simulated is refused with an error naming it,
//! never silently ignored (an ignored filter would make a test pass that production fails).

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::gql::Field;
use crate::scenario::DatasetSettings;
use crate::{State, TrafficSpec};

const MAGIC_TRANSIT: &str = "magicTransitNetworkAnalyticsAdaptiveGroups";
const DOSD: &str = "dosdNetworkAnalyticsAdaptiveGroups";

/// Dimensions the simulator produces for the calm-tracking dataset.
const MT_DIMENSIONS: &[&str] = &[
    "ipDestinationSubnet",
    "mitigationSystem",
    "ipDestinationAddress",
    "direction",
    "outcome",
    "sampleInterval",
    "datetime",
    "datetimeMinute",
    "datetimeFiveMinutes",
];
/// Dimensions the simulator produces for the dosd dataset.
const DOSD_DIMENSIONS: &[&str] = &[
    "datetime",
    "datetimeMinute",
    "datetimeFiveMinutes",
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
    "sampleInterval",
];
/// Sum fields the simulator produces.
const SUMS: &[&str] = &["packets", "bits"];
/// Dimensions a filter may compare by equality, `_neq`, `_in` or `_notin`.
const EQUALITY_FILTERS: &[&str] = &[
    "outcome",
    "direction",
    "mitigationSystem",
    "ipDestinationSubnet",
    "ipDestinationAddress",
    "attackId",
];
/// Time bounds.
const TIME_FILTERS: &[&str] = &["datetime_geq", "datetime_leq", "datetime_gt", "datetime_lt"];

/// Rows with the same requested dimension values, aggregated.
struct Group {
    dims: Map<String, Value>,
    packets: f64,
    bits: f64,
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

/// A GraphQL error with the field path it concerns, as Cloudflare reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecError {
    /// The message.
    pub message: String,
    /// The path (`viewer`, `accounts`, `0`, the node's alias).
    pub path: Vec<String>,
}

fn fail<T>(message: impl Into<String>, path: &[&str]) -> Result<T, ExecError> {
    Err(ExecError {
        message: message.into(),
        path: path.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// The settings the simulator applies to `dataset`.
pub fn settings_of(state: &State, dataset: &str) -> DatasetSettings {
    state
        .scenario
        .settings
        .get(dataset)
        .cloned()
        .unwrap_or_default()
}

/// `availableFields` of a dataset: dimensions bare (as in `orderBy`), sums `sum_x`.
fn available_fields(dataset: &str) -> Vec<String> {
    let dims = if dataset == DOSD {
        DOSD_DIMENSIONS
    } else {
        MT_DIMENSIONS
    };
    dims.iter()
        .map(|d| (*d).to_owned())
        .chain(SUMS.iter().map(|s| format!("sum_{s}")))
        .collect()
}

fn settings_json(state: &State, dataset: &str, selections: &[Field]) -> Value {
    let s = settings_of(state, dataset);
    let mut out = Map::new();
    for f in selections {
        let v = match f.name.as_str() {
            "enabled" => json!(s.enabled),
            "maxDuration" => json!(s.max_duration.as_secs()),
            "maxPageSize" => json!(s.max_page_size),
            "maxNumberOfFields" => json!(s.max_number_of_fields),
            "notOlderThan" => json!(s.not_older_than.as_secs()),
            "availableFields" => json!(
                s.available_fields
                    .clone()
                    .unwrap_or_else(|| available_fields(dataset))
            ),
            _ => Value::Null,
        };
        out.insert(f.key().to_owned(), v);
    }
    Value::Object(out)
}

/// Answers a parsed query (`data` object) or returns the GraphQL error.
pub fn execute(state: &State, top: &[Field], now: DateTime<Utc>) -> Result<Value, ExecError> {
    let mut data = Map::new();
    for viewer in top {
        let mut viewer_out = Map::new();
        for accounts in &viewer.selections {
            let tag = accounts
                .args
                .get("filter")
                .and_then(|f| f.get("accountTag"))
                .and_then(Value::as_str);
            let mut list = Vec::new();
            if tag == Some(state.scenario.account_id.as_str()) {
                let mut account = Map::new();
                for node in &accounts.selections {
                    let value = if node.name == "settings" {
                        let mut per = Map::new();
                        for d in &node.selections {
                            per.insert(
                                d.key().to_owned(),
                                settings_json(state, &d.name, &d.selections),
                            );
                        }
                        Value::Object(per)
                    } else {
                        Value::Array(dataset_rows(state, node, now)?)
                    };
                    account.insert(node.key().to_owned(), value);
                }
                list.push(Value::Object(account));
            }
            viewer_out.insert(accounts.key().to_owned(), Value::Array(list));
        }
        data.insert(viewer.key().to_owned(), Value::Object(viewer_out));
    }
    Ok(Value::Object(data))
}

/// An equality-style filter on one dimension.
struct DimFilter {
    dimension: String,
    /// `true`: the row must match one of `values`; `false`: none of them.
    include: bool,
    values: Vec<Value>,
}

fn dataset_rows(state: &State, field: &Field, now: DateTime<Utc>) -> Result<Vec<Value>, ExecError> {
    let path = ["viewer", "accounts", "0", field.key()];
    let allowed = match field.name.as_str() {
        MAGIC_TRANSIT => MT_DIMENSIONS,
        DOSD => DOSD_DIMENSIONS,
        other => {
            return fail(
                format!("cf-sim does not simulate the {other} dataset"),
                &path,
            );
        }
    };
    let settings = settings_of(state, &field.name);
    if !settings.enabled {
        return fail(
            format!("dataset {} is not available to this account", field.name),
            &path,
        );
    }
    let filter = field
        .args
        .get("filter")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut dim_filters = Vec::new();
    for (key, value) in &filter {
        if TIME_FILTERS.contains(&key.as_str()) {
            continue;
        }
        let (dimension, include, values) = if let Some(d) = key.strip_suffix("_neq") {
            (d, false, vec![value.clone()])
        } else if let Some(d) = key.strip_suffix("_notin") {
            (d, false, value.as_array().cloned().unwrap_or_default())
        } else if let Some(d) = key.strip_suffix("_in") {
            (d, true, value.as_array().cloned().unwrap_or_default())
        } else {
            (key.as_str(), true, vec![value.clone()])
        };
        if !EQUALITY_FILTERS.contains(&dimension) {
            return fail(
                format!(
                    "cf-sim does not simulate the filter {key} (valid on Cloudflare): refused rather than ignored"
                ),
                &path,
            );
        }
        dim_filters.push(DimFilter {
            dimension: dimension.to_owned(),
            include,
            values,
        });
    }
    let Some(limit) = field.args.get("limit").and_then(Value::as_u64) else {
        return fail("limit must be an unsigned integer", &path);
    };
    if limit > settings.max_page_size {
        return fail(
            format!("limit must be less or equal to {}", settings.max_page_size),
            &path,
        );
    }
    let orders: Vec<String> = match field.args.get("orderBy") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(_) => return fail("orderBy must be a list", &path),
    };
    for order in &orders {
        let simulated = matches!(
            order.as_str(),
            "sum_packets_DESC" | "sum_packets_ASC" | "sum_bits_DESC" | "sum_bits_ASC"
        ) || ["datetime", "datetimeMinute", "datetimeFiveMinutes"]
            .iter()
            .any(|d| *order == format!("{d}_DESC") || *order == format!("{d}_ASC"));
        if !simulated {
            return fail(
                format!(
                    "cf-sim does not simulate orderBy {order} (valid on Cloudflare): refused rather than ignored"
                ),
                &path,
            );
        }
    }

    let mut dims = Vec::new();
    let mut sums = Vec::new();
    for sel in &field.selections {
        match sel.name.as_str() {
            "dimensions" => {
                for d in &sel.selections {
                    if !allowed.contains(&d.name.as_str()) {
                        return fail(
                            format!(
                                "cf-sim does not simulate the dimension {} (valid on Cloudflare)",
                                d.name
                            ),
                            &path,
                        );
                    }
                    dims.push((d.key().to_owned(), d.name.clone()));
                }
            }
            "sum" => {
                for x in &sel.selections {
                    if !SUMS.contains(&x.name.as_str()) {
                        return fail(
                            format!(
                                "cf-sim does not simulate sum.{} (valid on Cloudflare)",
                                x.name
                            ),
                            &path,
                        );
                    }
                    sums.push((x.key().to_owned(), x.name.clone()));
                }
            }
            other => {
                return fail(
                    format!("cf-sim does not simulate {other} (valid on Cloudflare)"),
                    &path,
                );
            }
        }
    }
    if let Some(available) = &settings.available_fields {
        let has = |f: &str| available.iter().any(|a| a == f);
        let asked = dims
            .iter()
            .map(|(_, d)| (d.clone(), format!("dimensions_{d}")))
            .chain(
                sums.iter()
                    .map(|(_, x)| (format!("sum_{x}"), format!("sum_{x}"))),
            );
        for (bare, nested) in asked {
            if !has(&bare) && !has(&nested) {
                return fail(
                    format!("field {nested} is not available for this account"),
                    &path,
                );
            }
        }
    }
    let fields = dims.len() + sums.len();
    if fields as u64 > settings.max_number_of_fields {
        return fail(
            format!(
                "number of fields cannot be more than {}",
                settings.max_number_of_fields
            ),
            &path,
        );
    }

    let bound = |key: &str| -> Result<Option<DateTime<Utc>>, ExecError> {
        match filter.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
                Ok(t) => Ok(Some(t.with_timezone(&Utc))),
                Err(_) => fail(
                    format!("error parsing args: {key}: invalid Time {s:?}"),
                    &path,
                ),
            },
            Some(other) => fail(
                format!("error parsing args: {key}: invalid Time {other}"),
                &path,
            ),
        }
    };
    let (geq, leq, gt, lt) = (
        bound("datetime_geq")?,
        bound("datetime_leq")?,
        bound("datetime_gt")?,
        bound("datetime_lt")?,
    );
    let (Some(from), Some(to)) = (geq.or(gt), leq.or(lt)) else {
        return fail(
            "a time range is required: datetime_geq or datetime_gt, and datetime_leq or datetime_lt",
            &path,
        );
    };
    let max_duration = Duration::from_std(settings.max_duration).unwrap_or(Duration::MAX);
    if to - from > max_duration {
        return fail(
            format!(
                "time range is too large: it must not be wider than {}s",
                settings.max_duration.as_secs()
            ),
            &path,
        );
    }
    let not_older = Duration::from_std(settings.not_older_than).unwrap_or(Duration::MAX);
    if from < now - not_older {
        return fail(
            format!(
                "cannot request data older than {}s",
                settings.not_older_than.as_secs()
            ),
            &path,
        );
    }
    let in_range = |t: DateTime<Utc>| {
        geq.is_none_or(|b| t >= b)
            && gt.is_none_or(|b| t > b)
            && leq.is_none_or(|b| t <= b)
            && lt.is_none_or(|b| t < b)
    };

    let raws = if field.name == DOSD {
        dosd_rows(state, from, to, now)
    } else {
        mt_rows(state, from, to, now)
    };
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for raw in raws {
        if !in_range(raw.at)
            || !dim_filters.iter().all(|f| {
                let v = raw.dims.get(&f.dimension).unwrap_or(&Value::Null);
                f.values.iter().any(|x| x == v) == f.include
            })
        {
            continue;
        }
        let key_dims: Map<String, Value> = dims
            .iter()
            .map(|(key, d)| (key.clone(), raw.dims.get(d).cloned().unwrap_or(Value::Null)))
            .collect();
        let key = Value::Object(key_dims.clone()).to_string();
        let entry = groups.entry(key).or_insert(Group {
            dims: key_dims,
            packets: 0.0,
            bits: 0.0,
            latest: raw.at,
        });
        entry.packets += raw.packets;
        entry.bits += raw.bits;
        entry.latest = entry.latest.max(raw.at);
    }
    let mut rows: Vec<_> = groups.into_values().collect();
    for order in orders.iter().rev() {
        match order.as_str() {
            "sum_packets_DESC" => rows.sort_by(|a, b| b.packets.total_cmp(&a.packets)),
            "sum_packets_ASC" => rows.sort_by(|a, b| a.packets.total_cmp(&b.packets)),
            "sum_bits_DESC" => rows.sort_by(|a, b| b.bits.total_cmp(&a.bits)),
            "sum_bits_ASC" => rows.sort_by(|a, b| a.bits.total_cmp(&b.bits)),
            o if o.ends_with("_DESC") => rows.sort_by_key(|g| std::cmp::Reverse(g.latest)),
            _ => rows.sort_by_key(|g| g.latest),
        }
    }
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(rows
        .into_iter()
        .map(|g| {
            let mut row = Map::new();
            if !dims.is_empty() {
                row.insert("dimensions".into(), Value::Object(g.dims));
            }
            if !sums.is_empty() {
                let mut sum = Map::new();
                for (key, name) in &sums {
                    let v = if name == "packets" { g.packets } else { g.bits };
                    sum.insert(key.clone(), json!(v.round() as u64));
                }
                row.insert("sum".into(), Value::Object(sum));
            }
            Value::Object(row)
        })
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

fn floor_to(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(secs), 0).unwrap_or(t)
}

fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, 60)
}

fn five_minutes(t: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(t, 300)
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
                "datetime": time(b),
                "datetimeMinute": time(minute(b)),
                "datetimeFiveMinutes": time(five_minutes(b)),
                "ipDestinationAddress": dest.to_string(),
                "ipDestinationSubnet": subnet(dest),
                "mitigationSystem": system,
                "direction": "inbound",
                "outcome": outcome,
                "sampleInterval": state.scenario.sample_interval,
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
                    "datetimeMinute": time(minute(at)),
                    "datetimeFiveMinutes": time(five_minutes(at)),
                    "sampleInterval": state.scenario.sample_interval,
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

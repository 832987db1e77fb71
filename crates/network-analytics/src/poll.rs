//! One poll (SPEC §8): fetch the dosd dropped-traffic events of the window, splitting any
//! sub-window whose answer hit the row limit (within a query budget), enrich, store every new
//! event once, and queue one summary of the new events, all in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mt_cloudflare::Client;
use mt_cloudflare::graphql::{DatasetWatch, DosdEvent};
use mt_common::SharedClock;
use mt_common::timefmt::{from_db, to_db};
use mt_notify::templates::{AnalyticsSummary, OperatorAlert};
use mt_notify::{Message, Notifier};
use mt_store::{NewAnalyticsEvent, Store, event_hash};
use serde_json::{Map, Value};

use crate::Metrics;
use crate::geoip::{Fallback, GeoIp};

/// Where the end of the last successful poll is kept, so the next one covers any gap.
pub const LAST_END_KEY: &str = "network_analytics.last_poll_end";

/// How a poll fetches.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Window length when polls succeed on time.
    pub lookback: Duration,
    /// Row limit per query (Cloudflare's maximum is 10,000).
    pub limit: u32,
    /// Most GraphQL queries one poll may make, splitting included. Cloudflare allows about
    /// 300 queries per 5 minutes for all daemons together; autowithdraw needs one a minute, so
    /// 20 per 5-minute poll leaves it ample room.
    pub max_queries: u32,
    /// How far back a catch-up after downtime reaches at most (older events are out of reach:
    /// logged and counted).
    pub max_catch_up: Duration,
    /// Windows this short are not split further.
    pub min_split: Duration,
}

impl PollOptions {
    /// Defaults for `lookback`.
    pub fn new(lookback: Duration) -> Self {
        Self {
            lookback,
            limit: 10_000,
            max_queries: 20,
            max_catch_up: Duration::from_secs(24 * 3600),
            min_split: Duration::from_secs(2),
        }
    }
}

/// What a poll did.
#[derive(Debug, Clone, PartialEq)]
pub struct PollReport {
    /// Window start.
    pub from: DateTime<Utc>,
    /// Window end.
    pub to: DateTime<Utc>,
    /// GraphQL queries made.
    pub queries: u32,
    /// Rows fetched.
    pub fetched: usize,
    /// Rows that were new.
    pub new: usize,
    /// Everything in the window was fetched (no budget exhaustion, no unsplittable limit).
    pub complete: bool,
}

/// Why a poll failed (nothing was stored; the next poll covers the window again).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Cloudflare failed.
    #[error(transparent)]
    Cloudflare(#[from] mt_cloudflare::Error),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] mt_store::Error),
    /// The poll took longer than allowed.
    #[error("poll did not finish within {0:?}")]
    Deadline(Duration),
    /// The dataset's settings say it cannot answer the query (disabled, fields missing):
    /// nothing is sent until the next reading says otherwise.
    #[error("the {dataset} dataset cannot be queried: {why}")]
    DatasetUnusable {
        /// The dataset.
        dataset: &'static str,
        /// Why.
        why: String,
    },
}

/// Polls Cloudflare and stores what is new.
#[derive(Debug, Clone)]
pub struct Poller {
    /// The database.
    pub store: Store,
    /// Cloudflare.
    pub client: Client,
    /// Telegram messages.
    pub notifier: Notifier,
    /// Enrichment.
    pub geoip: Arc<GeoIp>,
    /// Source of "now".
    pub clock: SharedClock,
    /// Fetch options.
    pub options: PollOptions,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The dosd dataset's settings (read at start and hourly).
    pub datasets: DatasetWatch,
}

struct Fetched {
    events: Vec<DosdEvent>,
    queries: u32,
    complete: bool,
}

impl Poller {
    /// One poll.
    pub async fn poll_once(&self) -> Result<PollReport, PollError> {
        let now = self.clock.now();
        self.refresh_settings(now).await?;
        let problems = self.datasets.problems();
        if !problems.is_empty() {
            return Err(PollError::DatasetUnusable {
                dataset: self.datasets.dataset(),
                why: problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        let limits = self
            .datasets
            .limits(self.options.max_catch_up, self.options.limit);
        let lookback = chrono::Duration::from_std(self.options.lookback).unwrap_or_default();
        // Catch-up reaches back `max_catch_up`, and never past the dataset's `notOlderThan`
        // (less a minute for the query's trip): older time would be refused as a whole.
        let mut reach = chrono::Duration::from_std(self.options.max_catch_up).unwrap_or_default();
        if let Some(oldest) = limits.oldest_queryable(now, Duration::from_secs(60)) {
            if oldest >= now {
                return Err(PollError::DatasetUnusable {
                    dataset: self.datasets.dataset(),
                    why: format!(
                        "notOlderThan ({}s) leaves no time to query",
                        limits.not_older_than.unwrap_or_default().as_secs()
                    ),
                });
            }
            reach = reach.min(now - oldest);
        }
        // One poll must be able to finish its catch-up within its query budget (half of it, the
        // rest for splitting windows at the row limit), or it would never complete and the
        // same old hours would be fetched forever.
        let chunk = chrono::Duration::from_std(limits.max_window).unwrap_or(chrono::Duration::MAX);
        if let Some(budget) = chunk.checked_mul(
            i32::try_from(self.options.max_queries / 2)
                .unwrap_or(1)
                .max(1),
        ) {
            reach = reach.min(budget);
        }
        let mut from = now - lookback;
        if let Some(last) = self
            .store
            .state(LAST_END_KEY)
            .await?
            .as_deref()
            .and_then(from_db)
            && last < from
        {
            from = last;
        }
        if now - from > reach {
            tracing::warn!(missed_from = %from, reachable_from = %(now - reach), "the gap since the last poll exceeds the data's reach; older events are lost");
            self.metrics.gap_exceeded.inc();
            from = now - reach;
        }

        let fetched = self.fetch(from, now, &limits).await?;
        self.metrics.queries.add(u64::from(fetched.queries));
        self.metrics.fetched.add(fetched.events.len() as u64);
        if !fetched.complete {
            self.metrics.incomplete.inc();
            tracing::warn!(%from, to = %now, queries = fetched.queries, "poll incomplete (row limit or query budget); the window is polled again next time");
        }

        let events: Vec<NewAnalyticsEvent> =
            fetched.events.iter().map(|e| self.to_row(e)).collect();
        let mut tx = self.store.begin().await?;
        let ids = tx.insert_analytics_batch(&events).await?;
        let new: Vec<(i64, &NewAnalyticsEvent)> = ids
            .into_iter()
            .zip(&events)
            .filter_map(|(id, event)| id.map(|id| (id, event)))
            .collect();
        if !new.is_empty() {
            let summary = summarize(&new.iter().map(|(_, e)| *e).collect::<Vec<_>>(), from, now);
            self.notifier
                .queue(&mut tx, &Message::AnalyticsSummary(summary), now)
                .await?;
            let ids: Vec<i64> = new.iter().map(|(id, _)| *id).collect();
            tx.mark_analytics_notified(&ids, now).await?;
        }
        // An incomplete poll keeps the old end, so the next one covers this window again.
        if fetched.complete {
            tx.set_state(LAST_END_KEY, &to_db(now), now).await?;
        }
        tx.commit().await?;
        self.metrics.new_rows.add(new.len() as u64);
        tracing::info!(%from, to = %now, queries = fetched.queries, fetched = events.len(), new = new.len(), "poll stored");
        Ok(PollReport {
            from,
            to: now,
            queries: fetched.queries,
            fetched: events.len(),
            new: new.len(),
            complete: fetched.complete,
        })
    }

    /// Fetches `(from, to)`, halving any window whose answer hit the row limit, within the
    /// query budget.
    async fn fetch(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limits: &mt_cloudflare::graphql::DatasetLimits,
    ) -> Result<Fetched, PollError> {
        let min_split = chrono::Duration::from_std(self.options.min_split).unwrap_or_default();
        // No query spans more than the dataset's `maxDuration`. The filters are exclusive at
        // both ends, so each chunk but the last reaches one second past the next one's start
        // (an event on the boundary second is fetched twice, and deduplicated by its hash).
        // Oldest first: `pending` is popped from the end.
        let second = chrono::Duration::seconds(1);
        let chunk = (chrono::Duration::from_std(limits.max_window)
            .unwrap_or(chrono::Duration::MAX)
            - second)
            .max(second);
        let mut pending = Vec::new();
        let mut start = from;
        while start < to {
            let end = start.checked_add_signed(chunk).map_or(to, |e| e.min(to));
            pending.push((start, if end < to { end + second } else { end }));
            start = end;
        }
        pending.reverse();
        let mut out = Fetched {
            events: Vec::new(),
            queries: 0,
            complete: true,
        };
        while let Some((start, end)) = pending.pop() {
            if out.queries >= self.options.max_queries {
                out.complete = false;
                break;
            }
            out.queries += 1;
            let answer = self.client.dosd_events(start, end, limits.limit).await?;
            if answer.truncated && end - start > min_split {
                // (start, mid] and (mid, end): the filters are exclusive, so the left half
                // ends one second past mid. Overlapping rows deduplicate by hash.
                let mid = start + (end - start) / 2;
                pending.push((mid, end));
                pending.push((start, mid + chrono::Duration::seconds(1)));
                continue;
            }
            if answer.truncated {
                out.complete = false;
            }
            out.events.extend(answer.events);
        }
        Ok(out)
    }

    /// Reads the dosd dataset's settings when due (at start and hourly); a dataset that became
    /// unusable is told once on Telegram, and again when it is usable.
    async fn refresh_settings(&self, now: DateTime<Utc>) -> Result<(), PollError> {
        let Some(unusable) = self.datasets.refresh(&self.client, now).await else {
            return Ok(());
        };
        let message = OperatorAlert::dataset(
            self.datasets.dataset(),
            unusable.as_deref(),
            "mt-network-analytics fetches no dropped-traffic events",
            now,
        );
        let mut tx = self.store.begin().await?;
        self.notifier
            .queue(&mut tx, &Message::OperatorAlert(message), now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A GraphQL row as a database row (hash, enrichment, column mapping).
    pub fn to_row(&self, e: &DosdEvent) -> NewAnalyticsEvent {
        let d = &e.dimensions;
        let text = |k: &str| match d.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let int = |k: &str| match d.get(k) {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let source_ip = text("ipSourceAddress");
        let source = self.geoip.enrich(
            source_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()),
            &Fallback {
                asn: int("sourceAsn"),
                asn_name: d.get("sourceAsnName").and_then(Value::as_str),
                country: d.get("sourceCountry").and_then(Value::as_str),
            },
        );
        let mut raw = Map::new();
        raw.insert("dimensions".into(), Value::Object(d.clone()));
        raw.insert(
            "sum".into(),
            serde_json::json!({"packets": e.packets, "bits": e.bits}),
        );
        NewAnalyticsEvent {
            event_hash: event_hash(&Value::Object(d.clone())),
            attack_id: text("attackId"),
            event_datetime: text("datetime").as_deref().and_then(from_db),
            attack_vector: text("attackVector"),
            rule_name: text("ruleName"),
            rule_id: text("ruleId"),
            source_ip,
            source_port: int("sourcePort"),
            source_asn: source.asn,
            source_asn_name: source.asn_name,
            source_country: source.country,
            destination_ip: text("ipDestinationAddress"),
            destination_port: int("destinationPort"),
            protocol: text("ipProtocolName"),
            tcp_flags: text("tcpFlagsString"),
            colo_code: text("coloCode"),
            colo_country: text("coloCountry"),
            packets: i64::try_from(e.packets).ok(),
            bits: i64::try_from(e.bits).ok(),
            outcome: text("outcome"),
            mitigation_reason: text("mitigationReason"),
            raw_data: Some(Value::Object(raw).to_string()),
        }
    }
}

/// Top-N tables of the new events, by dropped packets.
pub fn summarize(
    events: &[&NewAnalyticsEvent],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> AnalyticsSummary {
    fn top(map: BTreeMap<String, u64>) -> Vec<(String, u64)> {
        let mut rows: Vec<_> = map.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }
    let mut vectors = BTreeMap::new();
    let mut targets = BTreeMap::new();
    let mut asns = BTreeMap::new();
    let mut countries = BTreeMap::new();
    let mut attack_ids = BTreeSet::new();
    let (mut packets, mut bits) = (0u64, 0u64);
    for e in events {
        let p = u64::try_from(e.packets.unwrap_or_default()).unwrap_or_default();
        packets += p;
        bits += u64::try_from(e.bits.unwrap_or_default()).unwrap_or_default();
        if let Some(id) = e.attack_id.as_ref().filter(|s| !s.is_empty()) {
            attack_ids.insert(id.clone());
        }
        *vectors
            .entry(e.attack_vector.clone().unwrap_or_else(|| "unknown".into()))
            .or_default() += p;
        *targets
            .entry(e.destination_ip.clone().unwrap_or_else(|| "unknown".into()))
            .or_default() += p;
        let asn = match (&e.source_asn, &e.source_asn_name) {
            (Some(n), Some(name)) => format!("AS{n} {name}"),
            (Some(n), None) => format!("AS{n}"),
            (None, Some(name)) => name.clone(),
            (None, None) => "unknown".into(),
        };
        *asns.entry(asn).or_default() += p;
        *countries
            .entry(e.source_country.clone().unwrap_or_else(|| "unknown".into()))
            .or_default() += p;
    }
    AnalyticsSummary {
        from,
        to,
        new_events: events.len() as u64,
        attack_ids: attack_ids.into_iter().collect(),
        vectors: top(vectors),
        targets: top(targets),
        source_asns: top(asns),
        source_countries: top(countries),
        total_packets: packets,
        total_megabits: bits as f64 / 1e6,
    }
}

//! `network_analytics_events`: dropped-traffic events polled from GraphQL, deduplicated by
//! the original suite's `event_hash` (SPEC §5).

use chrono::{DateTime, Utc};
use mt_common::timefmt::to_db;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Result, Store, WriteTx, Writes};

/// Rows per multi-row INSERT: 22 bound values each, far below SQLite's 32,766 limit.
const BATCH_ROWS: usize = 250;

/// The original suite's dedup key: the first 32 lowercase hex characters of
/// `sha256("{datetime}|{attackId}|{ipSourceAddress}|{ipDestinationAddress}|{destinationPort}")`,
/// each value formatted as Python's `str()` would (a missing or null value is `None`, an empty
/// string stays empty, integers in decimal), so rows stored by the original suite deduplicate
/// against ours. `dimensions` is the GraphQL row's `dimensions` object.
pub fn event_hash(dimensions: &Value) -> String {
    let part = |key: &str| python_str(dimensions.get(key));
    let key = format!(
        "{}|{}|{}|{}|{}",
        part("datetime"),
        part("attackId"),
        part("ipSourceAddress"),
        part("ipDestinationAddress"),
        part("destinationPort"),
    );
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    digest[..32].to_owned()
}

/// `str(value)` as Python prints a value decoded by `json.loads`.
fn python_str(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "None".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.is_finite() && f.fract() == 0.0 => format!("{f:.1}"),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// A new `network_analytics_events` row.
#[derive(Debug, Clone, Default)]
pub struct NewAnalyticsEvent {
    /// [`event_hash`] of the row's dimensions.
    pub event_hash: String,
    /// Cloudflare attack id.
    pub attack_id: Option<String>,
    /// Event time (stored as `YYYY-MM-DD HH:MM:SS`).
    pub event_datetime: Option<DateTime<Utc>>,
    /// Attack vector.
    pub attack_vector: Option<String>,
    /// DDoS rule name.
    pub rule_name: Option<String>,
    /// DDoS rule id.
    pub rule_id: Option<String>,
    /// Source IP.
    pub source_ip: Option<String>,
    /// Source port.
    pub source_port: Option<i64>,
    /// Source ASN.
    pub source_asn: Option<i64>,
    /// Source ASN organisation.
    pub source_asn_name: Option<String>,
    /// Source country (ISO code).
    pub source_country: Option<String>,
    /// Destination IP.
    pub destination_ip: Option<String>,
    /// Destination port.
    pub destination_port: Option<i64>,
    /// Protocol.
    pub protocol: Option<String>,
    /// TCP flags.
    pub tcp_flags: Option<String>,
    /// Data centre code.
    pub colo_code: Option<String>,
    /// Data centre country.
    pub colo_country: Option<String>,
    /// Packets dropped.
    pub packets: Option<i64>,
    /// Bits dropped.
    pub bits: Option<i64>,
    /// Outcome (`drop`).
    pub outcome: Option<String>,
    /// Mitigation reason.
    pub mitigation_reason: Option<String>,
    /// The full GraphQL row as JSON.
    pub raw_data: Option<String>,
}

/// A stored `network_analytics_events` row, as it is.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AnalyticsEvent {
    /// Row id.
    pub id: i64,
    /// Dedup hash.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub event_hash: Option<String>,
    /// Attack id.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_id: Option<String>,
    /// Event time (ours `YYYY-MM-DD HH:MM:SS`; legacy rows `…Z` ISO).
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub event_datetime: Option<String>,
    /// Attack vector.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub attack_vector: Option<String>,
    /// Source IP.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub source_ip: Option<String>,
    /// Source ASN.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub source_asn: Option<i64>,
    /// Source ASN organisation.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub source_asn_name: Option<String>,
    /// Source country.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub source_country: Option<String>,
    /// Destination IP.
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub destination_ip: Option<String>,
    /// Destination port.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub destination_port: Option<i64>,
    /// Packets dropped.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub packets: Option<i64>,
    /// Bits dropped.
    #[sqlx(try_from = "crate::loose::LooseInt")]
    pub bits: Option<i64>,
    /// When the SOC was told (NULL: not yet).
    #[sqlx(try_from = "crate::loose::LooseText")]
    pub notified_at: Option<String>,
}

impl WriteTx {
    /// Inserts every event whose hash is not stored yet; returns the ids of the new rows, in
    /// input order. `notified_at` stays NULL (the legacy column defaults to "now", which would
    /// claim a notification that has not happened) until [`WriteTx::mark_analytics_notified`].
    pub async fn insert_analytics_events(
        &mut self,
        events: &[NewAnalyticsEvent],
    ) -> Result<Vec<i64>> {
        Ok(self
            .insert_analytics_batch(events)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Inserts a batch with multi-row statements ([`BATCH_ROWS`] rows each: one statement per
    /// row would cost ~100 µs of driver round trip per event). Returns, per input event, its
    /// new id, or `None` when its hash was already stored (or repeated earlier in the batch).
    pub async fn insert_analytics_batch(
        &mut self,
        events: &[NewAnalyticsEvent],
    ) -> Result<Vec<Option<i64>>> {
        let mut out = Vec::with_capacity(events.len());
        for chunk in events.chunks(BATCH_ROWS) {
            let mut writes = Writes::new();
            writes.rows(
                "INSERT INTO network_analytics_events (event_hash, attack_id, event_datetime, \
                 attack_vector, rule_name, rule_id, source_ip, source_port, source_asn, \
                 source_asn_name, source_country, destination_ip, destination_port, protocol, \
                 tcp_flags, colo_code, colo_country, packets, bits, outcome, mitigation_reason, \
                 notified_at, raw_data) VALUES ",
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,?)",
                chunk.len(),
                " ON CONFLICT(event_hash) DO NOTHING RETURNING id, event_hash",
            );
            for e in chunk {
                writes
                    .bind(&e.event_hash)
                    .bind(&e.attack_id)
                    .bind(e.event_datetime.map(to_db))
                    .bind(&e.attack_vector)
                    .bind(&e.rule_name)
                    .bind(&e.rule_id)
                    .bind(&e.source_ip)
                    .bind(e.source_port)
                    .bind(e.source_asn)
                    .bind(&e.source_asn_name)
                    .bind(&e.source_country)
                    .bind(&e.destination_ip)
                    .bind(e.destination_port)
                    .bind(&e.protocol)
                    .bind(&e.tcp_flags)
                    .bind(&e.colo_code)
                    .bind(&e.colo_country)
                    .bind(e.packets)
                    .bind(e.bits)
                    .bind(&e.outcome)
                    .bind(&e.mitigation_reason)
                    .bind(&e.raw_data);
            }
            let (sql, args) = writes.finish(None)?;
            let query = sqlx::query_as_with::<_, (i64, String), _>(sql, args);
            let mut inserted: std::collections::HashMap<String, i64> = query
                .fetch_all(self.conn())
                .await?
                .into_iter()
                .map(|(id, hash)| (hash, id))
                .collect();
            // The first occurrence of a hash in the batch gets the id; repeats are not new.
            out.extend(chunk.iter().map(|e| inserted.remove(&e.event_hash)));
        }
        Ok(out)
    }

    /// Sets `notified_at` on the given rows (in the transaction that queues their summary).
    pub async fn mark_analytics_notified(&mut self, ids: &[i64], at: DateTime<Utc>) -> Result<()> {
        let at = to_db(at);
        for chunk in ids.chunks(500) {
            // Only placeholders are interpolated: every value is bound.
            let placeholders = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "UPDATE network_analytics_events SET notified_at = ? WHERE id IN ({placeholders})"
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&at);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(self.conn()).await?;
        }
        Ok(())
    }
}

impl Store {
    /// Inserts a batch in one transaction; returns the ids of the rows that were new.
    pub async fn save_analytics_events(&self, events: &[NewAnalyticsEvent]) -> Result<Vec<i64>> {
        let mut tx = self.begin().await?;
        let ids = tx.insert_analytics_events(events).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// The newest events first.
    pub async fn analytics_events(&self, limit: u32) -> Result<Vec<AnalyticsEvent>> {
        let rows = sqlx::query_as(
            "SELECT id, event_hash, attack_id, event_datetime, attack_vector, source_ip, source_asn, \
             source_asn_name, source_country, destination_ip, destination_port, packets, bits, \
             notified_at FROM network_analytics_events ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_str_matches_python() {
        assert_eq!(python_str(None), "None");
        assert_eq!(python_str(Some(&json!(null))), "None");
        assert_eq!(python_str(Some(&json!(""))), "");
        assert_eq!(python_str(Some(&json!(443))), "443");
        assert_eq!(python_str(Some(&json!(443.0))), "443.0");
        assert_eq!(python_str(Some(&json!(true))), "True");
    }
}

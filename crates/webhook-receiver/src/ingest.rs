//! One webhook, durably stored before it is acknowledged (SPEC §6): its `webhook_events` row
//! (the raw body in `payload`), derived `attack_events` rows, `prefix_calm_status` marks and
//! queued Telegram message commit together. The archive copy is written afterwards, from the
//! database, by [`crate::archive::ArchiveWriter`].
//!
//! Group commit: one writer task takes every webhook waiting at that moment (up to
//! [`MAX_BATCH`]) and stores them in one transaction, so a burst pays one fsync per batch instead
//! of one per webhook. Each webhook is answered only after its batch committed; if the batch
//! fails, every webhook in it is answered 503 and Cloudflare retries. At low load a batch is a
//! single webhook. The writer does not linger for more: waiting 1 or 2 ms for a fuller batch
//! was measured (BENCHMARKS.md) and made no load faster.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mt_notify::templates::{
    AttackAlert, AutoAdvertisement, GenericAlert, PrefixState, TunnelHealth,
};
use mt_notify::{Message, Notifier};
use mt_store::{
    ActionTaken, Advertisement, EventType, NewAttackEvent, PrefixMark, Store, WebhookInsert, Writes,
};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::AppState;
use crate::archive::ArchiveWriter;
use mt_alerts::{Classified, Kind, Phase, classify};

/// Cloudflare refuses a re-advertisement this soon after a withdrawal.
const READVERTISE_HOLD: Duration = Duration::from_secs(15 * 60);
/// Most webhooks stored by one transaction.
pub const MAX_BATCH: usize = 64;
/// Webhooks waiting for the writer; more wait in the HTTP layer.
const QUEUE_DEPTH: usize = 1024;

/// What happened to a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored as this `webhook_events` id.
    Accepted(i64),
    /// Already stored as this id; nothing was written or sent.
    Duplicate(i64),
}

/// Why a webhook could not be stored (nothing was acknowledged; the sender retries).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database failed or stayed locked.
    #[error(transparent)]
    Store(#[from] mt_store::Error),
    /// The writer task is gone (the daemon is stopping).
    #[error("the webhook writer is not running")]
    WriterGone,
}

/// A parsed webhook, ready to be stored.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// What it is.
    pub classified: Classified,
    /// The raw body.
    pub raw: String,
    /// The sender's address.
    pub source_ip: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// A webhook on its way to the writer.
struct Job {
    parsed: Parsed,
    reply: oneshot::Sender<Result<Outcome, IngestError>>,
}

/// Handle to the writer task.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("alert_id", &self.parsed.classified.alert_id)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer; it ends when every handle is dropped. `archive` is woken after
    /// every commit.
    ///
    /// The writer has its own thread and single-threaded runtime, so each reply of SQLite's
    /// thread wakes it at once instead of joining the daemon's run queue behind the HTTP
    /// tasks its previous commit has just woken. Measured at 16 connections (two interleaved
    /// pairs, issue #22): 4,058 and 4,096 req/s on the daemon's runtime, 4,761 and 5,093 on
    /// its own thread.
    pub fn spawn(
        store: Store,
        notifier: Notifier,
        archive: ArchiveWriter,
        metrics: Arc<crate::Metrics>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || runtime.block_on(write_loop(rx, store, notifier, archive, metrics)))?;
        Ok(Self { jobs })
    }
}

/// Stores one parsed webhook; returns once it is durable (or definitely not stored).
pub async fn ingest(
    state: &AppState,
    raw: &str,
    body: &Map<String, Value>,
    source_ip: Option<String>,
) -> Result<(Outcome, Classified), IngestError> {
    let received_at = state.clock.now();
    let classified = classify(body, &state.config, received_at);
    let (reply, answer) = oneshot::channel();
    let job = Job {
        parsed: Parsed {
            classified: classified.clone(),
            raw: raw.to_owned(),
            source_ip,
            received_at,
        },
        reply,
    };
    state
        .writer
        .jobs
        .send(job)
        .await
        .map_err(|_| IngestError::WriterGone)?;
    let outcome = answer.await.map_err(|_| IngestError::WriterGone)??;
    Ok((outcome, classified))
}

async fn write_loop(
    mut rx: mpsc::Receiver<Job>,
    store: Store,
    notifier: Notifier,
    archive: ArchiveWriter,
    metrics: Arc<crate::Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics.batches.inc();
        metrics.batched.add(batch.len() as u64);
        write_batch(batch, &store, &notifier, &archive, &metrics).await;
    }
}

/// Stores a batch and answers each webhook: after the commit, or 503 for all if it failed.
async fn write_batch(
    batch: Vec<Job>,
    store: &Store,
    notifier: &Notifier,
    archive: &ArchiveWriter,
    metrics: &crate::Metrics,
) {
    let (parsed, replies): (Vec<Parsed>, Vec<_>) =
        batch.into_iter().map(|j| (j.parsed, j.reply)).unzip();
    let started = std::time::Instant::now();
    let stored = store_batch(&parsed, store, notifier).await;
    metrics.batch_time.observe(started.elapsed());
    match stored {
        Ok(outcomes) => {
            archive.wake();
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, webhooks = replies.len(), "batch not stored; every webhook in it is answered 503");
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(IngestError::Store(mt_store::Error::Invalid(
                    message.clone(),
                ))));
            }
        }
    }
}

/// One transaction (`BEGIN IMMEDIATE`, one WAL fsync at the commit) for the whole batch;
/// returns each webhook's outcome in order. Public for the benchmark's ceiling, which stores
/// the same rows without HTTP.
///
/// The rows are the ones storing the webhooks one after another would write, in the same
/// order, with the same duplicates; but each table gets one multi-row statement per batch,
/// not one per webhook: sqlx's SQLite worker costs a round trip per statement, and those
/// round trips, not the commit's fsync, are what a batch's time was made of.
pub async fn store_batch(
    batch: &[Parsed],
    store: &Store,
    notifier: &Notifier,
) -> mt_store::Result<Vec<Outcome>> {
    let rows: Vec<_> = batch
        .iter()
        .map(|p| {
            p.classified.webhook_event(
                p.received_at,
                p.source_ip.clone(),
                "received",
                p.raw.clone(),
            )
        })
        .collect();
    let attacked: Vec<&str> = batch
        .iter()
        .filter(|p| matches!(p.classified.kind, Kind::Attack { .. }))
        .filter_map(|p| p.classified.prefix.as_deref())
        .collect();
    let mut tx = store.begin().await?;
    let mut effects = Effects {
        advertisements: tx.advertisements(&attacked).await?,
        ..Effects::default()
    };
    let inserted = tx.insert_webhook_events(&rows).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (parsed, insert) in batch.iter().zip(inserted) {
        outcomes.push(match insert {
            WebhookInsert::Duplicate(id) => Outcome::Duplicate(id),
            WebhookInsert::Inserted(id) => {
                let message = derive(&mut effects, parsed, id);
                effects.messages.push((message, parsed.received_at));
                Outcome::Accepted(id)
            }
        });
    }
    // Nothing below is read back: it goes with the COMMIT, in one round trip.
    let marks: Vec<_> = effects
        .marks
        .iter()
        .map(|(prefix, mark, at)| (prefix.as_str(), *mark, *at))
        .collect();
    let mut writes = Writes::new();
    writes
        .attack_events(&effects.attack_events)
        .prefix_marks(&marks);
    notifier.queue_into(&mut writes, effects.messages.iter().map(|(m, at)| (m, *at)));
    tx.commit_with(writes).await?;
    Ok(outcomes)
}

/// The rows new webhooks imply, in webhook order, written after them in one statement per
/// table; and the advertisement of the attacked prefixes, for the messages, as the batch
/// changes it.
#[derive(Debug, Default)]
struct Effects {
    advertisements: HashMap<String, Advertisement>,
    attack_events: Vec<NewAttackEvent>,
    marks: Vec<(String, PrefixMark, DateTime<Utc>)>,
    messages: Vec<(Message, DateTime<Utc>)>,
}

impl Effects {
    /// Queues a mark, and makes the later messages of the batch see it, as they would if each
    /// webhook were stored on its own: the prefix has a row, advertised if the mark says so.
    fn mark(&mut self, prefix: &str, mark: PrefixMark, at: DateTime<Utc>) {
        self.marks.push((prefix.to_owned(), mark, at));
        let seen = self
            .advertisements
            .entry(prefix.to_owned())
            .or_insert(Advertisement {
                known: false,
                advertised: false,
                last_withdrawal: None,
            });
        seen.known = true;
        seen.advertised |= mark == PrefixMark::Advertised;
    }
}

/// Adds the rows a new webhook implies to `effects` and returns the message to send.
fn derive(effects: &mut Effects, job: &Parsed, webhook_id: i64) -> Message {
    let (c, raw, now) = (&job.classified, job.raw.as_str(), job.received_at);
    match &c.kind {
        Kind::Test => Message::Generic(GenericAlert {
            alert_type: None,
            name: Some("Webhook test (Save and Test)".into()),
            text: c.text.clone(),
            policy_name: None,
            event_state: None,
            at: now,
        }),
        Kind::Attack {
            phase,
            start_action,
        } => {
            let (event_type, action) = match phase {
                Phase::Start => (EventType::Start, *start_action),
                Phase::End => (EventType::End, ActionTaken::NotifiedAutowithdrawHandles),
            };
            effects.attack_events.push(attack_event(
                webhook_id,
                c,
                event_type,
                action,
                c.prefix.clone(),
                raw,
                now,
            ));
            if let (Phase::Start, Some(prefix)) = (phase, &c.prefix) {
                effects.mark(prefix, PrefixMark::UnderAttack, now);
            }
            let alert = AttackAlert {
                alert_type: c.alert_type.clone(),
                alert_name: c.name.clone(),
                attack_id: (!c.alert_id_synthetic).then(|| c.alert_id.clone()),
                policy_name: c.policy_name.clone(),
                prefix: c.prefix.clone(),
                target_ip: c.target_ip.clone(),
                target_port: c.target_port,
                protocol: c.protocol.clone(),
                attack_vector: c.attack_vector.clone(),
                packets_per_second: c.packets_per_second.clone(),
                megabits_per_second: c.megabits_per_second.clone(),
                severity: c.severity.clone(),
                at: now,
                prefix_state: c.prefix.as_deref().map_or(PrefixState::Unknown, |p| {
                    prefix_state(effects.advertisements.get(p), now)
                }),
            };
            match phase {
                Phase::Start => Message::AttackStart(alert),
                Phase::End => Message::AttackEnd(alert),
            }
        }
        Kind::AutoAdvertisement { prefixes, ignored } => {
            for p in prefixes.iter().filter(|p| p.is_advertised()) {
                let Some(configured) = &p.configured else {
                    continue;
                };
                effects.attack_events.push(attack_event(
                    webhook_id,
                    c,
                    EventType::Advertise,
                    ActionTaken::AutoAdvertised,
                    Some(configured.clone()),
                    raw,
                    now,
                ));
                effects.mark(configured, PrefixMark::Advertised, now);
            }
            if ignored.total > 0 {
                tracing::warn!(count = ignored.total, first = ?ignored.named, "auto-advertisement lists entries that are not configured prefixes; kept in the raw body only");
            }
            Message::AutoAdvertisement(AutoAdvertisement {
                prefixes: prefixes
                    .iter()
                    .map(|p| {
                        (
                            p.configured.clone().unwrap_or_else(|| p.listed.clone()),
                            p.status.clone(),
                        )
                    })
                    .collect(),
                not_configured: ignored.named.clone(),
                not_configured_total: ignored.total,
                policy_name: c.policy_name.clone(),
                at: now,
            })
        }
        Kind::TunnelHealth {
            ended,
            tunnel,
            state,
        } => Message::TunnelHealth(TunnelHealth {
            tunnel: tunnel.clone(),
            state: state.clone(),
            ended: *ended,
            text: c.text.clone(),
            at: now,
        }),
        Kind::Other => Message::Generic(GenericAlert {
            alert_type: c.alert_type.clone(),
            name: c.name.clone(),
            text: c.text.clone(),
            policy_name: c.policy_name.clone(),
            event_state: c.event_state.clone(),
            at: now,
        }),
    }
}

/// Largest body copied into `attack_events.raw_payload` as it is.
pub const MAX_RAW_PAYLOAD_BYTES: usize = 64 * 1024;

/// What `attack_events.raw_payload` holds: the seed documents it as the full JSON payload "for
/// debugging", so every real Cloudflare alert (1–3 KiB) keeps it whole. A larger body (only a
/// huge auto-advertisement or a hostile sender comes close) is stored once, in
/// `webhook_events.payload`; the row then holds a small JSON object pointing at it, so the
/// column stays valid JSON and one webhook can never write megabytes per derived row.
pub fn raw_payload(raw: &str, webhook_id: i64) -> String {
    if raw.len() <= MAX_RAW_PAYLOAD_BYTES {
        return raw.to_owned();
    }
    serde_json::json!({
        "raw_payload_omitted": "the body is larger than 64 KiB; it is stored once in webhook_events.payload",
        "webhook_events_id": webhook_id,
        "bytes": raw.len(),
    })
    .to_string()
}

fn attack_event(
    webhook_id: i64,
    c: &Classified,
    event_type: EventType,
    action: ActionTaken,
    prefix: Option<String>,
    raw: &str,
    now: DateTime<Utc>,
) -> NewAttackEvent {
    NewAttackEvent {
        alert_type: c.alert_type.clone(),
        attack_id: (!c.alert_id_synthetic).then(|| c.alert_id.clone()),
        policy_id: c.policy_id.clone(),
        policy_name: c.policy_name.clone(),
        prefix,
        target_ip: c.target_ip.clone(),
        target_port: c.target_port,
        protocol: c.protocol.clone(),
        attack_vector: c.attack_vector.clone(),
        packets_per_second: c.packets_per_second.clone(),
        megabits_per_second: c.megabits_per_second.clone(),
        severity: c.severity.clone(),
        raw_payload: Some(raw_payload(raw, webhook_id)),
        ..NewAttackEvent::new(event_type, action, now)
    }
}

/// What an attack message says of its prefix: whether it is advertised, as autowithdraw (or
/// an auto-advertisement webhook) last recorded it, and when a withdrawn one may be
/// re-advertised.
fn prefix_state(seen: Option<&Advertisement>, now: DateTime<Utc>) -> PrefixState {
    match seen {
        None | Some(Advertisement { known: false, .. }) => PrefixState::Unknown,
        Some(Advertisement {
            advertised: true, ..
        }) => PrefixState::Advertised,
        Some(Advertisement {
            last_withdrawal, ..
        }) => {
            let hold = chrono::Duration::from_std(READVERTISE_HOLD).unwrap_or_default();
            PrefixState::Withdrawn {
                readvertise_allowed_at: last_withdrawal.map(|t| t + hold).filter(|t| *t > now),
            }
        }
    }
}

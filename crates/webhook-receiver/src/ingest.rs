//! One webhook, one transaction (SPEC §6): `webhook_events` row, derived `attack_events` rows,
//! `prefix_calm_status` marks and the queued Telegram message commit together, and the raw body
//! is in the archive, before the caller may answer 2xx.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mt_notify::Message;
use mt_notify::templates::{
    AttackAlert, AutoAdvertisement, GenericAlert, PrefixState, TunnelHealth,
};
use mt_store::{
    ActionTaken, EventType, NewAttackEvent, NewWebhookEvent, WebhookDedup, WebhookInsert, WriteTx,
};
use serde_json::{Map, Value};

use crate::AppState;
use crate::archive::Archive;
use crate::classify::{Classified, Kind, Phase, classify};

/// Cloudflare refuses a re-advertisement this soon after a withdrawal.
const READVERTISE_HOLD: Duration = Duration::from_secs(15 * 60);

/// What happened to a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored as this `webhook_events` id.
    Accepted(i64),
    /// Already stored as this id; nothing was written or sent.
    Duplicate(i64),
}

/// Why a webhook could not be stored (the sender should retry; nothing was acknowledged).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database failed or stayed locked.
    #[error(transparent)]
    Store(#[from] mt_store::Error),
    /// The archive could not be written.
    #[error("archive: {0}")]
    Archive(#[from] std::io::Error),
}

/// Stores one parsed webhook.
pub async fn ingest(
    state: &AppState,
    raw: &str,
    body: &Map<String, Value>,
    source_ip: Option<String>,
) -> Result<(Outcome, Classified), IngestError> {
    let now = state.clock.now();
    let c = classify(body, &state.config, now);
    let staged = state.archive.stage(raw.as_bytes()).await?;

    let mut tx = state.store.begin().await?;
    let inserted = tx
        .insert_webhook_event(&NewWebhookEvent {
            received_at: now,
            alert_type: c.alert_type.clone(),
            event_state: c.event_state.clone(),
            alert_id: Some(c.alert_id.clone()),
            policy_id: c.policy_id.clone(),
            policy_name: c.policy_name.clone(),
            target_ip: c.target_ip.clone(),
            target_prefix: c.prefix.clone(),
            source_ip,
            action_taken: "received".into(),
            payload: raw.to_owned(),
            dedup: if c.alert_id_synthetic || c.event_state.is_none() {
                WebhookDedup::Body
            } else {
                WebhookDedup::AlertAndState
            },
        })
        .await?;
    let id = match inserted {
        WebhookInsert::Duplicate(id) => {
            tx.rollback().await?;
            return Ok((Outcome::Duplicate(id), c));
        }
        WebhookInsert::Inserted(id) => id,
    };

    let message = derive(&mut tx, &c, raw, now).await?;
    state.notifier.queue(&mut tx, &message, now).await?;

    let placed = state.archive.place(staged, &Archive::file_name(now, id))?;
    if let Err(e) = tx.commit().await {
        // Not acknowledged: the sender retries, and must not find a stray archive copy.
        let _ = std::fs::remove_file(&placed);
        return Err(e.into());
    }
    state.archive.sync_dir().await?;
    Ok((Outcome::Accepted(id), c))
}

/// Writes the rows a webhook implies and returns the message to send.
async fn derive(
    tx: &mut WriteTx,
    c: &Classified,
    raw: &str,
    now: DateTime<Utc>,
) -> mt_store::Result<Message> {
    match &c.kind {
        Kind::Test => Ok(Message::Generic(GenericAlert {
            alert_type: None,
            name: Some("Webhook test (Save and Test)".into()),
            text: c.text.clone(),
            policy_name: None,
            event_state: None,
            at: now,
        })),
        Kind::Attack {
            phase,
            start_action,
        } => {
            let (event_type, action) = match phase {
                Phase::Start => (EventType::Start, *start_action),
                Phase::End => (EventType::End, ActionTaken::NotifiedAutowithdrawHandles),
            };
            tx.insert_attack_event(&attack_event(
                c,
                event_type,
                action,
                c.prefix.clone(),
                raw,
                now,
            ))
            .await?;
            let prefix_state = match &c.prefix {
                Some(prefix) => {
                    let state = prefix_state(tx, prefix, now).await?;
                    if *phase == Phase::Start {
                        tx.mark_prefix_under_attack(prefix, now).await?;
                    }
                    state
                }
                None => PrefixState::Unknown,
            };
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
                prefix_state,
            };
            Ok(match phase {
                Phase::Start => Message::AttackStart(alert),
                Phase::End => Message::AttackEnd(alert),
            })
        }
        Kind::AutoAdvertisement { prefixes } => {
            for p in prefixes.iter().filter(|p| p.is_advertised()) {
                let prefix = p.configured.clone().or_else(|| Some(p.listed.clone()));
                tx.insert_attack_event(&attack_event(
                    c,
                    EventType::Advertise,
                    ActionTaken::AutoAdvertised,
                    prefix,
                    raw,
                    now,
                ))
                .await?;
                match &p.configured {
                    Some(configured) => tx.mark_prefix_advertised(configured, now).await?,
                    None => {
                        tracing::warn!(prefix = %p.listed, "auto-advertised prefix is not in the config")
                    }
                }
            }
            Ok(Message::AutoAdvertisement(AutoAdvertisement {
                prefixes: prefixes
                    .iter()
                    .map(|p| {
                        (
                            p.configured.clone().unwrap_or_else(|| p.listed.clone()),
                            p.status.clone(),
                        )
                    })
                    .collect(),
                policy_name: c.policy_name.clone(),
                at: now,
            }))
        }
        Kind::TunnelHealth {
            ended,
            tunnel,
            state,
        } => Ok(Message::TunnelHealth(TunnelHealth {
            tunnel: tunnel.clone(),
            state: state.clone(),
            ended: *ended,
            text: c.text.clone(),
            at: now,
        })),
        Kind::Other => Ok(Message::Generic(GenericAlert {
            alert_type: c.alert_type.clone(),
            name: c.name.clone(),
            text: c.text.clone(),
            policy_name: c.policy_name.clone(),
            event_state: c.event_state.clone(),
            at: now,
        })),
    }
}

fn attack_event(
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
        raw_payload: Some(raw.to_owned()),
        ..NewAttackEvent::new(event_type, action, now)
    }
}

/// Whether `prefix` is advertised, as autowithdraw last recorded it, and when a withdrawn one
/// may be re-advertised.
async fn prefix_state(
    tx: &mut WriteTx,
    prefix: &str,
    now: DateTime<Utc>,
) -> mt_store::Result<PrefixState> {
    let Some(row) = tx.prefix_calm_status(prefix).await? else {
        return Ok(PrefixState::Unknown);
    };
    if row.advertised {
        return Ok(PrefixState::Advertised);
    }
    let hold = chrono::Duration::from_std(READVERTISE_HOLD).unwrap_or_default();
    let allowed = tx
        .last_withdrawal_at(prefix)
        .await?
        .map(|t| t + hold)
        .filter(|t| *t > now);
    Ok(PrefixState::Withdrawn {
        readvertise_allowed_at: allowed,
    })
}

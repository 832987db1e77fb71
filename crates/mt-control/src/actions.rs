//! Advertise/withdraw through Cloudflare, pins and the pause: what `mtctl` and the dashboard
//! both call, so a manual action leaves the same rows whoever takes it.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use mt_cloudflare::{Client, RetryPolicy};
use mt_common::clock::Clock;
use mt_common::config::{Config, PrefixConfig};
use mt_common::timefmt::to_db;
use mt_notify::templates::{
    ManualAdvertisement, WithdrawKind, WithdrawalFailure, WithdrawalSuccess,
};
use mt_notify::{Message, Notifier};
use mt_store::{
    ActionTaken, EventType, NewAttackEvent, NewAudit, NewWithdrawal, Store, WithdrawMethod,
    WithdrawStatus, WithdrawalWrite,
};

use crate::duration;

/// Cloudflare refuses a change of advertisement this soon after the last one.
const CHANGE_HOLD: chrono::Duration = chrono::Duration::minutes(15);

/// The tool an action came through (recorded in `audit_log.via` and the notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The CLI.
    Mtctl,
    /// The web dashboard.
    Dashboard,
}

impl Via {
    /// `mtctl` / `dashboard`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mtctl => "mtctl",
            Via::Dashboard => "dashboard",
        }
    }
}

/// Who acts, through what.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The person: the dashboard login, or `$SUDO_USER`/`$USER` for mtctl.
    pub name: String,
    /// The tool.
    pub via: Via,
}

impl Actor {
    /// The audit row of an action by this actor.
    pub fn audit<'a>(
        &'a self,
        at: DateTime<Utc>,
        action: &'a str,
        prefix: Option<&'a str>,
        detail: Option<&'a str>,
        outcome: &'a str,
    ) -> NewAudit<'a> {
        NewAudit {
            at,
            actor: &self.name,
            via: self.via.as_str(),
            action,
            prefix,
            detail,
            outcome,
        }
    }
}

/// Why an action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request itself is wrong (unknown prefix, empty reason): nothing was attempted.
    #[error("{0}")]
    Invalid(String),
    /// The suite is not configured for this (no Cloudflare API token).
    #[error("{0}")]
    NotConfigured(String),
    /// Cloudflare refused or could not be reached; audited and, for a withdrawal, recorded as a
    /// failed withdrawal and notified.
    #[error("{0}")]
    Failed(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] mt_store::Error),
}

/// What `set_advertised` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertiseOutcome {
    /// Cloudflare already had the prefix in the asked state: nothing changed.
    Unchanged,
    /// Changed; Cloudflare's modification time (or ours when it reports none).
    Changed {
        /// When Cloudflare recorded the change.
        at: DateTime<Utc>,
    },
}

/// The configured prefix `cidr` names, or an error listing the configured ones.
pub fn require_configured<'a>(
    config: &'a Config,
    cidr: &str,
) -> Result<&'a PrefixConfig, ControlError> {
    let wanted = cidr
        .trim()
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| ControlError::Invalid(format!("{cidr:?} is not a CIDR")))?;
    config
        .prefixes
        .iter()
        .find(|p| p.cidr == wanted)
        .ok_or_else(|| {
            let known: Vec<String> = config.prefixes.iter().map(|p| p.cidr.to_string()).collect();
            ControlError::Invalid(format!(
                "{wanted} is not a configured prefix (configured: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
}

/// The process's one Cloudflare client, built at start (its connections and its rate-limit
/// holds are shared by every action), or why there is none: a missing token is reported when
/// an action needs Cloudflare, not when the dashboard starts.
#[derive(Debug, Clone)]
pub struct Cloudflare(Result<Client, String>);

impl Cloudflare {
    /// From the configuration (see [`Client::from_config`]).
    pub fn from_config(config: &Config, retry: RetryPolicy) -> Self {
        Self(Client::from_config(config, retry).map_err(|e| e.to_string()))
    }

    /// An already built client.
    pub fn from_client(client: Client) -> Self {
        Self(Ok(client))
    }

    fn client(&self) -> Result<&Client, ControlError> {
        self.0
            .as_ref()
            .map_err(|e| ControlError::NotConfigured(e.clone()))
    }
}

/// The in-process lock serialising changes of one prefix.
fn prefix_lock(cidr: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    locks.entry(cidr.to_owned()).or_default().clone()
}

fn verb(advertise: bool) -> &'static str {
    if advertise { "advertise" } else { "withdraw" }
}

async fn audit_alone(
    store: &Store,
    actor: &Actor,
    action: &str,
    prefix: Option<&str>,
    detail: Option<&str>,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<(), ControlError> {
    store
        .audit(&actor.audit(now, action, prefix, detail, outcome))
        .await?;
    Ok(())
}

/// Advertises (`true`) or withdraws (`false`) a configured prefix through Cloudflare's REST API
/// and records it: an `ADVERTISE`/`WITHDRAW` attack event, a `manual` withdrawal-history row,
/// the state of `prefix_calm_status`, a Telegram message and an audit row, in one transaction
/// after Cloudflare confirmed. A refused withdrawal is recorded as a `failed` history row and
/// notified; every attempt is audited.
pub async fn set_advertised(
    config: &Config,
    store: &Store,
    clock: &dyn Clock,
    cloudflare: &Cloudflare,
    cidr: &str,
    advertise: bool,
    actor: &Actor,
) -> Result<AdvertiseOutcome, ControlError> {
    let prefix = require_configured(config, cidr)?;
    let cidr = prefix.cidr.to_string();
    let action = verb(advertise);
    // One change of a prefix at a time in this process (a double-click, two operators): the
    // second then sees the first's result instead of Cloudflare's 15-minute refusal.
    let guard = prefix_lock(&cidr);
    let _held = guard.lock().await;
    let cf = match cloudflare.client() {
        Ok(cf) => cf,
        Err(e) => {
            audit_alone(
                store,
                actor,
                action,
                Some(&cidr),
                Some(&e.to_string()),
                "failed",
                clock.now(),
            )
            .await?;
            return Err(e);
        }
    };
    let before = match cf
        .get_bgp_prefix(&prefix.prefix_id, &prefix.bgp_prefix_id)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            let detail = format!("reading the prefix from Cloudflare failed: {e}");
            audit_alone(
                store,
                actor,
                action,
                Some(&cidr),
                Some(&detail),
                "failed",
                clock.now(),
            )
            .await?;
            return Err(ControlError::Failed(detail));
        }
    };
    if before.advertised() == advertise {
        let detail = format!(
            "already {} on Cloudflare",
            if advertise { "advertised" } else { "withdrawn" }
        );
        audit_alone(
            store,
            actor,
            action,
            Some(&cidr),
            Some(&detail),
            "noop",
            clock.now(),
        )
        .await?;
        return Ok(AdvertiseOutcome::Unchanged);
    }
    let notifier = Notifier::new(&config.telegram);
    let result = cf
        .set_advertised(&prefix.prefix_id, &prefix.bgp_prefix_id, advertise)
        .await;
    let now = clock.now();
    let change = Change {
        store,
        notifier: &notifier,
        actor,
        cidr: &cidr,
        advertise,
        advertised_at: before.advertised_modified_at(),
        now,
    };
    match result {
        Ok(after) => {
            change.record(None).await?;
            Ok(AdvertiseOutcome::Changed {
                at: after.advertised_modified_at().unwrap_or(now),
            })
        }
        Err(e) if e.is_ambiguous() => {
            // The answer was lost (timeout, reset, 5xx, unreadable): the change may have
            // been made. Only a re-read can tell; when it shows the requested state, the
            // change is recorded as done, with a note, like any other.
            match cf
                .get_bgp_prefix(&prefix.prefix_id, &prefix.bgp_prefix_id)
                .await
            {
                Ok(again) if again.advertised() == advertise => {
                    let note = format!(
                        "Cloudflare's answer was lost ({e}); a re-read shows the prefix {}",
                        if advertise { "advertised" } else { "withdrawn" }
                    );
                    tracing::warn!(%cidr, error = %e, "advertisement change confirmed by a re-read after a lost answer");
                    change.record(Some(&note)).await?;
                    Ok(AdvertiseOutcome::Changed {
                        at: again.advertised_modified_at().unwrap_or(now),
                    })
                }
                reread => {
                    let explanation = match reread {
                        Ok(_) => format!("{e}; a re-read shows the prefix unchanged"),
                        Err(again) => format!(
                            "{e}; the prefix could not be re-read ({again}): its state is unknown, check `mtctl status`"
                        ),
                    };
                    change.failed(&explanation).await?;
                    Err(ControlError::Failed(explanation))
                }
            }
        }
        Err(e) => {
            // Another tool may have made the same change a moment ago: then there is nothing
            // to report as a failure.
            if let Ok(again) = cf
                .get_bgp_prefix(&prefix.prefix_id, &prefix.bgp_prefix_id)
                .await
                && again.advertised() == advertise
            {
                let detail = format!(
                    "already {} on Cloudflare (changed meanwhile; this request was refused: {e})",
                    if advertise { "advertised" } else { "withdrawn" }
                );
                audit_alone(
                    store,
                    actor,
                    action,
                    Some(&cidr),
                    Some(&detail),
                    "noop",
                    now,
                )
                .await?;
                return Ok(AdvertiseOutcome::Unchanged);
            }
            let explanation = if e.is_prefix_hold() {
                let allowed = before.advertised_modified_at().map(|t| t + CHANGE_HOLD);
                match allowed {
                    Some(t) if t > now => format!(
                        "Cloudflare refuses a change within 15 minutes of the last one ({}); allowed from {} UTC (in {})",
                        e,
                        to_db(t),
                        duration((t - now).num_seconds())
                    ),
                    _ => format!(
                        "Cloudflare refuses a change within 15 minutes of the last one ({e}); try again shortly"
                    ),
                }
            } else {
                e.to_string()
            };
            change.failed(&explanation).await?;
            Err(ControlError::Failed(explanation))
        }
    }
}

/// A change of advertisement, to be recorded once Cloudflare's answer is known.
struct Change<'a> {
    store: &'a Store,
    notifier: &'a Notifier,
    actor: &'a Actor,
    cidr: &'a str,
    advertise: bool,
    /// When the prefix was last advertised/withdrawn, before this change.
    advertised_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

impl Change<'_> {
    /// Records a change Cloudflare made: the event, the history row (withdrawals), the
    /// calm-status mark, the message and the audit row, in one transaction. `note` says how it
    /// was confirmed when the answer itself was lost.
    async fn record(&self, note: Option<&str>) -> Result<(), ControlError> {
        let (cidr, now, advertise) = (self.cidr, self.now, self.advertise);
        let who = self.actor.name.as_str();
        let tool = self.actor.via.as_str();
        let action = verb(advertise);
        let record = async {
            let mut tx = self.store.begin().await?;
            let mut payload = serde_json::json!({ "operator": who, "via": tool });
            if let Some(note) = note {
                payload["note"] = serde_json::Value::String(note.to_owned());
            }
            let message = if advertise {
                tx.insert_attack_event(&NewAttackEvent {
                    prefix: Some(cidr.to_owned()),
                    raw_payload: Some(payload.to_string()),
                    ..NewAttackEvent::new(EventType::Advertise, ActionTaken::AdvertisedManual, now)
                })
                .await?;
                tx.mark_prefix_advertised(cidr, now).await?;
                Message::ManualAdvertisement(ManualAdvertisement {
                    prefix: cidr.to_owned(),
                    operator: who.to_owned(),
                    at: now,
                })
            } else {
                let mut notes = format!("manual withdrawal by {who} ({tool})");
                if let Some(note) = note {
                    notes.push_str("; ");
                    notes.push_str(note);
                }
                let history = manual_withdrawal(
                    cidr,
                    self.advertised_at,
                    now,
                    WithdrawStatus::Success,
                    notes,
                );
                tx.record_withdrawal(&WithdrawalWrite {
                    history: &history,
                    action: ActionTaken::WithdrawnManual,
                    event_payload: Some(payload.to_string()),
                    request: None,
                    at: now,
                })
                .await?;
                Message::WithdrawalSuccess(WithdrawalSuccess {
                    prefix: cidr.to_owned(),
                    kind: WithdrawKind::Manual,
                    withdrawn_at: now,
                    calm_for: None,
                    advertised_for: self.advertised_at.and_then(|t| (now - t).to_std().ok()),
                    peak_pps: None,
                    peak_mbps: None,
                    mitigation_systems: None,
                    operator: who.to_owned(),
                })
            };
            self.notifier.queue(&mut tx, &message, now).await?;
            tx.insert_audit(&self.actor.audit(now, action, Some(cidr), note, "ok"))
                .await?;
            tx.commit().await?;
            Ok::<_, mt_store::Error>(())
        };
        if let Err(e) = record.await {
            // Cloudflare changed the route; only our record of it failed. Say so plainly
            // and leave at least an audit row if the database takes one.
            let detail = format!(
                "{cidr} WAS {} on Cloudflare, but recording it failed: {e}; check `mtctl status`",
                if advertise { "advertised" } else { "withdrawn" }
            );
            tracing::error!(%cidr, error = %e, "advertisement changed but not recorded");
            let _ = audit_alone(
                self.store,
                self.actor,
                action,
                Some(cidr),
                Some(&detail),
                "failed",
                now,
            )
            .await;
            return Err(ControlError::Failed(detail));
        }
        Ok(())
    }

    /// Records a change that did not happen: a failed withdrawal (history row and message)
    /// and the audit row.
    async fn failed(&self, explanation: &str) -> Result<(), ControlError> {
        let (cidr, now) = (self.cidr, self.now);
        let who = self.actor.name.as_str();
        let tool = self.actor.via.as_str();
        let mut tx = self.store.begin().await?;
        if !self.advertise {
            tx.insert_withdrawal(&manual_withdrawal(
                cidr,
                self.advertised_at,
                now,
                WithdrawStatus::Failed,
                format!("manual withdrawal by {who} ({tool}) failed: {explanation}"),
            ))
            .await?;
            let message = Message::WithdrawalFailure(WithdrawalFailure {
                prefix: cidr.to_owned(),
                kind: WithdrawKind::Manual,
                error: explanation.to_owned(),
                attempts: 1,
                next_attempt_at: None,
                at: now,
            });
            self.notifier.queue(&mut tx, &message, now).await?;
        }
        tx.insert_audit(&self.actor.audit(
            now,
            verb(self.advertise),
            Some(cidr),
            Some(explanation),
            "failed",
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn until(
    duration: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ControlError> {
    if duration.is_some_and(|d| d.is_zero()) {
        return Err(ControlError::Invalid(
            "a duration of 0 would end at once; leave it empty for \"until removed\"".into(),
        ));
    }
    duration
        .map(|d| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| ControlError::Invalid(format!("duration {d:?} is too long")))
        })
        .transpose()
}

fn require_reason(reason: &str) -> Result<&str, ControlError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ControlError::Invalid("a reason must say why".into()));
    }
    if reason.chars().count() > 500 {
        return Err(ControlError::Invalid(
            "the reason is longer than 500 characters".into(),
        ));
    }
    Ok(reason)
}

/// Pins a configured prefix: autowithdraw never withdraws it until unpinned or `duration`
/// ends. Returns the end (`None`: until unpinned).
pub async fn pin(
    config: &Config,
    store: &Store,
    clock: &dyn Clock,
    cidr: &str,
    reason: &str,
    duration: Option<std::time::Duration>,
    actor: &Actor,
) -> Result<Option<DateTime<Utc>>, ControlError> {
    let prefix = require_configured(config, cidr)?.cidr.to_string();
    let reason = require_reason(reason)?;
    let now = clock.now();
    let until = until(duration, now)?;
    let detail = format!(
        "{reason} (until {})",
        until.map(to_db).unwrap_or_else(|| "unpinned".into())
    );
    let mut tx = store.begin().await?;
    tx.pin_prefix(&prefix, &actor.name, reason, now, until)
        .await?;
    tx.insert_audit(&actor.audit(now, "pin", Some(&prefix), Some(&detail), "ok"))
        .await?;
    tx.commit().await?;
    Ok(until)
}

/// Removes a pin; returns whether there was one.
pub async fn unpin(
    config: &Config,
    store: &Store,
    clock: &dyn Clock,
    cidr: &str,
    actor: &Actor,
) -> Result<bool, ControlError> {
    let prefix = require_configured(config, cidr)?.cidr.to_string();
    let mut tx = store.begin().await?;
    let existed = tx.unpin_prefix(&prefix).await?;
    tx.insert_audit(&actor.audit(
        clock.now(),
        "unpin",
        Some(&prefix),
        None,
        if existed { "ok" } else { "noop" },
    ))
    .await?;
    tx.commit().await?;
    Ok(existed)
}

/// Pauses every automatic withdrawal until resumed or `duration` ends; returns the end.
pub async fn pause(
    store: &Store,
    clock: &dyn Clock,
    reason: &str,
    duration: Option<std::time::Duration>,
    actor: &Actor,
) -> Result<Option<DateTime<Utc>>, ControlError> {
    let reason = require_reason(reason)?;
    let now = clock.now();
    let until = until(duration, now)?;
    let detail = format!(
        "{reason} (until {})",
        until.map(to_db).unwrap_or_else(|| "resumed".into())
    );
    let mut tx = store.begin().await?;
    tx.pause_withdrawals(&actor.name, reason, now, until)
        .await?;
    tx.insert_audit(&actor.audit(now, "pause", None, Some(&detail), "ok"))
        .await?;
    tx.commit().await?;
    Ok(until)
}

/// Ends the pause; returns whether there was one.
pub async fn resume(store: &Store, clock: &dyn Clock, actor: &Actor) -> Result<bool, ControlError> {
    let mut tx = store.begin().await?;
    let existed = tx.resume_withdrawals().await?;
    tx.insert_audit(&actor.audit(
        clock.now(),
        "resume",
        None,
        None,
        if existed { "ok" } else { "noop" },
    ))
    .await?;
    tx.commit().await?;
    Ok(existed)
}

/// A `withdrawal_history` row of method `manual`.
fn manual_withdrawal(
    cidr: &str,
    advertised_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    status: WithdrawStatus,
    notes: String,
) -> NewWithdrawal {
    let succeeded = status == WithdrawStatus::Success;
    NewWithdrawal {
        prefix: cidr.to_owned(),
        attack_id: None,
        policy_id: None,
        policy_name: None,
        target_ip: None,
        attack_type: None,
        advertised_at,
        attack_ended_at: None,
        withdrawn_at: Some(now),
        attack_duration_seconds: None,
        protection_duration_seconds: advertised_at
            .filter(|_| succeeded)
            .map(|t| (now - t).num_seconds()),
        method: WithdrawMethod::Manual,
        status,
        notes: Some(notes),
        created_at: now,
    }
}

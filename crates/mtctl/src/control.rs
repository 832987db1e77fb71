//! Manual control: advertise/withdraw through Cloudflare, pins, the pause.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use mt_cloudflare::{Client, ClientOptions};
use mt_common::config::{Config, PrefixConfig};
use mt_common::timefmt::to_db;
use mt_notify::templates::{
    ManualAdvertisement, WithdrawKind, WithdrawalFailure, WithdrawalSuccess,
};
use mt_notify::{Message, Notifier};
use mt_store::{
    ActionTaken, EventType, NewAttackEvent, NewWithdrawal, Store, WithdrawMethod, WithdrawStatus,
};

use crate::Usage;
use crate::output::{duration, operator};

/// Cloudflare refuses a change of advertisement this soon after the last one.
const CHANGE_HOLD: chrono::Duration = chrono::Duration::minutes(15);

/// The configured prefix `cidr` names, or a usage error listing the configured ones.
pub fn require_configured<'a>(config: &'a Config, cidr: &str) -> Result<&'a PrefixConfig, Usage> {
    let wanted = cidr
        .trim()
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| Usage(format!("{cidr:?} is not a CIDR")))?;
    config
        .prefixes
        .iter()
        .find(|p| p.cidr == wanted)
        .ok_or_else(|| {
            let known: Vec<String> = config.prefixes.iter().map(|p| p.cidr.to_string()).collect();
            Usage(format!(
                "{wanted} is not a configured prefix (configured: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })
}

fn client(config: &Config) -> anyhow::Result<Client> {
    let (token, _) = config
        .cloudflare_api_token()
        .map_err(|e| Usage(e.to_string()))?;
    Ok(Client::new(
        &config.cloudflare,
        &token,
        ClientOptions {
            request_timeout: config.cloudflare.request_timeout,
            ..ClientOptions::default()
        },
    )?)
}

/// `mtctl advertise` / `mtctl withdraw --yes`.
pub async fn set_advertised(
    config: &Config,
    store: &Store,
    cidr: &str,
    advertise: bool,
) -> anyhow::Result<()> {
    let prefix = require_configured(config, cidr)?;
    let cf = client(config)?;
    let who = operator();
    let cidr = prefix.cidr.to_string();
    let before = cf
        .get_bgp_prefix(&prefix.prefix_id, &prefix.bgp_prefix_id)
        .await?;
    if before.advertised() == advertise {
        println!(
            "{cidr} is already {} on Cloudflare; nothing to do",
            if advertise { "advertised" } else { "withdrawn" }
        );
        return Ok(());
    }
    let notifier = Notifier::new(&config.telegram);
    let result = cf
        .set_advertised(&prefix.prefix_id, &prefix.bgp_prefix_id, advertise)
        .await;
    let now = Utc::now();
    match result {
        Ok(after) => {
            let mut tx = store.begin().await?;
            let (event_type, action) = if advertise {
                (EventType::Advertise, ActionTaken::AdvertisedManual)
            } else {
                (EventType::Withdraw, ActionTaken::WithdrawnManual)
            };
            tx.insert_attack_event(&NewAttackEvent {
                prefix: Some(cidr.clone()),
                raw_payload: Some(format!("{{\"operator\":{}}}", serde_json::to_string(&who)?)),
                ..NewAttackEvent::new(event_type, action, now)
            })
            .await?;
            let message = if advertise {
                tx.mark_prefix_advertised(&cidr, now).await?;
                Message::ManualAdvertisement(ManualAdvertisement {
                    prefix: cidr.clone(),
                    operator: who.clone(),
                    at: now,
                })
            } else {
                let advertised_at = before.advertised_modified_at();
                tx.insert_withdrawal(&manual_withdrawal(
                    &cidr,
                    advertised_at,
                    now,
                    WithdrawStatus::Success,
                    format!("manual withdrawal by {who} (mtctl)"),
                ))
                .await?;
                tx.mark_prefix_withdrawn(&cidr, now).await?;
                Message::WithdrawalSuccess(WithdrawalSuccess {
                    prefix: cidr.clone(),
                    kind: WithdrawKind::Manual,
                    withdrawn_at: now,
                    calm_for: None,
                    advertised_for: advertised_at.and_then(|t| (now - t).to_std().ok()),
                    peak_pps: None,
                    peak_mbps: None,
                    mitigation_systems: None,
                    operator: who.clone(),
                })
            };
            notifier.queue(&mut tx, &message, now).await?;
            tx.commit().await?;
            println!(
                "{cidr} {} on Cloudflare at {} UTC (takes effect in {}); logged and notified",
                if advertise { "advertised" } else { "withdrawn" },
                after
                    .advertised_modified_at()
                    .map(to_db)
                    .unwrap_or_else(|| to_db(now)),
                if advertise {
                    "2-7 minutes"
                } else {
                    "about 15 minutes"
                }
            );
            Ok(())
        }
        Err(e) => {
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
            if !advertise {
                record_failed_withdrawal(
                    store,
                    &notifier,
                    &cidr,
                    &who,
                    &explanation,
                    before.advertised_modified_at(),
                    now,
                )
                .await?;
            }
            anyhow::bail!("{explanation}")
        }
    }
}

async fn record_failed_withdrawal(
    store: &Store,
    notifier: &Notifier,
    cidr: &str,
    who: &str,
    error: &str,
    advertised_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.insert_withdrawal(&manual_withdrawal(
        cidr,
        advertised_at,
        now,
        WithdrawStatus::Failed,
        format!("manual withdrawal by {who} (mtctl) failed: {error}"),
    ))
    .await?;
    let message = Message::WithdrawalFailure(WithdrawalFailure {
        prefix: cidr.to_owned(),
        kind: WithdrawKind::Manual,
        error: error.to_owned(),
        attempts: 1,
        next_attempt_at: None,
        at: now,
    });
    notifier.queue(&mut tx, &message, now).await?;
    tx.commit().await?;
    Ok(())
}

fn until(
    duration: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    Ok(match duration {
        Some(d) => Some(now + chrono::Duration::from_std(d)?),
        None => None,
    })
}

pub async fn pin(
    config: &Config,
    store: &Store,
    cidr: &str,
    reason: &str,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let prefix = require_configured(config, cidr)?.cidr.to_string();
    if reason.trim().is_empty() {
        return Err(Usage("--reason must say why".into()).into());
    }
    let now = Utc::now();
    let until = until(duration, now)?;
    let who = operator();
    let mut tx = store.begin().await?;
    tx.pin_prefix(&prefix, &who, reason, now, until).await?;
    tx.commit().await?;
    println!(
        "{prefix} pinned by {who} until {}: it will not be withdrawn automatically",
        until.map(to_db).unwrap_or_else(|| "unpinned".into())
    );
    Ok(())
}

pub async fn unpin(config: &Config, store: &Store, cidr: &str) -> anyhow::Result<()> {
    let prefix = require_configured(config, cidr)?.cidr.to_string();
    let mut tx = store.begin().await?;
    let existed = tx.unpin_prefix(&prefix).await?;
    tx.commit().await?;
    if existed {
        println!("{prefix} unpinned");
    } else {
        println!("{prefix} was not pinned");
    }
    Ok(())
}

pub async fn pause(
    store: &Store,
    reason: &str,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        return Err(Usage("--reason must say why".into()).into());
    }
    let now = Utc::now();
    let until = until(duration, now)?;
    let who = operator();
    let mut tx = store.begin().await?;
    tx.pause_withdrawals(&who, reason, now, until).await?;
    tx.commit().await?;
    println!(
        "automatic withdrawals paused by {who} until {}",
        until.map(to_db).unwrap_or_else(|| "resumed".into())
    );
    Ok(())
}

pub async fn resume(store: &Store) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    let existed = tx.resume_withdrawals().await?;
    tx.commit().await?;
    println!(
        "{}",
        if existed {
            "automatic withdrawals resumed"
        } else {
            "automatic withdrawals were not paused"
        }
    );
    Ok(())
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

//! The per-prefix status `mtctl status` prints and the dashboard's Prefixes page shows.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use mt_common::config::Config;
use mt_common::timefmt::{from_db, to_db};
use mt_store::{Hold, PendingWithdrawal, Stats, Store};
use serde::Serialize;

/// One configured prefix.
#[derive(Debug, Clone, Serialize)]
pub struct PrefixStatus {
    /// Canonical CIDR.
    pub prefix: String,
    /// From the config.
    pub description: String,
    /// From the config.
    pub auto_withdraw: bool,
    /// Advertised on Cloudflare (autowithdraw's last reading, else `prefix_calm_status`).
    pub advertised: Option<bool>,
    /// When Cloudflare last changed the advertisement (from autowithdraw's state).
    pub advertised_since: Option<String>,
    /// Advertisement locked on Cloudflare (from autowithdraw's state).
    pub locked: Option<bool>,
    /// An attack alert is open for it.
    pub under_attack: Option<bool>,
    /// Start of the current calm stretch.
    pub calm_since: Option<String>,
    /// When the calm period is complete (autowithdraw may withdraw from then on, gates
    /// permitting).
    pub withdraw_due_at: Option<String>,
    /// Seconds until `withdraw_due_at` (0 when due), only while advertised.
    pub seconds_to_withdrawal: Option<i64>,
    /// The operator's pin, if one applies.
    pub pinned: Option<Hold>,
    /// When autowithdraw last judged it.
    pub last_judgement: Option<String>,
    /// Seconds since then.
    pub last_judgement_age_seconds: Option<i64>,
    /// Why it will not be withdrawn automatically, if anything says so.
    pub blocked_by: Option<String>,
    /// Dropped packets to addresses of this prefix over `dropped_window_seconds` (from the
    /// stored analytics).
    pub dropped_packets: i64,
    /// Dropped bits over the same window.
    pub dropped_bits: i64,
}

/// Everything `mtctl status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When this was computed (UTC).
    pub now: String,
    /// The global pause, if active.
    pub paused: Option<Hold>,
    /// One per configured prefix, in config order.
    pub prefixes: Vec<PrefixStatus>,
    /// The window `dropped_*` covers.
    pub dropped_window_seconds: i64,
    /// `pending_withdrawals` rows.
    pub pending_withdrawals: Vec<PendingWithdrawal>,
    /// The seed's statistics.
    pub stats: Stats,
    /// Telegram messages waiting.
    pub notifications_queued: i64,
    /// … of which failed at least once.
    pub notifications_failing: i64,
}

fn span(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

/// The status of every configured prefix at `now`.
pub async fn prefix_statuses(
    config: &Config,
    store: &Store,
    now: DateTime<Utc>,
) -> mt_store::Result<(Vec<PrefixStatus>, Option<Hold>)> {
    let a = &config.autowithdraw;
    let rows = store.prefix_calm_statuses().await?;
    let pins = store.active_pins(now).await?;
    let paused = store.active_pause(now).await?;
    let dropped = store
        .dropped_by_destination(now - span(config.network_analytics.lookback))
        .await?;
    let mut prefixes = Vec::new();
    for p in &config.prefixes {
        let cidr = p.cidr.to_string();
        let row = rows
            .iter()
            .find(|r| r.prefix.as_deref() == Some(cidr.as_str()));
        // autowithdraw's own state when it has run, else the shared prefix_calm_status view.
        let state = store.prefix_state(&cidr).await?;
        let pinned = pins.iter().find(|h| h.prefix == cidr).cloned();
        let mut calm_since = match &state {
            Some(s) => s.calm_since.map(to_db),
            None => row.and_then(|r| r.calm_since.clone()),
        };
        let mut advertised = state
            .as_ref()
            .map(|s| s.advertised)
            .or(row.map(|r| r.advertised));
        let mut advertised_since = state.as_ref().and_then(|s| s.advertised_modified_at);
        // An advertisement change logged after autowithdraw's last reading of Cloudflare (an
        // auto-advertisement webhook, a manual advertise/withdraw) wins until its next cycle
        // reads the new state; otherwise a prefix just advertised or withdrawn would show its
        // old state for up to a cycle.
        if state.is_some() {
            let saved = store.prefix_state_saved_at(&cidr).await?;
            if let Some((adv, at)) = store.last_advertisement_event(&cidr).await?
                && saved.is_none_or(|s| at >= s)
            {
                advertised = Some(adv);
                advertised_since = Some(at);
                if !adv {
                    calm_since = None;
                }
            }
        }
        let locked = state.as_ref().map(|s| s.locked);
        let under_attack = row.map(|r| r.under_attack);
        // autowithdraw withdraws once calm_period of judged time has passed (judging lags by
        // analytics_delay) and the prefix has been advertised for min_advertised.
        let due = calm_since.as_deref().and_then(from_db).map(|c| {
            let calm_due = c + span(a.calm_period) + span(a.analytics_delay);
            advertised_since.map_or(calm_due, |m| calm_due.max(m + span(a.min_advertised)))
        });
        let judged = row.and_then(|r| r.updated_at.clone());
        let blocked_by = if advertised != Some(true) {
            None
        } else if locked == Some(true) {
            Some("locked on Cloudflare".to_owned())
        } else if !p.auto_withdraw {
            Some("auto_withdraw = false".to_owned())
        } else if let Some(pin) = &pinned {
            Some(format!("pinned by {}: {}", pin.by, pin.reason))
        } else if let Some(pause) = &paused {
            Some(format!("paused by {}: {}", pause.by, pause.reason))
        } else if under_attack == Some(true) {
            Some("under attack".to_owned())
        } else if calm_since.is_none() {
            Some("not judged calm yet".to_owned())
        } else {
            None
        };
        let (dropped_packets, dropped_bits) = dropped
            .iter()
            .filter(|d| {
                d.destination_ip
                    .trim()
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| p.cidr.contains(&ip))
            })
            .fold((0i64, 0i64), |(pk, b), d| {
                (pk.saturating_add(d.packets), b.saturating_add(d.bits))
            });
        prefixes.push(PrefixStatus {
            prefix: cidr,
            description: p.description.clone(),
            auto_withdraw: p.auto_withdraw,
            advertised,
            advertised_since: advertised_since.map(to_db),
            locked,
            under_attack,
            calm_since,
            withdraw_due_at: due.map(to_db),
            seconds_to_withdrawal: due
                .filter(|_| advertised == Some(true))
                .map(|t| (t - now).num_seconds().max(0)),
            pinned,
            last_judgement_age_seconds: judged
                .as_deref()
                .and_then(from_db)
                .map(|t| (now - t).num_seconds()),
            last_judgement: judged,
            blocked_by,
            dropped_packets,
            dropped_bits,
        });
    }
    Ok((prefixes, paused))
}

/// The whole status at `now`.
pub async fn status(
    config: &Config,
    store: &Store,
    now: DateTime<Utc>,
) -> mt_store::Result<Status> {
    let (prefixes, paused) = prefix_statuses(config, store, now).await?;
    let outbox = store.outbox_stats().await?;
    Ok(Status {
        now: to_db(now),
        paused,
        prefixes,
        dropped_window_seconds: span(config.network_analytics.lookback).num_seconds(),
        pending_withdrawals: store.all_pending_withdrawals().await?,
        stats: store.stats(now).await?,
        notifications_queued: outbox.queued,
        notifications_failing: outbox.failing,
    })
}

//! Read commands: status, history, events, stats, webhooks.

use chrono::Utc;
use mt_common::config::Config;
use mt_common::timefmt::{from_db, to_db};
use mt_store::Store;
use serde::Serialize;

use crate::output::{cut, duration, json, rule};

/// One prefix in `status`.
#[derive(Debug, Serialize)]
struct PrefixStatus {
    prefix: String,
    description: String,
    auto_withdraw: bool,
    advertised: Option<bool>,
    /// When Cloudflare last changed the advertisement (from autowithdraw's state).
    advertised_since: Option<String>,
    /// Advertisement locked on Cloudflare (from autowithdraw's state).
    locked: Option<bool>,
    under_attack: Option<bool>,
    calm_since: Option<String>,
    /// When the calm period is complete (autowithdraw may withdraw from then on, gates
    /// permitting).
    withdraw_due_at: Option<String>,
    seconds_to_withdrawal: Option<i64>,
    pinned: Option<mt_store::Hold>,
    last_judgement: Option<String>,
    last_judgement_age_seconds: Option<i64>,
    /// Why it will not be withdrawn automatically, if anything says so.
    blocked_by: Option<String>,
}

#[derive(Debug, Serialize)]
struct Status {
    now: String,
    paused: Option<mt_store::Hold>,
    prefixes: Vec<PrefixStatus>,
    pending_withdrawals: Vec<mt_store::PendingWithdrawal>,
    stats: mt_store::Stats,
    notifications_queued: i64,
    notifications_failing: i64,
}

pub async fn status(config: &Config, store: &Store, as_json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let a = &config.autowithdraw;
    let span = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or_default();
    let rows = store.prefix_calm_statuses().await?;
    let pins = store.active_pins(now).await?;
    let paused = store.active_pause(now).await?;
    let mut prefixes = Vec::new();
    for p in &config.prefixes {
        let cidr = p.cidr.to_string();
        let row = rows
            .iter()
            .find(|r| r.prefix.as_deref() == Some(cidr.as_str()));
        // autowithdraw's own state when it has run, else the shared prefix_calm_status view.
        let state = store.prefix_state(&cidr).await?;
        let pinned = pins.iter().find(|h| h.prefix == cidr).cloned();
        let calm_since = match &state {
            Some(s) => s.calm_since.map(to_db),
            None => row.and_then(|r| r.calm_since.clone()),
        };
        let advertised = state
            .as_ref()
            .map(|s| s.advertised)
            .or(row.map(|r| r.advertised));
        let advertised_since = state.as_ref().and_then(|s| s.advertised_modified_at);
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
        });
    }
    let outbox = store.outbox_stats().await?;
    let status = Status {
        now: to_db(now),
        paused,
        prefixes,
        pending_withdrawals: store.all_pending_withdrawals().await?,
        stats: store.stats(now).await?,
        notifications_queued: outbox.queued,
        notifications_failing: outbox.failing,
    };
    if as_json {
        return json(&status);
    }
    let w = 90;
    println!("{}", rule('=', w));
    println!("MAGIC TRANSIT STATUS  ({} UTC)", status.now);
    println!("{}", rule('=', w));
    println!();
    println!(
        "{:<22} {:<6} {:<7} {:<7} {:<21} {:<14} Judged",
        "Prefix", "Adv.", "Attack", "Locked", "Calm Since", "Withdrawal"
    );
    println!("{}", rule('-', w));
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    };
    for p in &status.prefixes {
        let withdrawal = match (&p.blocked_by, p.seconds_to_withdrawal) {
            (Some(_), _) if p.advertised == Some(true) => "held".to_owned(),
            (None, Some(0)) => "due now".to_owned(),
            (None, Some(s)) => format!("in {}", duration(s)),
            _ => "-".to_owned(),
        };
        let judged = p
            .last_judgement_age_seconds
            .map(|s| format!("{} ago", duration(s)))
            .unwrap_or_else(|| "never".into());
        println!(
            "{:<22} {:<6} {:<7} {:<7} {:<21} {:<14} {}",
            p.prefix,
            yes_no(p.advertised),
            yes_no(p.under_attack),
            yes_no(p.locked),
            p.calm_since.as_deref().unwrap_or("-"),
            withdrawal,
            judged
        );
        if let Some(reason) = &p.blocked_by {
            println!("{:<22} ↳ {reason}", "");
        }
        if let Some(pin) = &p.pinned {
            println!(
                "{:<22} ↳ pinned since {} until {}",
                "",
                pin.since,
                pin.until.as_deref().unwrap_or("unpinned")
            );
        }
    }
    if let Some(pause) = &status.paused {
        println!();
        println!(
            "⏸  Automatic withdrawals PAUSED by {} since {} until {}: {}",
            pause.by,
            pause.since,
            pause.until.as_deref().unwrap_or("resumed"),
            pause.reason
        );
    }
    println!();
    println!("PENDING WITHDRAWALS");
    println!(
        "{:<20} {:<15} {:<22} Status",
        "Prefix", "Attack ID", "Withdraw After"
    );
    println!("{}", rule('-', 70));
    for p in &status.pending_withdrawals {
        let when = p.withdraw_after.as_deref().and_then(from_db);
        let state = match (p.status.as_deref(), when) {
            (Some("pending") | None, Some(t)) if t > now => {
                format!("in {}", duration((t - now).num_seconds()))
            }
            (Some("pending") | None, _) => "due".to_owned(),
            (Some(other), _) => other.to_owned(),
        };
        println!(
            "{:<20} {:<15} {:<22} {}",
            p.prefix.as_deref().unwrap_or("-"),
            cut(p.attack_id.as_deref().unwrap_or("-"), 12),
            p.withdraw_after.as_deref().unwrap_or("-"),
            state
        );
    }
    println!("{}", rule('-', 70));
    let s = &status.stats;
    println!(
        "Pending: {} | Total Withdrawals: {} | Success: {} | Events Today: {} | Queued notifications: {}",
        s.pending_withdrawals,
        s.total_withdrawals,
        s.successful_withdrawals,
        s.events_today,
        status.notifications_queued
    );
    println!("{}", rule('=', w));
    Ok(())
}

pub async fn history(store: &Store, limit: u32, as_json: bool) -> anyhow::Result<()> {
    let rows = store.withdrawal_history(limit).await?;
    if as_json {
        return json(&rows);
    }
    println!("{}", rule('=', 80));
    println!("WITHDRAWAL HISTORY");
    println!("{}", rule('=', 80));
    println!();
    println!(
        "{:<22} {:<20} {:<12} {:<12} Status",
        "Withdrawn At", "Prefix", "Method", "Duration"
    );
    println!("{}", rule('-', 80));
    for r in &rows {
        let status = match r.status.as_deref() {
            Some("success") => "✅ success".to_owned(),
            Some("failed") => "❌ failed".to_owned(),
            other => other.unwrap_or("-").to_owned(),
        };
        println!(
            "{:<22} {:<20} {:<12} {:<12} {}",
            r.withdrawn_at.as_deref().unwrap_or("-"),
            r.prefix.as_deref().unwrap_or("-"),
            cut(r.withdraw_method.as_deref().unwrap_or("-"), 11),
            r.protection_duration_seconds
                .map(duration)
                .unwrap_or_else(|| "-".into()),
            status
        );
    }
    println!("{}", rule('=', 80));
    Ok(())
}

pub async fn events(
    store: &Store,
    limit: u32,
    event_type: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let event_type = event_type.map(|t| t.to_uppercase());
    let rows = store.attack_events(limit, event_type.as_deref()).await?;
    if as_json {
        return json(&rows);
    }
    println!(
        "{:<20} {:<9} {:<20} {:<30} {:<18} Attack ID",
        "Created At", "Type", "Prefix", "Action", "Target"
    );
    println!("{}", rule('-', 110));
    for e in &rows {
        println!(
            "{:<20} {:<9} {:<20} {:<30} {:<18} {}",
            e.created_at.as_deref().unwrap_or("-"),
            e.event_type.as_deref().unwrap_or("-"),
            e.prefix.as_deref().unwrap_or("-"),
            e.action_taken.as_deref().unwrap_or("-"),
            e.target_ip.as_deref().unwrap_or("-"),
            e.attack_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub async fn stats(store: &Store, as_json: bool) -> anyhow::Result<()> {
    let s = store.stats(Utc::now()).await?;
    if as_json {
        return json(&s);
    }
    println!("pending_withdrawals:      {}", s.pending_withdrawals);
    println!("total_withdrawals:        {}", s.total_withdrawals);
    println!("successful_withdrawals:   {}", s.successful_withdrawals);
    println!("failed_withdrawals:       {}", s.failed_withdrawals);
    println!("total_events:             {}", s.total_events);
    println!("events_today:             {}", s.events_today);
    println!("total_webhooks:           {}", s.total_webhooks);
    println!("total_analytics_events:   {}", s.total_analytics_events);
    Ok(())
}

pub async fn webhooks_recent(store: &Store, count: u32, as_json: bool) -> anyhow::Result<()> {
    let rows = store.webhook_events(count, None, None).await?;
    if as_json {
        return json(&rows);
    }
    println!(
        "{:<20} {:<34} {:<26} {:<20} Alert ID",
        "Received At", "Alert Type", "State", "Prefix"
    );
    println!("{}", rule('-', 120));
    for w in &rows {
        println!(
            "{:<20} {:<34} {:<26} {:<20} {}",
            w.received_at.as_deref().unwrap_or("-"),
            w.alert_type.as_deref().unwrap_or("(test)"),
            w.event_state.as_deref().unwrap_or("-"),
            w.target_prefix.as_deref().unwrap_or("-"),
            w.alert_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub async fn webhooks_stats(store: &Store, as_json: bool) -> anyhow::Result<()> {
    let s = store.webhook_stats(Utc::now()).await?;
    if as_json {
        return json(&s);
    }
    println!(
        "Total webhooks: {} | Last 24h: {} | Completed attacks (START+END): {}",
        s.total, s.last_24h, s.completed_attacks
    );
    println!();
    println!("By type:");
    for (t, n) in &s.by_type {
        println!(
            "  {:<40} {n}",
            t.as_deref().unwrap_or("(none: Save and Test)")
        );
    }
    println!("By state:");
    for (t, n) in &s.by_state {
        println!("  {:<40} {n}", t.as_deref().unwrap_or("(none)"));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Correlation {
    alert_id: String,
    events: Vec<mt_store::WebhookEvent>,
    start: Option<String>,
    end: Option<String>,
    duration_seconds: Option<i64>,
}

pub async fn webhooks_show(store: &Store, alert_id: &str, as_json: bool) -> anyhow::Result<()> {
    let events = store.webhook_events_for_alert(alert_id).await?;
    if events.is_empty() {
        anyhow::bail!("no webhook with alert id {alert_id:?}");
    }
    let at = |state: &str| {
        events
            .iter()
            .find(|e| e.event_state.as_deref() == Some(state))
            .and_then(|e| e.received_at.clone())
    };
    let (start, end) = (at("ALERT_STATE_EVENT_START"), at("ALERT_STATE_EVENT_END"));
    let duration_seconds = match (
        start.as_deref().and_then(from_db),
        end.as_deref().and_then(from_db),
    ) {
        (Some(s), Some(e)) => Some((e - s).num_seconds()),
        _ => None,
    };
    let c = Correlation {
        alert_id: alert_id.to_owned(),
        events,
        start,
        end,
        duration_seconds,
    };
    if as_json {
        return json(&c);
    }
    println!("Attack ID: {}", c.alert_id);
    let last = c.events.len().saturating_sub(1);
    for (i, e) in c.events.iter().enumerate() {
        let branch = if i == last { "└──" } else { "├──" };
        println!(
            "{branch} {} | {:<26} | {}",
            e.received_at.as_deref().unwrap_or("-"),
            e.event_state.as_deref().unwrap_or("-"),
            e.action_taken.as_deref().unwrap_or("-")
        );
    }
    match c.duration_seconds {
        Some(s) => println!("Duration (START → END): {}", duration(s)),
        None => println!("Duration: no START/END pair yet"),
    }
    Ok(())
}

//! Read commands: status, history, events, stats, webhooks.

use chrono::Utc;
use mt_common::config::Config;
use mt_common::timefmt::from_db;
use mt_store::Store;
use serde::Serialize;

use crate::output::{cut, duration, json, rule};

pub async fn status(config: &Config, store: &Store, as_json: bool) -> anyhow::Result<()> {
    let now = Utc::now();
    let status = mt_control::status(config, store, now).await?;
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

//! The Attacks page: incidents (START → ADVERTISE → END → WITHDRAW) with their filter.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use mt_control::duration;
use serde::Deserialize;

use super::{Layout, dash, failed, render};
use crate::error::AppError;
use crate::state::{AppState, Authed};
use crate::views::{self, count};

/// Filters of the Attacks page and API.
#[derive(Debug, Default, Deserialize)]
pub struct AttackFilter {
    #[serde(default)]
    pub(crate) prefix: String,
    #[serde(default)]
    pub(crate) since: String,
    #[serde(default)]
    pub(crate) until: String,
}

/// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DDTHH:MM` or with seconds; UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// A validated Attacks filter: prefix, from, to.
pub(crate) type AttackRange = (Option<String>, DateTime<Utc>, Option<DateTime<Utc>>);

/// The filter's prefix, range; or what is wrong with it.
pub(crate) fn attack_range(state: &AppState, f: &AttackFilter) -> Result<AttackRange, String> {
    let now = state.clock.now();
    let prefix = match f.prefix.trim() {
        "" => None,
        p => Some(
            mt_control::require_configured(&state.config, p)
                .map_err(|e| e.to_string())?
                .cidr
                .to_string(),
        ),
    };
    let since = match f.since.trim() {
        "" => now - chrono::Duration::days(7),
        s => parse_time(s).ok_or_else(|| format!("from: {s:?} is not YYYY-MM-DD[ HH:MM]"))?,
    };
    let until = match f.until.trim() {
        "" => None,
        // A date alone means the whole day.
        s if s.len() == 10 => Some(
            parse_time(s).ok_or_else(|| format!("to: {s:?} is not YYYY-MM-DD[ HH:MM]"))?
                + chrono::Duration::days(1)
                - chrono::Duration::seconds(1),
        ),
        s => Some(parse_time(s).ok_or_else(|| format!("to: {s:?} is not YYYY-MM-DD[ HH:MM]"))?),
    };
    if until.is_some_and(|u| u < since) {
        return Err("the range ends before it starts (to is earlier than from)".into());
    }
    Ok((prefix, since, until))
}

/// One incident, formatted.
#[derive(Debug)]
struct IncidentRow {
    prefix: String,
    state: &'static str,
    state_class: &'static str,
    started: String,
    advertised: String,
    ended: String,
    withdrawn: String,
    attack_for: String,
    protected_for: String,
    peak: String,
    vectors: String,
    policies: String,
    lifecycle: String,
    steps: Vec<views::Step>,
}

fn incident_row(i: &views::Incident) -> IncidentRow {
    let peak = match (i.peak_pps, i.peak_mbps) {
        (None, None) => "-".to_owned(),
        (pps, mbps) => format!(
            "{} pps · {} Mbps",
            pps.map_or("-".into(), |v| count(v.round() as i64)),
            mbps.map_or("-".into(), |v| format!("{v:.1}"))
        ),
    };
    IncidentRow {
        prefix: dash(i.prefix.as_deref()),
        state: i.state,
        state_class: match i.state {
            "under attack" => "bad",
            "withdrawn" => "good",
            _ => "",
        },
        started: dash(i.started_at.as_deref()),
        advertised: dash(i.advertised_at.as_deref()),
        ended: dash(i.ended_at.as_deref()),
        withdrawn: dash(i.withdrawn_at.as_deref()),
        attack_for: i.attack_seconds.map_or("-".into(), duration),
        protected_for: i.protected_seconds.map_or("-".into(), duration),
        peak,
        vectors: if i.vectors.is_empty() {
            "-".into()
        } else {
            i.vectors.join(", ")
        },
        policies: if i.policy_names.is_empty() {
            "-".into()
        } else {
            i.policy_names.join(", ")
        },
        lifecycle: {
            let mut kinds: Vec<&str> = Vec::new();
            for s in &i.steps {
                if kinds.last() != Some(&s.event_type.as_str()) {
                    kinds.push(&s.event_type);
                }
            }
            kinds.join(" → ")
        },
        steps: i.steps.clone(),
    }
}

#[derive(Template)]
#[template(path = "attacks.html")]
struct AttacksPage {
    layout: Layout,
    view: views::AttacksView,
    rows: Vec<IncidentRow>,
    prefixes: Vec<String>,
    since_input: String,
    until_input: String,
}

/// `GET /attacks?prefix=&since=&until=`.
pub async fn attacks(
    State(state): State<AppState>,
    authed: Authed,
    Query(f): Query<AttackFilter>,
) -> Response {
    let (prefix, since, until) = match attack_range(&state, &f) {
        Ok(r) => r,
        Err(e) => return failed(&state, &authed, AppError::BadRequest(e)),
    };
    let view = match views::attacks(&state.store, prefix, since, until, state.clock.now()).await {
        Ok(v) => v,
        Err(e) => return failed(&state, &authed, e.into()),
    };
    render(
        StatusCode::OK,
        &AttacksPage {
            layout: Layout::new(&state, &authed, "/attacks", 0),
            rows: view.incidents.iter().map(incident_row).collect(),
            prefixes: state
                .config
                .prefixes
                .iter()
                .map(|p| p.cidr.to_string())
                .collect(),
            since_input: since.format("%Y-%m-%d %H:%M").to_string(),
            until_input: until
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            view,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_accepted_form() {
        for s in [
            "2026-11-20",
            "2026-11-20 10:00",
            "2026-11-20T10:00",
            "2026-11-20 10:00:00",
        ] {
            assert!(parse_time(s).is_some(), "{s}");
        }
        assert!(parse_time("yesterday").is_none());
    }
}

//! The Analytics page: dropped-traffic chart and rankings over a window.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::DateTime;
use serde::Deserialize;

use super::{Layout, failed, render};
use crate::error::AppError;
use crate::state::{AppState, Authed};
use crate::views::{self, AnalyticsView, Window, bits, count};

/// `?window=`.
#[derive(Debug, Default, Deserialize)]
pub struct WindowQuery {
    #[serde(default)]
    pub(crate) window: String,
}

/// The window asked for (default 24 h), or an error.
pub(crate) fn window(q: &WindowQuery) -> Result<Window, String> {
    match q.window.trim() {
        "" => Ok(Window::Day),
        w => Window::parse(w).ok_or_else(|| format!("window {w:?}: use 1h, 24h or 7d")),
    }
}

#[derive(Debug)]
struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    label: String,
}

#[derive(Debug)]
struct Chart {
    width: u32,
    height: u32,
    base: u32,
    bucket: String,
    bars: Vec<Bar>,
    max_label: String,
    first_label: String,
    last_label: String,
}

fn chart(view: &AnalyticsView) -> Chart {
    let (width, height, base) = (900u32, 180u32, 160u32);
    let max = view
        .series
        .iter()
        .map(|p| p.packets)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = view.series.len().max(1) as f64;
    let slot = f64::from(width) / n;
    let label = |t: i64| {
        DateTime::from_timestamp(t, 0)
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let bars = view
        .series
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let h = (p.packets as f64 / max) * f64::from(base - 16);
            Bar {
                x: (i as f64 * slot + 1.0).round(),
                y: (f64::from(base) - h).round(),
                w: (slot - 2.0).max(1.0).round(),
                h: h.round(),
                label: format!(
                    "{} UTC: {} packets, {}",
                    label(p.bucket),
                    count(p.packets),
                    bits(p.bits)
                ),
            }
        })
        .collect();
    Chart {
        width,
        height,
        base,
        bucket: humantime::format_duration(std::time::Duration::from_secs(
            view.bucket_seconds.max(0).unsigned_abs(),
        ))
        .to_string(),
        bars,
        max_label: format!("{} packets", count(max as i64)),
        first_label: view
            .series
            .first()
            .map(|p| label(p.bucket))
            .unwrap_or_default(),
        last_label: view
            .series
            .last()
            .map(|p| label(p.bucket))
            .unwrap_or_default(),
    }
}

#[derive(Debug)]
struct RankRow {
    key: String,
    label: Option<String>,
    packets: String,
    bits: String,
    bar: u32,
}

#[derive(Debug)]
struct RankingView {
    title: &'static str,
    key_title: &'static str,
    rows: Vec<RankRow>,
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct AnalyticsPage {
    layout: Layout,
    view: AnalyticsView,
    windows: Vec<(&'static str, bool)>,
    chart: Chart,
    rankings: Vec<RankingView>,
    total_packets: String,
    total_bits: String,
}

/// `GET /analytics?window=1h|24h|7d`.
pub async fn analytics(
    State(state): State<AppState>,
    authed: Authed,
    Query(q): Query<WindowQuery>,
) -> Response {
    let w = match window(&q) {
        Ok(w) => w,
        Err(e) => return failed(&state, &authed, AppError::BadRequest(e)),
    };
    let view = match views::analytics(&state.store, w, state.clock.now()).await {
        Ok(v) => v,
        Err(e) => return failed(&state, &authed, e.into()),
    };
    let rankings = view
        .rankings
        .iter()
        .map(|r| {
            let top = r.rows.first().map_or(1, |x| x.packets.max(1)) as f64;
            RankingView {
                title: r.title,
                key_title: match r.dimension {
                    mt_store::Dimension::Vector => "Vector",
                    mt_store::Dimension::Target => "Destination IP",
                    mt_store::Dimension::SourceAsn => "ASN",
                    mt_store::Dimension::SourceCountry => "Country",
                },
                rows: r
                    .rows
                    .iter()
                    .map(|x| RankRow {
                        key: x.key.clone(),
                        label: x.label.clone(),
                        packets: count(x.packets),
                        bits: bits(x.bits),
                        bar: ((x.packets.max(0) as f64 / top) * 120.0).round() as u32,
                    })
                    .collect(),
            }
        })
        .collect();
    render(
        StatusCode::OK,
        &AnalyticsPage {
            layout: Layout::new(&state, &authed, "/analytics", 0),
            windows: Window::ALL.iter().map(|x| (x.name(), *x == w)).collect(),
            chart: chart(&view),
            rankings,
            total_packets: count(view.total_packets),
            total_bits: bits(view.total_bits),
            view,
        },
    )
}

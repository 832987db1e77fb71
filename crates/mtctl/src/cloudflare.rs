//! `mtctl cloudflare check` and `mtctl cloudflare prefixes`: the operator's proof, before
//! enabling withdrawals, that the configured token and account answer every read and every
//! GraphQL query the daemons send (the same client methods, so the same documents), and a
//! listing of the account's prefixes ready to paste into `[[prefixes]]`.
//!
//! Nothing here changes anything on Cloudflare: the edit permission cannot be proven without a
//! change, so it is reported as unverified, never as ok.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use ipnet::IpNet;
use mt_cloudflare::graphql::{
    CALM_DATASET, CALM_FIELDS, DatasetSettings, DroppedTrafficQuery, EVENTS_DATASET, EVENTS_FIELDS,
};
use mt_cloudflare::{Client, Error, RetryPolicy};
use mt_common::config::Config;
use serde::Serialize;

use crate::Usage;
use crate::output;

/// Permission a failing REST read suggests is missing.
const READ_PREFIXES: &str =
    "IP Prefixes: Read (or IP Prefixes: BGP On Demand Read / Magic Transit Read)";
/// Permission the withdrawal needs (Cloudflare's accepted permissions for Update BGP Prefix).
const EDIT_PREFIXES: &str =
    "IP Prefixes: BGP On Demand Write (or IP Prefixes: Write / Magic Transit Write)";
/// Permission the GraphQL analytics queries need.
const READ_ANALYTICS: &str = "Account Analytics: Read";
/// Width of the windows the check queries (small: a handful of the GraphQL budget).
const CHECK_WINDOW: Duration = Duration::from_secs(300);

/// One line of the check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// `ok`, `failed` or `unverified`.
    pub status: &'static str,
    /// What Cloudflare answered, or what was found.
    pub detail: String,
    /// The token permission or fix to look at, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status: "ok",
            detail: detail.into(),
            hint: None,
        }
    }

    fn failed(
        check: impl Into<String>,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            status: "failed",
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// The client the daemons build, with a short retry schedule (an operator is waiting).
fn client(config: &Config) -> anyhow::Result<Client> {
    let retry = RetryPolicy {
        delays: vec![Duration::from_secs(1)],
        max_retry_after: Duration::from_secs(5),
    };
    Ok(Client::from_config(config, retry).map_err(|e| Usage(e.to_string()))?)
}

/// What a failure suggests: the token, a permission, the account id, or Cloudflare itself.
fn hint(e: &Error, permission: &str) -> String {
    match e.status() {
        Some(401) => "the API token is invalid, expired or revoked (cloudflare.api_token_file / MT_CLOUDFLARE_API_TOKEN)".into(),
        Some(403) => format!("the token lacks {permission} on this account, or cloudflare.account_id is not the account's id"),
        Some(404) => "not found: check cloudflare.account_id and the configured ids".into(),
        Some(429) => "rate limited: wait five minutes and run the check again".into(),
        _ if e.is_rate_limited() => "GraphQL budget spent: wait five minutes and run the check again".into(),
        _ if matches!(e, Error::GraphQl { .. }) => {
            let text = e.to_string().to_ascii_lowercase();
            if text.contains("auth") || text.contains("permission") || text.contains("access") {
                format!("the token lacks {permission}")
            } else {
                "Cloudflare refused the query: report it (the suite's queries are checked against Cloudflare's schema)".into()
            }
        }
        _ if matches!(e, Error::Decode(_)) => format!("no data for this account: the token may lack {permission}, or cloudflare.account_id is wrong"),
        _ => "Cloudflare or the network failed: run the check again; if it persists, check connectivity to api.cloudflare.com".into(),
    }
}

fn settings_check(name: &str, fields: &[&str], settings: Option<&DatasetSettings>) -> Check {
    let label = format!("GraphQL settings of {name}");
    let Some(s) = settings else {
        return Check::failed(
            label,
            "Cloudflare returned no settings for the dataset",
            format!(
                "the account may not have Magic Transit analytics; the token needs {READ_ANALYTICS}"
            ),
        );
    };
    let problems = s.problems(fields);
    if problems.is_empty() {
        let secs = |d: Option<Duration>| d.map_or("?".to_owned(), |d| format!("{}s", d.as_secs()));
        Check::ok(
            label,
            format!(
                "enabled; maxDuration {}, maxPageSize {}, notOlderThan {}, {} of at most {} fields",
                secs(s.max_duration),
                s.max_page_size.map_or("?".to_owned(), |n| n.to_string()),
                secs(s.not_older_than),
                fields.len(),
                s.max_number_of_fields
                    .map_or("?".to_owned(), |n| n.to_string()),
            ),
        )
    } else {
        Check::failed(
            label,
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            "the account's plan does not give this dataset as the suite queries it: nothing would ever be judged calm",
        )
    }
}

/// Runs every read the daemons make; returns the lines.
pub async fn checks(config: &Config) -> anyhow::Result<Vec<Check>> {
    let cf = client(config)?;
    let mut out = Vec::new();

    match cf.list_prefixes().await {
        Ok(p) => out.push(Check::ok(
            "REST list IP prefixes",
            format!("{} prefixes", p.len()),
        )),
        Err(e) => out.push(Check::failed(
            "REST list IP prefixes",
            e.to_string(),
            hint(&e, READ_PREFIXES),
        )),
    }
    let account = match cf.list_account_bgp_prefixes().await {
        Ok(a) => {
            out.push(Check::ok(
                "REST list BGP prefixes",
                format!("{} BGP prefixes", a.len()),
            ));
            Some(a)
        }
        Err(e) => {
            out.push(Check::failed(
                "REST list BGP prefixes",
                e.to_string(),
                hint(&e, READ_PREFIXES),
            ));
            None
        }
    };
    for p in &config.prefixes {
        let label = format!("REST read {} (BGP prefix {})", p.cidr, p.bgp_prefix_id);
        match cf.get_bgp_prefix(&p.prefix_id, &p.bgp_prefix_id).await {
            Ok(bgp) => {
                let cidr = bgp
                    .cidr
                    .as_deref()
                    .and_then(|c| c.parse::<IpNet>().ok())
                    .map(|c| c.trunc());
                if cidr == Some(p.cidr) {
                    out.push(Check::ok(
                        label,
                        format!(
                            "{}{}",
                            if bgp.advertised() {
                                "advertised"
                            } else {
                                "withdrawn"
                            },
                            if bgp.locked() { ", LOCKED" } else { "" }
                        ),
                    ));
                } else {
                    out.push(Check::failed(
                        label,
                        format!("Cloudflare says this BGP prefix is {}", cidr.map_or("of unknown CIDR".into(), |c| c.to_string())),
                        "fix prefix_id / bgp_prefix_id in [[prefixes]] (`mtctl cloudflare prefixes` prints the right ones); the daemons never act on a mismatch",
                    ));
                }
            }
            Err(e) => out.push(Check::failed(label, e.to_string(), hint(&e, READ_PREFIXES))),
        }
    }
    if let Some(account) = &account {
        for a in account.iter().filter(|a| a.bgp.advertised()) {
            if !config.prefixes.iter().any(|p| p.bgp_prefix_id == a.bgp.id) {
                out.push(Check {
                    check: format!("advertised prefix {}", a.bgp.cidr.as_deref().unwrap_or(&a.bgp.id)),
                    status: "unverified",
                    detail: "advertised on Cloudflare but not in [[prefixes]]: never withdrawn automatically".into(),
                    hint: Some("add it to the config if the suite should manage it".into()),
                });
            }
        }
    }

    let settings = cf.dataset_settings().await;
    let mut calm_settings = None;
    match &settings {
        Ok(s) => {
            calm_settings = s.get(CALM_DATASET).cloned();
            out.push(settings_check(
                CALM_DATASET,
                CALM_FIELDS,
                s.get(CALM_DATASET),
            ));
            out.push(settings_check(
                EVENTS_DATASET,
                EVENTS_FIELDS,
                s.get(EVENTS_DATASET),
            ));
        }
        Err(e) => out.push(Check::failed(
            "GraphQL settings",
            e.to_string(),
            hint(e, READ_ANALYTICS),
        )),
    }

    // The daemons' two queries, over one small window a few minutes back.
    let limits = calm_settings
        .unwrap_or_default()
        .limits(CHECK_WINDOW, 10_000);
    let now = Utc::now();
    let delay = chrono::Duration::from_std(config.autowithdraw.analytics_delay).unwrap_or_default();
    let end = now - delay;
    let start = end - chrono::Duration::from_std(limits.max_window).unwrap_or_default();
    let prefixes: Vec<IpNet> = config.prefixes.iter().map(|p| p.cidr).collect();
    let calm = cf
        .dropped_traffic(&DroppedTrafficQuery {
            start,
            end,
            data_until: now,
            probe_start: limits.probe_start(start, now),
            mitigation_systems: &config.autowithdraw.mitigation_systems,
            prefixes: &prefixes,
            limit: limits.limit,
        })
        .await;
    let window = format!(
        "{} – {}",
        start.to_rfc3339_opts(SecondsFormat::Secs, true),
        end.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let calm_label = format!("GraphQL calm query ({CALM_DATASET})");
    let stamp = |t: Option<chrono::DateTime<Utc>>| {
        t.map_or("none".to_owned(), |m| {
            m.to_rfc3339_opts(SecondsFormat::Secs, true)
        })
    };
    match calm {
        // What would make every window unknown to the daemons (never calm) is not "ok".
        Ok(t) if t.truncated => out.push(Check::failed(
            calm_label,
            format!("{} rows: the answer hit its row limit over {window}", t.rows),
            "more distinct dropped subnets per window than one query returns: autowithdraw would judge every window unknown; lower autowithdraw.window",
        )),
        Ok(t)
            if t
                .served_at
                .is_none_or(|c| (Utc::now() - c).abs() > chrono::Duration::seconds(30)) =>
        {
            out.push(Check::failed(
                calm_label,
                format!(
                    "this host's clock and Cloudflare's ({}) differ by more than 30 s",
                    stamp(t.served_at)
                ),
                "autowithdraw judges every window unknown while the clocks differ: fix NTP on this host",
            ))
        }
        Ok(t) if t.latest_minute.is_none_or(|m| m + chrono::Duration::minutes(1) < end) => {
            out.push(Check {
                check: calm_label,
                status: "unverified",
                detail: format!(
                    "{} rows over {window}; the account's data does not reach the window's end (newest: {})",
                    t.rows,
                    stamp(t.latest_minute)
                ),
                hint: Some("expected while no prefix is advertised (no traffic crosses Cloudflare); while one is, autowithdraw needs this data to judge calm".into()),
            })
        }
        Ok(t) => out.push(Check::ok(
            calm_label,
            format!(
                "{} rows over {window}; newest data {}",
                t.rows,
                stamp(t.latest_minute)
            ),
        )),
        Err(e) => out.push(Check::failed(calm_label, e.to_string(), hint(&e, READ_ANALYTICS))),
    }
    match cf.dosd_events(start, end, limits.limit.min(1000)).await {
        Ok(ev) => out.push(Check::ok(
            format!("GraphQL events query ({EVENTS_DATASET})"),
            format!("{} rows over {window}", ev.events.len()),
        )),
        Err(e) => out.push(Check::failed(
            format!("GraphQL events query ({EVENTS_DATASET})"),
            e.to_string(),
            hint(&e, READ_ANALYTICS),
        )),
    }
    out.push(Check {
        check: "REST withdraw (PATCH on_demand.advertised)".into(),
        status: "unverified",
        detail: format!("cannot be proven without a change: needs {EDIT_PREFIXES}"),
        hint: Some("grant it on the token; the first real withdrawal proves it (use dry_run = true until then if unsure)".into()),
    });
    Ok(out)
}

/// `mtctl cloudflare check`: one line per check; exit 1 when any failed.
pub async fn check(config: &Config, json: bool) -> anyhow::Result<()> {
    let lines = checks(config).await?;
    if json {
        output::json(&lines)?;
    } else {
        for c in &lines {
            let mark = match c.status {
                "ok" => "ok        ",
                "failed" => "FAILED    ",
                _ => "unverified",
            };
            println!("{mark}  {}: {}", c.check, c.detail);
            if c.status == "failed"
                && let Some(h) = &c.hint
            {
                println!("            → {h}");
            }
        }
    }
    let failed = lines.iter().filter(|c| c.status == "failed").count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", lines.len());
    }
    Ok(())
}

/// One BGP prefix of the account, for `mtctl cloudflare prefixes`.
#[derive(Debug, Clone, Serialize)]
pub struct AccountPrefix {
    /// IP prefix id.
    pub prefix_id: String,
    /// IP prefix CIDR.
    pub prefix_cidr: Option<String>,
    /// Description of the IP prefix.
    pub description: Option<String>,
    /// BGP prefix id.
    pub bgp_prefix_id: String,
    /// BGP prefix CIDR.
    pub cidr: Option<String>,
    /// On-demand enabled.
    pub on_demand_enabled: Option<bool>,
    /// Advertised now.
    pub advertised: bool,
    /// Last change of the advertisement.
    pub advertised_modified_at: Option<String>,
    /// Advertisement locked.
    pub locked: bool,
    /// Already in the config.
    pub configured: bool,
}

/// `mtctl cloudflare prefixes`: the account's prefixes and a ready `[[prefixes]]` block.
pub async fn prefixes(config: &Config, json: bool) -> anyhow::Result<()> {
    let cf = client(config)?;
    let mut rows = Vec::new();
    for p in cf.list_prefixes().await? {
        for bgp in cf.list_bgp_prefixes(&p.id).await? {
            rows.push(AccountPrefix {
                prefix_id: p.id.clone(),
                prefix_cidr: p.cidr.clone(),
                description: p.description.clone(),
                configured: config.prefixes.iter().any(|c| c.bgp_prefix_id == bgp.id),
                bgp_prefix_id: bgp.id.clone(),
                cidr: bgp.cidr.clone(),
                on_demand_enabled: bgp.on_demand.as_ref().and_then(|o| o.on_demand_enabled),
                advertised: bgp.advertised(),
                advertised_modified_at: bgp
                    .advertised_modified_at()
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
                locked: bgp.locked(),
            });
        }
    }
    if json {
        return output::json(&rows);
    }
    println!(
        "{:<20} {:<34} {:<34} {:<10} {:<10} {:<6} {:<20}",
        "CIDR", "IP prefix id", "BGP prefix id", "On-demand", "State", "Locked", "Changed"
    );
    println!("{}", output::rule('-', 140));
    for r in &rows {
        println!(
            "{:<20} {:<34} {:<34} {:<10} {:<10} {:<6} {:<20}{}",
            r.cidr.as_deref().unwrap_or("?"),
            r.prefix_id,
            r.bgp_prefix_id,
            match r.on_demand_enabled {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            },
            if r.advertised { "ADV" } else { "withdrawn" },
            if r.locked { "yes" } else { "no" },
            r.advertised_modified_at.as_deref().unwrap_or("-"),
            if r.configured { "  (configured)" } else { "" },
        );
    }
    println!("\n# Ready for the config (review auto_withdraw and the description):");
    for r in rows.iter().filter(|r| r.on_demand_enabled != Some(false)) {
        let cidr = r
            .cidr
            .as_deref()
            .and_then(|c| c.parse::<IpNet>().ok())
            .map_or_else(
                || r.cidr.clone().unwrap_or_default(),
                |c| c.trunc().to_string(),
            );
        println!("\n[[prefixes]]");
        println!("cidr = \"{cidr}\"");
        println!("prefix_id = \"{}\"", r.prefix_id);
        println!("bgp_prefix_id = \"{}\"", r.bgp_prefix_id);
        println!(
            "description = {}",
            toml_string(r.description.as_deref().unwrap_or(""))
        );
        println!("auto_withdraw = true");
    }
    Ok(())
}

/// A TOML basic string (the description is Cloudflare's free text).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

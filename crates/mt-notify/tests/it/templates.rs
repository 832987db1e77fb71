//! Every template, fed hostile values, yields text Telegram accepts.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use mt_notify::templates::*;
use mt_notify::{MAX_MESSAGE_CHARS, Message, split_message};

use crate::markdown_v2::validate;

const HOSTILE: &str =
    "_*[]()~`>#+-=|{}.!<>&\\ 2001:db8:dead:beef::1 203.0.113.0/24 🔥 <script>x</script>";

fn hostile() -> String {
    HOSTILE.to_owned()
}

fn huge() -> String {
    // 5 KB of reserved characters and line breaks.
    "a_b*c.d-e\\f`g|h\n".repeat(320)
}

fn every_message() -> Vec<Message> {
    let at = Utc.with_ymd_and_hms(2026, 1, 19, 0, 15, 0).unwrap();
    let alert = AttackAlert {
        alert_type: Some(hostile()),
        alert_name: Some(huge()),
        attack_id: Some(hostile()),
        policy_name: Some(hostile()),
        prefix: Some("2001:db8:1000::/48".into()),
        target_ip: Some("2001:db8:1000::1".into()),
        target_port: Some(443),
        protocol: Some(hostile()),
        attack_vector: Some(hostile()),
        packets_per_second: Some("1.2e6".into()),
        megabits_per_second: Some("-3.5".into()),
        severity: Some(hostile()),
        at,
        prefix_state: PrefixState::Withdrawn {
            readvertise_allowed_at: Some(at),
        },
    };
    let mut end = alert.clone();
    end.prefix_state = PrefixState::Advertised;
    let mut unknown = alert.clone();
    unknown.prefix_state = PrefixState::Unknown;
    vec![
        Message::AttackStart(alert.clone()),
        Message::AttackStart(unknown.clone()),
        Message::AttackStart(AttackAlert {
            prefix_state: PrefixState::Withdrawn {
                readvertise_allowed_at: None,
            },
            ..alert.clone()
        }),
        Message::AttackStart(AttackAlert {
            at,
            ..Default::default()
        }),
        Message::AttackEnd(end),
        Message::AttackEnd(unknown),
        Message::AutoAdvertisement(AutoAdvertisement {
            prefixes: vec![
                ("203.0.113.0/24".into(), "Advertised".into()),
                (hostile(), "Could not Advertise".into()),
                ("2001:db8::/48".into(), huge()),
            ],
            not_configured: vec![hostile(), huge()],
            not_configured_total: 12_345,
            policy_name: Some(hostile()),
            at,
        }),
        Message::AutoAdvertisement(AutoAdvertisement {
            at,
            ..Default::default()
        }),
        Message::TunnelHealth(TunnelHealth {
            tunnel: Some(hostile()),
            state: Some(hostile()),
            ended: false,
            text: Some(huge()),
            at,
        }),
        Message::TunnelHealth(TunnelHealth {
            ended: true,
            at,
            ..Default::default()
        }),
        Message::WithdrawalSuccess(WithdrawalSuccess {
            prefix: "2001:db8:1000::/48".into(),
            kind: WithdrawKind::Automatic,
            withdrawn_at: at,
            calm_for: Some(Duration::from_secs(1125)),
            advertised_for: Some(Duration::from_secs(7500)),
            peak_pps: Some(1_234_567.8),
            peak_mbps: Some(9876.5),
            mitigation_systems: Some(hostile()),
            operator: hostile(),
        }),
        Message::WithdrawalSuccess(WithdrawalSuccess {
            prefix: hostile(),
            kind: WithdrawKind::Manual,
            withdrawn_at: at,
            calm_for: None,
            advertised_for: None,
            peak_pps: None,
            peak_mbps: Some(0.5),
            mitigation_systems: None,
            operator: "alice".into(),
        }),
        Message::WithdrawalFailure(WithdrawalFailure {
            prefix: "203.0.113.0/24".into(),
            kind: WithdrawKind::Scheduled,
            error: huge(),
            attempts: 3,
            next_attempt_at: Some(at),
            at,
        }),
        Message::WithdrawalFailure(WithdrawalFailure {
            prefix: hostile(),
            kind: WithdrawKind::Automatic,
            error: hostile(),
            attempts: 1,
            next_attempt_at: None,
            at,
        }),
        Message::WouldWithdraw(WouldWithdraw {
            prefix: hostile(),
            calm_for: Some(Duration::from_secs(900)),
            at,
        }),
        Message::TelemetryBlind(TelemetryBlind {
            prefixes: vec![hostile(); 30],
            since: at,
            reason: huge(),
        }),
        Message::TelemetryBlind(TelemetryBlind {
            prefixes: vec![],
            since: at,
            reason: hostile(),
        }),
        Message::TelemetryRecovered(TelemetryRecovered {
            prefixes: vec![hostile()],
            blind_for: Duration::from_secs(1800),
            at,
        }),
        Message::AnalyticsSummary(AnalyticsSummary {
            from: at,
            to: at,
            new_events: 25_000,
            attack_ids: vec![hostile(); 3],
            vectors: vec![(hostile(), 10), ("SYN Flood".into(), 5)],
            targets: vec![("2001:db8::1".into(), 7); 9],
            source_asns: vec![("AS13335 Cloudflare, Inc.".into(), 3)],
            source_countries: vec![(hostile(), 1)],
            total_packets: 123_456,
            total_megabits: 42.42,
        }),
        Message::AutowithdrawStale(AutowithdrawStale {
            last_judgement: Some(at),
            advertised: vec![hostile(), "2001:db8::/48".into()],
            threshold: Duration::from_secs(180),
            at,
        }),
        Message::AutowithdrawStale(AutowithdrawStale {
            last_judgement: None,
            advertised: vec![],
            threshold: Duration::from_secs(180),
            at,
        }),
        Message::AutowithdrawRecovered(AutowithdrawRecovered {
            stale_for: Duration::from_secs(600),
            at,
        }),
        Message::ManualAdvertisement(ManualAdvertisement {
            prefix: "2001:db8::/48".into(),
            operator: hostile(),
            at,
        }),
        Message::OperatorAlert(OperatorAlert {
            title: hostile(),
            prefix: Some(hostile()),
            details: huge(),
            consequence: hostile(),
            at,
        }),
        Message::OperatorAlert(OperatorAlert {
            title: "x".into(),
            prefix: None,
            details: String::new(),
            consequence: String::new(),
            at,
        }),
        Message::Generic(GenericAlert {
            alert_type: Some(hostile()),
            name: Some(hostile()),
            text: Some(huge()),
            policy_name: Some(hostile()),
            event_state: Some(hostile()),
            at,
        }),
        Message::Generic(GenericAlert {
            at,
            ..Default::default()
        }),
    ]
}

#[test]
fn every_template_with_hostile_values_is_valid_markdown_v2() {
    let mut kinds = std::collections::BTreeSet::new();
    for message in every_message() {
        kinds.insert(message.kind());
        for org in ["GOLINE SOC", HOSTILE] {
            let text = message.render(org);
            let parts = split_message(&text, MAX_MESSAGE_CHARS);
            assert!(!parts.is_empty());
            for part in &parts {
                assert!(part.chars().count() <= MAX_MESSAGE_CHARS);
                if let Err(e) = validate(part) {
                    panic!("{} rejected: {e}\n---\n{part}", message.kind());
                }
            }
            assert!(text.contains("🛡️ *CLOUDFLARE DDoS PROTECTION*"), "header");
            assert!(
                text.trim_end().ends_with("_Magic Transit On\\-Demand_"),
                "footer"
            );
        }
    }
    assert_eq!(
        kinds.len(),
        15,
        "every kind of SPEC §10, the watchdog pair, manual advertisement and the generic alert: {kinds:?}"
    );
}

#[test]
fn the_withdrawal_message_follows_the_seed() {
    let at = Utc.with_ymd_and_hms(2026, 1, 19, 1, 0, 0).unwrap();
    let text = Message::WithdrawalSuccess(WithdrawalSuccess {
        prefix: "185.54.82.0/24".into(),
        kind: WithdrawKind::Automatic,
        withdrawn_at: at,
        calm_for: Some(Duration::from_secs(900)),
        advertised_for: Some(Duration::from_secs(1125)),
        peak_pps: Some(1_500_000.0),
        peak_mbps: Some(950.0),
        mitigation_systems: Some("dosd,flowtrackd".into()),
        operator: "autowithdraw".into(),
    })
    .render("GOLINE SOC");
    for expected in [
        "✅ *Status:* PREFIX WITHDRAWN",
        "📍 *CIDR:* `185.54.82.0/24`",
        "🕐 *Withdrawn at:* 2026\\-01\\-19 01:00:00 UTC",
        "📦 *Dropped:* 1\\.50 Mpps",
        "📈 *Dropped:* 950\\.0 Mbit/s",
        "🔙 Traffic returning to origin path",
        "🏢 *GOLINE SOC* \\| _Magic Transit On\\-Demand_",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn a_start_on_a_withdrawn_prefix_says_so() {
    let at = Utc.with_ymd_and_hms(2026, 1, 19, 1, 0, 0).unwrap();
    let text = Message::AttackStart(AttackAlert {
        prefix: Some("203.0.113.0/24".into()),
        prefix_state: PrefixState::Withdrawn {
            readvertise_allowed_at: Some(at),
        },
        at,
        ..Default::default()
    })
    .render("SOC");
    assert!(text.contains("WITHDRAWN"), "{text}");
    assert!(
        text.contains("Re\\-advertisement allowed from:* 2026\\-01\\-19 01:00:00 UTC"),
        "{text}"
    );
}

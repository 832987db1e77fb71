//! The independent watchdog on autowithdraw's judgements.

use std::time::Duration;

use chrono::Utc;
use mt_common::ManualClock;
use mt_store::CalmUpdate;
use network_analytics::watchdog::{Watch, check};

use crate::common::Harness;

#[tokio::test]
async fn stale_judgements_with_an_advertised_prefix_alert_once_then_recover() {
    let h = Harness::new(vec![]).await;
    let store = &h.poller.store;
    let notifier = &h.poller.notifier;
    let clock = ManualClock::new(Utc::now());
    let shared = clock.shared();
    let interval = Duration::from_secs(60);
    let judge = |advertised: bool| CalmUpdate {
        prefix: "203.0.113.0/24",
        advertised,
        under_attack: false,
        calm_since: None,
        last_attack_packets: 0,
        last_attack_mbps: 0.0,
        mitigation_systems: "",
        updated_at: mt_common::Clock::now(&clock),
    };

    assert_eq!(
        check(store, notifier, &shared, interval).await.unwrap(),
        Watch::Fine,
        "nothing advertised, nothing judged"
    );
    store.update_prefix_calm_status(&judge(true)).await.unwrap();
    clock.advance(chrono::Duration::seconds(179));
    assert_eq!(
        check(store, notifier, &shared, interval).await.unwrap(),
        Watch::Fine
    );
    clock.advance(chrono::Duration::seconds(2));
    assert_eq!(
        check(store, notifier, &shared, interval).await.unwrap(),
        Watch::Alerted,
        "older than three intervals"
    );
    assert_eq!(
        check(store, notifier, &shared, interval).await.unwrap(),
        Watch::StillStale,
        "once per episode"
    );
    let queued = store.notifications(10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].kind, "autowithdraw_stale");
    assert!(
        queued[0].text.contains("`203.0.113.0/24`"),
        "{}",
        queued[0].text
    );

    store.update_prefix_calm_status(&judge(true)).await.unwrap();
    assert_eq!(
        check(store, notifier, &shared, interval).await.unwrap(),
        Watch::Recovered
    );
    assert_eq!(
        store.notifications(10).await.unwrap()[1].kind,
        "autowithdraw_recovered"
    );

    // Stale but nothing advertised: no alert.
    store
        .update_prefix_calm_status(&judge(false))
        .await
        .unwrap();
    clock.advance(chrono::Duration::hours(1));
    assert_eq!(
        check(store, notifier, &shared, interval).await.unwrap(),
        Watch::Fine
    );
}

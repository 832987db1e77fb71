//! REST calls and every error shape.

use std::time::Duration;

use mt_cloudflare::Error;
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::common::*;

#[tokio::test]
async fn lists_prefixes_with_bearer_auth_and_a_user_agent() {
    let cf = Cf::start().await;
    Mock::given(method("GET"))
        .and(path(cf.path("")))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("prefixes_list_response.json")),
        )
        .expect(1)
        .mount(&cf.server)
        .await;
    let prefixes = cf.client.list_prefixes().await.unwrap();
    assert_eq!(prefixes.len(), 3);
    assert_eq!(prefixes[0].id, "2af39739cc4e3b5910c918468bb89828");
    assert_eq!(prefixes[0].cidr.as_deref(), Some("203.0.113.0/24"));
    assert_eq!(prefixes[0].advertised, Some(true));
    assert_eq!(prefixes[2].advertised, None, "null while onboarding");
    assert_eq!(prefixes[2].on_demand_locked, Some(true));
    let request = &cf.server.received_requests().await.unwrap()[0];
    let agent = request.headers.get("user-agent").unwrap().to_str().unwrap();
    assert!(agent.starts_with("magic-transit-ondemand/"), "{agent}");
    assert!(
        !format!("{:?}", cf.client).contains(TOKEN),
        "the token never shows in Debug"
    );
}

#[tokio::test]
async fn reads_and_sets_the_on_demand_state_of_a_bgp_prefix() {
    let cf = Cf::start().await;
    let one =
        cf.path("/2af39739cc4e3b5910c918468bb89828/bgp/prefixes/7009ba364c7a5760798ceb430e603b74");
    let listed = fixture("bgp_prefixes_list_response.json");
    let single =
        json!({"success": true, "errors": [], "messages": [], "result": listed["result"][0]});
    Mock::given(method("GET"))
        .and(path(one.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(single))
        .expect(1)
        .mount(&cf.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(one.as_str()))
        .and(body_json(fixture("bgp_prefix_patch_request.json")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("bgp_prefix_patch_response.json")),
        )
        .expect(1)
        .mount(&cf.server)
        .await;
    Mock::given(method("GET"))
        .and(path(
            cf.path("/2af39739cc4e3b5910c918468bb89828/bgp/prefixes"),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(listed))
        .expect(1)
        .mount(&cf.server)
        .await;

    let listed = cf
        .client
        .list_bgp_prefixes("2af39739cc4e3b5910c918468bb89828")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let bgp = cf
        .client
        .get_bgp_prefix(
            "2af39739cc4e3b5910c918468bb89828",
            "7009ba364c7a5760798ceb430e603b74",
        )
        .await
        .unwrap();
    assert!(bgp.advertised() && !bgp.locked());
    assert_eq!(
        bgp.advertised_modified_at().unwrap().to_rfc3339(),
        "2025-03-14T09:25:12.481913+00:00"
    );
    let withdrawn = cf
        .client
        .set_advertised(
            "2af39739cc4e3b5910c918468bb89828",
            "7009ba364c7a5760798ceb430e603b74",
            false,
        )
        .await
        .unwrap();
    assert!(!withdrawn.advertised());
    assert_eq!(
        withdrawn.advertised_modified_at().unwrap().to_rfc3339(),
        "2025-03-14T10:41:03.102233+00:00"
    );
    assert!(cf.sleeps().is_empty());
}

#[tokio::test]
async fn ids_cannot_change_the_path() {
    let cf = Cf::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("bgp_prefixes_list_response.json")),
        )
        .mount(&cf.server)
        .await;
    let _ = cf.client.list_bgp_prefixes("../../other?x=1").await;
    let url = cf.server.received_requests().await.unwrap()[0].url.clone();
    assert_eq!(
        url.path(),
        format!(
            "/client/v4/accounts/{ACCOUNT}/addressing/prefixes/..%2F..%2Fother%3Fx=1/bgp/prefixes"
        )
    );
    assert_eq!(url.query(), None);
}

#[tokio::test]
async fn a_4xx_is_returned_at_once_with_cloudflares_code_and_message() {
    let cf = Cf::start().await;
    Mock::given(method("PATCH"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(fixture("error_4xx_envelope_prefix_locked.json")),
        )
        .expect(1)
        .mount(&cf.server)
        .await;
    let err = cf.client.set_advertised("p", "b", false).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.codes(), vec![1000]);
    assert!(
        err.to_string()
            .contains("prefix advertisement status is locked"),
        "{err}"
    );
    assert!(!err.is_transient() && !err.is_rate_limited());
    assert!(cf.sleeps().is_empty(), "no retry on a 4xx");
}

#[tokio::test]
async fn an_unauthorised_token_is_recognised() {
    for status in [401, 403] {
        let cf = Cf::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}]})))
            .expect(1).mount(&cf.server).await;
        let err = cf.client.list_prefixes().await.unwrap_err();
        assert!(err.is_auth(), "{err}");
        assert!(cf.sleeps().is_empty());
    }
}

#[tokio::test]
async fn a_429_waits_retry_after_then_succeeds() {
    let cf = Cf::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .set_body_json(fixture("error_429_rate_limited.json")),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&cf.server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("prefixes_list_response.json")),
        )
        .mount(&cf.server)
        .await;
    assert_eq!(cf.client.list_prefixes().await.unwrap().len(), 3);
    assert_eq!(
        cf.sleeps(),
        vec![Duration::from_secs(2)],
        "Retry-After honoured"
    );
    assert!(
        cf.client.rate_limited_for().is_some(),
        "rate-limit state visible to callers"
    );
}

#[tokio::test]
async fn the_15_minute_refusal_is_a_prefix_hold_reported_at_once() {
    let cf = Cf::start().await;
    Mock::given(method("PATCH"))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(fixture("cf_error_429_withdrawn_less_than_15min_doc.json")),
        )
        .expect(1)
        .mount(&cf.server)
        .await;
    let err = cf.client.set_advertised("p", "b", true).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.codes(), vec![1002]);
    assert!(
        err.to_string()
            .contains("withdrawn less than 15 minutes ago"),
        "{err}"
    );
    assert!(err.is_prefix_hold());
    assert!(
        !err.is_rate_limited(),
        "a hold on one prefix is not an account rate limit"
    );
    assert!(
        cf.sleeps().is_empty(),
        "minutes-long: not retried within the call"
    );
    assert!(cf.client.rate_limited_for().is_none());
}

#[tokio::test]
async fn a_429_without_retry_after_follows_the_schedule() {
    let cf = Cf::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429).set_body_json(fixture("error_429_rate_limited.json")),
        )
        .expect(4)
        .mount(&cf.server)
        .await;
    let err = cf.client.list_prefixes().await.unwrap_err();
    assert!(err.is_rate_limited());
    assert_eq!(err.codes(), vec![971]);
    assert_eq!(
        cf.sleeps(),
        vec![
            Duration::from_secs(1),
            Duration::from_secs(3),
            Duration::from_secs(8)
        ]
    );
}

#[tokio::test]
async fn a_long_retry_after_is_not_waited_for() {
    let cf = Cf::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "300")
                .set_body_json(fixture("error_429_rate_limited.json")),
        )
        .expect(1)
        .mount(&cf.server)
        .await;
    let err = cf.client.list_prefixes().await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(300)));
    assert!(cf.sleeps().is_empty());
    let held = cf.client.rate_limited_for().unwrap();
    assert!(held > Duration::from_secs(290), "{held:?}");
}

#[tokio::test]
async fn an_html_error_page_is_a_clear_retried_error() {
    let cf = Cf::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(502)
                .set_body_raw("<html><body>502 Bad Gateway</body></html>", "text/html"),
        )
        .expect(4)
        .mount(&cf.server)
        .await;
    let err = cf.client.list_prefixes().await.unwrap_err();
    assert!(matches!(err, Error::NotJson { status: 502, .. }), "{err:?}");
    assert!(
        err.to_string().contains("non-JSON") && err.to_string().contains("502 Bad Gateway"),
        "{err}"
    );
    assert_eq!(cf.sleeps().len(), 3);
}

#[tokio::test]
async fn success_false_in_a_200_is_an_error_and_not_retried() {
    let cf = Cf::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": false, "errors": [{"code": 1003, "message": "nope"}], "result": null})))
        .expect(1).mount(&cf.server).await;
    let err = cf.client.list_prefixes().await.unwrap_err();
    assert!(matches!(err, Error::Rejected { .. }), "{err:?}");
    assert_eq!(err.codes(), vec![1003]);
}

#[tokio::test]
async fn timeouts_are_retried() {
    let cf = Cf::with_timeout(Duration::from_millis(300)).await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_json(fixture("prefixes_list_response.json")),
        )
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&cf.server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(fixture("prefixes_list_response.json")),
        )
        .mount(&cf.server)
        .await;
    assert_eq!(cf.client.list_prefixes().await.unwrap().len(), 3);
    assert_eq!(
        cf.sleeps(),
        vec![Duration::from_secs(1), Duration::from_secs(3)]
    );
}

#[tokio::test]
async fn an_unreachable_api_is_a_connect_error_after_the_schedule() {
    // A port with nothing listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (client, sleeps) = client_for(&base, Duration::from_secs(2));
    let err = client.list_prefixes().await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    assert_eq!(sleeps.lock().unwrap().len(), 3);
}

//! The simulator's own promises: strict field names, faults, the Telegram fake, the emitter.

use std::time::Duration;

use cf_sim::{Endpoint, Fault, Scenario};
use serde_json::{Value, json};

use crate::client::{client, scenario, start};

async fn raw_graphql(sim: &cf_sim::Running, query: &str) -> Value {
    graphql_with(sim, query, json!({"a": Scenario::default().account_id})).await
}

async fn graphql_with(sim: &cf_sim::Running, query: &str, variables: Value) -> Value {
    reqwest::Client::new()
        .post(sim.graphql_url())
        .bearer_auth("cf-sim-token")
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A valid calm-style query over the last ten minutes.
fn valid_query() -> String {
    let now = chrono::Utc::now();
    let t = |m: i64| {
        (now - chrono::Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    format!(
        "query($a: string!) {{ viewer {{ accounts(filter: {{accountTag: $a}}) {{ magicTransitNetworkAnalyticsAdaptiveGroups(filter: {{datetime_geq: \"{}\", datetime_leq: \"{}\", outcome: \"drop\"}}, limit: 10) {{ dimensions {{ ipDestinationSubnet sampleInterval }} sum {{ packets }} }} }} }} }}",
        t(10),
        t(5)
    )
}

fn first_error(answer: &Value) -> String {
    answer["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn what_cloudflares_schema_refuses_cf_sim_refuses() {
    let sim = start(scenario()).await;
    let ok = valid_query();
    let answer = raw_graphql(&sim, &ok).await;
    assert!(answer["errors"].is_null(), "{answer}");
    assert_eq!(
        answer["data"]["viewer"]["accounts"][0]["magicTransitNetworkAnalyticsAdaptiveGroups"][0]["dimensions"]
            ["sampleInterval"],
        1,
        "sampleInterval is a dimension of this node: {answer}"
    );
    for (guess, needle) in [
        // The query that would have blinded production: `avg { sampleInterval }` does not exist.
        (
            ok.replace("sum { packets }", "sum { packets } avg { sampleInterval }"),
            "sampleInterval",
        ),
        // A filter value outside the dimension's documented possible values.
        (
            ok.replace(
                "outcome: \"drop\"",
                "outcome: \"drop\", direction: \"ingress\"",
            ),
            "possible values: inbound, outbound, lateral",
        ),
        (
            ok.replace("ipDestinationSubnet", "destinationSubnet"),
            "destinationSubnet",
        ),
        (ok.replace("datetime_leq", "datetime_lte"), "datetime_lte"),
        (ok.replace("sum { packets }", "sum { bytes }"), "bytes"),
        (
            ok.replace(
                "magicTransitNetworkAnalyticsAdaptiveGroups",
                "magicTransitNetworkAnalyticsGroups",
            ),
            "magicTransitNetworkAnalyticsGroups",
        ),
        // `limit` is required by the schema.
        (ok.replace(", limit: 10", ""), "limit"),
        (
            ok.replace("limit: 10", "limit: -1"),
            "out of range for uint64",
        ),
        (
            ok.replace("datetime_geq: \"", "datetime_geq: \"yesterday"),
            "RFC 3339",
        ),
        (
            ok.replace("limit: 10", "limit: 20000"),
            "limit must be less or equal to 10000",
        ),
        // Valid on Cloudflare, but not simulated: refused, never ignored.
        (
            ok.replace("outcome: \"drop\"", "outcome: \"drop\", coloCode: \"FRA\""),
            "does not simulate the filter coloCode",
        ),
        (
            ok.replace("limit: 10", "limit: 10, orderBy: [coloCode_ASC]"),
            "does not simulate orderBy coloCode_ASC",
        ),
        (
            ok.replace("{ viewer", "{ viewer {")
                .replace("} } } } }", "} } } } } }"),
            "",
        ),
    ] {
        let answer = raw_graphql(&sim, &guess).await;
        let messages: Vec<&str> = answer["errors"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["message"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            messages.iter().any(|m| !m.is_empty() && m.contains(needle)),
            "{needle}: {answer}"
        );
        assert!(answer["data"].is_null(), "{answer}");
    }
    // Variables are checked against their declared types too.
    let with_var = ok
        .replace("query($a: string!)", "query($a: string!, $n: uint64!)")
        .replace("limit: 10", "limit: $n");
    let answer = graphql_with(
        &sim,
        &with_var,
        json!({"a": Scenario::default().account_id, "n": "10"}),
    )
    .await;
    assert!(
        first_error(&answer).contains("not an unsigned integer"),
        "{answer}"
    );
    let answer = graphql_with(
        &sim,
        &with_var,
        json!({"a": Scenario::default().account_id, "n": 10}),
    )
    .await;
    assert!(answer["errors"].is_null(), "{answer}");
}

#[tokio::test]
async fn dataset_settings_are_served_and_enforced() {
    let sim = start(scenario()).await;
    let cf = client(&sim, "cf-sim-token");
    let settings = cf.dataset_settings().await.unwrap();
    let calm = &settings[mt_cloudflare::graphql::CALM_DATASET];
    assert_eq!(calm.enabled, Some(true));
    assert_eq!(calm.max_page_size, Some(10_000));
    assert!(
        calm.problems(mt_cloudflare::graphql::CALM_FIELDS)
            .is_empty(),
        "{calm:?}"
    );
    assert!(
        settings[mt_cloudflare::graphql::EVENTS_DATASET]
            .problems(mt_cloudflare::graphql::EVENTS_FIELDS)
            .is_empty()
    );

    let ok = valid_query();
    sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::CALM_DATASET,
        cf_sim::scenario::DatasetSettings {
            max_page_size: 5,
            not_older_than: Duration::from_secs(420),
            max_number_of_fields: 2,
            ..Default::default()
        },
    );
    let small = cf.dataset_settings().await.unwrap();
    assert_eq!(
        small[mt_cloudflare::graphql::CALM_DATASET].max_page_size,
        Some(5)
    );
    let answer = raw_graphql(&sim, &ok).await;
    assert!(
        first_error(&answer).contains("limit must be less or equal to 5"),
        "{answer}"
    );
    let answer = raw_graphql(&sim, &ok.replace("limit: 10", "limit: 5")).await;
    assert!(
        first_error(&answer).contains("number of fields cannot be more than 2"),
        "{answer}"
    );
    let answer = raw_graphql(
        &sim,
        &ok.replace("limit: 10", "limit: 5")
            .replace(" sampleInterval", ""),
    )
    .await;
    assert!(
        first_error(&answer).contains("cannot request data older than 420s"),
        "{answer}"
    );
    assert_eq!(
        answer["errors"][0]["path"][3],
        "magicTransitNetworkAnalyticsAdaptiveGroups"
    );

    sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::CALM_DATASET,
        cf_sim::scenario::DatasetSettings {
            available_fields: Some(vec!["sampleInterval".into(), "sum_packets".into()]),
            ..Default::default()
        },
    );
    let answer = raw_graphql(&sim, &ok).await;
    assert!(
        first_error(&answer).contains("dimensions_ipDestinationSubnet is not available"),
        "{answer}"
    );

    sim.sim.set_dataset_settings(
        mt_cloudflare::graphql::CALM_DATASET,
        cf_sim::scenario::DatasetSettings {
            enabled: false,
            ..Default::default()
        },
    );
    let answer = raw_graphql(&sim, &ok).await;
    assert!(first_error(&answer).contains("not available"), "{answer}");
    let off = cf.dataset_settings().await.unwrap();
    assert_eq!(
        off[mt_cloudflare::graphql::CALM_DATASET].problems(mt_cloudflare::graphql::CALM_FIELDS),
        vec![mt_cloudflare::graphql::SettingsProblem::Disabled]
    );
}

#[tokio::test]
async fn faults_are_injected_per_endpoint() {
    let sim = start(scenario()).await;
    let cf = client(&sim, "cf-sim-token");
    sim.sim.inject(Endpoint::Rest, Fault::Html(502), 2);
    let err = cf.list_prefixes().await.unwrap_err();
    assert_eq!(
        err.status(),
        Some(502),
        "two HTML pages: the first try and its one retry"
    );
    assert!(cf.list_prefixes().await.is_ok(), "then normal service");

    sim.sim
        .inject(Endpoint::Rest, Fault::RateLimited(Some(120)), 1);
    let err = cf.list_prefixes().await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));

    sim.sim.inject(Endpoint::Rest, Fault::Status(503), 1);
    assert!(
        cf.list_prefixes().await.is_ok(),
        "a single 503 is retried away"
    );

    let prefixes = vec!["203.0.113.0/24".parse().unwrap()];
    let systems = vec!["dosd".to_owned()];
    let now = chrono::Utc::now();
    let q = mt_cloudflare::graphql::DroppedTrafficQuery {
        start: now - chrono::Duration::minutes(10),
        end: now - chrono::Duration::minutes(5),
        data_until: now,
        probe_start: now - chrono::Duration::minutes(10),
        mitigation_systems: &systems,
        prefixes: &prefixes,
        limit: 100,
    };
    sim.sim.inject(
        Endpoint::GraphQl,
        Fault::GraphQlError("rate limiter budget depleted, try again after 5 minutes".into()),
        1,
    );
    let err = cf.dropped_traffic(&q).await.unwrap_err();
    assert!(err.is_rate_limited(), "{err}");
    // The budget is spent: this client sends nothing more for five minutes.
    assert!(cf.dropped_traffic(&q).await.is_err());
    assert_eq!(sim.sim.graphql_queries(), 1);
    sim.sim.inject(
        Endpoint::GraphQl,
        Fault::Slow(Duration::from_millis(200)),
        1,
    );
    let fresh = client(&sim, "cf-sim-token");
    assert!(fresh.dropped_traffic(&q).await.is_ok());
    assert_eq!(sim.sim.graphql_queries(), 2);
}

#[tokio::test]
async fn the_telegram_fake_records_messages_and_injects_flood_control() {
    let sim = start(scenario()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/bot123456:cf-sim/sendMessage", sim.url());
    let body = json!({"chat_id": "-1001234567890", "text": "*hello* 203\\.0\\.113\\.0/24", "parse_mode": "MarkdownV2"});
    sim.sim
        .inject(Endpoint::Telegram, Fault::RateLimited(Some(7)), 1);
    let limited: Value = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(limited["parameters"]["retry_after"], 7);
    let sent = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(sent.status(), 200);
    let sent: Value = sent.json().await.unwrap();
    assert_eq!(sent["ok"], true);
    let wrong = http
        .post(format!("{}/botnope/sendMessage", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let messages = sim.sim.telegram_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].chat_id, "-1001234567890");
    assert_eq!(messages[0].parse_mode.as_deref(), Some("MarkdownV2"));
}

/// What Telegram's sendMessage refuses, the fake refuses, with Telegram's status and
/// description (Bot API: text 1-4096 characters, known parse modes, an existing chat).
#[tokio::test]
async fn the_telegram_fake_refuses_what_telegram_refuses() {
    let sim = start(cf_sim::Scenario {
        telegram_chats: vec!["-1001234567890".into()],
        telegram_migrated: vec![("-42".into(), -1_004_200)],
        telegram_kicked: vec!["-1007".into()],
        ..scenario()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/bot123456:cf-sim/sendMessage", sim.url());
    let ask = |body: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.post(&url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let chat = "-1001234567890";
    for (body, status, description) in [
        (
            json!({"chat_id": "-100999", "text": "x"}),
            400,
            "Bad Request: chat not found",
        ),
        (
            json!({"chat_id": "not a chat", "text": "x"}),
            400,
            "Bad Request: chat not found",
        ),
        (json!({"text": "x"}), 400, "Bad Request: chat_id is empty"),
        (
            json!({"chat_id": "-42", "text": "x"}),
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
        ),
        (
            json!({"chat_id": "-1007", "text": "x"}),
            403,
            "Forbidden: bot was kicked from the supergroup chat",
        ),
        (
            json!({"chat_id": chat, "text": " "}),
            400,
            "Bad Request: message text is empty",
        ),
        (
            json!({"chat_id": chat, "text": "é".repeat(4097)}),
            400,
            "Bad Request: message is too long",
        ),
        (
            json!({"chat_id": chat, "text": "x", "parse_mode": "markdownv3"}),
            400,
            "Bad Request: unsupported parse_mode \"markdownv3\"",
        ),
    ] {
        let (got, answer) = ask(body.clone()).await;
        assert_eq!(
            (got, answer["description"].as_str()),
            (status, Some(description)),
            "{body}"
        );
        assert_eq!(answer["ok"], false);
        assert_eq!(answer["error_code"], status);
    }
    let (_, migrated) = ask(json!({"chat_id": "-42", "text": "x"})).await;
    assert_eq!(migrated["parameters"]["migrate_to_chat_id"], -1_004_200);
    // 4096 UTF-16 units is the limit, not 4096 bytes; a chat the bot is in is accepted.
    let (ok, _) = ask(json!({"chat_id": chat, "text": "é".repeat(4096)})).await;
    assert_eq!(ok, 200);
    assert_eq!(sim.sim.telegram_messages().len(), 1);
}

#[tokio::test]
async fn the_emitter_posts_fixture_shaped_alerts_with_the_secret() {
    use wiremock::matchers::{header, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("cf-webhook-auth", "s3cret"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "accepted", "id": 1})),
        )
        .expect(3)
        .mount(&receiver)
        .await;
    let http = reqwest::Client::new();
    let target = "203.0.113.10".parse().unwrap();
    for body in [
        cf_sim::webhook::attack_start("a1", target, 1_000_000, 8_000),
        cf_sim::webhook::attack_end("a1", target, 1_000_000, 8_000),
        cf_sim::webhook::auto_advertisement(&[("203.0.113.0/24", "Advertised")]),
    ] {
        let (status, answer) = cf_sim::webhook::emit(&http, &receiver.uri(), "s3cret", &body)
            .await
            .unwrap();
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    }
    let sent: Vec<Value> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent[0]["alert_event"], "ALERT_STATE_EVENT_START");
    assert_eq!(sent[1]["alert_event"], "ALERT_STATE_EVENT_END");
    assert_eq!(sent[0]["data"]["attack_id"], sent[1]["data"]["attack_id"]);
    assert_eq!(sent[2]["data"]["prefixes"][0]["status"], "Advertised");
}

#[test]
fn the_cli_serves_a_scenario_file() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = std::env::temp_dir().join(format!("cf-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("scenario.toml");
    std::fs::write(
        &scenario,
        r#"
token = "demo-token"
hold = "5s"
bucket = "1s"
lag = "2s"
partial = "2s"
[[prefixes]]
id = "p1"
bgp_id = "b1"
cidr = "203.0.113.0/24"
advertised = true
[[traffic]]
destination = "203.0.113.10"
system = "dosd"
from_secs = -30
to_secs = 30
pps = 5000.0
mbps = 40.0
"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cf-sim"))
        .args(["serve", "--scenario"])
        .arg(&scenario)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("cf-sim listening on ")
        .unwrap()
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer: Value = rt.block_on(async {
        reqwest::Client::new()
            .get(format!(
                "{url}/client/v4/accounts/{}/addressing/prefixes",
                Scenario::default().account_id
            ))
            .bearer_auth("demo-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(answer["result"][0]["cidr"], "203.0.113.0/24");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

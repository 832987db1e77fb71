//! Every GraphQL request the client sends is valid against Cloudflare's published schema (the
//! project's pruned SDL, itself checked against the full introspected schema by `.ci/run`):
//! fields, arguments, variable types, scalar values and the documented values of the
//! dimensions filtered on. The documents are the client's own constants, captured as sent.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use ipnet::IpNet;
use mt_cloudflare::graphql::{DOCUMENTS, DroppedTrafficQuery};
use serde_json::{Map, Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::common::*;

/// An empty but well-formed answer to any of the client's queries.
fn empty_answer() -> Value {
    json!({"data": {"viewer": {"accounts": [{"drops": [], "latest": [], "events": []}]}}, "errors": null})
}

fn body_parts(body: &[u8]) -> (String, Map<String, Value>) {
    let v: Value = serde_json::from_slice(body).unwrap();
    (
        v["query"].as_str().unwrap().to_owned(),
        v["variables"].as_object().cloned().unwrap_or_default(),
    )
}

#[tokio::test]
async fn every_document_the_client_sends_is_valid_against_cloudflares_schema() {
    let cf = Cf::start().await;
    Mock::given(method("POST"))
        .and(path("/client/v4/graphql"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("date", "Mon, 19 Jan 2026 00:10:01 GMT")
                .set_body_json(empty_answer()),
        )
        .mount(&cf.server)
        .await;
    let start = Utc.with_ymd_and_hms(2026, 1, 19, 0, 0, 0).unwrap();
    let prefixes: Vec<IpNet> = vec!["203.0.113.0/24".parse().unwrap()];
    let systems = vec!["dosd".to_owned()];
    cf.client
        .dropped_traffic(&DroppedTrafficQuery {
            start,
            end: start + chrono::Duration::minutes(5),
            data_until: start + chrono::Duration::minutes(8),
            probe_start: start,
            mitigation_systems: &systems,
            prefixes: &prefixes,
            limit: 10_000,
        })
        .await
        .unwrap();
    cf.client
        .dropped_traffic_buckets(&DroppedTrafficQuery {
            start,
            end: start + chrono::Duration::minutes(30),
            data_until: start + chrono::Duration::minutes(33),
            probe_start: start,
            mitigation_systems: &systems,
            prefixes: &prefixes,
            limit: 10_000,
        })
        .await
        .unwrap();
    cf.client
        .dosd_events(start, start + chrono::Duration::minutes(15), 10_000)
        .await
        .unwrap();
    let _ = cf.client.dataset_settings().await;

    let mut sent = BTreeSet::new();
    for request in cf.server.received_requests().await.unwrap() {
        let (query, variables) = body_parts(&request.body);
        let errors = cf_sim::schema::validate(&query, &variables);
        assert!(
            errors.is_empty(),
            "invalid against Cloudflare's schema:\n{}\n--- errors:\n{}",
            query,
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        sent.insert(query);
    }
    let documents: BTreeSet<String> = DOCUMENTS.iter().map(|d| (*d).to_owned()).collect();
    assert_eq!(
        sent, documents,
        "every document the client can send was sent (and validated) once"
    );
}

#[test]
fn the_field_lists_checked_against_settings_are_the_documents_fields() {
    use mt_cloudflare::graphql::{CALM_DATASET, CALM_FIELDS, EVENTS_DATASET, EVENTS_FIELDS};
    let asked = |dataset: &str| -> BTreeSet<String> {
        DOCUMENTS
            .iter()
            .flat_map(|d| cf_sim::schema::queried_fields(d, dataset))
            .collect()
    };
    let list = |f: &[&str]| f.iter().map(|x| (*x).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(asked(CALM_DATASET), list(CALM_FIELDS));
    assert_eq!(asked(EVENTS_DATASET), list(EVENTS_FIELDS));
    assert_eq!(EVENTS_FIELDS.len(), 22);
}

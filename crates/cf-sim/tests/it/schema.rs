//! The schema module: the validation every request gets, and the subset check `.ci/run` runs
//! on the pruned SDL against Cloudflare's full schema.

use cf_sim::schema::{check_subset, possible_values, validate};
use serde_json::{Map, Value, json};

fn vars(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The calm query as it was before this wave (what production would have sent).
const OLD_CALM_QUERY: &str = r#"query MtCalm($accountTag: string!, $start: Time!, $end: Time!, $limit: uint64!) {
  viewer {
    accounts(filter: { accountTag: $accountTag }) {
      drops: magicTransitNetworkAnalyticsAdaptiveGroups(
        filter: { datetime_geq: $start, datetime_lt: $end, outcome: "drop", direction: "ingress" }
        limit: $limit
        orderBy: [sum_packets_DESC]
      ) {
        dimensions { ipDestinationSubnet mitigationSystem }
        sum { packets bits }
        avg { sampleInterval }
      }
    }
  }
}"#;

fn old_vars() -> Map<String, Value> {
    vars(
        json!({"accountTag": "acc", "start": "2026-01-19T00:00:00Z", "end": "2026-01-19T00:05:00Z",
                "limit": 10000}),
    )
}

#[test]
fn the_old_calm_query_is_refused_on_both_counts() {
    let errors = validate(OLD_CALM_QUERY, &old_vars());
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("does not have a field `sampleInterval`")),
        "{errors:?}"
    );
    // Without the avg block, the filter value is what is wrong.
    let without_avg = OLD_CALM_QUERY.replace("avg { sampleInterval }", "");
    let errors = validate(&without_avg, &old_vars());
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]
            .message
            .contains("\"ingress\" is not a documented value of this dimension (possible values: inbound, outbound, lateral)"),
        "{errors:?}"
    );
    assert_eq!(errors[0].path.last().map(String::as_str), Some("direction"));
    let fixed = without_avg.replace(", direction: \"ingress\"", "");
    assert_eq!(validate(&fixed, &old_vars()), vec![]);
}

#[test]
fn filter_values_are_checked_in_every_comparison_and_in_variables() {
    let q = r#"query Q($a: string!, $f: AccountMagicTransitNetworkAnalyticsAdaptiveGroupsFilter_InputObject!) { viewer { accounts(filter: { accountTag: $a }) {
        magicTransitNetworkAnalyticsAdaptiveGroups(filter: $f, limit: 1) { sum { packets } } } } }"#;
    let ok = vars(
        json!({"a": "acc", "f": {"datetime_geq": "2026-01-19T00:00:00Z", "mitigationSystem_in": ["dosd", "flowtrackd"], "outcome_neq": "pass"}}),
    );
    assert_eq!(validate(q, &ok), vec![]);
    let bad = vars(json!({"a": "acc", "f": {"mitigationSystem_in": ["dosd", "Dosd"]}}));
    let errors = validate(q, &bad);
    assert!(
        errors.iter().any(|e| e.message.contains("\"Dosd\"")),
        "{errors:?}"
    );
    let nested = vars(json!({"a": "acc", "f": {"OR": [{"outcome": "dropped"}]}}));
    assert!(!validate(q, &nested).is_empty(), "inside OR too");
    // A pattern is not a value.
    let like = vars(json!({"a": "acc", "f": {"mitigationSystem_like": "dos%"}}));
    assert_eq!(validate(q, &like), vec![]);
    // Variables are checked for presence and kind.
    assert!(!validate(q, &vars(json!({"a": "acc"}))).is_empty());
    assert!(!validate(q, &vars(json!({"a": 7, "f": {}}))).is_empty());
}

#[test]
fn possible_values_are_read_from_descriptions() {
    assert_eq!(
        possible_values(
            "Which system dropped the packet (possible values: dosd, flowtrackd, magic-firewall)"
        ),
        Some(vec![
            "dosd".to_owned(),
            "flowtrackd".into(),
            "magic-firewall".into()
        ])
    );
    assert_eq!(possible_values("Date that the packet was received"), None);
}

const FULL: &str = r#"
type Query { viewer: viewer, cost: uint64! }
type viewer { accounts(filter: F!): [account!]! }
type account { groups(filter: F!, limit: uint64!): [G!]! other: string! }
input F { accountTag: string, outcome: string, required: string! }
type G { dimensions: D }
type D {
  """(possible values: pass, drop)"""
  outcome: string!
}
enum E { A B }
scalar string
scalar uint64
"#;

#[test]
fn the_subset_check_names_every_difference() {
    let faithful = r#"
type Query { viewer: viewer }
type viewer { accounts(filter: F!): [account!]! }
type account { groups(filter: F!, limit: uint64!): [G!]! }
input F { outcome: string, required: string! }
type G { dimensions: D }
type D { outcome: string! }
enum E { A }
scalar string
scalar uint64
"#;
    assert_eq!(check_subset(FULL, faithful).unwrap(), Vec::<String>::new());
    let cases = [
        (
            faithful.replace("outcome: string!", "outcome: uint64!"),
            "D.outcome",
        ),
        (
            faithful.replace(
                "type D { outcome: string! }",
                "type D { outcome: string! direction: string! }",
            ),
            "D.direction",
        ),
        (
            faithful.replace(", limit: uint64!", ""),
            "account.groups arguments",
        ),
        (
            faithful.replace("required: string! }", "}"),
            "F.required is required",
        ),
        (faithful.replace("enum E { A }", "enum E { A Z }"), "E.Z"),
        (
            faithful.replace("type G", "input X { a: string } type G"),
            "type X",
        ),
    ];
    for (pruned, needle) in cases {
        let problems = check_subset(FULL, &pruned).unwrap();
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:?}"
        );
    }
}

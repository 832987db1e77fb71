//! A webhook emitter: POSTs Cloudflare-shaped alerts (with `cf-webhook-auth`) to a receiver.
//! The bodies follow `fixtures/cloudflare/webhook_*.json`.

use std::net::IpAddr;

use chrono::Utc;
use serde_json::{Value, json};

/// An `advanced_ddos_attack_l4_alert` START.
pub fn attack_start(attack_id: &str, target: IpAddr, pps: u64, mbps: u64) -> Value {
    attack(attack_id, target, pps, mbps, "ALERT_STATE_EVENT_START")
}

/// The matching END.
pub fn attack_end(attack_id: &str, target: IpAddr, pps: u64, mbps: u64) -> Value {
    attack(attack_id, target, pps, mbps, "ALERT_STATE_EVENT_END")
}

fn attack(attack_id: &str, target: IpAddr, pps: u64, mbps: u64, state: &str) -> Value {
    json!({
        "account_id": "4f3a9c2e81d64b7a9e0c5d1f2a3b4c5d",
        "alert_correlation_id": format!("corr-{attack_id}"),
        "alert_event": state,
        "alert_type": "advanced_ddos_attack_l4_alert",
        "name": "MT on-demand - Advanced L3/4 DDoS",
        "policy_id": "9b8e7d6c5a4f43e2b1c0d9e8f7a6b5c4",
        "policy_name": "MT on-demand - Advanced L3/4 DDoS",
        "text": format!("Cloudflare is mitigating a UDP Flood attack against {target}:53."),
        "ts": Utc::now().timestamp(),
        "data": {
            "attack_id": attack_id,
            "attack_vector": "UDP Flood",
            "max_rate": format!("{pps} pps"),
            "megabits_per_second": mbps,
            "packets_per_second": pps,
            "protocol": "UDP",
            "rule_name": "UDP flood",
            "target_ip": target.to_string(),
            "target_port": 53
        }
    })
}

/// An `fbm_auto_advertisement` reporting each `(prefix, status)`.
pub fn auto_advertisement(prefixes: &[(&str, &str)]) -> Value {
    let listed: Vec<Value> = prefixes
        .iter()
        .map(|(p, s)| json!({"prefix": p, "status": s}))
        .collect();
    json!({
        "account_id": "4f3a9c2e81d64b7a9e0c5d1f2a3b4c5d",
        "alert_correlation_id": format!("adv-{}", Utc::now().timestamp_micros()),
        "alert_event": "ALERT_STATE_EVENT_START",
        "alert_type": "fbm_auto_advertisement",
        "name": "MNM auto-advertisement",
        "policy_name": "MNM auto-advertisement",
        "text": "Magic Transit was automatically enabled.",
        "ts": Utc::now().timestamp(),
        "data": {"rule_name": "edge-pps", "prefixes": listed}
    })
}

/// POSTs `body` to `url` with the shared secret; returns the status and JSON answer.
pub async fn emit(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: &Value,
) -> reqwest::Result<(u16, Value)> {
    let response = client
        .post(url)
        .header("cf-webhook-auth", secret)
        .json(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let answer = response.json().await.unwrap_or(Value::Null);
    Ok((status, answer))
}

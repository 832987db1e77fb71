//! REST: IP prefixes, BGP prefixes and their on-demand advertisement.
//!
//! The endpoint for advertising and withdrawing is
//! `PATCH /accounts/{account_id}/addressing/prefixes/{prefix_id}/bgp/prefixes/{bgp_prefix_id}`
//! with `{"on_demand":{"advertised":bool}}`; a `GET` on the same path returns the same object.
//! (The older `…/bgp/status` endpoint is not used: its `advertised` was unreliable for on-demand
//! prefixes.)

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Client, Error, Result, messages};

/// An IP prefix of the account (`GET …/addressing/prefixes`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpPrefix {
    /// Cloudflare IP prefix id.
    pub id: String,
    /// The prefix.
    #[serde(default)]
    pub cidr: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Advertised (may be absent or null for prefixes still being onboarded).
    #[serde(default)]
    pub advertised: Option<bool>,
    /// On-demand advertisement enabled.
    #[serde(default)]
    pub on_demand_enabled: Option<bool>,
    /// On-demand advertisement locked.
    #[serde(default)]
    pub on_demand_locked: Option<bool>,
}

/// The on-demand advertisement state of a BGP prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OnDemand {
    /// Advertised now.
    #[serde(default)]
    pub advertised: Option<bool>,
    /// When the advertisement last changed.
    #[serde(default)]
    pub advertised_modified_at: Option<DateTime<Utc>>,
    /// On-demand enabled.
    #[serde(default)]
    pub on_demand_enabled: Option<bool>,
    /// Locked: advertisement cannot be changed.
    #[serde(default)]
    pub on_demand_locked: Option<bool>,
}

/// A BGP prefix (`…/bgp/prefixes/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BgpPrefix {
    /// Cloudflare BGP prefix id.
    pub id: String,
    /// The prefix.
    #[serde(default)]
    pub cidr: Option<String>,
    /// On-demand state (absent for prefixes without on-demand).
    #[serde(default)]
    pub on_demand: Option<OnDemand>,
}

impl BgpPrefix {
    /// `on_demand.advertised`, `false` when absent.
    pub fn advertised(&self) -> bool {
        self.on_demand
            .as_ref()
            .and_then(|o| o.advertised)
            .unwrap_or(false)
    }

    /// `on_demand.on_demand_locked`, `false` when absent.
    pub fn locked(&self) -> bool {
        self.on_demand
            .as_ref()
            .and_then(|o| o.on_demand_locked)
            .unwrap_or(false)
    }

    /// `on_demand.advertised_modified_at`.
    pub fn advertised_modified_at(&self) -> Option<DateTime<Utc>> {
        self.on_demand
            .as_ref()
            .and_then(|o| o.advertised_modified_at)
    }
}

/// A BGP prefix of the account together with the IP prefix it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBgpPrefix {
    /// The IP prefix id.
    pub prefix_id: String,
    /// The BGP prefix.
    pub bgp: BgpPrefix,
}

/// `result` of a REST envelope; `success: false` is an error even with HTTP 200.
fn result<T: DeserializeOwned>(body: Value) -> Result<T> {
    if body.get("success").and_then(Value::as_bool) == Some(false) {
        return Err(Error::Rejected {
            errors: messages(&body, "errors"),
        });
    }
    let result = body
        .get("result")
        .cloned()
        .ok_or_else(|| Error::Decode("envelope without result".into()))?;
    serde_json::from_value(result).map_err(|e| Error::Decode(e.to_string()))
}

impl Client {
    /// The account's IP prefixes.
    pub async fn list_prefixes(&self) -> Result<Vec<IpPrefix>> {
        let url = self.endpoint(&["accounts", self.account_id(), "addressing", "prefixes"]);
        let reply = self
            .call("list_prefixes", |http| http.get(url.clone()))
            .await?;
        result(reply.body)
    }

    /// The BGP prefixes of one IP prefix.
    pub async fn list_bgp_prefixes(&self, prefix_id: &str) -> Result<Vec<BgpPrefix>> {
        let url = self.endpoint(&[
            "accounts",
            self.account_id(),
            "addressing",
            "prefixes",
            prefix_id,
            "bgp",
            "prefixes",
        ]);
        let reply = self
            .call("list_bgp_prefixes", |http| http.get(url.clone()))
            .await?;
        result(reply.body)
    }

    /// Every BGP prefix of the account (for checking the config against the account).
    pub async fn list_account_bgp_prefixes(&self) -> Result<Vec<AccountBgpPrefix>> {
        let mut all = Vec::new();
        for prefix in self.list_prefixes().await? {
            for bgp in self.list_bgp_prefixes(&prefix.id).await? {
                all.push(AccountBgpPrefix {
                    prefix_id: prefix.id.clone(),
                    bgp,
                });
            }
        }
        Ok(all)
    }

    /// One BGP prefix and its on-demand state.
    pub async fn get_bgp_prefix(&self, prefix_id: &str, bgp_prefix_id: &str) -> Result<BgpPrefix> {
        let url = self.bgp_prefix_url(prefix_id, bgp_prefix_id);
        let reply = self
            .call("get_bgp_prefix", |http| http.get(url.clone()))
            .await?;
        result(reply.body)
    }

    /// Advertises (`true`) or withdraws (`false`) a BGP prefix; returns its new state. A
    /// successful PATCH only registers the change: advertising takes 2–7 minutes to take
    /// effect, withdrawing about 15.
    pub async fn set_advertised(
        &self,
        prefix_id: &str,
        bgp_prefix_id: &str,
        advertised: bool,
    ) -> Result<BgpPrefix> {
        let url = self.bgp_prefix_url(prefix_id, bgp_prefix_id);
        let body = json!({ "on_demand": { "advertised": advertised } });
        let reply = self
            .call("set_advertised", |http| http.patch(url.clone()).json(&body))
            .await?;
        result(reply.body)
    }

    fn bgp_prefix_url(&self, prefix_id: &str, bgp_prefix_id: &str) -> url::Url {
        self.endpoint(&[
            "accounts",
            self.account_id(),
            "addressing",
            "prefixes",
            prefix_id,
            "bgp",
            "prefixes",
            bgp_prefix_id,
        ])
    }
}

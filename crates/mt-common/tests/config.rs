//! SPEC §3: every key parsed, env overrides win, wrong keys and values are named, secrets stay
//! secret.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure must panic

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mt_common::config::{Config, ConfigError, DashboardRole, SecretOrigin};
use secrecy::ExposeSecret;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml")
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("test.toml"), env(vars))
}

fn parse_err(text: &str, vars: &[(&str, &str)]) -> String {
    parse(text, vars).expect_err("must be rejected").to_string()
}

/// Dotted scalar keys of a TOML value; arrays of tables contribute their first element's keys.
fn keys(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                keys(&p, v, out);
            }
        }
        toml::Value::Array(a) if a.first().is_some_and(toml::Value::is_table) => {
            keys(prefix, &a[0], out)
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

const MINIMAL: &str = "[telegram]\nenabled = false\n";

#[test]
fn example_config_documents_every_key_with_its_default() {
    let config = Config::load_with_env(&example_path(), Vec::new()).expect("example.toml is valid");
    let example: toml::Value =
        toml::from_str(&std::fs::read_to_string(example_path()).expect("read")).expect("toml");
    let mut documented = BTreeSet::new();
    keys("", &example, &mut documented);

    let defaults = toml::Value::try_from(Config::default()).expect("defaults serialise");
    let mut all = BTreeSet::new();
    keys("", &defaults, &mut all);
    // Empty lists of tables in the defaults: their keys are checked one by one below.
    all.remove("prefixes");
    all.remove("dashboard.users");
    for k in [
        "cidr",
        "prefix_id",
        "bgp_prefix_id",
        "description",
        "auto_withdraw",
    ] {
        all.insert(format!("prefixes.{k}"));
    }
    let missing: Vec<_> = all.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "keys missing from config/example.toml: {missing:?}"
    );
    let text = std::fs::read_to_string(example_path()).expect("read");
    for k in ["[[dashboard.users]]", "password_hash", "role"] {
        assert!(text.contains(k), "{k} is documented");
    }

    // The values shown are the defaults, except the documented examples.
    let examples = [
        "cloudflare.account_id",
        "cloudflare.api_token_file",
        "webhook.secret_file",
        "telegram.bot_token_file",
        "telegram.chat_id",
    ];
    let shown = toml::Value::try_from(&config).expect("serialise");
    for key in all
        .iter()
        .filter(|k| !k.starts_with("prefixes.") && !examples.contains(&k.as_str()))
    {
        let get = |v: &toml::Value| {
            key.split('.')
                .try_fold(v.clone(), |v, part| v.get(part).cloned())
        };
        assert_eq!(
            get(&shown),
            get(&defaults),
            "example.toml shows a non-default value for {key}"
        );
    }
    assert_eq!(config.prefixes.len(), 2);
}

#[test]
fn every_key_is_parsed() {
    let text = r#"
[database]
path = "/tmp/x.db"
busy_timeout = "3s"
[cloudflare]
account_id = "acc"
api_base_url = "http://127.0.0.1:9000/client/v4"
graphql_url = "http://127.0.0.1:9000/client/v4/graphql"
api_token_file = "/run/cf"
request_timeout = "5s"
[[prefixes]]
cidr = "203.0.113.77/24"
prefix_id = "p1"
bgp_prefix_id = "b1"
description = "DMZ"
auto_withdraw = false
[[prefixes]]
cidr = "2001:DB8:0:0::5/48"
prefix_id = "p2"
bgp_prefix_id = "b2"
[webhook]
listen = "0.0.0.0:18080"
path = "/cf"
secret_file = "/run/wh"
allow_unauthenticated = true
archive_dir = "/tmp/archive"
max_body_bytes = 4096
request_timeout = "2s"
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
[autowithdraw]
interval = "10s"
calm_period = "20m"
min_advertised = "16m"
window = "2m"
analytics_delay = "4m"
advertise_settle = "8m"
attack_min_pps = 5
attack_min_mbps = 1.5
mitigation_systems = ["dosd"]
pre_withdraw_command = "/usr/local/bin/announce"
withdraw_verify_after = "30m"
advertised_reminder = "2h"
dry_run = true
metrics_listen = "127.0.0.1:19102"
[network_analytics]
interval = "1m"
lookback = "3m"
geoip_asn_db = "/var/lib/GeoLite2-ASN.mmdb"
geoip_country_db = "/var/lib/GeoLite2-Country.mmdb"
metrics_listen = "127.0.0.1:19103"
[telegram]
enabled = true
api_url = "http://127.0.0.1:9001"
bot_token_file = "/run/tg"
chat_id = "-10042"
org_name = "GOLINE SOC"
[dashboard]
listen = "127.0.0.1:18081"
[[dashboard.users]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA"
role = "operator"
"#;
    let c = parse(text, &[]).expect("valid");
    assert_eq!(c.database.path, PathBuf::from("/tmp/x.db"));
    assert_eq!(c.database.busy_timeout, Duration::from_secs(3));
    assert_eq!(c.cloudflare.account_id, "acc");
    assert_eq!(c.cloudflare.api_base_url, "http://127.0.0.1:9000/client/v4");
    assert_eq!(
        c.cloudflare.graphql_url,
        "http://127.0.0.1:9000/client/v4/graphql"
    );
    assert_eq!(c.cloudflare.api_token_file, "/run/cf");
    assert_eq!(c.cloudflare.request_timeout, Duration::from_secs(5));
    assert_eq!(
        c.prefixes[0].cidr.to_string(),
        "203.0.113.0/24",
        "normalised"
    );
    assert_eq!(
        c.prefixes[1].cidr.to_string(),
        "2001:db8::/48",
        "canonical IPv6"
    );
    assert_eq!(
        (
            c.prefixes[0].prefix_id.as_str(),
            c.prefixes[0].bgp_prefix_id.as_str()
        ),
        ("p1", "b1")
    );
    assert_eq!(c.prefixes[0].description, "DMZ");
    assert!(!c.prefixes[0].auto_withdraw);
    assert!(
        c.prefixes[1].auto_withdraw,
        "auto_withdraw defaults to true"
    );
    assert_eq!(c.webhook.listen.to_string(), "0.0.0.0:18080");
    assert_eq!(c.webhook.path, "/cf");
    assert_eq!(c.webhook.secret_file, "/run/wh");
    assert!(c.webhook.allow_unauthenticated);
    assert_eq!(c.webhook.archive_dir, PathBuf::from("/tmp/archive"));
    assert_eq!(c.webhook.max_body_bytes, 4096);
    assert_eq!(c.webhook.request_timeout, Duration::from_secs(2));
    let proxies: Vec<_> = c
        .webhook
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["127.0.0.1/32", "10.0.0.0/8"]);
    let a = &c.autowithdraw;
    assert_eq!(a.interval, Duration::from_secs(10));
    assert_eq!(a.calm_period, Duration::from_secs(1200));
    assert_eq!(a.min_advertised, Duration::from_secs(960));
    assert_eq!(a.window, Duration::from_secs(120));
    assert_eq!(a.analytics_delay, Duration::from_secs(240));
    assert_eq!(a.advertise_settle, Duration::from_secs(480));
    assert_eq!(a.attack_min_pps, 5.0);
    assert_eq!(a.attack_min_mbps, 1.5);
    assert_eq!(a.mitigation_systems, ["dosd"]);
    assert_eq!(a.pre_withdraw_command, "/usr/local/bin/announce");
    assert_eq!(a.withdraw_verify_after, Duration::from_secs(1800));
    assert_eq!(a.advertised_reminder, Duration::from_secs(7200));
    assert!(a.dry_run);
    assert_eq!(a.metrics_listen.port(), 19102);
    let n = &c.network_analytics;
    assert_eq!(
        (n.interval, n.lookback),
        (Duration::from_secs(60), Duration::from_secs(180))
    );
    assert_eq!(n.geoip_asn_db, "/var/lib/GeoLite2-ASN.mmdb");
    assert_eq!(n.geoip_country_db, "/var/lib/GeoLite2-Country.mmdb");
    assert_eq!(n.metrics_listen.port(), 19103);
    let t = &c.telegram;
    assert!(t.enabled);
    assert_eq!(t.api_url, "http://127.0.0.1:9001");
    assert_eq!(t.bot_token_file, "/run/tg");
    assert_eq!(t.chat_id, "-10042");
    assert_eq!(t.org_name, "GOLINE SOC");
    assert_eq!(c.dashboard.listen.port(), 18081);
    assert_eq!(c.dashboard.users[0].name, "alice");
    assert_eq!(c.dashboard.users[0].role, DashboardRole::Operator);
    let v4 = "203.0.113.200".parse().expect("ip");
    assert_eq!(c.prefix_for(v4).map(|p| p.prefix_id.as_str()), Some("p1"));
    assert!(c.prefix_for("198.51.100.1".parse().expect("ip")).is_none());
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let c = parse(MINIMAL, &[]).expect("valid");
    assert_eq!(
        c.database.path,
        PathBuf::from("/var/lib/magic-transit/magic_transit.db")
    );
    assert_eq!(c.autowithdraw.calm_period, Duration::from_secs(900));
    assert_eq!(c.autowithdraw.mitigation_systems, ["dosd", "flowtrackd"]);
    assert_eq!(c.webhook.max_body_bytes, 1_048_576);
    assert_eq!(c.dashboard.listen.to_string(), "127.0.0.1:8081");
}

#[test]
fn environment_overrides_win_and_keep_the_key_type() {
    let text =
        "[autowithdraw]\ndry_run = false\ncalm_period = \"15m\"\n[telegram]\nchat_id = \"-1\"\n";
    let c = parse(
        text,
        &[
            ("MT_AUTOWITHDRAW__DRY_RUN", "true"),
            ("MT_AUTOWITHDRAW__CALM_PERIOD", "90s"),
            ("MT_AUTOWITHDRAW__ATTACK_MIN_PPS", "250"),
            ("MT_TELEGRAM__CHAT_ID", "-1001234567890"),
            ("MT_DATABASE__PATH", "/srv/mt.db"),
            ("MT_WEBHOOK__MAX_BODY_BYTES", "2048"),
            ("MT_WEBHOOK__LISTEN", "127.0.0.1:18080"),
            ("PATH", "/usr/bin"),
            ("MT_CONFIG", "/elsewhere.toml"),
        ],
    )
    .expect("valid");
    assert!(c.autowithdraw.dry_run);
    assert_eq!(c.autowithdraw.calm_period, Duration::from_secs(90));
    assert_eq!(c.autowithdraw.attack_min_pps, 250.0);
    assert_eq!(c.telegram.chat_id, "-1001234567890");
    assert_eq!(c.database.path, PathBuf::from("/srv/mt.db"));
    assert_eq!(c.webhook.max_body_bytes, 2048);
    assert_eq!(c.webhook.listen.port(), 18080);
}

#[test]
fn wrong_keys_and_values_are_named() {
    /// (file text, environment, words the one-line error must contain)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "[autowithdraw]\ncalm_perod = \"15m\"\n",
            &[],
            &["calm_perod"],
        ),
        ("[autowihdraw]\n", &[], &["autowihdraw"]),
        ("[autowithdraw]\ninterval = \"soon\"\n", &[], &["interval"]),
        ("[autowithdraw]\ndry_run = \"yes\"\n", &[], &["dry_run"]),
        ("[webhook]\nlisten = \"localhost\"\n", &[], &["listen"]),
        (
            "[[prefixes]]\ncidr = \"203.0.113.0\"\nprefix_id = \"p\"\nbgp_prefix_id = \"b\"\n",
            &[],
            &["cidr", "203.0.113.0"],
        ),
        (
            "[[prefixes]]\ncidr = \"203.0.113.0/24\"\nprefix_id = \"p\"\nbgp_prefix_id = \"b\"\n",
            &[],
            &["cloudflare.account_id"],
        ),
        (
            "[cloudflare]\naccount_id = \"a\"\n[[prefixes]]\ncidr = \"203.0.113.0/24\"\nprefix_id = \"p\"\nbgp_prefix_id = \"\"\n",
            &[],
            &["prefixes[0].bgp_prefix_id"],
        ),
        (
            "[cloudflare]\naccount_id = \"a\"\n[[prefixes]]\ncidr = \"203.0.112.0/23\"\nprefix_id = \"p\"\nbgp_prefix_id = \"b1\"\n\
             [[prefixes]]\ncidr = \"203.0.113.0/24\"\nprefix_id = \"q\"\nbgp_prefix_id = \"b2\"\n",
            &[],
            &["prefixes[1].cidr", "overlaps", "203.0.112.0/23"],
        ),
        (
            "[autowithdraw]\nmitigation_systems = []\n",
            &[],
            &["autowithdraw.mitigation_systems"],
        ),
        (
            "[autowithdraw]\nattack_min_pps = -1\n",
            &[],
            &["autowithdraw.attack_min_pps"],
        ),
        (
            "[autowithdraw]\ninterval = \"0s\"\n",
            &[],
            &["autowithdraw.interval"],
        ),
        (
            "[network_analytics]\ninterval = \"10m\"\nlookback = \"5m\"\n",
            &[],
            &["network_analytics.lookback"],
        ),
        ("[telegram]\nenabled = true\n", &[], &["telegram.chat_id"]),
        (
            "[cloudflare]\napi_base_url = \"ftp://x\"\n",
            &[],
            &["cloudflare.api_base_url"],
        ),
        ("[webhook]\npath = \"webhook\"\n", &[], &["webhook.path"]),
        // Paths the router would panic on (a capture, a wildcard, an empty segment).
        ("[webhook]\npath = \"/hook/{id}\"\n", &[], &["webhook.path"]),
        (
            "[webhook]\npath = \"/hook/*rest\"\n",
            &[],
            &["webhook.path"],
        ),
        ("[webhook]\npath = \"/a//b\"\n", &[], &["webhook.path"]),
        (
            "[webhook]\nmax_connections = 0\n",
            &[],
            &["webhook.max_connections"],
        ),
        (
            "[webhook]\nheader_read_timeout = \"0s\"\n",
            &[],
            &["webhook.header_read_timeout"],
        ),
        (
            "[telegram]\nenabled = false\n[dashboard]\nmax_connections = 5000\n",
            &[],
            &["dashboard.max_connections"],
        ),
        ("not toml at all [", &[], &["test.toml"]),
        (
            MINIMAL,
            &[("MT_AUTOWITHDRAW__CALM_PERIO", "1m")],
            &["MT_AUTOWITHDRAW__CALM_PERIO", "calm_perio"],
        ),
        (MINIMAL, &[("MT_NOPE__X", "1")], &["MT_NOPE__X", "[nope]"]),
        (
            MINIMAL,
            &[("MT_AUTOWITHDRAW__DRY_RUN", "maybe")],
            &["MT_AUTOWITHDRAW__DRY_RUN", "boolean"],
        ),
        (
            MINIMAL,
            &[("MT_DATABASE_PATH", "/x")],
            &["MT_DATABASE_PATH", "double underscore"],
        ),
        (
            MINIMAL,
            &[("MT_PREFIXES__CIDR", "1.2.3.0/24")],
            &["MT_PREFIXES__CIDR", "file only"],
        ),
        (
            MINIMAL,
            &[("MT_AUTOWITHDRAW__MITIGATION_SYSTEMS", "dosd")],
            &["list"],
        ),
        (
            MINIMAL,
            &[("MT_AUTOWITHDRAW__CALM_PERIOD", "forever")],
            &["calm_period"],
        ),
    ];
    for (text, vars, needles) in cases {
        let message = parse_err(text, vars);
        assert!(!message.contains('\n'), "one line: {message:?}");
        for needle in *needles {
            assert!(
                message.contains(needle),
                "{message:?} should name {needle:?}"
            );
        }
    }
}

#[test]
fn missing_config_file_is_a_clear_error() {
    let err =
        Config::load_with_env(Path::new("/nonexistent/mt.toml"), Vec::new()).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/mt.toml"), "{err}");
}

#[test]
fn secrets_come_from_env_or_files_and_never_show() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("cloudflare-token"), "cf-SECRET-file\n").expect("write");
    std::fs::write(dir.path().join("empty"), "\n").expect("write");
    let text = format!(
        "[cloudflare]\napi_token_file = \"$CREDENTIALS_DIRECTORY/cloudflare-token\"\n\
         [webhook]\nsecret_file = \"{}\"\n[telegram]\nenabled = false\n\
         [[dashboard.users]]\nname = \"a\"\npassword_hash = \"$argon2id$v=19$HASHSECRET\"\nrole = \"viewer\"\n",
        dir.path().join("empty").display()
    );
    let cred = dir.path().display().to_string();
    let c = parse(
        &text,
        &[
            ("CREDENTIALS_DIRECTORY", &cred),
            ("MT_TELEGRAM_BOT_TOKEN", "tg-SECRET-env"),
        ],
    )
    .expect("valid");

    let (cf, origin) = c.cloudflare_api_token().expect("cf token");
    assert_eq!(
        cf.expose_secret(),
        "cf-SECRET-file",
        "trailing newline trimmed"
    );
    assert_eq!(
        origin,
        SecretOrigin::File(dir.path().join("cloudflare-token"))
    );
    let (tg, origin) = c.telegram_bot_token().expect("tg token");
    assert_eq!(tg.expose_secret(), "tg-SECRET-env");
    assert_eq!(origin, SecretOrigin::Env("MT_TELEGRAM_BOT_TOKEN"));
    let err = c.webhook_secret().expect_err("empty file").to_string();
    assert!(
        err.contains("webhook.secret_file") && err.contains("empty"),
        "{err}"
    );

    for shown in [
        format!("{c:?}"),
        c.to_toml(),
        format!("{:?}", c.cloudflare_api_token()),
    ] {
        for secret in ["cf-SECRET-file", "tg-SECRET-env", "HASHSECRET"] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
    }

    // Env wins over the file.
    let c = parse(
        &text,
        &[
            ("CREDENTIALS_DIRECTORY", &cred),
            ("MT_CLOUDFLARE_API_TOKEN", "cf-env"),
        ],
    )
    .expect("valid");
    assert_eq!(
        c.cloudflare_api_token().expect("token").0.expose_secret(),
        "cf-env"
    );

    // Nothing configured: the error says where a secret may come from.
    let c = parse(MINIMAL, &[]).expect("valid");
    let err = c.telegram_bot_token().expect_err("missing").to_string();
    assert!(
        err.contains("MT_TELEGRAM_BOT_TOKEN") && err.contains("telegram.bot_token_file"),
        "{err}"
    );
    // $CREDENTIALS_DIRECTORY unset.
    let c = parse(&text, &[]).expect("valid");
    let err = c
        .cloudflare_api_token()
        .expect_err("no creds dir")
        .to_string();
    assert!(err.contains("CREDENTIALS_DIRECTORY"), "{err}");
}

//! Enrichment with MaxMind's official test databases.

use network_analytics::geoip::{Fallback, GeoIp};

use crate::common::fixture;

fn open() -> GeoIp {
    GeoIp::open(
        fixture("geoip/GeoLite2-ASN-Test.mmdb").to_str().unwrap(),
        fixture("geoip/GeoLite2-Country-Test.mmdb")
            .to_str()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn sources_are_enriched_from_the_databases() {
    let geo = open();
    let none = Fallback::default();
    let telstra = geo.enrich(Some("1.128.0.1".parse().unwrap()), &none);
    assert_eq!(telstra.asn, Some(1221));
    assert_eq!(telstra.asn_name.as_deref(), Some("Telstra Pty Ltd"));
    let merit = geo.enrich(Some("2600:6000::1".parse().unwrap()), &none);
    assert_eq!(
        (merit.asn, merit.asn_name.as_deref()),
        (Some(237), Some("Merit Network Inc."))
    );
    let uk = geo.enrich(Some("81.2.69.160".parse().unwrap()), &none);
    assert_eq!(uk.country.as_deref(), Some("GB"));
}

#[test]
fn cloudflare_values_are_the_fallback() {
    let fallback = Fallback {
        asn: Some(64_500),
        asn_name: Some("SIM-NET-0"),
        country: Some("DE"),
    };
    let without = GeoIp::default().enrich(Some("45.10.0.1".parse().unwrap()), &fallback);
    assert_eq!(
        (
            without.asn,
            without.asn_name.as_deref(),
            without.country.as_deref()
        ),
        (Some(64_500), Some("SIM-NET-0"), Some("DE"))
    );
    // A database without a record for the address falls back too.
    let unknown = open().enrich(Some("45.10.0.1".parse().unwrap()), &fallback);
    assert_eq!(unknown.asn, Some(64_500));
}

#[test]
fn non_routable_sources_are_flagged_spoofed_not_looked_up() {
    let fallback = Fallback {
        asn: Some(64_500),
        asn_name: Some("SOMEONE"),
        country: Some("DE"),
    };
    let spoofed = open().enrich(Some("10.0.0.1".parse().unwrap()), &fallback);
    assert_eq!(spoofed.asn, None);
    assert_eq!(
        spoofed.asn_name.as_deref(),
        Some("spoofed (private address)")
    );
    assert_eq!(spoofed.country, None);
}

#[test]
fn an_unreadable_database_names_its_key() {
    let err = GeoIp::open("/nonexistent/asn.mmdb", "")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("network_analytics.geoip_asn_db") && err.contains("/nonexistent/asn.mmdb"),
        "{err}"
    );
}

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

/// Replaces `path` the way `geoipupdate` does: a new file renamed over the old one.
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn asn_of(geo: &GeoIp, ip: &str) -> Option<i64> {
    geo.enrich(Some(ip.parse().unwrap()), &Fallback::default())
        .asn
}

/// `geoipupdate` replaces the files while the daemon runs: a changed file is loaded and used,
/// an unchanged one is not read again, and a corrupt, truncated or missing replacement keeps
/// the data in use and says why (once per file version; SIGHUP asks again).
#[test]
fn a_replaced_file_is_used_and_a_bad_replacement_keeps_the_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let asn_path = dir.path().join("asn.mmdb");
    let asn = std::fs::read(fixture("geoip/GeoLite2-ASN-Test.mmdb")).unwrap();
    // First a valid database with no ASN records (the country test database).
    std::fs::copy(fixture("geoip/GeoLite2-Country-Test.mmdb"), &asn_path).unwrap();
    let geo = GeoIp::open(asn_path.to_str().unwrap(), "").unwrap();
    assert_eq!(asn_of(&geo, "1.128.0.1"), None);
    let nothing = geo.refresh(false);
    assert!(nothing.reloaded.is_empty() && nothing.refused.is_empty());

    // The real ASN database replaces it: the next lookups use it.
    replace(&asn_path, &asn);
    let r = geo.refresh(false);
    assert_eq!(
        r.reloaded,
        vec![(
            "network_analytics.geoip_asn_db",
            asn_path.display().to_string()
        )]
    );
    assert!(r.refused.is_empty());
    assert_eq!(asn_of(&geo, "1.128.0.1"), Some(1221));

    // Corrupt replacements: truncated, and flipped bytes in the search tree. Refused with the
    // key, path and reason; the previous data stays in use; not reported again until it
    // changes, but SIGHUP (force) tries it again.
    for bad in [asn[..asn.len() / 2].to_vec(), {
        let mut b = asn.clone();
        b[..64].fill(0xff);
        b
    }] {
        replace(&asn_path, &bad);
        let r = geo.refresh(false);
        assert!(r.reloaded.is_empty(), "{r:?}");
        let why = r
            .refused
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].contains("network_analytics.geoip_asn_db")
                && why[0].contains(asn_path.to_str().unwrap()),
            "{why:?}"
        );
        assert_eq!(asn_of(&geo, "1.128.0.1"), Some(1221), "old data in use");
        assert!(geo.refresh(false).refused.is_empty(), "reported once");
        assert_eq!(geo.refresh(true).refused.len(), 1, "SIGHUP retries");
    }

    // Deleted: reported once, data kept; then a good file comes back and is used.
    std::fs::remove_file(&asn_path).unwrap();
    assert_eq!(geo.refresh(false).refused.len(), 1);
    assert!(geo.refresh(false).refused.is_empty());
    assert_eq!(asn_of(&geo, "1.128.0.1"), Some(1221));
    replace(&asn_path, &asn);
    assert_eq!(geo.refresh(false).reloaded.len(), 1);
    assert_eq!(asn_of(&geo, "2600:6000::1"), Some(237));
}

#[test]
fn a_corrupt_database_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asn.mmdb");
    let asn = std::fs::read(fixture("geoip/GeoLite2-ASN-Test.mmdb")).unwrap();
    let mut bad = asn.clone();
    bad[..64].fill(0xff);
    std::fs::write(&path, bad).unwrap();
    let err = GeoIp::open(path.to_str().unwrap(), "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("network_analytics.geoip_asn_db"), "{err}");
}

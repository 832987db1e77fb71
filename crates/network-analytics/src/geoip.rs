//! Source enrichment: ASN number and name, and country, from MaxMind-format databases
//! (`geoip_asn_db`, `geoip_country_db`), falling back to Cloudflare's own `sourceAsn`,
//! `sourceAsnName`, `sourceCountry` when a database is not configured or has no record.
//! Sources in private, reserved, loopback, multicast or documentation ranges cannot be the
//! real origin of Internet traffic: they are flagged as spoofed instead of looked up.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::{Reader, geoip2};

/// What the enrichment says of a source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// ASN.
    pub asn: Option<i64>,
    /// ASN organisation (or the spoofing note).
    pub asn_name: Option<String>,
    /// ISO country code.
    pub country: Option<String>,
}

/// Cloudflare's own view of a source, used when no database answers.
#[derive(Debug, Clone, Default)]
pub struct Fallback<'a> {
    /// `sourceAsn`.
    pub asn: Option<i64>,
    /// `sourceAsnName`.
    pub asn_name: Option<&'a str>,
    /// `sourceCountry`.
    pub country: Option<&'a str>,
}

/// The configured databases.
#[derive(Debug, Default)]
pub struct GeoIp {
    asn: Option<Reader<Vec<u8>>>,
    country: Option<Reader<Vec<u8>>>,
}

/// Why a database could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config key {key}: cannot read MaxMind database {path}: {source}")]
pub struct GeoIpError {
    key: &'static str,
    path: String,
    source: maxminddb::MaxMindDbError,
}

impl GeoIp {
    /// Opens the databases named by the config; an empty path means none.
    pub fn open(asn_db: &str, country_db: &str) -> Result<Self, GeoIpError> {
        let open = |key: &'static str, path: &str| -> Result<Option<Reader<Vec<u8>>>, GeoIpError> {
            if path.trim().is_empty() {
                return Ok(None);
            }
            Reader::open_readfile(Path::new(path))
                .map(Some)
                .map_err(|source| GeoIpError {
                    key,
                    path: path.to_owned(),
                    source,
                })
        };
        Ok(Self {
            asn: open("network_analytics.geoip_asn_db", asn_db)?,
            country: open("network_analytics.geoip_country_db", country_db)?,
        })
    }

    /// Enriches one source address.
    pub fn enrich(&self, source: Option<IpAddr>, fallback: &Fallback<'_>) -> Source {
        if let Some(ip) = source
            && let Some(kind) = spoofed(ip)
        {
            return Source {
                asn: None,
                asn_name: Some(format!("spoofed ({kind} address)")),
                country: None,
            };
        }
        let asn = source.and_then(|ip| {
            self.asn
                .as_ref()?
                .lookup(ip)
                .ok()?
                .decode::<geoip2::Asn>()
                .ok()
                .flatten()
                .map(|a| {
                    (
                        a.autonomous_system_number,
                        a.autonomous_system_organization.map(str::to_owned),
                    )
                })
        });
        let country = source.and_then(|ip| {
            self.country
                .as_ref()?
                .lookup(ip)
                .ok()?
                .decode::<geoip2::Country>()
                .ok()
                .flatten()
                .and_then(|c| c.country.iso_code.map(str::to_owned))
        });
        Source {
            asn: asn
                .as_ref()
                .and_then(|a| a.0.map(i64::from))
                .or(fallback.asn),
            asn_name: asn.and_then(|a| a.1).or_else(|| {
                fallback
                    .asn_name
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            }),
            country: country.or_else(|| {
                fallback
                    .country
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            }),
        }
    }
}

/// The kind of non-routable range `ip` is in, if any.
pub fn spoofed(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_private() {
                Some("private")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_documentation() {
                Some("documentation")
            } else if v4.is_unspecified() || v4.is_broadcast() || o[0] == 0 || o[0] >= 240 {
                Some("reserved")
            } else if o[0] == 100 && (64..128).contains(&o[1]) {
                Some("shared (CGNAT)")
            } else if o[0] == 198 && (18..20).contains(&o[1]) {
                Some("benchmarking")
            } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return spoofed(IpAddr::V4(v4));
            }
            if v6.is_loopback() || v6.is_unspecified() {
                Some("loopback")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_routable_sources_are_spoofed() {
        for (ip, kind) in [
            ("10.0.0.1", "private"),
            ("192.168.1.1", "private"),
            ("172.16.5.5", "private"),
            ("127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("169.254.1.1", "link-local"),
            ("192.0.2.7", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.7", "documentation"),
            ("0.1.2.3", "reserved"),
            ("250.0.0.1", "reserved"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("198.18.0.1", "benchmarking"),
            ("fd00::1", "private"),
            ("fe80::1", "link-local"),
            ("2001:db8::1", "documentation"),
            ("ff02::1", "multicast"),
            ("::1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
        ] {
            assert_eq!(spoofed(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in [
            "1.128.0.1",
            "81.2.69.160",
            "45.10.0.1",
            "2600:6000::1",
            "100.128.0.1",
        ] {
            assert_eq!(spoofed(ip.parse().unwrap()), None, "{ip}");
        }
    }
}

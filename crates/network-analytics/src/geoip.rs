//! Source enrichment: ASN number and name, and country, from MaxMind-format databases
//! (`geoip_asn_db`, `geoip_country_db`), falling back to Cloudflare's own `sourceAsn`,
//! `sourceAsnName`, `sourceCountry` when a database is not configured or has no record.
//! Sources in private, reserved, loopback, multicast or documentation ranges cannot be the
//! real origin of Internet traffic: they are flagged as spoofed instead of looked up.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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

/// The configured databases, reloadable while the daemon runs ([`GeoIp::refresh`]): lookups
/// see either the old or the new file, never a half-read one.
#[derive(Debug, Default)]
pub struct GeoIp {
    asn: Slot,
    country: Slot,
}

/// One configured database: its path, what is in use, and the file version last looked at.
#[derive(Debug, Default)]
struct Slot {
    key: &'static str,
    path: String,
    loaded: RwLock<Option<Arc<Reader<Vec<u8>>>>>,
    /// The file version last loaded or refused: a refused file is not retried (nor logged
    /// again) until it changes or a forced refresh (SIGHUP) asks.
    seen: Mutex<Option<Stamp>>,
}

/// Identifies a version of a file: `geoipupdate` renames a new file into place (new inode); an
/// edit in place changes the size or the modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(path: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// Why a database could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config key {key}: cannot read MaxMind database {path}: {source}")]
pub struct GeoIpError {
    key: &'static str,
    path: String,
    source: maxminddb::MaxMindDbError,
}

/// What [`GeoIp::refresh`] did.
#[derive(Debug, Default)]
pub struct Refresh {
    /// Databases now serving a new version of their file: (config key, path).
    pub reloaded: Vec<(&'static str, String)>,
    /// Databases whose new file was refused; the previous data stays in use.
    pub refused: Vec<GeoIpError>,
}

/// Reads and fully verifies one database (a truncated or corrupt file is refused here, not
/// discovered one lookup at a time).
fn load(key: &'static str, path: &str) -> Result<Reader<Vec<u8>>, GeoIpError> {
    let error = |source| GeoIpError {
        key,
        path: path.to_owned(),
        source,
    };
    let reader = Reader::open_readfile(Path::new(path)).map_err(error)?;
    reader.verify().map_err(error)?;
    Ok(reader)
}

impl Slot {
    fn open(key: &'static str, path: &str) -> Result<Self, GeoIpError> {
        let slot = Self {
            key,
            path: path.trim().to_owned(),
            ..Self::default()
        };
        if !slot.path.is_empty() {
            let stamp = Stamp::of(&slot.path).ok();
            *slot.loaded.write().unwrap_or_else(PoisonError::into_inner) =
                Some(Arc::new(load(key, &slot.path)?));
            *slot.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamp;
        }
        Ok(slot)
    }

    fn current(&self) -> Option<Arc<Reader<Vec<u8>>>> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn refresh(&self, force: bool, out: &mut Refresh) {
        if self.path.is_empty() {
            return;
        }
        let stamp = match Stamp::of(&self.path) {
            Ok(stamp) => Some(stamp),
            // A missing file (being replaced, or deleted): keep the data in use, say why once.
            Err(e) => {
                let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
                if seen.is_some() || force {
                    *seen = None;
                    out.refused.push(GeoIpError {
                        key: self.key,
                        path: self.path.clone(),
                        source: maxminddb::MaxMindDbError::Io(e),
                    });
                }
                return;
            }
        };
        {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if !force && *seen == stamp {
                return;
            }
        }
        let result = load(self.key, &self.path);
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = stamp;
        match result {
            Ok(reader) => {
                *self.loaded.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::new(reader));
                out.reloaded.push((self.key, self.path.clone()));
            }
            Err(e) => out.refused.push(e),
        }
    }
}

impl GeoIp {
    /// Opens (and verifies) the databases named by the config; an empty path means none.
    pub fn open(asn_db: &str, country_db: &str) -> Result<Self, GeoIpError> {
        Ok(Self {
            asn: Slot::open("network_analytics.geoip_asn_db", asn_db)?,
            country: Slot::open("network_analytics.geoip_country_db", country_db)?,
        })
    }

    /// Whether any database is configured (otherwise there is nothing to reload).
    pub fn is_configured(&self) -> bool {
        !self.asn.path.is_empty() || !self.country.path.is_empty()
    }

    /// Reloads every configured file that changed since it was last looked at, or every one
    /// when `force` (SIGHUP). A file that cannot be read or fails verification leaves the
    /// previous data in use and is reported in [`Refresh::refused`] once per file version.
    /// Blocking (reads and verifies whole files): call it from `spawn_blocking`.
    pub fn refresh(&self, force: bool) -> Refresh {
        let mut out = Refresh::default();
        self.asn.refresh(force, &mut out);
        self.country.refresh(force, &mut out);
        out
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
        let (asn_db, country_db) = (self.asn.current(), self.country.current());
        let asn = source.and_then(|ip| {
            asn_db
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
            country_db
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

/// Keeps the databases fresh until `stop`: checks the files every `every` and on every
/// SIGHUP (forced: reloads even an unchanged file), logging what changed and what was refused.
/// `hangup` is `None` when no SIGHUP handler could be installed (checks still run).
pub async fn keep_fresh(
    geoip: Arc<GeoIp>,
    every: std::time::Duration,
    mut hangup: Option<tokio::signal::unix::Signal>,
    stop: tokio_util::sync::CancellationToken,
    counters: Arc<ReloadCounters>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let force = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        if force {
            if geoip.is_configured() {
                tracing::info!(signal = "SIGHUP", "reloading the GeoIP databases");
            } else {
                tracing::info!(
                    signal = "SIGHUP",
                    "no GeoIP database is configured; nothing to reload"
                );
                continue;
            }
        } else if !geoip.is_configured() {
            continue;
        }
        let g = geoip.clone();
        let refresh = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = tokio::task::spawn_blocking(move || g.refresh(force)) => r?,
        };
        for (key, path) in refresh.reloaded {
            counters.reloads.inc();
            tracing::info!(
                key,
                path,
                "GeoIP database reloaded; lookups use the new file"
            );
        }
        for error in refresh.refused {
            counters.refused.inc();
            tracing::warn!(%error, "GeoIP database not reloaded; the previous data stays in use");
        }
    }
}

/// What `/metrics` counts of the reloads.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    /// Files loaded anew while running.
    pub reloads: mt_common::metrics::Counter,
    /// New file versions refused (unreadable, corrupt, missing).
    pub refused: mt_common::metrics::Counter,
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

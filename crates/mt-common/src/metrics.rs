//! Minimal Prometheus text exposition for the daemons' `/metrics`.
//!
//! Each daemon owns its metrics as plain atomics inside its state (no global recorder), so two
//! instances in one test process never share counters, and rendering needs no registry.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters keyed by one label whose values come from a small fixed set (callers must not use
/// unbounded, client-controlled label values).
#[derive(Debug, Default)]
pub struct CounterVec(Mutex<BTreeMap<String, u64>>);

impl CounterVec {
    /// Adds one to `label`'s counter.
    pub fn inc(&self, label: &str) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(label.to_owned()).or_default() += 1;
    }

    /// The value for `label`.
    pub fn get(&self, label: &str) -> u64 {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(label).copied().unwrap_or_default()
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Latency buckets in seconds: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram over fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// A histogram with the given upper bounds (seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// What `mt_build_info` says of a binary: its version and the commit it was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo {
    /// The workspace version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
    /// The git commit (12 hex digits), or `unknown` for a build without `.git`.
    pub commit: &'static str,
}

/// The calling daemon crate's [`BuildInfo`]. The commit comes from its build script
/// (`build = "../mt-common/build_commit.rs"`), so only daemon crates can expand this.
#[macro_export]
macro_rules! build_info {
    () => {
        $crate::metrics::BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("MAGIC_TRANSIT_BUILD_COMMIT"),
        }
    };
}

/// Writes Prometheus text: `# HELP`, `# TYPE` and samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// `mt_build_info{daemon, version, commit} 1`: which build answers this scrape.
    pub fn build_info(&mut self, daemon: &str, info: BuildInfo) -> &mut Self {
        self.header(
            "mt_build_info",
            "Always 1; the labels say which daemon, version and git commit answer this scrape.",
            "gauge",
        );
        let _ = writeln!(
            self.out,
            "mt_build_info{{daemon=\"{}\",version=\"{}\",commit=\"{}\"}} 1",
            escape_label(daemon),
            escape_label(info.version),
            escape_label(info.commit)
        );
        self
    }

    /// A counter.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Self {
        self.header(name, help, "counter");
        let _ = writeln!(self.out, "{name} {value}");
        self
    }

    /// A labelled counter family.
    pub fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        c: &CounterVec,
    ) -> &mut Self {
        self.header(name, help, "counter");
        for (value, n) in c.snapshot() {
            let _ = writeln!(
                self.out,
                "{name}{{{label}=\"{}\"}} {n}",
                escape_label(&value)
            );
        }
        self
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Self {
        self.header(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {value}");
        self
    }

    /// A labelled gauge family.
    pub fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        values: &[(String, f64)],
    ) -> &mut Self {
        self.header(name, help, "gauge");
        for (value, v) in values {
            let _ = writeln!(
                self.out,
                "{name}{{{label}=\"{}\"}} {v}",
                escape_label(value)
            );
        }
        self
    }

    /// A histogram.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> &mut Self {
        self.header(name, help, "histogram");
        for (bound, bucket) in h.bounds.iter().zip(&h.buckets) {
            let _ = writeln!(
                self.out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = h.count();
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(self.out, "{name}_sum {sum}\n{name}_count {count}");
        self
    }

    /// The page.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.out)
    }

    /// The page as a `/metrics` answer (Prometheus text format 0.0.4).
    pub fn response(&mut self) -> axum::response::Response {
        use axum::response::IntoResponse as _;
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            self.finish(),
        )
            .into_response()
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let c = CounterVec::default();
        c.inc("bad_json");
        c.inc("bad_json");
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        let page = Exposition::new()
            .counter("a_total", "A.", 3)
            .counter_vec("r_total", "R.", "reason", &c)
            .histogram("lat_seconds", "L.", &h)
            .finish();
        assert!(page.contains("a_total 3\n"));
        assert!(page.contains("r_total{reason=\"bad_json\"} 2\n"));
        assert!(page.contains("lat_seconds_bucket{le=\"0.01\"} 1\n"));
        assert!(page.contains("lat_seconds_bucket{le=\"0.1\"} 2\n"));
        assert!(page.contains("lat_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(page.contains("lat_seconds_count 2\n"));
    }
}

//! `/metrics` in the Prometheus text format (0.0.4): HTTP requests and latency by route,
//! run durations by step, runs by step and state (from the store), and the caller's gauges.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use mlci_core::RunState;

/// Upper bounds (seconds) of the HTTP latency histogram.
const HTTP_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];
/// Upper bounds (seconds) of the run duration histogram: steps take from ms to hours.
const RUN_BUCKETS: [f64; 10] = [0.1, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0];

/// A gauge the caller adds to `/metrics` (e.g. `mlci_health_relaunches_total`).
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    /// A Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`); others are skipped.
    pub name: String,
    pub help: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len()];
        }
        for (i, bound) in bounds.iter().enumerate() {
            if value <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in bounds.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Data {
    /// (method, route, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// (method, route) → latency.
    latency: BTreeMap<(String, String), Histogram>,
    /// step → run durations.
    runs: BTreeMap<String, Histogram>,
    /// What retention removed since the service started, by kind.
    removed: crate::retention::Removed,
}

/// The service's own counters (runs by state come from the store at each scrape).
#[derive(Debug, Default)]
pub(crate) struct Metrics(Mutex<Data>);

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl Metrics {
    pub(crate) fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut data = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *data
            .requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        data.latency
            .entry((method.to_owned(), route.to_owned()))
            .or_default()
            .observe(&HTTP_BUCKETS, seconds);
    }

    pub(crate) fn run_finished(&self, step: &str, seconds: f64) {
        let mut data = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        data.runs
            .entry(step.to_owned())
            .or_default()
            .observe(&RUN_BUCKETS, seconds);
    }

    pub(crate) fn retention(&self, removed: &crate::retention::Removed) {
        let mut data = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        data.removed.add(removed);
    }

    /// The text of `/metrics`.
    pub(crate) fn render(
        &self,
        counts: &[(String, RunState, u64)],
        steps: &[String],
        gauges: &[Gauge],
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP mlci_runs Runs in the store by step and state.\n# TYPE mlci_runs gauge\n");
        let mut counts_init: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for step in steps {
            for state in mlci_core::RunState::ALL {
                counts_init.insert((step.as_str(), state.as_str()), 0);
            }
        }
        let mut by_step_state = counts_init;
        for (step, state, n) in counts {
            *by_step_state.entry((step.as_str(), state.as_str())).or_default() += n;
        }
        for ((step, state), n) in by_step_state {
            let _ = writeln!(
                out,
                "mlci_runs{{step=\"{}\",state=\"{state}\"}} {n}",
                escape(step)
            );
        }
        let data = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        out.push_str(
            "# HELP mlci_run_duration_seconds Wall time of runs finished since the service started.\n\
             # TYPE mlci_run_duration_seconds histogram\n",
        );
        for (step, h) in &data.runs {
            h.render(
                &mut out,
                "mlci_run_duration_seconds",
                &format!("step=\"{}\"", escape(step)),
                &RUN_BUCKETS,
            );
        }
        out.push_str(
            "# HELP mlci_http_requests_total HTTP requests by method, route and status.\n\
             # TYPE mlci_http_requests_total counter\n",
        );
        for ((method, route, status), n) in &data.requests {
            let _ = writeln!(
                out,
                "mlci_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP mlci_http_request_duration_seconds Time to the response head by method and route.\n\
             # TYPE mlci_http_request_duration_seconds histogram\n",
        );
        for ((method, route), h) in &data.latency {
            h.render(
                &mut out,
                "mlci_http_request_duration_seconds",
                &format!("method=\"{method}\",route=\"{}\"", escape(route)),
                &HTTP_BUCKETS,
            );
        }
        out.push_str(
            "# HELP mlci_retention_removed_total What retention removed since the service started.\n\
             # TYPE mlci_retention_removed_total counter\n",
        );
        for (what, n) in data.removed.counts() {
            let _ = writeln!(out, "mlci_retention_removed_total{{what=\"{what}\"}} {n}");
        }
        drop(data);
        let mut described = std::collections::BTreeSet::new();
        for g in gauges.iter().filter(|g| valid_name(&g.name)) {
            if described.insert(g.name.clone()) {
                let _ = writeln!(
                    out,
                    "# HELP {} {}\n# TYPE {} gauge",
                    g.name,
                    escape(&g.help),
                    g.name
                );
            }
            let labels: Vec<String> = g
                .labels
                .iter()
                .filter(|(k, _)| valid_name(k))
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {}", g.name, labels.join(","), g.value);
        }
        out
    }
}

//! Request metrics for `/metrics`: requests by node, model and status; time to first byte
//! and total latency histograms; policy decision latency.

use crate::prometheus_text::{Label, scalar};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    total: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add(value.as_micros() as u64, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Ordering::Relaxed));
        }
        let total = self.total.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {total}");
    }
}

const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const DECISION: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.001, 0.01, 0.1,
];

#[derive(Debug)]
pub struct FrontMetrics {
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    pub ttfb: Histogram,
    pub total: Histogram,
    pub decision: Histogram,
    pub retries: AtomicU64,
    /// Streams continued on another node after their node was lost.
    pub continuations: AtomicU64,
    /// Streams whose node was lost and that no other node could continue.
    pub continuation_failures: AtomicU64,
    pub cancelled: AtomicU64,
    /// Per node: the requests' estimated joules (`x-switchyard-energy-mj`) and how many.
    energy: Mutex<HashMap<String, (f64, u64)>>,
}

impl Default for FrontMetrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(HashMap::new()),
            ttfb: Histogram::new(LATENCY),
            total: Histogram::new(LATENCY),
            decision: Histogram::new(DECISION),
            retries: AtomicU64::new(0),
            continuations: AtomicU64::new(0),
            continuation_failures: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            energy: Mutex::new(HashMap::new()),
        }
    }
}

impl FrontMetrics {
    pub fn request(&self, node: &str, model: &str, status: u16) {
        let mut requests = self.requests.lock();
        *requests.entry((node.to_owned(), model.to_owned(), status)).or_insert(0) += 1;
    }

    /// Count one request's estimated energy on `node`.
    pub fn energy(&self, node: &str, joules: f64) {
        let mut energy = self.energy.lock();
        let entry = energy.entry(node.to_owned()).or_insert((0.0, 0));
        entry.0 += joules;
        entry.1 += 1;
    }

    fn render_energy(&self, out: &mut String) {
        let energy = self.energy.lock().clone();
        let mut rows: Vec<_> = energy.into_iter().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = writeln!(
            out,
            "# HELP switchyard_request_energy_joules_total Estimated energy of the requests served, by node (the node's joules per token x the request's max tokens)."
        );
        let _ = writeln!(out, "# TYPE switchyard_request_energy_joules_total counter");
        for (node, (joules, _)) in &rows {
            let _ = writeln!(
                out,
                "switchyard_request_energy_joules_total{{node=\"{}\"}} {joules:.3}",
                Label(node)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_energy_wh_per_1k_requests Estimated watt-hours per 1,000 requests, by node and for the whole cluster (node=\"all\")."
        );
        let _ = writeln!(out, "# TYPE switchyard_energy_wh_per_1k_requests gauge");
        let per_1k = |joules: f64, requests: u64| joules / 3600.0 / requests.max(1) as f64 * 1000.0;
        for (node, (joules, requests)) in &rows {
            let _ = writeln!(
                out,
                "switchyard_energy_wh_per_1k_requests{{node=\"{}\"}} {:.3}",
                Label(node),
                per_1k(*joules, *requests)
            );
        }
        let (joules, requests) = rows.iter().fold((0.0, 0), |acc, (_, (j, r))| (acc.0 + j, acc.1 + r));
        if requests > 0 {
            let _ = writeln!(
                out,
                "switchyard_energy_wh_per_1k_requests{{node=\"all\"}} {:.3}",
                per_1k(joules, requests)
            );
        }
    }

    pub fn render(&self, out: &mut String, queue_depth: usize) {
        self.render_energy(out);
        let _ = writeln!(
            out,
            "# HELP switchyard_requests_total Prompt requests by serving node, logical model and HTTP status."
        );
        let _ = writeln!(out, "# TYPE switchyard_requests_total counter");
        let requests = self.requests.lock().clone();
        let mut rows: Vec<_> = requests.into_iter().collect();
        rows.sort();
        for ((node, model, status), count) in rows {
            let _ = writeln!(
                out,
                "switchyard_requests_total{{node=\"{}\",model=\"{}\",status=\"{status}\"}} {count}",
                Label(&node),
                Label(&model)
            );
        }
        self.ttfb.render(
            out,
            "switchyard_time_to_first_byte_seconds",
            "Time from request to the first byte from the node.",
        );
        self.total.render(
            out,
            "switchyard_request_duration_seconds",
            "Time from request to the end of the response.",
        );
        self.decision.render(
            out,
            "switchyard_policy_decision_seconds",
            "Time the policy (or fallback) took to decide.",
        );
        scalar(
            out,
            "switchyard_retries_total",
            "counter",
            "Requests retried on the next target before the first byte.",
            self.retries.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "switchyard_stream_continuations_total",
            "counter",
            "Streams continued on another node after their node was lost mid-answer.",
            self.continuations.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "switchyard_stream_continuation_failures_total",
            "counter",
            "Streams whose node was lost mid-answer and that no other node could continue.",
            self.continuation_failures.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "switchyard_cancelled_total",
            "counter",
            "Responses cancelled by the client before their end.",
            self.cancelled.load(Ordering::Relaxed),
        );
        scalar(
            out,
            "switchyard_queue_depth",
            "gauge",
            "Requests waiting for a node slot.",
            queue_depth,
        );
    }
}

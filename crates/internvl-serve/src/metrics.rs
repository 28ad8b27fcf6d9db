//! Prometheus text metrics: requests by endpoint and status, tokens, latency histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
struct Latency {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Server counters.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Latency>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Counters kept by the model worker.
    pub worker: std::sync::Arc<crate::worker::WorkerStats>,
}

impl Metrics {
    /// Records one finished request (latency to the response head).
    pub fn record(&self, path: &str, status: u16, elapsed: Duration) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((path.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let entry = l.entry(path.to_string()).or_default();
            let s = elapsed.as_secs_f64();
            for (b, bound) in entry.buckets.iter_mut().zip(BUCKETS) {
                if s <= bound {
                    *b += 1;
                }
            }
            entry.count += 1;
            entry.sum += s;
        }
    }

    /// Adds the tokens of one completion.
    pub fn tokens(&self, prompt: usize, completion: usize) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, busy: usize, waiting: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP internvl_requests_total HTTP requests by endpoint and status.\n# TYPE internvl_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((path, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "internvl_requests_total{{endpoint=\"{path}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP internvl_request_duration_seconds Time to the response head.\n# TYPE internvl_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for (path, h) in l.iter() {
                for (b, bound) in h.buckets.iter().zip(BUCKETS) {
                    let _ = writeln!(
                        out,
                        "internvl_request_duration_seconds_bucket{{endpoint=\"{path}\",le=\"{bound}\"}} {b}"
                    );
                }
                let _ = writeln!(
                    out,
                    "internvl_request_duration_seconds_bucket{{endpoint=\"{path}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "internvl_request_duration_seconds_sum{{endpoint=\"{path}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "internvl_request_duration_seconds_count{{endpoint=\"{path}\"}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(out, "# HELP internvl_prompt_tokens_total Prompt tokens of completed chat requests.\n# TYPE internvl_prompt_tokens_total counter\ninternvl_prompt_tokens_total {}", self.prompt_tokens.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP internvl_completion_tokens_total Generated tokens.\n# TYPE internvl_completion_tokens_total counter\ninternvl_completion_tokens_total {}", self.completion_tokens.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP internvl_cancelled_generations_total Generations stopped because the client disconnected.\n# TYPE internvl_cancelled_generations_total counter\ninternvl_cancelled_generations_total {}", self.worker.cancelled.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP internvl_decode_steps_total Batched decode steps (one token for every running request).\n# TYPE internvl_decode_steps_total counter\ninternvl_decode_steps_total {}", self.worker.decode_steps.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP internvl_decode_rows_total Requests summed over decode steps (divide by the steps for the mean batch).\n# TYPE internvl_decode_rows_total counter\ninternvl_decode_rows_total {}", self.worker.decode_rows.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP internvl_requests_running Requests holding a worker slot.\n# TYPE internvl_requests_running gauge\ninternvl_requests_running {busy}");
        let _ = writeln!(out, "# HELP internvl_requests_waiting Requests waiting for a slot.\n# TYPE internvl_requests_waiting gauge\ninternvl_requests_waiting {waiting}");
        out
    }
}

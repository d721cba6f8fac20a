//! Counters for `/metrics` in the Prometheus text format: verb calls and errors by method, a
//! verb latency histogram, and activations by outcome (a person's mistyped code is `bad_code`,
//! not an error); the gauges (spokes connected, boxes by phase) are passed in at render
//! time because they are read from the directory and the state file, not counted here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct VerbStats {
    calls: u64,
    errors: u64,
    buckets: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
}

/// How an activation (a code that reached a box) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The box is ready.
    Ok,
    /// The box refused the code (the person's mistake, not the server's).
    BadCode,
    /// The host or the hub failed (Docker unreachable, spoke away, backend error).
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::BadCode, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadCode => "bad_code",
            Outcome::Error => "error",
        }
    }
}

/// Verb counters, shared by every handler thread.
#[derive(Default)]
pub(crate) struct Metrics {
    verbs: Mutex<BTreeMap<&'static str, VerbStats>>,
    activations: Mutex<[u64; 3]>,
}

impl Metrics {
    /// Records one call of `method` that took `took` and succeeded or not.
    pub(crate) fn observe(&self, method: &'static str, took: Duration, ok: bool) {
        let secs = took.as_secs_f64();
        let mut verbs = self.verbs.lock().unwrap_or_else(|e| e.into_inner());
        let stats = verbs.entry(method).or_default();
        stats.calls += 1;
        if !ok {
            stats.errors += 1;
        }
        stats.sum += secs;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                stats.buckets[i] += 1;
            }
        }
    }

    /// Counts one activation that ended with `outcome`.
    pub(crate) fn activation(&self, outcome: Outcome) {
        let mut a = self.activations.lock().unwrap_or_else(|e| e.into_inner());
        a[outcome as usize] += 1;
    }

    /// The whole exposition text.
    pub(crate) fn render(
        &self,
        spokes_connected: usize,
        boxes_by_phase: &[(&str, usize)],
    ) -> String {
        let verbs = self.verbs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let activations = *self.activations.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP llmbox_spokes_connected Spokes connected now.");
        let _ = writeln!(out, "# TYPE llmbox_spokes_connected gauge");
        let _ = writeln!(out, "llmbox_spokes_connected {spokes_connected}");
        let _ = writeln!(
            out,
            "# HELP llmbox_boxes Boxes created through the hub, by phase."
        );
        let _ = writeln!(out, "# TYPE llmbox_boxes gauge");
        for (phase, n) in boxes_by_phase {
            let _ = writeln!(out, "llmbox_boxes{{phase=\"{phase}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP llmbox_activations_total Codes sent to boxes from the activation page, by outcome (bad_code: the box refused the code)."
        );
        let _ = writeln!(out, "# TYPE llmbox_activations_total counter");
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "llmbox_activations_total{{outcome=\"{}\"}} {}",
                o.label(),
                activations[o as usize]
            );
        }
        let _ = writeln!(
            out,
            "# HELP llmbox_verb_calls_total Box verb calls, by method."
        );
        let _ = writeln!(out, "# TYPE llmbox_verb_calls_total counter");
        for (m, s) in &verbs {
            let _ = writeln!(out, "llmbox_verb_calls_total{{method=\"{m}\"}} {}", s.calls);
        }
        let _ = writeln!(
            out,
            "# HELP llmbox_verb_errors_total Failed box verb calls, by method."
        );
        let _ = writeln!(out, "# TYPE llmbox_verb_errors_total counter");
        for (m, s) in &verbs {
            let _ = writeln!(
                out,
                "llmbox_verb_errors_total{{method=\"{m}\"}} {}",
                s.errors
            );
        }
        let _ = writeln!(
            out,
            "# HELP llmbox_verb_duration_seconds Box verb latency, by method."
        );
        let _ = writeln!(out, "# TYPE llmbox_verb_duration_seconds histogram");
        for (m, s) in &verbs {
            for (bound, n) in LATENCY_BUCKETS.iter().zip(s.buckets.iter()) {
                let _ = writeln!(
                    out,
                    "llmbox_verb_duration_seconds_bucket{{method=\"{m}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "llmbox_verb_duration_seconds_bucket{{method=\"{m}\",le=\"+Inf\"}} {}",
                s.calls
            );
            let _ = writeln!(
                out,
                "llmbox_verb_duration_seconds_sum{{method=\"{m}\"}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "llmbox_verb_duration_seconds_count{{method=\"{m}\"}} {}",
                s.calls
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_errors_and_cumulative_buckets_are_rendered() {
        let m = Metrics::default();
        m.observe("create", Duration::from_millis(3), true);
        m.observe("create", Duration::from_secs(2), false);
        let text = m.render(2, &[("pending", 1), ("ready", 0)]);
        assert!(text.contains("llmbox_spokes_connected 2"), "{text}");
        assert!(text.contains("llmbox_boxes{phase=\"pending\"} 1"));
        assert!(text.contains("llmbox_verb_calls_total{method=\"create\"} 2"));
        assert!(text.contains("llmbox_verb_errors_total{method=\"create\"} 1"));
        assert!(text.contains("llmbox_activations_total{outcome=\"bad_code\"} 0"));
        m.activation(Outcome::BadCode);
        m.activation(Outcome::Ok);
        m.activation(Outcome::BadCode);
        let text = m.render(2, &[]);
        assert!(
            text.contains("llmbox_activations_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("llmbox_activations_total{outcome=\"bad_code\"} 2"));
        assert!(text.contains("llmbox_activations_total{outcome=\"error\"} 0"));
        assert!(
            text.contains("llmbox_verb_duration_seconds_bucket{method=\"create\",le=\"0.005\"} 1")
        );
        assert!(
            text.contains("llmbox_verb_duration_seconds_bucket{method=\"create\",le=\"2.5\"} 2")
        );
        assert!(
            text.contains("llmbox_verb_duration_seconds_bucket{method=\"create\",le=\"+Inf\"} 2")
        );
    }
}

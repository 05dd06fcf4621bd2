//! The controller's Prometheus metrics: counters kept in memory, rendered as the text
//! exposition format (pure; the HTTP endpoint is the CLI's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use super::plan::SyncId;

/// How a pass ended, as counted in `lockstep_reconciles_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PassResult {
    /// Applied (maybe still rolling out).
    Applied,
    /// Refused: verification, rollback protection, an invalid spec or commit.
    Refused,
    /// Failed for a reason that may pass (Git or the API server unreachable).
    Failed,
    /// Suspended: nothing done.
    Suspended,
}

impl PassResult {
    fn label(self) -> &'static str {
        match self {
            PassResult::Applied => "applied",
            PassResult::Refused => "refused",
            PassResult::Failed => "failed",
            PassResult::Suspended => "suspended",
        }
    }
}

#[derive(Default)]
struct Counters {
    reconciles: BTreeMap<PassResult, u64>,
    verification_failures: BTreeMap<String, u64>,
    drifted: BTreeMap<SyncId, u64>,
    applied_generation: BTreeMap<SyncId, u64>,
    duration_sum: f64,
    duration_count: u64,
    duration_buckets: [u64; BUCKETS.len()],
    leader: Option<bool>,
}

/// Upper bounds (seconds) of the pass-duration histogram.
const BUCKETS: [f64; 8] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The controller's metrics, shared between the passes and the HTTP endpoint.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        // A panic while holding the lock leaves counters that are still counters.
        let mut guard = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Count one pass and its duration.
    pub fn pass(&self, result: PassResult, took: Duration) {
        self.with(|c| {
            *c.reconciles.entry(result).or_default() += 1;
            let secs = took.as_secs_f64();
            c.duration_sum += secs;
            c.duration_count += 1;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    c.duration_buckets[i] += 1;
                }
            }
        });
    }

    /// Count a commit refused by verification (or rollback protection), by reason.
    pub fn verification_failure(&self, reason: &str) {
        self.with(|c| {
            *c.verification_failures
                .entry(reason.to_owned())
                .or_default() += 1
        });
    }

    /// Count objects put back after drifting.
    pub fn drifted(&self, sync: &SyncId, objects: u64) {
        if objects > 0 {
            self.with(|c| *c.drifted.entry(sync.clone()).or_default() += objects);
        }
    }

    /// Record the lockfile generation applied for a sync.
    pub fn applied_generation(&self, sync: &SyncId, generation: u64) {
        self.with(|c| {
            c.applied_generation.insert(sync.clone(), generation);
        });
    }

    /// Record whether this replica holds the leader Lease (with leader election on).
    pub fn leader(&self, leading: bool) {
        self.with(|c| c.leader = Some(leading));
    }

    /// Forget a deleted sync's gauges.
    pub fn forget(&self, sync: &SyncId) {
        self.with(|c| {
            c.applied_generation.remove(sync);
        });
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        self.with(|c| {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "# HELP lockstep_reconciles_total Reconcile passes, by result.\n# TYPE lockstep_reconciles_total counter"
            );
            for result in [
                PassResult::Applied,
                PassResult::Refused,
                PassResult::Failed,
                PassResult::Suspended,
            ] {
                let n = c.reconciles.get(&result).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "lockstep_reconciles_total{{result=\"{}\"}} {n}",
                    result.label()
                );
            }
            let _ = writeln!(
                out,
                "# HELP lockstep_reconcile_duration_seconds Duration of reconcile passes.\n# TYPE lockstep_reconcile_duration_seconds histogram"
            );
            for (bound, n) in BUCKETS.iter().zip(c.duration_buckets) {
                let _ = writeln!(
                    out,
                    "lockstep_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "lockstep_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}\nlockstep_reconcile_duration_seconds_sum {}\nlockstep_reconcile_duration_seconds_count {}",
                c.duration_count, c.duration_sum, c.duration_count
            );
            let _ = writeln!(
                out,
                "# HELP lockstep_verification_failures_total Commits refused, by reason.\n# TYPE lockstep_verification_failures_total counter"
            );
            for (reason, n) in &c.verification_failures {
                let _ = writeln!(
                    out,
                    "lockstep_verification_failures_total{{reason=\"{}\"}} {n}",
                    escape(reason)
                );
            }
            let _ = writeln!(
                out,
                "# HELP lockstep_drifted_objects_total Objects found changed in the cluster and put back.\n# TYPE lockstep_drifted_objects_total counter"
            );
            for (sync, n) in &c.drifted {
                let _ = writeln!(
                    out,
                    "lockstep_drifted_objects_total{{namespace=\"{}\",name=\"{}\"}} {n}",
                    escape(&sync.namespace),
                    escape(&sync.name)
                );
            }
            let _ = writeln!(
                out,
                "# HELP lockstep_applied_generation The lockfile generation applied.\n# TYPE lockstep_applied_generation gauge"
            );
            for (sync, generation) in &c.applied_generation {
                let _ = writeln!(
                    out,
                    "lockstep_applied_generation{{namespace=\"{}\",name=\"{}\"}} {generation}",
                    escape(&sync.namespace),
                    escape(&sync.name)
                );
            }
            if let Some(leading) = c.leader {
                let _ = writeln!(
                    out,
                    "# HELP lockstep_leader 1 while this replica holds the leader Lease and reconciles.\n# TYPE lockstep_leader gauge\nlockstep_leader {}",
                    u8::from(leading)
                );
            }
            out
        })
    }
}

/// A label value with `\`, `"` and line feeds escaped, as the text format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_label() {
        let metrics = Metrics::default();
        let sync = SyncId {
            namespace: "ops".into(),
            name: "shop".into(),
        };
        metrics.pass(PassResult::Applied, Duration::from_millis(300));
        metrics.pass(PassResult::Refused, Duration::from_secs(3));
        metrics.verification_failure("UnpinnedImage");
        metrics.verification_failure("UnpinnedImage");
        metrics.verification_failure("say \"hi\"");
        metrics.drifted(&sync, 2);
        metrics.applied_generation(&sync, 7);
        let text = metrics.render();
        for line in [
            "lockstep_reconciles_total{result=\"applied\"} 1",
            "lockstep_reconciles_total{result=\"refused\"} 1",
            "lockstep_reconciles_total{result=\"failed\"} 0",
            "lockstep_reconcile_duration_seconds_bucket{le=\"0.25\"} 0",
            "lockstep_reconcile_duration_seconds_bucket{le=\"0.5\"} 1",
            "lockstep_reconcile_duration_seconds_bucket{le=\"5\"} 2",
            "lockstep_reconcile_duration_seconds_count 2",
            "lockstep_verification_failures_total{reason=\"UnpinnedImage\"} 2",
            "lockstep_verification_failures_total{reason=\"say \\\"hi\\\"\"} 1",
            "lockstep_drifted_objects_total{namespace=\"ops\",name=\"shop\"} 2",
            "lockstep_applied_generation{namespace=\"ops\",name=\"shop\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        metrics.forget(&sync);
        assert!(!metrics.render().contains("lockstep_applied_generation{"));
    }
}

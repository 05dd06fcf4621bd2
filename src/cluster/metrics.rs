//! The controller's Prometheus metrics, kept in a `prometheus-client` registry and rendered
//! in the OpenMetrics text format (pure; the HTTP endpoint is the CLI's).
//!
//! The exported names are the ones the README documents: `prometheus-client` registers a
//! counter under its base name and writes its samples with `_total`, so
//! `lockstep_reconciles` below is scraped as `lockstep_reconciles_total`.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::plan::SyncId;

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    const ALL: [PassResult; 4] = [
        PassResult::Applied,
        PassResult::Refused,
        PassResult::Failed,
        PassResult::Suspended,
    ];

    fn label(self) -> &'static str {
        match self {
            PassResult::Applied => "applied",
            PassResult::Refused => "refused",
            PassResult::Failed => "failed",
            PassResult::Suspended => "suspended",
        }
    }
}

impl EncodeLabelValue for PassResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: PassResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    namespace: String,
    name: String,
}

impl From<&SyncId> for SyncLabels {
    fn from(sync: &SyncId) -> Self {
        SyncLabels {
            namespace: sync.namespace.clone(),
            name: sync.name.clone(),
        }
    }
}

/// Upper bounds (seconds) of the pass-duration histogram.
const BUCKETS: [f64; 8] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The controller's metrics, shared between the passes and the HTTP endpoint. The metric
/// handles share their values with the registry that renders them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    duration: Histogram,
    verification_failures: Family<ReasonLabel, Counter>,
    drifted: Family<SyncLabels, Counter>,
    applied_generation: Family<SyncLabels, Gauge<u64, AtomicU64>>,
    conflicts: Family<SyncLabels, Gauge>,
    leader: Gauge,
}

impl Default for Metrics {
    /// The metrics of a controller without leader election.
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl Metrics {
    /// The metrics of a controller; `lockstep_leader` is exported only with leader election.
    pub fn new(leader_election: bool) -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabel, Counter>::default();
        // Every result is exported from the start, at 0.
        for result in PassResult::ALL {
            let _ = reconciles.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "lockstep_reconciles",
            "Reconcile passes, by result",
            reconciles.clone(),
        );
        let duration = Histogram::new(BUCKETS);
        registry.register_with_unit(
            "lockstep_reconcile_duration",
            "Duration of reconcile passes",
            Unit::Seconds,
            duration.clone(),
        );
        let verification_failures = Family::default();
        registry.register(
            "lockstep_verification_failures",
            "Commits refused, by reason",
            verification_failures.clone(),
        );
        let drifted = Family::default();
        registry.register(
            "lockstep_drifted_objects",
            "Objects found changed in the cluster and put back",
            drifted.clone(),
        );
        let applied_generation = Family::default();
        registry.register(
            "lockstep_applied_generation",
            "The lockfile generation applied",
            applied_generation.clone(),
        );
        let conflicts = Family::default();
        registry.register(
            "lockstep_ownership_conflicts",
            "Objects of the applied commit that another LockstepSync owns, not applied",
            conflicts.clone(),
        );
        let leader = Gauge::default();
        if leader_election {
            registry.register(
                "lockstep_leader",
                "1 while this replica holds the leader Lease and reconciles",
                leader.clone(),
            );
        }
        Metrics {
            registry,
            reconciles,
            duration,
            verification_failures,
            drifted,
            applied_generation,
            conflicts,
            leader,
        }
    }

    /// Count one pass and its duration.
    pub fn pass(&self, result: PassResult, took: Duration) {
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Count a commit refused by verification (or rollback protection), by reason.
    pub fn verification_failure(&self, reason: &str) {
        self.verification_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Count objects put back after drifting.
    pub fn drifted(&self, sync: &SyncId, objects: u64) {
        if objects > 0 {
            self.drifted.get_or_create(&sync.into()).inc_by(objects);
        }
    }

    /// Record the lockfile generation applied for a sync.
    pub fn applied_generation(&self, sync: &SyncId, generation: u64) {
        self.applied_generation
            .get_or_create(&sync.into())
            .set(generation);
    }

    /// Record how many objects of a sync's applied commit another sync owns.
    pub fn conflicts(&self, sync: &SyncId, objects: usize) {
        self.conflicts
            .get_or_create(&sync.into())
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// Record whether this replica holds the leader Lease (with leader election on).
    pub fn leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Forget a deleted sync's series.
    pub fn forget(&self, sync: &SyncId) {
        let labels = sync.into();
        self.applied_generation.remove(&labels);
        self.conflicts.remove(&labels);
        self.drifted.remove(&labels);
    }

    /// The OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
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
        metrics.conflicts(&sync, 3);
        let text = metrics.render();
        for line in [
            "# TYPE lockstep_reconciles counter",
            "lockstep_reconciles_total{result=\"applied\"} 1",
            "lockstep_reconciles_total{result=\"refused\"} 1",
            "lockstep_reconciles_total{result=\"failed\"} 0",
            "lockstep_reconciles_total{result=\"suspended\"} 0",
            "# TYPE lockstep_reconcile_duration_seconds histogram",
            "lockstep_reconcile_duration_seconds_bucket{le=\"0.25\"} 0",
            "lockstep_reconcile_duration_seconds_bucket{le=\"0.5\"} 1",
            "lockstep_reconcile_duration_seconds_bucket{le=\"5.0\"} 2",
            "lockstep_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "lockstep_reconcile_duration_seconds_count 2",
            "lockstep_reconcile_duration_seconds_sum 3.3",
            "lockstep_verification_failures_total{reason=\"UnpinnedImage\"} 2",
            "lockstep_verification_failures_total{reason=\"say \\\"hi\\\"\"} 1",
            "lockstep_drifted_objects_total{namespace=\"ops\",name=\"shop\"} 2",
            "lockstep_applied_generation{namespace=\"ops\",name=\"shop\"} 7",
            "lockstep_ownership_conflicts{namespace=\"ops\",name=\"shop\"} 3",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("lockstep_leader"), "{text}");
        metrics.forget(&sync);
        let text = metrics.render();
        for series in [
            "lockstep_applied_generation{",
            "lockstep_ownership_conflicts{",
            "lockstep_drifted_objects_total{",
        ] {
            assert!(!text.contains(series), "{series} kept in\n{text}");
        }
    }

    #[test]
    fn the_leader_gauge_is_exported_only_with_leader_election() {
        let metrics = Metrics::new(true);
        assert!(metrics.render().lines().any(|l| l == "lockstep_leader 0"));
        metrics.leader(true);
        assert!(metrics.render().lines().any(|l| l == "lockstep_leader 1"));
        metrics.leader(false);
        assert!(metrics.render().lines().any(|l| l == "lockstep_leader 0"));
    }
}

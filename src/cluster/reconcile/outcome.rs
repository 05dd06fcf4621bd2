//! How a pass ends — applied, refused (naming the step and why) or suspended — and the
//! condition reasons of each kind of failure.

use crate::check::Finding;
use crate::cluster::apply::{Conflict, PruneReport};
use crate::cluster::crd::RecordedSigner;
use crate::cluster::health::HealthSummary;
use crate::cluster::kube_error::{describe, is_forbidden};
use crate::cluster::plan::{LockIdentity, PlanError};
use crate::model::ObjectRef;
use crate::verify::VerifyError;

/// Where a pass stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedStep {
    /// The spec is invalid (a ref naming two revisions, say).
    Spec,
    /// The trusted signers could not be read.
    Trust,
    /// Fetching the commit failed.
    Fetch,
    /// The commit was fetched but its files could not be read.
    Read,
    /// Signatures, lockfile, binding or images failed verification.
    Verify,
    /// The lockfile is older than the applied one.
    Rollback,
    /// The verified manifests cannot be planned (an unknown kind, a duplicate).
    Plan,
    /// The API server refused or failed an apply or a prune.
    Apply,
}

/// A pass that applied and pruned nothing new (or, at [`FailedStep::Apply`], stopped midway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub step: FailedStep,
    /// The condition reason (CamelCase).
    pub reason: &'static str,
    /// What failed, naming the file, object, container or key.
    pub message: String,
    /// The commit fetched, when fetching got that far.
    pub commit: Option<String>,
    /// Retry soon (true) or at the interval (false).
    pub transient: bool,
    /// At the apply step: the verified lockfile and what the plan would have applied (kept
    /// in the inventory, since some of it may now be in the cluster).
    pub verified: Option<(LockIdentity, Vec<String>)>,
    pub touched: Vec<ObjectRef>,
    /// The applied inventory's health, re-judged in this pass (`None` when nothing is applied
    /// yet, or it could not be read).
    pub health: Option<HealthSummary>,
}

/// A pass that applied a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedPass {
    pub commit: String,
    pub lock: LockIdentity,
    /// [`ApplyPlan::desired_sha256`](crate::cluster::plan::ApplyPlan::desired_sha256).
    pub desired_sha256: String,
    pub signers: Vec<String>,
    /// The keys that approved the lockfile, with the principals that admitted each.
    pub approvals: Vec<RecordedSigner>,
    /// The threshold of approvals it met.
    pub threshold: u32,
    /// Applied lockfiles that no longer hold rollback protection: the keys that approved
    /// them were removed from the trust file.
    pub released: Vec<LockIdentity>,
    /// What this sync now answers for: the applied objects, and the Namespaces and CRDs the
    /// prune kept (a later pass deletes them once safe).
    pub inventory: Vec<ObjectRef>,
    /// Objects of the commit another sync owns: not applied, not in the inventory.
    pub conflicts: Vec<Conflict>,
    pub created: usize,
    pub updated: usize,
    pub drifted: Vec<ObjectRef>,
    pub unchanged: usize,
    pub pruned: PruneReport,
    pub health: HealthSummary,
}

/// How a pass ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassOutcome {
    Suspended,
    Refused(Refusal),
    Applied(Box<AppliedPass>),
}

impl Refusal {
    /// A stalled refusal (retried at the interval), before any commit was fetched.
    pub(super) fn new(step: FailedStep, reason: &'static str, message: String) -> Refusal {
        Refusal {
            step,
            reason,
            message,
            commit: None,
            transient: false,
            verified: None,
            touched: Vec::new(),
            health: None,
        }
    }

    /// The same refusal, retried soon when `transient`.
    pub(super) fn transient(mut self, transient: bool) -> Refusal {
        self.transient = transient;
        self
    }

    /// A refusal from the API server: transient unless it refused the request itself; one
    /// for want of rights (401, 403) is `Forbidden`, which a human must fix.
    pub(super) fn of_kube(step: FailedStep, what: String, error: &kube::Error) -> Refusal {
        if is_forbidden(error) {
            return Refusal::new(
                step,
                "Forbidden",
                format!(
                    "{what}: {} — the controller's ServiceAccount lacks this right (see deploy/rbac.yaml)",
                    describe(error)
                ),
            );
        }
        let transient = match error {
            kube::Error::Api(status) => status.code >= 500 || status.code == 429,
            _ => true,
        };
        Refusal::new(
            step,
            "ClusterUnavailable",
            format!("{what}: {}", describe(error)),
        )
        .transient(transient)
    }
}

/// The condition reason for a verification failure: which check failed.
pub fn verify_reason(error: &VerifyError) -> &'static str {
    match error {
        VerifyError::NoLockfile => "LockfileMissing",
        VerifyError::Signatures(_) => "SignaturesRejected",
        VerifyError::Lockfile(_) => "LockfileInvalid",
        VerifyError::Expired { .. } => "LockfileExpired",
        VerifyError::WrongEnvironment { .. } => "EnvironmentMismatch",
        VerifyError::Scan(_) => "ManifestsInvalid",
        VerifyError::UnscannedImages(_) => "UnscannedImages",
        VerifyError::Renders(_) => "RenderMismatch",
        VerifyError::Provenance(_) => "ProvenanceUnverified",
        VerifyError::Findings(findings) => {
            if findings
                .iter()
                .any(|f| matches!(f, Finding::Unpinned { .. }))
            {
                "UnpinnedImage"
            } else if findings
                .iter()
                .any(|f| matches!(f, Finding::BindingMismatch { .. }))
            {
                "BindingMismatch"
            } else {
                "LockfileMismatch"
            }
        }
    }
}

/// The step and condition reason for a plan failure.
pub fn plan_reason(error: &PlanError) -> (FailedStep, &'static str) {
    match error {
        PlanError::Unpinned { .. } => (FailedStep::Verify, "UnpinnedImage"),
        PlanError::NotInLock { .. } => (FailedStep::Verify, "ImageNotInLock"),
        PlanError::Environment { .. } => (FailedStep::Verify, "EnvironmentMismatch"),
        PlanError::Mirror(_) => (FailedStep::Verify, "NotMirrored"),
        PlanError::UnknownKind { .. } => (FailedStep::Plan, "UnknownKind"),
        PlanError::NoName { .. } | PlanError::BadObject { .. } | PlanError::Duplicate { .. } => {
            (FailedStep::Plan, "InvalidManifests")
        }
    }
}

/// A commit as named in messages.
pub(super) fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

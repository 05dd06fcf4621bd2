//! One pass, as named stages read top-down: spec → source → verify → gate → plan →
//! apply/prune, up to the [`PassOutcome`] (the status is written by the caller). Any stage
//! before the apply that refuses applies and prunes nothing. Writes to the cluster only
//! through [`Cluster`](crate::cluster::apply::Cluster).

use std::collections::{BTreeMap, BTreeSet};

use super::Context;
use super::driver::sync_id;
use super::images::{check_images_exist, pull_locations};
use super::outcome::{
    AppliedPass, FailedStep, PassOutcome, Refusal, plan_reason, short, verify_reason,
};
use super::source::{Fetched, fetch};
use super::spec::{Inputs, read_inputs};
use crate::cluster::apply::{ApplyError, ApplyReport, Baseline, Change, Discovered, PruneReport};
use crate::cluster::crd::{LockstepSync, LockstepSyncStatus, RecordedSigner};
use crate::cluster::health::HealthSummary;
use crate::cluster::kube_error::describe;
use crate::cluster::plan::crd_name;
use crate::cluster::plan::{ApplyPlan, LockIdentity, PlanSettings, SyncId, VerifiedObjects};
use crate::cluster::rollback::{self, RollbackFloor, applied_lock, check_rollback};
use crate::exists::Probe;
use crate::files::SourceFiles;
use crate::mirror::MirrorTarget;
use crate::model::{ImageRef, ObjectRef};
use crate::promotion::PromotionPolicy;
use crate::resolve::Resolved;
use crate::signing::{self, AllowedSigners};
use crate::verify::{TrustPolicy, check_render_inputs, verify_dir};

/// One pass, up to the outcome.
pub(super) async fn pass(sync: &LockstepSync, ctx: &Context) -> PassOutcome {
    if sync.spec.suspend {
        return PassOutcome::Suspended;
    }
    match stages(sync, ctx).await {
        Ok(applied) => PassOutcome::Applied(Box::new(applied)),
        Err(mut refusal) => {
            refusal.health = applied_health(sync, ctx).await;
            PassOutcome::Refused(refusal)
        }
    }
}

/// The health of what the last applying pass left, read now: a refused pass says how the
/// applied commit is doing too (`wait` for that commit would otherwise never see it settle).
async fn applied_health(sync: &LockstepSync, ctx: &Context) -> Option<HealthSummary> {
    let status = sync.status.as_ref()?;
    status.applied_commit.as_ref()?;
    let inventory: Vec<ObjectRef> = status.inventory.iter().map(ObjectRef::from).collect();
    match ctx.cluster.health(&inventory).await {
        Ok(health) => Some(health),
        Err(e) => {
            tracing::warn!(error = %describe(&e), "cannot re-judge the applied objects' health");
            None
        }
    }
}

/// The stages; every refusal after the fetch names the commit.
async fn stages(sync: &LockstepSync, ctx: &Context) -> Result<AppliedPass, Refusal> {
    let id = sync_id(sync);
    let status = sync.status.clone().unwrap_or_default();
    let Inputs {
        revision,
        mirror,
        trust,
        promotion_trust,
        provenance,
        credentials,
    } = read_inputs(&ctx.client, sync).await?;
    let Fetched {
        files,
        commit,
        cache,
    } = fetch(ctx, &id, &sync.spec, revision, credentials).await?;
    let at_commit = |mut refusal: Refusal| {
        refusal.commit = Some(commit.clone());
        refusal
    };
    let verified = verify(
        ctx,
        sync,
        (&trust, promotion_trust.as_ref()),
        provenance.as_ref(),
        mirror.as_ref(),
        &files,
        (&cache, &commit),
    )
    .map_err(at_commit)?;
    let released = gate(ctx, sync, &status, &trust, &verified, &commit)
        .await
        .map_err(at_commit)?;
    let planned = plan(ctx, sync, &id, verified.objects, &commit)
        .await
        .map_err(at_commit)?;
    let (report, pruned) = apply(ctx, sync, &id, &status, &planned)
        .await
        .map_err(at_commit)?;
    let health = HealthSummary::of(
        report
            .objects
            .iter()
            .map(|o| (o.key.clone(), o.health.clone())),
    );
    let conflicted: BTreeSet<&ObjectRef> = report.conflicts.iter().map(|c| &c.object).collect();
    // Another sync's objects are not this sync's to prune later; kept Namespaces and CRDs
    // are, once they are safe to delete.
    let mut inventory: Vec<ObjectRef> = planned
        .plan
        .inventory()
        .into_iter()
        .filter(|o| !conflicted.contains(o))
        .collect();
    if !pruned.dry_run {
        inventory.extend(pruned.still_ours().cloned());
    }
    Ok(AppliedPass {
        commit,
        inventory,
        conflicts: report.conflicts.clone(),
        signers: planned.plan.signers().to_vec(),
        approvals: planned.approvals,
        threshold: sync.spec.threshold,
        released,
        lock: planned.plan.lock().clone(),
        desired_sha256: planned.plan.desired_sha256(),
        created: report.with(Change::Created).count(),
        updated: report.with(Change::Updated).count(),
        drifted: report.with(Change::Drifted).cloned().collect(),
        unchanged: report.with(Change::Unchanged).count(),
        pruned,
        health,
    })
}

/// A verified commit's objects, and (with `spec.checkImages`) what to ask the registries.
struct Verified {
    objects: VerifiedObjects,
    probes: Option<(BTreeMap<ImageRef, Resolved>, Vec<Probe>)>,
}

/// Verify the commit with the same code as `lockstep verify`, trusting `trust` (from the
/// cluster), and read its objects (from `mirror` when the spec names one).
#[expect(
    clippy::result_large_err,
    reason = "every stage refuses with a Refusal; one per pass, never in a loop"
)]
fn verify(
    ctx: &Context,
    sync: &LockstepSync,
    (trust, promotion_trust): (&AllowedSigners, Option<&AllowedSigners>),
    provenance: Option<&crate::provenance::ProvenanceRule>,
    mirror: Option<&MirrorTarget>,
    files: &SourceFiles,
    (cache, commit): (&std::path::Path, &str),
) -> Result<Verified, Refusal> {
    let spec = &sync.spec;
    let policy = TrustPolicy {
        signers: trust,
        at: (ctx.clock)(),
        threshold: spec.threshold as usize,
        environment: spec.environment.as_deref(),
        strict: spec.strict,
    };
    let verified = verify_dir(files, &policy).map_err(|e| {
        Refusal::new(
            FailedStep::Verify,
            verify_reason(&e),
            format!("commit {}: {}", short(commit), describe(&e)),
        )
    })?;
    // The rendered outputs are applied as signed; their sources in the same commit must
    // still hash as recorded (hashes only; nothing is rendered in the cluster).
    let inputs = crate::hydrate::CacheInputs {
        cache,
        commit,
        path: &spec.path,
    };
    check_render_inputs(&verified, &inputs).map_err(|e| {
        Refusal::new(
            FailedStep::Verify,
            verify_reason(&e),
            format!("commit {}: {}", short(commit), describe(&e)),
        )
    })?;
    if let Some(rule) = provenance {
        let policy = crate::provenance::Policy {
            rules: vec![rule.clone()],
        };
        crate::verify::check_recorded_signatures(&policy, verified.lockfile()).map_err(|e| {
            Refusal::new(
                FailedStep::Verify,
                verify_reason(&e),
                format!("commit {}: {}", short(commit), describe(&e)),
            )
        })?;
    }
    if let (Some(required), Some(signers)) = (&spec.promotion, promotion_trust) {
        let policy = PromotionPolicy {
            from: &required.from,
            signers,
            threshold: required.threshold as usize,
        };
        let source = crate::source::promotion::confirm(cache, commit, verified.lockfile(), &policy)
            .map_err(|e| {
                Refusal::new(
                    FailedStep::Verify,
                    "PromotionUnverified",
                    format!(
                        "commit {}: spec.promotion.from {}: {}",
                        short(commit),
                        required.from,
                        crate::error_chain::one_line(&e)
                    ),
                )
            })?;
        tracing::info!(commit = %short(commit), source = %short(&source.commit), from = %required.from, "the promotion's source lockfile verified");
    }
    for notice in &verified.scan().notices {
        tracing::warn!(commit = %short(commit), "{notice}");
    }
    let parsed = match mirror {
        Some(mirror) => VerifiedObjects::parse_from_mirror(&verified, mirror),
        None => VerifiedObjects::parse(&verified),
    };
    let objects = parsed.map_err(|e| {
        let (step, reason) = plan_reason(&e);
        Refusal::new(step, reason, format!("commit {}: {e}", short(commit)))
    })?;
    let probes = spec
        .check_images
        .then(|| pull_locations(verified.lockfile(), mirror));
    Ok(Verified { objects, probes })
}

/// Hold the verified lockfile to what was applied before (rollback protection), then, for
/// a rollout with `spec.checkImages`, to the registries. Returns the applied lockfiles that
/// no longer hold rollback protection.
async fn gate(
    ctx: &Context,
    sync: &LockstepSync,
    status: &LockstepSyncStatus,
    trust: &AllowedSigners,
    verified: &Verified,
    commit: &str,
) -> Result<Vec<LockIdentity>, Refusal> {
    let lock = verified.objects.lock();
    let RollbackFloor { floor, released } =
        rollback::floor(status, sync.spec.threshold, |signers, needed| {
            signing::approvals_stand(
                signers
                    .iter()
                    .map(|s| (s.key.as_str(), s.principals.as_slice())),
                trust,
                needed,
            )
        });
    check_rollback(floor.as_ref(), lock).map_err(|e| {
        Refusal::new(
            FailedStep::Rollback,
            "RollbackRefused",
            format!("commit {}: {e}", short(commit)),
        )
    })?;
    // The registry gates a rollout, not drift correction: the applied lockfile was checked
    // when it rolled out, and a flaky registry must not stop putting it back.
    if let Some((known, probes)) = &verified.probes
        && applied_lock(status).as_ref() != Some(lock)
    {
        check_images_exist(&ctx.registry, known, probes)
            .await
            .map_err(|mut refusal| {
                refusal.message = format!("commit {}: {}", short(commit), refusal.message);
                refusal
            })?;
    }
    Ok(released)
}

/// What the plan stage hands to the apply.
struct Planned {
    plan: ApplyPlan,
    discovered: Discovered,
    approvals: Vec<RecordedSigner>,
}

/// Ask the cluster how it serves the objects' kinds, and plan the apply.
async fn plan(
    ctx: &Context,
    sync: &LockstepSync,
    id: &SyncId,
    objects: VerifiedObjects,
    commit: &str,
) -> Result<Planned, Refusal> {
    let discovered = ctx
        .cluster
        .discover(&objects.kinds_to_discover())
        .await
        .map_err(|e| {
            Refusal::new(FailedStep::Apply, "ClusterUnavailable", describe(&e))
                .transient(e.is_transient())
        })?;
    let settings = PlanSettings {
        sync: id.clone(),
        default_namespace: sync
            .spec
            .target_namespace
            .clone()
            .unwrap_or_else(|| id.namespace.clone()),
        environment: sync.spec.environment.clone(),
    };
    let lock = objects.lock().clone();
    let verified_signers = objects.signers().to_vec();
    let approvals = objects.approvals().to_vec();
    let plan = objects.plan(&settings, &discovered.scopes()).map_err(|e| {
        let (step, reason) = plan_reason(&e);
        let mut refusal = Refusal::new(step, reason, format!("commit {}: {e}", short(commit)));
        if step == FailedStep::Plan {
            // Verified, but not applicable (a kind the cluster does not serve, say).
            refusal.verified = Some((lock, verified_signers));
        }
        refusal
    })?;
    Ok(Planned {
        plan,
        discovered,
        approvals,
    })
}

/// Whether `plan` asks for what the last applying pass applied: then a change found in the
/// cluster is drift. Judged from the desired objects' digest, so a spec change that leaves
/// them alone (resuming from `suspend`, a new `interval`) still sees drift as drift; a status
/// written before the digest was recorded falls back to the lockfile and spec generation.
fn same_desired_state(sync: &LockstepSync, status: &LockstepSyncStatus, plan: &ApplyPlan) -> bool {
    if let Some(applied) = &status.applied_desired_sha256 {
        return *applied == plan.desired_sha256();
    }
    let applied_condition_current = status.conditions.iter().any(|c| {
        c.type_ == "Applied"
            && c.status == "True"
            && c.observed_generation == sync.metadata.generation
    });
    applied_condition_current && applied_lock(status).as_ref() == Some(plan.lock())
}

/// Apply the plan, then prune (with `spec.prune`) what the previous inventory held and the
/// plan does not: prune runs only after every apply succeeded.
async fn apply(
    ctx: &Context,
    sync: &LockstepSync,
    id: &SyncId,
    status: &LockstepSyncStatus,
    planned: &Planned,
) -> Result<(ApplyReport, PruneReport), Refusal> {
    let Planned {
        plan, discovered, ..
    } = planned;
    let previous: Vec<ObjectRef> = status.inventory.iter().map(ObjectRef::from).collect();
    let baseline = Baseline {
        inventory: previous.iter().cloned().collect(),
        same_desired_state: same_desired_state(sync, status, plan),
    };
    let apply_failed = |e: ApplyError| {
        // A refusal that will not change by itself (422 Invalid, 403) is named apart, so
        // that `lockstep wait` can fail at once instead of waiting for its timeout.
        let transient = e.is_transient();
        let reason = if transient {
            "ApplyFailed"
        } else {
            "ApplyRejected"
        };
        let mut refusal =
            Refusal::new(FailedStep::Apply, reason, describe(&e)).transient(transient);
        refusal.verified = Some((plan.lock().clone(), plan.signers().to_vec()));
        refusal.touched = plan.inventory();
        refusal
    };
    let report = ctx
        .cluster
        .apply(plan, discovered, &baseline)
        .await
        .map_err(apply_failed)?;
    let crd_of = |kind: &_| {
        let (resource, _) = discovered.get(kind)?;
        crd_name(kind, &resource.plural)
    };
    let set = plan.prune_set(&previous, crd_of);
    let dry_run = !sync.spec.prune;
    let pruned = if set.delete.is_empty() && set.kept.is_empty() {
        PruneReport {
            dry_run,
            ..PruneReport::default()
        }
    } else {
        ctx.cluster
            .prune(id, &set, dry_run)
            .await
            .map_err(apply_failed)?
    };
    log_prune(&pruned);
    Ok((report, pruned))
}

/// One structured line per pass that had something to prune: what was deleted, what was
/// kept and why.
fn log_prune(pruned: &PruneReport) {
    if pruned.is_empty() {
        return;
    }
    let deleted: Vec<String> = pruned.deleted.iter().map(ToString::to_string).collect();
    let kept: Vec<String> = pruned
        .kept
        .iter()
        .map(|k| format!("{} ({}: {})", k.object, k.reason.code(), k.reason))
        .collect();
    tracing::info!(
        dry_run = pruned.dry_run,
        deleted = pruned.deleted.len(),
        absent = pruned.absent.len(),
        kept = pruned.kept.len(),
        deleted_objects = %deleted.join(", "),
        kept_objects = %kept.join("; "),
        "prune"
    );
}

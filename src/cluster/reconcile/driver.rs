//! The kube-runtime side: [`reconcile`] (a pass when one is due, then its status, Events and
//! metrics), [`error_policy`] (backoff) and [`run`] (the `Controller` over the syncs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use super::Context;
use super::events::publish_events;
use super::outcome::{FailedStep, PassOutcome};
use super::pass::pass;
use super::schedule::Trigger;
use super::status::{next_status, write_status};
use crate::cluster::crd::LockstepSync;
use crate::cluster::kube_error::describe;
use crate::cluster::metrics::PassResult;
use crate::cluster::plan::SyncId;

/// How soon a rollout still in progress is looked at again.
const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);

/// How soon a pass refused for its trust, credentials or rights (or a signature the trust
/// does not accept) is tried again: a fixed trust ConfigMap/Secret is picked up within this,
/// not at the interval. Not a watch: watching ConfigMaps and Secrets takes `list`/`watch`
/// on all of them, which deploy/rbac.yaml deliberately does not grant.
const TRUST_RETRY: Duration = Duration::from_secs(15);

/// The refusals a change to the trust, credentials or RBAC can lift.
const FIXED_BY_TRUST: [&str; 5] = [
    "TrustNotFound",
    "TrustInvalid",
    "CredentialsNotFound",
    "Forbidden",
    "SignaturesRejected",
];

/// A pass that must be retried soon (the API server or Git was unreachable). Stalled
/// failures are not errors: they are written to the status and retried at the interval.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ReconcileError {
    pub reason: &'static str,
    pub message: String,
}

/// The sync's identity.
pub fn sync_id(sync: &LockstepSync) -> SyncId {
    SyncId {
        namespace: sync.namespace().unwrap_or_default(),
        name: sync.name_any(),
    }
}

/// Reconcile one `LockstepSync`: a pass when one is due, then its status, Events and
/// metrics.
#[tracing::instrument(skip_all, fields(sync = %sync_id(&sync)))]
pub async fn reconcile(
    sync: Arc<LockstepSync>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let id = sync_id(&sync);
    let interval: Duration = sync.spec.interval.into();
    let interval = interval.max(Duration::from_secs(1));
    let trigger = Trigger::of(&sync);
    if let Some(wait) = ctx.schedule.not_due_for(&id, &trigger) {
        return Ok(Action::requeue(wait));
    }
    let started = Instant::now();
    let outcome = pass(&sync, &ctx).await;
    let now = (ctx.clock)();
    let previous = sync.status.clone().unwrap_or_default();
    let status = next_status(&previous, sync.metadata.generation, &outcome, now);
    let status_written = write_status(&ctx.client, &sync, &status).await;
    publish_events(&ctx, &sync, &outcome).await;

    let (result, requeue) = count(&ctx, &id, &outcome, interval);
    ctx.metrics.pass(result, started.elapsed());
    if let Some(error) = transient_error(&outcome, status_written) {
        tracing::warn!(reason = error.reason, message = %error.message, "pass failed; retrying with backoff");
        // error_policy schedules the retry (and counts the failures in a row).
        ctx.schedule.failed(id, trigger);
        return Err(error);
    }
    tracing::info!(result = ?result, requeue_secs = requeue.as_secs(), "pass done");
    ctx.schedule.passed(id, trigger, requeue);
    Ok(Action::requeue(requeue))
}

/// Count the outcome in the metrics; how it ended, and when the next pass is due.
fn count(
    ctx: &Context,
    id: &SyncId,
    outcome: &PassOutcome,
    interval: Duration,
) -> (PassResult, Duration) {
    match outcome {
        PassOutcome::Suspended => (PassResult::Suspended, interval),
        PassOutcome::Applied(pass) => {
            ctx.metrics.drifted(id, pass.drifted.len() as u64);
            ctx.metrics.applied_generation(id, pass.lock.generation);
            ctx.metrics.conflicts(id, pass.conflicts.len());
            let requeue = if pass.health.healthy() {
                interval
            } else {
                interval.min(PROGRESS_REQUEUE)
            };
            (PassResult::Applied, requeue)
        }
        PassOutcome::Refused(refusal) => {
            if matches!(refusal.step, FailedStep::Verify | FailedStep::Rollback) {
                ctx.metrics.verification_failure(refusal.reason);
            }
            if refusal.transient {
                (PassResult::Failed, interval)
            } else if FIXED_BY_TRUST.contains(&refusal.reason) {
                (PassResult::Refused, interval.min(TRUST_RETRY))
            } else {
                (PassResult::Refused, interval)
            }
        }
    }
}

/// The error to retry with backoff: a transient refusal, or a status that was not written.
fn transient_error(
    outcome: &PassOutcome,
    status_written: Result<(), kube::Error>,
) -> Option<ReconcileError> {
    match (outcome, status_written) {
        (PassOutcome::Refused(r), _) if r.transient => Some(ReconcileError {
            reason: r.reason,
            message: r.message.clone(),
        }),
        (_, Err(e)) => Some(ReconcileError {
            reason: "StatusNotWritten",
            message: describe(&e),
        }),
        _ => None,
    }
}

/// Retry a transient failure with exponential backoff, capped at the interval.
pub fn error_policy(sync: Arc<LockstepSync>, _error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let interval: Duration = sync.spec.interval.into();
    Action::requeue(ctx.schedule.backoff(sync_id(&sync), &sync, interval))
}

/// Run the controller over the `LockstepSync`s of `namespace` (all namespaces when `None`)
/// until a termination signal.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let api: Api<LockstepSync> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let controller = Controller::new(api, watcher::Config::default());
    // The sweep runs beside the controller and stops with it (also when this future is
    // dropped, as on losing the Lease).
    let sweep = super::sweep::every(controller.store(), ctx.clone(), namespace);
    let reconciling = controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %describe(&e), "controller event");
            }
        });
    tokio::select! {
        () = reconciling => {}
        never = sweep => match never {},
    }
}

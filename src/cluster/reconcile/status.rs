//! How an outcome becomes the resource's status (pure), and writing it.

use std::collections::BTreeSet;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use super::outcome::{AppliedPass, FailedStep, PassOutcome, Refusal, short};
use crate::cluster::apply::FIELD_MANAGER;
use crate::cluster::apply::PruneReport;
use crate::cluster::crd::{
    AppliedRecord, Condition, ConflictEntry, InventoryEntry, KeptEntry, LockstepSync,
    LockstepSyncStatus, PruneRecord,
};
use crate::cluster::health::HealthSummary;
use crate::cluster::plan::LockIdentity;
use crate::cluster::rollback;
use crate::model::ObjectRef;

/// The condition types, in the order they are written.
pub const CONDITION_TYPES: [&str; 4] = ["Ready", "Verified", "Applied", "Healthy"];

/// The status after a pass: on a refusal the applied commit, generation, signers and
/// inventory stay as they were; conditions change only when their status, reason or message
/// does (`lastTransitionTime` moves only when the status does).
pub fn next_status(
    previous: &LockstepSyncStatus,
    generation: Option<i64>,
    outcome: &PassOutcome,
    now: Timestamp,
) -> LockstepSyncStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let mut conditions = Conditions {
        list: previous.conditions.clone(),
        generation,
        now,
    };
    match outcome {
        PassOutcome::Suspended => conditions.set(
            "Ready",
            "Unknown",
            "Suspended",
            "spec.suspend is true: nothing is fetched or applied".into(),
        ),
        PassOutcome::Refused(refusal) => refused(&mut status, &mut conditions, refusal),
        PassOutcome::Applied(pass) => applied(&mut status, &mut conditions, pass, now),
    }
    status.conditions = conditions.in_order();
    status
}

/// The conditions being written, all at one time and for one generation.
struct Conditions {
    list: Vec<Condition>,
    generation: Option<i64>,
    now: Timestamp,
}

impl Conditions {
    /// Replace the condition of the same type, keeping its transition time when its status
    /// is unchanged.
    fn set(&mut self, type_: &str, value: &str, reason: &str, message: String) {
        let mut new = Condition {
            type_: type_.to_owned(),
            status: value.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: self.now.to_string(),
            observed_generation: self.generation,
        };
        if let Some(old) = self.list.iter_mut().find(|c| c.type_ == new.type_) {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        } else {
            self.list.push(new);
        }
    }

    fn in_order(mut self) -> Vec<Condition> {
        self.list.sort_by_key(|c| {
            CONDITION_TYPES
                .iter()
                .position(|t| *t == c.type_)
                .unwrap_or(CONDITION_TYPES.len())
        });
        self.list
    }
}

/// A refusal: the applied state stays; what may have been applied joins the inventory.
fn refused(status: &mut LockstepSyncStatus, conditions: &mut Conditions, refusal: &Refusal) {
    if let Some(commit) = &refusal.commit {
        status.observed_commit = Some(commit.clone());
    }
    status.last_error = Some(refusal.message.clone());
    conditions.set("Ready", "False", refusal.reason, refusal.message.clone());
    match (&refusal.step, &refusal.verified) {
        (FailedStep::Plan | FailedStep::Apply, Some((lock, signers))) => {
            conditions.set(
                "Verified",
                "True",
                "Verified",
                verified_message(refusal.commit.as_deref(), lock, signers),
            );
            conditions.set("Applied", "False", refusal.reason, refusal.message.clone());
        }
        _ => conditions.set("Verified", "False", refusal.reason, refusal.message.clone()),
    }
    if let Some(health) = &refusal.health {
        healthy_condition(conditions, health);
    }
    if refusal.step == FailedStep::Apply {
        let mut inventory: BTreeSet<InventoryEntry> = status.inventory.iter().cloned().collect();
        inventory.extend(refusal.touched.iter().map(InventoryEntry::from));
        status.inventory = inventory.into_iter().collect();
    }
}

/// An applied commit: it becomes the applied state, and its health decides `Ready`.
fn applied(
    status: &mut LockstepSyncStatus,
    conditions: &mut Conditions,
    pass: &AppliedPass,
    now: Timestamp,
) {
    status.observed_commit = Some(pass.commit.clone());
    status.applied_commit = Some(pass.commit.clone());
    status.applied_generation = Some(pass.lock.generation);
    let sha256 = pass.lock.sha256.to_string();
    if status.applied_lockfile_sha256.as_deref() != Some(sha256.as_str())
        || status.applied_at.is_none()
    {
        status.applied_at = Some(now.to_string());
    }
    status.applied_lockfile_sha256 = Some(sha256);
    status.applied_desired_sha256 = Some(pass.desired_sha256.clone());
    status.signers = pass.signers.clone();
    status.applied_history = rollback::next_history(
        &status.applied_history,
        &pass.released,
        AppliedRecord {
            generation: pass.lock.generation,
            lockfile_sha256: pass.lock.sha256.to_string(),
            commit: pass.commit.clone(),
            signers: pass.approvals.clone(),
            threshold: pass.threshold,
        },
    );
    status.inventory = pass.inventory.iter().map(InventoryEntry::from).collect();
    if !pass.pruned.is_empty() {
        status.last_prune = Some(prune_record(&pass.pruned, &pass.commit, now));
    }
    status.conflicts = pass
        .conflicts
        .iter()
        .take(PruneRecord::LISTED)
        .map(|c| ConflictEntry {
            object: InventoryEntry::from(&c.object),
            owner: c.owner.clone(),
        })
        .collect();
    status.drift_count += pass.drifted.len() as u64;
    status.last_error = None;
    let mut verified = verified_message(Some(&pass.commit), &pass.lock, &pass.signers);
    if !pass.released.is_empty() {
        verified.push_str(&format!(
            "; {} no longer held rollback protection (the keys that approved {} were removed from the trust file)",
            generations(&pass.released),
            if pass.released.len() == 1 { "it" } else { "them" }
        ));
    }
    conditions.set("Verified", "True", "Verified", verified);
    conditions.set("Applied", "True", "Applied", applied_message(pass));
    health_conditions(conditions, pass);
    if !pass.conflicts.is_empty() {
        conditions.set(
            "Ready",
            "False",
            "OwnershipConflict",
            conflict_message(pass),
        );
    }
}

/// The status record of a prune, its lists bounded.
fn prune_record(pruned: &PruneReport, commit: &str, now: Timestamp) -> PruneRecord {
    PruneRecord {
        commit: commit.to_owned(),
        time: now.to_string(),
        dry_run: pruned.dry_run,
        deleted_count: pruned.deleted.len(),
        deleted: pruned
            .deleted
            .iter()
            .take(PruneRecord::LISTED)
            .map(InventoryEntry::from)
            .collect(),
        kept_count: pruned.kept.len(),
        kept: pruned
            .kept
            .iter()
            .take(PruneRecord::LISTED)
            .map(|k| KeptEntry {
                object: InventoryEntry::from(&k.object),
                reason: k.reason.code().to_owned(),
                message: k.reason.to_string(),
            })
            .collect(),
    }
}

/// What another sync owns, for `Ready` and the Event.
pub(super) fn conflict_message(pass: &AppliedPass) -> String {
    let named = list_with(
        &pass.conflicts,
        |c| format!("{} (owned by LockstepSync {})", c.object, c.owner),
        ", ",
    );
    format!(
        "commit {}: {} object(s) carry another LockstepSync's lockstep.dev/sync annotation and were not applied: {}; remove them from one of the two commits, or delete the object (or its annotation) to hand it over",
        short(&pass.commit),
        pass.conflicts.len(),
        named
    )
}

fn health_conditions(conditions: &mut Conditions, pass: &AppliedPass) {
    let health = &pass.health;
    healthy_condition(conditions, health);
    if !health.failed.is_empty() {
        conditions.set("Ready", "False", "Unhealthy", health.message());
    } else if !health.in_progress.is_empty() {
        conditions.set("Ready", "False", "Progressing", health.message());
    } else {
        conditions.set(
            "Ready",
            "True",
            "Applied",
            format!(
                "commit {} (lockfile generation {}) is applied and healthy",
                short(&pass.commit),
                pass.lock.generation
            ),
        );
    }
}

/// `Healthy`, from the applied objects' health: written by every pass that judged it.
fn healthy_condition(conditions: &mut Conditions, health: &HealthSummary) {
    if !health.failed.is_empty() {
        conditions.set("Healthy", "False", "Failed", health.message());
    } else if !health.in_progress.is_empty() {
        conditions.set("Healthy", "False", "Progressing", health.message());
    } else {
        conditions.set("Healthy", "True", "Current", health.message());
    }
}

fn verified_message(commit: Option<&str>, lock: &LockIdentity, signers: &[String]) -> String {
    let at = commit
        .map(|c| format!("commit {}: ", short(c)))
        .unwrap_or_default();
    format!(
        "{at}lockfile generation {} ({}) signed by {}",
        lock.generation,
        lock.sha256,
        signers.join(", ")
    )
}

fn generations(locks: &[LockIdentity]) -> String {
    let list: Vec<String> = locks.iter().map(|l| l.generation.to_string()).collect();
    format!(
        "applied generation{} {}",
        if list.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

pub(super) fn applied_message(pass: &AppliedPass) -> String {
    let mut message = format!(
        "commit {}: {} objects ({} created, {} updated, {} drifted and put back, {} unchanged)",
        short(&pass.commit),
        pass.inventory.len(),
        pass.created,
        pass.updated,
        pass.drifted.len(),
        pass.unchanged
    );
    let pruned = &pass.pruned;
    if !pruned.deleted.is_empty() {
        let verb = if pruned.dry_run {
            "would prune (spec.prune is false)"
        } else {
            "pruned"
        };
        message.push_str(&format!("; {verb} {}", list(&pruned.deleted)));
    }
    if !pruned.kept.is_empty() {
        let kept = list_with(
            &pruned.kept,
            |k| format!("{} ({})", k.object, k.reason),
            "; ",
        );
        message.push_str(&format!("; not pruned: {kept}"));
    }
    if !pass.conflicts.is_empty() {
        message.push_str(&format!(
            "; {} object(s) owned by another LockstepSync not applied",
            pass.conflicts.len()
        ));
    }
    message
}

pub(super) fn list(objects: &[ObjectRef]) -> String {
    list_with(objects, ToString::to_string, ", ")
}

/// The first ten of `items`, each as `name` writes it, then how many more, joined by `sep`.
fn list_with<T>(items: &[T], name: impl Fn(&T) -> String, sep: &str) -> String {
    const SHOWN: usize = 10;
    let mut names: Vec<String> = items.iter().take(SHOWN).map(name).collect();
    if items.len() > SHOWN {
        names.push(format!("and {} more", items.len() - SHOWN));
    }
    names.join(sep)
}

/// Write the status (server-side apply of the status subresource), unless it is unchanged.
pub(super) async fn write_status(
    client: &Client,
    sync: &LockstepSync,
    status: &LockstepSyncStatus,
) -> Result<(), kube::Error> {
    // `pushRequestedAt` is the webhook receiver's (its own field manager): never written
    // here, so a pass that ends after a push arrived cannot put the older value back.
    let without_push = |s: &LockstepSyncStatus| LockstepSyncStatus {
        push_requested_at: None,
        ..s.clone()
    };
    let status = &without_push(status);
    if sync.status.as_ref().map(without_push).as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<LockstepSync> =
        Api::namespaced(client.clone(), &sync.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "lockstep.dev/v1alpha1",
        "kind": "LockstepSync",
        "status": status,
    });
    api.patch_status(
        &sync.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::crd::RecordedSigner;
    use crate::cluster::health::Health;
    use crate::cluster::health::HealthSummary;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn lock(generation: u64) -> LockIdentity {
        LockIdentity {
            generation,
            sha256: crate::model::Digest::of(format!("lock {generation}").as_bytes()),
        }
    }

    fn object(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn applied(commit: &str, generation: u64, health: HealthSummary) -> PassOutcome {
        PassOutcome::Applied(Box::new(AppliedPass {
            commit: commit.into(),
            lock: lock(generation),
            desired_sha256: format!("desired-{generation}"),
            signers: vec!["ci@example.com".into()],
            approvals: vec![RecordedSigner {
                key: "SHA256:ci".into(),
                principals: vec!["ci@example.com".into()],
            }],
            threshold: 1,
            released: vec![],
            inventory: vec![object("api"), object("web")],
            conflicts: vec![],
            created: 2,
            updated: 0,
            drifted: vec![],
            unchanged: 0,
            pruned: PruneReport::default(),
            health,
        }))
    }

    fn condition<'s>(status: &'s LockstepSyncStatus, type_: &str) -> &'s Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn healthy() -> HealthSummary {
        HealthSummary::of([
            (object("api"), Health::Current),
            (object("web"), Health::Current),
        ])
    }

    #[test]
    fn an_applied_healthy_commit_is_ready() {
        let status = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1c1c1c1c1c1c1c1", 1, healthy()),
            at(100),
        );
        assert_eq!(status.applied_commit.as_deref(), Some("c1c1c1c1c1c1c1c1"));
        assert_eq!(status.applied_generation, Some(1));
        assert_eq!(status.inventory.len(), 2);
        assert_eq!(status.signers, ["ci@example.com"]);
        assert_eq!(status.applied_history.len(), 1);
        assert_eq!(status.applied_history[0].signers[0].key, "SHA256:ci");
        assert_eq!(status.applied_history[0].commit, "c1c1c1c1c1c1c1c1");
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, CONDITION_TYPES);
        for c in &status.conditions {
            assert_eq!(c.status, "True", "{c:?}");
            assert_eq!(c.observed_generation, Some(1));
        }
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn an_apply_past_released_generations_says_so_and_forgets_them() {
        let first = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1_000_000, healthy()),
            at(100),
        );
        let mut pass = applied("c2", 2, healthy());
        if let PassOutcome::Applied(pass) = &mut pass {
            pass.released = vec![lock(1_000_000)];
        }
        let status = next_status(&first, Some(1), &pass, at(200));
        assert_eq!(status.applied_generation, Some(2));
        let generations: Vec<u64> = status
            .applied_history
            .iter()
            .map(|r| r.generation)
            .collect();
        assert_eq!(generations, [2]);
        let message = &condition(&status, "Verified").message;
        assert!(
            message.contains("applied generation 1000000 no longer held rollback protection"),
            "{message}"
        );
    }

    #[test]
    fn a_refused_pass_rejudges_the_applied_commits_health() {
        // regression: a refused pass never re-judged health, so `wait` for the applied,
        // healthy commit timed out while a newer commit was being refused.
        let rolling = HealthSummary::of([(
            object("api"),
            Health::InProgress("1 of 2 replicas available".into()),
        )]);
        let applying = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, rolling),
            at(100),
        );
        let mut refusal = Refusal::new(
            FailedStep::Verify,
            "SignaturesRejected",
            "commit c2: no signature".into(),
        );
        refusal.commit = Some("c2".into());
        refusal.health = Some(healthy());
        let status = next_status(&applying, Some(1), &PassOutcome::Refused(refusal), at(200));
        let healthy = condition(&status, "Healthy");
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("True", "Current")
        );
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SignaturesRejected")
        );
        assert_eq!(status.applied_commit.as_deref(), Some("c1"));
    }

    #[test]
    fn a_refusal_keeps_the_applied_state_and_says_why() {
        let good = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let refusal = PassOutcome::Refused(Refusal {
            step: FailedStep::Verify,
            reason: "UnpinnedImage",
            message: "commit c2: app.yaml:9:18: Deployment/shop/api app: nginx:1 is not pinned"
                .into(),
            commit: Some("c2".into()),
            transient: false,
            verified: None,
            touched: vec![],
            health: None,
        });
        let status = next_status(&good, Some(1), &refusal, at(200));
        assert_eq!(status.observed_commit.as_deref(), Some("c2"));
        assert_eq!(status.applied_commit.as_deref(), Some("c1"));
        assert_eq!(status.applied_generation, Some(1));
        assert_eq!(status.inventory, good.inventory);
        let verified = condition(&status, "Verified");
        assert_eq!(verified.status, "False");
        assert_eq!(verified.reason, "UnpinnedImage");
        assert!(verified.message.contains("app.yaml:9:18"));
        assert_eq!(verified.last_transition_time, at(200).to_string());
        assert_eq!(condition(&status, "Ready").reason, "UnpinnedImage");
        // Applied and Healthy still describe what runs.
        assert_eq!(condition(&status, "Applied").status, "True");
        assert_eq!(condition(&status, "Healthy").status, "True");
        assert_eq!(
            condition(&status, "Applied").last_transition_time,
            at(100).to_string()
        );
        assert!(status.last_error.unwrap().contains("not pinned"));
    }

    #[test]
    fn transition_times_move_only_with_the_status() {
        let first = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let again = next_status(&first, Some(1), &applied("c1", 1, healthy()), at(400));
        assert_eq!(
            again, first,
            "a repeated pass changes nothing in the status"
        );
        let progressing = HealthSummary::of([(
            object("api"),
            Health::InProgress("1 of 2 replicas updated".into()),
        )]);
        let rolling = next_status(&first, Some(1), &applied("c2", 2, progressing), at(500));
        let ready = condition(&rolling, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Progressing")
        );
        assert_eq!(ready.last_transition_time, at(500).to_string());
        assert!(
            condition(&rolling, "Healthy")
                .message
                .contains("Deployment/shop/api in progress: 1 of 2 replicas updated")
        );
        assert_eq!(
            condition(&rolling, "Verified").last_transition_time,
            at(100).to_string()
        );
    }

    #[test]
    fn drift_is_counted_across_passes() {
        let mut outcome = applied("c1", 1, healthy());
        if let PassOutcome::Applied(pass) = &mut outcome {
            pass.drifted = vec![object("api")];
        }
        let once = next_status(&LockstepSyncStatus::default(), Some(1), &outcome, at(1));
        let twice = next_status(&once, Some(1), &outcome, at(2));
        assert_eq!(twice.drift_count, 2);
    }

    #[test]
    fn an_apply_failure_keeps_what_may_have_been_applied_in_the_inventory() {
        let good = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let failed = PassOutcome::Refused(Refusal {
            step: FailedStep::Apply,
            reason: "ApplyFailed",
            message: "cannot apply ConfigMap/shop/new (from new.yaml): invalid".into(),
            commit: Some("c2".into()),
            transient: false,
            verified: Some((lock(2), vec!["ci@example.com".into()])),
            touched: vec![object("api"), object("new")],
            health: None,
        });
        let status = next_status(&good, Some(1), &failed, at(200));
        let names: Vec<&str> = status.inventory.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["api", "new", "web"]);
        assert_eq!(condition(&status, "Verified").status, "True");
        assert_eq!(condition(&status, "Applied").status, "False");
        assert_eq!(condition(&status, "Applied").reason, "ApplyFailed");
        assert_eq!(status.applied_generation, Some(1));
    }

    #[test]
    fn a_verified_commit_that_cannot_be_planned_is_verified_but_not_applied() {
        let refusal = PassOutcome::Refused(Refusal {
            step: FailedStep::Plan,
            reason: "UnknownKind",
            message: "commit c1: w.yaml: Widget w: the cluster serves no example.com/v1 Widget"
                .into(),
            commit: Some("c1".into()),
            transient: false,
            verified: Some((lock(1), vec!["ci@example.com".into()])),
            touched: vec![],
            health: None,
        });
        let status = next_status(&LockstepSyncStatus::default(), Some(1), &refusal, at(1));
        assert_eq!(condition(&status, "Verified").status, "True");
        let applied = condition(&status, "Applied");
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("False", "UnknownKind")
        );
        assert!(applied.message.contains("w.yaml"));
        assert_eq!(status.applied_commit, None);
        assert!(status.inventory.is_empty());
    }

    #[test]
    fn suspended_touches_only_ready() {
        let good = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let status = next_status(&good, Some(2), &PassOutcome::Suspended, at(200));
        assert_eq!(condition(&status, "Ready").reason, "Suspended");
        assert_eq!(condition(&status, "Applied").status, "True");
        assert_eq!(status.applied_commit, good.applied_commit);
    }
}

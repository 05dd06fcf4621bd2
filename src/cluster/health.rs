//! Is an applied object healthy? kstatus-like rules over the object's own status (pure).
//!
//! Deployments, StatefulSets, DaemonSets and Jobs are judged from the counters and
//! conditions their controllers write; a `ReplicaFailure=True` condition (pods the
//! controller cannot create: Pod Security, a quota) is a failure; any object whose controller
//! has not yet observed its latest generation is in progress; a `Stalled=True` condition is a failure and
//! `Reconciling=True` is progress (the kstatus conventions for custom resources); anything
//! else is healthy as soon as it exists. The rules follow `sigs.k8s.io/cli-utils/pkg/kstatus`.

use std::fmt;

use serde_json::Value;

use crate::model::ObjectRef;

/// The verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Fully rolled out (or nothing to roll out).
    Current,
    /// Still converging, and why.
    InProgress(String),
    /// Will not converge without a change (a progress deadline, a failed Job), and why.
    Failed(String),
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Current => f.write_str("current"),
            Health::InProgress(why) => write!(f, "in progress: {why}"),
            Health::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Judge one live object (as the API server returns it, status included).
pub fn health_of(object: &Value) -> Health {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        return Health::InProgress("being deleted".into());
    }
    let generation = int(object, "/metadata/generation");
    let observed = int(object, "/status/observedGeneration");
    if let (Some(generation), Some(observed)) = (generation, observed)
        && observed < generation
    {
        return Health::InProgress(format!(
            "generation {generation} not yet observed by its controller (observed {observed})"
        ));
    }
    // The controller could not create pods (Pod Security, a quota, a missing service
    // account): no rollout counter will move until someone changes something, and the
    // counters alone would say only "0 of 1 replicas updated" until the progress deadline.
    if let Some(c) = condition(object, "ReplicaFailure")
        && c.get("status").and_then(Value::as_str) == Some("True")
    {
        return Health::Failed(format!("ReplicaFailure: {}", condition_text(c)));
    }
    match (group, kind) {
        ("apps" | "extensions", "Deployment") => deployment(object),
        ("apps", "StatefulSet") => stateful_set(object),
        ("apps" | "extensions", "DaemonSet") => daemon_set(object),
        ("batch", "Job") => job(object),
        _ => generic(object),
    }
}

fn int(object: &Value, pointer: &str) -> Option<i64> {
    object.pointer(pointer).and_then(Value::as_i64)
}

/// `status.<field>`, 0 when absent (controllers omit zero counters).
fn status_count(object: &Value, field: &str) -> i64 {
    int(object, &format!("/status/{field}")).unwrap_or(0)
}

fn condition<'v>(object: &'v Value, type_: &str) -> Option<&'v Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_)
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some(status)
}

fn condition_text(c: &Value) -> String {
    let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
    let message = c.get("message").and_then(Value::as_str).unwrap_or("");
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_owned(),
        (true, false) => message.to_owned(),
        (true, true) => "no reason given".to_owned(),
    }
}

fn generic(object: &Value) -> Health {
    if let Some(c) = condition(object, "Stalled")
        && c.get("status").and_then(Value::as_str) == Some("True")
    {
        return Health::Failed(format!("Stalled: {}", condition_text(c)));
    }
    if let Some(c) = condition(object, "Reconciling")
        && c.get("status").and_then(Value::as_str) == Some("True")
    {
        return Health::InProgress(format!("Reconciling: {}", condition_text(c)));
    }
    Health::Current
}

fn spec_replicas(object: &Value) -> i64 {
    int(object, "/spec/replicas").unwrap_or(1)
}

fn deployment(object: &Value) -> Health {
    if let Some(c) = condition(object, "Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        return Health::Failed(format!("progress deadline exceeded: {}", condition_text(c)));
    }
    let want = spec_replicas(object);
    let replicas = status_count(object, "replicas");
    let updated = status_count(object, "updatedReplicas");
    let available = status_count(object, "availableReplicas");
    if replicas > want {
        return Health::InProgress(format!(
            "{} old replica(s) pending termination",
            replicas - want
        ));
    }
    if updated < want {
        return Health::InProgress(format!("{updated} of {want} replicas updated"));
    }
    if available < want {
        return Health::InProgress(format!("{available} of {want} replicas available"));
    }
    let progressed = condition(object, "Progressing")
        .and_then(|c| c.get("reason"))
        .and_then(Value::as_str)
        == Some("NewReplicaSetAvailable");
    if want > 0 && !progressed {
        return Health::InProgress("the new ReplicaSet is not yet available".into());
    }
    if want > 0 && !condition_is(object, "Available", "True") {
        return Health::InProgress("the Deployment is not Available".into());
    }
    Health::Current
}

fn stateful_set(object: &Value) -> Health {
    let strategy = object
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str);
    if strategy == Some("OnDelete") {
        // Pods change only when someone deletes them: there is no rollout to wait for.
        return Health::Current;
    }
    let want = spec_replicas(object);
    let replicas = status_count(object, "replicas");
    let ready = status_count(object, "readyReplicas");
    let current = status_count(object, "currentReplicas");
    let updated = status_count(object, "updatedReplicas");
    if replicas < want {
        return Health::InProgress(format!("{replicas} of {want} replicas created"));
    }
    if ready < want {
        return Health::InProgress(format!("{ready} of {want} replicas ready"));
    }
    if let Some(partition) = int(object, "/spec/updateStrategy/rollingUpdate/partition")
        && partition > 0
    {
        let expected = (want - partition).max(0);
        if updated < expected {
            return Health::InProgress(format!(
                "{updated} of {expected} replicas above partition {partition} updated"
            ));
        }
        return Health::Current;
    }
    let current_revision = object.pointer("/status/currentRevision");
    let update_revision = object.pointer("/status/updateRevision");
    if current_revision != update_revision {
        return Health::InProgress(format!("{updated} of {want} replicas on the new revision"));
    }
    if current < want {
        return Health::InProgress(format!("{current} of {want} replicas current"));
    }
    Health::Current
}

fn daemon_set(object: &Value) -> Health {
    let desired = status_count(object, "desiredNumberScheduled");
    let scheduled = status_count(object, "currentNumberScheduled");
    let updated = status_count(object, "updatedNumberScheduled");
    let ready = status_count(object, "numberReady");
    let available = status_count(object, "numberAvailable");
    if object.pointer("/status/observedGeneration").is_none() {
        return Health::InProgress("not yet observed by its controller".into());
    }
    for (count, what) in [
        (scheduled, "scheduled"),
        (updated, "updated"),
        (ready, "ready"),
        (available, "available"),
    ] {
        if count < desired {
            return Health::InProgress(format!("{count} of {desired} pods {what}"));
        }
    }
    Health::Current
}

fn job(object: &Value) -> Health {
    if let Some(c) = condition(object, "Failed")
        && c.get("status").and_then(Value::as_str) == Some("True")
    {
        return Health::Failed(format!("the Job failed: {}", condition_text(c)));
    }
    if condition_is(object, "Complete", "True") {
        return Health::Current;
    }
    let active = status_count(object, "active");
    let succeeded = status_count(object, "succeeded");
    let completions = int(object, "/spec/completions").unwrap_or(1);
    Health::InProgress(format!(
        "{succeeded} of {completions} completions, {active} active"
    ))
}

/// The verdicts of a whole plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSummary {
    /// Objects judged current.
    pub current: usize,
    /// Objects still converging, with why.
    pub in_progress: Vec<(ObjectRef, String)>,
    /// Objects that failed, with why.
    pub failed: Vec<(ObjectRef, String)>,
}

impl HealthSummary {
    /// Sort verdicts into a summary.
    pub fn of(verdicts: impl IntoIterator<Item = (ObjectRef, Health)>) -> Self {
        let mut summary = HealthSummary::default();
        for (object, health) in verdicts {
            match health {
                Health::Current => summary.current += 1,
                Health::InProgress(why) => summary.in_progress.push((object, why)),
                Health::Failed(why) => summary.failed.push((object, why)),
            }
        }
        summary
    }

    /// Every object is current.
    pub fn healthy(&self) -> bool {
        self.in_progress.is_empty() && self.failed.is_empty()
    }

    /// One line naming the failed objects first, then those in progress (at most a few).
    pub fn message(&self) -> String {
        if self.healthy() {
            return format!("all {} objects are current", self.current);
        }
        let mut parts: Vec<String> = self
            .failed
            .iter()
            .map(|(o, why)| format!("{o} failed: {why}"))
            .chain(
                self.in_progress
                    .iter()
                    .map(|(o, why)| format!("{o} in progress: {why}")),
            )
            .collect();
        let total = parts.len();
        const SHOWN: usize = 5;
        parts.truncate(SHOWN);
        let mut message = parts.join("; ");
        if total > SHOWN {
            message.push_str(&format!("; and {} more", total - SHOWN));
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(spec_replicas: i64, status: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "generation": 2},
            "spec": {"replicas": spec_replicas},
            "status": status,
        })
    }

    fn rolled_out(n: i64) -> Value {
        json!({
            "observedGeneration": 2, "replicas": n, "updatedReplicas": n,
            "readyReplicas": n, "availableReplicas": n,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ]
        })
    }

    #[test]
    fn a_replica_failure_fails_the_rollout_with_the_reason() {
        let mut status = json!({
            "observedGeneration": 2, "replicas": 0,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "pods \"api-1\" is forbidden: violates PodSecurity \"restricted:latest\""}
            ]
        });
        assert_eq!(
            health_of(&deployment(1, status.clone())),
            Health::Failed(
                "ReplicaFailure: FailedCreate: pods \"api-1\" is forbidden: violates PodSecurity \"restricted:latest\"".into()
            )
        );
        // Lifted with the condition: the counters decide again.
        status["conditions"][1]["status"] = json!("False");
        assert_eq!(
            health_of(&deployment(1, status)),
            Health::InProgress("0 of 1 replicas updated".into())
        );
    }

    #[test]
    fn a_rolled_out_deployment_is_current() {
        assert_eq!(health_of(&deployment(3, rolled_out(3))), Health::Current);
    }

    #[test]
    fn a_deployment_whose_generation_is_not_observed_is_in_progress() {
        let mut status = rolled_out(3);
        status["observedGeneration"] = json!(1);
        let health = health_of(&deployment(3, status));
        assert!(
            matches!(&health, Health::InProgress(why) if why.contains("generation 2")),
            "{health}"
        );
    }

    #[test]
    fn a_deployment_mid_rollout_says_which_counter_lags() {
        let mut status = rolled_out(3);
        status["updatedReplicas"] = json!(1);
        assert_eq!(
            health_of(&deployment(3, status)),
            Health::InProgress("1 of 3 replicas updated".into())
        );
        let mut status = rolled_out(3);
        status["availableReplicas"] = json!(2);
        assert_eq!(
            health_of(&deployment(3, status)),
            Health::InProgress("2 of 3 replicas available".into())
        );
        let mut status = rolled_out(3);
        status["replicas"] = json!(4);
        assert_eq!(
            health_of(&deployment(3, status)),
            Health::InProgress("1 old replica(s) pending termination".into())
        );
    }

    #[test]
    fn a_deployment_past_its_deadline_failed() {
        let mut status = rolled_out(3);
        status["updatedReplicas"] = json!(1);
        status["conditions"] = json!([{
            "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"api-5d\" has timed out progressing."
        }]);
        let health = health_of(&deployment(3, status));
        assert!(
            matches!(&health, Health::Failed(why) if why.contains("api-5d")),
            "{health}"
        );
    }

    #[test]
    fn a_deployment_without_status_yet_is_in_progress_and_replicas_default_to_one() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "generation": 1}, "spec": {}});
        assert_eq!(
            health_of(&object),
            Health::InProgress("0 of 1 replicas updated".into())
        );
    }

    #[test]
    fn a_deployment_scaled_to_zero_is_current() {
        let object = deployment(0, json!({"observedGeneration": 2}));
        assert_eq!(health_of(&object), Health::Current);
    }

    fn stateful_set(status: Value, strategy: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 2, "updateStrategy": strategy},
            "status": status,
        })
    }

    #[test]
    fn stateful_sets() {
        let done = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
            "currentReplicas": 2, "updatedReplicas": 2,
            "currentRevision": "db-1", "updateRevision": "db-1"});
        let rolling = json!({"type": "RollingUpdate"});
        assert_eq!(
            health_of(&stateful_set(done.clone(), rolling.clone())),
            Health::Current
        );

        let mut mid = done.clone();
        mid["updateRevision"] = json!("db-2");
        mid["updatedReplicas"] = json!(1);
        assert_eq!(
            health_of(&stateful_set(mid.clone(), rolling.clone())),
            Health::InProgress("1 of 2 replicas on the new revision".into())
        );
        // With a partition of 1, one updated replica is the whole rollout.
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
        assert_eq!(
            health_of(&stateful_set(mid.clone(), partitioned)),
            Health::Current
        );
        // OnDelete: nothing to wait for.
        assert_eq!(
            health_of(&stateful_set(mid, json!({"type": "OnDelete"}))),
            Health::Current
        );
        let mut not_ready = done;
        not_ready["readyReplicas"] = json!(1);
        assert_eq!(
            health_of(&stateful_set(not_ready, rolling)),
            Health::InProgress("1 of 2 replicas ready".into())
        );
    }

    #[test]
    fn daemon_sets() {
        let ds = |status: Value| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent", "generation": 3}, "status": status})
        };
        let done = json!({"observedGeneration": 3, "desiredNumberScheduled": 2,
            "currentNumberScheduled": 2, "updatedNumberScheduled": 2,
            "numberReady": 2, "numberAvailable": 2});
        assert_eq!(health_of(&ds(done.clone())), Health::Current);
        let mut mid = done;
        mid["updatedNumberScheduled"] = json!(1);
        assert_eq!(
            health_of(&ds(mid)),
            Health::InProgress("1 of 2 pods updated".into())
        );
        assert!(matches!(health_of(&ds(json!({}))), Health::InProgress(_)));
    }

    #[test]
    fn jobs() {
        let job = |status: Value| {
            json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "migrate"}, "spec": {"completions": 1}, "status": status})
        };
        assert_eq!(
            health_of(&job(
                json!({"conditions": [{"type": "Complete", "status": "True"}]})
            )),
            Health::Current
        );
        let failed = health_of(&job(json!({"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]})));
        assert_eq!(
            failed,
            Health::Failed(
                "the Job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
                    .into()
            )
        );
        assert_eq!(
            health_of(&job(json!({"active": 1}))),
            Health::InProgress("0 of 1 completions, 1 active".into())
        );
    }

    #[test]
    fn other_kinds_are_current_when_present_unless_their_conditions_say_otherwise() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        assert_eq!(health_of(&cm), Health::Current);
        let stalled = json!({"apiVersion": "example.com/v1", "kind": "Cache",
            "metadata": {"name": "c"},
            "status": {"conditions": [{"type": "Stalled", "status": "True", "reason": "NoSpace"}]}});
        assert_eq!(
            health_of(&stalled),
            Health::Failed("Stalled: NoSpace".into())
        );
        let deleting = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert!(matches!(health_of(&deleting), Health::InProgress(_)));
    }

    #[test]
    fn summary_names_failures_first() {
        let obj = |name: &str| ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
        };
        let summary = HealthSummary::of([
            (obj("a"), Health::Current),
            (
                obj("b"),
                Health::InProgress("1 of 2 replicas updated".into()),
            ),
            (
                obj("c"),
                Health::Failed("progress deadline exceeded".into()),
            ),
        ]);
        assert!(!summary.healthy());
        assert_eq!(
            summary.message(),
            "Deployment/shop/c failed: progress deadline exceeded; Deployment/shop/b in progress: 1 of 2 replicas updated"
        );
        let ok = HealthSummary::of([(obj("a"), Health::Current)]);
        assert!(ok.healthy());
        assert_eq!(ok.message(), "all 1 objects are current");
    }
}

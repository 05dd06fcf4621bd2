//! The only code that writes to the cluster: discovery, server-side apply, pruning (edge).
//!
//! - [`Cluster::discover`] asks the API server which kinds it serves and how (the scope the
//!   planner needs, the resource name requests need).
//! - [`Cluster::apply`] applies an [`ApplyPlan`] with server-side apply, field manager
//!   [`FIELD_MANAGER`], forced: Namespaces and CRDs first, then it waits for each CRD to be
//!   Established, then everything else. Each object is read first, so that what the apply
//!   changed can be told apart: created, updated (the commit changed it), put back (drift),
//!   or unchanged.
//!   An object that carries *another* sync's [`SYNC_ANNOTATION`] is not applied: it is
//!   reported as a [`Conflict`] and left to its owner (two syncs never fight over one
//!   object).
//! - [`Cluster::prune`] (in `prune.rs`) deletes objects of the previous inventory that the
//!   plan no longer has, never a bystander.
//!
//! **Drift.** An object is *drifted* when this pass applies the same desired content as the
//! last successful pass (same lockfile, same spec) and the apply still changed it — someone
//! edited a field lockstep owns, such as an image — or when it was in the last inventory and
//! is gone. Fields lockstep's manifests do not set are other managers' business (server-side
//! apply semantics), not drift.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionCondition,
};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersion};
use kube::discovery::{self, Scope as KubeScope};
use kube::runtime::wait::conditions::is_crd_established;
use kube::runtime::wait::{Condition as _, await_condition};
use serde_json::Value;

use super::health::{Health, health_of};
use super::plan::{ApplyPlan, KindScopes, PlannedObject, SYNC_ANNOTATION, Scope, Stage, TypeKey};
use crate::model::ObjectRef;

/// The field manager of every server-side apply lockstep makes.
pub const FIELD_MANAGER: &str = "lockstep";
/// How long to wait for a CRD to become Established.
const CRD_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests in flight at once within a stage.
const CONCURRENCY: usize = 8;

/// A cluster call that failed, naming the object or kind.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Asking the API server which kinds it serves failed.
    #[error("cannot discover the resources of {api_version}")]
    Discovery {
        api_version: String,
        #[source]
        source: kube::Error,
    },
    /// The plan has an object of a kind the cluster does not serve.
    #[error("{object} (from {file}): the cluster serves no {type_key}")]
    NotServed {
        object: String,
        file: String,
        type_key: TypeKey,
    },
    /// Reading the live object failed.
    #[error("cannot read {object}")]
    Read {
        object: String,
        #[source]
        source: kube::Error,
    },
    /// The API server refused the apply (invalid object, admission, conflict) or was not
    /// reached.
    #[error("cannot apply {object} (from {file})")]
    Apply {
        object: String,
        file: String,
        #[source]
        source: kube::Error,
    },
    /// A CRD did not become Established in time.
    #[error("CustomResourceDefinition {name} is not Established after {waited:?}: {why}")]
    CrdNotEstablished {
        name: String,
        waited: Duration,
        why: String,
    },
    /// Watching an object for a condition failed.
    #[error("cannot watch {object}")]
    Watch {
        object: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    /// Deleting a pruned object failed.
    #[error("cannot prune {object}")]
    Prune {
        object: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Whether retrying soon may help (the server was unreachable or overloaded), as opposed
    /// to a refusal that needs a new commit (an invalid object, a CRD that never
    /// establishes).
    pub fn is_transient(&self) -> bool {
        let source = match self {
            ApplyError::Discovery { source, .. }
            | ApplyError::Read { source, .. }
            | ApplyError::Apply { source, .. }
            | ApplyError::Prune { source, .. } => source,
            ApplyError::NotServed { .. } | ApplyError::CrdNotEstablished { .. } => return false,
            ApplyError::Watch { .. } => return true,
        };
        match source {
            kube::Error::Api(status) => {
                status.code >= 500 || status.code == 429 || status.code == 409
            }
            _ => true,
        }
    }

    /// The object concerned, if one.
    pub fn object(&self) -> Option<&str> {
        match self {
            ApplyError::NotServed { object, .. }
            | ApplyError::Read { object, .. }
            | ApplyError::Apply { object, .. }
            | ApplyError::Prune { object, .. }
            | ApplyError::Watch { object, .. } => Some(object),
            ApplyError::CrdNotEstablished { name, .. } => Some(name),
            ApplyError::Discovery { .. } => None,
        }
    }
}

/// How to address each kind: its resource and scope.
#[derive(Clone, Debug, Default)]
pub struct Discovered {
    kinds: BTreeMap<TypeKey, (ApiResource, Scope)>,
}

impl Discovered {
    /// The scope of every kind found, for the planner.
    pub fn scopes(&self) -> KindScopes {
        self.kinds
            .iter()
            .map(|(key, (_, scope))| (key.clone(), *scope))
            .collect()
    }

    pub(super) fn get(&self, key: &TypeKey) -> Option<&(ApiResource, Scope)> {
        self.kinds.get(key)
    }
}

/// What applying did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// It did not exist.
    Created,
    /// The commit (or the spec) asked for something new.
    Updated,
    /// It had drifted from the same desired state and was put back.
    Drifted,
    /// Nothing to do.
    Unchanged,
}

/// One applied object and its state after the apply.
#[derive(Clone, Debug)]
pub struct AppliedObject {
    pub key: ObjectRef,
    pub change: Change,
    /// Its health, from the object the API server returned.
    pub health: Health,
}

/// An object of the plan that another `LockstepSync` applied: left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub object: ObjectRef,
    /// The other sync, as its annotation names it (`<namespace>/<name>`).
    pub owner: String,
}

/// What applying one object of the plan came to.
enum Applied {
    Object(AppliedObject),
    Conflict(Conflict),
}

/// What [`Cluster::apply`] did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    /// Every object of the plan that was applied, in plan order.
    pub objects: Vec<AppliedObject>,
    /// The objects of the plan another sync owns, not applied.
    pub conflicts: Vec<Conflict>,
}

impl ApplyReport {
    /// The objects with this change.
    pub fn with(&self, change: Change) -> impl Iterator<Item = &ObjectRef> {
        self.objects
            .iter()
            .filter(move |o| o.change == change)
            .map(|o| &o.key)
    }
}

/// What the last successful pass applied: the baseline drift is judged against.
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    /// The last inventory.
    pub inventory: BTreeSet<ObjectRef>,
    /// Whether this pass applies the same desired state as the last (same lockfile bytes,
    /// same spec generation), so that any change found is drift.
    pub same_desired_state: bool,
}

pub use super::prune::PruneReport;

/// The cluster, through one client.
#[derive(Clone)]
pub struct Cluster {
    pub(super) client: Client,
}

impl Cluster {
    pub fn new(client: Client) -> Self {
        Cluster { client }
    }

    /// Resolve each kind through the API server's discovery, one request per group
    /// version. Kinds the server does not serve are left out (the planner then names the
    /// object that uses one).
    pub async fn discover(
        &self,
        kinds: impl IntoIterator<Item = &TypeKey>,
    ) -> Result<Discovered, ApplyError> {
        let mut by_version: BTreeMap<&str, Vec<&TypeKey>> = BTreeMap::new();
        for key in kinds {
            by_version
                .entry(key.api_version.as_str())
                .or_default()
                .push(key);
        }
        let mut discovered = Discovered::default();
        for (api_version, keys) in by_version {
            let Ok(gv) = api_version.parse::<GroupVersion>() else {
                continue;
            };
            let group = match discovery::pinned_group(&self.client, &gv).await {
                Ok(group) => group,
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(source) => {
                    return Err(ApplyError::Discovery {
                        api_version: api_version.to_owned(),
                        source,
                    });
                }
            };
            let resources = group.versioned_resources(&gv.version);
            for key in keys {
                if let Some((resource, caps)) = resources.iter().find(|(r, _)| r.kind == key.kind) {
                    let scope = match caps.scope {
                        KubeScope::Namespaced => Scope::Namespaced,
                        KubeScope::Cluster => Scope::Cluster,
                    };
                    discovered
                        .kinds
                        .insert(key.clone(), (resource.clone(), scope));
                }
            }
        }
        Ok(discovered)
    }

    /// Apply the plan: Namespaces and CRDs, wait for the CRDs, then the rest. Stops at the
    /// first object the server refuses; what was applied before stays applied.
    pub async fn apply(
        &self,
        plan: &ApplyPlan,
        discovered: &Discovered,
        baseline: &Baseline,
    ) -> Result<ApplyReport, ApplyError> {
        let mut kinds = discovered.clone();
        // Kinds the commit's own CRDs define are addressed from the CRD itself, so there is
        // no waiting for discovery to catch up once they are Established.
        for defined in plan.defined_kinds() {
            let resource = ApiResource {
                group: defined.group.clone(),
                version: defined.version.clone(),
                api_version: defined.type_key.api_version.clone(),
                kind: defined.type_key.kind.clone(),
                plural: defined.plural.clone(),
            };
            kinds
                .kinds
                .insert(defined.type_key.clone(), (resource, defined.scope));
        }
        let mut report = ApplyReport::default();
        for stage in [Stage::Definitions, Stage::Objects] {
            let objects: Vec<&PlannedObject> = plan.stage(stage).collect();
            // Collected first: a lazy `map` here makes the future's lifetimes too general
            // for the compiler to prove it Send.
            let pending: Vec<_> = objects
                .iter()
                .copied()
                .map(|o| self.apply_one(o, &kinds, baseline))
                .collect();
            let applied: Vec<Applied> = futures::stream::iter(pending)
                .buffered(CONCURRENCY)
                .try_collect()
                .await?;
            for one in applied {
                match one {
                    Applied::Object(object) => report.objects.push(object),
                    Applied::Conflict(conflict) => report.conflicts.push(conflict),
                }
            }
            if stage == Stage::Definitions {
                for crd in objects.iter().filter(|o| o.is_crd()) {
                    self.wait_established(&crd.key().name).await?;
                }
            }
        }
        Ok(report)
    }

    pub(super) fn api_for(
        &self,
        resource: &ApiResource,
        scope: Scope,
        namespace: &str,
    ) -> Api<DynamicObject> {
        match scope {
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), namespace, resource),
            Scope::Cluster => Api::all_with(self.client.clone(), resource),
        }
    }

    async fn apply_one(
        &self,
        object: &PlannedObject,
        kinds: &Discovered,
        baseline: &Baseline,
    ) -> Result<Applied, ApplyError> {
        let key = object.key();
        let type_key = TypeKey {
            api_version: key.api_version.clone(),
            kind: key.kind.clone(),
        };
        let Some((resource, scope)) = kinds.get(&type_key) else {
            return Err(ApplyError::NotServed {
                object: key.to_string(),
                file: object.file().to_owned(),
                type_key,
            });
        };
        let api = self.api_for(resource, *scope, &key.namespace);
        let live = api
            .get_opt(&key.name)
            .await
            .map_err(|source| ApplyError::Read {
                object: key.to_string(),
                source,
            })?
            .map(|o| to_value(&o));
        if let Some(owner) = live.as_ref().and_then(|l| other_owner(l, object.body())) {
            return Ok(Applied::Conflict(Conflict {
                object: key.clone(),
                owner,
            }));
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let after = api
            .patch(&key.name, &params, &Patch::Apply(object.body()))
            .await
            .map_err(|source| ApplyError::Apply {
                object: key.to_string(),
                file: object.file().to_owned(),
                source,
            })?;
        let after = to_value(&after);
        let change = classify(
            live.as_ref(),
            &after,
            baseline.inventory.contains(key),
            baseline.same_desired_state,
        );
        Ok(Applied::Object(AppliedObject {
            key: key.clone(),
            change,
            health: health_of(&after),
        }))
    }

    /// Watch the CRD until it is Established (or its names are refused), for at most
    /// [`CRD_TIMEOUT`].
    async fn wait_established(&self, name: &str) -> Result<(), ApplyError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let started = std::time::Instant::now();
        let names_refused = |crd: Option<&CustomResourceDefinition>| {
            crd_condition(crd, "NamesAccepted").is_some_and(|c| c.status == "False")
        };
        let settled = await_condition(api.clone(), name, is_crd_established().or(names_refused));
        let not_established = |why: String| ApplyError::CrdNotEstablished {
            name: name.to_owned(),
            waited: started.elapsed(),
            why,
        };
        match tokio::time::timeout(CRD_TIMEOUT, settled).await {
            Ok(Ok(crd)) if is_crd_established().matches_object(crd.as_ref()) => Ok(()),
            Ok(Ok(crd)) => Err(not_established(format!(
                "names not accepted: {}",
                crd_condition(crd.as_ref(), "NamesAccepted")
                    .and_then(|c| c.message.clone())
                    .unwrap_or_default()
            ))),
            Ok(Err(source)) => Err(ApplyError::Watch {
                object: format!("CustomResourceDefinition/{name}"),
                source,
            }),
            Err(_) => {
                // Timed out: say what the Established condition says, as last read.
                let crd = api.get_opt(name).await.ok().flatten();
                Err(not_established(
                    crd_condition(crd.as_ref(), "Established")
                        .and_then(|c| c.message.clone())
                        .unwrap_or_else(|| "no Established condition yet".to_owned()),
                ))
            }
        }
    }
}

/// The other sync named by the live object's [`SYNC_ANNOTATION`], when it names one that
/// is not the planned body's (this sync's).
fn other_owner(live: &Value, planned: &Value) -> Option<String> {
    let owner = |v: &Value| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(SYNC_ANNOTATION))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let theirs = owner(live)?;
    (Some(&theirs) != owner(planned).as_ref()).then_some(theirs)
}

fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).expect("an object from the API server serializes")
}

/// What the apply did, from the live object before and the object it returned.
fn classify(
    before: Option<&Value>,
    after: &Value,
    in_inventory: bool,
    same_desired: bool,
) -> Change {
    match before {
        None if in_inventory => Change::Drifted,
        None => Change::Created,
        Some(before) if !differs(before, after) => Change::Unchanged,
        Some(_) if in_inventory && same_desired => Change::Drifted,
        Some(_) => Change::Updated,
    }
}

/// Whether two versions of an object differ in anything but bookkeeping: the status (its
/// controller's business), the resource version, the generation and the managed-fields
/// timestamps.
fn differs(before: &Value, after: &Value) -> bool {
    strip_bookkeeping(before) != strip_bookkeeping(after)
}

fn strip_bookkeeping(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
            for field in ["resourceVersion", "generation", "managedFields"] {
                metadata.remove(field);
            }
        }
    }
    object
}

/// The condition of `type_` of a CRD, if it has one.
fn crd_condition<'c>(
    crd: Option<&'c CustomResourceDefinition>,
    type_: &str,
) -> Option<&'c CustomResourceDefinitionCondition> {
    crd?.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(image: &str, resource_version: &str, ready: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop", "resourceVersion": resource_version,
                "generation": 3, "managedFields": [{"manager": "lockstep", "time": resource_version}]},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
            "status": {"readyReplicas": ready},
        })
    }

    #[test]
    fn bookkeeping_is_not_a_change() {
        let before = deployment("api@sha256:1", "10", 0);
        let after = deployment("api@sha256:1", "11", 2);
        assert!(!differs(&before, &after));
        assert_eq!(
            classify(Some(&before), &after, true, true),
            Change::Unchanged
        );
    }

    #[test]
    fn a_changed_object_is_drift_only_against_the_same_desired_state() {
        let edited = deployment("api:debug", "12", 2);
        let restored = deployment("api@sha256:1", "13", 2);
        assert_eq!(
            classify(Some(&edited), &restored, true, true),
            Change::Drifted
        );
        // A new commit (or spec) changed it: an update, not drift.
        assert_eq!(
            classify(Some(&edited), &restored, true, false),
            Change::Updated
        );
        // Not applied before by this sync: an update of someone else's object.
        assert_eq!(
            classify(Some(&edited), &restored, false, true),
            Change::Updated
        );
    }

    #[test]
    fn a_missing_object_is_created_or_drift_when_it_was_applied_before() {
        let after = deployment("api@sha256:1", "1", 0);
        assert_eq!(classify(None, &after, false, true), Change::Created);
        assert_eq!(classify(None, &after, true, false), Change::Drifted);
    }

    #[test]
    fn only_server_failures_are_transient() {
        let api_error = |code: u16| {
            kube::Error::Api(
                kube::core::Status::failure("refused", "Invalid")
                    .with_code(code)
                    .boxed(),
            )
        };
        let apply = |code| ApplyError::Apply {
            object: "Deployment/shop/api".into(),
            file: "app.yaml".into(),
            source: api_error(code),
        };
        assert!(!apply(422).is_transient());
        assert!(!apply(403).is_transient());
        assert!(apply(500).is_transient());
        assert!(apply(429).is_transient());
        assert_eq!(apply(422).object(), Some("Deployment/shop/api"));
    }
}

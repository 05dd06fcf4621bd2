//! Pruning (edge): delete what the last inventory held and the plan no longer has — never a
//! bystander.
//!
//! The [`PruneSet`] (pure) already orders the deletions (namespaced objects and custom
//! resources before Namespaces and CRDs) and keeps the Namespaces and CRDs that objects the
//! commit still declares need. Here, each object is read first and deleted only when it
//! carries this sync's [`SYNC_ANNOTATION`], by UID precondition, with foreground
//! propagation. A Namespace is deleted only when it holds nothing this sync did not apply:
//! its objects of the [`CHECKED_KINDS`] are listed (metadata only, paged), and any one
//! without this sync's annotation — not owned by another object, not being deleted, not
//! one Kubernetes puts in every namespace — keeps it. When the list is refused (the applier
//! role grants no `list` by default, see deploy/rbac.yaml) the Namespace is kept too: fail
//! safe, with the reason. Kept Namespaces and CRDs stay in the inventory, so a later pass
//! deletes them once they are safe to delete.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Preconditions, PropagationPolicy,
};
use kube::core::ApiResource;
use std::collections::BTreeSet;

use super::apply::{ApplyError, Cluster};
use super::kube_error::{describe, is_forbidden};
use super::plan::{KeepReason, Kept, PruneSet, SYNC_ANNOTATION, SyncId, TypeKey};
use crate::model::ObjectRef;

/// What [`Cluster::prune`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Deleted (or deletion started), in deletion order.
    pub deleted: Vec<ObjectRef>,
    /// Already gone.
    pub absent: Vec<ObjectRef>,
    /// Left in the cluster, and why.
    pub kept: Vec<Kept>,
    /// Nothing was deleted: `deleted` is what the API server's dry run would have deleted.
    pub dry_run: bool,
}

impl PruneReport {
    /// Whether the pass had anything to prune.
    pub fn is_empty(&self) -> bool {
        self.deleted.is_empty() && self.absent.is_empty() && self.kept.is_empty()
    }

    /// The kept objects that stay this sync's (a later pass tries again); those
    /// [`KeepReason::NotOurs`] are someone else's.
    pub fn still_ours(&self) -> impl Iterator<Item = &ObjectRef> {
        self.kept
            .iter()
            .filter(|k| k.reason != KeepReason::NotOurs)
            .map(|k| &k.object)
    }
}

/// The namespaced kinds a Namespace is searched for objects this sync did not apply before
/// it is deleted: the kinds the applier role may write (deploy/rbac.yaml), and Pods. Not
/// Secrets: RBAC cannot grant listing their metadata without their data, and the controller
/// is not given every Secret (deploy/rbac.yaml). (group, version, kind, plural.)
pub const CHECKED_KINDS: [(&str, &str, &str, &str); 14] = [
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Service", "services"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
];

/// Objects Kubernetes itself puts in every namespace: not bystanders.
const NAMESPACE_DEFAULTS: [(&str, &str); 2] = [
    ("ConfigMap", "kube-root-ca.crt"),
    ("ServiceAccount", "default"),
];

/// Foreign objects named before the search stops.
const FOUND_ENOUGH: usize = 10;
/// Objects per list request.
const PAGE: u32 = 200;
/// Pages read per kind before giving up (and keeping the Namespace).
const PAGES: usize = 20;

impl Cluster {
    /// Delete the objects of `set` that carry `sync`'s annotation, in its order; keep (and
    /// report) the rest. Kinds the cluster no longer serves are taken as gone. With
    /// `dry_run`, every check is made and each delete is sent as the API server's dry run.
    pub async fn prune(
        &self,
        sync: &SyncId,
        set: &PruneSet,
        dry_run: bool,
    ) -> Result<PruneReport, ApplyError> {
        let kinds: BTreeSet<TypeKey> = set.delete.iter().map(type_key).collect();
        let discovered = self.discover(&kinds).await?;
        let owner = sync.to_string();
        let mut report = PruneReport {
            kept: set.kept.clone(),
            dry_run,
            ..PruneReport::default()
        };
        for object in &set.delete {
            let Some((resource, scope)) = discovered.get(&type_key(object)) else {
                report.absent.push(object.clone());
                continue;
            };
            let api = self.api_for(resource, *scope, &object.namespace);
            let read_error = |source| ApplyError::Read {
                object: object.to_string(),
                source,
            };
            let Some(live) = api.get_opt(&object.name).await.map_err(read_error)? else {
                report.absent.push(object.clone());
                continue;
            };
            if !marked(&live.metadata, &owner) {
                report.kept.push(kept(object, KeepReason::NotOurs));
                continue;
            }
            if let Some(reason) = self.unsafe_to_delete(object, &owner).await {
                report.kept.push(kept(object, reason));
                continue;
            }
            let params = DeleteParams {
                dry_run,
                propagation_policy: Some(PropagationPolicy::Foreground),
                preconditions: Some(Preconditions {
                    uid: live.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&object.name, &params).await {
                Ok(_) => report.deleted.push(object.clone()),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    report.absent.push(object.clone())
                }
                Err(source) => {
                    return Err(ApplyError::Prune {
                        object: object.to_string(),
                        source,
                    });
                }
            }
        }
        Ok(report)
    }

    /// Why deleting `object` would take bystanders along: a Namespace or CRD that holds
    /// objects this sync did not apply, or whose contents could not be listed.
    async fn unsafe_to_delete(&self, object: &ObjectRef, owner: &str) -> Option<KeepReason> {
        let searched = match (object.api_version.as_str(), object.kind.as_str()) {
            ("v1", "Namespace") => self.foreign_in_namespace(&object.name, owner).await,
            (api, "CustomResourceDefinition") if api.starts_with("apiextensions.k8s.io/") => {
                self.foreign_of_crd(&object.name, owner).await
            }
            _ => return None,
        };
        match searched {
            Ok(found) if found.is_empty() => None,
            Ok(found) => Some(KeepReason::HoldsForeign { found }),
            Err(why) => Some(KeepReason::Unchecked { why }),
        }
    }

    /// The objects of [`CHECKED_KINDS`] in `namespace` that are not `owner`'s.
    async fn foreign_in_namespace(
        &self,
        namespace: &str,
        owner: &str,
    ) -> Result<Vec<ObjectRef>, String> {
        let mut found = Vec::new();
        for (group, version, kind, plural) in CHECKED_KINDS {
            let resource = ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: api_version(group, version),
                kind: kind.into(),
                plural: plural.into(),
            };
            let api =
                Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &resource);
            let what = format!("{plural} in namespace {namespace}");
            found.extend(foreign_objects(&api, &resource, owner, &what).await?);
            if found.len() >= FOUND_ENOUGH {
                break;
            }
        }
        Ok(found)
    }

    /// The objects of the kind `crd` defines, in every namespace, that are not `owner`'s.
    async fn foreign_of_crd(&self, crd: &str, owner: &str) -> Result<Vec<ObjectRef>, String> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let definition = match api.get_opt(crd).await {
            Ok(Some(definition)) => definition,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => {
                return Err(format!(
                    "cannot read CustomResourceDefinition/{crd}: {}",
                    describe(&e)
                ));
            }
        };
        let spec = definition.spec;
        let Some(version) = spec
            .versions
            .iter()
            .find(|v| v.storage)
            .or(spec.versions.first())
        else {
            return Ok(Vec::new());
        };
        let resource = ApiResource {
            group: spec.group.clone(),
            version: version.name.clone(),
            api_version: api_version(&spec.group, &version.name),
            kind: spec.names.kind.clone(),
            plural: spec.names.plural.clone(),
        };
        let api = Api::<DynamicObject>::all_with(self.client.clone(), &resource);
        let what = format!("{} in any namespace", spec.names.plural);
        foreign_objects(&api, &resource, owner, &what).await
    }
}

/// The objects `api` lists that are not `owner`'s, up to [`FOUND_ENOUGH`]: an error (text)
/// when the list is refused or too long to read.
async fn foreign_objects(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    owner: &str,
    what: &str,
) -> Result<Vec<ObjectRef>, String> {
    let mut found = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    for _ in 0..PAGES {
        let page = match api.list_metadata(&params).await {
            Ok(page) => page,
            // The kind is not served (an older autoscaling, say): nothing of it to keep.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(found),
            Err(e) if is_forbidden(&e) => {
                return Err(format!(
                    "the controller may not list {what}; bind the ClusterRole lockstep-prune-check (deploy/rbac.yaml), or delete the namespace by hand"
                ));
            }
            Err(e) => return Err(format!("cannot list {what}: {}", describe(&e))),
        };
        found.extend(
            page.items
                .iter()
                .filter(|o| bystander(&o.metadata, &resource.kind, owner))
                .map(|o| ObjectRef {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                    namespace: o.metadata.namespace.clone().unwrap_or_default(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                }),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() && found.len() < FOUND_ENOUGH => {
                params = params.continue_token(&token);
            }
            _ => return Ok(found),
        }
    }
    Err(format!("too many {what} to check"))
}

/// Whether an object in a Namespace (or of a CRD) about to be deleted is someone else's:
/// not `owner`'s, not a dependent (its owner is judged instead), not already being deleted,
/// not one Kubernetes creates in every namespace.
fn bystander(metadata: &ObjectMeta, kind: &str, owner: &str) -> bool {
    let default = NAMESPACE_DEFAULTS
        .iter()
        .any(|(k, n)| *k == kind && metadata.name.as_deref() == Some(*n));
    !marked(metadata, owner)
        && metadata.owner_references.as_ref().is_none_or(Vec::is_empty)
        && metadata.deletion_timestamp.is_none()
        && !default
}

/// Whether an object carries `owner` in [`SYNC_ANNOTATION`].
fn marked(metadata: &ObjectMeta, owner: &str) -> bool {
    metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SYNC_ANNOTATION))
        .is_some_and(|v| v == owner)
}

fn kept(object: &ObjectRef, reason: KeepReason) -> Kept {
    Kept {
        object: object.clone(),
        reason,
    }
}

fn type_key(object: &ObjectRef) -> TypeKey {
    TypeKey {
        api_version: object.api_version.clone(),
        kind: object.kind.clone(),
    }
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

//! What to apply, from a verified commit and nothing else (pure).
//!
//! [`VerifiedObjects::parse`] takes a [`VerifiedDir`] — the only way to have one is
//! `verify::verify_dir` — and takes its objects exactly as verification decoded them: there is
//! no second reading of the manifests between `verify` and the API server. The cluster then says
//! which kinds are namespaced ([`KindScopes`]; kinds the commit's own CRDs define need no
//! asking), and [`VerifiedObjects::plan`] makes the [`ApplyPlan`]: every object with its
//! namespace defaulted and lockstep's ownership annotation, Namespaces and CRDs first. Both
//! types have private fields and no other constructor, so "apply something unverified" does
//! not compile.
//!
//! One image anywhere in a `containers`/`initContainers`/`ephemeralContainers` list that is
//! not digest-pinned to a digest of the lockfile refuses the whole commit, even in a kind the
//! scanner was not told about: the cluster gets nothing a tag can move.
//!
//! Also here: the rollback rule ([`check_rollback`]) and the prune set
//! ([`ApplyPlan::prune_set`], in [`crate::prune`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::manifest::DecodedObject;
use crate::manifest::scan::CONTAINER_FIELDS;
use crate::mirror::{MirrorError, MirrorTarget, objects_from_mirror};
use crate::model::{Digest, ImageRef, ObjectRef};
use crate::verify::VerifiedDir;

pub use crate::prune::{KeepReason, Kept, PruneSet, crd_name};

/// The annotation marking an object as applied by one `LockstepSync`: `<namespace>/<name>`.
/// Pruning deletes only objects that carry it with the pruning resource's value.
pub const SYNC_ANNOTATION: &str = "lockstep.dev/sync";

const CRD_KIND: &str = "CustomResourceDefinition";

/// Whether a kind's objects live in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

/// An `apiVersion` and `kind`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeKey {
    pub api_version: String,
    pub kind: String,
}

impl fmt::Display for TypeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// The scope of each kind, as the cluster's discovery reports it.
pub type KindScopes = BTreeMap<TypeKey, Scope>;

/// A kind that a CustomResourceDefinition of the commit defines: enough to address its
/// objects before the cluster's discovery knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefinedKind {
    pub type_key: TypeKey,
    /// The API group (`spec.group`).
    pub group: String,
    /// The version (one entry of `spec.versions`).
    pub version: String,
    /// The resource name (`spec.names.plural`).
    pub plural: String,
    pub scope: Scope,
}

/// Every (group, version, kind) the CRDs among `objects` define.
fn defined_kinds(objects: &[SourceObject]) -> Vec<DefinedKind> {
    let mut kinds = Vec::new();
    for object in objects {
        let is_crd = object
            .type_key
            .api_version
            .starts_with("apiextensions.k8s.io/")
            && object.type_key.kind == CRD_KIND;
        if !is_crd {
            continue;
        }
        let spec = object.body.get("spec");
        let text = |pointer: &str| {
            spec.and_then(|s| s.pointer(pointer))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (Some(group), Some(kind), Some(plural)) =
            (text("/group"), text("/names/kind"), text("/names/plural"))
        else {
            continue;
        };
        let scope = match text("/scope").as_deref() {
            Some("Cluster") => Scope::Cluster,
            _ => Scope::Namespaced,
        };
        let versions = spec
            .and_then(|s| s.get("versions"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for version in versions {
            if let Some(v) = version.get("name").and_then(Value::as_str) {
                kinds.push(DefinedKind {
                    type_key: TypeKey {
                        api_version: format!("{group}/{v}"),
                        kind: kind.clone(),
                    },
                    group: group.clone(),
                    version: v.to_owned(),
                    plural: plural.clone(),
                    scope,
                });
            }
        }
    }
    kinds
}

/// When an object is applied: Namespaces and CRDs before everything else (which may live in
/// those namespaces or be of those kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Namespaces and CustomResourceDefinitions.
    Definitions,
    /// Everything else.
    Objects,
}

impl Stage {
    pub(crate) fn of(api_version: &str, kind: &str) -> Stage {
        let namespace = api_version == "v1" && kind == "Namespace";
        let crd = api_version.starts_with("apiextensions.k8s.io/") && kind == CRD_KIND;
        if namespace || crd {
            Stage::Definitions
        } else {
            Stage::Objects
        }
    }
}

/// Who applies: the `LockstepSync` (its namespace and name) and its defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanSettings {
    /// The `LockstepSync`'s namespace and name: the value of [`SYNC_ANNOTATION`].
    pub sync: SyncId,
    /// The namespace of namespaced objects that name none.
    pub default_namespace: String,
    /// When set, the lockfile's `environment` must equal it.
    pub environment: Option<String>,
}

/// A `LockstepSync`'s namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncId {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SyncId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Which lockfile a plan comes from: what rollback protection compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockIdentity {
    /// The lockfile's generation.
    pub generation: u64,
    /// The sha256 of the lockfile's exact bytes.
    pub sha256: Digest,
}

/// Why a verified commit cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An object without `metadata.name` (`generateName` cannot be applied idempotently).
    #[error("{file}: a {kind} has no metadata.name; lockstep applies named objects only")]
    NoName { file: String, kind: String },
    /// `apiVersion`, `kind`, `metadata`, or a name that is not what Kubernetes expects.
    #[error("{file}: {object}: {problem}")]
    BadObject {
        file: String,
        object: String,
        problem: String,
    },
    /// An image in a container list that is not digest-pinned.
    #[error(
        "{file}: {object} container {container:?}: image {image:?} is not pinned by digest; one unpinned image refuses the whole commit (run `lockstep lock`, and declare custom kinds' image paths in lockstep.toml)"
    )]
    Unpinned {
        file: String,
        object: String,
        container: String,
        image: String,
    },
    /// A pinned image whose digest the lockfile does not list.
    #[error(
        "{file}: {object} container {container:?}: image {image:?} is pinned to a digest the lockfile does not list"
    )]
    NotInLock {
        file: String,
        object: String,
        container: String,
        image: String,
    },
    /// The mirror to pull from is not recorded for every image.
    #[error(transparent)]
    Mirror(MirrorError),
    /// The same object twice.
    #[error("{object} is defined twice: in {first} and in {second}")]
    Duplicate {
        object: String,
        first: String,
        second: String,
    },
    /// A kind the cluster does not serve and no CRD of the commit defines.
    #[error(
        "{file}: {object}: the cluster serves no {type_key} and no CustomResourceDefinition in this commit defines it"
    )]
    UnknownKind {
        file: String,
        object: String,
        type_key: TypeKey,
    },
    /// The lockfile was made for another environment.
    #[error(
        "the lockfile is for environment {found:?}, but this LockstepSync applies environment {expected:?}"
    )]
    Environment {
        expected: String,
        found: Option<String>,
    },
}

/// One object of a manifest, parsed.
#[derive(Clone, Debug)]
struct SourceObject {
    file: String,
    type_key: TypeKey,
    name: String,
    namespace: Option<String>,
    body: Map<String, Value>,
}

impl SourceObject {
    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {}/{}", self.type_key.kind, ns, self.name),
            None => format!("{} {}", self.type_key.kind, self.name),
        }
    }
}

/// One approval of an applied lockfile.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedSigner {
    /// The key's `SHA256:…` fingerprint.
    pub key: String,
    /// The principals of the allowed_signers lines that admitted it.
    pub principals: Vec<String>,
}

/// The objects of a verified commit, parsed, before their namespaces are settled.
#[derive(Clone, Debug)]
pub struct VerifiedObjects {
    objects: Vec<SourceObject>,
    lock: LockIdentity,
    environment: Option<String>,
    signers: Vec<String>,
    approvals: Vec<RecordedSigner>,
}

impl VerifiedObjects {
    /// The verified objects (files in path order, documents in file order, `List` items
    /// expanded), as verification decoded them. Refuses unpinned images and digests the
    /// lockfile lacks.
    pub fn parse(verified: &VerifiedDir<'_>) -> Result<Self, PlanError> {
        Self::from_objects(verified, verified.objects().to_vec())
    }

    /// [`Self::parse`] with every image pulled from its recorded copy in `mirror`, same
    /// digest (see [`manifests_from_mirror`]): refused unless the signed lockfile records
    /// that mirror for every image.
    pub fn parse_from_mirror(
        verified: &VerifiedDir<'_>,
        mirror: &MirrorTarget,
    ) -> Result<Self, PlanError> {
        let objects = objects_from_mirror(verified, mirror).map_err(PlanError::Mirror)?;
        Self::from_objects(verified, objects)
    }

    fn from_objects(
        verified: &VerifiedDir<'_>,
        decoded: Vec<DecodedObject>,
    ) -> Result<Self, PlanError> {
        let lock_digests: BTreeSet<&Digest> = verified
            .lockfile()
            .images
            .iter()
            .map(|e| &e.digest)
            .collect();
        let objects = decoded
            .into_iter()
            .map(source_object)
            .collect::<Result<Vec<_>, _>>()?;
        for object in &objects {
            check_images(object, &lock_digests)?;
        }
        let signers = verified.principals();
        let mut approvals: Vec<RecordedSigner> = verified
            .signers()
            .iter()
            .map(|s| RecordedSigner {
                key: s.fingerprint.clone(),
                principals: s.principals.clone(),
            })
            .collect();
        approvals.sort();
        approvals.dedup();
        Ok(VerifiedObjects {
            objects,
            lock: LockIdentity {
                generation: verified.lockfile().generation,
                sha256: Digest::of(verified.lockfile_bytes()),
            },
            environment: verified.lockfile().environment.clone(),
            signers,
            approvals,
        })
    }

    /// The lockfile these objects were verified against.
    pub fn lock(&self) -> &LockIdentity {
        &self.lock
    }

    /// The trusted principals that signed the lockfile, sorted.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }

    /// The trusted keys that signed the lockfile, with the principals that admitted each.
    pub fn approvals(&self) -> &[RecordedSigner] {
        &self.approvals
    }

    /// The kinds whose scope only the cluster can tell: every kind used, except those the
    /// commit's own CRDs define.
    pub fn kinds_to_discover(&self) -> BTreeSet<TypeKey> {
        let defined = self.defined_scopes();
        self.objects
            .iter()
            .map(|o| o.type_key.clone())
            .filter(|k| !defined.contains_key(k))
            .collect()
    }

    /// Scopes of the kinds the commit's CRDs define.
    fn defined_scopes(&self) -> KindScopes {
        defined_kinds(&self.objects)
            .into_iter()
            .map(|d| (d.type_key, d.scope))
            .collect()
    }

    /// Settle every object's namespace (`scopes` from the cluster, for the kinds of
    /// [`Self::kinds_to_discover`]), mark it as this sync's, and order the plan.
    pub fn plan(
        self,
        settings: &PlanSettings,
        scopes: &KindScopes,
    ) -> Result<ApplyPlan, PlanError> {
        if let Some(expected) = &settings.environment
            && self.environment.as_ref() != Some(expected)
        {
            return Err(PlanError::Environment {
                expected: expected.clone(),
                found: self.environment,
            });
        }
        let defined_kinds = defined_kinds(&self.objects);
        let defined: KindScopes = defined_kinds
            .iter()
            .map(|d| (d.type_key.clone(), d.scope))
            .collect();
        let mut planned: Vec<PlannedObject> = Vec::with_capacity(self.objects.len());
        let mut seen: BTreeMap<ObjectRef, usize> = BTreeMap::new();
        for object in self.objects {
            let scope = defined
                .get(&object.type_key)
                .or_else(|| scopes.get(&object.type_key))
                .copied()
                .ok_or_else(|| PlanError::UnknownKind {
                    file: object.file.clone(),
                    object: object.describe(),
                    type_key: object.type_key.clone(),
                })?;
            let namespace = match scope {
                // kubectl ignores a namespace on a cluster-scoped object; so does lockstep.
                Scope::Cluster => String::new(),
                Scope::Namespaced => object
                    .namespace
                    .clone()
                    .unwrap_or_else(|| settings.default_namespace.clone()),
            };
            let key = ObjectRef {
                api_version: object.type_key.api_version.clone(),
                kind: object.type_key.kind.clone(),
                namespace,
                name: object.name.clone(),
            };
            if let Some(&first) = seen.get(&key) {
                return Err(PlanError::Duplicate {
                    object: key.to_string(),
                    first: planned[first].file.clone(),
                    second: object.file,
                });
            }
            seen.insert(key.clone(), planned.len());
            let body = finish_body(object.body, &key, &settings.sync);
            planned.push(PlannedObject {
                stage: Stage::of(&key.api_version, &key.kind),
                key,
                file: object.file,
                body,
            });
        }
        // Stable: within a stage, objects keep the order of the files.
        planned.sort_by_key(|o| o.stage);
        Ok(ApplyPlan {
            objects: planned,
            defined: defined_kinds,
            lock: self.lock,
            signers: self.signers,
        })
    }
}

/// The objects to apply for one verified commit, in order.
#[derive(Clone, Debug)]
pub struct ApplyPlan {
    objects: Vec<PlannedObject>,
    defined: Vec<DefinedKind>,
    lock: LockIdentity,
    signers: Vec<String>,
}

/// One object to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedObject {
    key: ObjectRef,
    stage: Stage,
    file: String,
    body: Value,
}

impl PlannedObject {
    /// apiVersion, kind, namespace (empty when cluster-scoped), name.
    pub fn key(&self) -> &ObjectRef {
        &self.key
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The manifest file it comes from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The object to send (namespace set, ownership annotation added).
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// Whether this is a CustomResourceDefinition (to wait for before the next stage).
    pub fn is_crd(&self) -> bool {
        self.key.kind == CRD_KIND && self.key.api_version.starts_with("apiextensions.k8s.io/")
    }
}

impl ApplyPlan {
    /// Every object, Namespaces and CRDs first.
    pub fn objects(&self) -> &[PlannedObject] {
        &self.objects
    }

    /// The objects of one stage, in order.
    pub fn stage(&self, stage: Stage) -> impl Iterator<Item = &PlannedObject> {
        self.objects.iter().filter(move |o| o.stage == stage)
    }

    /// The lockfile the plan comes from.
    pub fn lock(&self) -> &LockIdentity {
        &self.lock
    }

    /// The kinds the plan's own CRDs define.
    pub fn defined_kinds(&self) -> &[DefinedKind] {
        &self.defined
    }

    /// The trusted principals that signed the lockfile, sorted.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }

    /// SHA-256 (hex) of every object this plan applies, key and body, in order: the desired
    /// state itself, so that a spec change that leaves it alone (`suspend`, `interval`) does
    /// not make drift look like an update.
    pub fn desired_sha256(&self) -> String {
        let mut hash = Sha256::new();
        for object in &self.objects {
            hash.update(object.key.to_string().as_bytes());
            hash.update([0]);
            // The same verified bytes and settings build the same Value, written the same way.
            hash.update(serde_json::to_vec(&object.body).unwrap_or_default());
            hash.update([0]);
        }
        hex::encode(hash.finalize())
    }

    /// The objects this plan applies: the next inventory.
    pub fn inventory(&self) -> Vec<ObjectRef> {
        self.objects.iter().map(|o| o.key.clone()).collect()
    }
}

/// One decoded object, with the identity Kubernetes needs to apply it.
fn source_object(decoded: DecodedObject) -> Result<SourceObject, PlanError> {
    let DecodedObject {
        file, object, body, ..
    } = decoded;
    let kind = object.kind;
    let bad = |object: &str, problem: &str| PlanError::BadObject {
        file: file.clone(),
        object: object.to_owned(),
        problem: problem.to_owned(),
    };
    let type_key = TypeKey {
        api_version: object.api_version,
        kind: kind.clone(),
    };
    let metadata = match body.get("metadata") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Err(PlanError::NoName {
                file: file.clone(),
                kind: kind.clone(),
            });
        }
        Some(_) => return Err(bad(&kind, "metadata must be a mapping")),
    };
    let name = match metadata.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        None | Some(Value::Null) => {
            return Err(PlanError::NoName {
                file: file.clone(),
                kind: kind.clone(),
            });
        }
        Some(_) => return Err(bad(&kind, "metadata.name must be a non-empty string")),
    };
    let namespace = match metadata.get("namespace") {
        Some(Value::String(ns)) if !ns.is_empty() => Some(ns.clone()),
        None | Some(Value::Null) => None,
        Some(Value::String(_)) => None,
        Some(_) => {
            return Err(bad(
                &format!("{kind} {name}"),
                "metadata.namespace must be a string",
            ));
        }
    };
    Ok(SourceObject {
        file,
        type_key,
        name,
        namespace,
        body,
    })
}

/// Every image of every container list in the object must be pinned to a digest the lockfile
/// lists.
fn check_images(object: &SourceObject, lock_digests: &BTreeSet<&Digest>) -> Result<(), PlanError> {
    let mut found = Vec::new();
    container_images(&Value::Object(object.body.clone()), &mut found);
    for (container, image) in found {
        let pinned = ImageRef::parse(&image)
            .ok()
            .and_then(|r| r.digest().cloned());
        match pinned {
            None => {
                return Err(PlanError::Unpinned {
                    file: object.file.clone(),
                    object: object.describe(),
                    container,
                    image,
                });
            }
            Some(digest) if !lock_digests.contains(&digest) => {
                return Err(PlanError::NotInLock {
                    file: object.file.clone(),
                    object: object.describe(),
                    container,
                    image,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// (container name, image) of every entry with an `image` in any container list, and of every
/// image volume (`volumes[].image.reference`), anywhere in `value`.
fn container_images(value: &Value, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "volumes"
                    && let Value::Array(volumes) = child
                {
                    for volume in volumes {
                        if let Some(reference) = volume.pointer("/image/reference") {
                            let name = volume.get("name").and_then(Value::as_str).unwrap_or("");
                            let image = match reference {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            found.push((format!("volume {name}"), image));
                        }
                    }
                }
                if CONTAINER_FIELDS.contains(&key.as_str())
                    && let Value::Array(entries) = child
                {
                    for entry in entries {
                        if let Some(image) = entry.get("image") {
                            let name = entry
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_owned();
                            let image = match image {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            };
                            found.push((name, image));
                        }
                    }
                }
                container_images(child, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                container_images(item, found);
            }
        }
        _ => {}
    }
}

/// The object as sent: its settled namespace, lockstep's annotation, and none of the fields
/// a server-side apply refuses or treats as preconditions.
fn finish_body(mut body: Map<String, Value>, key: &ObjectRef, sync: &SyncId) -> Value {
    let metadata = body
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(metadata) = metadata {
        if key.namespace.is_empty() {
            metadata.remove("namespace");
        } else {
            metadata.insert("namespace".into(), Value::String(key.namespace.clone()));
        }
        for field in [
            "resourceVersion",
            "uid",
            "managedFields",
            "creationTimestamp",
        ] {
            metadata.remove(field);
        }
        let annotations = metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Value::Object(annotations) = annotations {
            annotations.insert(SYNC_ANNOTATION.into(), Value::String(sync.to_string()));
        }
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::SourceFiles;
    use crate::signing::{AllowedSigners, SigningKey};
    use crate::verify::{TrustPolicy, scan_dir, verify_dir};

    const DIGEST_A: &str =
        "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str =
        "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// A signed, bound lockfile over `manifests`, as `lockstep lock` would write it.
    struct Signed {
        files: SourceFiles,
        trust: AllowedSigners,
    }

    fn signed(manifests: &[(&str, &str)], generation: u64) -> Signed {
        signed_for(manifests, generation, None)
    }

    fn signed_for(
        manifests: &[(&str, &str)],
        generation: u64,
        environment: Option<&str>,
    ) -> Signed {
        let mut files = SourceFiles::default();
        for (path, text) in manifests {
            files
                .insert((*path).into(), text.as_bytes().to_vec())
                .unwrap();
        }
        let scan = scan_dir(&files).unwrap();
        let created = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let mut lock = crate::lockfile::Lockfile::build(
            generation,
            created,
            scan.binding.clone(),
            &scan.uses,
            &BTreeMap::new(),
        );
        lock.environment = environment.map(str::to_owned);
        let bytes = lock.to_bytes();
        let key = SigningKey::generate("ci@example.com").unwrap();
        let signature = key.sign(&bytes).unwrap();
        files.insert("lockstep.lock".into(), bytes).unwrap();
        files
            .insert("lockstep.lock.ci.sig".into(), signature.into_bytes())
            .unwrap();
        let trust =
            AllowedSigners::parse(&key.allowed_signers_line("ci@example.com"), "trust").unwrap();
        Signed { files, trust }
    }

    fn objects(s: &Signed) -> Result<VerifiedObjects, PlanError> {
        let policy = TrustPolicy {
            signers: &s.trust,
            at: jiff::Timestamp::from_second(1_700_000_100).unwrap(),
            threshold: 1,
            environment: None,
            strict: false,
        };
        let verified = verify_dir(&s.files, &policy).unwrap();
        VerifiedObjects::parse(&verified)
    }

    fn settings() -> PlanSettings {
        PlanSettings {
            sync: SyncId {
                namespace: "ops".into(),
                name: "shop".into(),
            },
            default_namespace: "shop".into(),
            environment: None,
        }
    }

    fn core_scopes() -> KindScopes {
        [
            ("v1", "Namespace", Scope::Cluster),
            ("v1", "ConfigMap", Scope::Namespaced),
            ("v1", "Service", Scope::Namespaced),
            ("apps/v1", "Deployment", Scope::Namespaced),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRole",
                Scope::Cluster,
            ),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                Scope::Cluster,
            ),
        ]
        .into_iter()
        .map(|(a, k, s)| {
            (
                TypeKey {
                    api_version: a.into(),
                    kind: k.into(),
                },
                s,
            )
        })
        .collect()
    }

    fn deployment(name: &str, image: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {image}\n"
        )
    }

    const CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: caches.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Cache, plural: caches, singular: cache, listKind: CacheList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                containers: {type: object}
";

    fn plan_of(manifests: &[(&str, &str)]) -> Result<ApplyPlan, PlanError> {
        objects(&signed(manifests, 1))?.plan(&settings(), &core_scopes())
    }

    #[test]
    fn namespaces_and_crds_come_first_and_file_order_is_kept() {
        let app = deployment("api", &format!("reg.example.com/api:1@{DIGEST_A}"));
        let plan = plan_of(&[
            ("a-app.yaml", &app),
            (
                "b-config.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n",
            ),
            (
                "c-ns.yaml",
                "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
            ),
            ("d-crd.yaml", CRD),
            (
                "e-cache.yaml",
                "apiVersion: example.com/v1\nkind: Cache\nmetadata: {name: c1}\n",
            ),
        ])
        .unwrap();
        let order: Vec<String> = plan.objects().iter().map(|o| o.key().to_string()).collect();
        assert_eq!(
            order,
            [
                "Namespace/shop",
                "CustomResourceDefinition/caches.example.com",
                "Deployment/shop/api",
                "ConfigMap/shop/settings",
                "Cache/shop/c1",
            ]
        );
        assert_eq!(plan.stage(Stage::Definitions).count(), 2);
        assert_eq!(
            plan.defined_kinds(),
            [DefinedKind {
                type_key: TypeKey {
                    api_version: "example.com/v1".into(),
                    kind: "Cache".into()
                },
                group: "example.com".into(),
                version: "v1".into(),
                plural: "caches".into(),
                scope: Scope::Namespaced,
            }]
        );
        assert!(plan.objects()[1].is_crd());
        assert!(!plan.objects()[0].is_crd());
    }

    #[test]
    fn namespaced_objects_get_the_default_namespace_and_the_sync_annotation() {
        let plan = plan_of(&[(
            "x.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: other, resourceVersion: \"7\"}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader, namespace: ignored}\n",
        )])
        .unwrap();
        let bodies: Vec<&Value> = plan.objects().iter().map(|o| o.body()).collect();
        assert_eq!(bodies[0]["metadata"]["namespace"], "shop");
        assert_eq!(bodies[1]["metadata"]["namespace"], "other");
        assert!(bodies[1]["metadata"].get("resourceVersion").is_none());
        assert!(bodies[2]["metadata"].get("namespace").is_none());
        assert_eq!(plan.objects()[2].key().namespace, "");
        for body in bodies {
            assert_eq!(body["metadata"]["annotations"][SYNC_ANNOTATION], "ops/shop");
        }
    }

    #[test]
    fn lists_are_expanded_and_documents_without_kind_skipped() {
        let plan = plan_of(&[(
            "list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: one}\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: two}\n---\nfoo: bar\n---\n",
        )])
        .unwrap();
        let names: Vec<&str> = plan
            .objects()
            .iter()
            .map(|o| o.key().name.as_str())
            .collect();
        assert_eq!(names, ["one", "two"]);
    }

    #[test]
    fn an_unpinned_image_in_an_unscanned_kind_refuses_the_commit() {
        // The scanner does not know `Cache`; lockstep.lock verifies; the plan still refuses.
        let err = plan_of(&[
            ("crd.yaml", CRD),
            (
                "cache.yaml",
                "apiVersion: example.com/v1\nkind: Cache\nmetadata: {name: c1}\nspec:\n  template:\n    containers:\n      - name: warm\n        image: reg.example.com/warm:1\n",
            ),
        ])
        .unwrap_err();
        assert!(matches!(err, PlanError::Unpinned { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("cache.yaml"), "{message}");
        assert!(message.contains("Cache c1"), "{message}");
        assert!(message.contains("\"warm\""), "{message}");
        assert!(message.contains("reg.example.com/warm:1"), "{message}");
    }

    #[test]
    fn a_digest_the_lockfile_does_not_list_is_refused() {
        let err = plan_of(&[
            ("a.yaml", &deployment("api", &format!("reg.example.com/api:1@{DIGEST_A}"))),
            ("crd.yaml", CRD),
            (
                "cache.yaml",
                &format!("apiVersion: example.com/v1\nkind: Cache\nmetadata: {{name: c1}}\nspec:\n  containers:\n    - name: warm\n      image: reg.example.com/warm@{DIGEST_B}\n"),
            ),
        ])
        .unwrap_err();
        assert!(matches!(err, PlanError::NotInLock { .. }), "{err}");
    }

    #[test]
    fn duplicates_and_unknown_kinds_are_refused_by_name() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
        let err = plan_of(&[("one.yaml", cm), ("two.yaml", cm)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ConfigMap/shop/a is defined twice: in one.yaml and in two.yaml"
        );
        let err = plan_of(&[(
            "w.yaml",
            "apiVersion: example.com/v9\nkind: Widget\nmetadata: {name: w}\n",
        )])
        .unwrap_err();
        assert!(matches!(err, PlanError::UnknownKind { .. }), "{err}");
        assert!(err.to_string().contains("example.com/v9 Widget"), "{err}");
    }

    #[test]
    fn objects_need_a_name() {
        let err = plan_of(&[(
            "g.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: cm-}\n",
        )])
        .unwrap_err();
        assert!(matches!(err, PlanError::NoName { .. }), "{err}");
    }

    #[test]
    fn kinds_defined_by_the_commit_need_no_discovery() {
        let objects = objects(&signed(
            &[
                ("crd.yaml", CRD),
                (
                    "c.yaml",
                    "apiVersion: example.com/v1\nkind: Cache\nmetadata: {name: c1}\n",
                ),
                (
                    "m.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\n",
                ),
            ],
            1,
        ))
        .unwrap();
        let kinds: Vec<String> = objects
            .kinds_to_discover()
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "apiextensions.k8s.io/v1 CustomResourceDefinition",
                "v1 ConfigMap"
            ]
        );
    }

    #[test]
    fn the_environment_must_match_when_set() {
        let manifests = [(
            "m.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\n",
        )];
        let mut prod = settings();
        prod.environment = Some("prod".into());
        let err = objects(&signed(&manifests, 1))
            .unwrap()
            .plan(&prod, &core_scopes())
            .unwrap_err();
        assert!(matches!(err, PlanError::Environment { .. }), "{err}");
        let staging = objects(&signed_for(&manifests, 1, Some("staging"))).unwrap();
        assert!(staging.plan(&prod, &core_scopes()).is_err());
        let matching = objects(&signed_for(&manifests, 1, Some("prod"))).unwrap();
        assert!(matching.plan(&prod, &core_scopes()).is_ok());
    }

    #[test]
    fn the_plan_carries_the_lockfile_identity_and_signers() {
        let s = signed(
            &[(
                "m.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\n",
            )],
            4,
        );
        let plan = objects(&s)
            .unwrap()
            .plan(&settings(), &core_scopes())
            .unwrap();
        assert_eq!(plan.lock().generation, 4);
        assert_eq!(plan.lock().sha256, Digest::of(s.files.lockfile().unwrap()));
        assert_eq!(plan.signers(), ["ci@example.com"]);
    }

    fn obj(api: &str, kind: &str, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: api.into(),
            kind: kind.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn prune_set_is_the_previous_inventory_minus_the_plan_namespaces_last() {
        let plan = plan_of(&[(
            "m.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept}\n",
        )])
        .unwrap();
        let previous = vec![
            obj("v1", "Namespace", "", "old"),
            obj(
                "apiextensions.k8s.io/v1",
                CRD_KIND,
                "",
                "widgets.example.com",
            ),
            obj("v1", "ConfigMap", "shop", "kept"),
            obj("v1", "ConfigMap", "shop", "gone"),
            obj("example.com/v1", "Widget", "old", "w"),
            obj("apps/v1", "Deployment", "old", "api"),
        ];
        let set = plan.prune_set(&previous, |_| None);
        let pruned: Vec<String> = set.delete.iter().map(|o| o.to_string()).collect();
        // Custom resources and namespaced objects before their CRDs and Namespaces.
        assert_eq!(
            pruned,
            [
                "ConfigMap/shop/gone",
                "Widget/old/w",
                "Deployment/old/api",
                "Namespace/old",
                "CustomResourceDefinition/widgets.example.com"
            ]
        );
        assert_eq!(set.kept, []);
        assert_eq!(
            plan.inventory(),
            vec![obj("v1", "ConfigMap", "shop", "kept")]
        );
    }

    #[test]
    fn a_namespace_or_crd_the_plan_still_uses_is_kept_not_pruned() {
        // regression: dropping only the `Namespace team` manifest deleted the namespace, and
        // with it a Deployment the same commit still declared.
        let mut scopes = core_scopes();
        let widget = TypeKey {
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
        };
        scopes.insert(widget, Scope::Namespaced);
        let app = deployment("api", &format!("reg.example.com/api:1@{DIGEST_A}"));
        let widget =
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w, namespace: team}\n";
        let plan = objects(&signed(&[("app.yaml", &app), ("w.yaml", widget)], 1))
            .unwrap()
            .plan(&settings(), &scopes)
            .unwrap();
        let team = plan.objects()[0].key().namespace.clone();
        let previous = vec![
            obj("v1", "Namespace", "", &team),
            obj("v1", "Namespace", "", "team"),
            obj("v1", "Namespace", "", "empty"),
            obj(
                "apiextensions.k8s.io/v1",
                CRD_KIND,
                "",
                "widgets.example.com",
            ),
        ];
        let crd_of = |t: &TypeKey| (t.kind == "Widget").then(|| crd_name(t, "widgets").unwrap());
        let set = plan.prune_set(&previous, crd_of);
        assert_eq!(set.delete, [obj("v1", "Namespace", "", "empty")]);
        let kept: Vec<(String, &str, String)> = set
            .kept
            .iter()
            .map(|k| (k.object.to_string(), k.reason.code(), k.reason.to_string()))
            .collect();
        assert_eq!(
            kept,
            [
                (
                    format!("Namespace/{team}"),
                    "HoldsDeclaredObjects",
                    format!("the commit still declares 1 object(s) in it: Deployment/{team}/api")
                ),
                (
                    "Namespace/team".into(),
                    "HoldsDeclaredObjects",
                    "the commit still declares 1 object(s) in it: Widget/team/w".into()
                ),
                (
                    "CustomResourceDefinition/widgets.example.com".into(),
                    "HoldsDeclaredObjects",
                    "the commit still declares 1 object(s) in it: Widget/team/w".into()
                ),
            ]
        );
    }
}

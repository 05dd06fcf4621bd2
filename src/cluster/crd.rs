//! The `LockstepSync` custom resource (`lockstep.dev/v1alpha1`): what a cluster should follow
//! (a Git URL, a ref, a path, whom to trust) and what the reconciler last did about it.
//!
//! Pure data: the schema in `schema/crd.yaml` is generated from these types.

use kube::CustomResource;
use kube::core::Duration;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::ObjectRef;

/// The API group of lockstep's resources.
pub const GROUP: &str = "lockstep.dev";
/// The key of the allowed_signers file in the trust ConfigMap or Secret, when none is named.
pub const DEFAULT_TRUST_KEY: &str = "allowed_signers";

/// Follow one manifests directory of one Git repository: apply a commit only when its
/// lockfile is signed by the trusted keys and binds every manifest and image.
// Each printcolumn repeats `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "lockstep.dev",
    version = "v1alpha1",
    kind = "LockstepSync",
    namespaced,
    status = "LockstepSyncStatus",
    shortname = "lss",
    category = "lockstep",
    doc = "Apply the manifests of a Git commit only when its signed lockfile verifies: trusted signatures, a manifests binding, every image digest-pinned.",
    derive = "PartialEq",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Commit", type_ = "string", json_path = ".status.appliedCommit"),
    printcolumn(
        name = "Generation",
        type_ = "integer",
        json_path = ".status.appliedGeneration"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LockstepSyncSpec {
    /// The Git repository: `https://…` (a token from `gitCredentials`), `ssh://…` or
    /// `user@host:path` (a deploy key and host keys from `gitCredentials`), or `file://…`.
    pub url: String,
    /// What to follow: one of a branch, a tag or a commit id. Default: the branch `main`.
    #[serde(rename = "ref", default)]
    pub git_ref: GitRef,
    /// The manifests directory inside the repository ('/'-separated; empty for the root).
    #[serde(default)]
    pub path: String,
    /// How often to fetch and re-apply (Go duration: `30s`, `5m`, `1h`).
    #[serde(default = "default_interval")]
    #[schemars(schema_with = "duration_schema")]
    pub interval: Duration,
    /// The trusted signers: an `allowed_signers` file in a ConfigMap or Secret of this
    /// namespace. Never read from the repository.
    pub trust: TrustRef,
    /// How many distinct trusted principals must have signed the lockfile.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1))]
    pub threshold: u32,
    /// Delete objects a previous commit applied and this one no longer has.
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Do nothing while true (the last applied state stays).
    #[serde(default)]
    pub suspend: bool,
    /// The namespace of namespaced objects that name none. Default: this resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// When set, the lockfile's `environment` must equal it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Refuse commits with objects of kinds lockstep has no image paths for that hold
    /// `image` fields (their images would be applied unpinned and unchecked by the scanner).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// A Secret of this namespace with the Git credentials: for HTTPS `token`, or `username`
    /// and `password`; for SSH `identity` (an unencrypted OpenSSH private key) and
    /// `known_hosts` (the only host keys accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_credentials: Option<SecretName>,
    /// Pull every image from its copy in this mirror (`REGISTRY[/PATH]`, as given to
    /// `lockstep mirror --to`), by the same digest: for when the source registry lost the
    /// images or is unreachable. A commit whose signed lockfile does not record the mirror
    /// for every image is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Before rolling out a new lockfile, ask the registries (or the mirror) for every digest
    /// it pins, by digest, and refuse it (`ImagesMissing`, the applied state kept) when any
    /// is gone. Registry credentials come from the controller's Docker config
    /// (`$DOCKER_CONFIG/config.json`).
    #[serde(default)]
    pub check_images: bool,
    /// Require every lockfile to be a promotion (`lockstep promote`) from another
    /// environment: its signed record names a source lockfile that must be in this
    /// repository's history (the commit recorded, or one reachable from the fetched commit)
    /// with exactly the recorded bytes, and must have verified for that environment when it
    /// was promoted. Otherwise refused (`PromotionUnverified`), the applied state kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionSpec>,
    /// Require every image (or those `images` matches) to record, in the signed lockfile, a
    /// cosign signature that verifies under one of the cluster's own keys — whatever the
    /// repository's `lockstep.toml` says. Otherwise refused (`ProvenanceUnverified`), the
    /// applied state kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<ProvenanceSpec>,
}

/// The cluster's own provenance requirement.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceSpec {
    /// A ConfigMap or Secret key holding the cosign public keys (PEM `PUBLIC KEY` blocks,
    /// ECDSA P-256 or Ed25519), one of which must have signed each image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<TrustRef>,
    /// Or signatures made with a certificate chaining to these roots, for this identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateRequirement>,
    /// The images it applies to (`registry/repository` patterns: `*` within a component,
    /// `**` across). Default: every image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// In-toto predicate types (e.g. `https://slsa.dev/provenance/v1`) each such image must
    /// also record an attestation of, signed by these keys or this certificate identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<String>,
}

/// A certificate requirement of `spec.provenance`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequirement {
    /// A ConfigMap or Secret key holding the trusted root certificates (PEM).
    pub roots: TrustRef,
    /// The SAN email or URI the signing certificate must name.
    pub identity: String,
    /// The OIDC issuer it must carry (Fulcio's extension).
    pub issuer: String,
}

/// What a promotion must come from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionSpec {
    /// The environment the lockfile must have been promoted from.
    pub from: String,
    /// Who may sign the source lockfile. Default: `spec.trust`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustRef>,
    /// How many distinct trusted principals must have signed the source lockfile.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1))]
    pub threshold: u32,
}

/// A Git reference to follow. Exactly one field may be set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitRef {
    /// A branch name (`main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A tag name (`v1.2.0`); annotated tags are peeled to their commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A full commit id (40 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Default for GitRef {
    fn default() -> Self {
        GitRef {
            branch: Some("main".to_owned()),
            tag: None,
            commit: None,
        }
    }
}

/// A [`GitRef`] with exactly one of its fields set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revision {
    Branch(String),
    Tag(String),
    Commit(String),
}

/// A [`GitRef`] that names no revision, or more than one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.ref must set exactly one of branch, tag and commit (it sets {set})")]
pub struct RefSpecError {
    /// What the spec set, for the message.
    pub set: String,
}

impl GitRef {
    /// The one revision this reference names.
    pub fn revision(&self) -> Result<Revision, RefSpecError> {
        match (&self.branch, &self.tag, &self.commit) {
            (Some(b), None, None) => Ok(Revision::Branch(b.clone())),
            (None, Some(t), None) => Ok(Revision::Tag(t.clone())),
            (None, None, Some(c)) => Ok(Revision::Commit(c.clone())),
            _ => {
                let set: Vec<&str> = [
                    self.branch.as_ref().map(|_| "branch"),
                    self.tag.as_ref().map(|_| "tag"),
                    self.commit.as_ref().map(|_| "commit"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(RefSpecError {
                    set: if set.is_empty() {
                        "none".to_owned()
                    } else {
                        set.join(" and ")
                    },
                })
            }
        }
    }
}

/// Where the trusted `allowed_signers` file is.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrustRef {
    /// `ConfigMap` or `Secret`.
    pub kind: TrustKind,
    /// The object's name, in this resource's namespace.
    pub name: String,
    /// The key holding the allowed_signers text.
    #[serde(default = "default_trust_key")]
    pub key: String,
}

/// The kind of object holding the trusted signers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TrustKind {
    ConfigMap,
    Secret,
}

/// A Secret in this resource's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct SecretName {
    /// The Secret's name.
    pub name: String,
}

/// What the reconciler last saw and did.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockstepSyncStatus {
    /// The `metadata.generation` of the spec the last pass worked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The commit the last pass fetched (applied or refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_commit: Option<String>,
    /// The commit whose manifests are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_commit: Option<String>,
    /// The lockfile generation applied; a lower one is refused (rollback protection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<u64>,
    /// The sha256 of the applied lockfile's bytes (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_lockfile_sha256: Option<String>,
    /// When the applied lockfile was first applied (RFC 3339); kept while later passes apply
    /// the same lockfile bytes. `lockstep promote --soak` measures from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// SHA-256 of the objects the applied commit asked for, as applied (after the spec's
    /// namespace and mirror): a pass whose plan has the same digest applies the same desired
    /// state, so any change it finds is drift, whatever else the spec changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_desired_sha256: Option<String>,
    /// The trusted principals whose signatures approved the applied lockfile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
    /// The lockfiles applied lately, newest first, with the keys that approved each: a new
    /// lockfile may not go below the highest one whose keys are still trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applied_history: Vec<AppliedRecord>,
    /// Every object the applied commit holds: what a later commit may prune.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// Ready, Verified, Applied, Healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last pass's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// How many times an applied object was found changed in the cluster and put back.
    #[serde(default)]
    pub drift_count: u64,
    /// What the last pass with something to prune deleted and kept (kept across passes with
    /// nothing to prune). With `spec.prune: false`, what a prune would have deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prune: Option<PruneRecord>,
    /// When a Git push webhook last asked for a pass (RFC 3339), written by the receiver
    /// (field manager `lockstep-webhook`) of whichever replica took it: a new value makes a
    /// pass due at once, on the replica that reconciles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_requested_at: Option<String>,
    /// Objects of the applied commit that another LockstepSync owns (its `lockstep.dev/sync`
    /// annotation): not applied, not in the inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<ConflictEntry>,
}

/// What one prune did; each list holds at most [`PruneRecord::LISTED`] objects, the counts
/// are complete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneRecord {
    /// The commit whose pass pruned.
    pub commit: String,
    /// When (RFC 3339).
    pub time: String,
    /// True when `spec.prune` is false: nothing was deleted, `deleted` is what would have
    /// been (the API server's dry run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// How many objects were deleted.
    pub deleted_count: usize,
    /// The deleted objects, in deletion order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<InventoryEntry>,
    /// How many objects the commit dropped but the prune kept.
    pub kept_count: usize,
    /// The kept objects, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptEntry>,
}

impl PruneRecord {
    /// Objects listed per list; beyond that only counted.
    pub const LISTED: usize = 50;
}

/// An object the commit dropped that the prune did not delete.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptEntry {
    pub object: InventoryEntry,
    /// `NotOurs`, `HoldsDeclaredObjects`, `HoldsForeignObjects` or `ContentsUnchecked`.
    pub reason: String,
    /// The objects that held it, or why its contents could not be checked.
    pub message: String,
}

/// An object another LockstepSync owns.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictEntry {
    pub object: InventoryEntry,
    /// The owning sync, `<namespace>/<name>`.
    pub owner: String,
}

/// A lockfile that was applied, and the keys that approved it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRecord {
    /// The lockfile's generation.
    pub generation: u64,
    /// The sha256 of its bytes (`sha256:…`).
    pub lockfile_sha256: String,
    /// The commit it was last applied from.
    pub commit: String,
    /// The trusted keys whose signatures approved it, with the principals that admitted
    /// each then.
    pub signers: Vec<RecordedSigner>,
    /// The threshold of distinct approvals it met.
    pub threshold: u32,
}

/// One approval of an applied lockfile (the plan records it, the status keeps it).
pub use lockstep_core::plan::RecordedSigner;

/// An object lockstep applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
}

impl From<&ObjectRef> for InventoryEntry {
    fn from(o: &ObjectRef) -> Self {
        InventoryEntry {
            api_version: o.api_version.clone(),
            kind: o.kind.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
        }
    }
}

impl From<&InventoryEntry> for ObjectRef {
    fn from(e: &InventoryEntry) -> Self {
        ObjectRef {
            api_version: e.api_version.clone(),
            kind: e.kind.clone(),
            namespace: e.namespace.clone(),
            name: e.name.clone(),
        }
    }
}

/// A status condition, as Kubernetes conventions shape them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Verified`, `Applied` or `Healthy`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word: why.
    pub reason: String,
    /// What happened, naming the file, object, container or key concerned.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn default_interval() -> Duration {
    std::time::Duration::from_secs(300).into()
}

fn default_threshold() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

fn default_trust_key() -> String {
    DEFAULT_TRUST_KEY.to_owned()
}

fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "default": "5m",
        "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$",
        "description": "How often to fetch and re-apply (Go duration: `30s`, `5m`, `1h`)."
    })
}

/// The CustomResourceDefinition as YAML: what `schema/crd.yaml` holds.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    let crd = LockstepSync::crd();
    let body = serde_saphyr::to_string(&crd).expect("a CRD serializes to YAML");
    format!(
        "# Generated from src/cluster/crd.rs by `LOCKSTEP_UPDATE_SCHEMA=1 cargo test --lib crd`; do not edit.\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/crd.yaml");
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current != crd_yaml() {
            if std::env::var_os("LOCKSTEP_UPDATE_SCHEMA").is_some() {
                std::fs::write(path, crd_yaml()).unwrap();
            } else {
                panic!(
                    "schema/crd.yaml is stale: run LOCKSTEP_UPDATE_SCHEMA=1 cargo test --lib crd"
                );
            }
        }
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec: LockstepSyncSpec = serde_json::from_value(serde_json::json!({
            "url": "https://git.example.com/shop.git",
            "trust": {"kind": "ConfigMap", "name": "signers"}
        }))
        .unwrap();
        assert_eq!(spec.git_ref.revision(), Ok(Revision::Branch("main".into())));
        assert_eq!(spec.path, "");
        assert_eq!(
            std::time::Duration::from(spec.interval),
            std::time::Duration::from_secs(300)
        );
        assert_eq!(spec.trust.key, DEFAULT_TRUST_KEY);
        assert_eq!(spec.threshold, 1);
        assert!(spec.prune);
        assert!(!spec.suspend);
        assert_eq!(spec.target_namespace, None);
    }

    #[test]
    fn interval_reads_go_durations() {
        let spec: LockstepSyncSpec = serde_json::from_value(serde_json::json!({
            "url": "file:///repo", "interval": "1m30s",
            "trust": {"kind": "Secret", "name": "s", "key": "signers"}
        }))
        .unwrap();
        assert_eq!(
            std::time::Duration::from(spec.interval),
            std::time::Duration::from_secs(90)
        );
        assert_eq!(spec.trust.kind, TrustKind::Secret);
    }

    #[test]
    fn a_ref_names_exactly_one_revision() {
        let tag = GitRef {
            branch: None,
            tag: Some("v1".into()),
            commit: None,
        };
        assert_eq!(tag.revision(), Ok(Revision::Tag("v1".into())));
        let both = GitRef {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            commit: None,
        };
        let err = both.revision().unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.ref must set exactly one of branch, tag and commit (it sets branch and tag)"
        );
        let none = GitRef {
            branch: None,
            tag: None,
            commit: None,
        };
        assert!(
            none.revision()
                .unwrap_err()
                .to_string()
                .contains("sets none")
        );
    }

    #[test]
    fn the_crd_is_namespaced_with_a_status_subresource() {
        use kube::CustomResourceExt as _;
        let crd = serde_json::to_value(LockstepSync::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "lockstepsyncs.lockstep.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], serde_json::json!(["trust", "url"]));
        assert_eq!(spec["properties"]["prune"]["default"], true);
        assert_eq!(
            spec["properties"]["threshold"]["minimum"].as_f64(),
            Some(1.0)
        );
    }
}

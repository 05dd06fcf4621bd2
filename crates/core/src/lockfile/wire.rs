//! The lockfile as it is written: plain serde types, strings where the domain has types.
//! `schema/lockfile.schema.json` is generated from these (see `schema_json`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `lockstep.lock`, format version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(
    title = "lockstep.lock",
    description = "lockstep lockfile: every image of a manifests directory pinned to a digest, and a binding to the exact manifest bytes. Signed by detached SSHSIG files lockstep.lock.<signer>.sig over its exact bytes."
)]
pub struct WireLockfile {
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// Starts at 1; every new lock of the directory writes the previous generation + 1.
    /// Reconcilers refuse a generation lower than the one they applied (rollback).
    pub generation: u64,
    /// RFC 3339 UTC time the lock was made (`SOURCE_DATE_EPOCH` when set).
    pub created: String,
    /// RFC 3339 UTC time after which verifiers refuse this lock (freeze protection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The environment this lock is for; verifiers configured for another refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub manifests: WireBinding,
    /// Where this lock's digests came from when `lockstep promote` made it: the verified
    /// lockfile of another environment, pinned by its sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<WirePromotion>,
    /// One entry per distinct reference as written (without any digest), sorted.
    #[serde(default, rename = "image")]
    pub images: Vec<WireImage>,
    /// One entry per rendered output (a `[[render]]` step of `lockstep.toml`), sorted by
    /// output: the tool, its version, its arguments and every input file it could read.
    #[serde(default, rename = "render", skip_serializing_if = "Vec::is_empty")]
    pub renders: Vec<WireRender>,
}

/// The lockfile a promotion took its digests from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WirePromotion {
    /// The source lockfile's environment, if it records one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The source lockfile's generation.
    pub generation: u64,
    /// sha256 of the source lockfile's exact bytes.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub lockfile: String,
    /// The source directory, relative to the repository root ('/'-separated; empty for the
    /// root), when it is in the same repository: where verifiers find it in history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The commit the source lockfile was read from, when it was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9a-f]{40}|[0-9a-f]{64})$"))]
    pub commit: Option<String>,
    /// Images (`registry/repository@digest`) the source does not pin, resolved from the
    /// registry (`promote --resolve-missing`); every other digest is the source's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<String>,
}

/// How one rendered output was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WireRender {
    /// The rendered file, relative to the lockfile's directory (also in `[manifests]`).
    pub output: String,
    /// `kustomize` or `helm`.
    pub renderer: String,
    /// The tool's version, as it reported it.
    pub version: String,
    /// The tool's arguments, run from the lockfile's directory.
    pub args: Vec<String>,
    /// A chart from an OCI registry, pinned to its manifest's digest:
    /// `oci://registry/repository:version@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^oci://[^@]+@sha256:[0-9a-f]{64}$"))]
    pub chart: Option<String>,
    /// The input trees and files (relative to the lockfile's directory), sorted.
    pub roots: Vec<String>,
    /// sha256 over the lines `<path>\0<hex sha256>\n` of every file under `roots`, sorted
    /// by path bytes (as `[manifests]`).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub inputs: String,
    /// How many files `inputs` covers.
    pub files: usize,
    /// The lines `inputs` is computed over; must hash to it.
    #[serde(default, rename = "input", skip_serializing_if = "Vec::is_empty")]
    pub listing: Vec<WireBoundFile>,
}

/// Binds the lockfile to the exact manifest bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WireBinding {
    /// sha256 over the lines `<relative path>\0<hex sha256 of the file>\n` of every bound
    /// file (every input file but the lockfile and its signatures), sorted by path bytes.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    /// How many files the digest covers.
    pub files: usize,
    /// The lines the digest is computed over, one per bound file: so that a mismatch can
    /// name the files that changed. Must hash to `digest`. Absent in older lockfiles.
    #[serde(default, rename = "file", skip_serializing_if = "Vec::is_empty")]
    pub listing: Vec<WireBoundFile>,
}

/// One bound file and the sha256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WireBoundFile {
    /// Relative to the lockfile's directory.
    pub path: String,
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub sha256: String,
}

/// One image reference and the digest it is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WireImage {
    /// The reference as written in the manifests, without a digest.
    pub reference: String,
    /// Normalized `registry/repository`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
    pub media_type: String,
    /// For an index or manifest list: each platform's manifest digest.
    #[serde(default, rename = "platform", skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<WirePlatform>,
    /// Other repositories (`registry/repository`) holding the same digest, and for an index
    /// every platform's manifest: copies made by `lockstep mirror`, sorted.
    #[serde(default, rename = "mirror", skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// The digest is *held* (`lockstep lock --hold`, or written by hand): later locks keep
    /// it, whatever the tag says, until `lockstep lock --release` lets it follow the tag.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The cosign signatures of the digest that satisfied its `[[provenance]]` rule, sorted
    /// by `manifest`: kept so that `verify` re-checks them offline.
    #[serde(default, rename = "signature", skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<WireSignature>,
    /// The valid attestations of the types its rule requires (`attestations = [...]`), sorted
    /// by type, manifest and key: which manifest held each and who signed it.
    #[serde(default, rename = "attestation", skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<WireAttestation>,
    /// Every place the image is used.
    #[serde(rename = "use")]
    pub uses: Vec<WireUse>,
}

/// One attestation of an image's digest that satisfied a required predicate type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WireAttestation {
    /// The in-toto predicate type, e.g. `https://slsa.dev/provenance/v1`.
    pub predicate_type: String,
    /// The manifest holding it in the registry (cosign's `.att` manifest or a referrer).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub manifest: String,
    /// The `sha256:` fingerprint of the DER public key that verified its DSSE signature.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub key: String,
    /// When a certificate signed it: the identity the rule required…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// …the signing certificate (DER, base64)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// …and its chain (DER, base64, the leaf's issuer first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
}

/// One cosign signature of an image's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WireSignature {
    /// The signature manifest's digest in the registry (`sha256-<hex>.sig` or a referrer).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub manifest: String,
    /// `dsse` for a Sigstore bundle's DSSE envelope (cosign v3): `payload` is the in-toto
    /// statement and `signature` is over DSSE's pre-authentication encoding of it. Absent
    /// for cosign's simple-signing payload, signed as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^dsse$"))]
    pub format: Option<String>,
    /// The `sha256:` fingerprint of the DER public key that verified it.
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub key: String,
    /// The simple-signing payload (or the DSSE statement), base64.
    pub payload: String,
    /// The signature over the payload's exact bytes (or their DSSE encoding), base64.
    pub signature: String,
    /// When a certificate satisfied the rule: the signing certificate (DER, base64)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// …its chain (DER, base64, the leaf's issuer first)…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<String>,
    /// …and the identity (SAN email or URI) the rule required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WirePlatform {
    /// `os/architecture[/variant]`.
    pub platform: String,
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WireUse {
    /// Manifest file, relative to the lockfile's directory.
    pub file: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    /// `containers/<name>`, `initContainers/<name>`, `ephemeralContainers/<name>` or a
    /// configured custom path.
    pub container: String,
}

/// The JSON schema of the lockfile, as checked in at `schema/lockfile.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(WireLockfile);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

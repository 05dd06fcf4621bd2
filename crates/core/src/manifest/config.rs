//! `lockstep.toml`: where the images are in custom resources.
//!
//! The scanner knows the built-in workload kinds. Custom resources (an Argo Rollout, an
//! operator's CR with a plain `spec.image`) are declared in a `lockstep.toml` in the
//! manifests directory:
//!
//! ```toml
//! [[custom]]
//! api-version = "argoproj.io/v1alpha1"   # exact, or "argoproj.io/*" for any version of a group
//! kind = "Rollout"
//! pod-specs = ["spec.template.spec"]      # pod specs: containers/initContainers/ephemeralContainers under each
//! images = ["spec.image", "spec.sidecars[].image"]   # plain image scalars; `[]` = every list element
//! ```
//!
//! A path is a `.`-separated list of mapping keys; a key followed by `[]` means "every
//! element of the list under this key". Keys containing `.`, `[`, `]` or whitespace cannot
//! be written (no Kubernetes field has one). Each `[[custom]]` entry needs `api-version`,
//! `kind` and at least one path. Unknown keys are refused, so a typo (`pod_specs`) is an
//! error rather than a silently ignored rule. Errors name the file and line.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;

use crate::render::{RenderSource, RenderStep, normalize};

/// The name of the scan configuration file in the manifests directory.
pub const CONFIG_FILE: &str = "lockstep.toml";

/// Extra image locations for custom resources, parsed from `lockstep.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanConfig {
    custom: Vec<CustomPaths>,
    render: Vec<RenderStep>,
    provenance: Vec<ProvenanceSpec>,
}

/// A `[[provenance]]` entry as written: which images, and the files of the cosign keys one of
/// which must have signed each (loaded by [`ScanConfig::provenance_policy`]).
///
/// ```toml
/// [[provenance]]
/// images = ["registry.example.com/shop/*"]   # `*` within a path component, `**` across
/// cosign-keys = ["keys/cosign.pub"]          # in this directory; PEM, ECDSA P-256 or Ed25519
/// # and/or signatures made with a certificate from your CA, for one identity:
/// cosign-certificate = { roots = ["keys/ca.pem"], identity = "ci@example.com", issuer = "https://issuer.example.com" }
/// # and, optionally, attestations each digest must carry, signed the same way:
/// attestations = ["https://slsa.dev/provenance/v1"]
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenanceSpec {
    pub line: usize,
    pub images: Vec<crate::provenance::ImagePattern>,
    pub key_files: Vec<String>,
    /// `cosign-certificate = { roots = [...], identity = "...", issuer = "..." }`.
    pub certificate: Option<CertificateSpec>,
    /// `attestations = [...]`: required in-toto predicate types.
    pub attestations: Vec<String>,
}

/// A `cosign-certificate` requirement as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSpec {
    pub root_files: Vec<String>,
    pub identity: String,
    pub issuer: Option<String>,
}

/// The image locations declared for one apiVersion/kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomPaths {
    pub api_version: ApiVersionMatch,
    pub kind: String,
    /// Paths to pod specs (their containers, initContainers and ephemeralContainers).
    pub pod_specs: Vec<FieldPath>,
    /// Paths to plain image scalars.
    pub images: Vec<FieldPath>,
}

/// Which `apiVersion`s a custom entry applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiVersionMatch {
    /// Exactly this `group/version` (or `version` for the core group).
    Exact(String),
    /// Any version of this group (`group/*`).
    AnyVersionOf(String),
}

/// A path into an object: `spec.sidecars[].image`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    segments: Vec<Segment>,
}

/// One step of a [`FieldPath`]: a mapping key, then (with `[]`) every element of its list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub key: String,
    pub each: bool,
}

/// `lockstep.toml` could not be used; carries the file and line at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not the expected shape (unknown key, missing field, wrong type).
    #[error("{file}:{line}: invalid scan configuration")]
    Syntax {
        file: String,
        line: usize,
        #[source]
        source: crate::error_chain::Quoting,
    },
    /// Well-formed TOML whose values make no sense (an empty kind, a bad path).
    #[error("{file}:{line}: invalid scan configuration: {reason}")]
    Invalid {
        file: String,
        line: usize,
        reason: String,
    },
}

impl ScanConfig {
    /// Parse the text of a `lockstep.toml`; `file_name` is used in error messages only.
    pub fn parse(text: &str, file_name: &str) -> Result<ScanConfig, ConfigError> {
        let wire: WireConfig = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            file: file_name.to_owned(),
            line: source.span().map_or(1, |s| line_of(text, s.start)),
            source: crate::error_chain::Quoting::of(&source),
        })?;
        let invalid = |span: std::ops::Range<usize>, reason: String| ConfigError::Invalid {
            file: file_name.to_owned(),
            line: line_of(text, span.start),
            reason,
        };
        let mut custom = Vec::with_capacity(wire.custom.len());
        for entry in wire.custom {
            let entry_span = entry.span();
            let entry = entry.into_inner();
            let api_version = parse_api_version(entry.api_version.get_ref())
                .map_err(|r| invalid(entry.api_version.span(), r))?;
            let kind = entry.kind.get_ref().trim();
            if kind.is_empty() || kind != entry.kind.get_ref() {
                return Err(invalid(
                    entry.kind.span(),
                    format!(
                        "kind {:?} must be a non-empty name without spaces",
                        entry.kind.get_ref()
                    ),
                ));
            }
            let paths = |list: &[Spanned<String>]| -> Result<Vec<FieldPath>, ConfigError> {
                list.iter()
                    .map(|p| FieldPath::parse(p.get_ref()).map_err(|r| invalid(p.span(), r)))
                    .collect()
            };
            let pod_specs = paths(&entry.pod_specs)?;
            let images = paths(&entry.images)?;
            if pod_specs.is_empty() && images.is_empty() {
                return Err(invalid(
                    entry_span,
                    format!(
                        "the entry for {} declares neither pod-specs nor images",
                        entry.kind.get_ref()
                    ),
                ));
            }
            custom.push(CustomPaths {
                api_version,
                kind: kind.to_owned(),
                pod_specs,
                images,
            });
        }
        let render = parse_renders(wire.render, &invalid)?;
        let mut provenance = Vec::with_capacity(wire.provenance.len());
        for entry in wire.provenance {
            let span = entry.span();
            let entry = entry.into_inner();
            let images = entry
                .images
                .iter()
                .map(|p| {
                    crate::provenance::ImagePattern::parse(p.get_ref())
                        .map_err(|r| invalid(p.span(), r))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let in_dir = |k: &Spanned<String>, what: &str| {
                let normal = normalize(k.get_ref()).map_err(|r| invalid(k.span(), r))?;
                if normal.starts_with("../") || normal == ".." {
                    return Err(invalid(
                        k.span(),
                        format!(
                            "{what} {:?} is outside this directory: keep it beside lockstep.toml, so the lockfile binds it",
                            k.get_ref()
                        ),
                    ));
                }
                Ok(normal)
            };
            let key_files = entry
                .cosign_keys
                .iter()
                .map(|k| in_dir(k, "cosign key"))
                .collect::<Result<Vec<_>, _>>()?;
            let certificate = match entry.cosign_certificate {
                None => None,
                Some(c) => {
                    let c_span = c.span();
                    let c = c.into_inner();
                    let root_files = c
                        .roots
                        .iter()
                        .map(|r| in_dir(r, "certificate root"))
                        .collect::<Result<Vec<_>, _>>()?;
                    let identity = c.identity.get_ref().trim().to_owned();
                    let issuer = c.issuer.get_ref().trim().to_owned();
                    if root_files.is_empty() || identity.is_empty() || issuer.is_empty() {
                        return Err(invalid(
                            c_span,
                            "cosign-certificate needs `roots`, an `identity` (a SAN email or URI) and the OIDC `issuer` that vouched for it (as cosign verify --certificate-oidc-issuer requires)".into(),
                        ));
                    }
                    Some(CertificateSpec {
                        root_files,
                        identity,
                        issuer: Some(issuer),
                    })
                }
            };
            let mut attestations: Vec<String> = Vec::with_capacity(entry.attestations.len());
            for t in &entry.attestations {
                let text = t.get_ref().trim();
                if text.is_empty() || text.len() > 256 || text.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        t.span(),
                        "an attestation is named by its in-toto predicate type, a URI such as https://slsa.dev/provenance/v1 (at most 256 bytes)".into(),
                    ));
                }
                if text == crate::provenance::bundle::COSIGN_SIGN_PREDICATE {
                    return Err(invalid(
                        t.span(),
                        format!(
                            "{text} is cosign's signature, not an attestation: the rule requires a signature already"
                        ),
                    ));
                }
                if attestations.iter().any(|a| a == text) {
                    return Err(invalid(
                        t.span(),
                        format!("attestation {text:?} is listed twice"),
                    ));
                }
                attestations.push(text.to_owned());
            }
            if attestations.len() > crate::provenance::MAX_RECORDS {
                return Err(invalid(
                    span.clone(),
                    format!(
                        "at most {} attestations per rule",
                        crate::provenance::MAX_RECORDS
                    ),
                ));
            }
            if images.is_empty() || (key_files.is_empty() && certificate.is_none()) {
                return Err(invalid(
                    span,
                    "a [[provenance]] entry needs `images`, and `cosign-keys` or `cosign-certificate`".into(),
                ));
            }
            provenance.push(ProvenanceSpec {
                line: line_of(text, span.start),
                images,
                key_files,
                certificate,
                attestations,
            });
        }
        Ok(ScanConfig {
            custom,
            render,
            provenance,
        })
    }

    /// The `[[provenance]]` entries as written, in file order.
    pub fn provenance(&self) -> &[ProvenanceSpec] {
        &self.provenance
    }

    /// The provenance policy, its keys read from `files` (each must be an input file of the
    /// directory); an error names the file and line of the entry, and the key file.
    pub fn provenance_policy(
        &self,
        files: &crate::files::SourceFiles,
    ) -> Result<crate::provenance::Policy, ConfigError> {
        let mut rules = Vec::with_capacity(self.provenance.len());
        for spec in &self.provenance {
            let invalid = |reason: String| ConfigError::Invalid {
                file: CONFIG_FILE.to_owned(),
                line: spec.line,
                reason,
            };
            let mut keys = Vec::with_capacity(spec.key_files.len());
            for file in &spec.key_files {
                let bytes = files.files.get(file).ok_or_else(|| {
                    invalid(format!("cosign key {file} is not a file of this directory"))
                })?;
                keys.push(
                    crate::provenance::CosignKey::from_pem(file, bytes)
                        .map_err(|e| invalid(e.to_string()))?,
                );
            }
            let certificate = match &spec.certificate {
                None => None,
                Some(c) => {
                    let mut roots = Vec::new();
                    for file in &c.root_files {
                        let bytes = files.files.get(file).ok_or_else(|| {
                            invalid(format!(
                                "certificate root {file} is not a file of this directory"
                            ))
                        })?;
                        roots.extend(
                            crate::provenance::certificate::pem_chain(bytes)
                                .map_err(|e| invalid(format!("{file}: {e}")))?,
                        );
                    }
                    Some(crate::provenance::CertificatePolicy {
                        roots,
                        root_files: c.root_files.clone(),
                        identity: c.identity.clone(),
                        issuer: c.issuer.clone(),
                    })
                }
            };
            rules.push(crate::provenance::ProvenanceRule {
                at: format!("{CONFIG_FILE}:{}", spec.line),
                images: spec.images.clone(),
                keys,
                key_files: spec.key_files.clone(),
                certificate,
                attestations: spec.attestations.clone(),
            });
        }
        Ok(crate::provenance::Policy { rules })
    }

    /// The declared render steps, in file order.
    pub fn renders(&self) -> &[RenderStep] {
        &self.render
    }

    /// The declared custom resource entries, in file order.
    pub fn custom(&self) -> &[CustomPaths] {
        &self.custom
    }

    /// The entries that apply to an object of this apiVersion and kind.
    pub fn matching<'a>(
        &'a self,
        api_version: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a CustomPaths> + 'a {
        self.custom
            .iter()
            .filter(move |c| c.matches(api_version, kind))
    }
}

impl CustomPaths {
    /// Whether this entry applies to an object of this apiVersion and kind.
    pub fn matches(&self, api_version: &str, kind: &str) -> bool {
        self.kind == kind && self.api_version.matches(api_version)
    }
}

impl ApiVersionMatch {
    /// Whether `api_version` (as written in an object) is matched.
    pub fn matches(&self, api_version: &str) -> bool {
        match self {
            ApiVersionMatch::Exact(v) => v == api_version,
            ApiVersionMatch::AnyVersionOf(group) => api_version
                .split_once('/')
                .is_some_and(|(g, version)| g == group && !version.is_empty()),
        }
    }
}

impl fmt::Display for ApiVersionMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiVersionMatch::Exact(v) => f.write_str(v),
            ApiVersionMatch::AnyVersionOf(g) => write!(f, "{g}/*"),
        }
    }
}

impl FieldPath {
    /// Parse `a.b[].c`; the error says what is wrong with the path.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        if text.is_empty() {
            return Err("a path must not be empty".to_owned());
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (key, each) = match part.strip_suffix("[]") {
                Some(key) => (key, true),
                None => (part, false),
            };
            if key.is_empty() {
                return Err(format!("path {text:?} has an empty key"));
            }
            if key
                .chars()
                .any(|c| c == '[' || c == ']' || c.is_whitespace())
            {
                return Err(format!(
                    "path {text:?}: key {key:?} may not contain '[', ']' or whitespace (`[]` only ends a key)"
                ));
            }
            segments.push(Segment {
                key: key.to_owned(),
                each,
            });
        }
        Ok(FieldPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The steps of the path, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The path as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_api_version(text: &str) -> Result<ApiVersionMatch, String> {
    let bad = |why: &str| format!("api-version {text:?} {why}");
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return Err(bad("must be a non-empty group/version without spaces"));
    }
    if let Some(group) = text.strip_suffix("/*") {
        if group.is_empty() || group.contains(['/', '*']) {
            return Err(bad("must be `group/*` with a non-empty group"));
        }
        return Ok(ApiVersionMatch::AnyVersionOf(group.to_owned()));
    }
    if text.contains('*') {
        return Err(bad("may use `*` only as the whole version (`group/*`)"));
    }
    if text.matches('/').count() > 1 || text.starts_with('/') || text.ends_with('/') {
        return Err(bad("must be `group/version` or `version`"));
    }
    Ok(ApiVersionMatch::Exact(text.to_owned()))
}

/// 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireConfig {
    #[serde(default)]
    custom: Vec<Spanned<WireCustom>>,
    #[serde(default)]
    render: Vec<Spanned<WireRender>>,
    #[serde(default)]
    provenance: Vec<Spanned<WireProvenance>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WireProvenance {
    #[serde(default)]
    images: Vec<Spanned<String>>,
    #[serde(default)]
    cosign_keys: Vec<Spanned<String>>,
    cosign_certificate: Option<Spanned<WireCertificate>>,
    #[serde(default)]
    attestations: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WireCertificate {
    #[serde(default)]
    roots: Vec<Spanned<String>>,
    identity: Spanned<String>,
    issuer: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRender {
    kustomize: Option<Spanned<String>>,
    helm: Option<Spanned<WireHelm>>,
    output: Spanned<String>,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WireHelm {
    chart: Spanned<String>,
    release: Spanned<String>,
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    values: Vec<Spanned<String>>,
    kube_version: Option<Spanned<String>>,
}

/// A Helm release name: what `helm template` accepts (lowercase DNS-1123, at most 53).
fn valid_release(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 53
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A namespace name: an RFC 1123 label, as the API server requires.
fn valid_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A version `helm template --kube-version` accepts: `v1.33`, `1.33.0`, `v1.33.0-rc.1`.
fn valid_kube_version(version: &str) -> bool {
    let rest = version.strip_prefix('v').unwrap_or(version);
    version.len() <= 64
        && rest.starts_with(|c: char| c.is_ascii_digit())
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

/// The `[[render]]` entries, validated: exactly one of `kustomize` and `helm`, an output
/// that is a manifest file inside the locked directory (each output once), relative input
/// paths, a valid release name, a chart in the repository.
fn parse_renders(
    wire: Vec<Spanned<WireRender>>,
    invalid: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<Vec<RenderStep>, ConfigError> {
    let path = |p: &Spanned<String>| {
        let normal = normalize(p.get_ref()).map_err(|r| invalid(p.span(), r))?;
        // A path argument starting with `-` would be read by the tool as a flag.
        if normal.starts_with('-') {
            return Err(invalid(
                p.span(),
                format!(
                    "{:?} starts with '-', which the renderer would read as a flag; rename it",
                    p.get_ref()
                ),
            ));
        }
        Ok(normal)
    };
    let mut steps: Vec<RenderStep> = Vec::with_capacity(wire.len());
    for entry in wire {
        let span = entry.span();
        let entry = entry.into_inner();
        let source = match (entry.kustomize, entry.helm) {
            (Some(dir), None) => RenderSource::Kustomize { dir: path(&dir)? },
            (None, Some(helm)) => {
                let helm = helm.into_inner();
                let chart = helm.chart.get_ref();
                if let Some(reference) = chart.strip_prefix(crate::render::OCI_SCHEME) {
                    let why = match crate::model::ImageRef::parse(reference) {
                        // The parser defaults a missing tag to `latest`: ask what was written.
                        // Helm takes the first component as the registry host; the
                        // image rules would send `oci://org/charts/x` to Docker Hub.
                        Ok(_) if !names_registry_host(reference) => Some(
                            "names no registry host: write oci://HOST[:PORT]/REPOSITORY:VERSION (the first component must hold a `.` or a `:`, or be localhost)".to_owned(),
                        ),
                        Ok(r)
                            if r.digest().is_some()
                                || crate::model::has_written_tag(crate::model::strip_digest(
                                    reference,
                                )) =>
                        {
                            None
                        }
                        Ok(_) => Some(
                            "names no version: write oci://REGISTRY/REPOSITORY:VERSION".to_owned(),
                        ),
                        Err(e) => Some(e.reason),
                    };
                    if let Some(why) = why {
                        return Err(invalid(helm.chart.span(), format!("chart {chart:?} {why}")));
                    }
                } else if chart.contains("://") {
                    return Err(invalid(
                        helm.chart.span(),
                        format!(
                            "chart {chart:?} is neither in the repository nor in an OCI registry: rendering must not depend on a chart repository; vendor it (`helm pull {chart} --untar --untardir charts`) and name its directory, or push it to an OCI registry and name it oci://REGISTRY/REPOSITORY:VERSION"
                        ),
                    ));
                }
                if !valid_release(helm.release.get_ref()) {
                    return Err(invalid(
                        helm.release.span(),
                        format!(
                            "release {:?} must be a lowercase DNS name of at most 53 characters",
                            helm.release.get_ref()
                        ),
                    ));
                }
                if let Some(ns) = &helm.namespace
                    && !valid_namespace(ns.get_ref())
                {
                    return Err(invalid(
                        ns.span(),
                        format!(
                            "namespace {:?} must be a lowercase DNS label of at most 63 characters",
                            ns.get_ref()
                        ),
                    ));
                }
                if let Some(kv) = &helm.kube_version
                    && !valid_kube_version(kv.get_ref())
                {
                    return Err(invalid(
                        kv.span(),
                        format!(
                            "kube-version {:?} must be a Kubernetes version such as \"v1.33.0\" or \"1.33\"",
                            kv.get_ref()
                        ),
                    ));
                }
                RenderSource::Helm {
                    chart: if chart.starts_with(crate::render::OCI_SCHEME) {
                        chart.clone()
                    } else {
                        path(&helm.chart)?
                    },
                    release: helm.release.into_inner(),
                    namespace: helm.namespace.map(Spanned::into_inner),
                    values: helm.values.iter().map(path).collect::<Result<_, _>>()?,
                    kube_version: helm.kube_version.map(Spanned::into_inner),
                }
            }
            _ => {
                return Err(invalid(
                    span,
                    "a [[render]] entry names exactly one of `kustomize` and `helm`".into(),
                ));
            }
        };
        let output = path(&entry.output)?;
        let is_manifest = !output.starts_with("../")
            && crate::files::classify(&output) == Ok(crate::files::FileRole::Manifest);
        if !is_manifest {
            return Err(invalid(
                entry.output.span(),
                format!(
                    "output {output:?} must be a .yaml or .yml file inside the locked directory"
                ),
            ));
        }
        if steps.iter().any(|s| s.output == output) {
            return Err(invalid(
                entry.output.span(),
                format!("output {output:?} is written by two render steps"),
            ));
        }
        let inputs = entry.inputs.iter().map(path).collect::<Result<_, _>>()?;
        steps.push(RenderStep {
            source,
            output,
            inputs,
        });
    }
    Ok(steps)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WireCustom {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    pod_specs: Vec<Spanned<String>>,
    #[serde(default)]
    images: Vec<Spanned<String>>,
}

/// Whether a chart reference's first component is a registry host, as Helm reads it.
fn names_registry_host(reference: &str) -> bool {
    let first = reference.split('/').next().unwrap_or("");
    reference.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"# images of custom resources
[[custom]]
api-version = "argoproj.io/v1alpha1"
kind = "Rollout"
pod-specs = ["spec.template.spec"]

[[custom]]
api-version = "example.com/*"
kind = "Cache"
images = ["spec.image", "spec.sidecars[].image", "spec.extra[]"]
"#;

    #[test]
    fn provenance_attestations_are_predicate_type_uris_each_once() {
        let rule = |attestations: &str| {
            ScanConfig::parse(
                &format!(
                    "[[provenance]]\nimages = [\"r.example/**\"]\ncosign-keys = [\"cosign.pub\"]\nattestations = {attestations}\n"
                ),
                "lockstep.toml",
            )
        };
        let ok =
            rule(r#"["https://slsa.dev/provenance/v1", "https://spdx.dev/Document"]"#).unwrap();
        assert_eq!(
            ok.provenance()[0].attestations,
            [
                "https://slsa.dev/provenance/v1",
                "https://spdx.dev/Document"
            ]
        );
        for bad in [
            r#"[""]"#,
            r#"["two words"]"#,
            r#"["https://a/v1", "https://a/v1"]"#,
        ] {
            let e = rule(bad).unwrap_err().to_string();
            assert!(e.contains("lockstep.toml:"), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_the_documented_format() {
        let c = ScanConfig::parse(EXAMPLE, "lockstep.toml").unwrap();
        assert_eq!(c.custom().len(), 2);
        let rollout = &c.custom()[0];
        assert_eq!(
            rollout.api_version,
            ApiVersionMatch::Exact("argoproj.io/v1alpha1".into())
        );
        assert_eq!(rollout.kind, "Rollout");
        assert_eq!(rollout.pod_specs[0].as_str(), "spec.template.spec");
        assert!(rollout.images.is_empty());
        let cache = &c.custom()[1];
        assert_eq!(
            cache.api_version,
            ApiVersionMatch::AnyVersionOf("example.com".into())
        );
        assert_eq!(
            cache.images[1].segments(),
            &[
                Segment {
                    key: "spec".into(),
                    each: false
                },
                Segment {
                    key: "sidecars".into(),
                    each: true
                },
                Segment {
                    key: "image".into(),
                    each: false
                },
            ]
        );
        assert_eq!(
            cache.images[2].segments()[1],
            Segment {
                key: "extra".into(),
                each: true
            }
        );
    }

    #[test]
    fn empty_text_is_the_default() {
        assert_eq!(
            ScanConfig::parse("", "lockstep.toml").unwrap(),
            ScanConfig::default()
        );
        assert!(ScanConfig::default().custom().is_empty());
    }

    #[test]
    fn api_version_matching() {
        let c = ScanConfig::parse(EXAMPLE, "lockstep.toml").unwrap();
        assert!(c.custom()[0].matches("argoproj.io/v1alpha1", "Rollout"));
        assert!(!c.custom()[0].matches("argoproj.io/v1beta1", "Rollout"));
        assert!(!c.custom()[0].matches("argoproj.io/v1alpha1", "Deployment"));
        assert!(c.custom()[1].matches("example.com/v1", "Cache"));
        assert!(c.custom()[1].matches("example.com/v2beta3", "Cache"));
        assert!(!c.custom()[1].matches("other.example.com/v1", "Cache"));
        assert!(!c.custom()[1].matches("example.com", "Cache"));
        assert_eq!(c.matching("example.com/v1", "Cache").count(), 1);
        assert_eq!(c.matching("v1", "Pod").count(), 0);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let text = "[[custom]]\napi-version = \"a.io/v1\"\nkind = \"X\"\npod_specs = [\"spec\"]\n";
        let e = ScanConfig::parse(text, "dir/lockstep.toml").unwrap_err();
        let ConfigError::Syntax { file, line, source } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(file, "dir/lockstep.toml");
        assert_eq!(*line, 4);
        assert!(source.text().contains("pod_specs"), "{}", source.text());
        assert!(e.to_string().starts_with("dir/lockstep.toml:4:"), "{e}");

        let e = ScanConfig::parse("\n\nimages = []\n", "lockstep.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 3, .. }), "{e:?}");
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let e =
            ScanConfig::parse("[[custom]]\nkind = \"X\nimages=[]\n", "lockstep.toml").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn missing_fields_are_refused() {
        let e = ScanConfig::parse(
            "[[custom]]\nkind = \"X\"\nimages = [\"spec.image\"]\n",
            "l.toml",
        )
        .unwrap_err();
        let ConfigError::Syntax { source, .. } = &e else {
            panic!("{e:?}")
        };
        assert!(source.text().contains("api-version"), "{}", source.text());
    }

    #[test]
    fn bad_values_name_their_line() {
        let cases = [
            (
                "[[custom]]\napi-version = \"a.io/v1\"\nkind = \"X\"\nimages = [\"spec..image\"]\n",
                4,
                "empty key",
            ),
            (
                "[[custom]]\napi-version = \"a.io/v1\"\nkind = \"X\"\nimages = [\"spec.a[0].image\"]\n",
                4,
                "'['",
            ),
            (
                "[[custom]]\napi-version = \"a.io/v1\"\nkind = \"X\"\nimages = [\"\"]\n",
                4,
                "empty",
            ),
            (
                "[[custom]]\napi-version = \"a.io/*/x\"\nkind = \"X\"\nimages = [\"spec.image\"]\n",
                2,
                "api-version",
            ),
            (
                "[[custom]]\napi-version = \"a.io/v*\"\nkind = \"X\"\nimages = [\"spec.image\"]\n",
                2,
                "api-version",
            ),
            (
                "[[custom]]\napi-version = \"/*\"\nkind = \"X\"\nimages = [\"spec.image\"]\n",
                2,
                "api-version",
            ),
            (
                "[[custom]]\napi-version = \"a.io/v1\"\nkind = \"\"\nimages = [\"spec.image\"]\n",
                3,
                "kind",
            ),
            (
                "\n[[custom]]\napi-version = \"a.io/v1\"\nkind = \"X\"\n",
                2,
                "neither",
            ),
        ];
        for (text, want_line, want_reason) in cases {
            match ScanConfig::parse(text, "lockstep.toml") {
                Err(ConfigError::Invalid { file, line, reason }) => {
                    assert_eq!(file, "lockstep.toml");
                    assert_eq!(line, want_line, "{text}: {reason}");
                    assert!(reason.contains(want_reason), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn render_steps_are_parsed_with_their_paths_normalized() {
        let text = r#"[[render]]
kustomize = "../overlays/prod/"
output = "./rendered/shop.yaml"

[[render]]
helm = { chart = "../charts/api", release = "api", namespace = "shop", values = ["../values/prod.yaml"] }
output = "api.yml"
inputs = ["../lib/"]
"#;
        let config = ScanConfig::parse(text, "lockstep.toml").unwrap();
        let steps = config.renders();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[0].source,
            RenderSource::Kustomize {
                dir: "../overlays/prod".into()
            }
        );
        assert_eq!(steps[0].output, "rendered/shop.yaml");
        assert_eq!(steps[1].inputs, ["../lib"]);
    }

    #[test]
    fn bad_render_steps_are_refused_with_their_line() {
        let refused = |text: &str| {
            ScanConfig::parse(text, "lockstep.toml")
                .unwrap_err()
                .to_string()
        };
        let both = "[[render]]\nkustomize = \"a\"\nhelm = { chart = \"c\", release = \"r\" }\noutput = \"o.yaml\"\n";
        assert!(
            refused(both).contains("exactly one of `kustomize` and `helm`"),
            "{}",
            refused(both)
        );
        for (output, why) in [
            ("../o.yaml", "inside the locked directory"),
            ("o.json", ".yaml or .yml"),
            ("lockstep.lock", ".yaml or .yml"),
            ("/tmp/o.yaml", "absolute"),
        ] {
            let text = format!("\n[[render]]\nkustomize = \"../k\"\noutput = \"{output}\"\n");
            let err = refused(&text);
            assert!(
                err.starts_with("lockstep.toml:4:") && err.contains(why),
                "{output}: {err}"
            );
        }
        let twice = "[[render]]\nkustomize = \"../a\"\noutput = \"o.yaml\"\n[[render]]\nkustomize = \"../b\"\noutput = \"./o.yaml\"\n";
        assert!(refused(twice).contains("written by two render steps"));
        let remote = "[[render]]\nhelm = { chart = \"https://charts.example.com/api-1.0.tgz\", release = \"api\" }\noutput = \"o.yaml\"\n";
        assert!(refused(remote).contains("vendor it"), "{}", refused(remote));
        let hostless = "[[render]]\nhelm = { chart = \"oci://org/charts/api:1.0\", release = \"api\" }\noutput = \"o.yaml\"\n";
        assert!(
            refused(hostless).contains("names no registry host"),
            "{}",
            refused(hostless)
        );
        let unversioned = "[[render]]\nhelm = { chart = \"oci://r.io/charts/api\", release = \"api\" }\noutput = \"o.yaml\"\n";
        assert!(
            refused(unversioned).contains("names no version"),
            "{}",
            refused(unversioned)
        );
        let release =
            "[[render]]\nhelm = { chart = \"../c\", release = \"API\" }\noutput = \"o.yaml\"\n";
        assert!(refused(release).contains("lowercase DNS name"));
        let typo = "[[render]]\nkustomise = \"../a\"\noutput = \"o.yaml\"\n";
        assert!(
            refused(typo).contains("lockstep.toml:2"),
            "{}",
            refused(typo)
        );
    }

    /// Regression: a chart, values file or kustomize directory named `-…`, or a namespace or
    /// kube-version holding a flag, was passed to the tool where it would read it as a flag.
    #[test]
    fn a_render_path_or_value_that_would_be_read_as_a_flag_is_refused() {
        for (step, why) in [
            (
                "helm = { chart = \"-gf/chart\", release = \"api\" }",
                "starts with '-'",
            ),
            (
                "helm = { chart = \"./--post-renderer=x\", release = \"api\" }",
                "starts with '-'",
            ),
            (
                "helm = { chart = \"../c\", release = \"api\", values = [\"-\"] }",
                "starts with '-'",
            ),
            ("kustomize = \"--enable-exec\"", "starts with '-'"),
            (
                "helm = { chart = \"../c\", release = \"api\", namespace = \"--post-renderer=/bin/sh\" }",
                "lowercase DNS label",
            ),
            (
                "helm = { chart = \"../c\", release = \"api\", kube-version = \"--dry-run=server\" }",
                "Kubernetes version",
            ),
        ] {
            let text = format!("[[render]]\n{step}\noutput = \"o.yaml\"\n");
            let err = ScanConfig::parse(&text, "lockstep.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("lockstep.toml:2:") && err.contains(why),
                "{step}: {err}"
            );
        }
        let fine = "[[render]]\nhelm = { chart = \"../c/-x\", release = \"api\", namespace = \"shop\", kube-version = \"v1.33.0\" }\noutput = \"o.yaml\"\n";
        assert!(ScanConfig::parse(fine, "lockstep.toml").is_ok());
    }
}

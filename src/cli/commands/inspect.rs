//! `lockstep inspect REF`: what lockstep sees for one image — the digest its tag names now,
//! the platforms of an index, the cosign signatures stored for that digest (by cosign's tag and
//! as OCI 1.1 referrers), the attestations and other referrers (listed), and, against a
//! directory's `[[provenance]]` rule (`--dir`) or given keys (`--cosign-key`), whether each
//! signature verifies and why not. The command to reach for when a lock is refused.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::json;

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::model::ImageRef;
use crate::provenance::{self, CosignKey, ImagePattern, ProvenanceRule};
use crate::resolve::Registry as _;
use crate::resolve::oci::{OciRegistry, OciSettings};
use crate::source::fs;

/// `lockstep inspect` arguments.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The image reference, as a manifest writes it (a tag, a digest, or both).
    pub reference: String,
    /// Judge the signatures by the `[[provenance]]` rule of this manifests directory that
    /// governs the image.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Judge the signatures by this cosign public key (PEM); repeatable. Instead of --dir.
    #[arg(long, value_name = "FILE", conflicts_with = "dir")]
    pub cosign_key: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: crate::cli::args::RegistryArgs,
}

pub struct InspectSettings {
    /// Certificates are judged valid as of now.
    pub now: jiff::Timestamp,
    pub reference: String,
    pub dir: Option<PathBuf>,
    pub cosign_keys: Vec<PathBuf>,
    pub registry: OciSettings,
}

/// Exit 0 when the image resolves (and, when a rule or keys judge it, carries a valid
/// signature), 1 when the rule finds no valid signature, 2 when it cannot be asked.
pub async fn run(settings: InspectSettings, printer: Printer) -> Result<(), CliError> {
    let now = settings.now;
    let image = ImageRef::parse(&settings.reference).map_err(CliError::usage)?;
    let rule = rule(&settings, &image)?;
    let registry = OciRegistry::new(settings.registry.clone()).map_err(CliError::usage)?;
    let resolved = registry
        .resolve(&image, None)
        .await
        .map_err(|e| CliError::usage_or_check(!e.is_finding(), e))?;
    if let Some(written) = image.digest()
        && image.tag().is_some()
        && *written != resolved.digest
    {
        printer.warn(format!(
            "{image}: the tag now names {}, not the digest written; showing the tag's",
            resolved.digest
        ));
    }
    let digest = resolved.digest.clone();
    let candidates = registry
        .cosign_signatures(&image, &digest, &|_| false)
        .await
        .map_err(|e| CliError::usage_or_check(!e.is_finding(), e))?;
    let mut lines = vec![
        format!("{}@{digest}", image.name()),
        format!("  media type: {}", resolved.media_type),
    ];
    for p in &resolved.platforms {
        lines.push(format!("  platform {}: {}", p.platform, p.digest));
    }
    let tag = provenance::signature_tag(&digest);
    if candidates.is_empty() {
        lines.push(format!(
            "  signatures: none (no {tag} tag, no OCI 1.1 referrer)"
        ));
    } else {
        lines.push(format!("  signatures ({tag} and OCI 1.1 referrers):"));
    }
    let mut judged = Vec::new();
    let mut valid = 0;
    for c in &candidates {
        let verdict = rule
            .as_ref()
            .map(|r| provenance::check_signature(&image, &digest, c, r, now));
        let claim = match c.format {
            provenance::SignatureFormat::SimpleSigning => claims(&c.payload),
            provenance::SignatureFormat::Dsse => statement_claims(&c.payload),
        };
        let text = match &verdict {
            None => format!(
                "    {} signs {claim} (not judged: give --dir or --cosign-key)",
                c.manifest
            ),
            Some(Ok(record)) => {
                valid += 1;
                format!(
                    "    {}: valid, key {}; signs {claim}",
                    c.manifest, record.key
                )
            }
            Some(Err(problem)) => format!("    {}: not valid: {problem}", c.manifest),
        };
        lines.push(text);
        judged.push(json!({
            "manifest": c.manifest.to_string(),
            "format": c.format.as_str(),
            "claims": claim,
            "valid": verdict.as_ref().map(|v| v.is_ok()),
            "key": verdict.as_ref().and_then(|v| v.as_ref().ok()).map(|r| r.key.clone()),
            "problem": verdict.as_ref().and_then(|v| v.as_ref().err()).map(|p| p.to_string()),
        }));
    }
    let attestation_candidates = registry
        .cosign_attestation_candidates(&image, &digest, &crate::resolve::oci::Wanted::all())
        .await
        .map_err(|e| CliError::usage_or_check(!e.is_finding(), e))?;
    let mut attestations = Vec::new();
    let mut attested = BTreeSet::new();
    lines.push(if attestation_candidates.is_empty() {
        "  attestations: none (no .att tag, no DSSE or bundle referrer)".to_owned()
    } else {
        "  attestations (the .att tag and OCI 1.1 referrers):".to_owned()
    });
    for c in &attestation_candidates {
        let verdict = rule
            .as_ref()
            .map(|r| provenance::attestation::check_attestation(&digest, c, r, now));
        let text = match &verdict {
            None => format!(
                "    {} claims {} (not judged: give --dir or --cosign-key)",
                c.manifest,
                statement_claims(&c.payload)
            ),
            Some(Ok(record)) => {
                attested.insert(record.predicate_type.clone());
                format!(
                    "    {}: valid {}, key {}",
                    c.manifest, record.predicate_type, record.key
                )
            }
            Some(Err(problem)) => format!("    {}: not valid: {problem}", c.manifest),
        };
        lines.push(text);
        attestations.push(json!({
            "manifest": c.manifest.to_string(),
            "valid": verdict.as_ref().map(|v| v.is_ok()),
            "predicate_type": verdict.as_ref().and_then(|v| v.as_ref().ok()).map(|r| r.predicate_type.clone()),
            "problem": verdict.as_ref().and_then(|v| v.as_ref().err()).map(|p| p.to_string()),
        }));
    }
    let unattested: Vec<String> = rule
        .as_ref()
        .map(|r| {
            r.attestations
                .iter()
                .filter(|t| !attested.contains(*t))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let referrers = registry
        .referrers(&image, &digest)
        .await
        .map_err(|e| CliError::usage_or_check(!e.is_finding(), e))?;
    if referrers.is_empty() {
        lines.push("  referrers: none".into());
    } else {
        lines.push("  referrers (OCI 1.1; as the registry lists them, not verified):".into());
    }
    for r in &referrers {
        let predicate = r
            .annotations
            .get("dev.sigstore.bundle.predicateType")
            .map(|p| format!(", predicate {p}"))
            .unwrap_or_default();
        lines.push(format!(
            "    {}: {}{predicate}",
            r.digest,
            r.artifact_type.as_deref().unwrap_or("(no artifact type)")
        ));
    }
    let satisfied = valid > 0 && unattested.is_empty();
    match &rule {
        Some(r) => lines.push(format!(
            "  rule: {} ({}{}): {}",
            r.at,
            r.key_files.join(", "),
            if r.attestations.is_empty() {
                String::new()
            } else {
                format!("; attestations {}", r.attestations.join(", "))
            },
            match (valid > 0, unattested.is_empty()) {
                (true, true) => "satisfied".to_owned(),
                (false, _) => "NOT satisfied (no valid signature)".to_owned(),
                (true, false) => format!(
                    "NOT satisfied (no valid attestation of {})",
                    unattested.join(", ")
                ),
            }
        )),
        None if settings.dir.is_some() => {
            lines.push("  rule: none governs this image (no signature required)".into());
        }
        None => {}
    }
    printer.result(lines.join("\n"));
    printer.json(&json!({
        "image": image.name(),
        "digest": digest.to_string(),
        "media_type": resolved.media_type,
        "platforms": resolved.platforms.iter().map(|p| json!({"platform": p.platform, "digest": p.digest.to_string()})).collect::<Vec<_>>(),
        "signatures": judged,
                "attestations": attestations,
        "referrers": referrers.iter().map(|r| json!({"digest": r.digest.to_string(), "artifact_type": r.artifact_type, "annotations": r.annotations})).collect::<Vec<_>>(),
                "rule": rule.as_ref().map(|r| json!({"at": r.at, "keys": r.key_files, "attestations": r.attestations, "satisfied": satisfied})),
    }));
    match &rule {
        Some(r) if valid == 0 => Err(CliError::check(Message(format!(
            "{}@{digest}: no valid signature under {} ({})",
            image.name(),
            r.at,
            r.key_files.join(" or ")
        )))),
        Some(r) if !unattested.is_empty() => Err(CliError::check(Message(format!(
            "{}@{digest}: no valid attestation of {} under {}",
            image.name(),
            unattested.join(", "),
            r.at
        )))),
        _ => Ok(()),
    }
}

/// The rule to judge by: the directory's governing `[[provenance]]` rule, or one made of
/// `--cosign-key` files; `None` when neither applies.
fn rule(settings: &InspectSettings, image: &ImageRef) -> Result<Option<ProvenanceRule>, CliError> {
    if let Some(dir) = &settings.dir {
        let files = fs::read_dir(dir).map_err(CliError::usage)?;
        let text = files.config().unwrap_or_default();
        let text = std::str::from_utf8(text)
            .map_err(|_| CliError::usage(Message("lockstep.toml is not UTF-8".into())))?;
        let config = crate::manifest::config::ScanConfig::parse(text, "lockstep.toml")
            .map_err(CliError::usage)?;
        let policy = config.provenance_policy(&files).map_err(CliError::usage)?;
        return Ok(policy.rule_for(image).cloned());
    }
    if settings.cosign_keys.is_empty() {
        return Ok(None);
    }
    let mut keys = Vec::new();
    for path in &settings.cosign_keys {
        let bytes = std::fs::read(path).map_err(|e| {
            CliError::usage(Message(format!("cannot read {}: {e}", path.display())))
        })?;
        keys.push(
            CosignKey::from_pem(&path.display().to_string(), &bytes).map_err(CliError::usage)?,
        );
    }
    Ok(Some(ProvenanceRule {
        at: "--cosign-key".into(),
        images: vec![ImagePattern::parse(&image.name()).map_err(|e| CliError::usage(Message(e)))?],
        key_files: settings
            .cosign_keys
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        keys,
        certificate: None,
        attestations: Vec::new(),
    }))
}

/// What a payload claims, for people (unverified): `digest in repository`.
fn claims(payload: &[u8]) -> String {
    let value: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let get = |path: &str| {
        value
            .as_ref()
            .and_then(|v| v.pointer(path))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned()
    };
    format!(
        "{} in {}",
        get("/critical/image/docker-manifest-digest"),
        get("/critical/identity/docker-reference")
    )
}

/// What a DSSE statement claims, for people (unverified): `digest (predicate)`.
fn statement_claims(payload: &[u8]) -> String {
    let value: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let digest = value
        .as_ref()
        .and_then(|v| v.pointer("/subject/0/digest/sha256"))
        .and_then(|d| d.as_str())
        .map_or_else(|| "?".to_owned(), |hex| format!("sha256:{hex}"));
    let predicate = value
        .as_ref()
        .and_then(|v| v.get("predicateType"))
        .and_then(|p| p.as_str())
        .unwrap_or("?");
    format!("{digest} (a Sigstore bundle, {predicate})")
}

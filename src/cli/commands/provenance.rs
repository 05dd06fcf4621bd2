//! `lock`'s provenance stage: every pinned digest a `[[provenance]]` rule of `lockstep.toml`
//! governs must carry a cosign signature by one of the rule's keys. The records come from the
//! previous lockfile when the digest is unchanged and its records still satisfy the rule
//! (checked offline, no request), else from the registry (cosign's `sha256-<hex>.sig` tag and
//! the OCI 1.1 referrers: cosign's `sig` artifacts and Sigstore bundles),
//! each candidate checked by the core ([`crate::provenance`]). One governed image without a
//! valid signature refuses the whole lock, naming the image and why each candidate failed;
//! nothing is written.

use std::collections::{BTreeMap, BTreeSet};

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::lock::Pinned;
use crate::lockfile::Lockfile;
use crate::model::{Digest, ImageRef};
use crate::provenance::{self, CandidateProblem, Policy, SignatureRecord};
use crate::resolve::oci::OciRegistry;
use crate::resolve::{ResolveError, run_all};

/// The records per (`registry/repository`, digest) of the governed images; empty without
/// rules.
pub type Records = BTreeMap<(String, Digest), Vec<SignatureRecord>>;

pub async fn signatures(
    settings: &super::lock::LockSettings,
    pinned: &Pinned,
    previous: Option<&Lockfile>,
    printer: Printer,
) -> Result<Records, CliError> {
    let config = &pinned.scan.config;
    if config.provenance().is_empty() {
        return Ok(Records::new());
    }
    let policy = config
        .provenance_policy(&pinned.files)
        .map_err(|e| CliError::check(e).hint("nothing was written"))?;
    let governed = governed(&policy, pinned);
    // Signatures are judged alone here; the attestations a rule requires are [`attestations`]'.
    let signature_policy = Policy {
        rules: policy
            .rules
            .iter()
            .map(|r| provenance::ProvenanceRule {
                attestations: Vec::new(),
                ..r.clone()
            })
            .collect(),
    };
    for rule in &policy.rules {
        if !governed.iter().any(|i| policy.rule_for(i) == Some(rule)) {
            printer.warn(format!(
                "the provenance rule at {} ({}) governs no image of this directory: check its patterns (names are registry/repository, e.g. docker.io/library/nginx)",
                rule.at,
                rule.images.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let mut records = Records::new();
    let mut to_fetch = Vec::new();
    for image in governed {
        let digest = image.digest().expect("pinned").clone();
        // Reused only when the records hold both as of the new lock and now (one check when
        // those are the same time, or when no record has a certificate, whose validity is the
        // only thing time changes).
        let kept = reusable(
            &signature_policy,
            previous,
            &image,
            &digest,
            settings.created,
        )
        .filter(|kept| {
            settings.created == settings.trust_at
                || kept.iter().all(|r| r.certificate.is_none())
                || reusable(
                    &signature_policy,
                    previous,
                    &image,
                    &digest,
                    settings.trust_at,
                )
                .is_some()
        });
        match kept {
            Some(kept) => {
                records.insert((image.name(), digest), kept);
            }
            None => to_fetch.push(image),
        }
    }
    if to_fetch.is_empty() {
        return Ok(records);
    }
    printer.note(format!(
        "checking the cosign signatures of {} digest(s) ({} unchanged, recorded)",
        to_fetch.len(),
        records.len()
    ));
    let registry = OciRegistry::new(settings.registry.clone()).map_err(CliError::usage)?;
    let progress = crate::cli::progress::reporter(printer, "checking signatures");
    let outcomes = run_all(
        to_fetch,
        settings.concurrency,
        &*progress,
        |image| image,
        |image| async {
            let digest = image.digest().expect("pinned").clone();
            let rule = policy.rule_for(&image).expect("governed");
            let enough = |found: &[provenance::Candidate]| {
                select(&image, &digest, rule, found, settings).is_ok()
            };
            let found = registry
                .cosign_signatures(&image, &digest, &enough)
                .await
                .map(|candidates| select(&image, &digest, rule, &candidates, settings));
            (image, found)
        },
    )
    .await;
    let mut refusals = Vec::new();
    let mut unreachable: Vec<(ImageRef, ResolveError)> = Vec::new();
    for (image, found) in outcomes {
        let digest = image.digest().expect("pinned").clone();
        let rule = policy.rule_for(&image).expect("governed");
        match found {
            Err(e) => unreachable.push((image, e)),
            Ok(Ok(kept)) => {
                records.insert((image.name(), digest), kept);
            }
            Ok(Err(problems)) => refusals.push(refusal(&image, &digest, rule, &problems)),
        }
    }
    if !unreachable.is_empty() {
        return Err(unreadable("signatures", unreachable));
    }
    if !refusals.is_empty() {
        refusals.sort();
        return Err(CliError::check(Message(format!(
            "{} image(s) have no valid signature under their provenance rule:\n{}",
            refusals.len(),
            refusals.join("\n")
        )))
        .hint("sign each digest with the rule's key (`cosign sign --key cosign.key IMAGE@DIGEST`), or change the rule; nothing was written"));
    }
    Ok(records)
}

/// The attestation records per (`registry/repository`, digest) of the governed images.
pub type AttestationRecords = BTreeMap<(String, Digest), Vec<provenance::AttestationRecord>>;

/// The attestations the rules require (`attestations = [...]`), per governed digest: the
/// previous lockfile's records when the digest is unchanged and they still cover the rule
/// (no request), else the registry's candidates checked by the core. One digest without a
/// valid attestation of a required type refuses the lock, naming it and what was found.
pub async fn attestations(
    settings: &super::lock::LockSettings,
    pinned: &Pinned,
    previous: Option<&Lockfile>,
    printer: Printer,
) -> Result<AttestationRecords, CliError> {
    let config = &pinned.scan.config;
    if config
        .provenance()
        .iter()
        .all(|r| r.attestations.is_empty())
    {
        return Ok(AttestationRecords::new());
    }
    let policy = config
        .provenance_policy(&pinned.files)
        .map_err(|e| CliError::check(e).hint("nothing was written"))?;
    let mut records = AttestationRecords::new();
    let mut to_fetch = Vec::new();
    for image in governed(&policy, pinned) {
        let rule = policy.rule_for(&image).expect("governed");
        if rule.attestations.is_empty() {
            continue;
        }
        let digest = image.digest().expect("pinned").clone();
        let kept = previous.and_then(|p| {
            p.images
                .iter()
                .find(|e| e.image.name() == image.name() && e.digest == digest)
        });
        match kept {
            Some(entry)
                if provenance::attestation::missing(
                    rule,
                    &entry.attestations,
                    settings.created,
                )
                .is_empty()
                    && provenance::attestation::missing(
                        rule,
                        &entry.attestations,
                        settings.trust_at,
                    )
                    .is_empty() =>
            {
                let wanted = entry
                    .attestations
                    .iter()
                    .filter(|a| rule.attestations.contains(&a.predicate_type))
                    .cloned()
                    .collect();
                records.insert((image.name(), digest), wanted);
            }
            _ => to_fetch.push(image),
        }
    }
    if to_fetch.is_empty() {
        return Ok(records);
    }
    printer.note(format!(
        "checking the attestations of {} digest(s) ({} unchanged, recorded)",
        to_fetch.len(),
        records.len()
    ));
    let registry = OciRegistry::new(settings.registry.clone()).map_err(CliError::usage)?;
    let progress = crate::cli::progress::reporter(printer, "checking attestations");
    let outcomes = run_all(
        to_fetch,
        settings.concurrency,
        &*progress,
        |image| image,
        |image| async {
            let digest = image.digest().expect("pinned").clone();
            let rule = policy.rule_for(&image).expect("governed");
            // Judged as of the lockfile's `created` (what verify relies on) and now; junk is
            // dropped as it is read.
            let judge = |candidates: &[provenance::Candidate]| {
                provenance::attestation::select(&digest, rule, candidates, settings.created)
                    .and_then(|kept| {
                        if settings.created == settings.trust_at {
                            Ok(kept)
                        } else {
                            provenance::attestation::select(
                                &digest,
                                rule,
                                candidates,
                                settings.trust_at,
                            )
                        }
                    })
            };
            // What was dropped, and why, for the refusal (at most 32 lines).
            let dropped = std::sync::Mutex::new(Vec::<String>::new());
            let keep = |c: &provenance::Candidate| match provenance::attestation::check_attestation(
                &digest,
                c,
                rule,
                settings.created,
            ) {
                Ok(r) => rule.attestations.contains(&r.predicate_type),
                Err(problem) => {
                    let mut dropped = dropped.lock().expect("not poisoned");
                    if dropped.len() < 32 {
                        dropped.push(format!("{}: {problem}", c.manifest));
                    }
                    false
                }
            };
            let wanted = crate::resolve::oci::Wanted { keep: &keep };
            let found = registry
                .cosign_attestation_candidates(&image, &digest, &wanted)
                .await
                .map(|candidates| {
                    judge(&candidates).map_err(|mut problems| {
                        problems.extend(dropped.lock().expect("not poisoned").drain(..));
                        problems
                    })
                });
            (image, found)
        },
    )
    .await;
    let mut refusals = Vec::new();
    let mut unreachable: Vec<(ImageRef, ResolveError)> = Vec::new();
    for (image, found) in outcomes {
        let digest = image.digest().expect("pinned").clone();
        let rule = policy.rule_for(&image).expect("governed");
        let judged = match found {
            Ok(judged) => judged,
            Err(e) => {
                unreachable.push((image, e));
                continue;
            }
        };
        match judged {
            Ok(kept) => {
                records.insert((image.name(), digest), kept);
            }
            Err(problems) => refusals.push(format!(
                "  {}@{digest} (rule at {}, signed by {}): {}",
                image.name(),
                rule.at,
                rule.accepts(),
                problems.join("\n    ")
            )),
        }
    }
    if !unreachable.is_empty() {
        return Err(unreadable("attestations", unreachable));
    }
    if !refusals.is_empty() {
        refusals.sort();
        return Err(CliError::check(Message(format!(
            "{} image(s) lack an attestation their provenance rule requires:\n{}",
            refusals.len(),
            refusals.join("\n")
        )))
        .hint("attest each digest with the rule's key (`cosign attest --key cosign.key --type TYPE --predicate FILE IMAGE@DIGEST`), or change the rule; nothing was written"));
    }
    Ok(records)
}

/// The records that satisfy `rule`, judged both as of the lockfile's `created` time (what
/// `verify` will judge them at) and now (a certificate that has since expired is not
/// accepted into a new lock).
fn select(
    image: &ImageRef,
    digest: &Digest,
    rule: &provenance::ProvenanceRule,
    candidates: &[provenance::Candidate],
    settings: &super::lock::LockSettings,
) -> Result<Vec<SignatureRecord>, Vec<(Digest, CandidateProblem)>> {
    let at_created = provenance::select(image, digest, rule, candidates, settings.created)?;
    if settings.created == settings.trust_at {
        return Ok(at_created);
    }
    let still: Vec<provenance::Candidate> =
        at_created.iter().map(SignatureRecord::candidate).collect();
    provenance::select(image, digest, rule, &still, settings.trust_at)
}

/// Every distinct pinned image (with its digest) a rule governs.
fn governed(policy: &Policy, pinned: &Pinned) -> Vec<ImageRef> {
    pinned
        .scan
        .uses
        .iter()
        .filter(|u| u.reference.digest().is_some())
        .map(|u| u.reference.clone())
        .filter(|r| policy.rule_for(r).is_some())
        .map(|r| match (r.digest(), r.tag()) {
            // One key per (name, digest): the tag does not change what was signed.
            (Some(d), Some(_)) => r.without_digest().pin(d.clone()).image().clone(),
            _ => r,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The previous lockfile's records for this name and digest, when they still satisfy the
/// rule offline (a rule whose keys changed fetches again).
fn reusable(
    policy: &Policy,
    previous: Option<&Lockfile>,
    image: &ImageRef,
    digest: &Digest,
    at: jiff::Timestamp,
) -> Option<Vec<SignatureRecord>> {
    let name = image.name();
    let entry = previous?
        .images
        .iter()
        .find(|e| e.image.name() == name && &e.digest == digest && !e.signatures.is_empty())?;
    let problems = provenance::check_policy(
        policy,
        [provenance::RecordedImage {
            reference: &entry.reference,
            image,
            digest,
            signatures: &entry.signatures,
            attestations: &[],
        }],
        at,
    );
    problems.is_empty().then(|| entry.signatures.clone())
}

/// One refused image: what was found and why each candidate failed.
fn refusal(
    image: &ImageRef,
    digest: &Digest,
    rule: &provenance::ProvenanceRule,
    problems: &[(Digest, CandidateProblem)],
) -> String {
    let name = format!("{}@{digest}", image.name());
    if problems.is_empty() {
        return format!(
            "  {name}: no signature found (no {} tag, no OCI 1.1 referrer), and the rule at {} requires one by {}",
            provenance::signature_tag(digest),
            rule.at,
            rule.key_files.join(" or ")
        );
    }
    let mut out = format!(
        "  {name}: {} signature(s) found, none valid under the rule at {}:",
        problems.len(),
        rule.at
    );
    for (manifest, problem) in problems {
        out.push_str(&format!("\n    {manifest}: {problem}"));
    }
    out
}

/// The images whose `what` (signatures, attestations) the registry could not be asked for,
/// each named with why: a usage error (exit 2), nothing written.
fn unreadable(what: &str, mut unreachable: Vec<(ImageRef, ResolveError)>) -> CliError {
    unreachable.sort_by(|a, b| a.0.cmp(&b.0));
    let lines: Vec<String> = unreachable
        .iter()
        .map(|(image, e)| format!("  {image}: {}", crate::error_chain::one_line(e)))
        .collect();
    CliError::usage(Message(format!(
        "cannot read the {what} of {} image(s):\n{}",
        unreachable.len(),
        lines.join("\n")
    )))
    .hint("nothing was written; fix the registry and run lock again")
}

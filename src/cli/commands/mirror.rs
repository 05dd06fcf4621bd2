//! `lockstep mirror`: read the lockfile → copy every pinned image to the mirror registry
//! (by digest, every platform, blobs mounted where the registry already has them) → record
//! the mirror in a new generation, signed by this key. Nothing is recorded unless every copy
//! succeeded; copies already made stay and are skipped by the next run.

use jiff::Timestamp;
use serde_json::json;

use super::sign::{Purpose, SignSettings, read_current, write_generation};
use crate::check::check;
use crate::cli::error::{Class, CliError, Message};
use crate::cli::printer::Printer;
use crate::cli::progress::reporter;
use crate::lock::mirrored;
use std::collections::{BTreeMap, BTreeSet};

use crate::mirror::{CopyJob, MirrorTarget, plan, protecting_tag};
use crate::model::ImageRef;
use crate::resolve::oci::{OciRegistry, OciSettings};
use crate::resolve::{copy_all, run_all};
use crate::verify::VerifyError;

/// Validated settings for one `mirror` run.
pub struct MirrorSettings {
    pub target: MirrorTarget,
    pub registry: OciSettings,
    pub concurrency: usize,
    pub created: Timestamp,
    pub sign: SignSettings,
}

/// Run `mirror`. Every error's JSON is printed here (`--json`), so the caller prints none.
pub async fn run(settings: MirrorSettings, printer: Printer) -> Result<(), CliError> {
    mirror(&settings, printer)
        .await
        .inspect_err(|e| printer.json(&e.to_json()))
}

async fn mirror(settings: &MirrorSettings, printer: Printer) -> Result<(), CliError> {
    // Verified before any byte moves: the new generation continues this one.
    let current = read_current(&settings.sign, Purpose::Continue, printer)?;
    // Refused before any byte moves: a stale lockfile would record a mirror of images the
    // manifests no longer use.
    let findings = check(&current.lock, &current.scan.uses, &current.scan.binding);
    if !findings.is_empty() {
        return Err(CliError::check(VerifyError::Findings(findings))
            .hint("the lockfile does not match the manifests: run `lockstep lock` first"));
    }
    let jobs = plan(&current.lock, &settings.target).map_err(CliError::usage)?;
    let registry = OciRegistry::new(settings.registry.clone()).map_err(CliError::usage)?;
    let images = jobs.len();
    let extra = attachments(&registry, &jobs, settings.concurrency, printer).await;
    let progress = reporter(printer, "copying");
    let copied = copy_all(&registry, jobs, settings.concurrency, &*progress)
        .await
        .map_err(|failures| {
            let message = Message(format!(
                "{} of {images} images could not be copied to {}:\n  {}",
                failures.failures.len(),
                settings.target,
                failures.to_string().replace('\n', "\n  ")
            ));
            CliError::new(Class::of_registry(&failures), message)
            .hint("nothing was recorded in the lockfile; copies already made are kept and skipped by the next run")
        })?;
    // What the source holds beside the images goes along, best effort: a referrer listed but
    // gone, or junk pushed next to an image, is a warning, not a failed mirror (the recorded
    // signatures above are required).
    let mut copied = copied;
    match copy_all(&registry, extra, settings.concurrency, &*progress).await {
        Ok(more) => copied += more,
        Err(failures) => {
            printer.warn(format!(
                "{} signature, attestation or SBOM manifest(s) beside the images were not copied:\n  {}",
                failures.failures.len(),
                                failures.to_string().replace('\n', "\n  ")
            ));
        }
    }
    printer.note(format!(
        "{} images copied, {} already there; {} manifests pushed; blobs: {} uploaded ({} bytes), {} mounted, {} present",
        copied.images_copied,
        copied.images_present,
        copied.manifests_pushed,
        copied.blobs_uploaded,
        copied.bytes_uploaded,
        copied.blobs_mounted,
        copied.blobs_present
    ));
    let next = mirrored(
        &current.lock,
        &current.scan,
        settings.created,
        &settings.target,
    )
    .map_err(CliError::check)?;
    let Some(next) = next else {
        printer.result(format!(
            "up to date: generation {} already records the mirror {} for all {images} images",
            current.lock.generation, settings.target
        ));
        printer.json(&json!({
            "ok": true,
            "generation": current.lock.generation,
            "mirror": settings.target.to_string(),
            "recorded": false,
            "copied": copied,
        }));
        return Ok(());
    };
    let written = write_generation(&settings.sign, &current, &next, printer)?;
    printer.result(format!(
        "mirrored: {images} images to {}; generation {} -> {} records it, signed by {}",
        settings.target, current.lock.generation, next.generation, written.signer
    ));
    printer.json(&json!({
        "ok": true,
        "generation": next.generation,
        "previous_generation": current.lock.generation,
        "mirror": settings.target.to_string(),
        "recorded": true,
        "copied": copied,
        "signer": written.signer,
        "removed": written.removals,
        "commit": written.commit,
    }));
    Ok(())
}

/// Most manifests copied beside one image (its listed referrers first, then cosign's tags).
const MAX_ATTACHED: usize = 32;

/// The copies of what the source holds beside each image of `jobs` (its referrers and
/// cosign's tags: signatures, attestations, SBOMs) that `jobs` does not copy already, so the
/// mirror keeps them: one referrers request and three tag requests per image. Best effort: an
/// image whose attachments cannot be listed is a warning.
async fn attachments(
    registry: &OciRegistry,
    jobs: &[CopyJob],
    concurrency: usize,
    printer: Printer,
) -> Vec<CopyJob> {
    let images: Vec<CopyJob> = jobs
        .iter()
        .filter(|j| j.tag.as_deref() == Some(protecting_tag(j.digest()).as_str()))
        .cloned()
        .collect();
    let progress = reporter(printer, "listing signatures and attestations");
    let found = run_all(
        images,
        concurrency,
        &*progress,
        |job| &job.source,
        |job| async {
            let attached = registry.attached(&job.source, job.digest()).await;
            (job, attached)
        },
    )
    .await;
    let known: BTreeSet<ImageRef> = jobs.iter().map(|j| j.source.clone()).collect();
    // A tag a recorded copy pushes (a recorded signature under cosign's tag) is never
    // re-pointed by an extra: what the source holds there now may be junk.
    let recorded_tags: BTreeSet<(String, String)> = jobs
        .iter()
        .filter_map(|j| Some((j.target.name(), j.tag.clone()?)))
        .collect();
    let mut added = BTreeMap::new();
    let mut failures = Vec::new();
    for (job, attached) in found {
        let attached = match attached {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!(
                    "{}: {}",
                    job.source,
                    crate::error_chain::one_line(&e)
                ));
                continue;
            }
        };
        for (digest, tag) in attached.into_iter().take(MAX_ATTACHED) {
            if let Some(tag) = &tag
                && recorded_tags.contains(&(job.target.name(), tag.clone()))
            {
                continue;
            }
            let at = |image: &ImageRef| image.without_digest().pin(digest.clone()).image().clone();
            let source = at(&job.source);
            if known.contains(&source) {
                continue;
            }
            added.entry(source.clone()).or_insert_with(|| CopyJob {
                target: at(&job.target),
                source,
                references: job
                    .references
                    .iter()
                    .map(|r| format!("{r} (attached: a signature, attestation or SBOM)"))
                    .collect(),
                tag,
            });
        }
    }
    if !failures.is_empty() {
        failures.sort();
        printer.warn(format!(
            "cannot list what {} image(s) hold beside them (their signatures, attestations and SBOMs are not copied):\n  {}",
            failures.len(),
            failures.join("\n  ")
        ));
    }
    if !added.is_empty() {
        printer.note(format!(
            "{} signature, attestation or SBOM manifest(s) go along",
            added.len()
        ));
    }
    added.into_values().collect()
}

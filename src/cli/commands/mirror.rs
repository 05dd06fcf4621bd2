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
use crate::mirror::{MirrorTarget, plan};
use crate::resolve::copy_all;
use crate::resolve::oci::{OciRegistry, OciSettings};
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
    let progress = reporter(printer, "copying");
    let images = jobs.len();
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

//! `lock --pin-sources`: the digests a lock chose, written back into the Kustomize sources
//! of its render steps (`images:` entries get `digest:` beside `newTag:`). Helm values are
//! not rewritten: a chart's templates decide how a value becomes an image reference, and a
//! digest added to a tag value can break them (`repo:tag` built from two values), so each
//! Helm step is named as left to its values files.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::lockfile::Lockfile;
use crate::manifest::pin_sources::{SourcePin, pin_kustomize_images};
use crate::model::{Digest, ImageRef};
use crate::render::{RenderRecord, Renderer};
use crate::source::fs;

/// A source file to rewrite: its path as the render record names it (relative to the locked
/// directory), its new bytes, and what changed in it.
pub struct SourceEdit {
    pub path: String,
    pub bytes: Vec<u8>,
    pub pins: Vec<SourcePin>,
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The edits that would pin the kustomizations the render steps read to the digests of
/// `lock`. Each file is read again and must still be the bytes the render hashed.
pub fn plan(
    dir: &Path,
    records: &[RenderRecord],
    lock: &Lockfile,
    printer: Printer,
) -> Result<Vec<SourceEdit>, CliError> {
    let digest_for = |image: &str| -> Option<Digest> {
        let wanted = ImageRef::parse(image).ok()?;
        lock.images
            .iter()
            .find(|e| e.image.name() == wanted.name() && e.image.tag() == wanted.tag())
            .map(|e| e.digest.clone())
    };
    let mut seen = BTreeSet::new();
    let mut edits = Vec::new();
    for record in records {
        if record.renderer == Renderer::Helm {
            printer.note(format!(
                "note: --pin-sources: {} is rendered by helm; its images are pinned in the rendered output only (lockstep does not rewrite Helm values: a chart's templates decide how a value becomes an image reference)",
                record.output
            ));
            continue;
        }
        for (path, recorded) in &record.inputs.listing {
            let name = path.rsplit('/').next().unwrap_or(path);
            if !KUSTOMIZATION_FILES.contains(&name) || !seen.insert(path.clone()) {
                continue;
            }
            let bytes = std::fs::read(dir.join(path)).map_err(|e| {
                CliError::usage(Message(format!("--pin-sources: cannot read {path}: {e}")))
            })?;
            if Digest::of(&bytes) != *recorded {
                return Err(CliError::check(Message(format!(
                    "--pin-sources: {path} changed while it was rendered; nothing was written"
                ))));
            }
            let pinned = pin_kustomize_images(path, &bytes, digest_for).map_err(|e| {
                CliError::check(Message(format!("--pin-sources: {e}"))).hint("nothing was written")
            })?;
            for skipped in &pinned.skipped {
                printer.note(format!("note: --pin-sources: {skipped}"));
            }
            if pinned.bytes != bytes {
                edits.push(SourceEdit {
                    path: path.clone(),
                    bytes: pinned.bytes,
                    pins: pinned.pinned,
                });
            }
        }
    }
    Ok(edits)
}

fn describe(edit: &SourceEdit) -> Vec<String> {
    edit.pins
        .iter()
        .map(|p| format!("{}:{}: {} → {}", edit.path, p.line, p.image, p.digest))
        .collect()
}

/// `--check --pin-sources` with sources to pin: a failed check naming each entry.
pub fn stale(edits: &[SourceEdit], printer: Printer) -> CliError {
    let lines: Vec<String> = edits.iter().flat_map(describe).collect();
    printer.json(&serde_json::json!({"ok": false, "up_to_date": false, "unpinned_sources": lines}));
    CliError::check(Message(format!(
        "the sources are not pinned to the locked digests:\n  {}",
        lines.join("\n  ")
    )))
    .hint("run `lockstep lock --pin-sources` and commit the result")
}

/// Write the edits; the paths written, for `--commit`.
pub fn write(dir: &Path, edits: &[SourceEdit], printer: Printer) -> Result<Vec<String>, CliError> {
    for edit in edits {
        fs::rewrite_input(&dir.join(&edit.path), &edit.bytes).map_err(CliError::usage)?;
        for line in describe(edit) {
            printer.note(format!("pinned source {line}"));
        }
    }
    Ok(edits.iter().map(|e| e.path.clone()).collect())
}

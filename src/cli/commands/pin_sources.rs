//! `lock --pin-sources`: the digests a lock chose, written back into the Kustomize sources
//! of its render steps (`images:` entries get `digest:` beside `newTag:`). Helm values are
//! not rewritten: a chart's templates decide how a value becomes an image reference, and a
//! digest added to a tag value can break them (`repo:tag` built from two values), so each
//! Helm step is named as left to its values files.

use std::collections::BTreeSet;
use std::path::Path;

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::manifest::pin_sources::{SourcePin, pin_kustomize_images};
use crate::model::Digest;
use crate::render::{RenderRecord, RenderSource, RenderStep};
use crate::source::fs;

/// A source file to rewrite: its path as the render record names it (relative to the locked
/// directory), its new bytes, and what changed in it.
pub struct SourceEdit {
    pub path: String,
    pub bytes: Vec<u8>,
    /// The bytes it had, put back when the lock fails after writing.
    pub original: Vec<u8>,
    pub pins: Vec<SourcePin>,
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The edits that would pin the kustomization of each kustomize step (the one in its
/// `kustomize =` directory: bases it reads may be shared with other environments and are
/// left alone) to `digest_for(NAME:TAG)`. Each file is read again and must still be the
/// bytes the render hashed.
pub fn plan(
    dir: &Path,
    steps: &[RenderStep],
    records: &[RenderRecord],
    digest_for: impl Fn(&str) -> Option<Digest>,
    printer: Printer,
) -> Result<Vec<SourceEdit>, CliError> {
    let mut seen = BTreeSet::new();
    let mut edits = Vec::new();
    for record in records {
        let own_dir = steps
            .iter()
            .find(|s| s.output == record.output)
            .and_then(|s| match &s.source {
                RenderSource::Kustomize { dir } => Some(dir.clone()),
                RenderSource::Helm { .. } => None,
            });
        let Some(own_dir) = own_dir else {
            printer.note(format!(
                "note: --pin-sources: {} is rendered by helm; its images are pinned in the rendered output only (lockstep does not rewrite Helm values: a chart's templates decide how a value becomes an image reference)",
                record.output
            ));
            continue;
        };
        for (path, recorded) in &record.inputs.listing {
            let own = KUSTOMIZATION_FILES
                .iter()
                .any(|name| *path == format!("{own_dir}/{name}"));
            if !own || !seen.insert(path.clone()) {
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
            let pinned = pin_kustomize_images(path, &bytes, &digest_for).map_err(|e| {
                CliError::check(Message(format!("--pin-sources: {e}"))).hint("nothing was written")
            })?;
            for skipped in &pinned.skipped {
                printer.note(format!("note: --pin-sources: {skipped}"));
            }
            if pinned.bytes != bytes {
                edits.push(SourceEdit {
                    path: path.clone(),
                    bytes: pinned.bytes,
                    original: bytes,
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

/// Write the edits (all or, on a failure, none); the paths written, for `--commit`.
pub fn write(dir: &Path, edits: &[SourceEdit], printer: Printer) -> Result<Vec<String>, CliError> {
    for (i, edit) in edits.iter().enumerate() {
        if let Err(e) = fs::rewrite_input(&dir.join(&edit.path), &edit.bytes) {
            restore(dir, &edits[..i], printer);
            return Err(CliError::usage(e).hint("nothing was written"));
        }
        for line in describe(edit) {
            printer.note(format!("pinned source {line}"));
        }
    }
    Ok(edits.iter().map(|e| e.path.clone()).collect())
}

/// Put the sources back as they were (the lock failed after they were written).
pub fn restore(dir: &Path, edits: &[SourceEdit], printer: Printer) {
    for edit in edits {
        match fs::rewrite_input(&dir.join(&edit.path), &edit.original) {
            Ok(()) => printer.note(format!("put {} back as it was", edit.path)),
            Err(e) => printer.warn(format!(
                "{} could not be put back as it was ({e}): `git checkout -- {}` restores it",
                edit.path, edit.path
            )),
        }
    }
}

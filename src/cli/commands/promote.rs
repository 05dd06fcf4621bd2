//! `promote FROM TO`: lock TO at the digests of FROM's verified lockfile.
//!
//! FROM is verified exactly as `verify` would (trust, threshold, expiry, environment, the
//! manifests binding, render inputs); then TO is locked by the ordinary `lock` pipeline with
//! the registry's answers replaced by FROM's recorded digests — no tag is resolved again —
//! and the signed lockfile records which lockfile (environment, generation, sha256, commit)
//! they came from.

use super::lock::{LockSettings, PromotionSource};
use super::verify::{VerifySettings, verified_lockfile};
use crate::cli::error::CliError;
use crate::cli::printer::Printer;

pub struct PromoteSettings {
    pub from: VerifySettings,
    pub to: LockSettings,
    pub resolve_missing: bool,
}

pub async fn run(mut settings: PromoteSettings, printer: Printer) -> Result<(), CliError> {
    let source = verified_lockfile(&settings.from, printer)
        .map_err(|e| e.hint("nothing was promoted; fix or re-lock the source first"))?;
    printer.note(format!(
        "{}: generation {}{} verified",
        settings.from.dir.display(),
        source.lockfile.generation,
        source
            .lockfile
            .environment
            .as_ref()
            .map_or_else(String::new, |e| format!(" for {e}")),
    ));
    settings.to.promotion = Some(PromotionSource::of(
        settings.from.dir.display().to_string(),
        &source.lockfile,
        &source.bytes,
        source.commit,
        settings.resolve_missing,
    ));
    super::lock::run(settings.to, printer).await
}

//! `lockstep check`: read the lockfile (work tree or Git revision) → ask each registry for
//! every pinned digest, by digest → report the missing ones. Writes nothing.

use std::path::PathBuf;

use serde_json::json;

use crate::cli::error::{Class, CliError, Message};
use crate::cli::printer::Printer;
use crate::cli::progress::reporter;
use crate::exists::{self, Report};
use crate::lockfile::{self, Lockfile};
use crate::resolve::check_exists;
use crate::resolve::oci::{OciRegistry, OciSettings};
use crate::source::{fs, git};

/// Validated settings for one `check` run.
pub struct CheckSettings {
    pub dir: PathBuf,
    pub rev: Option<String>,
    pub registry: OciSettings,
    pub concurrency: usize,
}

/// What the registry is asked about, and how: the lockfile, the commit it came from with
/// `--rev`, and the registry client.
fn prepare(settings: &CheckSettings) -> Result<(Lockfile, Option<String>, OciRegistry), CliError> {
    let (files, commit) = match &settings.rev {
        Some(rev) => {
            let (files, info) = git::read_at_rev(&settings.dir, rev).map_err(CliError::usage)?;
            (files, Some(info.id))
        }
        None => (fs::read_dir(&settings.dir).map_err(CliError::usage)?, None),
    };
    let bytes = files.lockfile().ok_or_else(|| {
        CliError::usage(Message(format!(
            "there is no {} in {}",
            lockfile::FILE_NAME,
            settings.dir.display()
        )))
        .hint("run `lockstep lock` first")
    })?;
    // Unverified on purpose: this command only asks the registry (see crate::exists).
    let lock = Lockfile::parse_unverified(bytes).map_err(CliError::usage)?;
    let registry = OciRegistry::new(settings.registry.clone()).map_err(CliError::usage)?;
    Ok((lock, commit, registry))
}

/// Run `check`. Every error's JSON is printed here (`--json`), so the caller prints none.
pub async fn run(settings: CheckSettings, printer: Printer) -> Result<(), CliError> {
    let (lock, commit, registry) =
        prepare(&settings).inspect_err(|e| printer.json(&e.to_json()))?;
    let probes = exists::probes(&lock);
    let known = exists::known(&lock);
    let progress = reporter(printer, "checking");
    let report = check_exists(&registry, &probes, &known, settings.concurrency, &*progress).await;
    printer.json(&json!({
        "ok": report.ok(),
        "commit": commit,
        "generation": lock.generation,
        "checked": report.checked,
        "missing": report.missing,
        "unanswered": report.unanswered,
    }));
    outcome(&report, lock.generation)
        .inspect(|line| printer.result(line))
        .map(|_| ())
}

/// The result line, or the error: exit 1 when any pinned digest is gone or was answered
/// wrongly (even if others went unanswered, since that is already a definite finding), exit
/// 2 when some could not be asked about and nothing definite was found.
fn outcome(report: &Report, generation: u64) -> Result<String, CliError> {
    let mut lines: Vec<String> = report
        .missing
        .iter()
        .map(|m| {
            let copies = if m.still_at.is_empty() {
                "no recorded copy left".to_owned()
            } else {
                format!("still at {}", m.still_at.join(", "))
            };
            format!(
                "missing: {} ({copies})",
                exists::describe(
                    &m.reference,
                    &m.digest,
                    exists::Part::of(m.platform.as_deref(), m.signature),
                    m.mirror.then_some(m.location.as_str())
                )
            )
        })
        .collect();
    lines.extend(report.unanswered.iter().map(|u| {
        format!(
            "unanswered: {}: {}",
            exists::describe(
                &u.reference,
                &u.digest,
                exists::Part::of(u.platform.as_deref(), u.signature),
                None,
            ),
            u.error
        )
    }));
    if !report.missing.is_empty() {
        return Err(CliError::check(Message(format!(
            "{} pinned digests of generation {generation} no longer exist where the lockfile records them:\n  {}",
            report.missing.len(),
            lines.join("\n  ")
        )))
        .hint("restore them (push the same bytes again, or run `lockstep mirror` from a location that still has them) before this lockfile can be deployed"));
    }
    if !report.unanswered.is_empty() {
        // A registry that answered wrongly (bytes that do not match the digest) is a finding;
        // one that could not be asked is the environment.
        let class = if report.unanswered.iter().any(|u| u.finding) {
            Class::Check
        } else {
            Class::Usage
        };
        return Err(CliError::new(
            class,
            Message(format!(
                "{} pinned digests could not be checked:\n  {}",
                report.unanswered.len(),
                lines.join("\n  ")
            )),
        ));
    }
    Ok(format!(
        "all pinned digests exist: generation {generation}, {} digests checked",
        report.checked
    ))
}

//! `lockstep sign` (a further approver signs the lockfile as it is) and `lockstep refresh`
//! (the same lockfile as a new generation with a new expiry). Both work offline: neither
//! asks the registry anything, and both refuse a lockfile that no longer matches the
//! manifests, so a signature never vouches for manifests nobody locked.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::check::check;
use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::lock::refreshed;
use crate::lockfile::{self, Lockfile};
use crate::signing::{self, SigningKey};
use crate::source::{self, SourceFiles, fs, git};
use crate::verify::{ScannedDir, VerifyError, scan_dir};

/// Validated settings for `sign`, and the signing half of `refresh`.
pub struct SignSettings {
    pub dir: PathBuf,
    pub key: SigningKey,
    pub signer: Option<String>,
    /// The commit message, with `--commit`.
    pub commit: Option<String>,
}

/// The directory, its lockfile (parsed, not yet trusted) and its manifests' scan.
pub(super) struct Current {
    pub files: SourceFiles,
    pub lock: Lockfile,
    pub scan: ScannedDir,
}

pub(super) fn read_current(settings: &SignSettings) -> Result<Current, CliError> {
    let files = fs::read_dir(&settings.dir).map_err(CliError::usage)?;
    let bytes = files.lockfile().ok_or_else(|| {
        CliError::check(VerifyError::NoLockfile).hint("only an existing lockfile can be signed")
    })?;
    let lock = Lockfile::parse_unverified(bytes).map_err(|e| {
        CliError::check(e).hint(format!(
            "{} is unreadable; nothing was signed",
            lockfile::FILE_NAME
        ))
    })?;
    let scan = scan_dir(&files).map_err(CliError::check)?;
    Ok(Current { files, lock, scan })
}

fn signer_name(settings: &SignSettings) -> String {
    settings.signer.clone().unwrap_or_else(|| {
        signing::signer_name(settings.key.comment(), &settings.key.fingerprint())
    })
}

/// With `--commit`, refuse before writing anything when other bound inputs of the directory
/// differ from HEAD: the commit would hold lockstep's files but not the manifests they sign.
pub(super) fn refuse_uncommitted_inputs(
    dir: &std::path::Path,
    files: &SourceFiles,
    writes: &[(String, Vec<u8>)],
    removals: &[String],
) -> Result<(), CliError> {
    let ours: Vec<String> = writes
        .iter()
        .map(|(p, _)| p.clone())
        .chain(removals.iter().cloned())
        .collect();
    let dirty = git::uncommitted_inputs(dir, files, &ours).map_err(CliError::usage)?;
    if dirty.is_empty() {
        return Ok(());
    }
    Err(CliError::usage(Message(format!(
        "--commit would leave out what is signed: {} has uncommitted changes to {}",
        dir.display(),
        dirty.join(", ")
    )))
    .hint("commit those files first (or run without --commit and commit everything yourself); nothing was written"))
}

/// Write (and with `--commit`, commit) the files, removing `removals`.
fn write(
    settings: &SignSettings,
    files: &SourceFiles,
    writes: &[(String, Vec<u8>)],
    removals: &[String],
    printer: Printer,
) -> Result<Option<String>, CliError> {
    if settings.commit.is_some() {
        refuse_uncommitted_inputs(&settings.dir, files, writes, removals)?;
    }
    fs::write_files(&settings.dir, writes, removals).map_err(CliError::usage)?;
    let written: Vec<&str> = writes.iter().map(|(p, _)| p.as_str()).collect();
    printer.note(format!("wrote {}", written.join(", ")));
    if !removals.is_empty() {
        printer.note(format!("removed stale signatures {}", removals.join(", ")));
    }
    let Some(message) = &settings.commit else {
        return Ok(None);
    };
    let paths: Vec<String> = writes.iter().map(|(p, _)| p.clone()).collect();
    match git::commit(&settings.dir, &paths, removals, message).map_err(CliError::usage)? {
        git::CommitOutcome::Committed(info) => {
            printer.note(format!("committed {} {}", &info.id[..12], info.summary));
            Ok(Some(info.id))
        }
        git::CommitOutcome::Unchanged => {
            printer.note("nothing to commit: HEAD already holds these files");
            Ok(None)
        }
    }
}

/// `sign`: add this key's signature over the lockfile's exact bytes; lockstep.lock and the
/// other signatures stay as they are.
pub fn sign(settings: SignSettings, printer: Printer) -> Result<(), CliError> {
    let current = read_current(&settings)?;
    let findings = check(&current.lock, &current.scan.uses, &current.scan.binding);
    if !findings.is_empty() {
        return Err(CliError::check(VerifyError::Findings(findings))
            .hint("the lockfile does not match the manifests: run `lockstep lock` instead"));
    }
    let bytes = current
        .files
        .lockfile()
        .expect("read_current found the lockfile");
    let signer = signer_name(&settings);
    let sig_name = source::signature_path(&signer);
    let signature = settings.key.sign(bytes).map_err(CliError::usage)?;
    let commit = write(
        &settings,
        &current.files,
        &[(sig_name.clone(), signature.into_bytes())],
        &[],
        printer,
    )?;
    let others: Vec<&str> = current
        .files
        .signatures()
        .map(|(s, _)| s)
        .filter(|s| *s != signer)
        .collect();
    printer.result(format!(
        "signed: generation {} by {signer} ({} other signature file(s): {})",
        current.lock.generation,
        others.len(),
        others.join(", ")
    ));
    printer.json(&json!({
        "ok": true,
        "generation": current.lock.generation,
        "signer": signer,
        "written": [sig_name],
        "other_signers": others,
        "commit": commit,
    }));
    Ok(())
}

/// `refresh`: the same lockfile as the next generation, created at `created` and expiring
/// `lifetime` later, signed by this key.
pub fn refresh(
    settings: SignSettings,
    created: Timestamp,
    lifetime: SignedDuration,
    printer: Printer,
) -> Result<(), CliError> {
    let current = read_current(&settings)?;
    let next =
        refreshed(&current.lock, &current.scan, created, lifetime).map_err(CliError::check)?;
    let written = write_generation(&settings, &current, &next, printer)?;
    let expires = next.expires.ok_or_else(|| {
        CliError::check(Message("refresh made no expiry (a lockstep bug)".into()))
    })?;
    printer.result(format!(
        "refreshed: generation {} -> {}, expires {expires}, {} images unchanged, signed by {}",
        current.lock.generation,
        next.generation,
        next.images.len(),
        written.signer
    ));
    printer.json(&json!({
        "ok": true,
        "generation": next.generation,
        "previous_generation": current.lock.generation,
        "expires": expires.to_string(),
        "signer": written.signer,
        "removed": written.removals,
        "commit": written.commit,
    }));
    Ok(())
}

/// What [`write_generation`] wrote.
pub(super) struct WrittenGeneration {
    pub signer: String,
    pub removals: Vec<String>,
    pub commit: Option<String>,
}

/// Write `next` (a new generation of `current.lock`) signed by this key, and commit it with
/// `--commit`. The other signatures sign the old bytes and are removed, as with a new
/// generation from `lock`.
pub(super) fn write_generation(
    settings: &SignSettings,
    current: &Current,
    next: &Lockfile,
    printer: Printer,
) -> Result<WrittenGeneration, CliError> {
    let bytes = next.to_bytes();
    let signer = signer_name(settings);
    let sig_name = source::signature_path(&signer);
    let signature = settings.key.sign(&bytes).map_err(CliError::usage)?;
    let removals: Vec<String> = current
        .files
        .signatures()
        .map(|(s, _)| source::signature_path(s))
        .filter(|n| *n != sig_name)
        .collect();
    let writes = [
        (lockfile::FILE_NAME.to_owned(), bytes),
        (sig_name, signature.into_bytes()),
    ];
    let commit = write(settings, &current.files, &writes, &removals, printer)?;
    Ok(WrittenGeneration {
        signer,
        removals,
        commit,
    })
}

//! `lockstep sign` (a further approver signs the lockfile as it is) and `lockstep refresh`
//! (the same lockfile as a new generation with a new expiry). Both work offline: neither
//! asks the registry anything, and both refuse a lockfile that no longer matches the
//! manifests, so a signature never vouches for manifests nobody locked.
//!
//! Whom they believe about the lockfile on disk ([`read_current`]):
//! - `refresh` (and `mirror`) write a new generation of it, so it must verify under this
//!   key or `--trust`, like `lock` (expiry aside: refreshing an expired lockfile is the
//!   point). Otherwise they refuse, exit 1.
//! - `sign` computes no generation: it adds a signature over bytes someone else signed. An
//!   approver who passes `--trust` gets the existing signatures checked, and a refusal
//!   (exit code 1) when none verifies; without `--trust` (and without an own signature
//!   already there) the approval is the approver's own judgement of the bytes, and
//!   lockstep says so in a warning naming the generation they vouch for.

use std::path::PathBuf;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::check::check;
use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::lock::{ContinuationTrust, PreviousError, refreshed, verify_previous};
use crate::lockfile::{self, Lockfile};
use crate::signing::{self, AllowedSigners, SigningKey};
use crate::source::{self, SourceFiles, fs, git};
use crate::verify::{ScannedDir, VerifyError, scan_dir};

/// Validated settings for `sign`, and the signing half of `refresh`.
pub struct SignSettings {
    pub dir: PathBuf,
    pub key: SigningKey,
    pub signer: Option<String>,
    /// The commit message, with `--commit`.
    pub commit: Option<String>,
    /// `--trust FILE`: whose signatures on the lockfile on disk count, besides this key's.
    pub trust: Option<AllowedSigners>,
    /// Now, for the trusted keys' validity windows.
    pub trust_at: Timestamp,
}

/// The directory, its lockfile and its manifests' scan.
pub(super) struct Current {
    pub files: SourceFiles,
    pub lock: Lockfile,
    pub scan: ScannedDir,
    /// Whether the lockfile's signatures were verified (always, unless `sign` runs on the
    /// approver's own judgement).
    pub signatures_checked: bool,
}

/// What the lockfile on disk is read for, which decides whom it must be signed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// `refresh`, `mirror`: a new generation follows it.
    Continue,
    /// `sign`: a signature is added to it as it is.
    Approve,
}

/// Recovery for `refresh` and `mirror`, which have no `--new-history` of their own: a new
/// history needs new content, and only `lock` resolves it.
const RECOVER_BY_REFRESH: &str = "restore it from Git (`git checkout -- lockstep.lock`), pass --trust with the key that signed it, or start a new history with `lockstep lock --new-history` (the reconciler will refuse it as a rollback until its generation exceeds the applied one); nothing was written";

const RECOVER_BY_SIGN: &str = "nothing was signed: find out where these bytes came from; restore them from Git (`git checkout -- lockstep.lock`) or pass --trust with the key of whoever locked them";

pub(super) fn read_current(
    settings: &SignSettings,
    purpose: Purpose,
    printer: Printer,
) -> Result<Current, CliError> {
    let files = fs::read_dir(&settings.dir).map_err(CliError::usage)?;
    let Some(bytes) = files.lockfile() else {
        return Err(CliError::check(VerifyError::NoLockfile)
            .hint("only an existing lockfile can be signed"));
    };
    let own_key = super::lock::own_key_trust(&settings.key, &signer_name(settings))?;
    let trust = ContinuationTrust {
        own_key: Some(&own_key),
        trusted: settings.trust.as_ref(),
        at: settings.trust_at,
        environment: None,
    };
    let (lock, signatures_checked) = match (verify_previous(&files, &trust), purpose) {
        (Ok(lock), _) => (lock.expect("the lockfile exists"), true),
        (
            Err(PreviousError::NotTrusted {
                with_trust: false, ..
            }),
            Purpose::Approve,
        ) => {
            let lock = Lockfile::parse_unverified(bytes).map_err(|e| {
                CliError::check(e).hint(format!(
                    "{} is unreadable; nothing was signed",
                    lockfile::FILE_NAME
                ))
            })?;
            printer.warn(format!(
                "the signatures already on {} were not checked (no --trust, and none is by this key): your signature vouches for generation {} on your own judgement",
                lockfile::FILE_NAME,
                lock.generation
            ));
            (lock, false)
        }
        (Err(e), Purpose::Approve) => return Err(super::lock::refusal(e, RECOVER_BY_SIGN)),
        (Err(e), Purpose::Continue) => return Err(super::lock::refusal(e, RECOVER_BY_REFRESH)),
    };
    let scan = scan_dir(&files).map_err(CliError::check)?;
    Ok(Current {
        files,
        lock,
        scan,
        signatures_checked,
    })
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
    let current = read_current(&settings, Purpose::Approve, printer)?;
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
        "signatures_checked": current.signatures_checked,
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
    let current = read_current(&settings, Purpose::Continue, printer)?;
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

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

use super::publish::{Publication, Signed};
use crate::check::check;
use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::lock::{ContinuationTrust, PreviousError, refreshed, verify_previous};
use crate::lockfile::{self, Lockfile};
use crate::signing::{AllowedSigners, SigningKey};
use crate::source::{SourceFiles, fs};
use crate::verify::{ScannedDir, VerifyError, scan_dir};

/// Validated settings for `sign`, and the signing half of `refresh`.
pub struct SignSettings {
    pub dir: PathBuf,
    pub key: SigningKey,
    /// `--commit-key`: signs the commit instead of `key`.
    pub commit_key: Option<SigningKey>,
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
    // Nothing to sign is a usage error (exit 2), as in `check`: no check ran, none failed.
    let Some(bytes) = files.lockfile() else {
        return Err(CliError::usage(VerifyError::NoLockfile)
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
    super::publish::signer_name(settings.signer.as_deref(), &settings.key)
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
    let written = sign_and_write(&settings, &current, Signed::Existing(bytes), printer)?;
    let signer = written.signer;
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
        "written": written.written,
        "other_signers": others,
        "signatures_checked": current.signatures_checked,
        "commit": written.commit,
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

/// What [`sign_and_write`] wrote.
pub(super) struct WrittenGeneration {
    pub signer: String,
    pub written: Vec<String>,
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
    sign_and_write(settings, current, Signed::New(next.to_bytes()), printer)
}

/// Sign `lockfile` with this key, write it (and with `--commit`, commit it).
fn sign_and_write(
    settings: &SignSettings,
    current: &Current,
    lockfile: Signed<'_>,
    printer: Printer,
) -> Result<WrittenGeneration, CliError> {
    let signer = signer_name(settings);
    let publication =
        Publication::signed(&settings.key, &signer, lockfile, &current.files, Vec::new())?;
    let commit = publication.write(
        &settings.dir,
        &current.files,
        settings.commit.as_deref(),
        &[],
        settings.commit_key.as_ref().unwrap_or(&settings.key),
        printer,
    )?;
    Ok(WrittenGeneration {
        signer,
        written: publication
            .written()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        removals: publication.removals,
        commit,
    })
}

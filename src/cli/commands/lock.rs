//! `lockstep lock`: read → scan → resolve → pin → lockfile → sign → write (→ commit).

use std::path::PathBuf;

use jiff::Timestamp;
use serde_json::json;

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::cli::progress::reporter;
use crate::lock::{
    ContinuationTrust, LockDecision, LockOptions, PreviousError, next_lockfile, pin_files,
    resolution_targets, verify_previous,
};
use crate::lockfile::{self, Lockfile};
use crate::resolve::oci::{OciRegistry, OciSettings};
use crate::resolve::resolve_all;
use crate::signing::{self, AllowedSigners, SignatureFile, SigningKey};
use crate::source::{self, SourceFiles, fs, git};
use crate::verify::{refuse_unscanned_images, scan_dir};

/// Validated settings for one `lock` run.
pub struct LockSettings {
    pub dir: PathBuf,
    /// None only with `check`.
    pub key: Option<SigningKey>,
    pub signer: Option<String>,
    pub check: bool,
    pub commit: Option<String>,
    pub registry: OciSettings,
    pub concurrency: usize,
    pub created: Timestamp,
    /// `--expires-in` and `--environment`.
    pub options: LockOptions,
    /// `--trust FILE`: besides the key itself, whose signature on the lockfile on disk lets
    /// this lock continue its generation.
    pub trust: Option<AllowedSigners>,
    /// Now, for the trusted keys' validity windows (not `created`, which may be
    /// `SOURCE_DATE_EPOCH`).
    pub trust_at: Timestamp,
    /// `--new-history`: ignore the lockfile on disk and start at generation 1.
    pub new_history: bool,
    /// `--strict`: refuse objects holding images lockstep does not pin.
    pub strict: bool,
}

/// What to tell someone whose lockfile on disk cannot be continued from.
pub(crate) const RECOVER_BY_LOCK: &str = "restore it from Git (`git checkout -- lockstep.lock`), pass --trust with the key that signed it, or start a new history with `--new-history` (the reconciler will refuse it as a rollback until its generation exceeds the applied one); nothing was written";

/// The lockfile on disk this lock continues from: only one whose signatures verify under
/// the signing key or `--trust` (see [`verify_previous`]). `lock --check` signs nothing and
/// only judges staleness: without --trust it reads the lockfile unverified, as before, and
/// `verify` remains the check of who signed it.
fn previous_lockfile(
    settings: &LockSettings,
    files: &SourceFiles,
    printer: Printer,
) -> Result<Option<Lockfile>, CliError> {
    if settings.new_history {
        if files.lockfile().is_some() {
            printer.warn(format!(
                "--new-history: ignoring the {} on disk; the new lockfile starts again at generation 1",
                lockfile::FILE_NAME
            ));
        }
        return Ok(None);
    }
    let own_key = match &settings.key {
        Some(key) => Some(own_key_trust(
            key,
            &signer_of(settings.signer.as_deref(), key),
        )?),
        None => None,
    };
    if own_key.is_none() && settings.trust.is_none() {
        return match files.lockfile() {
            Some(bytes) => Ok(Some(Lockfile::parse_unverified(bytes).map_err(|e| {
                CliError::check(e).hint("the existing lockfile is unreadable; `lockstep lock --new-history` starts again at generation 1")
            })?)),
            None => Ok(None),
        };
    }
    let trust = ContinuationTrust {
        own_key: own_key.as_ref(),
        trusted: settings.trust.as_ref(),
        at: settings.trust_at,
        environment: settings.options.environment.as_deref(),
    };
    verify_previous(files, &trust).map_err(|e| refusal(e, RECOVER_BY_LOCK))
}

/// A lockfile that cannot be continued from (or approved) is a failed check: exit 1.
pub(crate) fn refusal(e: PreviousError, recover: &str) -> CliError {
    CliError::check(e).hint(recover)
}

/// The signing key's public half as a trust set of its own.
pub(crate) fn own_key_trust(key: &SigningKey, signer: &str) -> Result<AllowedSigners, CliError> {
    AllowedSigners::parse(&key.allowed_signers_line(signer), "the signing key")
        .map_err(CliError::usage)
}

fn signer_of(signer: Option<&str>, key: &SigningKey) -> String {
    signer.map_or_else(
        || signing::signer_name(key.comment(), &key.fingerprint()),
        str::to_owned,
    )
}

pub async fn run(settings: LockSettings, printer: Printer) -> Result<(), CliError> {
    let dir = &settings.dir;
    let files = fs::read_dir(dir).map_err(CliError::usage)?;
    let scan = scan_dir(&files).map_err(CliError::check)?;
    for notice in &scan.notices {
        printer.note(format!("note: {notice}"));
    }
    if settings.strict {
        refuse_unscanned_images(&scan.notices).map_err(CliError::check)?;
    }
    let previous = previous_lockfile(&settings, &files, printer)?;
    let targets = resolution_targets(&scan.uses, previous.as_ref());
    let known = previous
        .as_ref()
        .map(Lockfile::known_resolutions)
        .unwrap_or_default();
    printer.note(format!(
        "found {} image uses ({} distinct references) in {} files",
        scan.uses.len(),
        targets.len(),
        files.manifests().count()
    ));

    let registry = OciRegistry::new(settings.registry).map_err(CliError::usage)?;
    let progress = reporter(printer, "resolving");
    let resolved = resolve_all(&registry, targets, &known, settings.concurrency, &*progress)
        .await
        .map_err(|e| {
            CliError::registry(e)
                .hint("nothing was written; fix the references or the registry and run lock again")
        })?;

    let pinned = pin_files(&files, &scan, previous.as_ref(), &resolved).map_err(CliError::check)?;
    for w in &pinned.warnings {
        printer.warn(format!(
            "{}: {} keeps its digest, but its tag now points to {} in the registry",
            w.location, w.written, w.registry_digest
        ));
    }
    let decision = next_lockfile(
        previous.as_ref(),
        settings.created,
        &pinned,
        &resolved,
        &settings.options,
    )
    .map_err(CliError::check)?;

    if settings.check {
        return match decision {
            LockDecision::UpToDate(lock) => {
                printer.result(format!(
                    "up to date: generation {}, {} images",
                    lock.generation,
                    lock.images.len()
                ));
                printer
                    .json(&json!({"ok": true, "up_to_date": true, "generation": lock.generation}));
                Ok(())
            }
            LockDecision::New(lock) => {
                let why = stale_reasons(previous.as_ref(), &lock, &pinned.changed);
                printer.json(&json!({"ok": false, "up_to_date": false, "reasons": why}));
                Err(CliError::check(Message(format!(
                    "{} is stale:\n  {}",
                    lockfile::FILE_NAME,
                    why.join("\n  ")
                )))
                .hint("run `lockstep lock` and commit the result"))
            }
        };
    }

    let key = settings
        .key
        .as_ref()
        .expect("the key is required unless --check");
    let signer = signer_of(settings.signer.as_deref(), key);
    let sig_name = source::signature_path(&signer);
    let (lock, lock_bytes, new_generation) = match decision {
        LockDecision::UpToDate(lock) => {
            let bytes = files
                .lockfile()
                .expect("up to date means a lockfile exists")
                .to_vec();
            (lock, bytes, false)
        }
        LockDecision::New(lock) => {
            let bytes = lock.to_bytes();
            (lock, bytes, true)
        }
    };
    // Up to date and already signed by this key: nothing to do at all.
    if !new_generation && signed_by(&files, &sig_name, &lock_bytes, key, settings.created) {
        printer.result(format!(
            "up to date: generation {}, {} images",
            lock.generation,
            lock.images.len()
        ));
        printer.json(
            &json!({"ok": true, "up_to_date": true, "generation": lock.generation, "written": []}),
        );
        return Ok(());
    }
    let signature = key.sign(&lock_bytes).map_err(CliError::usage)?;

    let mut writes: Vec<(String, Vec<u8>)> = pinned
        .changed
        .iter()
        .map(|f| (f.clone(), pinned.files.files[f].clone()))
        .collect();
    if new_generation {
        writes.push((lockfile::FILE_NAME.to_owned(), lock_bytes.clone()));
    }
    writes.push((sig_name.clone(), signature.into_bytes()));
    // Signatures over the previous lockfile bytes no longer sign anything.
    let removals: Vec<String> = if new_generation {
        files
            .signatures()
            .map(|(signer, _)| source::signature_path(signer))
            .filter(|n| *n != sig_name)
            .collect()
    } else {
        Vec::new()
    };
    if settings.commit.is_some() {
        super::sign::refuse_uncommitted_inputs(dir, &files, &writes, &removals)?;
    }
    fs::write_files(dir, &writes, &removals).map_err(CliError::usage)?;
    let written: Vec<&str> = writes.iter().map(|(p, _)| p.as_str()).collect();
    printer.note(format!("wrote {}", written.join(", ")));
    if !removals.is_empty() {
        printer.note(format!("removed stale signatures {}", removals.join(", ")));
    }

    let mut commit_id = None;
    if let Some(message) = &settings.commit {
        let paths: Vec<String> = writes.iter().map(|(p, _)| p.clone()).collect();
        match git::commit(dir, &paths, &removals, message).map_err(CliError::usage)? {
            git::CommitOutcome::Committed(info) => {
                printer.note(format!("committed {} {}", &info.id[..12], info.summary));
                commit_id = Some(info.id);
            }
            git::CommitOutcome::Unchanged => {
                printer.note("nothing to commit: HEAD already holds these files")
            }
        }
    }
    let verb = if new_generation {
        "locked"
    } else {
        "re-signed"
    };
    printer.result(format!(
        "{verb}: generation {}, {} images, {} manifest files bound, signed by {signer}",
        lock.generation,
        lock.images.len(),
        lock.manifests.files
    ));
    printer.json(&json!({
        "ok": true,
        "up_to_date": false,
        "generation": lock.generation,
        "images": lock.images.len(),
        "written": written,
        "removed": removals,
        "signer": signer,
        "commit": commit_id,
    }));
    Ok(())
}

/// Does `sig_name` hold a valid signature of `lock_bytes` by `key`? Checked with the same
/// verification code as everything else, trusting only this key.
fn signed_by(
    files: &source::SourceFiles,
    sig_name: &str,
    lock_bytes: &[u8],
    key: &SigningKey,
    at: Timestamp,
) -> bool {
    let Some(sig) = files.files.get(sig_name) else {
        return false;
    };
    let Ok(only_this_key) = own_key_trust(key, "signer") else {
        return false;
    };
    let file = SignatureFile {
        name: sig_name.to_owned(),
        armored: sig.clone(),
    };
    signing::verify(lock_bytes, &[file], &only_this_key, at, 1).is_ok()
}

/// In words, why the lockfile on disk is not the one `lock` would write.
fn stale_reasons(previous: Option<&Lockfile>, new: &Lockfile, changed: &[String]) -> Vec<String> {
    let Some(prev) = previous else {
        return vec![format!("there is no {}", lockfile::FILE_NAME)];
    };
    let mut reasons = Vec::new();
    for f in changed {
        reasons.push(format!("{f}: images not pinned to their current digests"));
    }
    for e in &new.images {
        match prev.entry(&e.reference) {
            None => reasons.push(format!("{}: new image reference", e.reference)),
            Some(old) if old.digest != e.digest => reasons.push(format!(
                "{}: digest changed {} -> {}",
                e.reference, old.digest, e.digest
            )),
            Some(_) => {}
        }
    }
    for old in &prev.images {
        if new.entry(&old.reference).is_none() {
            reasons.push(format!("{}: no longer used", old.reference));
        }
    }
    if reasons.is_empty() && prev.environment != new.environment {
        reasons.push(format!(
            "the environment changes from {:?} to {:?}",
            prev.environment, new.environment
        ));
    }
    if reasons.is_empty() && prev.manifests != new.manifests {
        reasons.push("the manifests changed since they were locked".into());
    }
    if reasons.is_empty() {
        reasons.push("the lockfile records different uses or media types".into());
    }
    reasons
}

//! `lockstep lock`: read → scan → resolve → pin → lockfile → sign → write (→ commit).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use jiff::Timestamp;
use serde_json::json;

use super::publish::{Publication, Signed, signer_name};
use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::cli::progress::reporter;
use crate::hydrate::{self, HydrateError};
use crate::lock::{
    ContinuationTrust, Holds, LockDecision, LockOptions, PinReason, Pinned, PreviousError,
    next_lockfile, pin_files, resolution_targets, verify_previous,
};
use crate::lockfile::{self, Lockfile};
use crate::model::ImageRef;
use crate::registry::Resolved;
use crate::resolve::oci::{OciRegistry, OciSettings};
use crate::resolve::resolve_all;
use crate::signing::{self, AllowedSigners, SignatureFile, SigningKey};
use crate::source::{self, SourceFiles, fs};
use crate::verify::{ScannedDir, refuse_unscanned_images, scan_dir};

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
    /// `--hold` and `--release`.
    pub holds: Holds,
    /// The renderers for `[[render]]` steps.
    pub tools: crate::hydrate::Tools,
    /// `--pin-sources`: write the locked digests into the kustomizations rendered.
    pub pin_sources: bool,
    /// `--commit-key`: signs the commit instead of `key`.
    pub commit_key: Option<SigningKey>,
    /// `promote`: the digests come from another environment's verified lockfile.
    pub promotion: Option<PromotionSource>,
}

/// What `promote` takes from the source environment: every digest its verified lockfile
/// pins (as the registry's answers would be keyed), and the record of where they came from.
pub struct PromotionSource {
    /// The source directory, for messages.
    pub from: String,
    pub known: BTreeMap<ImageRef, Resolved>,
    pub record: crate::lockfile::Promotion,
    /// `--resolve-missing`: ask the registry for images the source does not pin.
    pub resolve_missing: bool,
}

impl PromotionSource {
    /// From the source's verified lockfile (its exact bytes hashed into the record).
    pub fn of(
        from: String,
        lock: &Lockfile,
        bytes: &[u8],
        (path, commit): (Option<String>, Option<String>),
        resolve_missing: bool,
    ) -> PromotionSource {
        let mut known = lock.known_resolutions();
        // Digests written in the target's manifests are confirmed by digest: answer those
        // the source pins too.
        for entry in &lock.images {
            if let Ok(by_digest) =
                ImageRef::parse(&format!("{}@{}", entry.image.name(), entry.digest))
            {
                known.insert(by_digest, known[&entry.image].clone());
            }
        }
        PromotionSource {
            from,
            known,
            record: crate::lockfile::Promotion {
                environment: lock.environment.clone(),
                generation: lock.generation,
                lockfile: crate::model::Digest::of(bytes),
                path,
                commit,
                resolved: Vec::new(),
            },
            resolve_missing,
        }
    }
}

impl PromotionSource {
    /// The pinned images (`registry/repository@digest`, sorted, each once) whose digest is
    /// not one the source pins: those `--resolve-missing` resolved, or held by `--hold`.
    fn not_from_source(&self, pinned: &Pinned) -> Vec<String> {
        let from_source: BTreeSet<(String, &crate::model::Digest)> = self
            .known
            .iter()
            .map(|(r, v)| (r.name(), &v.digest))
            .collect();
        pinned
            .scan
            .uses
            .iter()
            .filter_map(|u| {
                let digest = u.reference.digest()?;
                let name = u.reference.name();
                (!from_source.contains(&(name.clone(), digest))).then(|| format!("{name}@{digest}"))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
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
            &signer_name(settings.signer.as_deref(), key),
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

/// One pass of `lock` up to the decision: what was read, rendered, scanned and pinned.
struct Pass {
    files: SourceFiles,
    renders: Renders,
    previous: Option<Lockfile>,
    resolved: BTreeMap<ImageRef, Resolved>,
    pinned: Pinned,
    decision: LockDecision,
}

/// Read and render → scan → resolve → pin → the next lockfile. `pinned_sources`: sources
/// this run rewrote (`--pin-sources`), to be committed with it.
async fn pass(
    settings: &mut LockSettings,
    pinned_sources: &[String],
    printer: Printer,
) -> Result<Pass, CliError> {
    let disk = fs::read_dir(&settings.dir).map_err(CliError::usage)?;
    let previous = previous_lockfile(settings, &disk, printer)?;
    let charts = fetch_charts(settings, &disk).await?;
    let (files, renders) = render_steps(
        settings,
        disk,
        previous.as_ref(),
        &charts,
        pinned_sources,
        printer,
    )?;
    settings.options.renders = renders.records.clone();
    let scan = scan(settings, &files, printer)?;
    if let Some(promotion) = &settings.promotion {
        // A promotion overrides the target's recorded holds (not a `--hold` given with it):
        // every image the source pins follows it.
        let promoted: Vec<ImageRef> = scan
            .uses
            .iter()
            .map(|u| u.reference.without_digest())
            .filter(|r| r.tag().is_some() && promotion.known.contains_key(r))
            .filter(|r| !settings.holds.hold.contains_key(r))
            .collect();
        settings.holds.release.extend(promoted);
        settings.options.promoted_from = Some(promotion.record.clone());
    }
    let resolved = resolve(settings, &files, &scan, previous.as_ref(), printer).await?;
    let (pinned, decision) = pin(
        settings,
        &files,
        &scan,
        previous.as_ref(),
        &resolved,
        printer,
    )
    .await?;
    Ok(Pass {
        files,
        renders,
        previous,
        resolved,
        pinned,
        decision,
    })
}

/// `lock`, top-down: read and render → scan → resolve → pin → the next lockfile →
/// (`--pin-sources`: write the digests into the sources and render again) → (`--check`:
/// judge it) → sign → write → commit.
pub async fn run(mut settings: LockSettings, printer: Printer) -> Result<(), CliError> {
    let first = pass(&mut settings, &[], printer).await?;
    if !settings.pin_sources {
        return finish(&settings, first, &[], printer);
    }
    let edits = {
        let previous = first.previous.as_ref();
        let digest_for = |image: &str| {
            let reference = ImageRef::parse(image).ok()?;
            let tag = &first
                .resolved
                .get(&lockfile::lookup_key(&reference))?
                .digest;
            Some(
                settings
                    .holds
                    .source_digest(image, &reference, previous, tag),
            )
        };
        let steps = scan_config(&first.renders.disk)?;
        super::pin_sources::plan(
            &settings.dir,
            steps.renders(),
            &first.renders.records,
            digest_for,
            printer,
        )?
    };
    if edits.is_empty() {
        return finish(&settings, first, &[], printer);
    }
    if settings.check {
        return Err(super::pin_sources::stale(&edits, printer));
    }
    for edit in &edits {
        for pin in &edit.pins {
            if let Ok(reference) = ImageRef::parse(&pin.image) {
                settings
                    .holds
                    .in_sources
                    .insert(reference.without_digest(), pin.digest.clone());
            }
        }
    }
    let written = super::pin_sources::write(&settings.dir, &edits, printer)?;
    // The sources are written: render and lock again from them. On any failure they are put
    // back, so that nothing is written after all.
    let locked = async {
        let second = pass(&mut settings, &written, printer).await?;
        finish(&settings, second, &written, printer)
    }
    .await;
    if locked.is_err() {
        super::pin_sources::restore(&settings.dir, &edits, printer);
    }
    locked
}

/// The rest of `lock` after the decision: `--check` judges it; else sign, write, commit
/// (with `pinned_sources`).
fn finish(
    settings: &LockSettings,
    pass: Pass,
    pinned_sources: &[String],
    printer: Printer,
) -> Result<(), CliError> {
    let Pass {
        files,
        renders,
        previous,
        pinned,
        decision,
        ..
    } = pass;
    if settings.check {
        // What differs from the disk: a rendered output is pinned on every lock, and is
        // stale only when the pinned result is not the file there.
        let changed: Vec<String> = pinned
            .changed
            .iter()
            .filter(|f| pinned.files.files.get(*f) != renders.disk.files.get(*f))
            .cloned()
            .chain(renders.changed_outputs(&pinned))
            .collect();
        return judge_staleness(decision, previous.as_ref(), &changed, printer);
    }
    let key = settings
        .key
        .as_ref()
        .expect("the key is required unless --check");
    let signer = signer_name(settings.signer.as_deref(), key);
    let generation = Generation::of(decision, &files);
    let outputs = renders.changed_outputs(&pinned);
    if !generation.new
        && outputs.is_empty()
        && signed_by(&files, &signer, &generation.bytes, key, settings.created)
    {
        return report_up_to_date(&generation.lock, printer);
    }
    let publication = sign(key, &signer, &files, &pinned, &outputs, &generation)?;
    renders.make_parents(&settings.dir, &renders.outputs)?;
    let commit = publication.write(
        &settings.dir,
        &renders.disk,
        settings.commit.as_deref(),
        pinned_sources,
        settings.commit_key.as_ref().unwrap_or(key),
        printer,
    )?;
    report_locked(&generation, &publication, &signer, commit, printer);
    Ok(())
}

/// Scan the manifests, rendered outputs included (`--strict`: refuse images it cannot pin).
fn scan(
    settings: &LockSettings,
    files: &SourceFiles,
    printer: Printer,
) -> Result<ScannedDir, CliError> {
    let scan = scan_dir(files).map_err(CliError::check)?;
    for notice in &scan.notices {
        printer.note(format!("note: {notice}"));
    }
    if settings.strict {
        refuse_unscanned_images(&scan.notices).map_err(CliError::check)?;
    }
    Ok(scan)
}

/// What the render steps made: the directory with each output as rendered, and as on disk.
struct Renders {
    disk: SourceFiles,
    outputs: Vec<String>,
    records: Vec<crate::render::RenderRecord>,
}

impl Renders {
    /// The outputs whose pinned bytes are not the ones on disk: to be written.
    fn changed_outputs(&self, pinned: &Pinned) -> Vec<String> {
        self.outputs
            .iter()
            .filter(|o| {
                !pinned.changed.contains(o) && pinned.files.files.get(*o) != self.disk.files.get(*o)
            })
            .cloned()
            .collect()
    }

    /// Create the directories the outputs go to.
    fn make_parents(&self, dir: &std::path::Path, outputs: &[String]) -> Result<(), CliError> {
        for output in outputs {
            if let Some((parent, _)) = output.rsplit_once('/') {
                std::fs::create_dir_all(dir.join(parent)).map_err(|e| {
                    CliError::usage(Message(format!(
                        "cannot create {}: {e}",
                        dir.join(parent).display()
                    )))
                })?;
            }
        }
        Ok(())
    }
}

/// `lockstep.toml` as parsed (the default when there is none).
fn scan_config(disk: &SourceFiles) -> Result<crate::manifest::config::ScanConfig, CliError> {
    match disk.config() {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| {
                CliError::check(Message(format!("{} is not UTF-8", source::CONFIG_FILE)))
            })?;
            crate::manifest::config::ScanConfig::parse(text, source::CONFIG_FILE)
                .map_err(CliError::check)
        }
        None => Ok(Default::default()),
    }
}

/// Fetch the charts of the render steps that name one in an OCI registry: its version
/// resolved to a digest each lock, like an image tag.
async fn fetch_charts(
    settings: &LockSettings,
    disk: &SourceFiles,
) -> Result<BTreeMap<String, hydrate::FetchedChart>, CliError> {
    let config = scan_config(disk)?;
    let wanted: Vec<(String, String)> = config
        .renders()
        .iter()
        .filter_map(|s| {
            s.oci_chart().map(|c| {
                (
                    s.output.clone(),
                    format!("{}{c}", crate::render::OCI_SCHEME),
                )
            })
        })
        .collect();
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let registry = OciRegistry::new(settings.registry.clone()).map_err(CliError::usage)?;
    hydrate::fetch_charts(&registry, wanted)
        .await
        .map_err(render_failure)
}

/// A render step's failure: the environment's (exit 2), or a failed check (exit 1) after
/// which nothing was written.
fn render_failure(e: HydrateError) -> CliError {
    let environment = e.is_environment();
    let error = CliError::usage_or_check(environment, e);
    if environment {
        error
    } else {
        error.hint("nothing was written")
    }
}

/// Run every `[[render]]` step of `lockstep.toml` with the real tool and put its output in
/// the directory's files, to be pinned and bound like any manifest. An output that exists on
/// disk must be one the previous lockfile records as rendered: a hand-written manifest is
/// never overwritten.
fn render_steps(
    settings: &LockSettings,
    disk: SourceFiles,
    previous: Option<&Lockfile>,
    charts: &BTreeMap<String, hydrate::FetchedChart>,
    pinned_sources: &[String],
    printer: Printer,
) -> Result<(SourceFiles, Renders), CliError> {
    let config = scan_config(&disk)?;
    let mut files = disk.clone();
    let mut renders = Renders {
        disk,
        outputs: Vec::new(),
        records: Vec::new(),
    };
    if config.renders().is_empty() {
        return Ok((files, renders));
    }
    let fail = render_failure;
    let frame = hydrate::Frame::for_lock(&settings.dir).map_err(fail)?;
    let reader = hydrate::FsInputs { frame: &frame };
    for step in config.renders() {
        let recorded = previous.is_some_and(|p| p.renders.iter().any(|r| r.output == step.output));
        if renders.disk.files.contains_key(&step.output) && !recorded {
            return Err(fail(HydrateError::HandWritten {
                output: step.output.clone(),
            }));
        }
        let tool = settings
            .tools
            .find(step.renderer(), &step.output)
            .map_err(fail)?;
        let roots = hydrate::roots_of(&reader, step).map_err(fail)?;
        let chart = charts.get(&step.output);
        let rendered =
            hydrate::render(step, roots, &reader, frame.anchor(), &tool, chart).map_err(fail)?;
        printer.note(format!(
            "rendered {} with {} {} ({} input files)",
            step.output,
            step.renderer(),
            tool.version,
            rendered.record.inputs.files
        ));
        files
            .insert(step.output.clone(), rendered.bytes)
            .map_err(|e| CliError::check(e).hint("nothing was written"))?;
        renders.outputs.push(step.output.clone());
        renders.records.push(rendered.record);
    }
    renders.records.sort_by(|a, b| a.output.cmp(&b.output));
    if settings.commit.is_some() {
        refuse_uncommitted_render_inputs(&settings.dir, &renders.records, pinned_sources)?;
    }
    Ok((files, renders))
}

/// `--commit` commits the rendered outputs and the lockfile that hashes their inputs; inputs
/// left uncommitted would make that commit fail its own verification.
fn refuse_uncommitted_render_inputs(
    dir: &std::path::Path,
    records: &[crate::render::RenderRecord],
    pinned_sources: &[String],
) -> Result<(), CliError> {
    let head = hydrate::GitInputs { dir, rev: "HEAD" };
    for record in records {
        let committed = crate::render::input_binding(&record.roots, &head);
        let uncommitted: Vec<String> = match &committed {
            Ok(at_head) => {
                let d = at_head.differences(&record.inputs);
                [d.changed, d.added, d.removed]
                    .concat()
                    .into_iter()
                    // What --pin-sources wrote is committed with the lock.
                    .filter(|f| !pinned_sources.contains(f))
                    .collect()
            }
            Err(e) => vec![e.clone()],
        };
        if !uncommitted.is_empty() {
            let what = uncommitted.join(", ");
            return Err(CliError::usage(Message(format!(
                "--commit would leave out what is signed: the inputs of {} have uncommitted changes ({what})",
                record.output
            )))
            .hint("commit the sources first (or run without --commit and commit everything yourself); nothing was written"));
        }
    }
    Ok(())
}

/// Ask the registries for every reference the manifests use that the previous lockfile does
/// not already answer.
async fn resolve(
    settings: &LockSettings,
    files: &SourceFiles,
    scan: &ScannedDir,
    previous: Option<&Lockfile>,
    printer: Printer,
) -> Result<BTreeMap<ImageRef, Resolved>, CliError> {
    let unused = settings.holds.unused(&scan.uses);
    if let Some(image) = unused.first() {
        return Err(CliError::usage(Message(format!(
            "--hold/--release {image}: no manifest uses this image (name it as the manifests do, with its tag)"
        ))));
    }
    let mut targets = resolution_targets(&scan.uses, previous, &settings.holds);
    let mut promoted = BTreeMap::new();
    if let Some(promotion) = &settings.promotion {
        let (known, missing): (Vec<ImageRef>, Vec<ImageRef>) = targets
            .into_iter()
            .partition(|t| promotion.known.contains_key(t));
        promoted = known
            .into_iter()
            .map(|t| {
                let answer = promotion.known[&t].clone();
                (t, answer)
            })
            .collect();
        if !missing.is_empty() && !promotion.resolve_missing {
            let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
            return Err(CliError::check(Message(format!(
                "{} uses images that the lockfile of {} does not pin: {}",
                settings.dir.display(),
                promotion.from,
                names.join(", ")
            )))
            .hint("lock them there first (a promotion takes every digest from the source), or pass --resolve-missing to resolve these from the registry; nothing was written"));
        }
        for m in &missing {
            printer.warn(format!(
                "{m}: not in the lockfile of {}: resolved from the registry (--resolve-missing)",
                promotion.from
            ));
        }
        if missing.is_empty() {
            printer.note(format!(
                "promoting {} digests from {} (no registry lookups)",
                promoted.len(),
                promotion.from
            ));
            return Ok(promoted);
        }
        targets = missing;
    }
    let known = previous
        .map(Lockfile::known_resolutions)
        .unwrap_or_default();
    printer.note(format!(
        "found {} image uses ({} distinct references) in {} files",
        scan.uses.len(),
        targets.len(),
        files.manifests().count()
    ));
    let registry = OciRegistry::new(settings.registry.clone()).map_err(CliError::usage)?;
    let progress = reporter(printer, "resolving");
    let mut resolved = resolve_all(&registry, targets, &known, settings.concurrency, &*progress)
        .await
        .map_err(|e| {
            CliError::registry(e)
                .hint("nothing was written; fix the references or the registry and run lock again")
        })?;
    resolved.extend(promoted);
    Ok(resolved)
}

/// Pin the manifests to the resolved digests, check the signatures provenance rules require
/// of them, and decide the lockfile that records both.
async fn pin(
    settings: &LockSettings,
    files: &SourceFiles,
    scan: &ScannedDir,
    previous: Option<&Lockfile>,
    resolved: &BTreeMap<ImageRef, Resolved>,
    printer: Printer,
) -> Result<(Pinned, LockDecision), CliError> {
    let pinned =
        pin_files(files, scan, previous, resolved, &settings.holds).map_err(CliError::check)?;
    for w in &pinned.warnings {
        printer.warn(format!(
            "{}: {} keeps its digest (held), but its tag now points to {} in the registry",
            w.location, w.written, w.registry_digest
        ));
    }
    report_changes(&pinned, settings.promotion.as_ref(), printer);
    let mut options = settings.options.clone();
    if let (Some(promotion), Some(record)) = (&settings.promotion, &mut options.promoted_from) {
        record.resolved = promotion.not_from_source(&pinned);
    }
    options.signatures =
        super::provenance::signatures(settings, &pinned, previous, printer).await?;
    options.attestations =
        super::provenance::attestations(settings, &pinned, previous, printer).await?;
    let decision = next_lockfile(previous, settings.created, &pinned, resolved, &options)
        .map_err(CliError::check)?;
    Ok((pinned, decision))
}

/// Every digest this lock changes, and why (in a promotion, a tag's digest is the source's);
/// every image still held.
fn report_changes(pinned: &Pinned, promotion: Option<&PromotionSource>, printer: Printer) {
    for c in &pinned.changes {
        let promoted = promotion.filter(|p| {
            ImageRef::parse(&c.reference)
                .is_ok_and(|r| p.known.contains_key(&lockfile::lookup_key(&r)))
        });
        let why = match c.reason {
            PinReason::Tag => match promoted {
                Some(p) => format!("the digest {} pins", p.from),
                None => "its tag's digest".to_owned(),
            },
            PinReason::HoldAsked => "held by --hold".to_owned(),
            PinReason::WrittenByHand => format!(
                "written in the manifest by hand: held (`--release {}` lets it follow its tag)",
                c.reference
            ),
            PinReason::Held => "held".to_owned(),
            PinReason::AsWritten => format!(
                "as written; not held, so the next lock follows its tag (`--hold {}@{}` keeps it)",
                c.reference, c.to
            ),
            PinReason::DigestOnly => "digest-only reference".to_owned(),
        };
        let from = c
            .from
            .as_ref()
            .map_or_else(|| "(new)".to_owned(), ToString::to_string);
        printer.note(format!("{}: {from} -> {} ({why})", c.reference, c.to));
    }
    for reference in &pinned.held {
        if !pinned.changes.iter().any(|c| c.reference == *reference) {
            printer.note(format!(
                "{reference}: held at its digest (`--release {reference}` lets it follow its tag)"
            ));
        }
    }
}

/// `lock --check`: write nothing; a lockfile that is not the one `lock` would write fails.
fn judge_staleness(
    decision: LockDecision,
    previous: Option<&Lockfile>,
    changed: &[String],
    printer: Printer,
) -> Result<(), CliError> {
    match decision {
        LockDecision::UpToDate(lock) => {
            printer.result(format!(
                "up to date: generation {}, {} images",
                lock.generation,
                lock.images.len()
            ));
            printer.json(&json!({"ok": true, "up_to_date": true, "generation": lock.generation}));
            Ok(())
        }
        LockDecision::New(lock) => {
            let why = stale_reasons(previous, &lock, changed);
            printer.json(&json!({"ok": false, "up_to_date": false, "reasons": why}));
            Err(CliError::check(Message(format!(
                "{} is stale:\n  {}",
                lockfile::FILE_NAME,
                why.join("\n  ")
            )))
            .hint("run `lockstep lock` and commit the result"))
        }
    }
}

/// The lockfile this run signs: the one on disk (up to date) or a new generation.
struct Generation {
    lock: Lockfile,
    /// The exact bytes signed: as on disk, or as written.
    bytes: Vec<u8>,
    new: bool,
}

impl Generation {
    fn of(decision: LockDecision, files: &SourceFiles) -> Generation {
        match decision {
            LockDecision::UpToDate(lock) => Generation {
                lock,
                bytes: files
                    .lockfile()
                    .expect("up to date means a lockfile exists")
                    .to_vec(),
                new: false,
            },
            LockDecision::New(lock) => Generation {
                bytes: lock.to_bytes(),
                lock,
                new: true,
            },
        }
    }
}

/// The changed manifests, a new lockfile, and this key's signature over its bytes.
fn sign(
    key: &SigningKey,
    signer: &str,
    files: &SourceFiles,
    pinned: &Pinned,
    outputs: &[String],
    generation: &Generation,
) -> Result<Publication, CliError> {
    let manifests = pinned
        .changed
        .iter()
        .chain(outputs)
        .map(|f| (f.clone(), pinned.files.files[f].clone()))
        .collect();
    let lockfile = if generation.new {
        Signed::New(generation.bytes.clone())
    } else {
        Signed::Existing(&generation.bytes)
    };
    Publication::signed(key, signer, lockfile, files, manifests)
}

/// Up to date and already signed by this key: nothing to do at all.
fn report_up_to_date(lock: &Lockfile, printer: Printer) -> Result<(), CliError> {
    printer.result(format!(
        "up to date: generation {}, {} images",
        lock.generation,
        lock.images.len()
    ));
    printer.json(
        &json!({"ok": true, "up_to_date": true, "generation": lock.generation, "written": []}),
    );
    Ok(())
}

fn report_locked(
    generation: &Generation,
    publication: &Publication,
    signer: &str,
    commit: Option<String>,
    printer: Printer,
) {
    let lock = &generation.lock;
    let verb = if generation.new {
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
    let written = publication.written();
    printer.json(&json!({
        "ok": true,
        "up_to_date": false,
        "generation": lock.generation,
        "images": lock.images.len(),
        "written": written,
        "removed": publication.removals,
        "signer": signer,
        "commit": commit,
    }));
}

/// Does `signer`'s signature file hold a valid signature of `lock_bytes` by `key`? Checked
/// with the same verification code as everything else, trusting only this key.
fn signed_by(
    files: &source::SourceFiles,
    signer: &str,
    lock_bytes: &[u8],
    key: &SigningKey,
    at: Timestamp,
) -> bool {
    let sig_name = source::signature_path(signer);
    let Some(sig) = files.files.get(&sig_name) else {
        return false;
    };
    let Ok(only_this_key) = own_key_trust(key, "signer") else {
        return false;
    };
    let file = SignatureFile {
        name: sig_name,
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
        let rendered = new.renders.iter().any(|r| r.output == *f);
        reasons.push(if rendered {
            format!("{f}: not what its render step renders, pinned to the current digests")
        } else {
            format!("{f}: images not pinned to their current digests")
        });
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

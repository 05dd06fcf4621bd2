//! `lockstep verify` and `lockstep render`: the shared verification path, then a report or
//! the verified YAML stream.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::hydrate::{self, FsInputs, GitInputs, NoInputs};
use crate::mirror::{MirrorTarget, objects_from_mirror};
use crate::promotion::{PromotionPolicy, VerifiedSource};
use crate::render::InputReader;
use crate::signing::AllowedSigners;
use crate::source::{SourceFiles, fs, git};
use crate::verify::{TrustPolicy, VerifiedDir, check_render_inputs, render_objects, verify_dir};

/// Validated settings shared by verify and render.
pub struct VerifySettings {
    pub dir: PathBuf,
    pub rev: Option<String>,
    pub allowed_signers: PathBuf,
    pub threshold: usize,
    pub at: jiff::Timestamp,
    /// `--environment`: the environment the lockfile must be for.
    pub environment: Option<String>,
    /// `--strict`: refuse objects holding images lockstep does not pin.
    pub strict: bool,
    /// `--rerender`, with the renderers to run.
    pub rerender: Option<Rerender>,
    /// `--promoted-from`: the promotion the lockfile must record, and whose source must be
    /// found verified in history.
    pub promoted_from: Option<RequiredPromotion>,
    /// `--cosign-key`: the verifier's own provenance rule, enforced on the records whatever
    /// the directory's rules say.
    pub provenance: Option<crate::provenance::ProvenanceRule>,
}

/// `--promoted-from ENV [--from-allowed-signers F] [--from-threshold N]`.
#[derive(Clone, Debug)]
pub struct RequiredPromotion {
    pub from: String,
    /// Who may sign the source lockfile; the verifier's own allowed signers without it.
    pub allowed_signers: Option<PathBuf>,
    pub threshold: usize,
}

/// What `--rerender` needs: the renderers, and how to reach the registries of pinned charts.
#[derive(Clone, Debug)]
pub struct Rerender {
    pub tools: crate::hydrate::Tools,
    pub registry: crate::resolve::oci::OciSettings,
}

/// What was read: the files, and the commit they came from with `--rev`.
struct Read {
    files: SourceFiles,
    commit: Option<String>,
}

fn read(settings: &VerifySettings) -> Result<Read, CliError> {
    match &settings.rev {
        Some(rev) => {
            let (files, info) = git::read_at_rev(&settings.dir, rev).map_err(CliError::usage)?;
            Ok(Read {
                files,
                commit: Some(info.id),
            })
        }
        None => Ok(Read {
            files: fs::read_dir(&settings.dir).map_err(CliError::usage)?,
            commit: None,
        }),
    }
}

pub(crate) fn load_trust(
    path: &Path,
    dir: &Path,
    printer: Printer,
) -> Result<AllowedSigners, CliError> {
    // A trust file is a few lines; a huge one is a mistake or an attack on the verifier.
    const MAX_TRUST_BYTES: u64 = 1 << 20;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > MAX_TRUST_BYTES
    {
        return Err(CliError::usage(Message(format!(
            "the allowed signers file {} is {} bytes, over the limit of {MAX_TRUST_BYTES}",
            path.display(),
            meta.len()
        ))));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(Message(format!("cannot read the allowed signers file {}: {e}", path.display())))
            .hint("pass --allowed-signers FILE (Git's allowed_signers format), kept outside the repository you verify")
    })?;
    if let (Ok(file), Ok(dir)) = (path.canonicalize(), dir.canonicalize())
        && file.starts_with(&dir)
    {
        {
            printer.warn(format!(
                "the allowed signers file {} is inside the directory being verified: whoever can change that directory can change whom it trusts",
                path.display()
            ));
        }
    }
    let trust =
        AllowedSigners::parse(&text, &path.display().to_string()).map_err(CliError::usage)?;
    for notice in trust.notices() {
        printer.note(format!("note: {notice}"));
    }
    Ok(trust)
}

fn verified<'a>(
    settings: &VerifySettings,
    read: &'a Read,
    trust: &AllowedSigners,
    printer: Printer,
) -> Result<(VerifiedDir<'a>, Option<VerifiedSource>), CliError> {
    if settings.threshold == 0 {
        return Err(CliError::usage(Message(
            "--threshold must be at least 1".into(),
        )));
    }
    let policy = TrustPolicy {
        signers: trust,
        at: settings.at,
        threshold: settings.threshold,
        environment: settings.environment.as_deref(),
        strict: settings.strict,
    };
    let v = verify_dir(&read.files, &policy).map_err(CliError::check)?;
    if let Some(rule) = &settings.provenance {
        let policy = crate::provenance::Policy {
            rules: vec![rule.clone()],
        };
        crate::verify::check_recorded_signatures(&policy, v.lockfile()).map_err(|e| {
            CliError::check(e).hint("the lockfile records no signature by the verifier's --cosign-key for these: sign them with that key and lock again, with a [[provenance]] rule naming it")
        })?;
    }
    let source = match &settings.promoted_from {
        Some(required) => Some(confirm_promotion(settings, read, &v, required, printer)?),
        None => None,
    };
    let frame = if v.lockfile().renders.is_empty() {
        None
    } else {
        Some(hydrate::Frame::for_reading(&settings.dir).map_err(CliError::usage)?)
    };
    let inputs: Box<dyn InputReader + '_> = match (&settings.rev, &read.commit, &frame) {
        (Some(_), Some(commit), _) => Box::new(GitInputs {
            dir: &settings.dir,
            rev: commit,
        }),
        (_, _, Some(frame)) => Box::new(FsInputs { frame }),
        // No render records: nothing is read.
        (_, _, None) => Box::new(NoInputs),
    };
    check_render_inputs(&v, &*inputs).map_err(CliError::check)?;
    if let (Some(rerender), Some(frame)) = (&settings.rerender, &frame) {
        let charts = recorded_charts(&v, &rerender.registry)?;
        let tools = &rerender.tools;
        hydrate::rerender(&v, &read.files, &*inputs, frame.anchor(), tools, &charts)
            .map_err(|e| CliError::usage_or_check(e.is_environment(), e))?;
    }
    Ok((v, source))
}

/// `--promoted-from`: the lockfile records a promotion from that environment, and its source
/// lockfile is in this repository's history, byte for byte, and verified when it was promoted.
fn confirm_promotion(
    settings: &VerifySettings,
    read: &Read,
    v: &VerifiedDir<'_>,
    required: &RequiredPromotion,
    printer: Printer,
) -> Result<VerifiedSource, CliError> {
    let trust_file = required
        .allowed_signers
        .as_deref()
        .unwrap_or(&settings.allowed_signers);
    let trust = load_trust(trust_file, &settings.dir, printer)?;
    let policy = PromotionPolicy {
        from: &required.from,
        signers: &trust,
        threshold: required.threshold,
    };
    let start = read.commit.as_deref().unwrap_or("HEAD");
    crate::source::promotion::confirm(&settings.dir, start, v.lockfile(), &policy).map_err(|e| {
        let failed = Message(format!(
            "--promoted-from {}: {}",
            required.from,
            crate::error_chain::one_line(&e)
        ));
        CliError::usage_or_check(e.is_environment(), failed).hint(format!(
            "promote it (`lockstep promote <{} dir> {}`) from a committed, verified lockfile; --from-allowed-signers names who may sign that one",
            required.from,
            settings.dir.display()
        ))
    })
}

/// The charts the lockfile pins in OCI registries, fetched by digest for `--rerender` (the
/// one part of verify that asks the network, and only for such charts).
fn recorded_charts(
    v: &VerifiedDir<'_>,
    registry: &crate::resolve::oci::OciSettings,
) -> Result<std::collections::BTreeMap<String, hydrate::FetchedChart>, CliError> {
    let wanted: Vec<(String, String)> = v
        .lockfile()
        .renders
        .iter()
        .filter_map(|r| r.chart.clone().map(|c| (r.output.clone(), c)))
        .collect();
    if wanted.is_empty() {
        return Ok(Default::default());
    }
    let registry =
        crate::resolve::oci::OciRegistry::new(registry.clone()).map_err(CliError::usage)?;
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(hydrate::fetch_charts(&registry, wanted))
    })
    .map_err(|e| CliError::usage_or_check(e.is_environment(), e))
}

/// A lockfile that verified, with its exact bytes and the commit it was read from.
pub struct VerifiedLockfile {
    pub lockfile: crate::lockfile::Lockfile,
    pub bytes: Vec<u8>,
    pub commit: Option<String>,
}

/// Verify as `verify` does, and keep the lockfile (for `promote`).
pub fn verified_lockfile(
    settings: &VerifySettings,
    printer: Printer,
) -> Result<VerifiedLockfile, CliError> {
    let trust = load_trust(&settings.allowed_signers, &settings.dir, printer)?;
    let read = read(settings)?;
    let (v, _) = verified(settings, &read, &trust, printer)?;
    Ok(VerifiedLockfile {
        lockfile: v.lockfile().clone(),
        bytes: read.files.lockfile().unwrap_or_default().to_vec(),
        commit: read.commit.clone(),
    })
}

pub fn verify(settings: VerifySettings, printer: Printer) -> Result<(), CliError> {
    let trust = load_trust(&settings.allowed_signers, &settings.dir, printer)?;
    let read = read(&settings)?;
    let result = verified(&settings, &read, &trust, printer);
    let (v, source) = match result {
        Ok(v) => v,
        Err(e) => {
            printer
                .json(&json!({"ok": false, "commit": read.commit, "error": e.to_json()["error"]}));
            return Err(e);
        }
    };
    for notice in &v.scan().notices {
        printer.note(format!("note: {notice}"));
    }
    let lock = v.lockfile();
    let signers: Vec<String> = v
        .signers()
        .iter()
        .map(|s| format!("{} ({})", s.principals.join(","), s.fingerprint))
        .collect();
    let at = read
        .commit
        .as_deref()
        .map(|c| format!(" at {c}"))
        .unwrap_or_default();
    // A lockfile bound to an environment passes without --environment (binding is the
    // verifier's choice), but says which environment it is for.
    let mut bound = String::new();
    if let Some(e) = &lock.environment {
        bound.push_str(&format!("; environment {e}"));
    }
    if let Some(t) = lock.expires {
        bound.push_str(&format!("; expires {t}"));
    }
    if let Some(p) = &lock.promoted_from {
        bound.push_str(&format!(
            "; promoted from {} generation {} (lockfile {})",
            p.environment
                .as_deref()
                .unwrap_or("an environment-less lockfile"),
            p.generation,
            p.lockfile
        ));
        if let Some(s) = &source {
            bound.push_str(&format!(
                ", its source {} verified at commit {} signed by {}",
                crate::promotion::lockfile_path(&s.path),
                short_id(&s.commit),
                s.signers.join(",")
            ));
        }
        if !p.resolved.is_empty() {
            bound.push_str(&format!(
                "; {} image(s) resolved from the registry, not the source: {}",
                p.resolved.len(),
                p.resolved.join(", ")
            ));
        }
    }
    if !lock.renders.is_empty() {
        let how = if settings.rerender.is_some() {
            "re-rendered byte for byte from"
        } else {
            "bound to"
        };
        bound.push_str(&format!(
            "; {} rendered outputs {how} their unchanged inputs",
            lock.renders.len()
        ));
    }
    let signed = lock
        .images
        .iter()
        .filter(|e| !e.signatures.is_empty())
        .count();
    if signed > 0 {
        bound.push_str(&format!(
                        "; {signed} of {} images carry cosign signatures their provenance rule requires, re-checked offline",
            lock.images.len()
        ));
    }
    let attested = lock
        .images
        .iter()
        .filter(|e| !e.attestations.is_empty())
        .count();
    if attested > 0 {
        bound.push_str(&format!(
            "; {attested} record the attestations their rule requires"
        ));
    }
    let mirrored = lock.images.iter().filter(|e| !e.mirrors.is_empty()).count();
    if mirrored > 0 {
        bound.push_str(&format!(
            "; {mirrored} of {} images also in a mirror",
            lock.images.len()
        ));
    }
    printer.result(format!(
        "verified{at}: generation {}, {} images pinned in {} uses, {} manifest files bound; signed by {}{bound}",
        lock.generation,
        lock.images.len(),
        v.scan().uses.len(),
        lock.manifests.files,
        signers.join(", ")
    ));
    printer.json(&json!({
        "ok": true,
        "commit": read.commit,
        "generation": lock.generation,
        "created": lock.created.to_string(),
        "images": lock.images.iter().map(|e| json!({"reference": e.reference, "digest": e.digest.to_string(), "mirrors": e.mirrors, "signatures": e.signatures.iter().map(|r| json!({"manifest": r.manifest.to_string(), "key": r.key})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "uses": v.scan().uses.len(),
        "files": lock.manifests.files,
        "signers": signers,
        "environment": lock.environment,
        "expires": lock.expires.map(|t| t.to_string()),
        "promoted_from": lock.promoted_from.as_ref().map(|p| json!({"environment": p.environment, "generation": p.generation, "lockfile": p.lockfile.to_string(), "path": p.path, "commit": p.commit, "resolved": p.resolved, "source_verified": source.as_ref().map(|s| json!({"commit": s.commit, "signers": s.signers}))})),
        "renders": lock.renders.iter().map(|r| json!({"output": r.output, "renderer": r.renderer.name(), "version": r.version, "inputs": r.inputs.digest.to_string(), "rerendered": settings.rerender.is_some()})).collect::<Vec<_>>(),
    }));
    Ok(())
}

/// `render`: the verified manifests as one YAML stream; with `mirror`, every image pointed at
/// its recorded copy there.
pub fn render(
    settings: VerifySettings,
    mirror: Option<MirrorTarget>,
    printer: Printer,
) -> Result<(), CliError> {
    let trust = load_trust(&settings.allowed_signers, &settings.dir, printer)?;
    let read = read(&settings)?;
    let (v, _) = verified(&settings, &read, &trust, printer)?;
    let stream = match &mirror {
        None => v.render(),
        Some(target) => {
            let objects = objects_from_mirror(&v, target).map_err(CliError::check)?;
            render_objects(&objects)
        }
    };
    printer
        .raw(&stream)
        .map_err(|e| CliError::usage(Message(format!("cannot write to stdout: {e}"))))
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

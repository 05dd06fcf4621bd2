//! Parsed arguments → validated settings, one function per command: what clap cannot check
//! (keys, trust files, times, signer names) is checked here, before a command starts.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use zeroize::Zeroizing;

use super::Env;
use super::args::{
    CheckArgs, ControllerArgs, KeyArgs, LockArgs, LogFormat, MirrorArgs, PromoteArgs, RegistryArgs,
    SignArgs, TrustArgs, VerifyArgs, WaitArgs,
};
use super::commands;
use super::error::{CliError, Message};
use super::printer::Printer;
use crate::resolve::oci::OciSettings;
use crate::signing::SigningKey;

pub(super) fn lock(
    a: LockArgs,
    env: &Env,
    printer: Printer,
) -> Result<commands::lock::LockSettings, CliError> {
    let key = if a.check {
        None
    } else {
        Some(load_key(&a.key, env)?)
    };
    let created = created_at(env)?;
    let options = crate::lock::LockOptions {
        lifetime: a.expires_in.map(lifetime).transpose()?,
        environment: a.environment.clone(),
        renders: Vec::new(),
        promoted_from: None,
        signatures: Default::default(),
        attestations: Default::default(),
    };
    let settings = commands::lock::LockSettings {
        tools: a.tools.tools(),
        commit_key: load_commit_key(&a.key, env)?,
        promotion: None,
        pin_sources: a.pin_sources,
        holds: holds(&a.hold, &a.release)?,
        options,
        trust: load_trust(&a.trust, &a.dir, printer)?,
        trust_at: env.now,
        new_history: a.new_history,
        strict: a.strict,
        key,
        signer: a.key.signer.clone(),
        check: a.check,
        commit: commit_message(a.commit, a.message, "lockstep: pin images"),
        registry: registry(&a.registry)?,
        concurrency: a.registry.concurrency.max(1),
        created,
        dir: a.dir,
    };
    check_signer(settings.signer.as_deref())?;
    Ok(settings)
}

/// `--hold REF@DIGEST` and `--release REF`: each REF a tagged image reference.
fn holds(hold: &[String], release: &[String]) -> Result<crate::lock::Holds, CliError> {
    let tagged = |flag: &str, text: &str| {
        let image = crate::model::ImageRef::parse(text)
            .map_err(|e| CliError::usage(Message(format!("{flag} {text}: {e}"))))?;
        if image.tag().is_none() {
            return Err(CliError::usage(Message(format!(
                "{flag} {text}: name the image with its tag (`name:tag`), as the manifests do"
            ))));
        }
        Ok(image)
    };
    let mut holds = crate::lock::Holds::default();
    for text in hold {
        let image = tagged("--hold", text)?;
        let Some(digest) = image.digest().cloned() else {
            return Err(CliError::usage(Message(format!(
                "--hold {text}: give the digest to hold it at (`name:tag@sha256:…`)"
            ))));
        };
        holds.hold.insert(image.without_digest(), digest);
    }
    for text in release {
        let image = tagged("--release", text)?.without_digest();
        if holds.hold.contains_key(&image) {
            return Err(CliError::usage(Message(format!(
                "{image} is both held and released"
            ))));
        }
        holds.release.insert(image);
    }
    Ok(holds)
}

/// `promote FROM TO`: the source's verify settings and the target's lock settings.
pub(super) fn promote(
    a: PromoteArgs,
    env: &Env,
    printer: Printer,
) -> Result<commands::promote::PromoteSettings, CliError> {
    let from = commands::verify::VerifySettings {
        dir: a.from,
        rev: a.from_rev,
        allowed_signers: a.from_allowed_signers,
        threshold: a.from_threshold,
        environment: a.from_environment,
        strict: false,
        at: env.now,
        promoted_from: None,
        provenance: None,
        rerender: None,
    };
    let resolve_missing = a.resolve_missing;
    let applied = match a.require_applied {
        None => None,
        Some(name) => {
            let (namespace, name) = match name.split_once('/') {
                Some((ns, n)) => (Some(ns.to_owned()), n.to_owned()),
                None => (None, name),
            };
            if name.is_empty() || namespace.as_deref() == Some("") {
                return Err(CliError::usage(Message(format!(
                    "--require-applied {name:?}: give NAME or NAMESPACE/NAME of a LockstepSync"
                ))));
            }
            Some(commands::promote::RequireApplied {
                namespace,
                name,
                soak: a.soak.unwrap_or_default(),
                kubeconfig: a.kubeconfig,
            })
        }
    };
    let mut to = lock(a.to, env, printer)?;
    if to.commit.as_deref() == Some("lockstep: pin images") {
        to.commit = Some(format!("lockstep: promote from {}", from.dir.display()));
    }
    Ok(commands::promote::PromoteSettings {
        from,
        to,
        resolve_missing,
        applied,
    })
}

pub(super) fn sign(
    a: SignArgs,
    env: &Env,
    default_message: &str,
    printer: Printer,
) -> Result<commands::sign::SignSettings, CliError> {
    check_signer(a.key.signer.as_deref())?;
    Ok(commands::sign::SignSettings {
        trust: load_trust(&a.trust, &a.dir, printer)?,
        trust_at: env.now,
        key: load_key(&a.key, env)?,
        commit_key: load_commit_key(&a.key, env)?,
        signer: a.key.signer.clone(),
        commit: commit_message(a.commit, a.message, default_message),
        dir: a.dir,
    })
}

pub(super) fn mirror(
    a: MirrorArgs,
    env: &Env,
    printer: Printer,
) -> Result<commands::mirror::MirrorSettings, CliError> {
    let message = format!("lockstep: mirror images to {}", a.to);
    Ok(commands::mirror::MirrorSettings {
        target: crate::mirror::MirrorTarget::parse(&a.to).map_err(CliError::usage)?,
        registry: registry(&a.registry)?,
        concurrency: a.registry.concurrency.max(1),
        created: created_at(env)?,
        sign: sign(a.sign, env, &message, printer)?,
    })
}

pub(super) fn check(a: CheckArgs) -> Result<commands::check::CheckSettings, CliError> {
    Ok(commands::check::CheckSettings {
        registry: registry(&a.registry)?,
        concurrency: a.registry.concurrency.max(1),
        dir: a.dir,
        rev: a.rev,
    })
}

pub(super) fn verify(
    a: VerifyArgs,
    env: &Env,
) -> Result<commands::verify::VerifySettings, CliError> {
    let at = match &a.at {
        Some(t) => t.parse::<Timestamp>().map_err(|e| {
            CliError::usage(Message(format!("--at {t:?} is not an RFC 3339 time: {e}")))
                .hint("e.g. --at 2026-01-31T12:00:00Z")
        })?,
        None => env.now,
    };
    let provenance = provenance_requirement(&a)?;
    Ok(commands::verify::VerifySettings {
        dir: a.dir,
        rev: a.rev,
        allowed_signers: a.signers.allowed_signers,
        threshold: a.signers.threshold,
        environment: a.signers.environment,
        strict: a.strict,
        at,
        provenance,
        promoted_from: a
            .promoted_from
            .map(|from| commands::verify::RequiredPromotion {
                from,
                allowed_signers: a.from_allowed_signers,
                threshold: a.from_threshold,
            }),
        rerender: match a.rerender {
            true => Some(commands::verify::Rerender {
                tools: a.tools.tools(),
                registry: registry(&a.registry)?,
            }),
            false => None,
        },
    })
}

/// `verify --cosign-key F… [--cosign-images P…]`: the verifier's own provenance rule.
fn provenance_requirement(
    a: &VerifyArgs,
) -> Result<Option<crate::provenance::ProvenanceRule>, CliError> {
    use crate::provenance::{CertificatePolicy, CosignKey, ImagePattern, ProvenanceRule};
    let read = |flag: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            CliError::usage(Message(format!(
                "cannot read {flag} {}: {e}",
                path.display()
            )))
        })
    };
    let mut keys = Vec::with_capacity(a.cosign_key.len());
    for path in &a.cosign_key {
        let bytes = read("--cosign-key", path)?;
        keys.push(
            CosignKey::from_pem(&path.display().to_string(), &bytes).map_err(CliError::usage)?,
        );
    }
    let certificate = match (&a.cosign_root, &a.cosign_identity, &a.cosign_issuer) {
        (roots, None, None) if roots.is_empty() => None,
        (roots, Some(identity), Some(issuer)) if !roots.is_empty() => {
            let mut der = Vec::new();
            for path in roots {
                let bytes = read("--cosign-root", path)?;
                der.extend(
                    crate::provenance::certificate::pem_chain(&bytes).map_err(|e| {
                        CliError::usage(Message(format!("--cosign-root {}: {e}", path.display())))
                    })?,
                );
            }
            Some(CertificatePolicy {
                roots: der,
                root_files: roots.iter().map(|p| p.display().to_string()).collect(),
                identity: identity.clone(),
                issuer: Some(issuer.clone()),
            })
        }
        _ => {
            return Err(CliError::usage(Message(
                "--cosign-root, --cosign-identity and --cosign-issuer go together".into(),
            )));
        }
    };
    if keys.is_empty() && certificate.is_none() {
        if !a.cosign_attestation.is_empty() || !a.cosign_images.is_empty() {
            return Err(CliError::usage(Message(
                "--cosign-images and --cosign-attestation need --cosign-key or --cosign-root"
                    .into(),
            )));
        }
        return Ok(None);
    }
    let images = if a.cosign_images.is_empty() {
        vec![ImagePattern::parse("**/**").expect("the any-image pattern parses")]
    } else {
        a.cosign_images
            .iter()
            .map(|p| {
                ImagePattern::parse(p)
                    .map_err(|e| CliError::usage(Message(format!("--cosign-images: {e}"))))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Some(ProvenanceRule {
        at: "the verifier's --cosign-key/--cosign-root".into(),
        images,
        key_files: a
            .cosign_key
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        keys,
        certificate,
        attestations: a.cosign_attestation.clone(),
    }))
}

/// `render --from-mirror`.
pub(super) fn from_mirror(
    text: Option<&str>,
) -> Result<Option<crate::mirror::MirrorTarget>, CliError> {
    text.map(crate::mirror::MirrorTarget::parse)
        .transpose()
        .map_err(CliError::usage)
}

pub(super) fn keygen(a: crate::cli::args::KeygenArgs) -> commands::keygen::KeygenSettings {
    let principal = a.principal.clone().unwrap_or_else(|| a.comment.clone());
    commands::keygen::KeygenSettings {
        output: a.output,
        comment: a.comment,
        principal,
    }
}

pub(super) fn controller(
    a: ControllerArgs,
    env: &Env,
) -> Result<commands::controller::ControllerSettings, CliError> {
    let webhook = a
        .webhook_address
        .map(|address| commands::controller::Webhook {
            address,
            secret_name: a.webhook_secret.clone().unwrap_or_default(),
            secret_key: a.webhook_secret_key.clone(),
            secret_namespace: a
                .webhook_secret_namespace
                .clone()
                .or_else(|| a.lease_namespace.clone()),
        });
    let leader_election = if a.leader_election {
        Some(commands::controller::LeaderElection {
            duration: a.lease_duration,
            lease_name: a.lease_name,
            lease_namespace: a.lease_namespace,
        })
    } else {
        None
    };
    Ok(commands::controller::ControllerSettings {
        webhook,
        registries: crate::cluster::reconcile::Registries {
            settings: registry(&a.registry)?,
            concurrency: a.registry.concurrency.max(1),
        },
        leader_election,
        namespace: a.namespace,
        metrics_address: a.metrics_address,
        cache_dir: a.cache_dir,
        kubeconfig: a.kubeconfig,
        instance: a.instance,
        json_logs: a.log_format == LogFormat::Json,
        clock: env.clock,
    })
}

pub(super) fn wait(a: WaitArgs) -> Result<commands::wait::WaitSettings, CliError> {
    let rev = crate::cluster::wait::WantedCommit::parse(&a.rev).map_err(CliError::usage)?;
    Ok(commands::wait::WaitSettings {
        name: a.name,
        namespace: a.namespace,
        rev,
        timeout: a.timeout,
        kubeconfig: a.kubeconfig,
    })
}

/// `--commit [--message M]`: the commit message, or none without `--commit`.
fn commit_message(commit: bool, message: Option<String>, default: &str) -> Option<String> {
    commit.then(|| message.unwrap_or_else(|| default.to_owned()))
}

/// The creation time of a new lockfile generation: `SOURCE_DATE_EPOCH`, else now.
pub(super) fn created_at(env: &Env) -> Result<Timestamp, CliError> {
    match &env.source_date_epoch {
        Some(s) => parse_epoch(s),
        None => Ok(env.now),
    }
}

/// `--expires-in`, as the lockfile's lifetime.
pub(super) fn lifetime(duration: Duration) -> Result<jiff::SignedDuration, CliError> {
    jiff::SignedDuration::try_from(duration).map_err(|e| {
        CliError::usage(Message(format!(
            "--expires-in {duration:?} is too long: {e}"
        )))
    })
}

fn check_signer(signer: Option<&str>) -> Result<(), CliError> {
    let Some(s) = signer else { return Ok(()) };
    let safe = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !safe || crate::source::signer_of(&crate::source::signature_path(s)) != Some(s) {
        return Err(CliError::usage(Message(format!(
            "--signer {s:?} cannot name a signature file (use letters, digits, '.', '_' and '-')"
        ))));
    }
    Ok(())
}

/// `--trust FILE`, read and checked exactly as `verify --allowed-signers` reads its file.
fn load_trust(
    a: &TrustArgs,
    dir: &Path,
    printer: Printer,
) -> Result<Option<crate::signing::AllowedSigners>, CliError> {
    a.file
        .as_deref()
        .map(|path| commands::verify::load_trust(path, dir, printer))
        .transpose()
}

fn parse_epoch(s: &str) -> Result<Timestamp, CliError> {
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|secs| Timestamp::from_second(secs).ok())
        .ok_or_else(|| {
            CliError::usage(Message(format!(
                "SOURCE_DATE_EPOCH={s:?} is not a number of seconds"
            )))
        })
}

pub(super) fn registry(a: &RegistryArgs) -> Result<OciSettings, CliError> {
    let extra_ca_pem = match &a.ca_file {
        Some(path) => Some(read_file(path, "--ca-file")?),
        None => None,
    };
    Ok(OciSettings {
        insecure_registries: a.insecure_registries.clone(),
        extra_ca_pem,
        timeout: a.timeout.max(Duration::from_secs(1)),
        ..OciSettings::default()
    })
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| {
        CliError::usage(Message(format!(
            "{what}: cannot read {}: {e}",
            path.display()
        )))
    })
}

/// The signing key from --key / LOCKSTEP_SIGNING_KEY_FILE, or the key text in
/// LOCKSTEP_SIGNING_KEY. The text is held in zeroizing buffers and never printed.
/// `--commit-key FILE`, if given.
fn load_commit_key(a: &KeyArgs, env: &Env) -> Result<Option<SigningKey>, CliError> {
    let Some(path) = &a.commit_key else {
        return Ok(None);
    };
    let passphrase = env.passphrase.as_ref().map(|p| p.as_str());
    let text = key_file_text(path, "--commit-key")?;
    SigningKey::from_openssh(&text, passphrase)
        .map(Some)
        .map_err(|e| CliError::usage(e).hint(format!("the key came from {}", path.display())))
}

fn key_file_text(path: &Path, flag: &str) -> Result<Zeroizing<String>, CliError> {
    let bytes = Zeroizing::new(read_file(path, flag)?);
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| {
            CliError::usage(Message(format!(
                "{flag} {}: not an OpenSSH private key",
                path.display()
            )))
        })
}

fn load_key(a: &KeyArgs, env: &Env) -> Result<SigningKey, CliError> {
    let passphrase = env.passphrase.as_ref().map(|p| p.as_str());
    let (text, source) = match (&a.key, &env.signing_key) {
        (Some(path), _) => (key_file_text(path, "--key")?, path.display().to_string()),
        (None, Some(text)) => (text.clone(), "LOCKSTEP_SIGNING_KEY".to_owned()),
        (None, None) => {
            return Err(CliError::usage(Message("no signing key".into()))
                .hint("pass --key FILE, or set LOCKSTEP_SIGNING_KEY_FILE or LOCKSTEP_SIGNING_KEY; make one with `lockstep keygen`"));
        }
    };
    SigningKey::from_openssh(&text, passphrase)
        .map_err(|e| CliError::usage(e).hint(format!("the key came from {source}")))
}

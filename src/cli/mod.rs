//! The command line: arguments → validated settings → a command → printed result and an
//! exit code. The binary hands in what it read from the outside world (the clock, the
//! environment), so everything here is testable.

pub mod args;
pub mod commands;
pub mod error;
pub mod printer;
pub mod progress;

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use zeroize::Zeroizing;

use args::{Cli, Command, KeyArgs, RegistryArgs, SignArgs, TrustArgs, VerifyArgs};
use error::{CliError, Message};
use printer::Printer;

use crate::resolve::oci::OciSettings;
use crate::signing::SigningKey;

/// What the binary read from its environment.
pub struct Env {
    /// The current time.
    pub now: Timestamp,
    /// `SOURCE_DATE_EPOCH`, when set: the lockfile's creation time, for reproducible builds.
    pub source_date_epoch: Option<String>,
    /// `LOCKSTEP_SIGNING_KEY`: the private key text itself (a CI secret).
    pub signing_key: Option<Zeroizing<String>>,
    /// `LOCKSTEP_SIGNING_KEY_PASSPHRASE`, for an encrypted key.
    pub passphrase: Option<Zeroizing<String>>,
    /// The clock, for long-running commands (`controller`) that need the time again later.
    pub clock: fn() -> Timestamp,
}

/// Run a parsed command line; returns the process exit code.
pub async fn run(cli: Cli, env: Env) -> u8 {
    let printer = Printer {
        json: cli.json,
        quiet: cli.quiet,
    };
    match dispatch(cli.command, env, printer).await {
        Ok(()) => 0,
        Err(e) => {
            if printer.json {
                // verify prints its own JSON result including the error.
                if !e.json_printed {
                    printer.json(&e.error.to_json());
                }
            }
            eprint!("{}", e.error.render());
            e.error.class.exit_code()
        }
    }
}

struct Failure {
    error: CliError,
    json_printed: bool,
}

impl From<CliError> for Failure {
    fn from(error: CliError) -> Self {
        Failure {
            error,
            json_printed: false,
        }
    }
}

async fn dispatch(command: Command, env: Env, printer: Printer) -> Result<(), Failure> {
    match command {
        Command::Lock(a) => {
            let key = if a.check {
                None
            } else {
                Some(load_key(&a.key, &env)?)
            };
            let created = created_at(&env)?;
            let options = crate::lock::LockOptions {
                lifetime: a.expires_in.as_deref().map(lifetime).transpose()?,
                environment: a.environment.clone(),
            };
            let trust = load_trust(&a.trust, &a.dir, printer)?;
            let settings = commands::lock::LockSettings {
                options,
                trust,
                trust_at: env.now,
                new_history: a.new_history,
                strict: a.strict,
                key,
                signer: a.key.signer.clone(),
                check: a.check,
                commit: a.commit.then(|| {
                    a.message
                        .clone()
                        .unwrap_or_else(|| "lockstep: pin images".to_owned())
                }),
                registry: registry_settings(&a.registry)?,
                concurrency: a.registry.concurrency.max(1),
                created,
                dir: a.dir,
            };
            check_signer(settings.signer.as_deref())?;
            Ok(commands::lock::run(settings, printer).await?)
        }
        Command::Sign(a) => Ok(commands::sign::sign(
            sign_settings(a, &env, "lockstep: sign the lockfile", printer)?,
            printer,
        )?),
        Command::Refresh(a) => {
            let lifetime = lifetime(&a.expires_in)?;
            let created = created_at(&env)?;
            let settings = sign_settings(a.sign, &env, "lockstep: refresh the lockfile", printer)?;
            Ok(commands::sign::refresh(
                settings, created, lifetime, printer,
            )?)
        }
        Command::Mirror(a) => {
            let created = created_at(&env)?;
            let settings = commands::mirror::MirrorSettings {
                target: crate::mirror::MirrorTarget::parse(&a.to).map_err(CliError::usage)?,
                registry: registry_settings(&a.registry)?,
                concurrency: a.registry.concurrency.max(1),
                created,
                sign: sign_settings(
                    a.sign,
                    &env,
                    &format!("lockstep: mirror images to {}", a.to),
                    printer,
                )?,
            };
            commands::mirror::run(settings, printer)
                .await
                .map_err(|error| Failure {
                    json_printed: true,
                    error,
                })
        }
        Command::Verify(a) => {
            let settings = verify_settings(a, &env)?;
            commands::verify::verify(settings, printer).map_err(|error| Failure {
                error,
                json_printed: true,
            })
        }
        Command::Render(a) => {
            let mirror = a
                .from_mirror
                .as_deref()
                .map(crate::mirror::MirrorTarget::parse)
                .transpose()
                .map_err(CliError::usage)?;
            Ok(commands::verify::render(
                verify_settings(a.verify, &env)?,
                mirror,
                printer,
            )?)
        }
        Command::Check(a) => {
            let settings = commands::check::CheckSettings {
                registry: registry_settings(&a.registry)?,
                concurrency: a.registry.concurrency.max(1),
                dir: a.dir,
                rev: a.rev,
            };
            commands::check::run(settings, printer)
                .await
                .map_err(|error| Failure {
                    json_printed: true,
                    error,
                })
        }
        Command::Audit(a) => commands::audit::run(a, printer).map_err(|error| Failure {
            json_printed: error.class == error::Class::Check,
            error,
        }),
        Command::Keygen(a) => {
            let principal = a.principal.clone().unwrap_or_else(|| a.comment.clone());
            let settings = commands::keygen::KeygenSettings {
                output: a.output,
                comment: a.comment,
                principal,
            };
            Ok(commands::keygen::run(settings, printer)?)
        }
        Command::Controller(a) => {
            let leader_election = if a.leader_election {
                let duration: Duration = a
                    .lease_duration
                    .parse::<kube::core::Duration>()
                    .map_err(|e| {
                        CliError::usage(Message(format!(
                            "--lease-duration {:?} is not a duration: {e}",
                            a.lease_duration
                        )))
                    })?
                    .into();
                if duration < Duration::from_secs(1) {
                    return Err(CliError::usage(Message(
                        "--lease-duration must be at least 1s".into(),
                    ))
                    .into());
                }
                Some(commands::controller::LeaderElection {
                    lease_name: a.lease_name,
                    lease_namespace: a.lease_namespace,
                    duration,
                })
            } else {
                None
            };
            let settings = commands::controller::ControllerSettings {
                registries: crate::cluster::reconcile::Registries {
                    settings: registry_settings(&a.registry)?,
                    concurrency: a.registry.concurrency.max(1),
                },
                leader_election,
                namespace: a.namespace,
                metrics_address: a.metrics_address,
                cache_dir: a.cache_dir,
                kubeconfig: a.kubeconfig,
                instance: a.instance,
                json_logs: a.log_format == args::LogFormat::Json,
                clock: env.clock,
            };
            Ok(commands::controller::run(settings).await?)
        }
        Command::Wait(a) => {
            let rev = crate::cluster::wait::WantedCommit::parse(&a.rev).map_err(CliError::usage)?;
            let timeout = a
                .timeout
                .parse::<kube::core::Duration>()
                .map_err(|e| {
                    CliError::usage(Message(format!(
                        "--timeout {:?} is not a duration: {e}",
                        a.timeout
                    )))
                    .hint("e.g. --timeout 90s or --timeout 5m")
                })?
                .into();
            let settings = commands::wait::WaitSettings {
                name: a.name,
                namespace: a.namespace,
                rev,
                timeout,
                kubeconfig: a.kubeconfig,
            };
            commands::wait::run(settings, printer)
                .await
                .map_err(|error| Failure {
                    json_printed: error.class == error::Class::Check,
                    error,
                })
        }
    }
}

/// The creation time of a new lockfile generation: `SOURCE_DATE_EPOCH`, else now.
fn created_at(env: &Env) -> Result<Timestamp, CliError> {
    match &env.source_date_epoch {
        Some(s) => parse_epoch(s),
        None => Ok(env.now),
    }
}

fn lifetime(text: &str) -> Result<jiff::SignedDuration, CliError> {
    crate::lock::parse_lifetime(text)
        .map_err(|e| CliError::usage(Message(format!("--expires-in {e}"))))
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

fn sign_settings(
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
        signer: a.key.signer.clone(),
        commit: a.commit.then(|| {
            a.message
                .clone()
                .unwrap_or_else(|| default_message.to_owned())
        }),
        dir: a.dir,
    })
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

fn verify_settings(a: VerifyArgs, env: &Env) -> Result<commands::verify::VerifySettings, CliError> {
    let at = match &a.at {
        Some(t) => t.parse::<Timestamp>().map_err(|e| {
            CliError::usage(Message(format!("--at {t:?} is not an RFC 3339 time: {e}")))
                .hint("e.g. --at 2026-01-31T12:00:00Z")
        })?,
        None => env.now,
    };
    Ok(commands::verify::VerifySettings {
        dir: a.dir,
        rev: a.rev,
        allowed_signers: a.allowed_signers,
        threshold: a.threshold,
        environment: a.environment,
        strict: a.strict,
        at,
    })
}

fn registry_settings(a: &RegistryArgs) -> Result<OciSettings, CliError> {
    let extra_ca_pem = match &a.ca_file {
        Some(path) => Some(read_file(path, "--ca-file")?),
        None => None,
    };
    Ok(OciSettings {
        insecure_registries: a.insecure_registries.clone(),
        extra_ca_pem,
        timeout: Duration::from_secs(a.timeout.max(1)),
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
fn load_key(a: &KeyArgs, env: &Env) -> Result<SigningKey, CliError> {
    let passphrase = env.passphrase.as_ref().map(|p| p.as_str());
    let (text, source) = match (&a.key, &env.signing_key) {
        (Some(path), _) => {
            let bytes = Zeroizing::new(read_file(path, "--key")?);
            let text = Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| {
                CliError::usage(Message(format!(
                    "--key {}: not an OpenSSH private key",
                    path.display()
                )))
            })?);
            (text, path.display().to_string())
        }
        (None, Some(text)) => (text.clone(), "LOCKSTEP_SIGNING_KEY".to_owned()),
        (None, None) => {
            return Err(CliError::usage(Message("no signing key".into()))
                .hint("pass --key FILE, or set LOCKSTEP_SIGNING_KEY_FILE or LOCKSTEP_SIGNING_KEY; make one with `lockstep keygen`"));
        }
    };
    SigningKey::from_openssh(&text, passphrase)
        .map_err(|e| CliError::usage(e).hint(format!("the key came from {source}")))
}

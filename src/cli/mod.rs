//! The command line: arguments → validated settings → a command → printed result and an
//! exit code. The binary hands in what it read from the outside world (the clock, the
//! environment), so everything here is testable.

pub mod args;
pub mod commands;
pub mod duration;
pub mod error;
pub mod printer;
pub mod progress;
mod settings;

use jiff::Timestamp;
use zeroize::Zeroizing;

use args::{Cli, Command};
use error::CliError;
use printer::Printer;

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

impl Failure {
    /// The command printed its own JSON result, error included.
    fn json_printed(error: CliError) -> Self {
        Failure {
            error,
            json_printed: true,
        }
    }

    /// The command printed its JSON result for a failed check, not for a usage error.
    fn json_printed_if_check(error: CliError) -> Self {
        Failure {
            json_printed: error.class == error::Class::Check,
            error,
        }
    }
}

impl From<CliError> for Failure {
    fn from(error: CliError) -> Self {
        Failure {
            error,
            json_printed: false,
        }
    }
}

/// Each command: its arguments become settings (usage errors, exit 2), then it runs.
async fn dispatch(command: Command, env: Env, printer: Printer) -> Result<(), Failure> {
    match command {
        Command::Lock(a) => {
            let settings = settings::lock(a, &env, printer)?;
            Ok(commands::lock::run(settings, printer).await?)
        }
        Command::Promote(a) => {
            let settings = settings::promote(a, &env, printer)?;
            Ok(commands::promote::run(settings, printer).await?)
        }
        Command::Sign(a) => {
            let settings = settings::sign(a, &env, "lockstep: sign the lockfile", printer)?;
            Ok(commands::sign::sign(settings, printer)?)
        }
        Command::Refresh(a) => {
            let lifetime = settings::lifetime(a.expires_in)?;
            let created = settings::created_at(&env)?;
            let message = "lockstep: refresh the lockfile";
            let settings = settings::sign(a.sign, &env, message, printer)?;
            Ok(commands::sign::refresh(
                settings, created, lifetime, printer,
            )?)
        }
        Command::Mirror(a) => {
            let settings = settings::mirror(a, &env, printer)?;
            commands::mirror::run(settings, printer)
                .await
                .map_err(Failure::json_printed)
        }
        Command::Verify(a) => {
            let settings = settings::verify(a, &env)?;
            commands::verify::verify(settings, printer).map_err(Failure::json_printed)
        }
        Command::Render(a) => {
            let mirror = settings::from_mirror(a.from_mirror.as_deref())?;
            let settings = settings::verify(a.verify, &env)?;
            Ok(commands::verify::render(settings, mirror, printer)?)
        }
        Command::Check(a) => {
            let settings = settings::check(a)?;
            commands::check::run(settings, printer)
                .await
                .map_err(Failure::json_printed)
        }
        Command::Audit(a) => {
            commands::audit::run(a, printer).map_err(Failure::json_printed_if_check)
        }
        Command::Inspect(a) => {
            let settings = commands::inspect::InspectSettings {
                now: env.now,
                registry: settings::registry(&a.registry)?,
                reference: a.reference,
                dir: a.dir,
                cosign_keys: a.cosign_key,
            };
            commands::inspect::run(settings, printer)
                .await
                .map_err(Failure::json_printed_if_check)
        }
        Command::Keygen(a) => Ok(commands::keygen::run(settings::keygen(a), printer)?),
        Command::Controller(a) => {
            let settings = settings::controller(a, &env)?;
            Ok(commands::controller::run(settings).await?)
        }
        Command::Wait(a) => {
            let settings = settings::wait(a)?;
            commands::wait::run(settings, printer)
                .await
                .map_err(Failure::json_printed_if_check)
        }
    }
}

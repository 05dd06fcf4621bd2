//! The `lockstep` binary: read the clock and environment once, build the runtime, run.

use std::process::ExitCode;

use clap::Parser as _;
use zeroize::Zeroizing;

fn main() -> ExitCode {
    lockstep::resolve::install_crypto_provider();
    let cli = lockstep::cli::args::Cli::parse();
    let env = lockstep::cli::Env {
        now: jiff::Timestamp::now(),
        source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .filter(|s| !s.is_empty()),
        signing_key: std::env::var("LOCKSTEP_SIGNING_KEY")
            .ok()
            .filter(|s| !s.is_empty())
            .map(Zeroizing::new),
        passphrase: std::env::var("LOCKSTEP_SIGNING_KEY_PASSPHRASE")
            .ok()
            .map(Zeroizing::new),
        clock: jiff::Timestamp::now,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    ExitCode::from(runtime.block_on(lockstep::cli::run(cli, env)))
}

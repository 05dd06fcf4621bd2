//! `lockstep keygen`: an OpenSSH ed25519 key pair and the allowed_signers line for it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::signing::{NAMESPACE, SigningKey};

pub struct KeygenSettings {
    pub output: PathBuf,
    pub comment: String,
    pub principal: String,
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            CliError::usage(Message(format!("cannot create {}: {e}", path.display())))
                .hint("keygen never overwrites a key; choose another --output")
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| CliError::usage(Message(format!("cannot write {}: {e}", path.display()))))
}

pub fn run(settings: KeygenSettings, printer: Printer) -> Result<(), CliError> {
    if settings.principal.is_empty() || settings.principal.contains(char::is_whitespace) {
        return Err(CliError::usage(Message(format!(
            "principal {:?} must be one word",
            settings.principal
        ))));
    }
    let key = SigningKey::generate(&settings.comment).map_err(CliError::usage)?;
    let public = key.public_openssh();
    let pub_path = PathBuf::from(format!("{}.pub", settings.output.display()));
    if pub_path.exists() {
        return Err(CliError::usage(Message(format!(
            "{} already exists",
            pub_path.display()
        ))));
    }
    write_new(&settings.output, key.to_openssh().as_bytes(), 0o600)?;
    write_new(&pub_path, format!("{public}\n").as_bytes(), 0o644)?;
    let line = format!("{} namespaces=\"{NAMESPACE}\" {public}", settings.principal);
    printer.note(format!(
        "wrote {} and {}",
        settings.output.display(),
        pub_path.display()
    ));
    printer.note("add this line to the allowed_signers file of every verifier:");
    printer.result(&line);
    printer.json(&json!({
        "ok": true,
        "private_key": settings.output,
        "public_key": pub_path,
        "fingerprint": key.fingerprint(),
        "allowed_signers": line,
    }));
    Ok(())
}

//! How every signing command ends (`lock`, `sign`, `refresh`, `mirror`): this key's
//! signature over the lockfile's exact bytes, written beside the lockfile (and the
//! manifests) it signs; with a new lockfile, the signatures over the old bytes removed;
//! with `--commit`, exactly those files committed.

use std::path::Path;

use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::lockfile;
use crate::signing::{self, SigningKey};
use crate::source::{self, SourceFiles, fs, git};

/// The signature file name for `--signer`, or else from the key's comment.
pub(super) fn signer_name(signer: Option<&str>, key: &SigningKey) -> String {
    signer.map_or_else(
        || signing::signer_name(key.comment(), &key.fingerprint()),
        str::to_owned,
    )
}

/// The lockfile bytes a command signs.
pub(super) enum Signed<'a> {
    /// The lockfile on disk, as it is: only a signature is added.
    Existing(&'a [u8]),
    /// A new lockfile: written, and every other signature removed (it signs the old bytes).
    New(Vec<u8>),
}

/// What one command writes into the directory, and the signature files it removes.
pub(super) struct Publication {
    pub writes: Vec<(String, Vec<u8>)>,
    pub removals: Vec<String>,
}

impl Publication {
    /// `manifests` (rewritten manifest files), then the lockfile if new, then `signer`'s
    /// signature over the lockfile's bytes.
    pub fn signed(
        key: &SigningKey,
        signer: &str,
        lockfile: Signed<'_>,
        files: &SourceFiles,
        manifests: Vec<(String, Vec<u8>)>,
    ) -> Result<Publication, CliError> {
        let sig_name = source::signature_path(signer);
        let bytes = match &lockfile {
            Signed::Existing(bytes) => bytes,
            Signed::New(bytes) => bytes.as_slice(),
        };
        let signature = key.sign(bytes).map_err(CliError::usage)?;
        let mut writes = manifests;
        let mut removals = Vec::new();
        if let Signed::New(bytes) = lockfile {
            writes.push((lockfile::FILE_NAME.to_owned(), bytes));
            removals = files
                .signatures()
                .map(|(s, _)| source::signature_path(s))
                .filter(|n| *n != sig_name)
                .collect();
        }
        writes.push((sig_name, signature.into_bytes()));
        Ok(Publication { writes, removals })
    }

    /// The paths written, in order.
    pub fn written(&self) -> Vec<&str> {
        self.writes.iter().map(|(p, _)| p.as_str()).collect()
    }

    /// Write the files into `dir` and remove the stale signatures; with a commit message,
    /// commit exactly these changes on the current branch, with the `sources` that
    /// `lock --pin-sources` rewrote (already written), the commit SSH-signed with
    /// `commit_key` in namespace `git` (what `git verify-commit` checks). The new commit's id.
    pub fn write(
        &self,
        dir: &Path,
        files: &SourceFiles,
        commit: Option<&str>,
        sources: &[String],
        commit_key: &crate::signing::SigningKey,
        printer: Printer,
    ) -> Result<Option<String>, CliError> {
        if commit.is_some() {
            refuse_uncommitted_inputs(dir, files, &self.writes, &self.removals)?;
        }
        fs::write_files(dir, &self.writes, &self.removals).map_err(CliError::usage)?;
        printer.note(format!("wrote {}", self.written().join(", ")));
        if !self.removals.is_empty() {
            printer.note(format!(
                "removed stale signatures {}",
                self.removals.join(", ")
            ));
        }
        let Some(message) = commit else {
            return Ok(None);
        };
        let paths: Vec<String> = self.writes.iter().map(|(p, _)| p.clone()).collect();
        let committed = git::commit_with_sources(
            dir,
            &paths,
            &self.removals,
            sources,
            message,
            Some(commit_key),
        )
        .map_err(CliError::usage)?;
        match committed {
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
}

/// With `--commit`, refuse before writing anything when other bound inputs of the directory
/// differ from HEAD: the commit would hold lockstep's files but not the manifests they sign.
fn refuse_uncommitted_inputs(
    dir: &Path,
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

//! `promote FROM TO`: lock TO at the digests of FROM's verified lockfile.
//!
//! FROM is verified exactly as `verify` would (trust, threshold, expiry, environment, the
//! manifests binding, render inputs); then TO is locked by the ordinary `lock` pipeline with
//! the registry's answers replaced by FROM's recorded digests — no tag is resolved again —
//! and the signed lockfile records which lockfile (environment, generation, sha256, commit)
//! they came from.

use std::path::Path;

use super::lock::{LockSettings, PromotionSource};
use super::verify::{VerifySettings, verified_lockfile};
use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::cluster::crd::LockstepSync;
use crate::cluster::wait::{human, judge_soak};
use crate::source::git;

pub struct PromoteSettings {
    pub from: VerifySettings,
    pub to: LockSettings,
    pub resolve_missing: bool,
    /// `--require-applied`: the source environment's LockstepSync must run the source.
    pub applied: Option<RequireApplied>,
}

/// `--require-applied [NAMESPACE/]NAME [--soak D] [--kubeconfig F]`.
pub struct RequireApplied {
    pub namespace: Option<String>,
    pub name: String,
    /// Zero when no soak was asked for.
    pub soak: std::time::Duration,
    pub kubeconfig: Option<std::path::PathBuf>,
}

pub async fn run(mut settings: PromoteSettings, printer: Printer) -> Result<(), CliError> {
    let source = verified_lockfile(&settings.from, printer)
        .map_err(|e| e.hint("nothing was promoted; fix or re-lock the source first"))?;
    printer.note(format!(
        "{}: generation {}{} verified",
        settings.from.dir.display(),
        source.lockfile.generation,
        source
            .lockfile
            .environment
            .as_ref()
            .map_or_else(String::new, |e| format!(" for {e}")),
    ));
    if let Some(applied) = &settings.applied {
        require_applied(applied, &source.bytes, settings.from.at, printer).await?;
    }
    settings.to.promotion = Some(PromotionSource::of(
        settings.from.dir.display().to_string(),
        &source.lockfile,
        &source.bytes,
        origin(
            &settings.from.dir,
            &settings.to.dir,
            source.commit,
            &source.bytes,
            printer,
        ),
        settings.resolve_missing,
    ));
    super::lock::run(settings.to, printer).await
}

/// `--require-applied`: one look at the source environment's LockstepSync; refused (exit 1)
/// unless it runs exactly these lockfile bytes, healthy, for at least the soak.
async fn require_applied(
    applied: &RequireApplied,
    bytes: &[u8],
    now: jiff::Timestamp,
    printer: Printer,
) -> Result<(), CliError> {
    let client = super::controller::client(applied.kubeconfig.as_deref()).await?;
    let namespace = applied
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let what = format!("LockstepSync {namespace}/{}", applied.name);
    let api: kube::Api<LockstepSync> = kube::Api::namespaced(client, &namespace);
    let sync = api
        .get_opt(&applied.name)
        .await
        .map_err(|e| {
            CliError::usage(e).hint(format!(
                "cannot read {what}: is the source cluster reachable (--kubeconfig), and may this user get lockstepsyncs?"
            ))
        })?
        .ok_or_else(|| {
            CliError::usage(Message(format!("there is no {what}")))
                .hint("check --require-applied NAMESPACE/NAME and --kubeconfig")
        })?;
    let lockfile = crate::model::Digest::of(bytes).to_string();
    let soaked = judge_soak(
        sync.status.as_ref(),
        sync.metadata.generation,
        &lockfile,
        now,
        applied.soak,
    ).map_err(|why| {
        CliError::check(Message(format!(
            "--require-applied {what}: {why}; nothing was promoted"
        )))
        .hint("promote once the source environment runs this lockfile, healthy (see `lockstep wait`), for the soak")
    })?;
    printer.note(format!(
        "{what} runs this lockfile (generation {}, commit {}), healthy{}",
        soaked
            .generation
            .map_or_else(|| "?".to_owned(), |g| g.to_string()),
        &soaked.commit[..soaked.commit.len().min(12)],
        soaked
            .for_
            .map_or_else(String::new, |d| format!(" for {}", human(d)))
    ));
    Ok(())
}

/// Where verifiers will find the source lockfile: its directory in the target's repository,
/// and the commit holding these exact bytes (`--from-rev`'s, or HEAD's when the work tree's
/// lockfile is HEAD's). A source outside the target's repository, or not committed, is
/// promoted with a warning: `verify --promoted-from` cannot check it (or not until the same
/// bytes are committed).
fn origin(
    from: &Path,
    to: &Path,
    rev_commit: Option<String>,
    bytes: &[u8],
    printer: Printer,
) -> (Option<String>, Option<String>) {
    let tree = |dir: &Path| git::work_tree_of(dir).ok().flatten();
    let (Some(source), Some(target)) = (tree(from), tree(to)) else {
        printer.warn(format!(
            "{} or {} is not in a Git work tree: the promotion records no path, and `verify --promoted-from` cannot check its source",
            from.display(),
            to.display()
        ));
        return (None, rev_commit);
    };
    if source.root != target.root {
        printer.warn(format!(
            "{} is in another repository than {}: the promotion records no path, and `verify --promoted-from` cannot check its source",
            from.display(),
            to.display()
        ));
        return (None, rev_commit);
    }
    let commit = rev_commit.or_else(|| {
        let head = git::read_at_rev(from, "HEAD").ok();
        match head {
            Some((files, info)) if files.lockfile() == Some(bytes) => Some(info.id),
            _ => {
                printer.warn(format!(
                    "{}'s lockfile is not the one committed at HEAD: commit it, or `verify --promoted-from` will not find the promoted source in history",
                    from.display()
                ));
                None
            }
        }
    });
    (Some(source.prefix), commit)
}

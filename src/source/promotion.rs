//! A promotion's source lockfile, found in the repository's history and judged by the core
//! ([`crate::promotion`]): one path for `verify --promoted-from`, `audit` and the
//! reconciler's `spec.promotion`.

use std::path::Path;

use crate::lockfile::Lockfile;
use crate::promotion::{self, PromotionError, PromotionPolicy, VerifiedSource};
use crate::source::git::{self, GitError};

/// Why a promotion could not be confirmed: it does not hold (a check that failed), or the
/// repository could not be read (the environment).
#[derive(Debug, thiserror::Error)]
pub enum PromotionCheckError {
    #[error(transparent)]
    Failed(#[from] PromotionError),
    #[error("cannot search the Git history for the promotion's source lockfile")]
    Git(#[source] GitError),
}

impl PromotionCheckError {
    /// Whether this is about the environment (exit 2), not the promotion (exit 1).
    pub fn is_environment(&self) -> bool {
        matches!(self, PromotionCheckError::Git(_))
    }
}

/// Confirm that `lock` was promoted from `policy.from`: its record names a source lockfile
/// that is in the history of `repo` (the recorded commit, or a commit reachable from
/// `from_commit`) with exactly the recorded bytes, and that verified under `policy` when the
/// promotion was signed.
pub fn confirm(
    repo: &Path,
    from_commit: &str,
    lock: &Lockfile,
    policy: &PromotionPolicy<'_>,
) -> Result<VerifiedSource, PromotionCheckError> {
    let (record, path) = promotion::record(lock, policy.from)?;
    let found = git::find_lockfile(
        repo,
        from_commit,
        path,
        &record.lockfile,
        record.commit.as_deref(),
    )
    .map_err(PromotionCheckError::Git)?;
    let Some((files, info)) = found else {
        return Err(PromotionError::NotFound {
            path: path.to_owned(),
            lockfile: record.lockfile.clone(),
            commit: record.commit.clone(),
        }
        .into());
    };
    Ok(promotion::verify_source(lock, &files, &info.id, policy)?)
}

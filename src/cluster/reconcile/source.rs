//! The source stage: fetch the commit the spec names into the sync's cache repository and
//! read its files (Git is blocking: on the blocking pool).

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::Context;
use super::outcome::{FailedStep, Refusal};
use crate::cluster::crd::{LockstepSyncSpec, Revision};
use crate::cluster::plan::SyncId;
use crate::error_chain::one_line;
use crate::files::SourceFiles;
use crate::source::git::{self, FetchRef, GitCredentials};

/// A fetched commit and its files.
pub(super) struct Fetched {
    pub files: SourceFiles,
    pub commit: String,
    /// The cache repository the commit was read from (render inputs are read from it too).
    pub cache: std::path::PathBuf,
}

/// Fetch `revision` of `spec.url` and read `spec.path` at it. An unreachable remote is
/// transient; a missing branch or path needs a human.
pub(super) async fn fetch(
    ctx: &Context,
    id: &SyncId,
    spec: &LockstepSyncSpec,
    revision: Revision,
    credentials: Option<GitCredentials>,
) -> Result<Fetched, Refusal> {
    let cache = cache_path(ctx, id, &spec.url);
    let cache_dir = cache.clone();
    let url = spec.url.clone();
    let path = spec.path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let wanted = match &revision {
            Revision::Branch(b) => FetchRef::Branch(b),
            Revision::Tag(t) => FetchRef::Tag(t),
            Revision::Commit(c) => FetchRef::Commit(c),
        };
        let info = git::fetch(&cache, &url, wanted, credentials.as_ref())
            .map_err(|e| (FailedStep::Fetch, None, e))?;
        git::read_commit(&cache, &info.id, &path).map_err(|e| (FailedStep::Read, Some(info.id), e))
    })
    .await;
    match read {
        Ok(Ok((files, info))) => Ok(Fetched {
            files,
            commit: info.id,
            cache: cache_dir,
        }),
        Ok(Err((step, commit, error))) => {
            let reason = match step {
                FailedStep::Fetch => "FetchFailed",
                _ => "CommitUnreadable",
            };
            let mut refusal =
                Refusal::new(step, reason, one_line(&error)).transient(error.is_transient());
            refusal.commit = commit;
            Err(refusal)
        }
        Err(join) => {
            Err(Refusal::new(FailedStep::Fetch, "FetchFailed", join.to_string()).transient(true))
        }
    }
}

/// The cache repository of a sync and URL: separate per URL, so that a commit fetched from
/// one repository is never taken as present in another.
fn cache_path(ctx: &Context, id: &SyncId, url: &str) -> PathBuf {
    ctx.cache_dir.join(sync_dir(id)).join(url_dir(url))
}

/// The cache directory of a sync: `<namespace>_<name>` (neither may hold a `_`).
pub(super) fn sync_dir(id: &SyncId) -> String {
    format!("{}_{}", id.namespace, id.name)
}

/// The directory of one URL within a sync's.
pub(super) fn url_dir(url: &str) -> String {
    hex::encode(&Sha256::digest(url.as_bytes())[..8])
}

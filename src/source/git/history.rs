//! The history of the manifests directory: the commits that change its inputs, each with
//! the inputs it holds (`lockstep audit`).

use std::path::Path;

use gix::ObjectId;

use super::read::{commit_info, read_located, resolve_commit};
use super::{CommitInfo, GitError, Located, gix_error, locate};
use crate::source::SourceFiles;

/// One commit of [`read_history`]: what it says about itself, and the inputs it holds.
#[derive(Debug)]
pub struct HistoryCommit {
    /// Its id and summary.
    pub info: CommitInfo,
    /// The committer time, in seconds since the Unix epoch.
    pub committer_seconds: i64,
    /// The manifests directory's inputs at the commit (empty when the directory is gone),
    /// or why they cannot be read (a symlink, a submodule, a size limit).
    pub files: Result<SourceFiles, GitError>,
}

/// The commits from HEAD back to `since` (exclusive; the whole history without it) that
/// change an input file of the manifests directory `dir` compared with their first parent,
/// oldest first, each with the directory's inputs read from the object database. Follows
/// first parents only unless `all_parents`. A root commit counts as changing its inputs
/// when it has any.
pub fn read_history(
    dir: &Path,
    since: Option<&str>,
    all_parents: bool,
) -> Result<Vec<HistoryCommit>, GitError> {
    let located = locate(dir)?;
    let repo = &located.repo;
    let head = repo
        .rev_parse_single("HEAD")
        .map_err(|source| GitError::UnknownRev {
            rev: "HEAD".to_owned(),
            source,
        })?
        .detach();
    let mut walk = repo.rev_walk([head]);
    if !all_parents {
        walk = walk.first_parent_only();
    }
    if let Some(rev) = since {
        let commit = resolve_commit(repo, rev)?;
        walk = walk.with_hidden([commit.id]);
    }
    let walk = walk
        .sorting(gix::revision::walk::Sorting::ByCommitTime(
            Default::default(),
        ))
        .all()
        .map_err(gix_error("cannot walk the history from HEAD"))?;
    let mut touched = Vec::new();
    for info in walk {
        let info = info.map_err(gix_error("cannot walk the history from HEAD"))?;
        let commit = info
            .object()
            .map_err(gix_error(format!("cannot read commit {}", info.id)))?;
        let parent = info.parent_ids().next().map(|id| id.detach());
        let mine = inputs_fingerprint(&located, Some(commit.id))?;
        let theirs = inputs_fingerprint(&located, parent)?;
        if mine != theirs {
            let seconds = commit
                .time()
                .map_err(gix_error(format!(
                    "cannot read the time of commit {}",
                    info.id
                )))?
                .seconds;
            touched.push((commit.id, seconds, mine.is_some()));
        }
    }
    touched.reverse();
    let mut out = Vec::with_capacity(touched.len());
    for (id, committer_seconds, present) in touched {
        let commit = repo
            .find_commit(id)
            .map_err(gix_error(format!("cannot read commit {id}")))?;
        let info = commit_info(&commit)?;
        let files = if present {
            read_located(&located, &id.to_string()).map(|(files, _)| files)
        } else {
            Ok(SourceFiles::default())
        };
        out.push(HistoryCommit {
            info,
            committer_seconds,
            files,
        });
    }
    Ok(out)
}

/// What the manifests directory holds at `commit`, without walking it: the id of its tree,
/// or `None` when there is no commit or no such directory in it. Every entry of the directory
/// but `.git` is an input now, so two commits hold the same inputs exactly when they hold the
/// same tree (a tree differing only in a `.git` entry, which Git refuses to write, counts as a
/// change: a commit listed once too often, never one missed). No walk means no limit that a
/// crafted commit could hit here and break the whole history; [`read_located`] meets it
/// instead and reports it for that commit alone.
fn inputs_fingerprint(
    located: &Located,
    commit: Option<ObjectId>,
) -> Result<Option<ObjectId>, GitError> {
    let Some(commit) = commit else {
        return Ok(None);
    };
    let (commit, tree) = tree_of(&located.repo, commit)?;
    if located.prefix.is_empty() {
        return Ok(Some(tree.id));
    }
    match tree
        .lookup_entry_by_path(&located.prefix)
        .map_err(gix_error(format!(
            "cannot look up {} in commit {}",
            located.prefix, commit.id
        )))? {
        Some(entry) if entry.mode().is_tree() => Ok(Some(entry.object_id())),
        _ => Ok(None),
    }
}

/// A commit and its tree.
fn tree_of(
    repo: &gix::Repository,
    id: ObjectId,
) -> Result<(gix::Commit<'_>, gix::Tree<'_>), GitError> {
    let commit = repo
        .find_commit(id)
        .map_err(gix_error(format!("cannot read commit {id}")))?;
    let tree = commit.tree().map_err(gix_error(format!(
        "cannot read the tree of commit {}",
        commit.id
    )))?;
    Ok((commit, tree))
}

/// The most commits [`find_lockfile`] walks back through, looking for a lockfile.
pub const MAX_SEARCHED_COMMITS: usize = 100_000;

/// Find the commit that holds `dir/lockstep.lock` with the sha256 `lockfile` (`dir` from the
/// repository's root, '/'-separated), among the commits reachable from `from` over every
/// parent (at most [`MAX_SEARCHED_COMMITS`]): the recorded `commit` when there is one — it
/// must be one of them, so an unmerged branch or a dangling object does not count — else
/// the newest such commit. Returns that directory's files there, or `None`.
/// `repo` is any directory of a work tree, or a bare repository (the reconciler's cache).
/// Each lockfile blob is hashed once, however many commits hold it.
pub fn find_lockfile(
    repo: &Path,
    from: &str,
    dir: &str,
    lockfile: &crate::model::Digest,
    commit: Option<&str>,
) -> Result<Option<(SourceFiles, CommitInfo)>, GitError> {
    let repo = gix::discover(repo).map_err(|source| GitError::Discover {
        dir: repo.to_owned(),
        source,
    })?;
    let path = crate::promotion::lockfile_path(dir);
    let located = Located {
        repo,
        prefix: dir.to_owned(),
    };
    let repo = &located.repo;
    let holds = |id: ObjectId, hashed: &mut std::collections::HashSet<ObjectId>| {
        lockfile_blob_matches(repo, id, &path, lockfile, hashed)
    };
    let mut hashed = std::collections::HashSet::new();
    let wanted = commit.map(super::read::parse_commit_id).transpose()?;
    let start = resolve_commit(repo, from)?.id;
    let walk = repo
        .rev_walk([start])
        .sorting(gix::revision::walk::Sorting::ByCommitTime(
            Default::default(),
        ))
        .all()
        .map_err(gix_error(format!("cannot walk the history from {from}")))?;
    let mut found = None;
    for info in walk.take(MAX_SEARCHED_COMMITS) {
        let info = info.map_err(gix_error(format!("cannot walk the history from {from}")))?;
        match wanted {
            // The recorded commit must be in the history of `from`, holding the bytes.
            Some(wanted) if info.id == wanted => {
                if holds(info.id, &mut hashed)? {
                    found = Some(info.id);
                }
                break;
            }
            Some(_) => {}
            None if holds(info.id, &mut hashed)? => {
                found = Some(info.id);
                break;
            }
            None => {}
        }
    }
    found
        .map(|id| read_located(&located, &id.to_string()))
        .transpose()
}

/// Whether `commit` holds `path` as a blob whose sha256 is `want`; `hashed` holds the blobs
/// already found not to be it.
fn lockfile_blob_matches(
    repo: &gix::Repository,
    commit: ObjectId,
    path: &str,
    want: &crate::model::Digest,
    hashed: &mut std::collections::HashSet<ObjectId>,
) -> Result<bool, GitError> {
    let (commit, tree) = tree_of(repo, commit)?;
    let Some(entry) = tree.lookup_entry_by_path(path).map_err(gix_error(format!(
        "cannot look up {path} in commit {}",
        commit.id
    )))?
    else {
        return Ok(false);
    };
    let blob = entry.object_id();
    if !entry.mode().is_blob() || !hashed.insert(blob) {
        return Ok(false);
    }
    let header = repo.find_header(blob).map_err(gix_error(format!(
        "cannot read {path} in commit {}",
        commit.id
    )))?;
    if header.size() > crate::lockfile::MAX_BYTES as u64 {
        return Ok(false);
    }
    let object = repo.find_object(blob).map_err(gix_error(format!(
        "cannot read {path} in commit {}",
        commit.id
    )))?;
    Ok(&crate::model::Digest::of(&object.data) == want)
}

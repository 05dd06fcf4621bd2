//! Committing lockstep's files: blobs from the work tree, a tree edited from HEAD's, a
//! commit on the current branch, and the index entries of those paths brought up to date.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use gix::bstr::{BStr, ByteSlice};
use gix::objs::tree::EntryKind;
use gix::{ObjectId, Repository};

use super::read::commit_info;
use super::{CommitInfo, CommitOutcome, GitError, Located, gix_error, io_error, locate};
use crate::source::{FileRole, MAX_FILE_BYTES, check_size, role_of};

/// A file about to be committed, with what the index needs afterwards.
struct Staged {
    repo_path: String,
    id: ObjectId,
    kind: EntryKind,
    stat: gix::index::entry::Stat,
}

/// Commit, on the current branch, the work-tree contents of `paths` and the deletion of
/// `removed` (both relative to the manifests directory `dir`) on top of HEAD's tree: other
/// changes in the work tree or the index stay out of the commit. Author and committer come
/// from Git config or `GIT_AUTHOR_*`/`GIT_COMMITTER_*` (dates from `GIT_*_DATE`, else the
/// clock, as with `git commit`). Refuses a detached HEAD, a conflicted index and a merge (or
/// rebase, ...) in progress; works on an unborn branch. Afterwards the index entries of those
/// paths match the commit, so `git status` shows them clean. When HEAD already holds the
/// same tree, no commit is made.
pub fn commit(
    dir: &Path,
    paths: &[String],
    removed: &[String],
    message: &str,
) -> Result<CommitOutcome, GitError> {
    commit_with_sources(dir, paths, removed, &[], message, None)
}

/// [`commit`], and with it the work-tree contents of `sources`: files already tracked by
/// Git that `lock --pin-sources` rewrote, relative to `dir` and possibly outside it
/// (`../../overlays/prod/kustomization.yaml`).
pub fn commit_with_sources(
    dir: &Path,
    paths: &[String],
    removed: &[String],
    sources: &[String],
    message: &str,
    signer: Option<&crate::signing::SigningKey>,
) -> Result<CommitOutcome, GitError> {
    check_request(paths, removed, message)?;
    let located = locate(dir)?;
    let repo = &located.repo;
    let Some(workdir) = repo.workdir().map(Path::to_owned) else {
        return Err(GitError::Bare {
            git_dir: repo.git_dir().to_owned(),
        });
    };
    let (lock, mut index) = lock_index(repo)?;
    let parent = head_parent(repo)?;
    let base_tree = parent.map_or_else(
        || ObjectId::empty_tree(repo.object_hash()),
        |(_, tree)| tree,
    );
    let author = identity(repo.author(), "author")?;
    let committer = identity(repo.committer(), "committer")?;

    let mut repo_paths: Vec<String> = paths.iter().map(|rel| located.repo_path(rel)).collect();
    for source in sources {
        let tracked = located
            .repo_path_climbing(source)
            .filter(|p| index.entry_by_path(p.as_bytes().as_bstr()).is_some());
        let Some(repo_path) = tracked else {
            return Err(GitError::InvalidPath {
                path: source.clone(),
                reason: "not a file Git tracks in this work tree",
            });
        };
        repo_paths.push(repo_path);
    }
    let staged = stage_files(&located, &workdir, &repo_paths, &index)?;
    let removed_paths: Vec<String> = removed.iter().map(|rel| located.repo_path(rel)).collect();
    let tree = write_tree(repo, base_tree, &staged, &removed_paths)?;
    let outcome = if tree == base_tree {
        CommitOutcome::Unchanged
    } else {
        let parent = parent.map(|(id, _)| id);
        let info = write_commit(repo, [committer, author], message, tree, parent, signer)?;
        CommitOutcome::Committed(info)
    };

    // commit_as leaves the index alone; without this `git status` would show the committed
    // files as changed (or, for removals, as staged for re-adding).
    update_index(&mut index, &staged, &removed_paths);
    write_index(repo, index, lock, &outcome)?;
    Ok(outcome)
}

/// Only lockstep's paths, each named once, and a message.
fn check_request(paths: &[String], removed: &[String], message: &str) -> Result<(), GitError> {
    for path in paths.iter().chain(removed) {
        if !role_of(path).is_some_and(FileRole::is_written_by_lockstep) {
            return Err(GitError::InvalidPath {
                path: path.clone(),
                reason: "not a path lockstep writes (a manifest, lockstep.toml, the lockfile or a signature) relative to the manifests directory",
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(path) = paths
        .iter()
        .chain(removed)
        .find(|path| !seen.insert(path.as_str()))
    {
        return Err(GitError::InvalidPath {
            path: path.clone(),
            reason: "named twice (to commit or to remove)",
        });
    }
    if message.trim().is_empty() {
        return Err(GitError::EmptyMessage);
    }
    Ok(())
}

/// Take `index.lock` and read the index, refusing what lockstep cannot commit on top of.
/// The lock is held for the whole operation, as `git commit` does, so that no other git
/// process changes the index or commits between our reading and our writing it.
fn lock_index(repo: &Repository) -> Result<(gix::lock::File, gix::index::File), GitError> {
    let index_path = repo.index_path();
    let lock = gix::lock::File::acquire_to_update_resource(
        &index_path,
        gix::lock::acquire::Fail::Immediately,
        None,
        0,
    )
    .map_err(|source| GitError::IndexLocked {
        path: index_path.with_extension("lock"),
        source,
    })?;
    let index = if index_path.exists() {
        repo.open_index().map_err(gix_error(format!(
            "cannot read the index {}",
            index_path.display()
        )))?
    } else {
        gix::index::File::from_state(
            gix::index::State::new(repo.object_hash()),
            index_path.clone(),
        )
    };
    refuse_unsupported_index(&index)?;
    refuse_operation_in_progress(repo)?;
    Ok((lock, index))
}

/// The commit HEAD's branch points at and its tree; `None` on an unborn branch. A detached
/// HEAD is refused.
fn head_parent(repo: &Repository) -> Result<Option<(ObjectId, ObjectId)>, GitError> {
    let head = repo.head().map_err(gix_error("cannot read HEAD"))?;
    match head.kind {
        gix::head::Kind::Detached { .. } => Err(GitError::DetachedHead),
        gix::head::Kind::Unborn(_) => Ok(None),
        gix::head::Kind::Symbolic(_) => {
            let commit = repo
                .head_commit()
                .map_err(gix_error("cannot read the commit at HEAD"))?;
            let tree = commit
                .tree_id()
                .map_err(gix_error(format!("cannot read the tree of {}", commit.id)))?;
            Ok(Some((commit.id, tree.detach())))
        }
    }
}

/// `base_tree` with the staged files put in and the removed paths taken out.
fn write_tree(
    repo: &Repository,
    base_tree: ObjectId,
    staged: &[Staged],
    removed_paths: &[String],
) -> Result<ObjectId, GitError> {
    let mut editor = repo
        .edit_tree(base_tree)
        .map_err(gix_error(format!("cannot read tree {base_tree}")))?;
    for file in staged {
        editor
            .upsert(file.repo_path.as_str(), file.kind, file.id)
            .map_err(gix_error(format!(
                "cannot add {} to the tree",
                file.repo_path
            )))?;
    }
    for path in removed_paths {
        // remove_leaf: a removal names a file; never drop a whole directory by accident.
        editor
            .remove_leaf(path.as_str())
            .map_err(gix_error(format!("cannot remove {path} from the tree")))?;
    }
    Ok(editor
        .write()
        .map_err(gix_error("cannot write the tree"))?
        .detach())
}

/// A commit of `tree` on `parent`, moving HEAD's branch to it.
/// Write the commit (SSH-signed as `git commit -S` would with `gpg.format=ssh` when a
/// signer is given) and move the current branch to it, from `parent` only.
fn write_commit(
    repo: &Repository,
    [committer, author]: [gix::actor::SignatureRef<'_>; 2],
    message: &str,
    tree: ObjectId,
    parent: Option<ObjectId>,
    signer: Option<&crate::signing::SigningKey>,
) -> Result<CommitInfo, GitError> {
    let mut message = message.to_owned();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    let id = match signer {
        None => repo
            .commit_as(committer, author, "HEAD", &message, tree, parent)
            .map_err(gix_error(
                "cannot create the commit (did HEAD move meanwhile?)",
            ))?,
        Some(key) => {
            let id = write_signed_commit(repo, [committer, author], &message, tree, parent, key)?;
            repo.find_object(id)
                .map_err(gix_error(format!("cannot read the new commit {id}")))?
                .id()
        }
    };
    let commit = id
        .object()
        .map_err(gix_error(format!("cannot read the new commit {id}")))?
        .into_commit();
    commit_info(&commit)
}

/// The signed commit object, written, and HEAD's branch moved to it (HEAD must still be at
/// `parent`): the payload signed is the commit exactly as Git will hash it, minus the
/// `gpgsig` header Git strips before checking.
fn write_signed_commit(
    repo: &Repository,
    [committer, author]: [gix::actor::SignatureRef<'_>; 2],
    message: &str,
    tree: ObjectId,
    parent: Option<ObjectId>,
    key: &crate::signing::SigningKey,
) -> Result<ObjectId, GitError> {
    use gix::objs::WriteTo;
    use gix::refs::transaction::{LogChange, PreviousValue, RefEdit, RefLog};
    let mut commit = gix::objs::Commit {
        message: message.into(),
        tree,
        author: author.into(),
        committer: committer.into(),
        encoding: None,
        parents: parent.into_iter().collect(),
        extra_headers: Vec::new(),
    };
    let mut payload = Vec::new();
    commit
        .write_to(&mut payload)
        .map_err(io_error("cannot serialize the commit", Path::new("HEAD")))?;
    let signature = key.sign_git_commit(&payload).map_err(|e| GitError::Sign {
        reason: e.to_string(),
    })?;
    commit
        .extra_headers
        .push(("gpgsig".into(), signature.trim_end().into()));
    let id = repo
        .write_object(&commit)
        .map_err(gix_error("cannot write the commit"))?
        .detach();
    let expected = match parent {
        Some(p) => PreviousValue::MustExistAndMatch(gix::refs::Target::Object(p)),
        None => PreviousValue::MustNotExist,
    };
    let summary = message.lines().next().unwrap_or_default();
    let log_message = if parent.is_some() {
        format!("commit: {summary}")
    } else {
        format!("commit (initial): {summary}")
    };
    repo.edit_reference(RefEdit {
        change: gix::refs::transaction::Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: log_message.into(),
            },
            expected,
            new: gix::refs::Target::Object(id),
        },
        name: "HEAD".try_into().expect("HEAD is a valid reference name"),
        deref: true,
    })
    .map_err(gix_error(
        "cannot move the branch to the commit (did HEAD move meanwhile?)",
    ))?;
    Ok(id)
}

/// Write the updated index through the lock taken at the start, replacing `.git/index`.
fn write_index(
    repo: &Repository,
    index: gix::index::File,
    mut lock: gix::lock::File,
    outcome: &CommitOutcome,
) -> Result<(), GitError> {
    let skip_hash = repo
        .config_snapshot()
        .boolean("index.skipHash")
        .unwrap_or(false);
    let options = gix::index::write::Options {
        // The tree cache would be stale for the changed paths (a later `git commit` would
        // trust it), and the untracked cache / fsmonitor data index entries by position: drop
        // them, git rebuilds them.
        extensions: gix::index::write::Extensions::Given {
            tree_cache: false,
            end_of_index_entry: true,
        },
        skip_hash,
    };
    let write_error = |source| GitError::IndexWrite {
        commit: match outcome {
            CommitOutcome::Committed(info) => info.id.clone(),
            CommitOutcome::Unchanged => "nothing".to_owned(),
        },
        path: repo.index_path(),
        source,
    };
    index
        .write_to(&mut lock, options)
        .map_err(|err| write_error(io::Error::other(err)))?;
    lock.commit().map_err(|err| write_error(err.error))?;
    Ok(())
}

fn identity<'a>(
    configured: Option<gix::Result<gix::actor::SignatureRef<'a>>>,
    role: &'static str,
) -> Result<gix::actor::SignatureRef<'a>, GitError> {
    configured
        .ok_or(GitError::NoIdentity { role })?
        .map_err(|source| GitError::BadIdentity { role, source })
}

fn refuse_unsupported_index(index: &gix::index::File) -> Result<(), GitError> {
    if index.link().is_some() {
        return Err(GitError::UnsupportedIndex {
            feature: "a split index",
        });
    }
    if index.is_sparse() {
        return Err(GitError::UnsupportedIndex {
            feature: "a sparse index",
        });
    }
    let mut conflicted: Vec<String> = index
        .entries()
        .iter()
        .filter(|entry| entry.stage_raw() != 0)
        .map(|entry| entry.path(index).to_str_lossy().into_owned())
        .collect();
    conflicted.dedup();
    if !conflicted.is_empty() {
        return Err(GitError::Conflicts { paths: conflicted });
    }
    Ok(())
}

fn refuse_operation_in_progress(repo: &Repository) -> Result<(), GitError> {
    use gix::state::InProgress;
    let operation = match repo.state() {
        None | Some(InProgress::Bisect) => return Ok(()),
        Some(InProgress::Merge) => "merge",
        Some(
            InProgress::Rebase | InProgress::RebaseInteractive | InProgress::ApplyMailboxRebase,
        ) => "rebase",
        Some(InProgress::CherryPick | InProgress::CherryPickSequence) => "cherry-pick",
        Some(InProgress::Revert | InProgress::RevertSequence) => "revert",
        Some(InProgress::ApplyMailbox) => "`git am`",
    };
    Err(GitError::OperationInProgress { operation })
}

/// Write each path's work-tree bytes as a blob, refusing symlinks and anything Git's filters
/// would store differently from the bytes on disk.
/// Blobs for `repo_paths` (as the repository names them) from the work tree.
fn stage_files(
    located: &Located,
    workdir: &Path,
    repo_paths: &[String],
    index: &gix::index::File,
) -> Result<Vec<Staged>, GitError> {
    let repo = &located.repo;
    let (mut pipeline, _) = repo
        .filter_pipeline(None)
        .map_err(gix_error("cannot set up Git's filters"))?;
    let file_mode = repo
        .config_snapshot()
        .boolean("core.fileMode")
        .unwrap_or(true);
    let mut staged = Vec::with_capacity(repo_paths.len());
    for repo_path in repo_paths {
        let repo_path = repo_path.clone();
        refuse_symlinks_on_path(workdir, &repo_path)?;
        let abs = workdir.join(&repo_path);
        let mut file = File::open(&abs).map_err(io_error("cannot open", &abs))?;
        let meta = file.metadata().map_err(io_error("cannot stat", &abs))?;
        if !meta.is_file() {
            return Err(GitError::NotAFile { path: abs });
        }
        check_size(&repo_path, meta.len())?;
        // The stat comes from the open file, before reading: if the file changes after, git
        // sees a different stat and re-checks the content instead of trusting ours.
        let fs_meta =
            gix::index::fs::Metadata::from_file(&file).map_err(io_error("cannot stat", &abs))?;
        let stat = gix::index::entry::Stat::from_fs(&fs_meta)
            .map_err(|err| io_error("cannot read the times of", &abs)(io::Error::other(err)))?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error("cannot read", &abs))?;
        check_size(&repo_path, bytes.len() as u64)?;
        if filters_change(&mut pipeline, &bytes, &repo_path, index)? {
            return Err(GitError::FilterChangesBytes { path: repo_path });
        }
        let id = repo
            .write_blob(&bytes)
            .map_err(gix_error(format!("cannot write the blob of {repo_path}")))?
            .detach();
        let executable = if file_mode {
            gix::fs::is_executable(&meta)
        } else {
            // Without core.fileMode the work tree's bit means nothing: keep what the index says.
            index
                .entry_by_path(repo_path.as_bytes().as_bstr())
                .is_some_and(|entry| entry.mode == gix::index::entry::Mode::FILE_EXECUTABLE)
        };
        let kind = if executable {
            EntryKind::BlobExecutable
        } else {
            EntryKind::Blob
        };
        staged.push(Staged {
            repo_path,
            id,
            kind,
            stat,
        });
    }
    Ok(staged)
}

fn refuse_symlinks_on_path(workdir: &Path, repo_path: &str) -> Result<(), GitError> {
    let mut path = workdir.to_owned();
    for component in repo_path.split('/') {
        path.push(component);
        let meta = std::fs::symlink_metadata(&path).map_err(io_error("cannot stat", &path))?;
        if meta.file_type().is_symlink() {
            return Err(GitError::Symlink {
                path: path.display().to_string(),
            });
        }
    }
    Ok(())
}

/// Whether Git's to-git conversion for `repo_path` turns `bytes` into different bytes.
fn filters_change(
    pipeline: &mut gix::filter::Pipeline<'_>,
    bytes: &[u8],
    repo_path: &str,
    index: &gix::index::File,
) -> Result<bool, GitError> {
    use gix::filter::plumbing::pipeline::convert::ToGitOutcome;
    let converted = pipeline
        .convert_to_git(bytes, Path::new(repo_path), index)
        .map_err(gix_error(format!(
            "cannot apply Git's filters to {repo_path}"
        )))?;
    Ok(match converted {
        ToGitOutcome::Unchanged(_) => false,
        ToGitOutcome::Buffer(buffer) => buffer != bytes,
        ToGitOutcome::Process(mut reader) => {
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map_err(|err| {
                gix_error(format!("cannot run Git's filter on {repo_path}"))(
                    gix::Error::from_error(err),
                )
            })?;
            out != bytes
        }
    })
}

/// Point the index entries of the committed paths at the committed blobs (with the work-tree
/// stat, so git trusts them without rehashing) and drop the removed paths.
fn update_index(index: &mut gix::index::File, staged: &[Staged], removed: &[String]) {
    use gix::index::entry::{Flags, Mode, Stage};
    let mut added = Vec::new();
    for file in staged {
        let mode = match file.kind {
            EntryKind::BlobExecutable => Mode::FILE_EXECUTABLE,
            _ => Mode::FILE,
        };
        let path: &BStr = file.repo_path.as_bytes().as_bstr();
        if let Some(entry) = index.entry_mut_by_path_and_stage(path, Stage::Unconflicted) {
            entry.id = file.id;
            entry.mode = mode;
            entry.stat = file.stat;
            entry.flags.remove(Flags::INTENT_TO_ADD);
        } else {
            added.push((file, mode, path));
        }
    }
    // Pushed only after every lookup: lookups binary-search, and pushing breaks the order
    // until the sort below.
    for (file, mode, path) in added {
        index.dangerously_push_entry(file.stat, file.id, Flags::empty(), mode, path);
    }
    index.remove_entries(|_, path, _| removed.iter().any(|removed| path == removed.as_bytes()));
    index.sort_entries();
    index.remove_tree();
}

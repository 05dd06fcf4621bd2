//! Reading the inputs of the manifests directory from a commit's tree, by the object
//! database only: the same rules as the work-tree walk (`.git` skipped, symlinks and
//! submodules refused, the size and entry limits of [`WalkBudget`]).

use std::path::Path;

use gix::ObjectId;
use gix::bstr::ByteSlice;

use super::{CommitInfo, GitError, Located, gix_error, locate};
use crate::source::{
    EntryName, FileRole, LimitError, MAX_TREE_BYTES, Refusal, RefusedInput, SourceFiles,
    WalkBudget, check_name, classify, join_rel, role_of,
};

/// Read the input files of the manifests directory `dir` as they are in commit `rev` (any
/// rev-spec: `HEAD`, a branch, a tag, an abbreviated id), from the object database only.
/// `dir` locates the repository and the directory's path inside it; its work-tree contents
/// are never read. Symlinks and submodules in the commit's directory are errors.
pub fn read_at_rev(dir: &Path, rev: &str) -> Result<(SourceFiles, CommitInfo), GitError> {
    read_located(&locate(dir)?, rev)
}

/// The inputs of `dir` that lockstep binds (manifests, `lockstep.toml`, every other file of
/// the directory) or writes (the lockfile) whose bytes in `work` differ from HEAD's, apart
/// from `ours` (what lockstep is about to write or remove). A commit of lockstep's files
/// alone would not hold what was signed unless this is empty. No commit yet, or no `dir` in HEAD, counts as an empty HEAD.
pub fn uncommitted_inputs(
    dir: &Path,
    work: &SourceFiles,
    ours: &[String],
) -> Result<Vec<String>, GitError> {
    let located = locate(dir)?;
    let unborn = located
        .repo
        .head()
        .map_err(gix_error("cannot read HEAD"))?
        .is_unborn();
    let head = if unborn {
        SourceFiles::default()
    } else {
        match read_located(&located, "HEAD") {
            Ok((files, _)) => files,
            Err(GitError::DirNotInCommit { .. }) => SourceFiles::default(),
            Err(e) => return Err(e),
        }
    };
    // Signatures are the only inputs left out: lockstep writes them, and they sign the
    // lockfile rather than being bound by it.
    let bound = |path: &&String| role_of(path).is_some_and(|role| role != FileRole::Signature);
    let paths: std::collections::BTreeSet<&String> = work
        .files
        .keys()
        .chain(head.files.keys())
        .filter(bound)
        .collect();
    Ok(paths
        .into_iter()
        .filter(|p| !ours.contains(p) && work.files.get(*p) != head.files.get(*p))
        .cloned()
        .collect())
}

/// The commit a rev-spec names (tags peeled), or why not.
pub(super) fn resolve_commit<'r>(
    repo: &'r gix::Repository,
    rev: &str,
) -> Result<gix::Commit<'r>, GitError> {
    let id = repo
        .rev_parse_single(rev.as_bytes().as_bstr())
        .map_err(|source| GitError::UnknownRev {
            rev: rev.to_owned(),
            source,
        })?;
    id.object()
        .map_err(gix_error(format!("cannot read object {id}")))?
        .peel_to_commit()
        .map_err(|source| GitError::NotACommit {
            rev: rev.to_owned(),
            source,
        })
}

/// Read the inputs of `located`'s directory at `rev`, from the object database only.
pub(super) fn read_located(
    located: &Located,
    rev: &str,
) -> Result<(SourceFiles, CommitInfo), GitError> {
    let commit = resolve_commit(&located.repo, rev)?;
    let info = commit_info(&commit)?;
    let tree = commit.tree().map_err(gix_error(format!(
        "cannot read the tree of commit {}",
        info.id
    )))?;
    let dir_tree = if located.prefix.is_empty() {
        tree.id
    } else {
        let entry = tree
            .lookup_entry_by_path(&located.prefix)
            .map_err(gix_error(format!(
                "cannot look up {} in commit {}",
                located.prefix, info.id
            )))?;
        match entry {
            Some(entry) if entry.mode().is_tree() => entry.object_id(),
            _ => {
                return Err(GitError::DirNotInCommit {
                    path: located.prefix.clone(),
                    commit: info.id,
                });
            }
        }
    };
    let mut files = SourceFiles::default();
    read_tree(located, dir_tree, &mut files, true)?;
    Ok((files, info))
}

/// Every file under the render input root `root` (relative to the manifests directory
/// `dir`; a file root is that file) as it is in commit `rev`, as (path relative to `dir`,
/// bytes): the walk of [`read_at_rev`] without its name rules. A root outside the
/// repository is an error.
pub fn read_input_root_at_rev(
    dir: &Path,
    rev: &str,
    root: &str,
) -> Result<Vec<(String, Vec<u8>)>, GitError> {
    read_input_root(&locate(dir)?, rev, root)
}

/// [`read_input_root_at_rev`] for the manifests directory `path` of `commit` in the
/// reconciler's cache repository.
pub fn read_input_root_in_cache(
    cache: &Path,
    commit: &str,
    path: &str,
    root: &str,
) -> Result<Vec<(String, Vec<u8>)>, GitError> {
    let oid = parse_commit_id(commit)?;
    let repo = gix::open(cache).map_err(|source| GitError::Discover {
        dir: cache.to_owned(),
        source,
    })?;
    let located = Located {
        repo,
        prefix: normalize_dir_path(path)?,
    };
    read_input_root(&located, &oid.to_string(), root)
}

fn read_input_root(
    located: &Located,
    rev: &str,
    root: &str,
) -> Result<Vec<(String, Vec<u8>)>, GitError> {
    let commit = resolve_commit(&located.repo, rev)?;
    let joined = if located.prefix.is_empty() {
        root.to_owned()
    } else {
        format!("{}/{root}", located.prefix)
    };
    let repo_path = crate::render::normalize(&joined)
        .ok()
        .filter(|p| !p.starts_with(".."))
        .ok_or_else(|| GitError::InvalidDirPath {
            path: root.to_owned(),
            reason: "the render input lies outside the repository",
        })?;
    let tree = commit.tree().map_err(gix_error(format!(
        "cannot read the tree of commit {}",
        commit.id
    )))?;
    let entry = tree
        .lookup_entry_by_path(&repo_path)
        .map_err(gix_error(format!("cannot look up {repo_path}")))?
        .ok_or_else(|| GitError::DirNotInCommit {
            path: repo_path.clone(),
            commit: commit.id.to_string(),
        })?;
    if entry.mode().is_blob() {
        let mut blob = located
            .repo
            .find_blob(entry.object_id())
            .map_err(gix_error(format!("cannot read {repo_path}")))?;
        crate::source::check_size(&repo_path, blob.data.len() as u64)?;
        return Ok(vec![(root.to_owned(), blob.take_data())]);
    }
    if !entry.mode().is_tree() {
        return Err(GitError::Symlink {
            path: located.repo_path(root),
        });
    }
    let at_root = Located {
        repo: located.repo.clone(),
        prefix: repo_path,
    };
    let mut files = SourceFiles::default();
    read_tree(&at_root, entry.object_id(), &mut files, false)?;
    Ok(files
        .files
        .into_iter()
        .map(|(rel, bytes)| (format!("{root}/{rel}"), bytes))
        .collect())
}

pub(super) fn commit_info(commit: &gix::Commit<'_>) -> Result<CommitInfo, GitError> {
    let id = commit.id.to_string();
    let message = commit
        .message()
        .map_err(gix_error(format!("cannot decode commit {id}")))?;
    Ok(CommitInfo {
        summary: message.summary().to_str_lossy().into_owned(),
        id,
    })
}

/// Walk the tree `dir_tree` (the manifests directory) with the same rules as the work-tree
/// walk: `.git` entries skipped unseen, every other file an input (read, or refused by name),
/// symlinks and submodules refused. The walk keeps its own stack, so a crafted chain of
/// 20 000 nested trees is refused at [`MAX_DEPTH`](super::MAX_DEPTH), not a stack overflow.
fn read_tree(
    located: &Located,
    dir_tree: ObjectId,
    files: &mut SourceFiles,
    classify_names: bool,
) -> Result<(), GitError> {
    let repo = &located.repo;
    let mut budget = WalkBudget::default();
    // One listing per open tree, in Git's (sorted) order: a depth-first walk without
    // recursion, visiting entries in the order the recursive walk did.
    let mut stack = vec![(
        String::new(),
        list_tree(located, dir_tree, "", &mut budget)?.into_iter(),
    )];
    while let Some((rel_dir, entries)) = stack.last_mut() {
        let Some((name, mode, oid)) = entries.next() else {
            stack.pop();
            continue;
        };
        let Ok(name) = std::str::from_utf8(&name) else {
            let lossy = join_rel(rel_dir, &name.to_str_lossy());
            return Err(GitError::NonUtf8Path {
                path: located.repo_path(&lossy),
            });
        };
        let name = match check_name(name) {
            Ok(EntryName::Skip) => continue,
            Ok(EntryName::Read(name)) => name,
            Err(refusal) => {
                return Err(refused(located, &join_rel(rel_dir, name), refusal));
            }
        };
        let rel = join_rel(rel_dir, name);
        if mode.is_tree() {
            budget.enter(&located.repo_path(&rel), stack.len())?;
            let listing = list_tree(located, oid, &rel, &mut budget)?;
            stack.push((rel, listing.into_iter()));
        } else if mode.is_link() {
            return Err(GitError::Symlink {
                path: located.repo_path(&rel),
            });
        } else if mode.is_commit() {
            return Err(GitError::Submodule {
                path: located.repo_path(&rel),
            });
        } else {
            if classify_names {
                classify(&rel).map_err(|refusal| refused(located, &rel, refusal))?;
            }
            let header = repo
                .find_header(oid)
                .map_err(gix_error(format!("cannot read blob {oid} ({rel})")))?;
            files.admit(&rel, header.size())?;
            let mut blob = repo
                .find_blob(oid)
                .map_err(gix_error(format!("cannot read blob {oid} ({rel})")))?;
            files.insert(rel, blob.take_data())?;
        }
    }
    Ok(())
}

/// The entries (name, mode, id) of the tree `tree_id`, the directory `rel_dir`; its size is
/// checked before it is loaded, and each entry counts against the walk's budget.
fn list_tree(
    located: &Located,
    tree_id: ObjectId,
    rel_dir: &str,
    budget: &mut WalkBudget,
) -> Result<Vec<(gix::bstr::BString, gix::objs::tree::EntryMode, ObjectId)>, GitError> {
    let repo = &located.repo;
    let shown = located.dir_path(rel_dir);
    let header = repo
        .find_header(tree_id)
        .map_err(gix_error(format!("cannot read tree {tree_id} ({shown})")))?;
    if header.size() > MAX_TREE_BYTES {
        return Err(LimitError::TreeTooLarge {
            path: shown,
            size: header.size(),
            limit: MAX_TREE_BYTES,
        }
        .into());
    }
    let tree = repo
        .find_tree(tree_id)
        .map_err(gix_error(format!("cannot read tree {tree_id} ({shown})")))?;
    let mut entries = Vec::new();
    for entry in tree.iter() {
        budget.count(&shown)?;
        let entry = entry.map_err(gix_error(format!("cannot decode tree {tree_id} ({shown})")))?;
        entries.push((entry.filename().to_owned(), entry.mode(), entry.object_id()));
    }
    Ok(entries)
}

fn refused(located: &Located, rel: &str, refusal: Refusal) -> GitError {
    GitError::Refused(RefusedInput {
        path: located.repo_path(rel),
        refusal,
    })
}

/// Read the input files of the directory `path` ('/'-separated, relative to the repository
/// root; empty for the root) at `commit` from the cache repository, without a checkout.
pub fn read_commit(
    cache: &Path,
    commit: &str,
    path: &str,
) -> Result<(SourceFiles, CommitInfo), GitError> {
    let oid = parse_commit_id(commit)?;
    let repo = gix::open(cache).map_err(|source| GitError::Discover {
        dir: cache.to_owned(),
        source,
    })?;
    let located = Located {
        repo,
        prefix: normalize_dir_path(path)?,
    };
    read_located(&located, &oid.to_string())
}

/// `path` as a tree path: no leading `/` or `./`, no trailing `/`, no `.`/`..`/empty parts.
fn normalize_dir_path(path: &str) -> Result<String, GitError> {
    let invalid = |reason| GitError::InvalidDirPath {
        path: path.to_owned(),
        reason,
    };
    let trimmed = path.trim_start_matches("./").trim_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Ok(String::new());
    }
    for component in trimmed.split('/') {
        match component {
            "" => return Err(invalid("it has an empty component (`//`)")),
            "." | ".." => return Err(invalid("it has a `.` or `..` component")),
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

pub(super) fn parse_commit_id(id: &str) -> Result<ObjectId, GitError> {
    let invalid = |reason| GitError::InvalidRef {
        what: "commit",
        name: id.to_owned(),
        reason,
    };
    if id.len() != 40 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            "a commit is named by its full 40-digit hexadecimal id",
        ));
    }
    ObjectId::from_hex(id.as_bytes()).map_err(|_| invalid("not a hexadecimal object id"))
}

//! Git through gix: reading the inputs from a commit's tree, and committing lockstep's files.
//!
//! Reading goes to the object database only (no checkout, no work-tree reads), so
//! `verify --rev` checks exactly what the commit holds. Committing writes blobs, a tree built
//! on HEAD's tree and a commit on the current branch, then updates `.git/index` for the
//! committed paths: only lockstep's files enter the commit, whatever else is modified.
//! No git binary is run.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use gix::bstr::{BStr, ByteSlice};
use gix::objs::tree::EntryKind;
use gix::{ObjectId, Repository};

use super::{
    EntryName, FileRole, LimitError, MAX_FILE_BYTES, MAX_TREE_BYTES, Refusal, RefusedInput,
    SourceFiles, WalkBudget, check_name, check_size, classify, join_rel, role_of,
};

pub mod ssh;

pub use ssh::SshCredentials;

/// A commit, as lockstep reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The full hexadecimal object id.
    pub id: String,
    /// The first line of the commit message.
    pub summary: String,
}

/// What [`commit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// A new commit is on the current branch.
    Committed(CommitInfo),
    /// HEAD already holds these contents; no (empty) commit was made.
    Unchanged,
}

/// A Git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// No repository encloses the directory.
    #[error("no Git repository found at or above {dir}")]
    Discover {
        dir: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// A filesystem operation failed on `path`.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory is not inside the repository's work tree.
    #[error("{dir} is not inside the work tree {workdir} of its repository")]
    OutsideWorkTree { dir: PathBuf, workdir: PathBuf },
    /// Committing needs a work tree.
    #[error(
        "the repository at {git_dir} has no work tree (bare); lockstep commits only from a work tree"
    )]
    Bare { git_dir: PathBuf },
    /// A path that is not valid UTF-8.
    #[error("{path:?} has a name that is not valid UTF-8")]
    NonUtf8Path { path: String },
    /// The revision does not resolve.
    #[error("unknown revision {rev:?}")]
    UnknownRev {
        rev: String,
        #[source]
        source: gix::Error,
    },
    /// The revision resolves to something other than a commit.
    #[error("revision {rev:?} does not name a commit")]
    NotACommit {
        rev: String,
        #[source]
        source: gix::Error,
    },
    /// The manifests directory does not exist (as a directory) in the commit.
    #[error("{path:?} is not a directory in commit {commit}")]
    DirNotInCommit { path: String, commit: String },
    /// A symbolic link in the commit or the work tree.
    #[error("{path} is a symbolic link; lockstep refuses symlinks in the manifests directory")]
    Symlink { path: String },
    /// A submodule in the commit.
    #[error("{path} is a submodule; lockstep refuses submodules in the manifests directory")]
    Submodule { path: String },
    /// A size limit was exceeded.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A file or directory lockstep refuses to read (a kustomization, JSON, a control
    /// character in the name).
    #[error(transparent)]
    Refused(#[from] RefusedInput),
    /// Reading or writing an object, a tree or a reference failed.
    #[error("{action}")]
    Git {
        action: String,
        #[source]
        source: gix::Error,
    },
    /// HEAD points at a commit, not a branch.
    #[error("HEAD is detached; check out a branch to commit on")]
    DetachedHead,
    /// The index holds unresolved conflicts.
    #[error("the index has unresolved conflicts in {}; resolve them (or abort the merge) first", paths.join(", "))]
    Conflicts { paths: Vec<String> },
    /// A merge, rebase, cherry-pick, revert or `git am` is under way.
    #[error("a {operation} is in progress; finish or abort it first")]
    OperationInProgress { operation: &'static str },
    /// Neither Git config nor the environment names the author or committer.
    #[error("no Git {role} identity: set user.name and user.email (git config), or GIT_{}_NAME and GIT_{}_EMAIL", role.to_uppercase(), role.to_uppercase())]
    NoIdentity { role: &'static str },
    /// The identity is configured but unusable (an unparseable date, say).
    #[error("invalid Git {role} identity")]
    BadIdentity {
        role: &'static str,
        #[source]
        source: gix::Error,
    },
    /// A path given to [`commit`] that is not one of lockstep's input paths.
    #[error("refusing to commit {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A path to commit that is missing from the work tree or is not a regular file.
    #[error("{path} is not a regular file in the work tree")]
    NotAFile { path: PathBuf },
    /// Git's configured filters (autocrlf, eol, ident, a filter driver) would store other
    /// bytes than the file holds, so the commit would not hold what was signed.
    #[error(
        "Git's filters (core.autocrlf, .gitattributes eol/ident/filter) would change {path} when committed, so the commit would not hold the signed bytes; disable them for this path (e.g. '{path} -text' in .gitattributes)"
    )]
    FilterChangesBytes { path: String },
    /// Another process holds `.git/index.lock`.
    #[error(
        "cannot lock the index ({path} exists?): is another git process running? If not, remove the lock file"
    )]
    IndexLocked {
        path: PathBuf,
        #[source]
        source: gix::Error,
    },
    /// Index features lockstep does not write.
    #[error(
        "the index uses {feature}, which lockstep cannot update; run `git update-index --no-split-index` / disable sparse index"
    )]
    UnsupportedIndex { feature: &'static str },
    /// The commit was made but `.git/index` could not be updated.
    #[error(
        "committed {commit}, but updating the index {path} failed: `git status` may show the committed files as changed"
    )]
    IndexWrite {
        commit: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The commit message is empty.
    #[error("the commit message is empty")]
    EmptyMessage,
    /// The remote has no such branch or tag.
    #[error("{url} has no {what}")]
    RefNotFound { url: String, what: String },
    /// The commit is in none of the remote's branches and tags.
    #[error("commit {commit} is not in any branch or tag of {url}")]
    CommitNotFound { url: String, commit: String },
    /// A branch, tag or commit name lockstep refuses to fetch.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidRef {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// A manifests directory path that is not a plain relative path.
    #[error("invalid manifests path {path:?}: {reason}")]
    InvalidDirPath { path: String, reason: &'static str },
    /// An SSH URL without a deploy key and host keys.
    #[error(
        "{url} is fetched over SSH, which needs a deploy key (`identity`) and the server's host keys (`known_hosts`); the machine's own SSH setup is never used"
    )]
    SshNeedsKey { url: String },
    /// SSH credentials for a URL that is not SSH.
    #[error("SSH credentials (`identity`) were given for {url}, which is not an SSH URL")]
    SshKeyForOtherUrl { url: String },
    /// The SSH credentials cannot be used.
    #[error(transparent)]
    Ssh(ssh::SshError),
}

fn gix_error(action: impl Into<String>) -> impl FnOnce(gix::Error) -> GitError {
    let action = action.into();
    move |source| GitError::Git { action, source }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> GitError + use<> {
    let path = path.to_owned();
    move |source| GitError::Io {
        action,
        path,
        source,
    }
}

/// A repository and where the manifests directory sits in it.
struct Located {
    repo: Repository,
    /// The directory's path relative to the work tree root, '/'-separated; empty at the root.
    prefix: String,
}

impl Located {
    /// The directory `rel_dir` (empty for the manifests directory) as the repository names
    /// it, `.` for the repository's root.
    fn dir_path(&self, rel_dir: &str) -> String {
        match (self.prefix.is_empty(), rel_dir.is_empty()) {
            (true, true) => ".".to_owned(),
            (false, true) => self.prefix.clone(),
            _ => self.repo_path(rel_dir),
        }
    }

    fn repo_path(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

fn locate(dir: &Path) -> Result<Located, GitError> {
    let repo = gix::discover(dir).map_err(|source| GitError::Discover {
        dir: dir.to_owned(),
        source,
    })?;
    let Some(workdir) = repo.workdir() else {
        // A bare repository has no place for `dir` to be in: read from the tree's root.
        return Ok(Located {
            repo,
            prefix: String::new(),
        });
    };
    let canonical_dir = dir
        .canonicalize()
        .map_err(io_error("cannot resolve", dir))?;
    let canonical_workdir = workdir
        .canonicalize()
        .map_err(io_error("cannot resolve", workdir))?;
    let relative = canonical_dir
        .strip_prefix(&canonical_workdir)
        .map_err(|_| GitError::OutsideWorkTree {
            dir: canonical_dir.clone(),
            workdir: canonical_workdir.clone(),
        })?;
    let mut components = Vec::new();
    for component in relative.components() {
        let name = component.as_os_str();
        let name = name.to_str().ok_or_else(|| GitError::NonUtf8Path {
            path: relative.display().to_string(),
        })?;
        components.push(name);
    }
    let prefix = components.join("/");
    Ok(Located { repo, prefix })
}

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
fn resolve_commit<'r>(repo: &'r gix::Repository, rev: &str) -> Result<gix::Commit<'r>, GitError> {
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
fn read_located(located: &Located, rev: &str) -> Result<(SourceFiles, CommitInfo), GitError> {
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
    read_tree(located, dir_tree, &mut files)?;
    Ok((files, info))
}

fn commit_info(commit: &gix::Commit<'_>) -> Result<CommitInfo, GitError> {
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
            classify(&rel).map_err(|refusal| refused(located, &rel, refusal))?;
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
    let located = locate(dir)?;
    let repo = &located.repo;
    let Some(workdir) = repo.workdir().map(Path::to_owned) else {
        return Err(GitError::Bare {
            git_dir: repo.git_dir().to_owned(),
        });
    };

    // Hold index.lock for the whole operation, as `git commit` does, so that no other git
    // process changes the index or commits between our reading and our writing it.
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
    let mut index = if index_path.exists() {
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

    let head = repo.head().map_err(gix_error("cannot read HEAD"))?;
    let parent = match head.kind {
        gix::head::Kind::Detached { .. } => return Err(GitError::DetachedHead),
        gix::head::Kind::Unborn(_) => None,
        gix::head::Kind::Symbolic(_) => {
            let commit = repo
                .head_commit()
                .map_err(gix_error("cannot read the commit at HEAD"))?;
            let tree = commit
                .tree_id()
                .map_err(gix_error(format!("cannot read the tree of {}", commit.id)))?;
            Some((commit.id, tree.detach()))
        }
    };
    let base_tree = parent.map_or_else(
        || ObjectId::empty_tree(repo.object_hash()),
        |(_, tree)| tree,
    );

    let author = identity(repo.author(), "author")?;
    let committer = identity(repo.committer(), "committer")?;

    let staged = stage_files(&located, &workdir, paths, &index)?;
    let mut editor = repo
        .edit_tree(base_tree)
        .map_err(gix_error(format!("cannot read tree {base_tree}")))?;
    for file in &staged {
        editor
            .upsert(file.repo_path.as_str(), file.kind, file.id)
            .map_err(gix_error(format!(
                "cannot add {} to the tree",
                file.repo_path
            )))?;
    }
    let removed_paths: Vec<String> = removed.iter().map(|rel| located.repo_path(rel)).collect();
    for path in &removed_paths {
        // remove_leaf: a removal names a file; never drop a whole directory by accident.
        editor
            .remove_leaf(path.as_str())
            .map_err(gix_error(format!("cannot remove {path} from the tree")))?;
    }
    let tree = editor
        .write()
        .map_err(gix_error("cannot write the tree"))?
        .detach();

    let outcome = if tree == base_tree {
        CommitOutcome::Unchanged
    } else {
        let mut message = message.to_owned();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        let id = repo
            .commit_as(
                committer,
                author,
                "HEAD",
                &message,
                tree,
                parent.map(|(id, _)| id),
            )
            .map_err(gix_error(
                "cannot create the commit (did HEAD move meanwhile?)",
            ))?;
        let commit = id
            .object()
            .map_err(gix_error(format!("cannot read the new commit {id}")))?
            .into_commit();
        CommitOutcome::Committed(commit_info(&commit)?)
    };

    // commit_as leaves the index alone; without this `git status` would show the committed
    // files as changed (or, for removals, as staged for re-adding).
    update_index(&mut index, &staged, &removed_paths);
    write_index(repo, index, lock, &outcome)?;
    Ok(outcome)
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
fn stage_files(
    located: &Located,
    workdir: &Path,
    paths: &[String],
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
    let mut staged = Vec::with_capacity(paths.len());
    for rel in paths {
        let repo_path = located.repo_path(rel);
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

/// A revision to fetch from a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchRef<'a> {
    /// A branch name (`main`).
    Branch(&'a str),
    /// A tag name (`v1.2.0`); an annotated tag is peeled to its commit.
    Tag(&'a str),
    /// A full commit id: all branches and tags are fetched, and it must be in one of them.
    Commit(&'a str),
}

/// Credentials for a remote: a user and password (or token) for HTTPS, a deploy key and
/// host keys for SSH.
#[derive(Clone, Debug)]
pub enum GitCredentials {
    Http(HttpCredentials),
    Ssh(SshCredentials),
}

/// Credentials for an HTTPS remote. `Debug` does not show the password.
#[derive(Clone)]
pub struct HttpCredentials {
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for HttpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where fetched refs are kept in the cache repository, apart from anything else.
const FETCHED_REFS: &str = "refs/lockstep";

/// How long one fetch may take, from connecting to the last byte of the pack: ssh is killed
/// at it, receiving a pack is interrupted at it, and each HTTP request also times out after
/// 30 s without an answer. (The unauthenticated `git://` protocol has no read timeout of its
/// own in gix: prefer HTTPS or SSH.)
pub const FETCH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Fetch `wanted` from `url` into the bare cache repository at `cache` (made when missing)
/// and return the commit it names. Nothing is checked out; read the commit with
/// [`read_commit`]. A commit already in the cache is not fetched again (commits are
/// immutable). `https://` uses HTTP `credentials` when given (never Git's credential helpers
/// or a prompt); an SSH URL needs SSH `credentials` (see [`ssh`]: nothing from the machine's
/// SSH setup is used); `file://` runs `git-upload-pack`. The whole fetch is bounded by
/// [`FETCH_DEADLINE`].
pub fn fetch(
    cache: &Path,
    url: &str,
    wanted: FetchRef<'_>,
    credentials: Option<&GitCredentials>,
) -> Result<CommitInfo, GitError> {
    fetch_within(cache, url, wanted, credentials, FETCH_DEADLINE)
}

/// [`fetch`] with another deadline (tests of a stalled server use a short one).
pub fn fetch_within(
    cache: &Path,
    url: &str,
    wanted: FetchRef<'_>,
    credentials: Option<&GitCredentials>,
    deadline: std::time::Duration,
) -> Result<CommitInfo, GitError> {
    use gix::remote::Direction;

    let mut repo = open_cache(cache)?;
    let (http, ssh_key) = match (ssh::is_ssh_url(url), credentials) {
        (true, Some(GitCredentials::Ssh(key))) => (None, Some(key)),
        (true, _) => {
            return Err(GitError::SshNeedsKey {
                url: url.to_owned(),
            });
        }
        (false, Some(GitCredentials::Ssh(_))) => {
            return Err(GitError::SshKeyForOtherUrl {
                url: url.to_owned(),
            });
        }
        (false, Some(GitCredentials::Http(http))) => (Some(http), None),
        (false, None) => (None, None),
    };
    if let FetchRef::Commit(id) = wanted {
        let oid = parse_commit_id(id)?;
        if let Ok(object) = repo.find_object(oid) {
            return commit_of(&repo, object.id, id);
        }
    }
    // The key files exist only while a transfer needs them.
    let ssh_session = match ssh_key {
        Some(key) => {
            let parent = cache.parent().unwrap_or(cache);
            let session = ssh::SshSession::new(key, parent).map_err(GitError::Ssh)?;
            let setup_error = || gix_error(format!("cannot set up ssh for {url}"));
            let mut config = repo.config_snapshot_mut();
            config
                .set_value(
                    &gix::config::tree::Core::SSH_COMMAND,
                    session.command(deadline).as_str(),
                )
                .map_err(setup_error())?;
            config
                .set_value(&gix::config::tree::Ssh::VARIANT, "ssh")
                .map_err(setup_error())?;
            config.commit().map_err(setup_error())?;
            Some(session)
        }
        None => None,
    };
    let (refspecs, what): (Vec<String>, String) = match wanted {
        FetchRef::Branch(name) => {
            check_ref_name("branch", name)?;
            (
                vec![format!("+refs/heads/{name}:{FETCHED_REFS}/heads/{name}")],
                format!("branch {name:?}"),
            )
        }
        FetchRef::Tag(name) => {
            check_ref_name("tag", name)?;
            (
                vec![format!("+refs/tags/{name}:{FETCHED_REFS}/tags/{name}")],
                format!("tag {name:?}"),
            )
        }
        FetchRef::Commit(_) => (
            vec![
                format!("+refs/heads/*:{FETCHED_REFS}/heads/*"),
                format!("+refs/tags/*:{FETCHED_REFS}/tags/*"),
            ],
            "branches or tags".to_owned(),
        ),
    };
    // What ssh said, when it said something: the reason gix's own error cannot give.
    let ssh_said = |session: &Option<ssh::SshSession>| {
        session
            .as_ref()
            .map(ssh::SshSession::stderr)
            .filter(|said| !said.is_empty())
            .map(|said| format!(" (ssh: {said})"))
            .unwrap_or_default()
    };
    // The deadline runs from here: a pack that keeps trickling is interrupted (the flag gix
    // checks), ssh is killed by its own `timeout`, and HTTP requests time out after 30 s
    // without an answer — a pass never hangs on Git.
    let started = std::time::Instant::now();
    let interrupt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = {
        let interrupt = interrupt.clone();
        std::thread::spawn(move || {
            if finished.recv_timeout(deadline).is_err() {
                interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let fetch_error = |source| {
        let late = if started.elapsed() >= deadline {
            format!(": no complete answer within {deadline:?}")
        } else {
            String::new()
        };
        GitError::Git {
            action: format!(
                "cannot fetch {what} from {url}{late}{}",
                ssh_said(&ssh_session)
            ),
            source,
        }
    };
    // Without `url.<base>.insteadOf` from the machine's Git config: the URL is the spec's.
    let remote = repo
        .remote_at_without_url_rewrite(url)
        .map_err(fetch_error)?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(refspecs.iter().map(String::as_str), Direction::Fetch)
        .map_err(fetch_error)?;
    let connection = remote.connect(Direction::Fetch).map_err(fetch_error)?;
    // Our own credentials or none: a controller must never run credential helpers or prompt.
    let username = http.map(|c| c.username.clone());
    let password = http.map(|c| c.password.clone());
    let connection =
        connection.with_credentials(move |action| match (action, &username, &password) {
            (gix::credentials::helper::Action::Get(context), Some(username), Some(password)) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: username.clone(),
                        password: password.to_string(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
            }
            _ => Ok(None),
        });
    let prepared = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(fetch_error)?;
    let names_one_ref = !matches!(wanted, FetchRef::Commit(_));
    if names_one_ref && prepared.ref_map().mappings.is_empty() {
        return Err(GitError::RefNotFound {
            url: url.to_owned(),
            what,
        });
    }
    let received = prepared.receive(gix::progress::Discard, &interrupt);
    drop(done);
    let _ = watchdog.join();
    received.map_err(fetch_error)?;
    // The key files go as soon as the transfer is over.
    drop(ssh_session);
    match wanted {
        FetchRef::Branch(name) | FetchRef::Tag(name) => {
            let kind = if matches!(wanted, FetchRef::Branch(_)) {
                "heads"
            } else {
                "tags"
            };
            let local = format!("{FETCHED_REFS}/{kind}/{name}");
            let mut reference = repo
                .find_reference(local.as_str())
                .map_err(gix_error(format!(
                    "cannot read {local} after fetching {what}"
                )))?;
            let id = reference
                .peel_to_id()
                .map_err(gix_error(format!("cannot peel {local}")))?
                .detach();
            commit_of(&repo, id, name)
        }
        FetchRef::Commit(id) => {
            let oid = parse_commit_id(id)?;
            if repo.find_object(oid).is_err() {
                return Err(GitError::CommitNotFound {
                    url: url.to_owned(),
                    commit: id.to_owned(),
                });
            }
            commit_of(&repo, oid, id)
        }
    }
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

fn open_cache(cache: &Path) -> Result<Repository, GitError> {
    if cache.join("HEAD").exists() {
        gix::open(cache).map_err(|source| GitError::Discover {
            dir: cache.to_owned(),
            source,
        })
    } else {
        std::fs::create_dir_all(cache).map_err(io_error("cannot create", cache))?;
        gix::init_bare(cache).map_err(gix_error(format!(
            "cannot create the cache repository {}",
            cache.display()
        )))
    }
}

fn parse_commit_id(id: &str) -> Result<ObjectId, GitError> {
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

fn check_ref_name(what: &'static str, name: &str) -> Result<(), GitError> {
    let full = format!("refs/heads/{name}");
    let valid = !name.contains('*')
        && !name.starts_with('-')
        && gix::refs::FullName::try_from(full.as_str()).is_ok();
    if valid {
        Ok(())
    } else {
        Err(GitError::InvalidRef {
            what,
            name: name.to_owned(),
            reason: "not a valid Git reference name",
        })
    }
}

fn commit_of(repo: &Repository, id: ObjectId, rev: &str) -> Result<CommitInfo, GitError> {
    let object = repo
        .find_object(id)
        .map_err(gix_error(format!("cannot read object {id}")))?;
    let commit = object
        .peel_to_commit()
        .map_err(|source| GitError::NotACommit {
            rev: rev.to_owned(),
            source,
        })?;
    commit_info(&commit)
}

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
    let repo = &located.repo;
    let commit = repo
        .find_commit(commit)
        .map_err(gix_error(format!("cannot read commit {commit}")))?;
    let tree = commit.tree().map_err(gix_error(format!(
        "cannot read the tree of commit {}",
        commit.id
    )))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_can_cross_threads() {
        // `commit` and `read_at_rev` run under `spawn_blocking`; their errors must travel back.
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<GitError>();
    }
}

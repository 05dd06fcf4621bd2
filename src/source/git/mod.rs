//! Git through gix: reading the inputs from a commit's tree (`read.rs`, `history.rs`),
//! committing lockstep's files (`commit.rs`), and fetching a remote into a bare cache
//! (`fetch.rs`, over the HTTP and SSH set-up of `transport.rs` and [`ssh`]).
//!
//! Reading goes to the object database only (no checkout, no work-tree reads), so
//! `verify --rev` checks exactly what the commit holds. Committing writes blobs, a tree built
//! on HEAD's tree and a commit on the current branch, then updates `.git/index` for the
//! committed paths: only lockstep's files enter the commit, whatever else is modified.
//! No git binary is run, except `git-upload-pack` (and `ssh`) for fetching.

use std::io;
use std::path::{Path, PathBuf};

use gix::Repository;

use super::{LimitError, RefusedInput};

mod commit;
mod fetch;
mod history;
mod read;
pub mod ssh;
mod transport;

pub use commit::{commit, commit_with_sources};
pub use fetch::{FETCH_DEADLINE, FetchRef, fetch, fetch_within};
pub use history::{HistoryCommit, MAX_SEARCHED_COMMITS, find_lockfile, read_history};
pub use read::{
    read_at_rev, read_commit, read_input_root_at_rev, read_input_root_in_cache, uncommitted_inputs,
};
pub use ssh::SshCredentials;
pub use transport::{GitCredentials, HTTP_TIMEOUT, HttpCredentials};

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
    /// The commit could not be signed.
    #[error("cannot sign the commit: {reason}")]
    Sign { reason: String },
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
    /// An HTTP(S) remote answered 401 or 403: the credentials are missing or wrong (never
    /// shown: only the URL is named).
    #[error("{url} {}", if *credentials_given {
        "did not accept the credentials given for it (HTTP 401/403): check the token, or the user name and password"
    } else {
        "requires credentials (HTTP 401/403), and none were given"
    })]
    Unauthorized {
        url: String,
        credentials_given: bool,
        #[source]
        source: gix::Error,
    },
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

impl GitError {
    /// Whether trying again soon may succeed: a remote that could not be reached, or did not
    /// answer in time, may come back; a missing branch or path, refused credentials or a bad
    /// deploy key need a human.
    pub fn is_transient(&self) -> bool {
        matches!(self, GitError::Git { .. })
    }
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

    /// A path relative to the manifests directory that may climb out of it (`../base/x`),
    /// as the repository names it; `None` when it climbs out of the work tree.
    fn repo_path_climbing(&self, rel: &str) -> Option<String> {
        let mut parts: Vec<&str> = self.prefix.split('/').filter(|p| !p.is_empty()).collect();
        for part in rel.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                p => parts.push(p),
            }
        }
        (!parts.is_empty()).then(|| parts.join("/"))
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

/// The Git work tree a directory is in.
#[derive(Debug)]
pub struct WorkTree {
    /// The work tree's root, canonical.
    pub root: PathBuf,
    /// The directory's path below the root, '/'-separated; empty at the root.
    pub prefix: String,
    /// Every file path the index tracks, relative to the root.
    pub tracked: std::collections::BTreeSet<String>,
}

/// The Git work tree `dir` is in, with the paths its index tracks; `None` when `dir` is in
/// no repository or in a bare one.
pub fn work_tree_of(dir: &Path) -> Result<Option<WorkTree>, GitError> {
    if gix::discover(dir).is_err() {
        return Ok(None);
    }
    let located = locate(dir)?;
    let Some(workdir) = located.repo.workdir() else {
        return Ok(None);
    };
    let root = workdir
        .canonicalize()
        .map_err(io_error("cannot resolve", workdir))?;
    let index = located
        .repo
        .index_or_empty()
        .map_err(gix_error("cannot read the Git index"))?;
    let tracked = index
        .entries()
        .iter()
        .map(|e| e.path(&index).to_string())
        .collect();
    Ok(Some(WorkTree {
        root,
        prefix: located.prefix,
        tracked,
    }))
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

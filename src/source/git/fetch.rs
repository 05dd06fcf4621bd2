//! Fetching a branch, a tag or a commit from a remote into a bare cache repository, within
//! a deadline.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use gix::{ObjectId, Repository};

use super::read::{commit_info, parse_commit_id};
use super::transport::{Access, GitCredentials, HTTP_TIMEOUT, is_http_url};
use super::{CommitInfo, GitError, gix_error, io_error, ssh};

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

/// Where fetched refs are kept in the cache repository, apart from anything else.
const FETCHED_REFS: &str = "refs/lockstep";

/// How long one fetch may take, from connecting to the last byte of the pack: ssh is killed
/// at it, and receiving a pack is interrupted at it. Over HTTP(S), each wait for the server
/// also fails after [`HTTP_TIMEOUT`] (or the deadline, when shorter), the ref listing
/// included. (The unauthenticated `git://` protocol has no read timeout of its own in gix:
/// prefer HTTPS or SSH.)
pub const FETCH_DEADLINE: Duration = Duration::from_secs(300);

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
    deadline: Duration,
) -> Result<CommitInfo, GitError> {
    let mut repo = open_cache(cache)?;
    let access = Access::choose(url, credentials)?;
    if let FetchRef::Commit(id) = wanted {
        let oid = parse_commit_id(id)?;
        if let Ok(object) = repo.find_object(oid) {
            return commit_of(&repo, object.id, id);
        }
    }
    // The key files exist only while a transfer needs them.
    let ssh_session = access.ssh_session(&mut repo, cache, url, deadline)?;
    let plan = FetchPlan::of(wanted)?;
    let received = transfer(&repo, url, &access, &plan, deadline, ssh_session.as_ref());
    // The key files go as soon as the transfer is over.
    drop(ssh_session);
    received?;
    fetched_commit(&repo, url, wanted, &plan)
}

/// The refspecs that fetch `wanted` into [`FETCHED_REFS`], and how errors name it.
struct FetchPlan {
    refspecs: Vec<String>,
    what: String,
    /// A branch or a tag: the remote must have it (a commit is looked for in all of them).
    names_one_ref: bool,
}

impl FetchPlan {
    fn of(wanted: FetchRef<'_>) -> Result<FetchPlan, GitError> {
        let one = |what: &'static str, kind: &str, name: &str| {
            check_ref_name(what, name)?;
            Ok(FetchPlan {
                refspecs: vec![format!("+refs/{kind}/{name}:{FETCHED_REFS}/{kind}/{name}")],
                what: format!("{what} {name:?}"),
                names_one_ref: true,
            })
        };
        match wanted {
            FetchRef::Branch(name) => one("branch", "heads", name),
            FetchRef::Tag(name) => one("tag", "tags", name),
            FetchRef::Commit(_) => Ok(FetchPlan {
                refspecs: vec![
                    format!("+refs/heads/*:{FETCHED_REFS}/heads/*"),
                    format!("+refs/tags/*:{FETCHED_REFS}/tags/*"),
                ],
                what: "branches or tags".to_owned(),
                names_one_ref: false,
            }),
        }
    }
}

/// Connect, list the remote's refs and receive the pack, all within `deadline`: a pack that
/// keeps trickling is interrupted (the flag gix checks), ssh is killed by its own `timeout`,
/// and HTTP requests time out without an answer — a pass never hangs on Git.
fn transfer(
    repo: &Repository,
    url: &str,
    access: &Access<'_>,
    plan: &FetchPlan,
    deadline: Duration,
    ssh_session: Option<&ssh::SshSession>,
) -> Result<(), GitError> {
    use gix::remote::Direction;

    let started = Instant::now();
    let watchdog = Watchdog::start(deadline);
    let fetch_error = |source: gix::Error| {
        if is_http_url(url) && (source.is_unauthenticated() || source.is_permission_denied()) {
            return GitError::Unauthorized {
                url: url.to_owned(),
                credentials_given: access.has_credentials(),
                source,
            };
        }
        let late = if started.elapsed() >= deadline {
            format!(": no complete answer within {deadline:?}")
        } else if is_timeout(&source) {
            format!(": no answer within {:?}", http_timeout(deadline))
        } else {
            String::new()
        };
        GitError::Git {
            action: format!(
                "cannot fetch {} from {url}{late}{}",
                plan.what,
                ssh_said(ssh_session)
            ),
            source,
        }
    };
    // Without `url.<base>.insteadOf` from the machine's Git config: the URL is the spec's.
    let remote = repo
        .remote_at_without_url_rewrite(url)
        .map_err(fetch_error)?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(plan.refspecs.iter().map(String::as_str), Direction::Fetch)
        .map_err(fetch_error)?;
    let connection = remote.connect(Direction::Fetch).map_err(fetch_error)?;
    let connection = access
        .prepare(repo, url, connection, http_timeout(deadline))
        .map_err(fetch_error)?;
    let prepared = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(fetch_error)?;
    if plan.names_one_ref && prepared.ref_map().mappings.is_empty() {
        return Err(GitError::RefNotFound {
            url: url.to_owned(),
            what: plan.what.clone(),
        });
    }
    let received = prepared.receive(gix::progress::Discard, &watchdog.interrupt);
    watchdog.stop();
    received.map(drop).map_err(fetch_error)
}

/// Whether an HTTP request of `error` timed out (see [`HTTP_TIMEOUT`]).
fn is_timeout(error: &gix::Error) -> bool {
    error.iter_errors().any(|frame| {
        std::iter::successors(Some(frame), |e| e.source()).any(|e| {
            e.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout)
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        })
    })
}

/// What ssh said, when it said something: the reason gix's own error cannot give.
fn ssh_said(session: Option<&ssh::SshSession>) -> String {
    session
        .map(ssh::SshSession::stderr)
        .filter(|said| !said.is_empty())
        .map(|said| format!(" (ssh: {said})"))
        .unwrap_or_default()
}

/// Sets `interrupt` once `deadline` has passed, unless stopped first.
struct Watchdog {
    interrupt: Arc<AtomicBool>,
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Watchdog {
    fn start(deadline: Duration) -> Watchdog {
        let interrupt = Arc::new(AtomicBool::new(false));
        let (done, finished) = mpsc::channel::<()>();
        let thread = {
            let interrupt = interrupt.clone();
            std::thread::spawn(move || {
                if finished.recv_timeout(deadline).is_err() {
                    interrupt.store(true, Ordering::SeqCst);
                }
            })
        };
        Watchdog {
            interrupt,
            done,
            thread,
        }
    }

    fn stop(self) {
        drop(self.done);
        let _ = self.thread.join();
    }
}

/// The commit the fetched ref (or the fetched commit id) names in the cache.
fn fetched_commit(
    repo: &Repository,
    url: &str,
    wanted: FetchRef<'_>,
    plan: &FetchPlan,
) -> Result<CommitInfo, GitError> {
    let (kind, name) = match wanted {
        FetchRef::Branch(name) => ("heads", name),
        FetchRef::Tag(name) => ("tags", name),
        FetchRef::Commit(id) => {
            let oid = parse_commit_id(id)?;
            if repo.find_object(oid).is_err() {
                return Err(GitError::CommitNotFound {
                    url: url.to_owned(),
                    commit: id.to_owned(),
                });
            }
            return commit_of(repo, oid, id);
        }
    };
    let local = format!("{FETCHED_REFS}/{kind}/{name}");
    let mut reference = repo
        .find_reference(local.as_str())
        .map_err(gix_error(format!(
            "cannot read {local} after fetching {}",
            plan.what
        )))?;
    let id = reference
        .peel_to_id()
        .map_err(gix_error(format!("cannot peel {local}")))?
        .detach();
    commit_of(repo, id, name)
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

/// Each HTTP request's timeout within a fetch: [`HTTP_TIMEOUT`], or the whole deadline when
/// that is shorter.
fn http_timeout(deadline: Duration) -> Duration {
    HTTP_TIMEOUT.min(deadline)
}

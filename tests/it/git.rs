//! The Git edge against real repositories: made and inspected with the `git` CLI (the user's
//! tool), read and committed by lockstep through gix.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lockstep::source::fs::{SourceError, read_dir, write_files};
use lockstep::source::git::{CommitOutcome, GitError, commit, read_at_rev};

const AUTHOR_NAME: &str = "Repo Author";
const AUTHOR_EMAIL: &str = "repo-author@example.com";

/// A `git` command isolated from the machine's system and global configuration, so that
/// only what a test configures in the repository applies.
fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    for var in ["AUTHOR", "COMMITTER"] {
        for field in ["NAME", "EMAIL", "DATE"] {
            cmd.env_remove(format!("GIT_{var}_{field}"));
        }
    }
    cmd
}

fn run_git(dir: &Path, args: &[&str]) -> Output {
    git_command(dir).args(args).output().expect("run git")
}

/// Run git, insist on success, return stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = run_git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 git output")
}

struct TestRepo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl TestRepo {
    /// A fresh repository on branch `main` with a configured identity and no commits.
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        fs::create_dir(&root).unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        git(&root, &["config", "user.name", AUTHOR_NAME]);
        git(&root, &["config", "user.email", AUTHOR_EMAIL]);
        git(&root, &["config", "commit.gpgsign", "false"]);
        TestRepo { _tmp: tmp, root }
    }

    fn git(&self, args: &[&str]) -> String {
        git(&self.root, args)
    }

    fn write(&self, rel: &str, contents: &str) {
        let path = self.root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap()
    }

    fn commit_all(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.head()
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// `git status --porcelain` lines.
    fn status(&self) -> Vec<String> {
        self.git(&["status", "--porcelain"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn fsck_clean(&self) {
        let out = run_git(&self.root, &["fsck", "--strict", "--no-progress"]);
        assert!(
            out.status.success() && out.stdout.is_empty(),
            "git fsck: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

fn committed(outcome: CommitOutcome) -> lockstep::source::git::CommitInfo {
    match outcome {
        CommitOutcome::Committed(info) => info,
        CommitOutcome::Unchanged => panic!("expected a commit, got Unchanged"),
    }
}

#[test]
fn read_at_rev_reads_the_commit_not_the_work_tree() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "image: nginx:1\n");
    repo.write("lockstep.lock", "generation = 1\n");
    let first = repo.commit_all("first: nginx 1\n\nbody text");
    repo.write("app.yaml", "image: nginx:2\n");
    repo.commit_all("second");
    repo.write("app.yaml", "image: nginx:3 (uncommitted)\n");
    repo.write("new.yaml", "not committed\n");

    let (old, info) = read_at_rev(&repo.root, "HEAD~1").unwrap();
    assert_eq!(text(&old.files["app.yaml"]), "image: nginx:1\n");
    assert_eq!(old.lockfile(), Some(&b"generation = 1\n"[..]));
    assert!(!old.files.contains_key("new.yaml"));
    assert_eq!(info.id, first);
    assert_eq!(info.summary, "first: nginx 1");

    let (head, info) = read_at_rev(&repo.root, "HEAD").unwrap();
    assert_eq!(text(&head.files["app.yaml"]), "image: nginx:2\n");
    assert_eq!(info.summary, "second");

    let work = read_dir(&repo.root).unwrap();
    assert_eq!(
        text(&work.files["app.yaml"]),
        "image: nginx:3 (uncommitted)\n"
    );
    assert!(work.files.contains_key("new.yaml"));
}

#[test]
fn read_at_rev_reads_only_the_subdirectory() {
    let repo = TestRepo::new();
    repo.write("deploy/prod/app.yaml", "prod\n");
    repo.write("deploy/prod/sub/db.yml", "db\n");
    repo.write("deploy/prod/lockstep.lock", "lock\n");
    repo.write("deploy/prod/lockstep.lock.ci.sig", "sig\n");
    repo.write("deploy/prod/.hidden/x.yaml", "hidden\n");
    repo.write("deploy/prod/notes.md", "bound, not parsed\n");
    repo.write("deploy/staging/app.yaml", "staging\n");
    repo.write("top.yaml", "top\n");
    repo.commit_all("layout");

    let dir = repo.root.join("deploy/prod");
    let (files, _) = read_at_rev(&dir, "HEAD").unwrap();
    let paths: Vec<&str> = files.files.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            ".hidden/x.yaml",
            "app.yaml",
            "lockstep.lock",
            "lockstep.lock.ci.sig",
            "notes.md",
            "sub/db.yml"
        ]
    );
    assert_eq!(
        files.signatures().collect::<Vec<_>>(),
        [("ci", &b"sig\n"[..])]
    );
    // The same directory read from the work tree gives the same files.
    assert_eq!(read_dir(&dir).unwrap(), files);
}

#[test]
fn a_directory_missing_from_the_commit_is_a_clear_error() {
    let repo = TestRepo::new();
    repo.write("old.yaml", "x\n");
    repo.commit_all("before the directory existed");
    repo.write("deploy/app.yaml", "y\n");
    repo.commit_all("add deploy");

    let dir = repo.root.join("deploy");
    assert!(read_at_rev(&dir, "HEAD").is_ok());
    let err = read_at_rev(&dir, "HEAD~1").unwrap_err();
    assert!(matches!(err, GitError::DirNotInCommit { .. }), "{err}");
    assert!(err.to_string().contains("deploy"), "{err}");
}

#[test]
fn revisions_by_tag_branch_and_abbreviated_id() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "v1\n");
    let v1 = repo.commit_all("v1");
    repo.git(&["tag", "v1"]);
    repo.write("app.yaml", "v2\n");
    let v2 = repo.commit_all("v2");
    repo.git(&["tag", "-a", "v2", "-m", "annotated tag"]);
    repo.write("app.yaml", "v3\n");
    repo.commit_all("v3");

    let read = |rev: &str| {
        let (files, info) = read_at_rev(&repo.root, rev).unwrap();
        (text(&files.files["app.yaml"]).to_owned(), info.id)
    };
    assert_eq!(read("v1"), ("v1\n".to_owned(), v1.clone()));
    assert_eq!(
        read("v2"),
        ("v2\n".to_owned(), v2.clone()),
        "an annotated tag peels to its commit"
    );
    assert_eq!(read(&v1[..8]), ("v1\n".to_owned(), v1));
    assert_eq!(read("main").0, "v3\n");
    assert_eq!(read("main~1").1, v2);
}

#[test]
fn an_unknown_revision_is_a_clear_error() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "x\n");
    repo.commit_all("one");

    let err = read_at_rev(&repo.root, "no-such-branch").unwrap_err();
    assert!(matches!(err, GitError::UnknownRev { .. }), "{err}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");

    let err = read_at_rev(&repo.root, "HEAD:app.yaml").unwrap_err();
    assert!(matches!(err, GitError::NotACommit { .. }), "{err}");

    let outside = tempfile::tempdir().unwrap();
    let err = read_at_rev(outside.path(), "HEAD").unwrap_err();
    assert!(matches!(err, GitError::Discover { .. }), "{err}");
}

#[test]
fn symlinks_and_submodules_in_the_commit_are_refused_with_their_path() {
    let repo = TestRepo::new();
    repo.write("deploy/app.yaml", "x\n");
    std::os::unix::fs::symlink("../elsewhere", repo.root.join("deploy/linked")).unwrap();
    let first = repo.commit_all("symlink");
    let err = read_at_rev(&repo.root.join("deploy"), "HEAD").unwrap_err();
    assert!(matches!(err, GitError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("deploy/linked"), "{err}");
    // The work tree refuses it too.
    let err = read_dir(&repo.root.join("deploy")).unwrap_err();
    assert!(matches!(err, SourceError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("linked"), "{err}");

    repo.git(&["rm", "-q", "deploy/linked"]);
    let gitlink = format!("160000,{first},deploy/vendored");
    repo.git(&["update-index", "--add", "--cacheinfo", &gitlink]);
    repo.git(&["commit", "-q", "-m", "submodule"]);
    let err = read_at_rev(&repo.root.join("deploy"), "HEAD").unwrap_err();
    assert!(matches!(err, GitError::Submodule { .. }), "{err}");
    assert!(err.to_string().contains("deploy/vendored"), "{err}");
}

#[test]
fn read_at_rev_works_in_a_bare_repository() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "x\n");
    let head = repo.commit_all("one");
    let bare = repo._tmp.path().join("bare.git");
    git(
        repo._tmp.path(),
        &["clone", "-q", "--bare", "repo", "bare.git"],
    );
    let (files, info) = read_at_rev(&bare, "main").unwrap();
    assert_eq!(text(&files.files["app.yaml"]), "x\n");
    assert_eq!(info.id, head);
}

#[test]
fn commit_takes_only_the_named_paths() {
    let repo = TestRepo::new();
    repo.write("deploy/app.yaml", "image: nginx:1\n");
    repo.write("deploy/other.yaml", "image: redis:1\n");
    repo.write("deploy/lockstep.lock.old.sig", "old signature\n");
    repo.write("README.md", "readme\n");
    let before = repo.commit_all("initial");

    repo.write("deploy/app.yaml", "image: nginx:1@sha256:abc\n");
    repo.write("deploy/lockstep.lock", "generation = 1\n");
    repo.write("deploy/lockstep.lock.ci.sig", "signature\n");
    fs::remove_file(repo.root.join("deploy/lockstep.lock.old.sig")).unwrap();
    repo.write(
        "deploy/other.yaml",
        "image: redis:2 (user's unrelated edit)\n",
    );
    repo.write("README.md", "readme, edited\n");

    let dir = repo.root.join("deploy");
    let paths = ["app.yaml", "lockstep.lock", "lockstep.lock.ci.sig"].map(String::from);
    let info = committed(
        commit(
            &dir,
            &paths,
            &["lockstep.lock.old.sig".into()],
            "lock: pin images",
        )
        .unwrap(),
    );

    assert_eq!(info.id, repo.head());
    assert_eq!(info.summary, "lock: pin images");
    assert_eq!(repo.git(&["rev-parse", "HEAD~1"]).trim(), before);
    assert_eq!(
        repo.git(&["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/main"
    );
    let changed = repo.git(&["show", "--name-status", "--format=", "HEAD"]);
    assert_eq!(
        changed.lines().collect::<Vec<_>>(),
        [
            "M\tdeploy/app.yaml",
            "A\tdeploy/lockstep.lock",
            "A\tdeploy/lockstep.lock.ci.sig",
            "D\tdeploy/lockstep.lock.old.sig",
        ]
    );
    assert_eq!(
        repo.git(&["show", "HEAD:deploy/app.yaml"]),
        "image: nginx:1@sha256:abc\n"
    );
    let who = repo.git(&["log", "-1", "--format=%an <%ae>|%cn <%ce>|%B"]);
    assert_eq!(
        who,
        format!(
            "{AUTHOR_NAME} <{AUTHOR_EMAIL}>|{AUTHOR_NAME} <{AUTHOR_EMAIL}>|lock: pin images\n\n"
        )
    );

    // Unrelated edits stay modified and uncommitted; the committed paths are clean.
    assert_eq!(repo.status(), [" M README.md", " M deploy/other.yaml"]);
    assert_eq!(repo.git(&["diff", "--cached", "--name-only"]), "");
    repo.fsck_clean();

    // The user's next commit builds on ours. It touches only the top directory, so git
    // reuses its cached tree for deploy/ from the index: a stale cache would silently revert
    // the pinned manifest.
    repo.git(&["add", "README.md"]);
    repo.git(&["commit", "-q", "-m", "user commit"]);
    assert_eq!(
        repo.git(&["show", "HEAD:deploy/app.yaml"]),
        "image: nginx:1@sha256:abc\n"
    );
    assert_eq!(repo.git(&["show", "HEAD:README.md"]), "readme, edited\n");
    assert_eq!(repo.status(), [" M deploy/other.yaml"]);
    repo.fsck_clean();
}

#[test]
fn committing_what_head_already_holds_makes_no_commit() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "same\n");
    let head = repo.commit_all("one");
    let outcome = commit(&repo.root, &["app.yaml".into()], &[], "lock").unwrap();
    assert_eq!(outcome, CommitOutcome::Unchanged);
    assert_eq!(repo.head(), head);
    // Removing a file that is not in HEAD changes nothing either.
    let outcome = commit(&repo.root, &[], &["lockstep.lock.gone.sig".into()], "lock").unwrap();
    assert_eq!(outcome, CommitOutcome::Unchanged);
    assert_eq!(repo.head(), head);
}

#[test]
fn the_first_commit_on_an_unborn_branch() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "first\n");
    repo.write("unrelated.yaml", "left alone\n");
    let info = committed(commit(&repo.root, &["app.yaml".into()], &[], "first lock").unwrap());

    assert_eq!(info.id, repo.head());
    assert_eq!(repo.git(&["rev-list", "--count", "HEAD"]).trim(), "1");
    assert_eq!(
        repo.git(&["log", "-1", "--format=%P"]).trim(),
        "",
        "a root commit"
    );
    assert_eq!(repo.git(&["ls-tree", "--name-only", "HEAD"]), "app.yaml\n");
    assert_eq!(repo.status(), ["?? unrelated.yaml"]);
    repo.fsck_clean();
}

#[test]
fn a_detached_head_is_refused() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "one\n");
    let head = repo.commit_all("one");
    repo.git(&["checkout", "-q", "--detach"]);
    repo.write("app.yaml", "two\n");
    let err = commit(&repo.root, &["app.yaml".into()], &[], "lock").unwrap_err();
    assert!(matches!(err, GitError::DetachedHead), "{err}");
    assert!(
        err.to_string()
            .contains("HEAD is detached; check out a branch"),
        "{err}"
    );
    assert_eq!(repo.head(), head);
    assert_eq!(repo.status(), [" M app.yaml"]);
}

#[test]
fn an_index_with_conflicts_is_refused() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "base\n");
    repo.commit_all("base");
    repo.git(&["checkout", "-q", "-b", "topic"]);
    repo.write("app.yaml", "topic\n");
    repo.commit_all("topic");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("app.yaml", "main\n");
    let head = repo.commit_all("main");
    let merge = run_git(&repo.root, &["merge", "-q", "topic"]);
    assert!(!merge.status.success(), "the merge must conflict");

    repo.write("lockstep.lock", "generation = 1\n");
    let err = commit(&repo.root, &["lockstep.lock".into()], &[], "lock").unwrap_err();
    assert!(matches!(err, GitError::Conflicts { .. }), "{err}");
    assert!(err.to_string().contains("app.yaml"), "{err}");
    assert_eq!(repo.head(), head);

    // Resolved but not concluded: still not a plain commit's business.
    repo.write("app.yaml", "resolved\n");
    repo.git(&["add", "app.yaml"]);
    let err = commit(&repo.root, &["lockstep.lock".into()], &[], "lock").unwrap_err();
    assert!(
        matches!(err, GitError::OperationInProgress { operation: "merge" }),
        "{err}"
    );
    assert_eq!(repo.head(), head);
}

#[test]
fn a_held_index_lock_is_a_clear_error() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "one\n");
    let head = repo.commit_all("one");
    repo.write("app.yaml", "two\n");
    fs::write(repo.root.join(".git/index.lock"), "").unwrap();
    let err = commit(&repo.root, &["app.yaml".into()], &[], "lock").unwrap_err();
    assert!(matches!(err, GitError::IndexLocked { .. }), "{err}");
    assert!(err.to_string().contains("index.lock"), "{err}");
    assert_eq!(repo.head(), head);
    assert!(
        repo.root.join(".git/index.lock").exists(),
        "someone else's lock is left alone"
    );
}

#[test]
fn bytes_that_git_filters_would_change_are_refused() {
    let repo = TestRepo::new();
    repo.write(".gitattributes", "*.yaml text\n");
    repo.write("app.yaml", "one\n");
    let head = repo.commit_all("one");
    repo.write("app.yaml", "crlf\r\nline ends\r\n");
    let err = commit(&repo.root, &["app.yaml".into()], &[], "lock").unwrap_err();
    assert!(matches!(err, GitError::FilterChangesBytes { .. }), "{err}");
    assert!(err.to_string().contains("app.yaml"), "{err}");
    assert_eq!(repo.head(), head);

    // Without the attribute, CRLF bytes are committed exactly.
    repo.write(".gitattributes", "");
    repo.commit_all("no text conversion");
    repo.write("app.yaml", "crlf\r\nkept\r\n");
    committed(commit(&repo.root, &["app.yaml".into()], &[], "lock").unwrap());
    let (files, _) = read_at_rev(&repo.root, "HEAD").unwrap();
    assert_eq!(files.files["app.yaml"], b"crlf\r\nkept\r\n");
}

#[test]
fn paths_outside_the_inputs_are_refused() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "x\n");
    repo.commit_all("one");
    for bad in [
        "../escape.yaml",
        "README.md",
        ".git/config.yaml",
        "sub/lockstep.lock",
    ] {
        let err = commit(&repo.root, &[bad.into()], &[], "lock").unwrap_err();
        assert!(matches!(err, GitError::InvalidPath { .. }), "{bad}: {err}");
    }
    let err = commit(&repo.root, &["missing.yaml".into()], &[], "lock").unwrap_err();
    assert!(err.to_string().contains("missing.yaml"), "{err}");

    std::os::unix::fs::symlink("app.yaml", repo.root.join("linked.yaml")).unwrap();
    let err = commit(&repo.root, &["linked.yaml".into()], &[], "lock").unwrap_err();
    assert!(matches!(err, GitError::Symlink { .. }), "{err}");
    assert!(err.to_string().contains("linked.yaml"), "{err}");
}

#[test]
fn written_files_commit_cleanly_and_leave_no_temporary_files() {
    let repo = TestRepo::new();
    repo.write("deploy/app.yaml", "old\n");
    repo.commit_all("one");
    let dir = repo.root.join("deploy");
    let writes = vec![
        ("app.yaml".to_owned(), b"new\n".to_vec()),
        ("lockstep.lock".to_owned(), b"generation = 1\n".to_vec()),
    ];
    write_files(&dir, &writes, &[]).unwrap();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["app.yaml", "lockstep.lock"]);

    let paths: Vec<String> = writes.iter().map(|(path, _)| path.clone()).collect();
    committed(commit(&dir, &paths, &[], "lock").unwrap());
    assert!(repo.status().is_empty(), "{:?}", repo.status());
    assert_eq!(repo.read("deploy/app.yaml"), "new\n");
    let (files, _) = read_at_rev(&dir, "HEAD").unwrap();
    assert_eq!(read_dir(&dir).unwrap(), files);
}

/// Env var naming the repository for [`commit_in_child_process`].
const CHILD_REPO: &str = "LOCKSTEP_TEST_CHILD_REPO";

/// Run by [`identity_from_the_environment`] in a child process, because the environment that
/// gix reads (GIT_AUTHOR_NAME, GIT_CONFIG_GLOBAL) is per process and tests run in parallel.
#[test]
#[ignore = "run in a child process by identity_from_the_environment"]
fn commit_in_child_process() {
    let Some(repo) = std::env::var_os(CHILD_REPO) else {
        return;
    };
    match commit(Path::new(&repo), &["app.yaml".into()], &[], "child commit") {
        Ok(outcome) => println!("CHILD-RESULT ok {outcome:?}"),
        Err(err) => println!("CHILD-RESULT err {err}"),
    }
}

fn commit_in_child(repo: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "git::commit_in_child_process",
        "--exact",
        "--ignored",
        "--nocapture",
    ])
    .env(CHILD_REPO, repo)
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env_remove("EMAIL");
    for var in ["AUTHOR", "COMMITTER"] {
        for field in ["NAME", "EMAIL", "DATE"] {
            cmd.env_remove(format!("GIT_{var}_{field}"));
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("CHILD-RESULT"))
        .unwrap_or_else(|| {
            panic!(
                "no result from the child: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.to_owned()
}

#[test]
fn identity_from_the_environment() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "one\n");
    repo.commit_all("one");

    repo.write("app.yaml", "two\n");
    let result = commit_in_child(
        &repo.root,
        &[
            ("GIT_AUTHOR_NAME", "Env Author"),
            ("GIT_AUTHOR_EMAIL", "env-author@example.com"),
            ("GIT_COMMITTER_NAME", "Env Committer"),
            ("GIT_AUTHOR_DATE", "2001-02-03T04:05:06Z"),
        ],
    );
    assert!(result.starts_with("CHILD-RESULT ok Committed"), "{result}");
    let log = repo.git(&["log", "-1", "--format=%an <%ae>|%cn <%ce>|%aI"]);
    assert_eq!(
        log.trim(),
        format!(
            "Env Author <env-author@example.com>|Env Committer <{AUTHOR_EMAIL}>|2001-02-03T04:05:06+00:00"
        )
    );

    // No identity anywhere: a clear error, and no commit.
    repo.git(&["config", "--unset", "user.name"]);
    repo.git(&["config", "--unset", "user.email"]);
    let head = repo.head();
    repo.write("app.yaml", "three\n");
    let result = commit_in_child(&repo.root, &[]);
    assert!(result.contains("no Git author identity"), "{result}");
    assert_eq!(repo.head(), head);
}

/// The refusal and the path of a read error that must be a refused input.
fn refusal_of(err: GitError) -> (lockstep::source::Refusal, String) {
    match err {
        GitError::Refused(lockstep::source::RefusedInput { refusal, path }) => (refusal, path),
        other => panic!("expected a refused input, got {other}"),
    }
}

#[test]
fn a_hidden_yaml_file_is_read_as_a_manifest() {
    let repo = TestRepo::new();
    repo.write("deploy/app.yaml", "kind: Pod\n");
    repo.write("deploy/.evil.yaml", "kind: Pod\n");
    repo.write("deploy/.hidden/x.YML", "kind: Pod\n");
    repo.write("deploy/.gitignore", "*.bak\n");
    repo.commit_all("hidden files");
    let dir = repo.root.join("deploy");
    let (files, _) = read_at_rev(&dir, "HEAD").unwrap();
    let manifests: Vec<_> = files.manifests().map(|(path, _)| path).collect();
    assert_eq!(manifests, [".evil.yaml", ".hidden/x.YML", "app.yaml"]);
    let bound: Vec<_> = files.bound().map(|(path, _)| path).collect();
    assert_eq!(
        bound,
        [".evil.yaml", ".gitignore", ".hidden/x.YML", "app.yaml"]
    );
    // The work tree reads the same set (the repository's own `.git` is never read).
    assert_eq!(read_dir(&dir).unwrap(), files);
}

#[test]
fn a_json_manifest_is_refused_with_a_hint() {
    let repo = TestRepo::new();
    repo.write("deploy/app.yaml", "kind: Pod\n");
    repo.write("deploy/extra/pod.json", "{\"kind\": \"Pod\"}\n");
    repo.commit_all("json");
    let err = read_at_rev(&repo.root.join("deploy"), "HEAD").unwrap_err();
    let message = err.to_string();
    assert_eq!(
        refusal_of(err),
        (
            lockstep::source::Refusal::Json,
            "deploy/extra/pod.json".to_owned()
        )
    );
    assert!(message.contains("convert it to YAML"), "{message}");
}

#[test]
fn a_kustomization_is_refused_with_a_hint() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "kind: Pod\n");
    repo.write("kustomization.yml", "resources: [app.yaml]\n");
    repo.commit_all("kustomize");
    let err = read_at_rev(&repo.root, "HEAD").unwrap_err();
    let message = err.to_string();
    assert_eq!(
        refusal_of(err),
        (
            lockstep::source::Refusal::Kustomization,
            "kustomization.yml".to_owned()
        )
    );
    assert!(message.contains("kustomize"), "{message}");
    assert!(
        message.contains("render it and lock the output"),
        "{message}"
    );
}

#[test]
fn a_file_name_with_a_newline_is_refused() {
    let repo = TestRepo::new();
    repo.write("app.yaml", "kind: Pod\n");
    repo.write("evil\n# Source: app.yaml", "kind: Pod\n");
    repo.commit_all("newline");
    let err = read_at_rev(&repo.root, "HEAD").unwrap_err();
    let message = err.to_string();
    assert_eq!(
        refusal_of(err),
        (
            lockstep::source::Refusal::ControlCharacter,
            "evil\n# Source: app.yaml".to_owned()
        )
    );
    assert!(
        message.starts_with(r#""evil\n# Source: app.yaml""#),
        "{message}"
    );
}

/// Write `tree` into `repo`'s object database.
fn write_tree(repo: &gix::Repository, entries: Vec<(String, gix::ObjectId)>) -> gix::ObjectId {
    let tree = gix::objs::Tree {
        entries: entries
            .into_iter()
            .map(|(name, oid)| gix::objs::tree::Entry {
                mode: gix::objs::tree::EntryKind::Tree.into(),
                filename: name.into(),
                oid,
            })
            .collect(),
    };
    repo.write_object(&tree).unwrap().detach()
}

/// Commit the tree `tree` (with `app.yaml` beside it) on HEAD's branch, with plumbing.
fn commit_tree_with_app(repo: &TestRepo, entries: Vec<(String, gix::ObjectId)>) -> String {
    let gix_repo = gix::open(&repo.root).unwrap();
    let blob = gix_repo.write_blob(b"kind: Pod\n").unwrap().detach();
    let mut tree = gix::objs::Tree {
        entries: vec![gix::objs::tree::Entry {
            mode: gix::objs::tree::EntryKind::Blob.into(),
            filename: "app.yaml".into(),
            oid: blob,
        }],
    };
    for (name, oid) in entries {
        tree.entries.push(gix::objs::tree::Entry {
            mode: gix::objs::tree::EntryKind::Tree.into(),
            filename: name.into(),
            oid,
        });
    }
    tree.entries.sort();
    let tree = gix_repo.write_object(&tree).unwrap().detach().to_string();
    let mut args = vec!["commit-tree", tree.as_str(), "-m", "crafted"];
    let parent = run_git(&repo.root, &["rev-parse", "-q", "--verify", "HEAD"]);
    let parent = String::from_utf8(parent.stdout).unwrap();
    let parent = parent.trim();
    if !parent.is_empty() {
        args.extend(["-p", parent]);
    }
    let commit = repo.git(&args).trim().to_owned();
    repo.git(&["update-ref", "refs/heads/main", &commit]);
    commit
}

#[test]
fn a_20000_deep_directory_chain_is_refused_not_a_stack_overflow() {
    use lockstep::source::{LimitError, MAX_DEPTH, git::read_history};
    let repo = TestRepo::new();
    repo.write("app.yaml", "kind: Pod\n");
    repo.commit_all("before");
    // d/d/d/... 20 000 levels, written bottom-up as tree objects (git itself would need
    // 20 000 nested directories in the work tree).
    let gix_repo = gix::open(&repo.root).unwrap();
    let mut chain = write_tree(&gix_repo, Vec::new());
    for _ in 0..20_000 {
        chain = write_tree(&gix_repo, vec![("d".to_owned(), chain)]);
    }
    let deep = commit_tree_with_app(&repo, vec![("d".to_owned(), chain)]);

    let err = read_at_rev(&repo.root, "HEAD").unwrap_err();
    let GitError::Limit(LimitError::TooDeep { path, limit }) = &err else {
        panic!("expected TooDeep, got {err}");
    };
    assert_eq!(*limit, MAX_DEPTH);
    assert_eq!(*path, vec!["d"; MAX_DEPTH + 1].join("/"));

    // The history (audit) stays readable: the crafted commit is reported on its own, the
    // commits before and after it are read.
    // The index still holds "before": committing it drops the chain.
    repo.write("after.yaml", "kind: Pod\n");
    repo.git(&["add", "after.yaml"]);
    repo.git(&["commit", "-q", "-m", "after"]);
    let history = read_history(&repo.root, None, false).unwrap();
    let summaries: Vec<_> = history.iter().map(|c| c.info.summary.as_str()).collect();
    assert_eq!(summaries, ["before", "crafted", "after"]);
    assert_eq!(history[1].info.id, deep);
    assert!(
        matches!(
            &history[1].files,
            Err(GitError::Limit(LimitError::TooDeep { .. }))
        ),
        "{:?}",
        history[1].files
    );
    assert!(history[0].files.is_ok() && history[2].files.is_ok());
}

#[test]
fn directory_entries_count_against_the_entry_limit() {
    use lockstep::source::{LimitError, MAX_ENTRIES};
    let repo = TestRepo::new();
    let gix_repo = gix::open(&repo.root).unwrap();
    let empty = write_tree(&gix_repo, Vec::new());
    // Empty directories hold no input file, so only the entry limit stops them.
    let mut names: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("{i}")).collect();
    names.sort();
    let many = write_tree(
        &gix_repo,
        names.into_iter().map(|name| (name, empty)).collect(),
    );
    commit_tree_with_app(&repo, vec![("many".to_owned(), many)]);
    let err = read_at_rev(&repo.root, "HEAD").unwrap_err();
    let GitError::Limit(LimitError::TooManyEntries { path, limit }) = &err else {
        panic!("expected TooManyEntries, got {err}");
    };
    assert_eq!((path.as_str(), *limit), ("many", MAX_ENTRIES));
}

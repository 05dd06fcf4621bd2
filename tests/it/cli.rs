//! End to end through the `lockstep` binary, as a user and a CI pipeline run it: a real
//! registry, real Git repositories, real `ssh-keygen`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{RegistryOptions, TestRegistry};

const BIN: &str = env!("CARGO_BIN_EXE_lockstep");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/manifests");

/// The images fixtures/manifests refers to (see its README).
pub const FIXTURE_IMAGES: &[(&str, &str)] = &[
    ("shop/api", "1.4"),
    ("shop/web", "2.0"),
    ("shop/worker", "1.0"),
    ("shop/migrate", "1.0"),
    ("tools/debug", "latest"),
    ("base/busybox", "1.36"),
    ("shop/rollout", "3.1"),
    ("shop/cr", "0.9"),
];

/// A sample project: a registry with the fixture images, a Git repository holding the
/// fixture manifests (REGISTRY replaced by the registry's address), and a signing key.
pub struct Project {
    pub registry: TestRegistry,
    pub _tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub dir: PathBuf,
    pub key: PathBuf,
    pub allowed_signers: PathBuf,
}

pub fn push_fixture_images(registry: &TestRegistry, seed: &str) {
    for (i, (repo, tag)) in FIXTURE_IMAGES.iter().enumerate() {
        let seed = format!("{seed}-{repo}-{tag}");
        match i {
            // One multi-platform OCI index and one Docker manifest list among them.
            0 => {
                registry.push_index(repo, tag, seed.as_bytes());
            }
            1 => {
                registry.push_docker_list(repo, tag, seed.as_bytes());
            }
            _ => {
                registry.push_image(repo, tag, seed.as_bytes());
            }
        }
    }
}

fn copy_tree(from: &Path, to: &Path, registry: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, registry);
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            let replaced = String::from_utf8_lossy(&bytes).replace("REGISTRY", registry);
            std::fs::write(target, replaced).unwrap();
        }
    }
}

pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

impl Project {
    pub fn new() -> Project {
        Project::with_registry(RegistryOptions::default())
    }

    pub fn with_registry(options: RegistryOptions) -> Project {
        let registry = TestRegistry::start(options);
        push_fixture_images(&registry, "v1");
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let dir = repo.join("deploy");
        copy_tree(Path::new(FIXTURES), &dir, &registry.host());
        init_repo(&repo);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "manifests"]);
        let (key, trust_line) = ci_key(tmp.path());
        let allowed_signers = tmp.path().join("allowed_signers");
        std::fs::write(&allowed_signers, trust_line).unwrap();
        Project {
            registry,
            _tmp: tmp,
            repo,
            dir,
            key,
            allowed_signers,
        }
    }

    pub fn lock(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "lock",
            self.dir.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, &[("SOURCE_DATE_EPOCH", "1700000000")])
    }

    pub fn verify(&self, extra: &[&str]) -> Output {
        self.checked("verify", extra)
    }

    pub fn render(&self, extra: &[&str]) -> Output {
        self.checked("render", extra)
    }

    /// `verify` or `render` of the project's directory against its allowed_signers.
    fn checked(&self, command: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            command,
            self.dir.to_str().unwrap(),
            "--allowed-signers",
            self.allowed_signers.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, &[])
    }

    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(&self.dir)
    }
}

/// `git init` on branch main with the CI identity.
pub fn init_repo(repo: &Path) {
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["config", "user.name", "CI Bot"]);
    git(repo, &["config", "user.email", "ci@example.com"]);
}

/// A signing key `ci@example.com` made by `lockstep keygen` in `dir`: its path and the
/// allowed_signers line that trusts it.
pub fn ci_key(dir: &Path) -> (PathBuf, String) {
    keygen(dir, "ci_key", "ci@example.com")
}

/// `lockstep keygen` into `dir/name` with `comment`: the key's path and its allowed_signers
/// line.
pub fn keygen(dir: &Path, name: &str, comment: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = run(
        &["keygen", "--output", key.to_str().unwrap(), "-C", comment],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    (key, stdout(&out))
}

pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("LOCKSTEP_SIGNING_KEY")
        .env_remove("LOCKSTEP_SIGNING_KEY_FILE")
        .env_remove("LOCKSTEP_ALLOWED_SIGNERS")
        // scripts/test exports the renderers; tests that need them pass them by flag.
        .env_remove("LOCKSTEP_KUSTOMIZE")
        .env_remove("LOCKSTEP_HELM")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn lockfile_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("lockstep.lock")).unwrap()
}

pub fn digest_in_lock(dir: &Path, reference_suffix: &str) -> String {
    let lock: toml::Table = toml::from_str(&lockfile_text(dir)).unwrap();
    let images = lock["image"].as_array().unwrap();
    let entry = images
        .iter()
        .find(|i| i["reference"].as_str().unwrap().ends_with(reference_suffix))
        .unwrap_or_else(|| panic!("{reference_suffix} not in lockfile"));
    entry["digest"].as_str().unwrap().to_owned()
}

#[test]
fn lock_commit_then_verify_work_tree_and_revision() {
    let p = Project::new();
    let out = p.lock(&["--commit", "--message", "pin images"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Every image scalar is pinned, and the lockfile lists all eight references.
    let api = std::fs::read_to_string(p.dir.join("apps/api.yaml")).unwrap_or_default();
    let lock = lockfile_text(&p.dir);
    assert!(lock.contains("generation = 1"), "{lock}");
    for (repo, tag) in FIXTURE_IMAGES {
        assert!(
            lock.contains(&format!("{}/{repo}:{tag}\"", p.registry.host())),
            "{repo}:{tag} missing:\n{lock}"
        );
    }
    let _ = api;
    // The commit holds the pinned manifests, lockfile and signature; the work tree is clean.
    assert_eq!(
        git(&p.repo, &["log", "-1", "--format=%s"]).trim(),
        "pin images"
    );
    let changed = git(&p.repo, &["show", "--name-only", "--format=", "HEAD"]);
    assert!(changed.contains("deploy/lockstep.lock\n"), "{changed}");
    assert!(
        changed.contains("deploy/lockstep.lock.ci-example.com.sig\n"),
        "{changed}"
    );
    assert_eq!(git(&p.repo, &["status", "--porcelain"]), "");

    let out = p.verify(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("generation 1"), "{}", stdout(&out));
    let out = p.verify(&["--rev", "HEAD"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The commit before the lock has no lockfile: verification fails, exit 1.
    let out = p.verify(&["--rev", "HEAD~1"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no lockstep.lock"),
        "{}",
        stderr(&out)
    );

    // OpenSSH agrees with our signature.
    let principal = std::fs::read_to_string(&p.allowed_signers).unwrap();
    let principal = principal.split_whitespace().next().unwrap().to_owned();
    let lock_file = std::fs::File::open(p.dir.join("lockstep.lock")).unwrap();
    let ssh = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(&p.allowed_signers)
        .args(["-I", &principal, "-n", "lockstep", "-s"])
        .arg(p.dir.join("lockstep.lock.ci-example.com.sig"))
        .stdin(lock_file)
        .output()
        .unwrap();
    assert!(
        ssh.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&ssh.stderr)
    );
}

#[test]
fn repushed_tag_is_caught_and_old_commit_still_renders_old_digest() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&["--commit"])), 0);
    let host = p.registry.host();
    let old = digest_in_lock(&p.dir, "/shop/worker:1.0");

    // Same tag, new content: the registry now answers differently.
    let new = p.registry.push_image("shop/worker", "1.0", b"rebuilt");
    assert_ne!(old, new.to_string());

    let before = p.snapshot();
    let out = p.lock(&["--check"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("shop/worker:1.0"), "{}", stderr(&out));
    assert_eq!(p.snapshot(), before, "--check must write nothing");

    let out = p.lock(&["--commit"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(lockfile_text(&p.dir).contains("generation = 2"));
    assert_eq!(digest_in_lock(&p.dir, "/shop/worker:1.0"), new.to_string());
    let worker = std::fs::read_to_string(p.dir.join("apps/worker.yaml")).unwrap_or_default();
    let _ = worker;

    // The previous commit still verifies, and renders exactly the old digest.
    let out = p.verify(&["--rev", "HEAD~1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let render = run(
        &[
            "render",
            p.dir.to_str().unwrap(),
            "--rev",
            "HEAD~1",
            "--allowed-signers",
            p.allowed_signers.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&render), 0, "{}", stderr(&render));
    let yaml = stdout(&render);
    assert!(
        yaml.contains(&format!("{host}/shop/worker:1.0@{old}")),
        "{yaml}"
    );
    assert!(!yaml.contains(&new.to_string()));
    let out = p.verify(&["--rev", "HEAD"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn second_lock_is_a_no_op_and_bytes_are_deterministic() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let first = p.snapshot();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    assert_eq!(p.snapshot(), first, "an up-to-date lock writes nothing");
    let out = p.lock(&["--check"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The same inputs elsewhere give the same lockfile bytes.
    let other = tempfile::tempdir().unwrap();
    copy_tree(Path::new(FIXTURES), other.path(), &p.registry.host());
    let out = run(
        &[
            "lock",
            other.path().to_str().unwrap(),
            "--key",
            p.key.to_str().unwrap(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(lockfile_text(other.path()), lockfile_text(&p.dir));
}

#[test]
fn deleted_tag_fails_and_writes_nothing() {
    let p = Project::new();
    let digest = p
        .registry
        .push_image("shop/migrate", "1.0", b"v1-shop/migrate-1.0");
    p.registry.delete_manifest("shop/migrate", &digest);
    let before = p.snapshot();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shop/migrate:1.0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn stopped_registry_fails_and_writes_nothing() {
    let p = Project::new();
    p.registry.stop();
    let before = p.snapshot();
    let out = p.lock(&["--timeout", "2"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&p.registry.host()),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.snapshot(), before);
}

#[test]
fn tampering_and_untrusted_keys_fail_verification_with_reasons() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let lock_path = p.dir.join("lockstep.lock");
    let sig_path = p.dir.join("lockstep.lock.ci-example.com.sig");
    let original_lock = std::fs::read(&lock_path).unwrap();
    let original_sig = std::fs::read(&sig_path).unwrap();

    // A changed lockfile byte: the signature no longer matches.
    let tampered = String::from_utf8(original_lock.clone())
        .unwrap()
        .replace("generation = 1", "generation = 9");
    std::fs::write(&lock_path, tampered).unwrap();
    let out = p.verify(&[]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("lockstep.lock.ci-example.com.sig"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&lock_path, &original_lock).unwrap();

    // A damaged signature.
    let mut sig = original_sig.clone();
    let mid = sig.len() / 2;
    sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
    std::fs::write(&sig_path, &sig).unwrap();
    assert_eq!(code(&p.verify(&[])), 1);
    std::fs::write(&sig_path, &original_sig).unwrap();
    assert_eq!(code(&p.verify(&[])), 0);

    // A manifest edited after signing: the binding names the mismatch.
    let file = p.dir.join("apps/api.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("replicas: 3", "replicas: 30", 1) + "\n",
    )
    .unwrap();
    let out = p.verify(&[]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("not the ones locked")
            && stderr(&out).contains("; changed: apps/api.yaml\n"),
        "{}",
        stderr(&out)
    );
    // A file added and one removed are named too (regression, issue 10: the mismatch named
    // no file).
    std::fs::write(p.dir.join("apps/new.yaml"), "# new\n").unwrap();
    let web = std::fs::read(p.dir.join("apps/web.yaml")).unwrap();
    std::fs::remove_file(p.dir.join("apps/web.yaml")).unwrap();
    let out = p.verify(&[]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out)
            .contains("; changed: apps/api.yaml; added: apps/new.yaml; removed: apps/web.yaml"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(p.dir.join("apps/new.yaml")).unwrap();
    std::fs::write(p.dir.join("apps/web.yaml"), web).unwrap();
    std::fs::write(&file, &text).unwrap();

    // A key nobody trusts.
    let (_, stranger_line) = keygen(p._tmp.path(), "stranger", "stranger");
    let strangers = p._tmp.path().join("strangers");
    std::fs::write(&strangers, stranger_line).unwrap();
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            strangers.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("not a trusted key"),
        "{}",
        stderr(&out)
    );

    // The trusted key, but outside its validity window; --at inside it verifies.
    let line = std::fs::read_to_string(&p.allowed_signers).unwrap();
    let (principal, rest) = line.split_once(' ').unwrap();
    let windowed = p._tmp.path().join("windowed");
    std::fs::write(
        &windowed,
        format!("{principal} valid-after=\"20200101\",valid-before=\"20210101\",{rest}"),
    )
    .unwrap();
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            windowed.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            windowed.to_str().unwrap(),
            "--at",
            "2020-06-01T00:00:00Z",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn signature_made_by_ssh_keygen_verifies() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    // Replace our signature with one made by OpenSSH over the same bytes, with another key.
    std::fs::remove_file(p.dir.join("lockstep.lock.ci-example.com.sig")).unwrap();
    let line = ssh_keygen_sign(p._tmp.path(), &p.dir, "release");
    let trust = p._tmp.path().join("release_signers");
    std::fs::write(&trust, line).unwrap();
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            trust.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("release@example.com"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["lock", tmp.path().to_str().unwrap()], &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    let out = run(
        &[
            "verify",
            tmp.path().to_str().unwrap(),
            "--allowed-signers",
            "/nonexistent",
        ],
        &[],
    );
    assert_eq!(code(&out), 2);
    let out = run(&["frobnicate"], &[]);
    assert_eq!(code(&out), 2);
    // An allowed_signers file far too large to be one is refused before it is read.
    let huge = tmp.path().join("huge_signers");
    std::fs::write(&huge, vec![b'#'; 2 << 20]).unwrap();
    let out = run(
        &[
            "verify",
            tmp.path().to_str().unwrap(),
            "--allowed-signers",
            huge.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("over the limit"), "{}", stderr(&out));
}

#[test]
fn json_error_output_is_machine_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["--json", "lock", tmp.path().to_str().unwrap()], &[]);
    assert_eq!(code(&out), 2);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["class"], "usage");
}

/// Sign `file` with a fresh OpenSSH key as `signer`; returns the allowed_signers line.
fn ssh_keygen_sign(tmp: &Path, dir: &Path, signer: &str) -> String {
    let key = tmp.join(format!("{signer}_key"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", signer, "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "lockstep", "-f"])
        .arg(&key)
        .arg(dir.join("lockstep.lock"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::rename(
        dir.join("lockstep.lock.sig"),
        dir.join(format!("lockstep.lock.{signer}.sig")),
    )
    .unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    format!("{signer}@example.com namespaces=\"lockstep\" {public}")
}

#[test]
fn threshold_counts_distinct_trusted_signers() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let out = p.verify(&["--threshold", "2"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 distinct trusted approval but 2 are required"),
        "{}",
        stderr(&out)
    );
    // A second approver co-signs the same bytes with OpenSSH.
    let line = ssh_keygen_sign(p._tmp.path(), &p.dir, "release");
    let both = p._tmp.path().join("both_signers");
    std::fs::write(
        &both,
        std::fs::read_to_string(&p.allowed_signers).unwrap() + &line,
    )
    .unwrap();
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            both.to_str().unwrap(),
            "--threshold",
            "2",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn unknown_lockfile_version_is_refused_after_its_signature_checks() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let lock_path = p.dir.join("lockstep.lock");
    let text = std::fs::read_to_string(&lock_path)
        .unwrap()
        .replace("version = 1", "version = 2");
    std::fs::write(&lock_path, text).unwrap();
    std::fs::remove_file(p.dir.join("lockstep.lock.ci-example.com.sig")).unwrap();
    // Validly signed, by a trusted key: the refusal is about the format, and says so.
    let line = ssh_keygen_sign(p._tmp.path(), &p.dir, "future");
    let trust = p._tmp.path().join("future_signers");
    std::fs::write(&trust, line).unwrap();
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            trust.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("format version 2"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn key_text_from_the_environment_signs() {
    let p = Project::new();
    let key_text = std::fs::read_to_string(&p.key).unwrap();
    let out = run(
        &["lock", p.dir.to_str().unwrap()],
        &[
            ("LOCKSTEP_SIGNING_KEY", key_text.as_str()),
            ("SOURCE_DATE_EPOCH", "1700000000"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The key never appears in what lockstep prints.
    let secret_line = key_text.lines().nth(1).unwrap();
    assert!(!stdout(&out).contains(secret_line) && !stderr(&out).contains(secret_line));
    assert_eq!(code(&p.verify(&[])), 0);
}

#[test]
fn helm_template_is_refused_and_nothing_is_written() {
    let p = Project::new();
    let malformed = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/malformed");
    let helm = std::fs::read_dir(malformed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| std::fs::read_to_string(f).unwrap().contains("{{"))
        .expect("a Helm template among fixtures/malformed");
    std::fs::copy(&helm, p.dir.join("chart.yaml")).unwrap();
    let before = p.snapshot();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("chart.yaml:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("helm template"), "{}", stderr(&out));
    assert_eq!(p.snapshot(), before);
}

#[test]
fn verify_json_reports_the_signers_and_images() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let out = run(
        &[
            "--json",
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            p.allowed_signers.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["generation"], 1);
    assert_eq!(v["images"].as_array().unwrap().len(), FIXTURE_IMAGES.len());
    assert!(v["signers"][0].as_str().unwrap().contains("ci@example.com"));
}

#[test]
fn lock_over_tls_with_basic_auth_from_docker_config() {
    let options = RegistryOptions {
        auth: Some(("ci".into(), "s3cret".into())),
        tls: true,
        ..RegistryOptions::default()
    };
    let p = Project::with_registry(options);
    let ca = p._tmp.path().join("ca.pem");
    std::fs::write(&ca, p.registry.ca_pem().unwrap()).unwrap();
    let docker = p._tmp.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let (dir, key, ca_path) = (
        p.dir.to_str().unwrap(),
        p.key.to_str().unwrap(),
        ca.to_str().unwrap(),
    );
    let args = [
        "lock",
        dir,
        "--key",
        key,
        "--ca-file",
        ca_path,
        "--timeout",
        "5",
        "--quiet",
    ];
    // No credentials: the registry refuses, and the error says how to log in. Missing
    // credentials are the environment's fault, not the manifests': exit 2.
    std::fs::write(docker.join("config.json"), "{}").unwrap();
    let out = run(&args, &[("DOCKER_CONFIG", docker.to_str().unwrap())]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("docker login"), "{}", stderr(&out));
    // With the credentials docker login would have written, it locks over TLS.
    let auth = crate::harness::base64(b"ci:s3cret", false);
    let config = format!(
        r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
        p.registry.host()
    );
    std::fs::write(docker.join("config.json"), config).unwrap();
    let out = run(&args, &[("DOCKER_CONFIG", docker.to_str().unwrap())]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&p.verify(&[])), 0);
    // Without the CA the registry's certificate is not trusted, and TLS is not given up.
    let out = run(
        &["lock", dir, "--check", "--timeout", "5"],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
}

/// A second key made with `lockstep keygen`, and a trust file naming both it and the
/// project's key.
pub fn second_approver(p: &Project) -> (PathBuf, PathBuf) {
    let (key, line) = keygen(p._tmp.path(), "release_key", "release@example.com");
    let both = p._tmp.path().join("both_signers");
    std::fs::write(
        &both,
        std::fs::read_to_string(&p.allowed_signers).unwrap() + &line,
    )
    .unwrap();
    (key, both)
}

pub fn signature_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sig"))
        .collect()
}

#[test]
fn sign_adds_a_second_approval_without_touching_the_lockfile() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let before = std::fs::read(p.dir.join("lockstep.lock")).unwrap();
    let (key, both) = second_approver(&p);
    let out = run(
        &[
            "sign",
            p.dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--signer",
            "release",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(std::fs::read(p.dir.join("lockstep.lock")).unwrap(), before);
    assert!(p.dir.join("lockstep.lock.release.sig").exists());
    assert_eq!(signature_files(&p.dir).len(), 2);

    let both = both.to_str().unwrap();
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            both,
            "--threshold",
            "2",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Trusting only the first key, the second signature counts for nothing.
    let out = p.verify(&["--threshold", "2"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 distinct trusted approval but 2 are required"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sign_refuses_a_missing_or_unreadable_lockfile() {
    let p = Project::new();
    let key = p.key.to_str().unwrap();
    let dir = p.dir.to_str().unwrap();
    // Nothing to sign: a usage error, exit 2 (see
    // signing_commands_without_a_lockfile_exit_2_and_write_nothing).
    let out = run(&["sign", dir, "--key", key], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no lockstep.lock"),
        "{}",
        stderr(&out)
    );
    // A lockfile that cannot be read is a failed check of it: exit 1.
    std::fs::write(p.dir.join("lockstep.lock"), "not = [a lockfile").unwrap();
    let before = p.snapshot();
    let out = run(&["sign", dir, "--key", key], &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(p.snapshot(), before, "nothing was written");
}

#[test]
fn expired_lockfile_is_refused_saying_when_it_expired() {
    let p = Project::new();
    // Created at SOURCE_DATE_EPOCH 1700000000 = 2023-11-14T22:13:20Z.
    let out = p.lock(&["--expires-in", "30d"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(lockfile_text(&p.dir).contains("2023-12-14T22:13:20Z"));
    let out = p.verify(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the lockfile expired at 2023-12-14T22:13:20Z"),
        "{}",
        stderr(&out)
    );
    let out = p.verify(&["--at", "2023-12-01T00:00:00Z"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("expires 2023-12-14T22:13:20Z"));
    // render refuses it too: the same path.
    let out = run(
        &[
            "render",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            p.allowed_signers.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("expired at"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn refresh_bumps_the_generation_and_keeps_the_digests() {
    let p = Project::new();
    assert_eq!(
        code(&p.lock(&["--expires-in", "1h", "--environment", "prod"])),
        0
    );
    let (key, _) = second_approver(&p);
    let out = run(
        &[
            "sign",
            p.dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = lockfile_text(&p.dir);
    let api = digest_in_lock(&p.dir, "shop/api:1.4");
    assert_eq!(code(&p.verify(&[])), 1, "expired long ago");
    // Offline: refresh never asks the registry.
    p.registry.stop();

    let out = run(
        &[
            "refresh",
            p.dir.to_str().unwrap(),
            "--key",
            p.key.to_str().unwrap(),
            "--expires-in",
            "30d",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = lockfile_text(&p.dir);
    assert!(before.contains("generation = 1"), "{before}");
    assert!(after.contains("generation = 2"), "{after}");
    assert_eq!(digest_in_lock(&p.dir, "shop/api:1.4"), api);
    assert!(after.contains("environment = \"prod\""), "{after}");
    let images = |t: &str| t[t.find("[[image]]").unwrap()..].to_owned();
    assert_eq!(images(&before), images(&after));
    // The co-signature signed the old bytes and is gone.
    assert_eq!(signature_files(&p.dir).len(), 1);
    let out = p.verify(&["--environment", "prod"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn lockfile_for_another_environment_is_refused() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&["--environment", "staging"])), 0);
    let out = p.verify(&["--environment", "prod"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("the lockfile is for environment \"staging\", but \"prod\" is required"),
        "{}",
        stderr(&out)
    );
    assert_eq!(code(&p.verify(&["--environment", "staging"])), 0);
    let out = p.verify(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("environment staging"),
        "{}",
        stdout(&out)
    );
    // A lockfile for staging does not continue into prod: a signer trusted for staging
    // must not move prod's generation. Changing the environment starts a new history.
    let before = p.snapshot();
    let out = p.lock(&["--environment", "prod"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lockstep.lock cannot be continued")
            && stderr(&out).contains("environment \"staging\", but \"prod\" is required")
            && stderr(&out).contains("--new-history"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.snapshot(), before, "nothing written");
    assert_eq!(
        code(&p.lock(&["--environment", "prod", "--new-history"])),
        0
    );
    assert!(lockfile_text(&p.dir).contains("generation = 1"));
    assert_eq!(code(&p.verify(&["--environment", "prod"])), 0);
    // Within one environment the history continues.
    p.registry.push_image("shop/worker", "1.0", b"worker v2");
    assert_eq!(code(&p.lock(&["--environment", "prod"])), 0);
    assert!(lockfile_text(&p.dir).contains("generation = 2"));
    // An unbound lockfile does not satisfy a verifier that requires an environment.
    assert_eq!(code(&p.lock(&[])), 0);
    let out = p.verify(&["--environment", "prod"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no environment"), "{}", stderr(&out));
}

fn check(p: &Project, extra: &[&str]) -> Output {
    let mut args = vec!["check", p.dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args, &[])
}

/// The first platform of the index pinned for `reference_suffix`: (platform, digest).
fn platform_in_lock(dir: &Path, reference_suffix: &str) -> (String, String) {
    let lock: toml::Table = toml::from_str(&lockfile_text(dir)).unwrap();
    let entry = lock["image"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"].as_str().unwrap().ends_with(reference_suffix))
        .unwrap_or_else(|| panic!("{reference_suffix} not in lockfile"));
    let platform = &entry["platform"].as_array().unwrap()[0];
    (
        platform["platform"].as_str().unwrap().to_owned(),
        platform["digest"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn check_confirms_every_pinned_digest_and_names_the_deleted_ones() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let host = p.registry.host();
    let out = check(&p, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("all pinned digests exist"),
        "{}",
        stdout(&out)
    );
    let out = check(&p, &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["ok"], true);
    // Eight entries, plus the platforms of the index and of the manifest list.
    assert!(json["checked"].as_u64().unwrap() > 8, "{json}");

    // Lose one image and one platform of the index.
    let worker = digest_in_lock(&p.dir, "/shop/worker:1.0");
    p.registry
        .delete_manifest("shop/worker", &worker.parse().unwrap());
    let (platform, arm) = platform_in_lock(&p.dir, "/shop/api:1.4");
    p.registry
        .delete_manifest("shop/api", &arm.parse().unwrap());
    let before = p.snapshot();
    let out = check(&p, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "missing: {host}/shop/worker:1.0@{worker} (no recorded copy left)\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "missing: {host}/shop/api:1.4@{arm} (platform {platform} of the index)"
        )),
        "{err}"
    );
    assert_eq!(err.matches("missing: ").count(), 2, "{err}");
    assert_eq!(p.snapshot(), before, "check writes nothing");

    let out = check(&p, &["--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["ok"], false);
    let missing = json["missing"].as_array().unwrap();
    assert_eq!(missing.len(), 2, "{json}");
    assert_eq!(missing[1]["reference"], format!("{host}/shop/worker:1.0"));
    assert_eq!(missing[1]["digest"], worker);
    assert_eq!(missing[0]["platform"], platform);
}

#[test]
fn check_passes_after_a_tag_is_repushed_and_reads_a_revision() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&["--commit"])), 0);
    let old = digest_in_lock(&p.dir, "/shop/worker:1.0");
    let new = p.registry.push_image("shop/worker", "1.0", b"rebuilt");
    assert_ne!(old, new.to_string());
    // The tag moved, but the pinned digest still exists: recoverable, so check passes
    // (lock --check is what notices the moved tag).
    let out = check(&p, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = check(&p, &["--rev", "HEAD"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The commit before the lock has no lockfile: nothing to check, a usage error.
    let out = check(&p, &["--rev", "HEAD~1"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("lockstep lock"), "{}", stderr(&out));
}

#[test]
fn check_against_a_stopped_registry_exits_2() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    p.registry.stop();
    let out = check(&p, &["--timeout", "2", "--concurrency", "4"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&p.registry.host()),
        "{}",
        stderr(&out)
    );
}

/// One decision for "a registry could not be asked", the same in every command: exit 2 (the
/// environment) when no registry could be asked, exit 1 when one answered and the answer is
/// the failure. Regression: `lock` said 1 for an unreachable registry, `check` and `mirror` 2.
#[test]
fn registry_exit_codes_lock_unreachable_is_2_and_an_unknown_tag_is_1() {
    let p = Project::new();
    let api = p.dir.join("apps/api.yaml");
    let original = std::fs::read_to_string(&api).unwrap();
    // An answer that fails: the tag does not exist.
    let host = p.registry.host();
    let missing = original.replacen(
        &format!("image: {host}/shop/api:"),
        &format!("image: {host}/shop/no-such-image:"),
        1,
    );
    assert_ne!(missing, original, "the fixture names {host}/shop/api");
    std::fs::write(&api, &missing).unwrap();
    let before = snapshot(&p.dir);
    let out = p.lock(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no-such-image") && stderr(&out).contains("not found in registry"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&p.dir), before, "nothing written");
    // No answer at all: the registry is down.
    std::fs::write(&api, &original).unwrap();
    p.registry.stop();
    let out = p.lock(&["--timeout", "2"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot reach registry {host}")),
        "{}",
        stderr(&out)
    );
    assert!(!p.dir.join("lockstep.lock").exists());
}

/// Regression: `lock --commit` with a manifest edited but not committed signed the edited
/// bytes and committed only lockstep's files, so HEAD did not verify. Now every command that
/// commits refuses first, naming the file, and writes nothing.
#[test]
fn commit_is_refused_when_other_inputs_are_uncommitted() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&["--commit"])), 0);
    let head = git(&p.repo, &["rev-parse", "HEAD"]);
    let api = p.dir.join("apps/api.yaml");
    let mut text = std::fs::read_to_string(&api).unwrap();
    text.push_str("# edited, not committed\n");
    std::fs::write(&api, text).unwrap();
    let refused = |out: &Output, before: &BTreeMap<PathBuf, Vec<u8>>| {
        assert_eq!(code(out), 2, "{}", stderr(out));
        assert!(
            stderr(out).contains("has uncommitted changes to apps/api.yaml"),
            "{}",
            stderr(out)
        );
        assert_eq!(&p.snapshot(), before, "nothing written");
        assert_eq!(
            git(&p.repo, &["rev-parse", "HEAD"]),
            head,
            "nothing committed"
        );
    };
    let before = p.snapshot();
    refused(&p.lock(&["--commit"]), &before);

    // Locked without --commit, the directory is consistent but not committed: the commands
    // that sign the lockfile as it is refuse to commit it half.
    assert_eq!(code(&p.lock(&[])), 0);
    let before = p.snapshot();
    let (key, dir) = (p.key.to_str().unwrap(), p.dir.to_str().unwrap());
    refused(
        &run(
            &["sign", dir, "--key", key, "--signer", "second", "--commit"],
            &[],
        ),
        &before,
    );
    refused(
        &run(
            &[
                "refresh",
                dir,
                "--key",
                key,
                "--expires-in",
                "30d",
                "--commit",
            ],
            &[],
        ),
        &before,
    );

    // Committed, the same commands make commits that verify.
    git(&p.repo, &["commit", "-qam", "edit api, lock"]);
    let out = run(
        &["sign", dir, "--key", key, "--signer", "second", "--commit"],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&p.verify(&["--rev", "HEAD"])), 0);
}

/// Regression: `sign`, `refresh` and `mirror` in a directory without a lockfile exited 1, as
/// if a check had failed; nothing to sign is a usage error, exit 2, as in `check`.
#[test]
fn signing_commands_without_a_lockfile_exit_2_and_write_nothing() {
    let p = Project::new();
    let before = p.snapshot();
    let dir = p.dir.to_str().unwrap();
    let key = p.key.to_str().unwrap();
    for extra in [
        &["sign"][..],
        &["refresh", "--expires-in", "30d"],
        &["mirror", "--to", "127.0.0.1:1/dr"],
    ] {
        let mut args = vec![extra[0], dir, "--key", key];
        args.extend_from_slice(&extra[1..]);
        let out = run(&args, &[]);
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no lockstep.lock in the manifests directory"),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("hint: only an existing lockfile can be signed"),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert_eq!(p.snapshot(), before, "{extra:?} wrote something");
    }
    // `check` says the same, with the same exit code.
    assert_eq!(code(&check(&p, &[])), 2);
}

/// `git verify-commit` of a commit lockstep wrote, with the allowed signers in `text`.
fn git_verify_commit(repo: &Path, allowed: &Path, text: &str) -> Output {
    std::fs::write(allowed, text).unwrap();
    Command::new("git")
        .args([
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
            "verify-commit",
            "-v",
            "HEAD",
        ])
        .current_dir(repo)
        .output()
        .unwrap()
}

/// Branch rules that require signed commits accept lockstep's: `lock --commit` and
/// `sign --commit` write commits SSH-signed (namespace `git`) with the key that signs the
/// lockfile, and real `git verify-commit` accepts them — but only from a key allowed for
/// `git`: a key trusted for lockstep lockfiles alone does not make a commit signature pass.
#[test]
fn commits_lockstep_writes_pass_git_verify_commit() {
    let p = Project::new();
    let out = p.lock(&["--commit", "--message", "pin images"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let raw = git(&p.repo, &["cat-file", "commit", "HEAD"]);
    assert!(
        raw.contains("\ngpgsig -----BEGIN SSH SIGNATURE-----\n"),
        "{raw}"
    );
    let lockstep_line = std::fs::read_to_string(&p.allowed_signers).unwrap();
    assert!(
        lockstep_line.contains("namespaces=\"lockstep\""),
        "{lockstep_line}"
    );
    let git_line = lockstep_line.replace("namespaces=\"lockstep\"", "namespaces=\"git\"");
    let allowed = p._tmp.path().join("git_allowed_signers");

    let out = git_verify_commit(&p.repo, &allowed, &git_line);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Good \"git\" signature for"),
        "{}",
        stderr(&out)
    );
    // Domain separation: the lockfile trust line (namespace lockstep) does not verify it.
    let out = git_verify_commit(&p.repo, &allowed, &lockstep_line);
    assert!(!out.status.success(), "{}", stderr(&out));
    // Another key's line does not either.
    let (_, other) = keygen(p._tmp.path(), "other_key", "other@example.com");
    let out = git_verify_commit(
        &p.repo,
        &allowed,
        &other.replace("namespaces=\"lockstep\"", "namespaces=\"git\""),
    );
    assert!(!out.status.success(), "{}", stderr(&out));

    // A second signer's `sign --commit` is signed with its own key.
    let (second, second_line) = keygen(p._tmp.path(), "second_key", "second@example.com");
    let out = run(
        &[
            "sign",
            p.dir.to_str().unwrap(),
            "--key",
            second.to_str().unwrap(),
            "--commit",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = git_verify_commit(
        &p.repo,
        &allowed,
        &second_line.replace("namespaces=\"lockstep\"", "namespaces=\"git\""),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The history stays what lockstep verifies.
    let out = p.verify(&["--rev", "HEAD~1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // --commit-key: a bot's Git key signs the commit, the lockfile key still the lockfile.
    let (bot, bot_line) = keygen(p._tmp.path(), "bot_key", "bot@example.com");
    std::fs::write(
        p.dir.join("extra.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n",
    )
    .unwrap();
    git(&p.repo, &["add", "-A"]);
    git(&p.repo, &["commit", "-qm", "extra"]);
    let out = p.lock(&["--commit", "--commit-key", bot.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let as_git = |line: &str| line.replace("namespaces=\"lockstep\"", "namespaces=\"git\"");
    let out = git_verify_commit(&p.repo, &allowed, &as_git(&bot_line));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = git_verify_commit(&p.repo, &allowed, &git_line);
    assert!(!out.status.success(), "{}", stderr(&out));
    let out = p.verify(&["--rev", "HEAD"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// The same commits pass Flux's own SSH commit-signature verifier (github.com/fluxcd/pkg/git's
/// `Commit.VerifySSH` over go-git's decoding, tests/fluxverify), which a GitRepository with
/// SSH `spec.verify` runs; a commit signed by another key does not.
#[test]
fn commits_lockstep_writes_pass_fluxs_ssh_commit_verifier() {
    let Some(fluxverify) = crate::k8s_reader::built_oracle("fluxverify", "LOCKSTEP_FLUXVERIFY")
    else {
        return;
    };
    let p = Project::new();
    let out = p.lock(&["--commit"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // allowed_signers `principal namespaces="lockstep" ssh-ed25519 AAAA… comment` → the key.
    let authorized = |line: &str| {
        let at = line.find("ssh-ed25519").unwrap();
        line[at..].trim().to_owned() + "\n"
    };
    let keys = p._tmp.path().join("authorized_keys");
    std::fs::write(
        &keys,
        authorized(&std::fs::read_to_string(&p.allowed_signers).unwrap()),
    )
    .unwrap();
    let verify = |keys: &Path| {
        std::process::Command::new(&fluxverify)
            .arg(&p.repo)
            .arg("HEAD")
            .arg(keys)
            .output()
            .unwrap()
    };
    let out = verify(&keys);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fingerprint = String::from_utf8(out.stdout).unwrap();
    let keygen_l = std::process::Command::new("ssh-keygen")
        .args(["-l", "-f"])
        .arg(&keys)
        .output()
        .unwrap();
    let expected = String::from_utf8(keygen_l.stdout).unwrap();
    assert!(
        fingerprint.trim().starts_with("SHA256:")
            && expected.split_whitespace().nth(1) == Some(fingerprint.trim()),
        "{fingerprint} vs {expected}"
    );
    let (_, other) = keygen(p._tmp.path(), "other_key", "other@example.com");
    let others = p._tmp.path().join("other_keys");
    std::fs::write(&others, authorized(&other)).unwrap();
    let out = verify(&others);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unable to verify Git commit SSH signature"),
        "{}",
        stderr(&out)
    );
}

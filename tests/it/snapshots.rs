//! What users see: the stdout, stderr and exit code of the main commands, snapshotted with
//! insta (as uv and ripgrep do). Temp paths, the registry's port, digests, key fingerprints,
//! commit ids, times and durations are redacted by filters, so the snapshots hold on any
//! machine; everything else (wording, order, counts, exit codes) is pinned exactly.

use std::path::Path;
use std::process::Output;

use crate::cli::{Project, ci_key, code, git, init_repo, run, stderr, stdout};
use crate::harness::{RegistryOptions, TestRegistry};

/// The exit code and both streams, as one text.
fn transcript(out: &Output) -> String {
    format!(
        "exit: {}\n----- stdout -----\n{}----- stderr -----\n{}",
        code(out),
        stdout(out),
        stderr(out)
    )
}

/// `text` as a regular expression matching it literally.
fn literal(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The filters for a run against `registry` in `temp`.
fn filters(temp: &Path, registry: Option<&str>) -> Vec<(String, String)> {
    let temp = temp.to_str().unwrap();
    let canonical = std::fs::canonicalize(temp).unwrap();
    let mut filters = vec![
        (literal(canonical.to_str().unwrap()), "[TEMP]".into()),
        (literal(temp), "[TEMP]".into()),
    ];
    if let Some(registry) = registry {
        filters.push((literal(registry), "[REGISTRY]".into()));
    }
    filters.extend([
        (
            r"\b(127\.0\.0\.1|localhost):\d+".into(),
            "[HOST:PORT]".into(),
        ),
        (r"sha256:[0-9a-f]{64}".into(), "sha256:[DIGEST]".into()),
        (
            r"SHA256:[A-Za-z0-9+/]{43}".into(),
            "SHA256:[FINGERPRINT]".into(),
        ),
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?".into(),
            "[TIME]".into(),
        ),
        // Commit ids, whole or shortened, and short digests (audit's table).
        (r"\b[0-9a-f]{10,40}\b".into(), "[HEX]".into()),
        // Measured durations (`1.27s`), not the ones in hints (`90s`).
        (r"\b\d+\.\d+(ns|µs|us|ms|s)\b".into(), "[DURATION]".into()),
    ]);
    filters
}

/// Assert the transcript of `out` against the snapshot `name`, with the filters.
fn assert_transcript(name: &str, out: &Output, temp: &Path, registry: Option<&str>) {
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in filters(temp, registry) {
        settings.add_filter(&pattern, replacement);
    }
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(name, transcript(out)));
}

fn project_transcript(name: &str, p: &Project, out: &Output) {
    assert_transcript(
        name,
        out,
        p.repo.parent().unwrap(),
        Some(&p.registry.host()),
    );
}

#[test]
fn lock_prints_a_summary_then_refuses_a_stale_lockfile() {
    let p = Project::new();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    project_transcript("lock_success", &p, &out);
    // The tag moves: lock --check names what is stale, exit 1.
    p.registry.push_image("shop/worker", "1.0", b"worker v2");
    let out = p.lock(&["--check"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    project_transcript("lock_check_stale", &p, &out);
}

#[test]
fn verify_passes_then_refuses_a_tampered_manifest() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let out = p.verify(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    project_transcript("verify_pass", &p, &out);
    let api = p.dir.join("apps/api.yaml");
    let text = std::fs::read_to_string(&api).unwrap();
    std::fs::write(&api, text.replacen("replicas: 3", "replicas: 30", 1)).unwrap();
    let out = p.verify(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    project_transcript("verify_tampered", &p, &out);
}

#[test]
fn check_confirms_the_pinned_digests() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let out = run(&["check", p.dir.to_str().unwrap()], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    project_transcript("check_pass", &p, &out);
}

#[test]
fn audit_lists_the_commits_and_the_unlocked_one() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&["--commit", "--message", "pin images"])), 0);
    p.registry.push_image("shop/worker", "1.0", b"worker v2");
    assert_eq!(code(&p.lock(&["--commit", "--message", "new worker"])), 0);
    let out = run(
        &[
            "audit",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            p.allowed_signers.to_str().unwrap(),
        ],
        &[],
    );
    // The first commit added manifests without a lockfile: one finding, exit 1.
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    project_transcript("audit", &p, &out);
}

const SMALL: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
        - name: hello
          image: REGISTRY/hello:1.0 # pinned by lockstep lock
";

#[test]
fn render_prints_the_verified_pinned_object() {
    let registry = TestRegistry::start(RegistryOptions::default());
    registry.push_image("hello", "1.0", b"hello");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hello.yaml"),
        SMALL.replace("REGISTRY", &registry.host()),
    )
    .unwrap();
    init_repo(tmp.path());
    git(tmp.path(), &["add", "-A"]);
    git(tmp.path(), &["commit", "-qm", "hello"]);
    let (key, trust_line) = ci_key(tmp.path());
    let trust = tmp.path().join("allowed_signers");
    std::fs::write(&trust, trust_line).unwrap();
    let dir = dir.to_str().unwrap();
    let out = run(
        &["lock", dir, "--key", key.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(
        &["render", dir, "--allowed-signers", trust.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_transcript("render", &out, tmp.path(), Some(&registry.host()));
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    // clap's own: a required option missing.
    let out = run(&["verify", "."], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_transcript("usage_missing_option", &out, tmp.path(), None);
    // lockstep's: no signing key.
    let dir = tmp.path().to_str().unwrap();
    let out = run(&["lock", dir], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_transcript("usage_no_key", &out, tmp.path(), None);
    // A bad duration.
    let out = run(
        &["wait", "app", "--rev", "abcdef0", "--timeout", "soon"],
        &[],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_transcript("usage_bad_duration", &out, tmp.path(), None);
}

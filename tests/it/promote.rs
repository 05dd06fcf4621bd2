//! `lockstep promote`: production locked at exactly the digests staging's verified lockfile
//! pins, with no tag resolved again, and the source recorded in the signed lockfile; every
//! refusal (unverified, expired, wrong environment, an image staging does not pin) writes
//! nothing.

use std::path::{Path, PathBuf};

use crate::cli::{code, git, init_repo, keygen, lockfile_text, run, snapshot, stderr};
use crate::harness::{RegistryOptions, TestRegistry};

struct Stages {
    registry: TestRegistry,
    tmp: tempfile::TempDir,
    repo: PathBuf,
    key: PathBuf,
    allowed_signers: PathBuf,
}

impl Stages {
    fn new() -> Stages {
        let registry = TestRegistry::start(RegistryOptions::default());
        registry.push_image("shop/web", "1.0", b"web 1.0");
        registry.push_image("shop/api", "2.0", b"api 2.0");
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let host = registry.host();
        for env in ["staging", "prod"] {
            let dir = repo.join("envs").join(env);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("app.yaml"),
                format!(
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: {host}/shop/web:1.0\n        - name: api\n          image: {host}/shop/api:2.0\n"
                ),
            )
            .unwrap();
        }
        init_repo(&repo);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "two environments"]);
        let (key, line) = keygen(tmp.path(), "ci_key", "ci@example.com");
        let allowed_signers = tmp.path().join("allowed_signers");
        std::fs::write(&allowed_signers, line).unwrap();
        Stages {
            registry,
            tmp,
            repo,
            key,
            allowed_signers,
        }
    }

    fn dir(&self, env: &str) -> PathBuf {
        self.repo.join("envs").join(env)
    }

    fn commit_all(&self, message: &str) {
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-qm", message]);
    }

    /// Staging locked for `staging` and committed, then promoted to prod and committed.
    fn promoted_and_committed(&self) {
        let out = self.lock("staging", &["--environment", "staging"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        self.commit_all("staging generation 1");
        let out = self.promote(&["--from-environment", "staging", "--environment", "prod"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        self.commit_all("promote staging to prod");
    }

    fn lock(&self, env: &str, extra: &[&str]) -> std::process::Output {
        let dir = self.dir(env);
        let mut args = vec![
            "lock",
            dir.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, &[("SOURCE_DATE_EPOCH", "1700000000")])
    }

    fn promote(&self, extra: &[&str]) -> std::process::Output {
        let (from, to) = (self.dir("staging"), self.dir("prod"));
        let mut args = vec![
            "promote",
            from.to_str().unwrap(),
            to.to_str().unwrap(),
            "--from-allowed-signers",
            self.allowed_signers.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, &[("SOURCE_DATE_EPOCH", "1700000100")])
    }

    fn verify(&self, env: &str) -> std::process::Output {
        let dir = self.dir(env);
        run(
            &[
                "verify",
                dir.to_str().unwrap(),
                "--allowed-signers",
                self.allowed_signers.to_str().unwrap(),
            ],
            &[],
        )
    }
}

fn digest(dir: &Path, suffix: &str) -> String {
    crate::cli::digest_in_lock(dir, suffix)
}

#[test]
fn production_gets_exactly_the_staging_digests_even_after_the_tags_moved() {
    let s = Stages::new();
    let out = s.lock("staging", &["--environment", "staging"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    git(&s.repo, &["add", "-A"]);
    git(&s.repo, &["commit", "-qm", "staging locked"]);
    let tested = digest(&s.dir("staging"), "/shop/web:1.0");
    // After staging was tested, the tag is pushed again: a plain lock of prod would take it.
    s.registry
        .push_image("shop/web", "1.0", b"web 1.0, rebuilt untested");

    let out = s.promote(&["--from-environment", "staging", "--environment", "prod"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no registry lookups")
            && stderr(&out).contains(&format!(
                "/shop/web:1.0: (new) -> {tested} (the digest {} pins)",
                s.dir("staging").display()
            )),
        "{}",
        stderr(&out)
    );
    assert_eq!(digest(&s.dir("prod"), "/shop/web:1.0"), tested);
    let app = std::fs::read_to_string(s.dir("prod").join("app.yaml")).unwrap();
    assert!(app.contains(&format!("/shop/web:1.0@{tested}")), "{app}");
    let staging_lock = std::fs::read(s.dir("staging").join("lockstep.lock")).unwrap();
    let lock = lockfile_text(&s.dir("prod"));
    let source = format!(
        "[promoted-from]\nenvironment = \"staging\"\ngeneration = 1\nlockfile = \"{}\"\n",
        lockstep::model::Digest::of(&staging_lock)
    );
    assert!(lock.contains(&source), "{lock}");
    let out = s.verify("prod");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        crate::cli::stdout(&out).contains("; promoted from staging generation 1 (lockfile sha256:"),
        "{}",
        crate::cli::stdout(&out)
    );
    let promoted_from = |env: &str| {
        let dir = s.dir("prod");
        run(
            &[
                "verify",
                dir.to_str().unwrap(),
                "--allowed-signers",
                s.allowed_signers.to_str().unwrap(),
                "--promoted-from",
                env,
            ],
            &[],
        )
    };
    assert_eq!(code(&promoted_from("staging")), 0);
    let out = promoted_from("qa");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--promoted-from qa: the lockfile records a promotion from staging"),
        "{}",
        stderr(&out)
    );
    // Promoting the same lockfile again changes nothing.
    let out = s.promote(&["--from-environment", "staging", "--environment", "prod"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        crate::cli::stdout(&out).contains("up to date"),
        "{}{}",
        crate::cli::stdout(&out),
        stderr(&out)
    );
    // A plain lock of prod would follow the moved tag (and drop the promotion record).
    let out = s.lock("prod", &["--check", "--environment", "prod"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // A prod locked from the registry fails a verifier that requires the promotion.
    let out = s.lock("prod", &["--environment", "prod"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = promoted_from("staging");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("records no promotion"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn promotions_that_cannot_be_trusted_or_are_incomplete_are_refused_and_write_nothing() {
    let s = Stages::new();
    let before = snapshot(&s.dir("prod"));
    // No lockfile in staging yet.
    let out = s.promote(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was promoted"),
        "{}",
        stderr(&out)
    );

    // Signed by a key the source trust does not hold.
    let (other, _) = keygen(s.tmp.path(), "other_key", "other@example.com");
    let dir = s.dir("staging");
    let out = run(
        &[
            "lock",
            dir.to_str().unwrap(),
            "--key",
            other.to_str().unwrap(),
            "--environment",
            "staging",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = s.promote(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(snapshot(&s.dir("prod")), before);

    // Trusted but expired.
    let out = run(
        &[
            "lock",
            dir.to_str().unwrap(),
            "--key",
            s.key.to_str().unwrap(),
            "--new-history",
            "--environment",
            "staging",
            "--expires-in",
            "1h",
        ],
        &[("SOURCE_DATE_EPOCH", "1000000000")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = s.promote(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    assert_eq!(snapshot(&s.dir("prod")), before);

    // Trusted, current, but for another environment than asked.
    let out = s.lock("staging", &["--new-history", "--environment", "staging"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = s.promote(&["--from-environment", "qa"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(snapshot(&s.dir("prod")), before);

    // Production uses an image staging does not pin: refused, named; with
    // --resolve-missing it is resolved from the registry and said so.
    let host = s.registry.host();
    s.registry.push_image("shop/worker", "3.0", b"worker");
    std::fs::write(
        s.dir("prod").join("worker.yaml"),
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: worker\nspec:\n  containers:\n    - name: w\n      image: {host}/shop/worker:3.0\n"),
    )
    .unwrap();
    let before = snapshot(&s.dir("prod"));
    let out = s.promote(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("uses images that the lockfile of")
            && stderr(&out).contains("/shop/worker:3.0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&s.dir("prod")), before);
    let out = s.promote(&["--resolve-missing"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/shop/worker:3.0: not in the lockfile of"),
        "{}",
        stderr(&out)
    );
    // The signed record says which digest did not come from the source.
    let lock = lockfile_text(&s.dir("prod"));
    assert!(
        lock.contains(&format!("resolved = [\"{host}/shop/worker@sha256:")),
        "{lock}"
    );
    assert_eq!(
        digest(&s.dir("prod"), "/shop/web:1.0"),
        digest(&s.dir("staging"), "/shop/web:1.0")
    );
}

/// Runs `verify DIR --promoted-from staging` with the given trust for the source.
fn verify_promoted(s: &Stages, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "verify",
        dir.to_str().unwrap(),
        "--allowed-signers",
        s.allowed_signers.to_str().unwrap(),
        "--promoted-from",
        "staging",
    ];
    args.extend_from_slice(extra);
    run(&args, &[])
}

#[test]
fn verify_promoted_from_requires_the_source_lockfile_in_history_verified_as_of_the_promotion() {
    let s = Stages::new();
    // Staging is signed by its own key, which production's verifiers do not trust for prod.
    let (staging_key, line) = keygen(s.tmp.path(), "staging_key", "staging-ci@example.com");
    let staging_trust = s.tmp.path().join("staging_signers");
    std::fs::write(&staging_trust, line).unwrap();
    let staging = s.dir("staging");
    let lock_staging = |extra: &[&str]| {
        let mut args = vec![
            "lock",
            staging.to_str().unwrap(),
            "--key",
            staging_key.to_str().unwrap(),
            "--environment",
            "staging",
        ];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    let out = lock_staging(&["--expires-in", "24h"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let from_trust = ["--from-allowed-signers", staging_trust.to_str().unwrap()];

    // Promoted from an uncommitted staging lockfile: said at once, and no verifier finds it.
    let from = s.dir("staging");
    let to = s.dir("prod");
    let promote = |extra: &[&str]| {
        let mut args = vec![
            "promote",
            from.to_str().unwrap(),
            to.to_str().unwrap(),
            "--from-allowed-signers",
            staging_trust.to_str().unwrap(),
            "--from-environment",
            "staging",
            "--environment",
            "prod",
            "--key",
            s.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    let out = promote(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lockfile is not the one committed at HEAD"),
        "{}",
        stderr(&out)
    );
    let lock = lockfile_text(&to);
    assert!(
        lock.contains("path = \"envs/staging\"\n") && !lock.contains("commit ="),
        "{lock}"
    );
    let out = verify_promoted(&s, &to, &from_trust);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("no commit in the history has the promoted envs/staging/lockstep.lock"),
        "{}",
        stderr(&out)
    );
    // Once the same bytes are committed, the history holds the source, and it verifies.
    git(&s.repo, &["add", "-A"]);
    git(&s.repo, &["commit", "-qm", "staging and the promotion"]);
    let out = verify_promoted(&s, &to, &from_trust);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        crate::cli::stdout(&out)
            .contains(", its source envs/staging/lockstep.lock verified at commit ")
            && crate::cli::stdout(&out).contains("signed by staging-ci@example.com"),
        "{}",
        crate::cli::stdout(&out)
    );
    // The source is judged by its own signers: production's trust alone does not vouch for it.
    let out = verify_promoted(&s, &to, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the source lockfile envs/staging/lockstep.lock at commit")
            && stderr(&out).contains("does not verify"),
        "{}",
        stderr(&out)
    );
    // Staging expires after the promotion: the source was good when it was promoted.
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(72)).to_string();
    let out = verify_promoted(&s, &to, &[&from_trust[..], &["--at", &later]].concat());
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // With a recorded commit (the source committed at HEAD), a newer staging does not hide it.
    s.registry
        .push_image("shop/web", "1.0", b"web 1.0, second build");
    let out = lock_staging(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    git(&s.repo, &["add", "-A"]);
    git(&s.repo, &["commit", "-qm", "staging generation 2"]);
    let out = promote(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        lockfile_text(&to).contains("commit = \""),
        "{}",
        lockfile_text(&to)
    );
    git(&s.repo, &["add", "-A"]);
    git(&s.repo, &["commit", "-qm", "promote generation 2"]);
    s.registry
        .push_image("shop/web", "1.0", b"web 1.0, third build");
    let out = lock_staging(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    git(&s.repo, &["add", "-A"]);
    git(&s.repo, &["commit", "-qm", "staging generation 3"]);
    let out = verify_promoted(&s, &to, &from_trust);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Outside Git, the history cannot be searched: the environment, exit 2.
    let loose = s.tmp.path().join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    for f in std::fs::read_dir(&to).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), loose.join(f.file_name())).unwrap();
    }
    let out = verify_promoted(&s, &loose, &from_trust);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot search the Git history"),
        "{}",
        stderr(&out)
    );

    // A source outside the target's repository is promoted with a warning, and a verifier
    // that requires the promotion refuses it: it cannot be checked.
    let outside = s.tmp.path().join("outside-staging");
    std::fs::create_dir_all(&outside).unwrap();
    for f in std::fs::read_dir(&staging).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), outside.join(f.file_name())).unwrap();
    }
    let out = run(
        &[
            "promote",
            outside.to_str().unwrap(),
            to.to_str().unwrap(),
            "--from-allowed-signers",
            staging_trust.to_str().unwrap(),
            "--environment",
            "prod",
            "--key",
            s.key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not in a Git work tree"),
        "{}",
        stderr(&out)
    );
    let out = verify_promoted(&s, &to, &from_trust);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("names no source directory in this repository"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn audit_shows_the_promotion_chain_and_flags_a_prod_lock_that_did_not_promote() {
    let s = Stages::new();
    let commit_all = |message: &str| s.commit_all(message);
    s.promoted_and_committed();
    // Then someone locks prod straight from the registry after the tag moved.
    s.registry
        .push_image("shop/web", "1.0", b"web 1.0, untested");
    let out = s.lock("prod", &["--environment", "prod"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    commit_all("prod locked from the registry");

    let prod = s.dir("prod");
    // From after the first commit, which had no lockfile yet.
    let root = String::from_utf8(
        std::process::Command::new("git")
            .args(["rev-list", "--max-parents=0", "HEAD"])
            .current_dir(&s.repo)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let audit = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            prod.to_str().unwrap(),
            "--allowed-signers",
            s.allowed_signers.to_str().unwrap(),
            "--since",
            root.trim(),
        ];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    let out = audit(&[]);
    assert_eq!(
        code(&out),
        0,
        "{}{}",
        crate::cli::stdout(&out),
        stderr(&out)
    );
    let table = crate::cli::stdout(&out);
    assert!(
        table
            .contains("< promoted: staging generation 1 -> prod generation 1 (source verified at "),
        "{table}"
    );
    let out = audit(&["--require-promotion-from", "staging"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let table = crate::cli::stdout(&out);
    let flagged: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("! not promoted"))
        .collect();
    assert_eq!(
        flagged,
        [
            "    ! not promoted: the policy requires a promotion from staging, and this lock resolved its tags itself"
        ],
        "{table}"
    );
    // The flagged lock is the last one, the registry's, not the promotion.
    let rows: Vec<&str> = table.lines().filter(|l| !l.starts_with("    ")).collect();
    assert!(
        rows.last()
            .unwrap()
            .contains("prod locked from the registry"),
        "{table}"
    );
    assert!(table.trim_end().ends_with(flagged[0]), "{table}");
    let out = audit(&["--require-promotion-from", "staging", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["summary"]["promotions"], 1, "{json}");
    assert_eq!(json["summary"]["not_promoted"], 1, "{json}");
    assert_eq!(json["summary"]["promotions_unverified"], 0, "{json}");
}

/// Regression (attack review): verifiers checked only that the recorded source lockfile
/// existed and verified, never that production's digests were the source's. Whoever held
/// production's key could copy a genuine `[promoted-from]` record onto a lockfile pinning
/// anything, and `verify --promoted-from` and `audit` said "source verified".
#[test]
fn a_promotion_record_copied_onto_other_digests_is_refused() {
    let s = Stages::new();
    let commit_all = |message: &str| s.commit_all(message);
    s.promoted_and_committed();
    let prod = s.dir("prod");
    let genuine = lockstep::lockfile::Lockfile::parse_unverified(
        &std::fs::read(prod.join("lockstep.lock")).unwrap(),
    )
    .unwrap();
    // The tag moves; prod is locked from the registry, and the genuine record is put back
    // on it, signed with production's key (what a compromised CI could do).
    s.registry
        .push_image("shop/web", "1.0", b"web 1.0, untested");
    let out = s.lock("prod", &["--environment", "prod"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut forged = lockstep::lockfile::Lockfile::parse_unverified(
        &std::fs::read(prod.join("lockstep.lock")).unwrap(),
    )
    .unwrap();
    forged.promoted_from = genuine.promoted_from.clone();
    std::fs::write(prod.join("lockstep.lock"), forged.to_bytes()).unwrap();
    for f in std::fs::read_dir(&prod).unwrap() {
        let f = f.unwrap().path();
        if f.to_string_lossy().ends_with(".sig") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let signed = std::process::Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "lockstep", "-f"])
        .arg(&s.key)
        .arg(prod.join("lockstep.lock"))
        .output()
        .unwrap();
    assert!(signed.status.success(), "{}", stderr(&signed));
    std::fs::rename(
        prod.join("lockstep.lock.sig"),
        prod.join("lockstep.lock.ci.sig"),
    )
    .unwrap();
    commit_all("forged promotion");
    // The signature is good, the record is genuine, and still: refused.
    let out = s.verify("prod");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = verify_promoted(&s, &prod, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/shop/web:1.0 is pinned at sha256:")
            && stderr(&out)
                .contains("which the source lockfile envs/staging/lockstep.lock at commit"),
        "{}",
        stderr(&out)
    );
}

//! Render steps with the real kustomize and helm (built by scripts/tools from their Go
//! modules): a base with two overlays and a chart with a vendored dependency are rendered,
//! pinned, bound with their inputs and signed by `lock`; `verify` catches a changed input,
//! `verify --rerender` a hand-edited output; network-dependent and broken inputs are refused
//! with the tool's own words, and nothing is written.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::cli::{code, git, init_repo, keygen, lockfile_text, run, snapshot, stderr, stdout};
use crate::harness::{RegistryOptions, TestRegistry};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/hydrate");

/// (kustomize, helm): from LOCKSTEP_KUSTOMIZE / LOCKSTEP_HELM (scripts/test exports them),
/// else built by `scripts/tools build`.
pub(crate) fn tools() -> &'static (String, String) {
    static TOOLS: OnceLock<(String, String)> = OnceLock::new();
    TOOLS.get_or_init(|| {
        if let (Ok(k), Ok(h)) = (
            std::env::var("LOCKSTEP_KUSTOMIZE"),
            std::env::var("LOCKSTEP_HELM"),
        ) {
            return (k, h);
        }
        let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tools"))
            .arg("build")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let get = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        (get("kustomize"), get("helm"))
    })
}

/// A repository holding the fixture (REGISTRY replaced), its images pushed, a key.
struct Hydrated {
    registry: TestRegistry,
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    key: PathBuf,
    allowed_signers: PathBuf,
}

fn copy_tree(from: &Path, to: &Path, registry: &str) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, registry);
        } else {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(target, text.replace("REGISTRY", registry)).unwrap();
        }
    }
}

impl Hydrated {
    fn new() -> Hydrated {
        let registry = TestRegistry::start(RegistryOptions::default());
        for (repo, tag) in [
            ("shop/web", "1.0"),
            ("shop/web", "1.1"),
            ("shop/api", "2.0"),
            ("shop/api", "2.1"),
        ] {
            registry.push_image(repo, tag, format!("{repo}:{tag}").as_bytes());
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        copy_tree(Path::new(FIXTURE), &repo, &registry.host());
        init_repo(&repo);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "sources"]);
        let (key, line) = keygen(tmp.path(), "ci_key", "ci@example.com");
        let allowed_signers = tmp.path().join("allowed_signers");
        std::fs::write(&allowed_signers, line).unwrap();
        Hydrated {
            registry,
            _tmp: tmp,
            repo,
            key,
            allowed_signers,
        }
    }

    fn dir(&self, env: &str) -> PathBuf {
        self.repo.join("deploy").join(env)
    }

    fn lock(&self, env: &str, extra: &[&str]) -> std::process::Output {
        let (k, h) = tools();
        let dir = self.dir(env);
        let mut args = vec![
            "lock",
            dir.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
            "--kustomize",
            k,
            "--helm",
            h,
        ];
        args.extend_from_slice(extra);
        run(&args, &[("SOURCE_DATE_EPOCH", "1700000000")])
    }

    fn verify(&self, env: &str, extra: &[&str]) -> std::process::Output {
        let (k, h) = tools();
        let dir = self.dir(env);
        let mut args = vec![
            "verify",
            dir.to_str().unwrap(),
            "--allowed-signers",
            self.allowed_signers.to_str().unwrap(),
            "--kustomize",
            k,
            "--helm",
            h,
        ];
        args.extend_from_slice(extra);
        run(&args, &[])
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.repo.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text.replace("REGISTRY", &self.registry.host())).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.repo.join(rel)).unwrap()
    }
}

#[test]
fn an_overlay_and_a_chart_are_rendered_pinned_bound_and_re_rendered() {
    let h = Hydrated::new();
    let out = h.lock("prod", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rendered rendered/shop.yaml with kustomize v5.7.1"),
        "{}",
        stderr(&out)
    );

    // The overlay's images: entry and patch are applied, then the tag pinned.
    let shop = h.read("deploy/prod/rendered/shop.yaml");
    let web_1_1 = h.registry.push_image("shop/web", "1.1", b"shop/web:1.1");
    assert!(
        shop.contains(&format!(
            "image: {}/shop/web:1.1@{web_1_1}",
            h.registry.host()
        )),
        "{shop}"
    );
    assert!(
        shop.contains("namespace: shop") && shop.contains("replicas: 3"),
        "{shop}"
    );
    // The chart, its vendored library dependency and the production values.
    let api = h.read("deploy/prod/rendered/api.yaml");
    assert!(
        api.contains("app.kubernetes.io/name: api") && api.contains("replicas: 2"),
        "{api}"
    );
    assert!(api.contains("/shop/api:2.0@sha256:"), "{api}");

    // The lockfile records each renderer, version, command and input.
    let lock = lockfile_text(&h.dir("prod"));
    assert!(
        lock.contains(
            "[[render]]\noutput = \"rendered/api.yaml\"\nrenderer = \"helm\"\nversion = \"v3.18.4\""
        ),
        "{lock}"
    );
    assert!(lock.contains("args = [\"build\", \"../../overlays/prod\", \"--load-restrictor\", \"LoadRestrictionsRootOnly\"]"), "{lock}");
    assert!(
        lock.contains("roots = [\"../../base\", \"../../overlays/prod\"]"),
        "{lock}"
    );
    assert!(
        lock.contains("path = \"../../charts/api/charts/common/templates/_labels.tpl\""),
        "{lock}"
    );
    assert!(lock.contains("path = \"../../values/prod.yaml\""), "{lock}");

    let out = h.verify("prod", &["--rerender"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("; 2 rendered outputs re-rendered byte for byte from their unchanged inputs"),
        "{}",
        stdout(&out)
    );

    // Rendering is deterministic: a second lock changes nothing.
    let before = snapshot(&h.dir("prod"));
    let out = h.lock("prod", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    assert_eq!(snapshot(&h.dir("prod")), before);

    // A commit is verified and re-rendered from its own objects, not the work tree.
    git(&h.repo, &["add", "-A"]);
    git(&h.repo, &["commit", "-qm", "lock"]);
    h.write("overlays/prod/replicas.yaml", "garbage: [");
    let out = h.verify("prod", &["--rev", "HEAD", "--rerender"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// Regression class for issue 11: a changed source with an unchanged output.
#[test]
fn a_changed_added_or_removed_input_fails_verify_naming_the_file() {
    let h = Hydrated::new();
    assert_eq!(code(&h.lock("prod", &[])), 0);
    assert_eq!(code(&h.verify("prod", &[])), 0);

    h.write(
        "overlays/prod/replicas.yaml",
        &h.read("overlays/prod/replicas.yaml").replace("3", "5"),
    );
    let out = h.verify("prod", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rendered/shop.yaml: its render inputs are not the ones it was rendered from; changed: ../../overlays/prod/replicas.yaml"),
        "{}",
        stderr(&out)
    );
    git(&h.repo, &["checkout", "--", "overlays"]);
    h.write("base/extra.yaml", "kind: ConfigMap\n");
    std::fs::remove_file(h.repo.join("values/prod.yaml")).unwrap();
    let err = stderr(&h.verify("prod", &[]));
    assert!(err.contains("added: ../../base/extra.yaml"), "{err}");
    assert!(
        err.contains("rendered/api.yaml: its render inputs cannot be read"),
        "{err}"
    );
}

/// A rendered output edited by hand and signed anyway (an insider with a key) passes plain
/// verification, which checks only signatures and hashes — and fails `--rerender`.
#[test]
fn a_signed_hand_edit_of_a_rendered_output_is_caught_by_rerender() {
    let h = Hydrated::new();
    assert_eq!(code(&h.lock("prod", &[])), 0);
    let dir = h.dir("prod");
    let edited = h
        .read("deploy/prod/rendered/shop.yaml")
        .replace("replicas: 3", "replicas: 30");
    h.write("deploy/prod/rendered/shop.yaml", &edited);
    // Re-bind the lockfile to the edited bytes and sign it, as a key holder could.
    let files = lockstep::source::fs::read_dir(&dir).unwrap();
    let mut lock =
        lockstep::lockfile::Lockfile::parse_unverified(files.lockfile().unwrap()).unwrap();
    lock.manifests = lockstep::lockfile::ManifestBinding::compute(files.bound());
    std::fs::write(dir.join("lockstep.lock"), lock.to_bytes()).unwrap();
    let sig = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".sig"))
        .unwrap();
    std::fs::remove_file(dir.join(&sig)).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "lockstep", "-f"])
        .arg(&h.key)
        .arg(dir.join("lockstep.lock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(dir.join("lockstep.lock.sig"), dir.join(&sig)).unwrap();

    let out = h.verify("prod", &[]);
    assert_eq!(
        code(&out),
        0,
        "plain verify checks hashes only: {}",
        stderr(&out)
    );
    let out = h.verify("prod", &["--rerender"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rendered/shop.yaml: the signed file is not what `kustomize build ../../overlays/prod --load-restrictor LoadRestrictionsRootOnly` renders from its inputs"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("rendered/api.yaml:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn remote_bases_and_broken_kustomizations_are_refused_and_nothing_is_written() {
    let h = Hydrated::new();
    h.write(
        "overlays/staging/kustomization.yaml",
        "resources:\n  - ../../base\n  - https://github.com/example/app//deploy?ref=v1.0.0\n",
    );
    let before = snapshot(&h.dir("staging"));
    let out = h.lock("staging", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("../../overlays/staging/kustomization.yaml refers to \"https://github.com/example/app//deploy?ref=v1.0.0\", which would make rendering depend on the network"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&h.dir("staging")), before);

    // An input outside the repository could never be committed with the lockfile.
    git(&h.repo, &["checkout", "--", "overlays"]);
    h.write(
        "deploy/staging/lockstep.toml",
        "[[render]]\nkustomize = \"../../overlays/staging\"\noutput = \"shop.yaml\"\ninputs = [\"../../../outside\"]\n",
    );
    let err = stderr(&h.lock("staging", &[]));
    assert!(
        err.contains("the input \"../../../outside\" lies outside the Git repository"),
        "{err}"
    );
    git(&h.repo, &["checkout", "--", "deploy"]);

    // kustomize's own error, with the step and the command.
    h.write(
        "overlays/staging/kustomization.yaml",
        "resources:\n  - ../../base\n  - missing.yaml\n",
    );
    let out = h.lock("staging", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("shop.yaml: `kustomize build ../../overlays/staging"),
        "{err}"
    );
    assert!(err.contains("missing.yaml"), "{err}");
    assert_eq!(snapshot(&h.dir("staging")), before);

    // A chart whose dependency is not vendored: helm says so; lockstep never downloads it.
    git(&h.repo, &["checkout", "--", "overlays"]);
    std::fs::remove_dir_all(h.repo.join("charts/api/charts")).unwrap();
    let err = stderr(&h.lock("staging", &[]));
    assert!(
        err.contains("api.yaml: `helm template api ../../charts/api"),
        "{err}"
    );
    assert!(err.contains("missing in charts/ directory"), "{err}");
    assert_eq!(snapshot(&h.dir("staging")), before);
}

#[test]
fn a_hand_written_output_or_a_missing_tool_is_refused() {
    let h = Hydrated::new();
    h.write(
        "deploy/staging/shop.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mine}\n",
    );
    let out = h.lock("staging", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("shop.yaml exists and is not a rendered output"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(h.dir("staging").join("shop.yaml")).unwrap();

    let dir = h.dir("staging");
    let out = run(
        &[
            "lock",
            dir.to_str().unwrap(),
            "--key",
            h.key.to_str().unwrap(),
            "--kustomize",
            "/nonexistent/kustomize",
        ],
        &[],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kustomize is needed for shop.yaml but was not found"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("lockstep.lock").exists());
}

#[test]
fn lock_commit_refuses_uncommitted_render_inputs_and_commits_a_commit_that_verifies() {
    let h = Hydrated::new();
    h.write("values/prod.yaml", "replicas: 4\n");
    let out = h.lock("prod", &["--commit"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the inputs of rendered/api.yaml have uncommitted changes (../../values/prod.yaml)"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!h.dir("prod").join("lockstep.lock").exists());
    git(&h.repo, &["commit", "-qam", "four replicas"]);
    let out = h.lock("prod", &["--commit"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = h.verify("prod", &["--rev", "HEAD", "--rerender"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        h.read("deploy/prod/rendered/api.yaml")
            .contains("replicas: 4")
    );
}

/// An image tag set in a source (the overlay's `images:`) that moves in the registry is
/// noticed by `lock --check`, which renders again and writes nothing.
#[test]
fn lock_check_renders_again_and_notices_a_moved_tag_set_in_the_sources() {
    let h = Hydrated::new();
    assert_eq!(code(&h.lock("prod", &[])), 0);
    let check = |h: &Hydrated| {
        let (k, hm) = tools();
        let dir = h.dir("prod");
        run(
            &[
                "lock",
                dir.to_str().unwrap(),
                "--check",
                "--kustomize",
                k,
                "--helm",
                hm,
            ],
            &[],
        )
    };
    let out = check(&h);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A source changed and not rendered yet.
    h.write("values/prod.yaml", "replicas: 6\n");
    let out = check(&h);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "rendered/api.yaml: not what its render step renders, pinned to the current digests"
        ),
        "{}",
        stderr(&out)
    );
    git(&h.repo, &["checkout", "--", "values"]);
    h.registry.push_image("shop/web", "1.1", b"rebuilt");
    let before = snapshot(&h.dir("prod"));
    let out = check(&h);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/shop/web:1.1: digest changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&h.dir("prod")), before);
}

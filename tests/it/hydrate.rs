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
    TOOLS.get_or_init(|| (tool("kustomize"), tool("helm")))
}

/// The path of the tool `name` that scripts/tools builds: `$LOCKSTEP_<NAME>` when set
/// (scripts/test exports each), else `scripts/tools build` (once) tells.
pub(crate) fn tool(name: &str) -> String {
    if let Ok(path) = std::env::var(format!("LOCKSTEP_{}", name.to_ascii_uppercase())) {
        return path;
    }
    static BUILT: OnceLock<String> = OnceLock::new();
    let text = BUILT.get_or_init(|| {
        let out = std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tools"))
            .arg("build")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    });
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("scripts/tools builds no {name}"))
        .to_owned()
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
        self.lock_dir(&self.dir(env), k, h, extra)
    }

    /// `lock` of any directory, with the given tools.
    fn lock_dir(
        &self,
        dir: &Path,
        kustomize: &str,
        helm: &str,
        extra: &[&str],
    ) -> std::process::Output {
        let mut args = vec![
            "lock",
            dir.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
            "--kustomize",
            kustomize,
            "--helm",
            helm,
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
    let helm_version = std::process::Command::new(&tools().1)
        .args(["version", "--template", "{{.Version}}"])
        .output()
        .unwrap()
        .stdout;
    let helm_version = String::from_utf8(helm_version).unwrap();
    assert!(helm_version.starts_with("v3."), "{helm_version}");
    assert!(
        lock.contains(&format!(
            "[[render]]\noutput = \"rendered/api.yaml\"\nrenderer = \"helm\"\nversion = \"{helm_version}\""
        )),
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
        err.contains(
            "the input \"../../../outside\" lies outside the Git work tree the locked directory is in"
        ),
        "{err}"
    );
    git(&h.repo, &["checkout", "--", "deploy"]);

    // kustomize's own error, with the step and the command.
    h.write(
        "overlays/staging/kustomization.yaml",
        "resources:\n  - ../../base\npatches:\n  - path: missing.yaml\n",
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

/// Regression: the work-tree reader checked only the last component of an input for a
/// symlink, so `charts -> /elsewhere` copied files from outside the repository into the
/// render (and its hash).
#[test]
fn a_symlink_on_the_way_to_a_render_input_is_refused() {
    let h = Hydrated::new();
    let outside = tempfile::tempdir().unwrap();
    copy_tree(
        &h.repo.join("charts"),
        &outside.path().join("charts"),
        &h.registry.host(),
    );
    std::fs::write(outside.path().join("charts/api/token.txt"), "hunter2").unwrap();
    std::fs::remove_dir_all(h.repo.join("charts")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("charts"), h.repo.join("charts")).unwrap();
    let before = snapshot(&h.dir("prod"));
    let out = h.lock("prod", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("rendered/api.yaml: the input \"../../charts/api\" cannot be read"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{} is a symbolic link",
            h.repo.canonicalize().unwrap().join("charts").display()
        )),
        "{err}"
    );
    assert_eq!(snapshot(&h.dir("prod")), before);
}

/// Regression: a file Git ignores, or one never added, under an input root was copied into
/// the render and hashed, though no commit holds it — a secret could reach a rendered output
/// and the lockfile could not verify at its commit.
#[test]
fn an_ignored_or_untracked_file_under_a_render_input_is_refused() {
    let h = Hydrated::new();
    h.write(".gitignore", "*.secret\n");
    git(&h.repo, &["add", ".gitignore"]);
    git(&h.repo, &["commit", "-qm", "ignore secrets"]);
    h.write("charts/api/token.secret", "hunter2\n");
    let before = snapshot(&h.dir("prod"));
    let out = h.lock("prod", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "../../charts/api/token.secret is not tracked by Git (new, or ignored): a commit would not hold it"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&h.dir("prod")), before);
    std::fs::remove_file(h.repo.join("charts/api/token.secret")).unwrap();

    // A new file is refused until it is added; then the same lock works.
    h.write(
        "overlays/prod/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n",
    );
    let err = stderr(&h.lock("prod", &[]));
    assert!(
        err.contains("../../overlays/prod/extra.yaml is not tracked by Git"),
        "{err}"
    );
    git(&h.repo, &["add", "overlays/prod/extra.yaml"]);
    let out = h.lock("prod", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// Regression: a kustomization entry naming nothing was skipped, so the render failed later
/// (or, through a symlink, read elsewhere) without saying which entry was wrong.
#[test]
fn a_kustomization_entry_that_names_nothing_is_refused_naming_it() {
    let h = Hydrated::new();
    h.write(
        "overlays/staging/kustomization.yaml",
        "resources:\n  - ../../base\n  - ../../nowhere\n",
    );
    let before = snapshot(&h.dir("staging"));
    let out = h.lock("staging", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "shop.yaml: ../../overlays/staging/kustomization.yaml refers to \"../../nowhere\", which does not exist"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&h.dir("staging")), before);
}

/// Regression: only resources/bases/components were checked for URLs, but kustomize's loader
/// fetches any file it loads from an http(s) URL — patches, generator files, CRDs, the
/// OpenAPI schema — and a loopback URL bypasses a proxy setting.
#[test]
fn a_patch_generator_or_schema_file_given_as_a_url_is_refused() {
    let h = Hydrated::new();
    let before = snapshot(&h.dir("staging"));
    for (yaml, entry) in [
        (
            "patches:\n  - path: https://example.com/p.yaml\n",
            "https://example.com/p.yaml",
        ),
        (
            "patchesStrategicMerge:\n  - http://127.0.0.1:1/p.yaml\n",
            "http://127.0.0.1:1/p.yaml",
        ),
        (
            "configMapGenerator:\n  - name: c\n    files:\n      - conf=HTTP://127.0.0.1:1/x\n",
            "HTTP://127.0.0.1:1/x",
        ),
        (
            "secretGenerator:\n  - name: s\n    envs:\n      - https://example.com/.env\n",
            "https://example.com/.env",
        ),
        (
            "crds:\n  - http://localhost:8080/crd.yaml\n",
            "http://localhost:8080/crd.yaml",
        ),
        (
            "openapi:\n  path: https://example.com/schema.json\n",
            "https://example.com/schema.json",
        ),
        (
            "replacements:\n  - path: https://example.com/r.yaml\n",
            "https://example.com/r.yaml",
        ),
    ] {
        h.write(
            "overlays/staging/kustomization.yaml",
            &format!("resources:\n  - ../../base\n{yaml}"),
        );
        let out = h.lock("staging", &[]);
        assert_eq!(code(&out), 1, "{yaml}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "../../overlays/staging/kustomization.yaml refers to {entry:?}, which would make rendering depend on the network"
            )),
            "{yaml}: {}",
            stderr(&out)
        );
        assert_eq!(snapshot(&h.dir("staging")), before);
    }
}

/// Regression: an input root holding the locked directory (`..`, or a kustomize resource
/// reaching back to it) made the lockfile and the outputs inputs of themselves, so no lock
/// could ever verify; a root inside it hashed manifests `lock` then rewrites.
#[test]
fn an_input_holding_or_inside_the_locked_directory_is_refused() {
    let h = Hydrated::new();
    let step = |inputs: &str| {
        format!(
            "[[render]]\nkustomize = \"../../overlays/staging\"\noutput = \"shop.yaml\"\ninputs = [{inputs}]\n"
        )
    };
    let before = snapshot(&h.dir("staging"));
    for (toml, why) in [
        (
            step("\"..\""),
            "the input \"..\" holds the locked directory",
        ),
        (
            step("\"../staging\""),
            "the input \"../staging\" holds the locked directory",
        ),
        (
            step("\"../../..\""),
            "the input \"../../..\" lies outside the Git work tree",
        ),
        (
            step("\"notes\""),
            "the input \"notes\" lies inside the locked directory",
        ),
    ] {
        h.write("deploy/staging/lockstep.toml", &toml);
        let out = h.lock("staging", &[]);
        assert_eq!(code(&out), 1, "{toml}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{toml}: {}", stderr(&out));
    }
    git(&h.repo, &["checkout", "--", "deploy"]);
    h.write(
        "overlays/staging/kustomization.yaml",
        "resources:\n  - ../../base\n  - ../../deploy/staging\n",
    );
    let out = h.lock("staging", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the input \"../../deploy/staging\" holds the locked directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&h.dir("staging")), before);
}

/// Regression: outside any Git work tree nothing bounded what an input's `..` reached.
#[test]
fn a_render_step_in_no_git_work_tree_may_not_reach_above_the_locked_directory() {
    let h = Hydrated::new();
    let plain = tempfile::tempdir().unwrap();
    copy_tree(Path::new(FIXTURE), plain.path(), &h.registry.host());
    let dir = plain.path().join("deploy/prod");
    let before = snapshot(&dir);
    let (k, helm) = tools();
    let out = h.lock_dir(&dir, k, helm, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the input \"../../overlays/prod\" lies outside the locked directory, which is in no Git work tree"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&dir), before);
}

/// A mock renderer (`mock-dialing-helm`, a shell script) that dials a listener on the
/// machine's loopback — what no real chart makes helm do, and what a proxy setting cannot
/// stop: the render runs in a network namespace of its own, so the listener sees nothing.
#[test]
fn a_renderer_that_dials_the_loopback_reaches_nothing() {
    let h = Hydrated::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mock = h._tmp.path().join("mock-dialing-helm");
    std::fs::write(
        &mock,
        format!(
            "#!/bin/bash\nif [ \"$1\" = version ]; then printf v3.99.0; exit 0; fi\nif exec 3<>/dev/tcp/127.0.0.1/{port}; then echo reached; exit 0; fi\necho the network is unreachable >&2\nexit 3\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&mock, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&h.dir("staging"));
    let out = h.lock_dir(&h.dir("staging"), &tools().0, mock.to_str().unwrap(), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("api.yaml: `helm template api")
            && stderr(&out).contains("the network is unreachable"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the renderer reached the loopback"
    );
    assert_eq!(snapshot(&h.dir("staging")), before);
}

/// `helm package` the chart at `chart` (relative to the repository) and `helm push` it to the
/// test registry under `charts/`; the manifest digest helm reports.
fn push_chart(h: &Hydrated, chart: &str) -> String {
    let helm = &tools().1;
    let work = tempfile::tempdir().unwrap();
    let helm_run = |args: &[&str]| {
        let out = std::process::Command::new(helm)
            .args(args)
            .env_clear()
            .env("HOME", work.path())
            .env("HELM_CACHE_HOME", work.path().join("cache"))
            .env("HELM_CONFIG_HOME", work.path().join("config"))
            .env("HELM_DATA_HOME", work.path().join("data"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm {args:?}: {text}");
        text
    };
    let packaged = helm_run(&[
        "package",
        h.repo.join(chart).to_str().unwrap(),
        "-d",
        work.path().to_str().unwrap(),
    ]);
    let archive = packaged.trim().rsplit(' ').next().unwrap().to_owned();
    let pushed = helm_run(&[
        "push",
        &archive,
        &format!("oci://{}/charts", h.registry.host()),
        "--plain-http",
    ]);
    pushed
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in {pushed}"))
        .trim()
        .to_owned()
}

#[test]
fn a_chart_from_an_oci_registry_is_pinned_by_digest_and_re_rendered_from_it() {
    let h = Hydrated::new();
    let pushed = push_chart(&h, "charts/api");
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    let host = h.registry.host();
    h.write(
        "deploy/oci/lockstep.toml",
        &format!(
            "[[render]]\nhelm = {{ chart = \"oci://{host}/charts/api:0.1.0\", release = \"api\", namespace = \"shop\", values = [\"../../values/prod.yaml\"] }}\noutput = \"api.yaml\"\n"
        ),
    );
    git(&h.repo, &["add", "-A"]);
    git(&h.repo, &["commit", "-qm", "a chart from the registry"]);

    let out = h.lock("oci", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lock = lockfile_text(&h.dir("oci"));
    assert!(
        lock.contains(&format!(
            "chart = \"oci://{host}/charts/api:0.1.0@{pushed}\"\nroots = [\"../../values/prod.yaml\"]"
        )),
        "{lock}"
    );
    let api = h.read("deploy/oci/api.yaml");
    assert!(
        api.contains("replicas: 2") && api.contains("/shop/api:2.0@sha256:"),
        "{api}"
    );
    // Offline verify needs no registry for the chart; --rerender fetches it by digest.
    let out = h.verify("oci", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = h.verify("oci", &["--rerender"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The version's tag moves to another chart: `lock --check` notices; the signed
    // lockfile still re-renders from the chart it pinned.
    h.write(
        "charts/api/values.yaml",
        &format!(
            "{}\nextra: moved\n",
            h.read("charts/api/values.yaml").trim_end()
        ),
    );
    h.write(
        "charts/api/templates/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: moved\n",
    );
    let moved = push_chart(&h, "charts/api");
    assert_ne!(moved, pushed);
    let out = h.lock("oci", &["--check"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = h.verify("oci", &["--rerender"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = h.lock("oci", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        lockfile_text(&h.dir("oci")).contains(&format!("charts/api:0.1.0@{moved}")),
        "{}",
        lockfile_text(&h.dir("oci"))
    );
    assert!(h.read("deploy/oci/api.yaml").contains("name: moved"));

    // A chart the registry does not have: refused, named, nothing written.
    h.write(
        "deploy/oci/lockstep.toml",
        &format!(
            "[[render]]\nhelm = {{ chart = \"oci://{host}/charts/missing:1.0.0\", release = \"api\" }}\noutput = \"api.yaml\"\n"
        ),
    );
    let before = snapshot(&h.dir("oci"));
    let out = h.lock("oci", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "api.yaml: the chart oci://{host}/charts/missing:1.0.0 cannot be fetched"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&h.dir("oci")), before);
}

/// `lock --pin-sources`: the overlay's `images:` entry gets the locked digest beside its
/// tag (kustomize then renders `name:tag@digest` itself), `--check --pin-sources` fails while
/// a source is unpinned, Helm values are named and left, and `--commit` commits the pinned
/// source with the lock, in a commit that verifies and re-renders.
#[test]
fn lock_pin_sources_writes_the_digest_into_the_kustomization_and_commits_it() {
    let h = Hydrated::new();
    let overlay = "overlays/prod/kustomization.yaml";
    let before = h.read(overlay);
    let out = h.lock("prod", &["--check", "--pin-sources"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = h.lock("prod", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    git(&h.repo, &["add", "-A"]);
    git(&h.repo, &["commit", "-qm", "locked"]);
    let out = h.lock("prod", &["--check", "--pin-sources"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the sources are not pinned to the locked digests:\n  ../../overlays/prod/kustomization.yaml:10: ")
            && stderr(&out).contains("/shop/web:1.1 → sha256:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.read(overlay), before, "--check writes nothing");

    let out = h.lock("prod", &["--pin-sources", "--commit"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rendered/api.yaml is rendered by helm; its images are pinned in the rendered output only"),
        "{}",
        stderr(&out)
    );
    let digest = crate::cli::digest_in_lock(&h.dir("prod"), "/shop/web:1.1");
    let pinned = h.read(overlay);
    assert_eq!(
        pinned,
        before.replace(
            "    newTag: \"1.1\"\n",
            &format!("    newTag: \"1.1\"\n    digest: \"{digest}\"\n")
        )
    );
    // Committed together: nothing left over, and the commit verifies and re-renders.
    let status = git(&h.repo, &["status", "--porcelain"]);
    assert_eq!(status.trim(), "", "{status}");
    let out = h.verify("prod", &["--rev", "HEAD", "--rerender"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        h.read("deploy/prod/rendered/shop.yaml")
            .contains(&format!("/shop/web:1.1@{digest}"))
    );
    let out = h.lock("prod", &["--check", "--pin-sources"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The tag moves, twice: each --pin-sources replaces the digest in the source and the
    // lock follows the tag. Regression (review): the second render's digest was taken for
    // one written by hand, so the image was held and stopped following its tag.
    for rebuild in [&b"rebuilt"[..], &b"rebuilt again"[..]] {
        let before = crate::cli::digest_in_lock(&h.dir("prod"), "/shop/web:1.1");
        h.registry.push_image("shop/web", "1.1", rebuild);
        let out = h.lock("prod", &["--pin-sources"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let now = crate::cli::digest_in_lock(&h.dir("prod"), "/shop/web:1.1");
        assert_ne!(now, before, "{}", stderr(&out));
        assert!(
            !held(&h, "/shop/web:1.1"),
            "{}",
            lockfile_text(&h.dir("prod"))
        );
        let moved = h.read(overlay);
        assert!(moved.contains(&format!("digest: \"{now}\"")), "{moved}");
        assert_eq!(moved.matches("digest:").count(), 1, "{moved}");
        let out = h.verify("prod", &["--rerender"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    // A newTag bumped with the old digest line left in place: the digest written is the new
    // tag's, not the stale one (which lockstep would otherwise hold as written by hand).
    let stale = h.read(overlay);
    h.write(
        overlay,
        &stale.replace("newTag: \"1.1\"", "newTag: \"1.0\""),
    );
    let out = h.lock("prod", &["--pin-sources"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let web10 = crate::cli::digest_in_lock(&h.dir("prod"), "/shop/web:1.0");
    assert!(!held(&h, "/shop/web:1.0"));
    assert!(h.read(overlay).contains(&format!("digest: \"{web10}\"")));
    assert!(
        h.read("deploy/prod/rendered/shop.yaml")
            .contains(&format!("/shop/web:1.0@{web10}"))
    );

    // A lock that fails after the sources were written puts them back: a detached HEAD
    // refuses --commit.
    git(&h.repo, &["add", "-A"]);
    git(&h.repo, &["commit", "-qm", "web 1.0"]);
    git(&h.repo, &["checkout", "-q", "--detach"]);
    h.registry.push_image("shop/web", "1.0", b"rebuilt 1.0");
    let before = h.read(overlay);
    let out = h.lock("prod", &["--pin-sources", "--commit"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("put ../../overlays/prod/kustomization.yaml back as it was"),
        "{}",
        stderr(&out)
    );
    assert_eq!(h.read(overlay), before);
}

fn held(h: &Hydrated, suffix: &str) -> bool {
    let lock: toml::Table = toml::from_str(&lockfile_text(&h.dir("prod"))).unwrap();
    lock["image"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("{suffix} not in the lockfile"))
        .get("held")
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

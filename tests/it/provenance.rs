//! Image provenance with the real cosign (built by scripts/tools): images signed in the local
//! Distribution registry with `cosign sign --key`, a `[[provenance]]` rule in lockstep.toml,
//! and `lock` pinning only digests whose signatures verify; the records travel in the signed
//! lockfile and `verify` re-checks them offline. Unsigned, wrongly signed,
//! signed-for-another-digest and signed-for-another-repository images are refused, each
//! named with why; `cosign verify` agrees with lockstep on every image but the last, which
//! cosign accepts (it checks the digest claim only) and lockstep refuses on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::{code, init_repo, keygen, lockfile_text, run, snapshot, stderr, stdout};
use crate::harness::{RegistryOptions, TestRegistry};
use crate::images::{http_client, run as block_on};
use lockstep::model::Digest;

/// The predicate type of the test attestations (a custom one: cosign takes any JSON for it).
const PREDICATE_TYPE: &str = "https://lockstep.test/ci/v1";

/// `cosign` with the environment it needs offline (no password on the keys, its caches in
/// `home`).
pub(crate) fn cosign(home: &Path, args: &[&str]) -> Output {
    cosign_of(Cosign::V2, home, args)
}

/// Which cosign: v2 (simple-signing payloads under the `.sig` tag) or v3 (Sigstore bundles
/// as OCI 1.1 referrers, its default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cosign {
    V2,
    V3,
}

impl Cosign {
    fn tool(self) -> String {
        crate::hydrate::tool(match self {
            Cosign::V2 => "cosign",
            Cosign::V3 => "cosign3",
        })
    }
}

/// [`cosign`] of the given version.
pub(crate) fn cosign_of(version: Cosign, home: &Path, args: &[&str]) -> Output {
    Command::new(version.tool())
        .args(args)
        .env("COSIGN_PASSWORD", "")
        .env("HOME", home)
        .env("COSIGN_YES", "true")
        // v2's `--registry-referrers-mode=oci-1-1` is behind it.
        .env("COSIGN_EXPERIMENTAL", "1")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

/// A cosign key pair `name.key`/`name.pub` in `dir`.
pub(crate) fn cosign_keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let out = Command::new(crate::hydrate::tool("cosign"))
        .args(["generate-key-pair"])
        .current_dir(&sub)
        .env("COSIGN_PASSWORD", "")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (sub.join("cosign.key"), sub.join("cosign.pub"))
}

pub(crate) struct Signed {
    pub(crate) registry: TestRegistry,
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) allowed_signers: PathBuf,
    pub(crate) ci_cosign: (PathBuf, PathBuf),
    pub(crate) cosign: Cosign,
}

impl Signed {
    fn new() -> Signed {
        Signed::with(RegistryOptions::default(), Cosign::V2)
    }

    /// A signed project on a registry run with `options`, signing with `cosign`.
    pub(crate) fn with(options: RegistryOptions, cosign: Cosign) -> Signed {
        let registry = TestRegistry::start(options);
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let dir = repo.join("deploy");
        std::fs::create_dir_all(&dir).unwrap();
        init_repo(&repo);
        let (key, line) = keygen(tmp.path(), "ci_key", "ci@example.com");
        let allowed_signers = tmp.path().join("allowed_signers");
        std::fs::write(&allowed_signers, line).unwrap();
        let ci_cosign = cosign_keys(tmp.path(), "build");
        std::fs::copy(&ci_cosign.1, dir.join("cosign.pub")).unwrap();
        let host = registry.host();
        std::fs::write(
            dir.join("lockstep.toml"),
            format!(
                "[[provenance]]\nimages = [\"{host}/shop/*\"]\ncosign-keys = [\"cosign.pub\"]\n"
            ),
        )
        .unwrap();
        Signed {
            registry,
            tmp,
            dir,
            key,
            allowed_signers,
            ci_cosign,
            cosign,
        }
    }

    pub(crate) fn reference(&self, repo: &str, digest: &Digest) -> String {
        format!("{}/{repo}@{digest}", self.registry.host())
    }

    pub(crate) fn sign(&self, key: &Path, repo: &str, digest: &Digest) {
        self.sign_with(key, &[], repo, digest);
    }

    /// `cosign sign --key KEY EXTRA… REPO@DIGEST` (offline), which must succeed. v3 is kept
    /// off the transparency log by a signing config that names no log.
    pub(crate) fn sign_with(&self, key: &Path, extra: &[&str], repo: &str, digest: &Digest) {
        let reference = self.reference(repo, digest);
        let mut args = vec!["sign", "--key", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        let offline = self.offline_flags();
        args.extend(offline.iter().map(String::as_str));
        args.extend(["--allow-insecure-registry", &reference]);
        let out = cosign_of(self.cosign, self.tmp.path(), &args);
        assert!(
            out.status.success(),
            "cosign sign {reference}: {}",
            stderr(&out)
        );
    }

    /// What keeps `cosign sign`/`attest` off the transparency log: v2's
    /// `--tlog-upload=false`; for v3, a signing config that names no log (made once).
    fn offline_flags(&self) -> Vec<String> {
        match self.cosign {
            Cosign::V2 => vec!["--tlog-upload=false".into()],
            Cosign::V3 => {
                let config = self.tmp.path().join("signing-config.json");
                let config = config.to_str().unwrap().to_owned();
                if !Path::new(&config).exists() {
                    let out = cosign_of(
                        Cosign::V3,
                        self.tmp.path(),
                        &["signing-config", "create", "--out", &config],
                    );
                    assert!(out.status.success(), "{}", stderr(&out));
                }
                vec!["--signing-config".into(), config]
            }
        }
    }

    /// `cosign attest --key KEY` a small SLSA provenance predicate for `REPO@DIGEST`
    /// (offline), which must succeed: v2 stores it under the `.att` tag, v3 as a referrer.
    pub(crate) fn attest(&self, key: &Path, repo: &str, digest: &Digest) {
        self.attest_with(key, &[], repo, digest);
    }

    /// [`Self::attest`] with extra flags (a certificate and its chain).
    pub(crate) fn attest_with(&self, key: &Path, extra: &[&str], repo: &str, digest: &Digest) {
        let predicate = self.tmp.path().join("predicate.json");
        std::fs::write(&predicate, r#"{"buildType":"https://example.com/ci@v1"}"#).unwrap();
        let reference = self.reference(repo, digest);
        let mut args = vec![
            "attest",
            "--key",
            key.to_str().unwrap(),
            "--type",
            PREDICATE_TYPE,
            "--predicate",
            predicate.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let offline = self.offline_flags();
        args.extend(offline.iter().map(String::as_str));
        args.extend(["--allow-insecure-registry", &reference]);
        let out = cosign_of(self.cosign, self.tmp.path(), &args);
        assert!(
            out.status.success(),
            "cosign attest {reference}: {}",
            stderr(&out)
        );
    }

    /// `cosign verify-attestation --key` (offline) against `host`.
    pub(crate) fn cosign_verifies_attestation_at(
        &self,
        host: &str,
        public: &Path,
        repo: &str,
        digest: &Digest,
    ) -> bool {
        let out = cosign_of(
            self.cosign,
            self.tmp.path(),
            &[
                "verify-attestation",
                "--key",
                public.to_str().unwrap(),
                "--type",
                PREDICATE_TYPE,
                "--insecure-ignore-tlog",
                "--allow-insecure-registry",
                &format!("{host}/{repo}@{digest}"),
            ],
        );
        out.status.success()
    }

    /// `cosign verify --key` (offline: no transparency log), as a user would check.
    pub(crate) fn cosign_verifies(&self, public: &Path, repo: &str, digest: &Digest) -> bool {
        self.cosign_verifies_at(&self.registry.host(), public, repo, digest)
    }

    /// [`Self::cosign_verifies`] against another registry (a mirror).
    pub(crate) fn cosign_verifies_at(
        &self,
        host: &str,
        public: &Path,
        repo: &str,
        digest: &Digest,
    ) -> bool {
        let out = cosign_of(
            self.cosign,
            self.tmp.path(),
            &[
                "verify",
                "--key",
                public.to_str().unwrap(),
                "--insecure-ignore-tlog",
                "--allow-insecure-registry",
                &format!("{host}/{repo}@{digest}"),
            ],
        );
        out.status.success()
    }

    pub(crate) fn deployment(&self, images: &[&str]) {
        let host = self.registry.host();
        let containers: String = images
            .iter()
            .enumerate()
            .map(|(i, image)| format!("        - name: c{i}\n          image: {host}/{image}\n"))
            .collect();
        std::fs::write(
            self.dir.join("app.yaml"),
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n    spec:\n      containers:\n{containers}"
            ),
        )
        .unwrap();
    }

    pub(crate) fn lock(&self) -> Output {
        run(
            &[
                "lock",
                self.dir.to_str().unwrap(),
                "--key",
                self.key.to_str().unwrap(),
            ],
            &[],
        )
    }

    pub(crate) fn verify(&self) -> Output {
        run(
            &[
                "verify",
                self.dir.to_str().unwrap(),
                "--allowed-signers",
                self.allowed_signers.to_str().unwrap(),
            ],
            &[],
        )
    }

    /// Copy the signature manifest of `from` (a `sha256-<hex>.sig` tag) to the tag of `to`
    /// in `repo`: a real signature, presented for another digest.
    fn copy_signature(&self, repo: &str, from: &Digest, to_repo: &str, to: &Digest) {
        let base = format!("http://{}", self.registry.host());
        let tag = |d: &Digest| format!("{}.sig", d.as_str().replace(':', "-"));
        let client = http_client(None);
        let accept = "application/vnd.oci.image.manifest.v1+json";
        block_on(async {
            let manifest = client
                .get(format!("{base}/v2/{repo}/manifests/{}", tag(from)))
                .header("Accept", accept)
                .send()
                .await
                .unwrap();
            assert!(manifest.status().is_success());
            let bytes = manifest.bytes().await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            // Blobs must exist in the target repository: mount them from the source.
            let mut blobs = vec![body["config"]["digest"].as_str().unwrap().to_owned()];
            for layer in body["layers"].as_array().unwrap() {
                blobs.push(layer["digest"].as_str().unwrap().to_owned());
            }
            for blob in blobs {
                let mounted = client
                    .post(format!(
                        "{base}/v2/{to_repo}/blobs/uploads/?mount={blob}&from={repo}"
                    ))
                    .send()
                    .await
                    .unwrap();
                assert!(mounted.status().is_success(), "{}", mounted.status());
            }
            let put = client
                .put(format!("{base}/v2/{to_repo}/manifests/{}", tag(to)))
                .header("Content-Type", accept)
                .body(bytes)
                .send()
                .await
                .unwrap();
            assert!(put.status().is_success(), "{}", put.status());
        });
    }
}

impl Signed {
    /// Add cosign's certificate and chain annotations to the signature layers of `digest`
    /// (what `cosign sign --certificate --certificate-chain` would have written).
    fn attach_certificate(&self, repo: &str, digest: &Digest, cert: &str, chain: &str) {
        let base = format!("http://{}", self.registry.host());
        let tag = format!("{}.sig", digest.as_str().replace(':', "-"));
        let client = http_client(None);
        let accept = "application/vnd.oci.image.manifest.v1+json";
        block_on(async {
            let url = format!("{base}/v2/{repo}/manifests/{tag}");
            let got = client
                .get(&url)
                .header("Accept", accept)
                .send()
                .await
                .unwrap();
            assert!(got.status().is_success());
            let mut body: serde_json::Value =
                serde_json::from_slice(&got.bytes().await.unwrap()).unwrap();
            for layer in body["layers"].as_array_mut().unwrap() {
                let notes = layer["annotations"].as_object_mut().unwrap();
                notes.insert("dev.sigstore.cosign/certificate".into(), cert.into());
                notes.insert("dev.sigstore.cosign/chain".into(), chain.into());
            }
            let put = client
                .put(&url)
                .header("Content-Type", accept)
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .unwrap();
            assert!(put.status().is_success(), "{}", put.status());
        });
    }
}

#[test]
fn lock_pins_only_digests_signed_by_the_rules_key_and_verify_rechecks_them_offline() {
    let s = Signed::new();
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign(&s.ci_cosign.0, "shop/api", &api);
    // An image outside the rule's pattern needs no signature.
    s.registry.push_image("tools/debug", "1", b"debug");
    s.deployment(&["shop/api:1.0", "tools/debug:1"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lock = lockfile_text(&s.dir);
    assert!(
        lock.contains("[[image.signature]]\nmanifest = \"sha256:"),
        "{lock}"
    );
    assert_eq!(lock.matches("[[image.signature]]").count(), 1, "{lock}");
    let out = s.verify();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("; 1 of 2 images carry cosign signatures their provenance rule requires, re-checked offline"),
        "{}",
        stdout(&out)
    );
    assert!(s.cosign_verifies(&s.ci_cosign.1, "shop/api", &api));

    // The verifier's own requirement, whatever lockstep.toml says: the build key passes, any
    // other key (or an image the records do not cover) fails.
    let verify_with = |key: &Path, images: &[&str]| {
        let dir = s.dir.to_str().unwrap().to_owned();
        let trust = s.allowed_signers.to_str().unwrap().to_owned();
        let mut args = vec!["verify".to_owned(), dir, "--allowed-signers".into(), trust];
        args.extend(["--cosign-key".into(), key.to_str().unwrap().to_owned()]);
        for i in images {
            args.extend(["--cosign-images".into(), (*i).to_owned()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &[])
    };
    let shop = format!("{}/shop/*", s.registry.host());
    let out = verify_with(&s.ci_cosign.1, &[&shop]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = verify_with(&s.ci_cosign.1, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("/tools/debug:1: the provenance rule at the verifier's --cosign-key/--cosign-root requires a signature"),
        "{}",
        stderr(&out)
    );
    let stranger = cosign_keys(s.tmp.path(), "stranger");
    let out = verify_with(&stranger.1, &[&shop]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));

    // An unchanged digest keeps its record without asking the registry again.
    let before = s.registry.requests().len();
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let sig_requests = s.registry.requests()[before..]
        .iter()
        .filter(|r| r.contains(".sig"))
        .count();
    assert_eq!(sig_requests, 0, "{:?}", &s.registry.requests()[before..]);

    // The rule's key replaced, the lockfile not re-locked: verify refuses (the binding, then
    // after a re-lock with the old signature only, the signature check).
    let other = cosign_keys(s.tmp.path(), "other");
    std::fs::copy(&other.1, s.dir.join("cosign.pub")).unwrap();
    let out = s.verify();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let before = snapshot(&s.dir);
    let out = s.lock();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{}/shop/api@{api}: 1 signature(s) found, none valid",
            s.registry.host()
        )) && stderr(&out)
            .contains("its signature does not verify under any key of the rule (cosign.pub)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&s.dir), before, "nothing written");
    assert!(!s.cosign_verifies(&other.1, "shop/api", &api));
}

#[test]
fn unsigned_foreign_and_misapplied_signatures_are_refused_each_named() {
    let s = Signed::new();
    let host = s.registry.host();
    let signed = s.registry.push_image("shop/signed", "1", b"signed");
    s.sign(&s.ci_cosign.0, "shop/signed", &signed);
    let unsigned = s.registry.push_image("shop/unsigned", "1", b"unsigned");
    let foreign = s.registry.push_image("shop/foreign", "1", b"foreign");
    let intruder = cosign_keys(s.tmp.path(), "intruder");
    s.sign(&intruder.0, "shop/foreign", &foreign);
    // A real signature of shop/signed, presented for another digest of the same repository…
    let other_digest = s
        .registry
        .push_image("shop/signed", "2", b"signed, other build");
    s.copy_signature("shop/signed", &signed, "shop/signed", &other_digest);
    // …and for the same digest in another repository.
    let copied = s.registry.push_image("shop/copy", "1", b"signed");
    assert_eq!(copied, signed);
    s.copy_signature("shop/signed", &signed, "shop/copy", &copied);
    s.deployment(&[
        "shop/signed:1",
        "shop/unsigned:1",
        "shop/foreign:1",
        "shop/signed:2",
        "shop/copy:1",
    ]);
    let before = snapshot(&s.dir);
    let out = s.lock();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("4 image(s) have no valid signature under their provenance rule"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{host}/shop/unsigned@{unsigned}: no signature found (no sha256-"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{host}/shop/foreign@{foreign}: 1 signature(s) found, none valid"
        )) && err.contains("its signature does not verify under any key of the rule (cosign.pub)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("it signs another digest ({signed})")),
        "{err}"
    );
    assert!(
        err.contains(&format!("it signs another repository ({host}/shop/signed)")),
        "{err}"
    );
    assert!(
        !err.contains(&format!("shop/signed@{signed}")),
        "the good one is not named: {err}"
    );
    assert_eq!(snapshot(&s.dir), before, "nothing written");
    // cosign agrees on each.
    let key = &s.ci_cosign.1;
    assert!(s.cosign_verifies(key, "shop/signed", &signed));
    assert!(!s.cosign_verifies(key, "shop/unsigned", &unsigned));
    assert!(!s.cosign_verifies(key, "shop/foreign", &foreign));
    assert!(!s.cosign_verifies(key, "shop/signed", &other_digest));
    // The one difference, on purpose: cosign checks only the digest claim, so a signature
    // copied next to the same bytes in another repository passes `cosign verify`; lockstep
    // also requires the payload's docker-reference to be the image's repository.
    assert!(s.cosign_verifies(key, "shop/copy", &copied));
}

#[test]
fn mirror_keeps_the_signatures_verifiable_and_check_notices_a_deleted_one() {
    let s = Signed::new();
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign(&s.ci_cosign.0, "shop/api", &api);
    s.attest(&s.ci_cosign.0, "shop/api", &api);
    s.deployment(&["shop/api:1.0"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mirror = format!("{}/dr", s.registry.host());
    let out = run(
        &[
            "mirror",
            s.dir.to_str().unwrap(),
            "--to",
            &mirror,
            "--key",
            s.key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // `cosign verify` against the mirror finds the copied signature under cosign's tag, and
    // `cosign verify-attestation` the attestation under its `.att` tag.
    assert!(s.cosign_verifies(&s.ci_cosign.1, "dr/shop/api", &api));
    assert!(s.cosign_verifies_attestation_at(
        &s.registry.host(),
        &s.ci_cosign.1,
        "dr/shop/api",
        &api
    ));
    let check = || run(&["check", s.dir.to_str().unwrap()], &[]);
    let out = check();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = s.verify();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The signature is deleted at the source: check names it, and the mirror still has it.
    let lock = lockstep::lockfile::Lockfile::parse_unverified(
        &std::fs::read(s.dir.join("lockstep.lock")).unwrap(),
    )
    .unwrap();
    let record = &lock.images[0].signatures[0];
    s.registry.delete_manifest("shop/api", &record.manifest);
    assert!(!s.cosign_verifies(&s.ci_cosign.1, "shop/api", &api));
    let out = check();
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains(&format!(
            "@{} (its recorded cosign signature or attestation manifest)",
            record.manifest
        )) && all.contains(&format!("still at {mirror}/shop/api")),
        "{all}"
    );
}

#[test]
fn inspect_shows_the_digest_and_judges_each_signature_by_the_directorys_rule() {
    let s = Signed::new();
    let host = s.registry.host();
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign(&s.ci_cosign.0, "shop/api", &api);
    let intruder = cosign_keys(s.tmp.path(), "intruder");
    s.sign(&intruder.0, "shop/api", &api);
    let dir = s.dir.to_str().unwrap().to_owned();
    let inspect = |reference: &str, extra: &[&str]| {
        let mut args = vec!["inspect", reference];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    let reference = format!("{host}/shop/api:1.0");
    let out = inspect(&reference, &["--dir", &dir]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("{host}/shop/api@{api}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  signatures (sha256-{}.sig and OCI 1.1 referrers):",
            api.hex()
        )),
        "{text}"
    );
    // cosign appends the second signature to the same manifest: one valid, one not.
    assert!(
        text.contains(": valid, key sha256:")
            && text.contains(
                ": not valid: its signature does not verify under any key of the rule (cosign.pub)"
            ),
        "{text}"
    );
    assert!(
        text.contains("  rule: lockstep.toml:1 (cosign.pub): satisfied"),
        "{text}"
    );
    // Judged by the intruder's key alone, the build system's signature is the invalid one.
    let out = inspect(&reference, &["--cosign-key", intruder.1.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // An unsigned image under the rule: exit 1, said why.
    s.registry.push_image("shop/web", "1", b"web");
    let out = inspect(&format!("{host}/shop/web:1"), &["--dir", &dir, "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["rule"]["satisfied"], false, "{json}");
    assert!(
        stderr(&out).contains("no valid signature under lockstep.toml:1"),
        "{}",
        stderr(&out)
    );
    // Outside every rule: shown, nothing required.
    s.registry.push_image("tools/debug", "1", b"debug");
    let out = inspect(&format!("{host}/tools/debug:1"), &["--dir", &dir]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("rule: none governs this image"),
        "{}",
        stdout(&out)
    );
}

/// With a provenance rule, an object whose images lockstep does not scan (a kind it has no
/// image paths for) is refused: no rule could govern an image nobody sees.
#[test]
fn a_rule_refuses_objects_whose_images_are_not_scanned() {
    let s = Signed::new();
    let host = s.registry.host();
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign(&s.ci_cosign.0, "shop/api", &api);
    s.deployment(&["shop/api:1.0"]);
    std::fs::write(
        s.dir.join("workflow.yaml"),
        format!("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n  templates:\n    - name: t\n      container:\n        image: {host}/shop/unsigned:1\n"),
    )
    .unwrap();
    let before = snapshot(&s.dir);
    let out = s.lock();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("Workflow"), "{}", stderr(&out));
    assert_eq!(snapshot(&s.dir), before);
}

/// The hex of `text`'s bytes, for openssl's `DER:` extension values.
fn hex_of(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `openssl` in `dir`: fails the test with its stderr.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A P-256 key `NAME.key` in `d`.
fn ec_key(d: &Path, name: &str) {
    openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// A self-signed root `NAME.pem` (and `NAME.key`) in `d`, with `constraints` (its
/// basicConstraints) and keyCertSign.
fn root_ca(d: &Path, name: &str, subject: &str, constraints: &str) {
    ec_key(d, name);
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-days",
            "30",
            "-addext",
            constraints,
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// `NAME.pem` (and its key) issued by `BY` (`BY.pem`, `BY.key`) in `d` with the extensions
/// `ext` (openssl extfile lines).
fn issue(d: &Path, name: &str, subject: &str, by: &str, ext: &str) {
    ec_key(d, name);
    let (key, csr, cnf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.cnf"),
    );
    openssl(
        d,
        &["req", "-new", "-key", &key, "-subj", subject, "-out", &csr],
    );
    std::fs::write(d.join(&cnf), ext).unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{by}.pem"),
            "-CAkey",
            &format!("{by}.key"),
            "-CAcreateserial",
            "-days",
            "7",
            "-extfile",
            &cnf,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A code-signing leaf's extensions for `identity`, with the OIDC issuer (the v1 extension,
/// which `cosign verify --certificate-oidc-issuer` reads).
fn leaf_ext(identity: &str, issuer: &str) -> String {
    format!(
        "subjectAltName=email:{identity}\nextendedKeyUsage=codeSigning\nkeyUsage=critical,digitalSignature\n1.3.6.1.4.1.57264.1.1=DER:{}\n",
        hex_of(issuer)
    )
}

/// `NAME.key` imported as a cosign key (`NAME-cosign.key`), once.
fn import_cosign_key(d: &Path, home: &Path, name: &str) -> PathBuf {
    let imported = d.join(format!("{name}-cosign.key"));
    if !imported.exists() {
        let out = Command::new(crate::hydrate::tool("cosign"))
            .args([
                "import-key-pair",
                "--key",
                &format!("{name}.key"),
                "--output-key-prefix",
                &format!("{name}-cosign"),
            ])
            .current_dir(d)
            .env("COSIGN_PASSWORD", "")
            .env("HOME", home)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    imported
}

/// A test CA (`NAME/ca.pem`, P-256) and a code-signing leaf for `identity` with the OIDC
/// issuer, imported as a cosign key pair: (ca.pem, cosign key, leaf.pem).
pub(crate) fn test_ca(
    dir: &Path,
    name: &str,
    identity: &str,
    issuer: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    root_ca(
        &d,
        "ca",
        "/CN=lockstep test root",
        "basicConstraints=critical,CA:TRUE",
    );
    issue(&d, "leaf", "/CN=ci", "ca", &leaf_ext(identity, issuer));
    (
        d.join("ca.pem"),
        import_cosign_key(&d, dir, "leaf"),
        d.join("leaf.pem"),
    )
}

#[test]
fn a_certificate_from_the_rules_root_for_its_identity_satisfies_it_and_others_do_not() {
    let s = Signed::new();
    let host = s.registry.host();
    let issuer = "https://issuer.example.com";
    let (ca, key, leaf) = test_ca(s.tmp.path(), "pki", "ci@example.com", issuer);
    let (_, other_key, other_leaf) = test_ca(s.tmp.path(), "rogue", "ci@example.com", issuer);
    // Same root, another identity: a second leaf from the first CA.
    let pki = s.tmp.path().join("pki");
    issue(
        &pki,
        "dev",
        "/CN=dev",
        "ca",
        &leaf_ext("dev@example.com", issuer),
    );
    let (wrong_key, wrong_leaf) = (
        import_cosign_key(&pki, s.tmp.path(), "dev"),
        pki.join("dev.pem"),
    );
    std::fs::copy(&ca, s.dir.join("ca.pem")).unwrap();
    std::fs::write(
        s.dir.join("lockstep.toml"),
        format!(
            "[[provenance]]\nimages = [\"{host}/shop/*\"]\ncosign-certificate = {{ roots = [\"ca.pem\"], identity = \"ci@example.com\", issuer = \"{issuer}\" }}\n"
        ),
    )
    .unwrap();
    let sign_with_cert = |key: &Path, cert: &Path, chain: &Path, repo: &str, digest: &Digest| {
        let (cert, chain) = (cert.to_str().unwrap(), chain.to_str().unwrap());
        s.sign_with(
            key,
            &["--certificate", cert, "--certificate-chain", chain],
            repo,
            digest,
        );
    };
    let good = s.registry.push_image("shop/good", "1", b"good");
    // Regression (review): the attached chain is unsigned; certificates off the path (here
    // another CA) must not be recorded in the signed lockfile.
    let rogue_ca = s.tmp.path().join("rogue/ca.pem");
    let padded = s.tmp.path().join("padded-chain.pem");
    std::fs::write(
        &padded,
        [
            std::fs::read(&rogue_ca).unwrap(),
            std::fs::read(&ca).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    sign_with_cert(&key, &leaf, &padded, "shop/good", &good);
    let rogue = s.registry.push_image("shop/rogue", "1", b"rogue");
    sign_with_cert(&other_key, &other_leaf, &rogue_ca, "shop/rogue", &rogue);
    let dev = s.registry.push_image("shop/dev", "1", b"dev");
    sign_with_cert(&wrong_key, &wrong_leaf, &ca, "shop/dev", &dev);
    let plain = s.registry.push_image("shop/plain", "1", b"plain");
    s.sign(&s.ci_cosign.0, "shop/plain", &plain);

    s.deployment(&["shop/good:1", "shop/rogue:1", "shop/dev:1", "shop/plain:1"]);
    let out = s.lock();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("3 image(s) have no valid signature"), "{err}");
    assert!(
        err.contains(&format!("{host}/shop/rogue@{rogue}"))
            && err.contains(
                "its certificate is not accepted: it does not chain to a configured root (ca.pem)"
            ),
        "{err}"
    );
    assert!(
        err.contains("the certificate names dev@example.com, not the identity ci@example.com"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{host}/shop/plain@{plain}"))
            && err.contains("it carries no certificate, and the rule accepts only certificates"),
        "{err}"
    );
    assert!(!err.contains(&format!("shop/good@{good}")), "{err}");

    // Only the good one: locked, its certificate recorded, verify re-checks it offline.
    s.deployment(&["shop/good:1"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lock = lockfile_text(&s.dir);
    assert!(
        lock.contains("identity = \"ci@example.com\"") && lock.contains("certificate = \""),
        "{lock}"
    );
    let out = s.verify();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The verifier's own certificate requirement, independent of lockstep.toml.
    let verify_cert = |identity: &str| {
        run(
            &[
                "verify",
                s.dir.to_str().unwrap(),
                "--allowed-signers",
                s.allowed_signers.to_str().unwrap(),
                "--cosign-root",
                ca.to_str().unwrap(),
                "--cosign-identity",
                identity,
                "--cosign-issuer",
                issuer,
            ],
            &[],
        )
    };
    let out = verify_cert("ci@example.com");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = verify_cert("someone@example.com");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not the identity someone@example.com"),
        "{}",
        stderr(&out)
    );
    // cosign agrees: the good one verifies against the root for that identity; the others do not.
    let cosign_cert_verifies = |repo: &str, digest: &Digest| {
        let out = cosign(
            s.tmp.path(),
            &[
                "verify",
                "--certificate-chain",
                ca.to_str().unwrap(),
                "--certificate-identity",
                "ci@example.com",
                "--certificate-oidc-issuer",
                issuer,
                "--insecure-ignore-sct",
                "--insecure-ignore-tlog",
                "--allow-insecure-registry",
                &s.reference(repo, digest),
            ],
        );
        out.status.success()
    };
    assert!(cosign_cert_verifies("shop/good", &good));
    assert!(!cosign_cert_verifies("shop/rogue", &rogue));
    assert!(!cosign_cert_verifies("shop/dev", &dev));
}

/// Through an intermediate: one allowed to sign code chains (and is the one intermediate
/// recorded); one restricted to TLS (extendedKeyUsage serverAuth) is refused, as Go's x509
/// and so `cosign verify` refuse it; a path longer than the root's pathLenConstraint too.
#[test]
fn intermediates_must_be_cas_for_code_signing_within_the_roots_path_length() {
    let s = Signed::new();
    let host = s.registry.host();
    let issuer = "https://issuer.example.com";
    let d = s.tmp.path().join("pki2");
    std::fs::create_dir_all(&d).unwrap();
    // A root allowing one intermediate below it.
    root_ca(
        &d,
        "root",
        "/CN=pki2 root",
        "basicConstraints=critical,CA:TRUE,pathlen:1",
    );
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n";
    let leaf = leaf_ext("ci@example.com", issuer);
    issue(&d, "code-ca", "/CN=code signing CA", "root", ca_ext);
    issue(
        &d,
        "tls-ca",
        "/CN=tls CA",
        "root",
        &format!("{ca_ext}extendedKeyUsage=serverAuth\n"),
    );
    issue(&d, "sub-ca", "/CN=sub CA", "code-ca", ca_ext);
    issue(&d, "leaf-code", "/CN=ci", "code-ca", &leaf);
    issue(&d, "leaf-tls", "/CN=ci", "tls-ca", &leaf);
    issue(&d, "leaf-deep", "/CN=ci", "sub-ca", &leaf);
    let cosign_key = |name: &str| import_cosign_key(&d, s.tmp.path(), name);
    let chain_file = |name: &str, certs: &[&str]| {
        let path = d.join(format!("{name}.chain.pem"));
        let text: Vec<u8> = certs
            .iter()
            .flat_map(|c| std::fs::read(d.join(format!("{c}.pem"))).unwrap())
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    };
    let sign = |leaf: &str, chain: &Path, repo: &str, digest: &Digest| {
        let out = cosign(
            s.tmp.path(),
            &[
                "sign",
                "--key",
                cosign_key(leaf).to_str().unwrap(),
                "--certificate",
                d.join(format!("{leaf}.pem")).to_str().unwrap(),
                "--certificate-chain",
                chain.to_str().unwrap(),
                "--tlog-upload=false",
                "--allow-insecure-registry",
                &s.reference(repo, digest),
            ],
        );
        // cosign itself may refuse to sign with a chain it does not accept.
        out.status.success()
    };
    std::fs::copy(d.join("root.pem"), s.dir.join("root.pem")).unwrap();
    std::fs::write(
        s.dir.join("lockstep.toml"),
        format!(
            "[[provenance]]\nimages = [\"{host}/shop/*\"]\ncosign-certificate = {{ roots = [\"root.pem\"], identity = \"ci@example.com\", issuer = \"{issuer}\" }}\n"
        ),
    )
    .unwrap();
    let code_signed = s.registry.push_image("shop/code", "1", b"code");
    assert!(sign(
        "leaf-code",
        &chain_file("code", &["code-ca", "root"]),
        "shop/code",
        &code_signed
    ));
    s.deployment(&["shop/code:1"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lock = lockfile_text(&s.dir);
    assert_eq!(
        lock.matches("chain = [\"").count(),
        1,
        "the intermediate is recorded: {lock}"
    );
    let out = s.verify();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    for (leaf, chain, repo, why) in [
        (
            "leaf-tls",
            vec!["tls-ca", "root"],
            "shop/tls",
            "is restricted to other uses than code signing",
        ),
        (
            "leaf-deep",
            vec!["sub-ca", "code-ca", "root"],
            "shop/deep",
            "allows 1 intermediate(s) below it, and the chain has 2",
        ),
    ] {
        let digest = s.registry.push_image(repo, "1", repo.as_bytes());
        let chain = chain_file(repo.replace('/', "-").as_str(), &chain);
        // cosign refuses to sign with such a chain (it agrees): sign with the leaf's key
        // alone, then attach the certificate and chain as cosign would have.
        assert!(!sign(leaf, &chain, repo, &digest), "cosign signed {repo}");
        s.sign(&cosign_key(leaf), repo, &digest);
        s.attach_certificate(
            repo,
            &digest,
            &std::fs::read_to_string(d.join(format!("{leaf}.pem"))).unwrap(),
            &std::fs::read_to_string(&chain).unwrap(),
        );
        s.deployment(&[&format!("{repo}:1")]);
        let before = snapshot(&s.dir);
        let out = s.lock();
        assert_eq!(code(&out), 1, "{repo}: {}", stderr(&out));
        assert!(stderr(&out).contains(why), "{repo}: {}", stderr(&out));
        assert_eq!(snapshot(&s.dir), before);
    }
}

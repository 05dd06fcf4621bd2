//! Signatures stored as OCI 1.1 referrers, with the real tools: cosign v3 (built by
//! scripts/tools), whose default is a Sigstore bundle pushed as a referrer of the digest, and
//! cosign v2's `--registry-referrers-mode=oci-1-1`. Each on a registry with the referrers API
//! (go-containerregistry's, `tests/ociregistry`) and on one without (Debian's Distribution
//! 2.8, where clients keep the referrers tag `sha256-<hex>`): lock finds and checks them,
//! records them, verify re-checks them offline, `cosign verify` agrees, and a mirror without
//! the API gets the referrers tag that makes them findable there.

use crate::cli::{code, lockfile_text, run, stderr, stdout};
use crate::harness::{RegistryOptions, TestRegistry};
use crate::images::{http_client, run as block_on};
use crate::provenance::{Cosign, Signed, cosign_keys, test_ca};
use lockstep::model::Digest;

fn registry(referrers_api: bool) -> RegistryOptions {
    RegistryOptions {
        referrers: referrers_api,
        ..RegistryOptions::default()
    }
}

/// The referrers tag of `digest` (OCI 1.1's fallback scheme).
fn referrers_tag(digest: &Digest) -> String {
    digest.as_str().replacen(':', "-", 1)
}

/// `GET` a manifest (any type) from a plain-HTTP test registry.
fn get_manifest(host: &str, repo: &str, reference: &str) -> Option<Vec<u8>> {
    let client = http_client(None);
    block_on(async {
        let answer = client
            .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
            .header(
                "Accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .await
            .unwrap();
        if answer.status().is_success() {
            Some(answer.bytes().await.unwrap().to_vec())
        } else {
            None
        }
    })
}

/// `PUT` an index under a tag.
fn put_index(host: &str, repo: &str, tag: &str, body: &[u8]) {
    let client = http_client(None);
    block_on(async {
        let answer = client
            .put(format!("http://{host}/v2/{repo}/manifests/{tag}"))
            .header("Content-Type", "application/vnd.oci.image.index.v1+json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    });
}

#[test]
fn cosign_v3_bundles_are_found_by_the_referrers_api_or_its_tag_and_rechecked_offline() {
    for api in [true, false] {
        let s = Signed::with(registry(api), Cosign::V3);
        let what = if api {
            "referrers API"
        } else {
            "referrers tag"
        };
        let api_digest = s.registry.push_image("shop/api", "1.0", b"api 1.0");
        s.sign(&s.ci_cosign.0, "shop/api", &api_digest);
        assert!(
            s.cosign_verifies(&s.ci_cosign.1, "shop/api", &api_digest),
            "{what}"
        );
        if !api {
            // Without the API, cosign v3 keeps the referrers tag itself.
            assert!(
                get_manifest(&s.registry.host(), "shop/api", &referrers_tag(&api_digest)).is_some()
            );
        }
        s.deployment(&["shop/api:1.0"]);
        let out = s.lock();
        assert_eq!(code(&out), 0, "{what}: {}", stderr(&out));
        let text = lockfile_text(&s.dir);
        assert!(
            text.contains("format = \"dsse\""),
            "{what}: a bundle's record says so:\n{text}"
        );
        let out = s.verify();
        assert_eq!(code(&out), 0, "{what}: {}", stderr(&out));
        // inspect judges the bundle by the directory's rule and lists the referrer.
        let out = run(
            &[
                "inspect",
                &format!("{}/shop/api:1.0", s.registry.host()),
                "--dir",
                s.dir.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code(&out), 0, "{what}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains(": valid, key sha256:")
                && text.contains(&format!(
                    "signs {api_digest} (a Sigstore bundle, https://sigstore.dev/cosign/sign/v1)"
                ))
                // The referrer as listed: cosign's referrers tag gives its artifact type, and
                // go-containerregistry's API the config's media type with the annotations.
                && (text.contains(": application/vnd.dev.sigstore.bundle.v0.3+json")
                    || text.contains(", predicate https://sigstore.dev/cosign/sign/v1"))
                && text.contains(": satisfied"),
            "{what}: {text}"
        );

        // Unsigned, and signed by another key: refused, each named, nothing written.
        let web = s.registry.push_image("shop/web", "2.0", b"web 2.0");
        let other = cosign_keys(s.tmp.path(), "intruder");
        let worker = s.registry.push_image("shop/worker", "1.0", b"worker 1.0");
        s.sign(&other.0, "shop/worker", &worker);
        assert!(!s.cosign_verifies(&s.ci_cosign.1, "shop/worker", &worker));
        s.deployment(&["shop/api:1.0", "shop/web:2.0", "shop/worker:1.0"]);
        let before = lockfile_text(&s.dir);
        let out = s.lock();
        assert_eq!(code(&out), 1, "{what}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("shop/web@{web}: no signature found")),
            "{what}: {err}"
        );
        assert!(
            err.contains(&format!(
                "shop/worker@{worker}: 1 signature(s) found, none valid"
            )) && err.contains("does not verify under any key of the rule"),
            "{what}: {err}"
        );
        assert_eq!(lockfile_text(&s.dir), before, "{what}: nothing written");
    }
}

/// A real bundle of one digest, listed in another digest's referrers tag: the referrer's own
/// `subject` names the first digest, and its statement signs that digest alone, so it is no
/// signature of the second.
#[test]
fn a_bundle_listed_under_another_digests_referrers_tag_is_not_its_signature() {
    let s = Signed::with(registry(false), Cosign::V3);
    let host = s.registry.host();
    let signed = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign(&s.ci_cosign.0, "shop/api", &signed);
    let unsigned = s.registry.push_image("shop/api", "1.1", b"api 1.1");
    let index = get_manifest(&host, "shop/api", &referrers_tag(&signed)).expect("cosign wrote it");
    put_index(&host, "shop/api", &referrers_tag(&unsigned), &index);
    assert!(!s.cosign_verifies(&s.ci_cosign.1, "shop/api", &unsigned));
    s.deployment(&["shop/api:1.1"]);
    let out = s.lock();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("shop/api@{unsigned}: no signature found")),
        "the listed referrer's subject is the other digest: skipped\n{}",
        stderr(&out)
    );
}

#[test]
fn cosign_v2_signatures_stored_as_oci_referrers_are_read() {
    let s = Signed::with(registry(true), Cosign::V2);
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign_with(
        &s.ci_cosign.0,
        &["--registry-referrers-mode=oci-1-1"],
        "shop/api",
        &api,
    );
    assert!(
        get_manifest(
            &s.registry.host(),
            "shop/api",
            &format!("{}.sig", referrers_tag(&api))
        )
        .is_none(),
        "no .sig tag: only the referrer holds the signature"
    );
    s.deployment(&["shop/api:1.0"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = lockfile_text(&s.dir);
    assert!(
        text.contains("[[image.signature]]") && !text.contains("format ="),
        "{text}"
    );
    let out = s.verify();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// `mirror` pushes a bundle by digest; a mirror without the referrers API (Distribution 2.8)
/// gets it listed under the referrers tag, as OCI 1.1 asks of clients, so `cosign verify`
/// finds it at the mirror; a mirror with the API indexes it itself.
#[test]
fn mirrored_bundles_stay_findable_with_or_without_the_referrers_api() {
    for source_api in [true, false] {
        let s = Signed::with(registry(source_api), Cosign::V3);
        let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
        s.sign(&s.ci_cosign.0, "shop/api", &api);
        s.attest(&s.ci_cosign.0, "shop/api", &api);
        s.deployment(&["shop/api:1.0"]);
        let out = s.lock();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        // Both kept running: the lockfile records every mirror, and check asks each.
        let mirrors = [false, true].map(|api| (api, TestRegistry::start(registry(api))));
        for (mirror_api, mirror) in &mirrors {
            let mirror_api = *mirror_api;
            let to = format!("{}/dr", mirror.host());
            let mirror_run = || mirror_to(&s, &to);
            let out = mirror_run();
            assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
            assert!(
                s.cosign_verifies_at(&mirror.host(), &s.ci_cosign.1, "dr/shop/api", &api),
                "source API {source_api}, mirror API {mirror_api}: cosign verify at the mirror"
            );
            assert!(
                s.cosign_verifies_attestation_at(
                    &mirror.host(),
                    &s.ci_cosign.1,
                    "dr/shop/api",
                    &api
                ),
                "source API {source_api}, mirror API {mirror_api}: the attestation went along"
            );
            // The signature and the attestation, each listed once.
            let listed = || {
                let tag = get_manifest(&mirror.host(), "dr/shop/api", &referrers_tag(&api));
                let index: serde_json::Value = serde_json::from_slice(&tag.unwrap()).unwrap();
                index["manifests"].as_array().unwrap().len()
            };
            if !mirror_api {
                assert_eq!(listed(), 2);
            }
            // Again: nothing new, and the referrers tag still lists it once.
            let out = mirror_run();
            assert_eq!(code(&out), 0, "{}", stderr(&out));
            if !mirror_api {
                assert_eq!(listed(), 2);
            }
            let out = run(&["check", s.dir.to_str().unwrap()], &[]);
            assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
        }
    }
}

/// Regression (attack review): junk listed in a digest's referrers tag — manifests that are no
/// referrer of it, the same entry many times — is skipped, and the real bundle after it still
/// counts. (Distribution refuses an index naming manifests it does not hold.)
#[test]
fn junk_listed_before_the_real_bundle_does_not_hide_it() {
    let s = Signed::with(registry(false), Cosign::V3);
    let host = s.registry.host();
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign(&s.ci_cosign.0, "shop/api", &api);
    let tag = referrers_tag(&api);
    let mut index: serde_json::Value =
        serde_json::from_slice(&get_manifest(&host, "shop/api", &tag).unwrap()).unwrap();
    let real = index["manifests"][0].clone();
    let mut junk: Vec<serde_json::Value> = (0..40)
        .map(|i| {
            let other = s
                .registry
                .push_image("shop/api", &format!("junk{i}"), format!("junk {i}").as_bytes());
            let size = get_manifest(&host, "shop/api", other.as_str()).unwrap().len();
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": other.as_str(),
                "size": size,
                "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                "annotations": {"dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1"},
            })
        })
        .collect();
    junk.extend(std::iter::repeat_n(junk[0].clone(), 50));
    junk.push(real);
    index["manifests"] = junk.into();
    put_index(
        &host,
        "shop/api",
        &tag,
        &serde_json::to_vec(&index).unwrap(),
    );
    s.deployment(&["shop/api:1.0"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(lockfile_text(&s.dir).contains("format = \"dsse\""));
}

/// Regression (attack review): a referrer already at the mirror was skipped, so a run
/// interrupted between pushing it and listing it in the referrers tag left it unfindable for
/// good; the next run lists it again.
#[test]
fn a_lost_referrers_tag_at_the_mirror_is_rebuilt_by_the_next_mirror_run() {
    let s = Signed::with(registry(false), Cosign::V3);
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    s.sign(&s.ci_cosign.0, "shop/api", &api);
    s.deployment(&["shop/api:1.0"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mirror = TestRegistry::start(registry(false));
    let to = format!("{}/dr", mirror.host());
    let mirror_run = || mirror_to(&s, &to);
    let out = mirror_run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let index = get_manifest(&mirror.host(), "dr/shop/api", &referrers_tag(&api)).unwrap();
    mirror.delete_manifest("dr/shop/api", &Digest::of(&index));
    assert!(!s.cosign_verifies_at(&mirror.host(), &s.ci_cosign.1, "dr/shop/api", &api));
    let out = mirror_run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(s.cosign_verifies_at(&mirror.host(), &s.ci_cosign.1, "dr/shop/api", &api));
}

/// A rule's `attestations`: each governed digest must also carry an in-toto attestation of
/// each listed predicate type, signed by the rule's key — as cosign v2 (`.att` tag) and v3
/// (a bundle referrer) store them. Missing or foreign-signed ones are refused, named; the
/// record travels in the lockfile, is reused while the digest is unchanged, and `check`
/// notices its manifest gone.
#[test]
fn a_rule_requiring_an_attestation_locks_only_digests_attested_by_its_key() {
    for cosign in [Cosign::V2, Cosign::V3] {
        let s = Signed::with(registry(cosign == Cosign::V3), cosign);
        let host = s.registry.host();
        std::fs::write(
            s.dir.join("lockstep.toml"),
            format!(
                "[[provenance]]\nimages = [\"{host}/shop/*\"]\ncosign-keys = [\"cosign.pub\"]\nattestations = [\"https://lockstep.test/ci/v1\"]\n"
            ),
        )
        .unwrap();
        let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
        s.sign(&s.ci_cosign.0, "shop/api", &api);
        s.deployment(&["shop/api:1.0"]);
        let out = s.lock();
        assert_eq!(code(&out), 1, "{cosign:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("1 image(s) lack an attestation their provenance rule requires")
                && err.contains(&format!("shop/api@{api}"))
                && err.contains(
                    "no valid attestation of https://lockstep.test/ci/v1 (valid ones found: none)"
                ),
            "{cosign:?}: {err}"
        );
        assert!(!s.dir.join("lockstep.lock").exists(), "nothing written");
        let inspect = || {
            run(
                &[
                    "inspect",
                    &format!("{host}/shop/api:1.0"),
                    "--dir",
                    s.dir.to_str().unwrap(),
                ],
                &[],
            )
        };
        let out = inspect();
        assert_eq!(code(&out), 1, "{cosign:?}: {}", stderr(&out));
        assert!(
            stdout(&out)
                .contains("NOT satisfied (no valid attestation of https://lockstep.test/ci/v1)"),
            "{cosign:?}: {}",
            stdout(&out)
        );

        // Attested, but by another key: still refused, the candidate named.
        let intruder = cosign_keys(s.tmp.path(), "intruder");
        s.attest(&intruder.0, "shop/api", &api);
        let out = s.lock();
        assert_eq!(code(&out), 1, "{cosign:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("does not verify under any key of the rule"),
            "{cosign:?}: {}",
            stderr(&out)
        );

        // Attested by the build key: locked, recorded, verified offline.
        s.attest(&s.ci_cosign.0, "shop/api", &api);
        let out = s.lock();
        assert_eq!(code(&out), 0, "{cosign:?}: {}", stderr(&out));
        let text = lockfile_text(&s.dir);
        assert!(
            text.contains("[[image.attestation]]")
                && text.contains("predicate-type = \"https://lockstep.test/ci/v1\""),
            "{cosign:?}: {text}"
        );
        let out = s.verify();
        assert_eq!(code(&out), 0, "{cosign:?}: {}", stderr(&out));
        // The verifier's own requirement: its key, this attestation type.
        let verify_own = |kind: &str| {
            run(
                &[
                    "verify",
                    s.dir.to_str().unwrap(),
                    "--allowed-signers",
                    s.allowed_signers.to_str().unwrap(),
                    "--cosign-key",
                    s.ci_cosign.1.to_str().unwrap(),
                    "--cosign-attestation",
                    kind,
                ],
                &[],
            )
        };
        let out = verify_own("https://lockstep.test/ci/v1");
        assert_eq!(code(&out), 0, "{cosign:?}: {}", stderr(&out));
        let out = verify_own("https://slsa.dev/provenance/v1");
        assert_eq!(code(&out), 1, "{cosign:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("requires attestations of https://slsa.dev/provenance/v1"),
            "{cosign:?}: {}",
            stderr(&out)
        );
        let out = inspect();
        assert_eq!(code(&out), 0, "{cosign:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains(": valid https://lockstep.test/ci/v1, key sha256:")
                && stdout(&out).contains(": satisfied"),
            "{cosign:?}: {}",
            stdout(&out)
        );
        // Unchanged: the records are reused without asking the registry.
        let out = s.lock();
        assert_eq!(code(&out), 0, "{cosign:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("checking the attestations"),
            "{cosign:?}: {}",
            stderr(&out)
        );
        // The attestation's manifest deleted at the source: check names it.
        let lock = lockstep::lockfile::Lockfile::parse_unverified(
            &std::fs::read(s.dir.join("lockstep.lock")).unwrap(),
        )
        .unwrap();
        let record = &lock.images[0].attestations[0];
        s.registry.delete_manifest("shop/api", &record.manifest);
        let out = run(&["check", s.dir.to_str().unwrap()], &[]);
        assert_eq!(code(&out), 1, "{cosign:?}: {}", stderr(&out));
        assert!(
            format!("{}{}", stdout(&out), stderr(&out)).contains(&format!(
                "@{} (its recorded cosign signature or attestation manifest)",
                record.manifest
            )),
            "{cosign:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

/// Regression (attack review): an attestation record made with a certificate was accepted by
/// the verifier's own certificate requirement on its identity alone. A pull request can add a
/// rule trusting its own CA for the same identity; `lock` then honestly records the rogue
/// attestation. The record now keeps the certificate and its path, and the verifier checks
/// them against its own roots.
#[test]
fn an_attestation_certified_by_another_ca_does_not_satisfy_the_verifiers_roots() {
    let s = Signed::with(registry(false), Cosign::V2);
    let host = s.registry.host();
    let issuer = "https://issuer.example.com";
    let identity = "ci@example.com";
    let (corp_ca, corp_key, corp_leaf) = test_ca(s.tmp.path(), "corp", identity, issuer);
    let (rogue_ca, rogue_key, rogue_leaf) = test_ca(s.tmp.path(), "rogue", identity, issuer);
    // The repository trusts both CAs (the pull request added the rogue one).
    let both = s.dir.join("roots.pem");
    std::fs::write(
        &both,
        [
            std::fs::read(&corp_ca).unwrap(),
            std::fs::read(&rogue_ca).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    std::fs::write(
        s.dir.join("lockstep.toml"),
        format!(
            "[[provenance]]\nimages = [\"{host}/shop/*\"]\ncosign-certificate = {{ roots = [\"roots.pem\"], identity = \"{identity}\", issuer = \"{issuer}\" }}\nattestations = [\"https://lockstep.test/ci/v1\"]\n"
        ),
    )
    .unwrap();
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    let corp = certificate_flags(&corp_leaf, &corp_ca);
    let rogue = certificate_flags(&rogue_leaf, &rogue_ca);
    s.sign_with(&corp_key, &flags(&corp), "shop/api", &api);
    s.attest_with(&rogue_key, &flags(&rogue), "shop/api", &api);
    s.deployment(&["shop/api:1.0"]);
    // The lock must not use SOURCE_DATE_EPOCH (older than the certificates).
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let verify_corp = || {
        run(
            &[
                "verify",
                s.dir.to_str().unwrap(),
                "--allowed-signers",
                s.allowed_signers.to_str().unwrap(),
                "--cosign-root",
                corp_ca.to_str().unwrap(),
                "--cosign-identity",
                identity,
                "--cosign-issuer",
                issuer,
                "--cosign-attestation",
                "https://lockstep.test/ci/v1",
            ],
            &[],
        )
    };
    let out = verify_corp();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("requires attestations of https://lockstep.test/ci/v1"),
        "{}",
        stderr(&out)
    );
    // Attested with the corporate certificate: the verifier's roots accept it.
    s.attest_with(&corp_key, &flags(&corp), "shop/api", &api);
    // (The digest is unchanged and its record still satisfies the repository's rule, so the
    // lock would reuse it: start from no lockfile, as a rotation would.)
    std::fs::remove_file(s.dir.join("lockstep.lock")).unwrap();
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = verify_corp();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// cosign's flags attaching `leaf` and its chain `ca` to a signature or attestation.
fn certificate_flags(leaf: &std::path::Path, ca: &std::path::Path) -> Vec<String> {
    vec![
        "--certificate".to_owned(),
        leaf.to_str().unwrap().to_owned(),
        "--certificate-chain".to_owned(),
        ca.to_str().unwrap().to_owned(),
    ]
}

fn flags(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `lockstep mirror` of the signed project to `to`, signed by its key.
fn mirror_to(s: &Signed, to: &str) -> std::process::Output {
    run(
        &[
            "mirror",
            s.dir.to_str().unwrap(),
            "--to",
            to,
            "--key",
            s.key.to_str().unwrap(),
        ],
        &[],
    )
}

/// cosign v3 with a certificate from your CA: the bundle carries the leaf (v0.3 holds no
/// chain), which must chain to the rule's roots and name its identity and issuer.
#[test]
fn a_cosign_v3_bundle_signed_with_a_certificate_satisfies_a_certificate_rule() {
    let s = Signed::with(registry(true), Cosign::V3);
    let host = s.registry.host();
    let issuer = "https://issuer.example.com";
    let (ca, key, leaf) = test_ca(s.tmp.path(), "pki", "ci@example.com", issuer);
    let (_, rogue_key, rogue_leaf) = test_ca(s.tmp.path(), "rogue", "ci@example.com", issuer);
    std::fs::copy(&ca, s.dir.join("ca.pem")).unwrap();
    std::fs::write(
        s.dir.join("lockstep.toml"),
        format!(
            "[[provenance]]\nimages = [\"{host}/shop/*\"]\ncosign-certificate = {{ roots = [\"ca.pem\"], identity = \"ci@example.com\", issuer = \"{issuer}\" }}\n"
        ),
    )
    .unwrap();
    let api = s.registry.push_image("shop/api", "1.0", b"api 1.0");
    let web = s.registry.push_image("shop/web", "1.0", b"web 1.0");
    s.sign_with(
        &key,
        &flags(&certificate_flags(&leaf, &ca)),
        "shop/api",
        &api,
    );
    let rogue_ca = s.tmp.path().join("rogue/ca.pem");
    s.sign_with(
        &rogue_key,
        &flags(&certificate_flags(&rogue_leaf, &rogue_ca)),
        "shop/web",
        &web,
    );
    s.deployment(&["shop/api:1.0", "shop/web:1.0"]);
    let out = s.lock();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("shop/web@{web}"))
            // (Both test CAs have the same name: its signature is what fails.)
            && err.contains("its certificate is not accepted")
            && !err.contains(&format!("shop/api@{api}")),
        "{err}"
    );
    s.deployment(&["shop/api:1.0"]);
    let out = s.lock();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = lockfile_text(&s.dir);
    assert!(
        text.contains("format = \"dsse\"") && text.contains("identity = \"ci@example.com\""),
        "{text}"
    );
    let out = s.verify();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

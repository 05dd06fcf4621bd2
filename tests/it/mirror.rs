//! `lockstep mirror` end to end on two real Distribution registries: every platform copied,
//! blobs mounted across repositories, the mirror recorded in a new signed generation, and
//! the commit still deployable (`render --from-mirror`, `check`) after the source registry
//! is gone.

use std::process::Output;

use serde_json::Value;

use crate::cli::{Project, code, run, stderr, stdout};
use crate::harness::{MockBehavior, MockLyingRegistry, RegistryOptions, TestRegistry};

fn mirror(p: &Project, to: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "mirror",
        p.dir.to_str().unwrap(),
        "--key",
        p.key.to_str().unwrap(),
        "--to",
        to,
    ];
    args.extend_from_slice(extra);
    run(&args, &[("SOURCE_DATE_EPOCH", "1700000100")])
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(out), stderr(out)))
}

fn lockfile(p: &Project) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(p.dir.join("lockstep.lock")).unwrap()).unwrap()
}

/// Every `(repository, digest)` the lockfile pins, platforms included.
fn pinned(p: &Project) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for image in lockfile(p)["image"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        let repository = name.split_once('/').unwrap().1.to_owned();
        out.push((
            repository.clone(),
            image["digest"].as_str().unwrap().to_owned(),
        ));
        for platform in image
            .get("platform")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            out.push((
                repository.clone(),
                platform["digest"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

fn check(p: &Project) -> Output {
    run(&["check", p.dir.to_str().unwrap()], &[])
}

#[test]
fn mirror_copies_every_platform_records_it_and_survives_losing_the_source() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let backup = TestRegistry::start(RegistryOptions::default());
    let to = format!("{}/dr", backup.host());

    let out = mirror(&p, &to, &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["recorded"], true);
    assert_eq!(report["generation"], 2);
    let images = lockfile(&p)["image"].as_array().unwrap().len();
    assert_eq!(report["copied"]["images_copied"], images as u64);
    // Two multi-platform fixtures (an OCI index and a Docker list) of two platforms each.
    assert_eq!(
        report["copied"]["manifests_pushed"],
        (images + 4) as u64,
        "{report}"
    );

    // The new generation records the mirror for every image and verifies.
    let lock = lockfile(&p);
    assert_eq!(lock["generation"].as_integer(), Some(2));
    for image in lock["image"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        let repository = name.split_once('/').unwrap().1;
        assert_eq!(
            image["mirror"].as_array().unwrap(),
            &vec![Value::from(format!("{to}/{repository}"))]
                .into_iter()
                .map(|v| toml::Value::String(v.as_str().unwrap().into()))
                .collect::<Vec<_>>()
        );
    }
    let verified = p.verify(&[]);
    assert_eq!(code(&verified), 0, "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains(&format!("; {images} of {images} images also in a mirror")),
        "{}",
        stdout(&verified)
    );
    // Locking again changes nothing: the record of the copies is kept, not dropped.
    let bytes = std::fs::read(p.dir.join("lockstep.lock")).unwrap();
    assert_eq!(code(&p.lock(&["--check"])), 0);
    assert_eq!(code(&p.lock(&[])), 0);
    assert_eq!(std::fs::read(p.dir.join("lockstep.lock")).unwrap(), bytes);
    // The auditor sees the copy in the history.
    crate::cli::git(&p.repo, &["add", "-A"]);
    crate::cli::git(&p.repo, &["commit", "-qm", "mirror"]);
    let audited = run(
        &[
            "audit",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            p.allowed_signers.to_str().unwrap(),
            "--since",
            "HEAD~1",
        ],
        &[],
    );
    assert_eq!(code(&audited), 0, "{}", stderr(&audited));
    assert_eq!(
        stdout(&audited)
            .matches(&format!(" copied to {to}/"))
            .count(),
        images,
        "{}",
        stdout(&audited)
    );

    // Every pinned manifest, each platform too, is in the mirror by digest.
    let pusher = backup.pusher();
    for (repository, digest) in pinned(&p) {
        assert!(
            pusher.has_manifest(&format!("dr/{repository}"), &digest),
            "{repository}@{digest} is not in the mirror"
        );
    }

    // A second run finds every image complete with one request each and records nothing.
    let before = backup.requests().len();
    let again = mirror(&p, &to, &["--json"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let again = json_of(&again);
    assert_eq!(again["recorded"], false);
    assert_eq!(again["copied"]["images_present"], images as u64);
    let requests = backup.requests();
    let second: Vec<&String> = requests[before..]
        .iter()
        .filter(|r| !r.ends_with("/v2/"))
        .collect();
    assert_eq!(second.len(), images, "{second:#?}");
    assert!(second.iter().all(|r| r.starts_with("HEAD ")), "{second:#?}");

    // The source registry is gone: check says so but finds every copy in the mirror, and
    // render --from-mirror gives manifests that pull from the mirror only.
    p.registry.stop();
    let checked = check(&p);
    assert_eq!(code(&checked), 2, "{}", stderr(&checked));
    let rendered = run(
        &[
            "render",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            p.allowed_signers.to_str().unwrap(),
            "--from-mirror",
            &to,
        ],
        &[],
    );
    assert_eq!(code(&rendered), 0, "{}", stderr(&rendered));
    let text = stdout(&rendered);
    let source = p.registry.host();
    assert!(
        !text.contains(&source),
        "a reference to the lost source:\n{text}"
    );
    for (repository, digest) in pinned(&p).into_iter().take(1) {
        assert!(text.contains(&format!("{to}/{repository}")), "{text}");
        assert!(text.contains(&digest), "{text}");
    }
}

#[test]
fn check_names_what_a_mirror_lost_and_where_it_still_is() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let backup = TestRegistry::start(RegistryOptions::default());
    let to = format!("{}/dr", backup.host());
    assert_eq!(code(&mirror(&p, &to, &[])), 0);
    let ok = check(&p);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));

    let (repository, digest) = pinned(&p).into_iter().last().unwrap();
    backup.delete_manifest(&format!("dr/{repository}"), &digest.parse().unwrap());
    let out = check(&p);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&format!("in mirror {to}/{repository}"))
            && text.contains(&format!("still at {}/{repository}", p.registry.host())),
        "{text}"
    );

    // Re-running mirror repairs it (the image is copied again), and check passes.
    let repaired = mirror(&p, &to, &["--json"]);
    assert_eq!(code(&repaired), 0, "{}", stderr(&repaired));
    assert_eq!(json_of(&repaired)["copied"]["images_copied"], 1);
    assert_eq!(code(&check(&p)), 0);
}

#[test]
fn shared_blobs_are_uploaded_once_and_mounted_into_other_repositories() {
    let p = Project::new();
    // Two more repositories holding the same image as the fixture's shop/worker: the mirror
    // needs its blobs three times but uploads them once.
    let worker = p.registry.push_image("shop/worker-a", "1", b"shared");
    assert_eq!(
        worker,
        p.registry.push_image("shop/worker-b", "1", b"shared")
    );
    let host = p.registry.host();
    std::fs::write(
        p.dir.join("shared.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: shared, namespace: shop}}\nspec:\n  containers:\n    - name: a\n      image: {host}/shop/worker-a:1\n    - name: b\n      image: {host}/shop/worker-b:1\n"
        ),
    )
    .unwrap();
    assert_eq!(code(&p.lock(&[])), 0);
    let backup = TestRegistry::start(RegistryOptions::default());
    let out = mirror(
        &p,
        &format!("{}/dr", backup.host()),
        &["--json", "--concurrency", "8"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let copied = &json_of(&out)["copied"];
    assert!(copied["blobs_mounted"].as_u64().unwrap() >= 2, "{copied}");
    let requests = backup.requests();
    let mounts = requests.iter().filter(|r| r.contains("mount=")).count();
    assert!(mounts >= 2, "{requests:#?}");
    // Each distinct blob is uploaded (PUT with data) once in all.
    let uploads = requests
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/blobs/uploads/"))
        .count();
    assert_eq!(uploads as u64, copied["blobs_uploaded"].as_u64().unwrap());
}

#[test]
fn a_failed_copy_records_nothing_and_names_the_image() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let before = p.snapshot();
    // The mirror registry wants credentials lockstep does not have.
    let backup = TestRegistry::start(RegistryOptions {
        auth: Some(("ci".into(), "secret".into())),
        tls: false,
        ..RegistryOptions::default()
    });
    let out = mirror(&p, &format!("{}/dr", backup.host()), &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("could not be copied") && text.contains("refused access"),
        "{text}"
    );
    assert!(text.contains("nothing was recorded"), "{text}");
    assert_eq!(p.snapshot(), before, "mirror wrote something");
}

#[test]
fn mirror_refuses_a_stale_lockfile_and_a_target_without_a_registry() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let out = mirror(&p, "dr/prod", &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("registry host"), "{}", stderr(&out));

    let file = p.dir.join("shared.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: new}}\nspec:\n  containers:\n    - name: c\n      image: {}/shop/api:1.4\n",
            p.registry.host()
        ),
    )
    .unwrap();
    let before = p.snapshot();
    let out = mirror(&p, "127.0.0.1:1/dr", &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("lockstep lock"), "{}", stderr(&out));
    assert_eq!(p.snapshot(), before);
}

/// Lock a pod using `{host}/app:1` and mirror it to a real registry; the outcome of the
/// mirror, whether it changed the directory, and the mirror registry.
fn mirror_from(mock_host: &str) -> (Output, bool, TestRegistry) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pod.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n    - name: c\n      image: {mock_host}/app:1\n"
        ),
    )
    .unwrap();
    let (key, _) = crate::cli::ci_key(tmp.path());
    let locked = run(
        &[
            "lock",
            dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&locked), 0, "{}", stderr(&locked));
    let before = crate::cli::snapshot(&dir);
    let backup = TestRegistry::start(RegistryOptions::default());
    let out = run(
        &[
            "mirror",
            dir.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--to",
            &format!("{}/dr", backup.host()),
        ],
        &[],
    );
    let changed = crate::cli::snapshot(&dir) != before;
    (out, changed, backup)
}

/// The same exit code as `lock` and `check` when a registry cannot be asked: 2.
#[test]
fn registry_exit_codes_mirror_to_an_unreachable_registry_is_2() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let before = p.snapshot();
    let out = mirror(&p, "127.0.0.1:1/dr", &["--timeout", "2"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach registry 127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.snapshot(), before, "nothing recorded");
}

#[test]
fn a_blob_that_does_not_hash_to_its_digest_is_not_copied() {
    // The source serves an honest manifest whose config blob comes back as other bytes.
    let mock = MockLyingRegistry::start(MockBehavior::LyingBlob);
    let (out, changed, backup) = mirror_from(&mock.host());
    // The registry answered, wrongly: a finding (exit 1), as in `lock` and `check`.
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(!changed, "nothing recorded");
    let text = stderr(&out);
    let config = lockstep::model::Digest::of(b"mock");
    assert!(
        text.contains("digest mismatch") && text.contains(config.as_str()),
        "{text}"
    );
    // Neither the forged blob nor the manifest reached the mirror.
    let served = mock.served_digest();
    assert!(!backup.pusher().has_manifest("dr/app", served.as_str()));
    let requests = backup.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("PUT ") && r.contains("/manifests/")),
        "{requests:#?}"
    );
}

#[test]
fn a_blob_longer_than_its_manifest_declares_is_refused() {
    let mock = MockLyingRegistry::start(MockBehavior::LongBlob);
    let (out, changed, backup) = mirror_from(&mock.host());
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(!changed, "nothing recorded");
    let text = stderr(&out);
    assert!(text.contains("declares as 4"), "{text}");
    assert!(
        !backup
            .pusher()
            .has_manifest("dr/app", mock.served_digest().as_str())
    );
}

#[test]
fn a_blob_transfer_that_fails_transiently_is_retried_in_a_new_session() {
    let mock = MockLyingRegistry::start(MockBehavior::FlakyBlob { times: 2 });
    let (out, changed, backup) = mirror_from(&mock.host());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(changed, "the mirror is recorded");
    let blob_gets = mock
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 3, "two 503s, then the blob");
    assert!(
        backup
            .pusher()
            .has_manifest("dr/app", mock.served_digest().as_str())
    );
}

#[test]
fn mirror_pushes_to_a_registry_that_wants_bearer_tokens() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let backup = TestRegistry::start_with_token_auth("robot", "t0ken-pass");
    let config = tempfile::tempdir().unwrap();
    let auths = serde_json::json!({"auths": {backup.host(): {"username": "robot", "password": "t0ken-pass"}}});
    std::fs::write(config.path().join("config.json"), auths.to_string()).unwrap();
    let to = format!("{}/dr", backup.host());
    let out = run(
        &[
            "mirror",
            p.dir.to_str().unwrap(),
            "--key",
            p.key.to_str().unwrap(),
            "--to",
            &to,
            "--json",
        ],
        &[("DOCKER_CONFIG", config.path().to_str().unwrap())],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(json_of(&out)["recorded"], true);
    // check, with the same credentials, finds every copy.
    let checked = run(
        &["check", p.dir.to_str().unwrap()],
        &[("DOCKER_CONFIG", config.path().to_str().unwrap())],
    );
    assert_eq!(code(&checked), 0, "{}", stderr(&checked));
}

#[test]
fn a_mirror_on_the_same_registry_mounts_every_blob_and_uploads_none() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let out = mirror(&p, &format!("{}/dr", p.registry.host()), &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let copied = &json_of(&out)["copied"];
    assert_eq!(copied["blobs_uploaded"], 0, "{copied}");
    assert!(copied["blobs_mounted"].as_u64().unwrap() > 0, "{copied}");
    let ok = check(&p);
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
}

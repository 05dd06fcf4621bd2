//! Regression tests: a new generation continues only from a lockfile its signer can verify
//! (`lock`, `refresh`, `mirror`; `sign` checks what it co-signs when given `--trust`), the
//! generation never wraps, and a tagless image round-trips through lock → verify → lock.

use std::path::Path;
use std::process::Output;

use crate::cli::{
    Project, code, lockfile_text, run, second_approver, signature_files, stderr, stdout,
};
use crate::harness::{RegistryOptions, TestRegistry};

const MAX: u64 = u64::MAX;

/// Edit lockstep.lock's generation without signing it: what one unsigned push does.
fn tamper_generation(dir: &Path, generation: u64) {
    let path = dir.join("lockstep.lock");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("generation = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &path,
        text.replace(&line, &format!("generation = {generation}")),
    )
    .unwrap();
}

fn generation(dir: &Path) -> u64 {
    let table: toml::Table = toml::from_str(&lockfile_text(dir)).unwrap();
    table["generation"].as_integer().unwrap() as u64
}

/// The refusal to continue: exit 1 (a check failed, not a usage error), naming the file and
/// every way out, and nothing written.
fn assert_refused_unsigned(
    out: &Output,
    p: &Project,
    before: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
) {
    assert_eq!(code(out), 1, "{}", stderr(out));
    let err = stderr(out);
    assert!(
        err.contains("error: lockstep.lock is not signed by this key"),
        "{err}"
    );
    assert!(
        err.contains("git checkout -- lockstep.lock")
            && err.contains("--trust")
            && err.contains("--new-history"),
        "{err}"
    );
    assert_eq!(&p.snapshot(), before, "nothing written");
}

fn with_key(command: &str, p: &Project, key: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        command,
        p.dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, &[("SOURCE_DATE_EPOCH", "1700000000")])
}

#[test]
fn lock_refuses_to_continue_from_an_unsigned_generation() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    tamper_generation(&p.dir, 41);
    p.registry.push_image("shop/worker", "1.0", b"worker v2");
    let before = p.snapshot();
    assert_refused_unsigned(&p.lock(&[]), &p, &before);
    // --json says the same, as a check failure.
    let out = run(
        &[
            "--json",
            "lock",
            p.dir.to_str().unwrap(),
            "--key",
            p.key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["class"], "check-failed");
    // No signature at all is no better.
    for sig in signature_files(&p.dir) {
        std::fs::remove_file(p.dir.join(sig)).unwrap();
    }
    let before = p.snapshot();
    assert_refused_unsigned(&p.lock(&[]), &p, &before);

    // The way out that keeps nothing: a new history from generation 1.
    let out = p.lock(&["--new-history"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--new-history: ignoring"),
        "{}",
        stderr(&out)
    );
    assert_eq!(generation(&p.dir), 1);
    assert_eq!(code(&p.verify(&[])), 0);
}

#[test]
fn lock_refuses_a_lockfile_tampered_to_the_maximum_generation() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    tamper_generation(&p.dir, MAX);
    let before = p.snapshot();
    let out = p.lock(&["--expires-in", "30d"]);
    assert_refused_unsigned(&out, &p, &before);

    // Even signed by the key itself (a bug, or the key stolen), the generation after the
    // last one is refused rather than wrapped to 0.
    let out = with_key("sign", &p, &p.key, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = p.snapshot();
    let out = p.lock(&["--expires-in", "30d"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("lockstep.lock is at generation 18446744073709551615, the highest there is"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.snapshot(), before, "nothing written");
    let out = with_key("refresh", &p, &p.key, &["--expires-in", "30d"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the highest there is"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.snapshot(), before, "nothing written");
}

#[test]
fn lock_continues_from_a_lockfile_signed_by_its_own_key() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    p.registry.push_image("shop/worker", "1.0", b"worker v2");
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(generation(&p.dir), 2);
    // Expired does not matter for continuing.
    assert_eq!(code(&p.lock(&["--expires-in", "1h"])), 0);
    assert_eq!(generation(&p.dir), 3);
    p.registry.push_image("shop/worker", "1.0", b"worker v3");
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(generation(&p.dir), 4);
    assert_eq!(code(&p.verify(&[])), 0);
}

#[test]
fn lock_continues_from_a_lockfile_signed_by_a_trusted_key() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let (release, both) = second_approver(&p);
    p.registry.push_image("shop/worker", "1.0", b"worker v2");
    // Another key, without --trust: it cannot tell who wrote generation 1.
    let before = p.snapshot();
    let out = with_key("lock", &p, &release, &[]);
    assert_refused_unsigned(&out, &p, &before);
    assert!(
        stderr(&out).contains("(and no --trust file was given)"),
        "{}",
        stderr(&out)
    );
    // With the CI key in --trust it continues; the trust file is verify's own format.
    let trust = p.allowed_signers.to_str().unwrap();
    let out = with_key("lock", &p, &release, &["--trust", trust]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(generation(&p.dir), 2);
    let out = run(
        &[
            "verify",
            p.dir.to_str().unwrap(),
            "--allowed-signers",
            both.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("release@example.com"),
        "{}",
        stdout(&out)
    );
    // A trust file that does not name the signer does not help.
    tamper_generation(&p.dir, 99);
    let before = p.snapshot();
    let out = with_key("lock", &p, &p.key, &["--trust", both.to_str().unwrap()]);
    assert_refused_unsigned(&out, &p, &before);
    assert!(
        stderr(&out).contains("(or by a key in --trust)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refresh_refuses_to_continue_from_an_unsigned_generation() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&["--expires-in", "1h"])), 0);
    tamper_generation(&p.dir, MAX);
    let before = p.snapshot();
    let out = with_key("refresh", &p, &p.key, &["--expires-in", "30d"]);
    assert_refused_unsigned(&out, &p, &before);
    assert!(
        stderr(&out).contains("lockstep lock --new-history"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refresh_continues_from_an_expired_lockfile_signed_by_a_trusted_key() {
    let p = Project::new();
    // Created 2023-11-14, expired an hour later.
    assert_eq!(code(&p.lock(&["--expires-in", "1h"])), 0);
    let (release, _) = second_approver(&p);
    let before = p.snapshot();
    let out = with_key("refresh", &p, &release, &["--expires-in", "30d"]);
    assert_refused_unsigned(&out, &p, &before);
    let trust = p.allowed_signers.to_str().unwrap();
    let out = with_key(
        "refresh",
        &p,
        &release,
        &["--expires-in", "30d", "--trust", trust],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(generation(&p.dir), 2);
    // Refreshed by its own key from there.
    let out = with_key("refresh", &p, &release, &["--expires-in", "30d"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(generation(&p.dir), 3);
}

#[test]
fn mirror_refuses_to_continue_from_an_unsigned_generation() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    tamper_generation(&p.dir, MAX);
    let backup = TestRegistry::start(RegistryOptions::default());
    let before = p.snapshot();
    let to = format!("{}/dr", backup.host());
    let out = with_key("mirror", &p, &p.key, &["--to", &to]);
    assert_refused_unsigned(&out, &p, &before);
    assert!(
        backup.requests().iter().all(|r| !r.contains("/v2/dr/")),
        "refused before anything was copied: {:?}",
        backup.requests()
    );
}

#[test]
fn mirror_continues_from_a_lockfile_signed_by_a_trusted_key() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let (release, _) = second_approver(&p);
    let backup = TestRegistry::start(RegistryOptions::default());
    let to = format!("{}/dr", backup.host());
    let trust = p.allowed_signers.to_str().unwrap();
    let out = with_key("mirror", &p, &release, &["--to", &to, "--trust", trust]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(generation(&p.dir), 2);
}

#[test]
fn sign_with_trust_refuses_bytes_no_trusted_key_signed() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let (release, _) = second_approver(&p);
    let trust = p.allowed_signers.to_str().unwrap();
    // The honest case: the existing signature checks out, the approval is added.
    let out = with_key("sign", &p, &release, &["--trust", trust]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("not checked"), "{}", stderr(&out));
    assert_eq!(signature_files(&p.dir).len(), 2);
    // Tampered: with --trust the approver is told, and signs nothing.
    tamper_generation(&p.dir, MAX);
    let before = p.snapshot();
    let out = with_key("sign", &p, &release, &["--trust", trust]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lockstep.lock is not signed by this key (or by a key in --trust)")
            && stderr(&out).contains("nothing was signed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.snapshot(), before, "nothing written");
}

#[test]
fn sign_without_trust_is_the_approvers_own_judgement_and_says_so() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let (release, _) = second_approver(&p);
    let out = run(
        &[
            "--json",
            "sign",
            p.dir.to_str().unwrap(),
            "--key",
            release.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("were not checked")
            && stderr(&out).contains("vouches for generation 1"),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signatures_checked"], false);
    // Re-signing what this key signed already is checked against the key itself.
    let out = run(
        &[
            "--json",
            "sign",
            p.dir.to_str().unwrap(),
            "--key",
            release.to_str().unwrap(),
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signatures_checked"], true, "{}", stderr(&out));
}

/// Regression: `image: <host>/tools/debug` (no tag, no digest: Kubernetes pulls `:latest`)
/// locked, but wrote an entry without a tag and with an empty media type, which `verify`
/// and the next `lock` refused as unreadable.
#[test]
fn a_tagless_image_locks_verifies_and_relocks() {
    let p = Project::new();
    let host = p.registry.host();
    std::fs::write(
        p.dir.join("tagless.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: tagless}}\nspec:\n  containers:\n    - name: c\n      image: {host}/tools/debug\n"
        ),
    )
    .unwrap();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The tag the digest was resolved from is written down, in the manifest and the lock.
    let pinned = std::fs::read_to_string(p.dir.join("tagless.yaml")).unwrap();
    assert!(
        pinned.contains(&format!("image: {host}/tools/debug:latest@sha256:")),
        "{pinned}"
    );
    let table: toml::Table = toml::from_str(&lockfile_text(&p.dir)).unwrap();
    for image in table["image"].as_array().unwrap() {
        assert!(
            !image["media-type"].as_str().unwrap().is_empty(),
            "{image:?}"
        );
    }
    let tagless = table["image"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["use"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["name"].as_str() == Some("tagless"))
        })
        .unwrap();
    assert_eq!(tagless["tag"].as_str(), Some("latest"), "{tagless:?}");
    let out = p.verify(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Relocked: nothing changed, so nothing to do.
    let before = p.snapshot();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("up to date"), "{}", stdout(&out));
    assert_eq!(p.snapshot(), before);
    // `latest` moved: the pin follows it (it is lockstep's, not a digest chosen by hand).
    let old = tagless["digest"].as_str().unwrap().to_owned();
    p.registry.push_image("tools/debug", "latest", b"debug v2");
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(generation(&p.dir), 2);
    let pinned = std::fs::read_to_string(p.dir.join("tagless.yaml")).unwrap();
    assert!(!pinned.contains(&old), "{pinned}");
    assert!(
        !stderr(&out).contains("keeps its digest"),
        "{}",
        stderr(&out)
    );
    assert_eq!(code(&p.verify(&[])), 0);
    let out = run(
        &["lock", p.dir.to_str().unwrap(), "--check"],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

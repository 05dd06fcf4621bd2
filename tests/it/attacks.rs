//! Attacks on the promise "a commit that verifies determines what runs", each written as the
//! secure outcome: a failing test here is a finding. The attacker can get files merged and
//! signed by CI's `lockstep lock` (holds no key), and can push unsigned commits.

use crate::k8s_reader::{assert_agrees, differ, oracle};

/// Exploration aid (not a check): `ATTACK_DIR=/tmp/att cargo test --test it attacks_explore
/// -- --ignored --nocapture` prints how lockstep and kubectl read every file there.
#[test]
#[ignore]
fn attacks_explore() {
    let Some(o) = oracle() else { return };
    let dir = std::env::var("ATTACK_DIR").unwrap_or_else(|_| "/tmp/att".into());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let scan = lockstep::manifest::scan_file(&name, &bytes, &Default::default());
        let ours = match &scan {
            Ok(s) => format!(
                "OK {:?}",
                s.objects.iter().map(|o| &o.body).collect::<Vec<_>>()
            ),
            Err(e) => format!("REFUSED {e}"),
        };
        println!(
            "== {name}: {:?}\n   lockstep: {}",
            differ(o, &name, &bytes),
            &ours[..ours.len().min(400)]
        );
    }
}

// ------------------------------------------------------------------ helpers

use jiff::Timestamp;
use lockstep::cluster::plan::VerifiedObjects;
use lockstep::lockfile::Lockfile;
use lockstep::manifest::{ScanConfig, scan_file};
use lockstep::signing::{AllowedSigners, SigningKey};
use lockstep::source::{self, SourceFiles};
use lockstep::verify::{TrustPolicy, VerifyError, scan_dir, verify_dir};

/// `files` locked and signed as CI's `lockstep lock` would (every image already carries a
/// digest, so no registry is asked), with the allowed_signers that trust the key.
fn signed(files: &[(&str, &str)]) -> (SourceFiles, AllowedSigners) {
    let mut dir = SourceFiles::default();
    for (path, text) in files {
        dir.insert((*path).to_owned(), text.as_bytes().to_vec())
            .unwrap();
    }
    let scan = scan_dir(&dir).expect("lock accepts the directory");
    let lock = Lockfile::build(
        1,
        Timestamp::from_second(1_700_000_000).unwrap(),
        scan.binding.clone(),
        &scan.uses,
        &Default::default(),
    );
    let key = SigningKey::generate("ci@example.com").unwrap();
    let bytes = lock.to_bytes();
    let sig = key.sign(&bytes).unwrap();
    dir.insert(source::LOCKFILE.to_owned(), bytes).unwrap();
    dir.insert(source::signature_path("ci"), sig.into_bytes())
        .unwrap();
    let trust =
        AllowedSigners::parse(&key.allowed_signers_line("ci@example.com"), "trust").unwrap();
    (dir, trust)
}

fn verify(dir: &SourceFiles, trust: &AllowedSigners) -> Result<VerifiedObjects, String> {
    let policy = TrustPolicy {
        signers: trust,
        at: Timestamp::from_second(1_700_000_100).unwrap(),
        threshold: 1,
        environment: None,
        strict: false,
    };
    let verified = verify_dir(dir, &policy).map_err(|e: VerifyError| format!("{e:?}"))?;
    VerifiedObjects::parse(&verified).map_err(|e| e.to_string())
}

/// The images lockstep found in one file (what `lock` pins and `verify` checks).
fn images(text: &str) -> Result<Vec<String>, String> {
    scan_file("m.yaml", text.as_bytes(), &ScanConfig::default())
        .map(|s| s.uses.into_iter().map(|u| u.written).collect())
        .map_err(|e| e.to_string())
}

// ------------------------------------------------------------------ YAML: `?` in flow context

/// go-yaml takes `?` as the explicit-key indicator anywhere in a flow collection, also when
/// a non-blank follows (`?image`); YAML 1.2 (saphyr) reads `?image` as a plain scalar. With
/// go-yaml's "last duplicate wins", kubectl runs `evil` while lockstep pinned and verified
/// `good`.
const QUESTION_KEY_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: \"reg.example/good:1@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", ?image: \"evil.example/x:1\"}\n";

#[test]
fn attack_flow_question_key_overrides_the_pinned_image() {
    // Secure: refused, or the image lockstep checks is the one kubectl runs.
    match images(QUESTION_KEY_POD) {
        Err(_) => {}
        Ok(found) => assert_eq!(
            found,
            vec!["evil.example/x:1".to_owned()],
            "lockstep verifies {found:?}; kubectl runs evil.example/x:1"
        ),
    }
    assert_agrees("flow_question_key", QUESTION_KEY_POD.as_bytes());
}

#[test]
fn attack_flow_question_key_in_a_sequence() {
    // `[?x]` is [{"x": null}] to kubectl, ["?x"] to YAML 1.2.
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nx: [?y]\n";
    assert_agrees("flow_question_seq", text.as_bytes());
}

#[test]
fn attack_flow_question_key_overrides_kind() {
    // kubectl: a Pod running an unpinned image; lockstep: a ConfigMap (a notice at most).
    let text = "{apiVersion: v1, kind: ConfigMap, metadata: {name: p}, spec: {containers: [{name: a, image: \"evil.example/x:1\"}]}, ?kind: Pod}\n";
    assert_agrees("flow_question_kind", text.as_bytes());
}

#[test]
fn attack_flow_question_key_signed_commit_runs_an_unverified_image() {
    // End to end: CI signs it, verify accepts it: the secure outcome is that it does not.
    let Ok((dir, trust)) = std::panic::catch_unwind(|| signed(&[("pod.yaml", QUESTION_KEY_POD)]))
    else {
        return; // lock refused it: secure
    };
    let verified = verify(&dir, &trust);
    assert!(
        verified.is_err(),
        "a signed commit verifies, and kubectl applies a Pod running evil.example/x:1 (unpinned)"
    );
}

// ------------------------------------------------------------------ Lists: typed list items

/// kubectl's unstructured List decoder gives an item with neither apiVersion nor kind the
/// list's apiVersion and its kind minus `List`: in a `PodList`, a bare item is a Pod.
const KINDLESS_POD_LIST: &str = "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p}\n  spec:\n    containers:\n    - name: a\n      image: evil.example/x:latest\n";

#[test]
fn attack_typed_list_item_without_type_meta_is_a_pod_to_kubectl() {
    assert_agrees("kindless_pod_list", KINDLESS_POD_LIST.as_bytes());
}

#[test]
fn attack_typed_list_item_without_type_meta_signed_and_verified() {
    let text = "apiVersion: apps/v1\nkind: DeploymentList\nitems:\n- metadata: {name: web}\n  spec:\n    selector: {matchLabels: {a: b}}\n    template:\n      metadata: {labels: {a: b}}\n      spec:\n        containers:\n        - name: a\n          image: evil.example/x:latest\n";
    let Ok((dir, trust)) = std::panic::catch_unwind(|| signed(&[("list.yaml", text)])) else {
        return;
    };
    assert!(
        verify(&dir, &trust).is_err(),
        "verified, while kubectl applies Deployment web running evil.example/x:latest (unpinned)"
    );
}

#[test]
fn attack_typed_list_item_with_empty_type_meta() {
    // `apiVersion: ""` and `kind: ""` count as missing for kubectl too.
    let text = "apiVersion: v1\nkind: PodList\nitems:\n- apiVersion: \"\"\n  kind: \"\"\n  metadata: {name: p}\n  spec:\n    containers:\n    - name: a\n      image: evil.example/x:latest\n";
    assert_agrees("empty_type_meta_pod_list", text.as_bytes());
}

// ------------------------------------------------------------------ cost within the limits

/// Every step is meant to be linear in the file. Each document costs a count of the lines
/// before it (`position_of` from the start of the file), so many small documents are
/// quadratic: 10 000 one-key mappings (80 KB) should take milliseconds.
#[test]
fn attack_cost_many_small_documents_is_linear() {
    let text = "a: 1\n---\n".repeat(10_000);
    let started = std::time::Instant::now();
    let scan = scan_file("m.yaml", text.as_bytes(), &ScanConfig::default());
    let took = started.elapsed();
    assert!(scan.is_ok());
    assert!(
        took < std::time::Duration::from_secs(2),
        "10 000 documents (80 KB) took {took:?}"
    );
}

/// Aliases are budgeted by count, not by size: one long anchored scalar aliased many times
/// decodes to (aliases x length) bytes, twice (decoded value, then its JSON body). 4 000
/// aliases of 64 KiB (a 100 KB file) make 512 MiB; an 8 MiB file holds far more. Secure:
/// refused, like any other alias bomb.
#[test]
fn attack_cost_aliases_of_a_long_scalar_are_bounded() {
    let mut text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata:\n  a: &a {}\n",
        "x".repeat(64 * 1024)
    );
    for i in 0..4000 {
        text.push_str(&format!("  b{i}: *a\n"));
    }
    let scan = scan_file("m.yaml", text.as_bytes(), &ScanConfig::default());
    assert!(
        scan.is_err(),
        "a {} byte file decoded to {} bytes of strings",
        text.len(),
        4001 * 64 * 1024
    );
}

/// go-yaml keeps a `:` followed by `,` or `}` in a flow plain scalar (`[a:, b]` is
/// ["a:", "b"], `{b:}` is {"b:": null}); YAML 1.2 ends the scalar there and reads a key.
#[test]
fn attack_flow_colon_before_indicator() {
    for (name, text) in [
        (
            "flow_colon_comma",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nx: [a:, b]\n",
        ),
        (
            "flow_colon_brace",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nx: [{b:}]\n",
        ),
    ] {
        assert_agrees(name, text.as_bytes());
    }
}

// ------------------------------------------------------------------ the reconciler's own check

/// Held: a pod template in a kind lockstep does not know (a notice for `verify`) is refused
/// by the reconciler when an image in a container list is unpinned.
#[test]
fn attack_reconciler_unknown_kind_with_a_container_list() {
    let text = "apiVersion: example.com/v1\nkind: Runner\nmetadata: {name: r}\nspec:\n  template:\n    spec:\n      initContainers:\n      - {name: a, image: \"evil.example/x:1\"}\n";
    let (dir, trust) = signed(&[("r.yaml", text)]);
    let refused = verify(&dir, &trust).expect_err("unpinned image applied");
    assert!(refused.contains("evil.example/x:1"), "{refused}");
}

/// A controller's single-container field (Argo Workflows `templates[].container`, Tekton
/// `steps[]`): lockstep has no image paths for the kind, so `verify` says so (a note naming
/// the path) and `--strict` (a LockstepSync's `spec.strict`) refuses it; declared in
/// `lockstep.toml`, the image is pinned like any other. Refusing every `image` string of every
/// custom resource by default would refuse Prometheus, Alertmanager and Tekton objects that
/// real repositories apply, so the default is the note.
#[test]
fn attack_reconciler_singular_container_field() {
    let text = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: \"evil.example/x:1\"}\n";
    let (dir, trust) = signed(&[("w.yaml", text)]);
    let policy = |strict| TrustPolicy {
        signers: &trust,
        at: Timestamp::from_second(1_700_000_100).unwrap(),
        threshold: 1,
        environment: None,
        strict,
    };
    let verified = verify_dir(&dir, &policy(false)).expect("verifies, with a note");
    assert!(
        verified.scan().notices.iter().any(|n| matches!(
            &n.reason,
            lockstep::manifest::NoticeReason::UnscannedImages { paths, .. }
                if paths == &["spec.templates[0].container.image".to_owned()]
        )),
        "{:?}",
        verified.scan().notices
    );
    let refused = verify_dir(&dir, &policy(true)).expect_err("--strict refuses it");
    assert!(
        matches!(refused, VerifyError::UnscannedImages(_)),
        "{refused}"
    );
}

//! What is verified is what runs, end to end through the binary: `render` prints exactly the
//! objects verification decoded (and Kubernetes' reader reads them back the same), `--strict`
//! refuses objects whose images lockstep does not pin, and unsigned files cost only a hash.

use std::path::Path;

use crate::cli::{Project, code, stderr, stdout};

fn workflow(registry: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Workflow\nmetadata: {{name: nightly}}\nspec:\n  steps:\n  - container: {{image: '{registry}/tools/step:1'}}\n"
    )
}

#[test]
fn render_prints_the_verified_objects_as_json_that_kubectl_reads_back_the_same() {
    let p = Project::new();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = p.render(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let stream = stdout(&out);
    let rendered: Vec<serde_json::Value> = stream
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // Exactly the objects verification decoded, in file order.
    let files = lockstep::source::fs::read_dir(&p.dir).unwrap();
    let scan = lockstep::verify::scan_dir(&files).unwrap();
    let decoded: Vec<serde_json::Value> = scan
        .objects
        .iter()
        .map(|o| serde_json::Value::Object(o.body.clone()))
        .collect();
    assert_eq!(rendered, decoded);
    assert!(
        !stream.contains("# Source"),
        "no file names reach the stream"
    );
    // Every image in the stream is pinned.
    for u in &scan.uses {
        assert!(u.reference.digest().is_some(), "{}", u.written);
        assert!(stream.contains(&serde_json::to_string(&u.written).unwrap()));
    }
    // Kubernetes' own reader gets the same objects from the stream.
    if let Some(oracle) = crate::k8s_reader::oracle() {
        let theirs: Vec<serde_json::Value> =
            crate::k8s_reader::kubectl_read(oracle, stream.as_bytes())
                .expect("kubectl reads the rendered stream")
                .into_iter()
                .map(serde_json::Value::Object)
                .collect();
        assert_eq!(theirs, rendered);
    }
}

#[test]
fn strict_refuses_an_object_of_an_unknown_kind_that_holds_images() {
    let p = Project::new();
    p.registry.push_image("tools/step", "1", b"step v1");
    std::fs::write(p.dir.join("workflow.yaml"), workflow(&p.registry.host())).unwrap();
    let out = p.lock(&["--strict"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Workflow/nightly")
            && stderr(&out).contains("spec.steps[0].container.image"),
        "{}",
        stderr(&out)
    );
    assert!(!p.dir.join("lockstep.lock").exists(), "nothing written");

    // Without --strict it locks, saying what it does not pin.
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Workflow/nightly is of a kind lockstep has no image paths for"),
        "{}",
        stderr(&out)
    );
    let out = p.verify(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.steps[0].container.image"),
        "{}",
        stderr(&out)
    );
    let out = p.verify(&["--strict"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("--strict"), "{}", stderr(&out));
    let out = p.render(&["--strict"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stdout(&out).is_empty());

    // Declared in lockstep.toml, its image is pinned and strict passes.
    let config = p.dir.join("lockstep.toml");
    let mut text = std::fs::read_to_string(&config).unwrap_or_default();
    text.push_str("\n[[custom]]\napi-version = \"example.com/v1\"\nkind = \"Workflow\"\nimages = [\"spec.steps[].container.image\"]\n");
    std::fs::write(&config, text).unwrap();
    let out = p.lock(&["--strict"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = p.verify(&["--strict"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pinned = std::fs::read_to_string(p.dir.join("workflow.yaml")).unwrap();
    assert!(pinned.contains("tools/step:1@sha256:"), "{pinned}");
}

#[test]
fn a_manifest_read_two_ways_is_refused_before_anything_is_signed() {
    // A comment that go-yaml ends at U+2028, so that a second `image:` follows for Kubernetes.
    let p = Project::new();
    let evil = "apiVersion: v1\nkind: Pod\nmetadata: {name: evil}\nspec:\n  containers:\n  - name: c\n    image: registry.example/app:1 # ok\u{2028}    image: attacker.example/x:1\n";
    std::fs::write(p.dir.join("evil.yaml"), evil).unwrap();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("evil.yaml:7:") && stderr(&out).contains("U+2028"),
        "{}",
        stderr(&out)
    );
    assert!(!Path::new(&p.dir.join("lockstep.lock")).exists());
}

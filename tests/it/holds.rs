//! `lock --hold` / `--release` and digests written by hand, against a real registry: a
//! rollback holds across later locks until released, and `lock` names every digest it moves.

use crate::cli::{Project, code, lockfile_text, stderr};

/// The digest of every use of `shop/worker:1.0` in the manifests (there are several).
fn worker_digests(p: &Project) -> Vec<String> {
    let mut found = Vec::new();
    for file in [
        "jobs/nightly.yaml",
        "apps/web.yaml",
        "legacy/controllers.yaml",
    ] {
        let text = std::fs::read_to_string(p.dir.join(file)).unwrap();
        for line in text.lines().filter(|l| l.contains("shop/worker:1.0")) {
            let digest = line
                .split_once('@')
                .map(|(_, d)| d.trim_matches(['"', ' ']));
            found.push(digest.unwrap_or("(none)").to_owned());
        }
    }
    found
}

fn held_entries(p: &Project) -> Vec<String> {
    let table: toml::Table = toml::from_str(&lockfile_text(&p.dir)).unwrap();
    table["image"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("held").and_then(toml::Value::as_bool) == Some(true))
        .map(|i| i["reference"].as_str().unwrap().to_owned())
        .collect()
}

/// Regression (issue 10): a deliberate rollback was undone by the next `lock`.
#[test]
fn a_held_image_stays_at_its_digest_across_locks_until_released() {
    let p = Project::new();
    let worker = format!("{}/shop/worker:1.0", p.registry.host());
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v1 = worker_digests(&p)[0].clone();
    assert!(worker_digests(&p).iter().all(|d| *d == v1));
    // The first lock names every digest it sets.
    assert!(
        stderr(&out).contains(&format!("{worker}: (new) -> {v1} (its tag's digest)")),
        "{}",
        stderr(&out)
    );

    // v2 is pushed; roll back to v1 with --hold.
    let v2 = p
        .registry
        .push_image("shop/worker", "1.0", b"worker v2")
        .to_string();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(worker_digests(&p).iter().all(|d| *d == v2));
    assert!(
        stderr(&out).contains(&format!("{worker}: {v1} -> {v2} (its tag's digest)")),
        "{}",
        stderr(&out)
    );
    let out = p.lock(&["--hold", &format!("{worker}@{v1}")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        worker_digests(&p).iter().all(|d| *d == v1),
        "{:?}",
        worker_digests(&p)
    );
    assert!(
        stderr(&out).contains(&format!("{worker}: {v2} -> {v1} (held by --hold)")),
        "{}",
        stderr(&out)
    );
    assert_eq!(held_entries(&p), std::slice::from_ref(&worker));
    assert_eq!(code(&p.verify(&[])), 0);

    // An unrelated change and another lock: the hold stands, with a warning and a note.
    p.registry.push_image("shop/web", "2.0", b"web v2");
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        worker_digests(&p).iter().all(|d| *d == v1),
        "{:?}",
        worker_digests(&p)
    );
    let err = stderr(&out);
    assert!(err.contains("keeps its digest (held)"), "{err}");
    assert!(
        err.contains(&format!(
            "{worker}: held at its digest (`--release {worker}`"
        )),
        "{err}"
    );
    assert_eq!(held_entries(&p), std::slice::from_ref(&worker));

    // Released: it follows its tag again, and the lockfile no longer holds it.
    let out = p.lock(&["--release", &worker]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(worker_digests(&p).iter().all(|d| *d == v2));
    assert!(
        stderr(&out).contains(&format!("{worker}: {v1} -> {v2} (its tag's digest)")),
        "{}",
        stderr(&out)
    );
    assert!(held_entries(&p).is_empty());
    assert_eq!(code(&p.verify(&[])), 0);
}

/// Regression (issue 10): a hand-written `tag@digest` the previous lockfile did not record
/// was kept once, then re-pinned to the tag by the next unrelated lock, with no notice.
#[test]
fn a_digest_written_by_hand_is_held_until_released() {
    let p = Project::new();
    let worker = format!("{}/shop/worker:1.0", p.registry.host());
    assert_eq!(code(&p.lock(&[])), 0);
    let v1 = worker_digests(&p)[0].clone();
    let v2 = p
        .registry
        .push_image("shop/worker", "1.0", b"worker v2")
        .to_string();
    assert_eq!(code(&p.lock(&[])), 0);
    // The author rolls one file back by hand.
    let path = p.dir.join("jobs/nightly.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(&v2, &v1)).unwrap();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("written in the manifest by hand: held"),
        "{}",
        stderr(&out)
    );
    assert_eq!(held_entries(&p), std::slice::from_ref(&worker));
    // Every use of the reference follows the hold (one lockfile entry, one digest).
    assert!(
        worker_digests(&p).iter().all(|d| *d == v1),
        "{:?}",
        worker_digests(&p)
    );
    // The next, unrelated lock keeps it.
    p.registry.push_image("shop/web", "2.0", b"web v2");
    assert_eq!(code(&p.lock(&[])), 0);
    assert!(
        worker_digests(&p).iter().all(|d| *d == v1),
        "{:?}",
        worker_digests(&p)
    );
    assert_eq!(code(&p.verify(&[])), 0);

    // Edited by hand in one file: that edit is the new hold, for every use.
    let edit = |file: &str, from: &str, to: &str| {
        let path = p.dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(from, to)).unwrap();
    };
    edit("jobs/nightly.yaml", &v1, &v2);
    let out = p.lock(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        worker_digests(&p).iter().all(|d| *d == v2),
        "{:?}",
        worker_digests(&p)
    );
    // Two different digests by hand: the author must choose; nothing is written.
    let v3 = p
        .registry
        .push_image("shop/worker", "1.0", b"worker v3")
        .to_string();
    edit("jobs/nightly.yaml", &v2, &v1);
    edit("apps/web.yaml", &v2, &v3);
    let before = p.snapshot();
    let out = p.lock(&[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{worker} is written with two digests by hand"))
            && err.contains("--hold"),
        "{err}"
    );
    assert_eq!(p.snapshot(), before, "nothing written");
}

#[test]
fn holds_that_name_no_image_or_no_digest_are_usage_errors() {
    let p = Project::new();
    assert_eq!(code(&p.lock(&[])), 0);
    let before = p.snapshot();
    let host = p.registry.host();
    let digest = format!("sha256:{}", "a".repeat(64));
    for (args, says) in [
        (
            vec![
                "--hold".to_owned(),
                format!("{host}/shop/nothing:1@{digest}"),
            ],
            "no manifest uses this image",
        ),
        (
            vec!["--hold".to_owned(), format!("{host}/shop/worker:1.0")],
            "give the digest",
        ),
        (
            vec!["--hold".to_owned(), format!("{host}/shop/worker@{digest}")],
            "with its tag",
        ),
        (
            vec!["--release".to_owned(), format!("{host}/shop/nothing:1")],
            "no manifest uses this image",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = p.lock(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert_eq!(p.snapshot(), before, "nothing written");
    }
    // A digest the registry does not have is refused by the registry check, nothing written.
    let out = p.lock(&["--hold", &format!("{host}/shop/worker:1.0@{digest}")]);
    assert_ne!(code(&out), 0);
    assert_eq!(p.snapshot(), before, "nothing written");
}

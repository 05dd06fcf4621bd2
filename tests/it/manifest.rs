//! manifest integration tests: the whole `fixtures/manifests` tree scanned, pinned in place
//! and scanned again; `fixtures/malformed` refused with the right locations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lockstep::manifest::{FileScan, NoticeReason, ScanConfig, ScanError, pin_uses, scan_file};
use lockstep::model::{Digest, ImageUse, pin_written};

/// What the test harness would put in place of `REGISTRY` (no registry is contacted here).
const REGISTRY: &str = "127.0.0.1:5000";

fn fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir)
}

/// Every `*.yaml` / `*.yml` under `root`, as (`/`-separated relative path, bytes with
/// `REGISTRY` substituted), sorted by path.
fn manifest_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .replace('\\', "/");
                out.push((rel, substitute(&std::fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `sed s/REGISTRY/127.0.0.1:5000/g` on bytes (the BOM and CRLF files are not UTF-8 text
/// to every tool, so do it bytewise).
fn substitute(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = rest.windows(8).position(|w| w == b"REGISTRY") {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(REGISTRY.as_bytes());
        rest = &rest[i + 8..];
    }
    out.extend_from_slice(rest);
    out
}

fn fixture_config() -> ScanConfig {
    let text = std::fs::read_to_string(fixtures("manifests").join("lockstep.toml")).unwrap();
    ScanConfig::parse(&text, "lockstep.toml").unwrap()
}

fn scan_all(config: &ScanConfig) -> Vec<(String, Vec<u8>, FileScan)> {
    manifest_files(&fixtures("manifests"))
        .into_iter()
        .map(|(file, bytes)| {
            let scan = scan_file(&file, &bytes, config).unwrap_or_else(|e| panic!("{file}: {e}"));
            (file, bytes, scan)
        })
        .collect()
}

/// (file, object, container, written reference) of every use.
fn found(scans: &[(String, Vec<u8>, FileScan)]) -> BTreeSet<(String, String, String, String)> {
    scans
        .iter()
        .flat_map(|(_, _, s)| &s.uses)
        .map(|u| {
            (
                u.file.clone(),
                u.object.to_string(),
                u.container.clone(),
                u.written.clone(),
            )
        })
        .collect()
}

#[test]
fn scanning_the_fixture_tree_finds_exactly_the_expected_images() {
    let scans = scan_all(&fixture_config());
    let want: BTreeSet<_> = [
        (
            "apps/agent.yml",
            "DaemonSet/kube-system/node-agent",
            "containers/agent",
            "base/busybox:1.36",
        ),
        (
            "apps/api.yaml",
            "Deployment/shop/api",
            "initContainers/migrate",
            "shop/migrate:1.0",
        ),
        (
            "apps/api.yaml",
            "Deployment/shop/api",
            "containers/api",
            "shop/api:1.4",
        ),
        (
            "apps/web.yaml",
            "StatefulSet/shop/web",
            "containers/web",
            "shop/web:2.0",
        ),
        (
            "apps/web.yaml",
            "StatefulSet/shop/web",
            "containers/cache-warmer",
            "shop/worker:1.0",
        ),
        (
            "crds/image-cache.yaml",
            "ImageCache/shop/warm-cache",
            "spec.image",
            "shop/cr:0.9",
        ),
        (
            "crds/image-cache.yaml",
            "ImageCache/shop/warm-cache",
            "spec.sidecars[0].image",
            "shop/cr:0.9",
        ),
        (
            "crds/rollout.yaml",
            "Rollout/shop/storefront",
            "containers/storefront",
            "shop/rollout:3.1",
        ),
        (
            "jobs/migrate-crlf.yaml",
            "Job/shop/db-migrate",
            "containers/migrate",
            "shop/migrate:1.0",
        ),
        (
            "jobs/nightly.yaml",
            "CronJob/shop/nightly-report",
            "containers/report",
            "shop/worker:1.0",
        ),
        (
            "legacy/controllers.yaml",
            "ReplicationController/web-legacy",
            "containers/web",
            "shop/web:2.0",
        ),
        (
            "legacy/controllers.yaml",
            "ReplicaSet/shop/worker",
            "containers/worker",
            "shop/worker:1.0",
        ),
        (
            "legacy/controllers.yaml",
            "PodTemplate/busybox-template",
            "containers/shell",
            "base/busybox:1.36",
        ),
        (
            "list.yaml",
            "Deployment/shop/api-canary",
            "containers/api",
            "shop/api:1.4",
        ),
        (
            "pods/debug-bom.yaml",
            "Pod/shop/debug-me",
            "containers/app",
            "base/busybox:1.36",
        ),
        (
            "pods/debug-bom.yaml",
            "Pod/shop/debug-me",
            "ephemeralContainers/debugger",
            "tools/debug:latest",
        ),
    ]
    .into_iter()
    .map(|(f, o, c, r)| {
        (
            f.to_owned(),
            o.to_owned(),
            c.to_owned(),
            format!("{REGISTRY}/{r}"),
        )
    })
    .collect();
    assert_eq!(found(&scans), want);

    // Every field of every use is consistent with the file it came from.
    for (file, bytes, scan) in &scans {
        let text = std::str::from_utf8(bytes).unwrap();
        for u in &scan.uses {
            assert_eq!(&u.file, file);
            assert_eq!(
                &bytes[u.span.clone()],
                u.written.as_bytes(),
                "{}",
                u.location()
            );
            assert_eq!(u.reference.registry(), REGISTRY);
            assert_eq!(u.reference.to_string(), u.written, "already normalized");
            let line = text
                .trim_start_matches('\u{feff}')
                .lines()
                .nth(u.line - 1)
                .unwrap();
            let column_text: String = line
                .chars()
                .skip(u.column - 1)
                .take(u.written.chars().count())
                .collect();
            assert_eq!(column_text, u.written, "{}", u.location());
        }
    }
}

/// (document, object) of every object of a scan.
fn objects_of(scan: &FileScan) -> Vec<(usize, String)> {
    scan.objects
        .iter()
        .map(|o| (o.document, o.object.to_string()))
        .collect()
}

#[test]
fn documents_objects_and_notices_of_the_fixture_tree() {
    let scans = scan_all(&fixture_config());
    let scan_of = |name: &str| &scans.iter().find(|(f, _, _)| f == name).unwrap().2;

    // A comment before the first `---` is a document of its own (an empty one), as
    // Kubernetes' reader splits the stream; the trailing `---` is an empty one too.
    let api = scan_of("apps/api.yaml");
    assert_eq!(
        objects_of(api),
        [
            (1, "Deployment/shop/api".to_owned()),
            (2, "Service/shop/api".to_owned())
        ]
    );
    assert!(api.uses.iter().all(|u| u.document == 1));

    let web = scan_of("apps/web.yaml");
    assert_eq!(
        objects_of(web),
        [
            (0, "StatefulSet/shop/web".to_owned()),
            // `---` twice: Kubernetes' reader takes the second line as the start of the next
            // document, not as an empty document between them.
            (1, "ConfigMap/shop/web-config".to_owned())
        ]
    );

    // The List's items are the objects, in document 0.
    let list = scan_of("list.yaml");
    assert_eq!(
        objects_of(list),
        [
            (0, "Deployment/shop/api-canary".to_owned()),
            (0, "ConfigMap/shop/api-canary-config".to_owned())
        ]
    );
    assert_eq!(list.objects[0].object.api_version, "apps/v1");

    let legacy = scan_of("legacy/controllers.yaml");
    assert_eq!(
        legacy.uses.iter().map(|u| u.document).collect::<Vec<_>>(),
        [0, 1, 2]
    );

    let misc = scan_of("misc/monitoring.yaml");
    assert!(misc.uses.is_empty());
    assert_eq!(misc.objects.len(), 1);
    assert_eq!(misc.notices.len(), 1);
    let notice = &misc.notices[0];
    assert_eq!(
        (notice.file.as_str(), notice.document, notice.line),
        ("misc/monitoring.yaml", 1, 18)
    );
    assert_eq!(
        notice.reason,
        NoticeReason::MissingTypeMeta {
            missing: "apiVersion and kind"
        }
    );

    let notices: usize = scans.iter().map(|(_, _, s)| s.notices.len()).sum();
    assert_eq!(
        notices, 1,
        "only the settings document is skipped with a notice"
    );
}

#[test]
fn without_lockstep_toml_custom_resources_hold_no_images() {
    let scans = scan_all(&ScanConfig::default());
    let kinds: BTreeSet<_> = scans
        .iter()
        .flat_map(|(_, _, s)| &s.uses)
        .map(|u| u.object.kind.clone())
        .collect();
    assert!(
        !kinds.contains("Rollout") && !kinds.contains("ImageCache"),
        "{kinds:?}"
    );
    assert_eq!(found(&scans).len(), 13);
}

/// `bytes` with each span removed: what must stay byte-identical through a rewrite.
fn without_spans(bytes: &[u8], spans: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    for span in spans {
        out.extend_from_slice(&bytes[at..span.start]);
        at = span.end;
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

fn digest_for(u: &ImageUse) -> Digest {
    Digest::of(u.written.as_bytes())
}

#[test]
fn pinning_every_fixture_changes_only_the_image_scalars() {
    let config = fixture_config();
    for (file, bytes, scan) in scan_all(&config) {
        let pinned = pin_uses(&file, &bytes, &scan.uses, |u| Some(digest_for(u))).unwrap();

        // Where each pinned reference must now be.
        let mut shift = 0isize;
        let mut new_spans = Vec::new();
        let mut want_written = Vec::new();
        for u in &scan.uses {
            let replacement = pin_written(&u.written, &digest_for(u));
            let start = (u.span.start as isize + shift) as usize;
            new_spans.push(start..start + replacement.len());
            shift += replacement.len() as isize - u.span.len() as isize;
            want_written.push(replacement);
        }
        let old_spans: Vec<_> = scan.uses.iter().map(|u| u.span.clone()).collect();
        assert_eq!(
            without_spans(&bytes, &old_spans),
            without_spans(&pinned, &new_spans),
            "{file}: other bytes changed"
        );
        if bytes.windows(2).any(|w| w == b"\r\n") {
            let lone_lf = |b: &[u8]| {
                b.iter()
                    .enumerate()
                    .filter(|&(i, &c)| c == b'\n' && (i == 0 || b[i - 1] != b'\r'))
                    .count()
            };
            assert_eq!(lone_lf(&pinned), 0, "{file}: CRLF kept");
        }
        assert_eq!(
            pinned.starts_with(b"\xef\xbb\xbf"),
            bytes.starts_with(b"\xef\xbb\xbf"),
            "{file}: BOM kept"
        );

        // A re-scan finds the pinned references at the new spans, in the same places.
        let rescan = scan_file(&file, &pinned, &config).unwrap();
        assert_eq!(rescan.uses.len(), scan.uses.len(), "{file}");
        for ((old, new), (span, written)) in scan
            .uses
            .iter()
            .zip(&rescan.uses)
            .zip(new_spans.iter().zip(&want_written))
        {
            assert_eq!(&new.span, span, "{}", new.location());
            assert_eq!(&new.written, written);
            assert_eq!(
                (&new.object, &new.container, new.document),
                (&old.object, &old.container, old.document)
            );
            assert_eq!((new.line, new.column), (old.line, old.column));
            assert_eq!(new.reference.digest(), Some(&digest_for(old)));
            assert_eq!(
                new.reference.without_digest(),
                old.reference.without_digest()
            );
        }
        // The decoded objects are the same but for the image strings.
        assert_eq!(rescan.objects.len(), scan.objects.len());
        for (new, old) in rescan.objects.iter().zip(&scan.objects) {
            assert_eq!(
                (&new.file, new.document, new.line, &new.object),
                (&old.file, old.document, old.line, &old.object)
            );
            let mut changed = Vec::new();
            changed_strings(
                &serde_json::Value::Object(old.body.clone()),
                &serde_json::Value::Object(new.body.clone()),
                &mut changed,
            );
            for (before, after) in changed {
                assert!(
                    scan.uses.iter().any(|u| u.written == before)
                        && rescan.uses.iter().any(|u| u.written == after),
                    "{file}: {before:?} became {after:?}, which is not an image pin"
                );
            }
        }

        // Pinning again with the same digests changes nothing.
        let again = pin_uses(&file, &pinned, &rescan.uses, |u| {
            let same_place = |o: &&ImageUse| {
                (o.document, &o.object, &o.container) == (u.document, &u.object, &u.container)
            };
            scan.uses.iter().find(same_place).map(digest_for)
        })
        .unwrap();
        assert_eq!(again, pinned, "{file}: pinning is idempotent");
    }
}

fn malformed(name: &str) -> ScanError {
    let bytes = substitute(&std::fs::read(fixtures("malformed").join(name)).unwrap());
    match scan_file(name, &bytes, &ScanConfig::default()) {
        Ok(scan) => panic!("{name} was accepted: {scan:?}"),
        Err(e) => e,
    }
}

#[test]
fn malformed_yaml_is_refused_at_its_location() {
    let e = malformed("unclosed-quote.yaml");
    let ScanError::Syntax {
        file,
        line,
        column,
        message,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (file.as_str(), *line, *column),
        ("unclosed-quote.yaml", 10, 16)
    );
    assert!(message.contains("quoted scalar"), "{message}");
    assert!(
        e.to_string()
            .starts_with("unclosed-quote.yaml:10:16: malformed YAML: "),
        "{e}"
    );
}

#[test]
fn helm_templates_are_refused_with_a_hint() {
    let e = malformed("helm-template.yaml");
    assert!(
        matches!(
            e,
            ScanError::HelmTemplate {
                line: 5,
                column: 9,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("render the chart first (helm template …) and lock the output"),
        "{e}"
    );
}

#[test]
fn invalid_references_name_object_container_and_cause() {
    let e = malformed("invalid-reference.yaml");
    let ScanError::InvalidReference {
        line,
        column,
        object,
        container,
        source,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((*line, *column), (10, 12));
    assert_eq!(object.to_string(), "Pod/shop/bad-ref");
    assert_eq!(container, "containers/app");
    assert_eq!(source.reference, format!("{REGISTRY}/Shop/API:1.4"));
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn non_string_images_are_refused() {
    let e = malformed("non-string-image.yaml");
    let ScanError::NotAString {
        line,
        object,
        container,
        found,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*line, 11);
    assert_eq!(object.to_string(), "Job/structured-image");
    assert_eq!(container, "containers/job");
    assert_eq!(*found, "a mapping");
}

/// Every (old, new) pair of strings that differ between two values of the same shape; panics
/// when the shapes differ.
fn changed_strings(
    old: &serde_json::Value,
    new: &serde_json::Value,
    out: &mut Vec<(String, String)>,
) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
            for (k, v) in a {
                changed_strings(v, &b[k], out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                changed_strings(x, y, out);
            }
        }
        (Value::String(a), Value::String(b)) if a != b => out.push((a.clone(), b.clone())),
        (a, b) => assert_eq!(a, b),
    }
}

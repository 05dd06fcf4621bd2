//! Real-world manifests (fixtures/real-world, listed with their sources in SOURCES.md): files
//! public projects tell people to `kubectl apply -f`, kept byte-for-byte. The promise: they
//! lock and verify unchanged but for their image bytes. For every file, with the default scan
//! config (what a user without a `lockstep.toml` gets):
//!
//! - lockstep reads it — or refuses it with exactly the message listed in
//!   [`EXPECTED_REFUSALS`], which documents each refusal for the reader's owner to decide;
//! - kubectl's reader (the oracle of `k8s_reader`) reads the same objects, with the same images;
//! - pinning every image, in a copy of the corpus directory, changes only the image bytes, and
//!   the pinned files read back as the same objects but for the image strings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lockstep::manifest::{FileScan, ScanConfig, pin_uses, scan_file};
use lockstep::model::{Digest, ImageUse, pin_written};
use serde_json::Value;

use crate::k8s_reader::{images_of, kubectl_read, lockstep_objects, oracle};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/real-world");

/// Files of the corpus lockstep refuses, with the exact refusal (the `Display` of the
/// `ScanError`). A file listed here that lockstep reads, or refuses with another message,
/// fails the test: update the list with the reader.
const EXPECTED_REFUSALS: &[(&str, &str)] = &[(
    "cert-manager/deployment.yaml",
    // `image: "{IMAGE}"`, a placeholder the project's own test fills in: no reference.
    "cert-manager/deployment.yaml:24:17: Deployment/bind containers/bind",
)];

/// Every `*.yaml` / `*.yml` under `root`, as (`/`-separated path relative to `root`, bytes),
/// sorted by path.
fn corpus_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let rel = p.strip_prefix(root).unwrap();
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_str().unwrap())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let files = corpus_files(Path::new(CORPUS));
    assert!(files.len() >= 30, "only {} real-world files", files.len());
    files
}

fn expected_refusal(file: &str) -> Option<&'static str> {
    EXPECTED_REFUSALS
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(_, e)| *e)
}

/// lockstep's reading of one corpus file, checked against [`EXPECTED_REFUSALS`]: `Ok(Some)`
/// when read, `Ok(None)` when refused as listed, `Err` describing anything else.
fn read(file: &str, bytes: &[u8]) -> Result<Option<FileScan>, String> {
    match (
        scan_file(file, bytes, &ScanConfig::default()),
        expected_refusal(file),
    ) {
        (Ok(scan), None) => Ok(Some(scan)),
        (Ok(_), Some(e)) => Err(format!(
            "{file}: read now, but listed in EXPECTED_REFUSALS as {e:?}: remove it"
        )),
        (Err(e), Some(want)) if e.to_string() == want => Ok(None),
        (Err(e), Some(want)) => Err(format!(
            "{file}: refused with {:?}, listed as {want:?}",
            e.to_string()
        )),
        (Err(e), None) => Err(format!("{file}: refused: {e}")),
    }
}

#[test]
fn real_world_every_manifest_is_read_or_a_listed_refusal() {
    let files = corpus();
    let (mut problems, mut read_ok, mut objects, mut uses, mut bytes_total) =
        (Vec::new(), 0, 0, 0, 0);
    for (file, bytes) in &files {
        bytes_total += bytes.len();
        match read(file, bytes) {
            Ok(Some(scan)) => {
                read_ok += 1;
                objects += scan.objects.len();
                uses += scan.uses.len();
            }
            Ok(None) => {}
            Err(p) => problems.push(p),
        }
    }
    for (f, _) in EXPECTED_REFUSALS {
        if !files.iter().any(|(file, _)| file == f) {
            problems.push(format!(
                "{f}: listed in EXPECTED_REFUSALS, not in the corpus"
            ));
        }
    }
    println!(
        "{} files ({bytes_total} bytes): {read_ok} read ({objects} objects, {uses} image uses), {} refused as listed",
        files.len(),
        EXPECTED_REFUSALS.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn real_world_lockstep_reads_what_kubectl_reads() {
    let Some(o) = oracle() else { return };
    let mut problems = Vec::new();
    for (file, bytes) in &corpus() {
        let kubectl = kubectl_read(o, bytes);
        let scan = match read(file, bytes) {
            Ok(Some(scan)) => scan,
            Ok(None) => {
                // What kubectl makes of a file lockstep refuses, for the report.
                match &kubectl {
                    Ok(objs) => println!("{file}: refused; kubectl reads {} objects", objs.len()),
                    Err(e) => println!("{file}: refused; kubectl fails too: {e}"),
                }
                continue;
            }
            // Reported by the test above.
            Err(_) => continue,
        };
        let theirs = match kubectl {
            Ok(theirs) => theirs,
            Err(e) => {
                problems.push(format!("{file}: kubectl fails ({e}), lockstep reads it"));
                continue;
            }
        };
        // Objects of kinds lockstep has no image paths for (Prometheus, Tekton, ...) are noted;
        // kubectl reads them as any object. Anything else noted has no counterpart.
        let unexplained = scan.notices.iter().any(|n| {
            !matches!(
                n.reason,
                lockstep::manifest::NoticeReason::UnscannedImages { .. }
            )
        });
        if unexplained {
            problems.push(format!(
                "{file}: lockstep has notices kubectl has no counterpart for: {:?}",
                scan.notices
            ));
        }
        let ours = lockstep_objects(&scan);
        let theirs_v: Vec<Value> = theirs.iter().cloned().map(Value::Object).collect();
        if ours.len() != theirs_v.len() {
            problems.push(format!(
                "{file}: lockstep reads {} objects, kubectl {}",
                ours.len(),
                theirs_v.len()
            ));
            continue;
        }
        for (i, (a, b)) in ours.iter().zip(&theirs_v).enumerate() {
            if a != b {
                problems.push(format!(
                    "{file}: object {i} ({}) differs\n  lockstep: {a}\n  kubectl:  {b}",
                    scan.objects[i].object
                ));
            }
        }
        let mut our_images: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for u in &scan.uses {
            let i = scan
                .objects
                .iter()
                .position(|o| o.document == u.document && o.object == u.object)
                .unwrap_or(usize::MAX);
            our_images.entry(i).or_default().push(u.written.clone());
        }
        let mut their_images: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (i, obj) in theirs.iter().enumerate() {
            let imgs = images_of(obj);
            if !imgs.is_empty() {
                their_images.insert(i, imgs);
            }
        }
        for v in our_images.values_mut().chain(their_images.values_mut()) {
            v.sort();
        }
        if our_images != their_images {
            problems.push(format!(
                "{file}: images differ\n  lockstep: {our_images:?}\n  kubectl:  {their_images:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn digest_for(u: &ImageUse) -> Digest {
    Digest::of(u.written.as_bytes())
}

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

/// The strings that differ between two decoded values of the same shape (anything else that
/// differs is pushed as a problem).
fn changed_strings(
    at: &str,
    old: &Value,
    new: &Value,
    out: &mut Vec<(String, String)>,
    problems: &mut Vec<String>,
) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            if a.keys().ne(b.keys()) {
                problems.push(format!("{at}: keys changed"));
                return;
            }
            for (k, v) in a {
                changed_strings(&format!("{at}.{k}"), v, &b[k], out, problems);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                changed_strings(&format!("{at}[{i}]"), x, y, out, problems);
            }
        }
        (Value::String(a), Value::String(b)) if a != b => out.push((a.clone(), b.clone())),
        (a, b) if a != b => problems.push(format!("{at}: {a} became {b}")),
        _ => {}
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn real_world_pinning_changes_only_the_image_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let copy: PathBuf = tmp.path().join("real-world");
    copy_dir(Path::new(CORPUS), &copy);
    let originals = corpus_files(&copy);
    assert_eq!(originals, corpus(), "the copy is the corpus");

    let mut problems = Vec::new();
    let mut scans = BTreeMap::new();
    let mut pinned_uses = 0;
    // Pin every file of the copy in place, as `lock` does.
    for (file, bytes) in &originals {
        let Ok(Some(scan)) = read(file, bytes) else {
            continue;
        };
        let pinned = match pin_uses(file, bytes, &scan.uses, |u| Some(digest_for(u))) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{file}: pinning failed: {e}"));
                continue;
            }
        };
        pinned_uses += scan.uses.len();
        // Only the image scalars changed, and each to its pin.
        let mut shift = 0isize;
        let mut new_spans = Vec::new();
        for u in &scan.uses {
            let replacement = pin_written(&u.written, &digest_for(u));
            let start = (u.span.start as isize + shift) as usize;
            let end = start + replacement.len();
            if pinned.get(start..end) != Some(replacement.as_bytes()) {
                problems.push(format!("{}: not pinned to {replacement}", u.location()));
            }
            new_spans.push(start..end);
            shift += replacement.len() as isize - u.span.len() as isize;
        }
        let old_spans: Vec<_> = scan.uses.iter().map(|u| u.span.clone()).collect();
        if without_spans(bytes, &old_spans) != without_spans(&pinned, &new_spans) {
            problems.push(format!("{file}: bytes other than the images changed"));
        }
        std::fs::write(copy.join(file), &pinned).unwrap();
        scans.insert(file.clone(), (scan, new_spans));
    }

    // Read the pinned copy back: the same objects but for the image strings.
    let pinned_files = corpus_files(&copy);
    assert_eq!(pinned_files.len(), originals.len());
    for (file, bytes) in &pinned_files {
        let Some((old, new_spans)) = scans.get(file) else {
            continue;
        };
        let new = match scan_file(file, bytes, &ScanConfig::default()) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{file}: pinned, then refused: {e}"));
                continue;
            }
        };
        if new.uses.len() != old.uses.len() || new.objects.len() != old.objects.len() {
            problems.push(format!(
                "{file}: {} uses in {} objects became {} in {}",
                old.uses.len(),
                old.objects.len(),
                new.uses.len(),
                new.objects.len()
            ));
            continue;
        }
        for ((o, n), span) in old.uses.iter().zip(&new.uses).zip(new_spans) {
            let want = pin_written(&o.written, &digest_for(o));
            if (
                &n.written,
                &n.span,
                &n.object,
                &n.container,
                n.document,
                n.line,
                n.column,
            ) != (
                &want,
                span,
                &o.object,
                &o.container,
                o.document,
                o.line,
                o.column,
            ) {
                problems.push(format!("{}: read back as {n:?}", o.location()));
            }
            if n.reference.digest() != Some(&digest_for(o))
                || n.reference.without_digest() != o.reference.without_digest()
            {
                problems.push(format!("{}: reference {:?}", o.location(), n.reference));
            }
        }
        for (a, b) in old.objects.iter().zip(&new.objects) {
            if (&a.file, a.document, a.line, &a.object) != (&b.file, b.document, b.line, &b.object)
            {
                problems.push(format!("{file}: object {} moved", a.object));
                continue;
            }
            let mut changed = Vec::new();
            changed_strings(
                &format!("{file}: {}", a.object),
                &Value::Object(a.body.clone()),
                &Value::Object(b.body.clone()),
                &mut changed,
                &mut problems,
            );
            for (before, after) in changed {
                let is_pin = old.uses.iter().any(|u| {
                    u.object == a.object
                        && u.written == before
                        && pin_written(&u.written, &digest_for(u)) == after
                });
                if !is_pin {
                    problems.push(format!(
                        "{file}: {}: {before:?} became {after:?}, which is not an image pin",
                        a.object
                    ));
                }
            }
        }
    }
    println!("{} files pinned ({pinned_uses} image uses)", scans.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

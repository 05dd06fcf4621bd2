//! Writes the seed corpus under fuzz/seeds/<target>/ (committed; rerun after the fixtures
//! or the lockfile format change): `cargo run --example seeds` in fuzz/.
//!
//! - scan: the fixture manifests (their `REGISTRY/` placeholder, which is no valid name,
//!   made a real registry so the scanner reaches the image uses) and fixtures/malformed.
//! - image_ref: every reference the fixture manifests write, and a few by hand.
//! - lockfile: the fixture manifests pinned and locked, as tests/it/fuzz.rs builds it, and
//!   one with every optional field set (expiry, environment, platforms, mirrors).
//! - sshsig: the genuine signature of `MESSAGE` by the fuzz key, armored (mode byte 0)
//!   and as a bare blob (mode byte 1).
//! - allowed_signers: the trust line, and a line with every option lockstep reads.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use lockstep_core::lockfile::Lockfile;
use lockstep_core::manifest::scan_file;
use lockstep_core::model::Digest;
use lockstep_core::registry::{OCI_INDEX, PlatformDigest, Resolved};
use lockstep_fuzz::{fuzz_key, pinned_fixtures, read_fixtures, scan_config, signed};

fn main() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz.parent().unwrap();
    let seeds = fuzz.join("seeds");
    if seeds.exists() {
        std::fs::remove_dir_all(&seeds).unwrap();
    }
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let flat = |path: &str| path.replace('/', "_");

    // scan and image_ref
    let manifests = repo.join("fixtures/manifests");
    let mut refs = vec![
        "nginx".to_owned(),
        "docker.io/library/nginx:1.25".to_owned(),
        "localhost:5000/team/app:v1".to_owned(),
        "[::1]:5000/app@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .to_owned(),
        format!("ghcr.io/org/app:v1.2.3@{}", Digest::of(b"seed")),
    ];
    for (path, bytes) in read_fixtures(&manifests).files {
        if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes).replace("REGISTRY/", "registry.example/");
        let scan = scan_file(&path, text.as_bytes(), scan_config()).unwrap();
        refs.extend(scan.uses.into_iter().map(|u| u.written));
        write("scan", &flat(&path), text.as_bytes());
    }
    let malformed = repo.join("fixtures/malformed");
    for entry in std::fs::read_dir(&malformed).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("malformed_{}", path.file_name().unwrap().to_string_lossy());
        write("scan", &name, &std::fs::read(&path).unwrap());
    }
    refs.sort();
    refs.dedup();
    for (i, r) in refs.iter().enumerate() {
        write("image_ref", &format!("ref-{i:02}"), r.as_bytes());
    }

    // lockfile
    let files = pinned_fixtures(&manifests, &Digest::of(b"fuzz image"));
    let scan = lockstep_core::verify::scan_dir(&files).unwrap();
    let created = Timestamp::from_second(1_700_000_000).unwrap();
    let lock = Lockfile::build(
        7,
        created,
        scan.binding.clone(),
        &scan.uses,
        &BTreeMap::new(),
    );
    let bytes = lock.to_bytes();
    assert_eq!(Lockfile::parse_unverified(&bytes).unwrap(), lock);
    write("lockfile", "fixtures.lock", &bytes);
    let first = &scan.uses[0];
    let digest = first.reference.digest().unwrap().clone();
    let resolved = BTreeMap::from([(
        lockstep_core::lockfile::lookup_key(&first.reference),
        Resolved {
            digest: digest.clone(),
            media_type: OCI_INDEX.to_owned(),
            platforms: vec![
                PlatformDigest {
                    platform: "linux/amd64".to_owned(),
                    digest: Digest::of(b"amd64"),
                },
                PlatformDigest {
                    platform: "linux/arm64/v8".to_owned(),
                    digest: Digest::of(b"arm64"),
                },
            ],
        },
    )]);
    let mut full = Lockfile::build(8, created, scan.binding, &scan.uses, &resolved);
    full.expires = Some(Timestamp::from_second(1_900_000_000).unwrap());
    full.environment = Some("production".to_owned());
    full.images[0].mirrors = vec![
        "mirror.example:5000/backup/base/busybox".to_owned(),
        "mirror.example:5000/dr/base/busybox".to_owned(),
    ];
    let bytes = full.to_bytes();
    assert_eq!(Lockfile::parse_unverified(&bytes).unwrap(), full);
    write("lockfile", "full.lock", &bytes);

    // sshsig
    let s = signed();
    write(
        "sshsig",
        "armored",
        &[b"\0".as_slice(), s.armored.as_bytes()].concat(),
    );
    write("sshsig", "blob", &[b"\x01".as_slice(), &s.blob].concat());

    // allowed_signers
    let key = fuzz_key();
    write(
        "allowed_signers",
        "trust",
        key.allowed_signers_line("ci@example.com").as_bytes(),
    );
    let text = format!(
        "# release signers\nci@example.com,*@ops.example namespaces=\"lockstep,git\",\
         valid-after=\"20230101\",valid-before=\"20991231235959Z\" {}\n",
        key.public_openssh()
    );
    lockstep_core::signing::AllowedSigners::parse(&text, "seed").unwrap();
    write("allowed_signers", "options", text.as_bytes());
    println!("seeds written to {}", seeds.display());
}

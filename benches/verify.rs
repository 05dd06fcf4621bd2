//! Verification speed on a large synthetic directory: 10 000 pinned images in 1 000 files,
//! signed. No registry (verify is offline). Prints a table; `cargo bench --bench verify`.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use lockstep::lockfile::{Lockfile, ManifestBinding};
use lockstep::model::Digest;
use lockstep::signing::{AllowedSigners, SigningKey};
use lockstep::source::{self, SourceFiles};
use lockstep::verify::{TrustPolicy, bound_files, scan_dir, verify_dir};

const IMAGES: usize = 10_000;
const PER_FILE: usize = 10;

fn directory() -> SourceFiles {
    let mut files = SourceFiles::default();
    for f in 0..IMAGES / PER_FILE {
        let mut text = String::new();
        for i in f * PER_FILE..(f + 1) * PER_FILE {
            let digest = Digest::of(format!("image {i}").as_bytes());
            text.push_str(&format!(
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app{i}\n  namespace: bench\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n        - name: app\n          image: registry.example/bench/app{i}:v1@{digest}\n          ports: [{{containerPort: 8080}}]\n"
            ));
        }
        files
            .insert(format!("apps/{f:04}.yaml"), text.into_bytes())
            .unwrap();
    }
    files
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t0 = Instant::now();
        std::hint::black_box(f());
        best = best.min(t0.elapsed());
    }
    best
}

fn main() {
    let mut files = directory();
    let scan = scan_dir(&files).expect("synthetic manifests scan");
    assert_eq!(scan.uses.len(), IMAGES);
    let created = Timestamp::from_second(1_700_000_000).unwrap();
    let lock = Lockfile::build(
        1,
        created,
        scan.binding.clone(),
        &scan.uses,
        &Default::default(),
    );
    let bytes = lock.to_bytes();
    let key = SigningKey::generate("bench").unwrap();
    let sig = key.sign(&bytes).unwrap();
    files
        .insert(source::LOCKFILE.to_owned(), bytes.clone())
        .unwrap();
    files
        .insert(source::signature_path("bench"), sig.into_bytes())
        .unwrap();
    let trust = AllowedSigners::parse(&key.allowed_signers_line("bench"), "bench").unwrap();
    let policy = TrustPolicy {
        signers: &trust,
        at: created,
        threshold: 1,
        environment: None,
        strict: false,
    };
    verify_dir(&files, &policy).expect("the synthetic directory verifies");

    let runs = 5;
    let rows = [
        (
            "verify_dir (signatures + parse + scan + check)",
            time(runs, || verify_dir(&files, &policy).is_ok()),
        ),
        (
            "  scan all manifests",
            time(runs, || scan_dir(&files).map(|s| s.uses.len())),
        ),
        (
            "  parse the lockfile",
            time(runs, || {
                Lockfile::parse_unverified(&bytes).map(|l| l.images.len())
            }),
        ),
        (
            "  binding (sha256 of every file)",
            time(runs, || ManifestBinding::compute(bound_files(&files)).files),
        ),
    ];
    let mb = files.files.values().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!(
        "{IMAGES} images in {} files ({mb:.1} MB), lockfile {:.1} MB; best of {runs}",
        IMAGES / PER_FILE,
        bytes.len() as f64 / 1e6
    );
    println!("{:<50} {:>10}", "stage", "ms");
    for (name, d) in rows {
        println!("{name:<50} {:>10.1}", d.as_secs_f64() * 1e3);
    }
}

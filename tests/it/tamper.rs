//! Tampering, measured: thousands of random single-byte mutations of a signed directory's
//! lockfile, signature and manifests. Every one must be refused by the shared verification
//! path (the one `verify`, `render` and the reconciler use). In memory, no registry: the
//! subject is verification, and a real fixture tree keeps the inputs realistic.

use jiff::Timestamp;
use lockstep::lockfile::Lockfile;
use lockstep::signing::{AllowedSigners, SigningKey};
use lockstep::source::{self, SourceFiles};

use crate::invariants;
use lockstep::verify::{TrustPolicy, scan_dir, verify_dir};

const MUTATIONS: usize = 10_000;

/// xorshift64*: deterministic, so a failure names a mutation that can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The fixture manifests, every image pinned to `digest` (see [`invariants::pinned_fixtures`]).
pub fn pinned_fixtures(digest: &lockstep::model::Digest) -> SourceFiles {
    invariants::pinned_fixtures(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/manifests")),
        digest,
    )
}

/// The fixture manifests, pinned (every image gets a digest), locked and signed.
fn signed_directory(key: &SigningKey) -> SourceFiles {
    let mut files = pinned_fixtures(&lockstep::model::Digest::of(b"tamper test image"));
    let scan = scan_dir(&files).unwrap();
    assert!(scan.uses.iter().all(|u| u.reference.digest().is_some()));
    let created = Timestamp::from_second(1_700_000_000).unwrap();
    let lock = Lockfile::build(
        1,
        created,
        scan.binding.clone(),
        &scan.uses,
        &Default::default(),
    );
    let bytes = lock.to_bytes();
    let sig = key.sign(&bytes).unwrap();
    files.insert(source::LOCKFILE.to_owned(), bytes).unwrap();
    files
        .insert(source::signature_path("ci"), sig.into_bytes())
        .unwrap();
    files
}

#[test]
fn every_single_byte_mutation_is_refused() {
    let key = SigningKey::generate("ci@example.com").unwrap();
    let trust =
        AllowedSigners::parse(&key.allowed_signers_line("ci@example.com"), "trust").unwrap();
    let policy = TrustPolicy {
        signers: &trust,
        at: Timestamp::from_second(1_700_000_100).unwrap(),
        threshold: 1,
        environment: None,
        strict: false,
    };
    let original = signed_directory(&key);
    verify_dir(&original, &policy).expect("the untouched directory verifies");

    let paths: Vec<String> = original.files.keys().cloned().collect();
    let lockfile = source::LOCKFILE.to_owned();
    let signature = source::signature_path("ci");
    let manifests: Vec<&String> = paths
        .iter()
        .filter(|p| **p != lockfile && **p != signature)
        .collect();
    let mut rng = Rng(0x5eed_10c4_57e9 ^ 0x9e37_79b9_7f4a_7c15);
    let mut counts = [0usize; 3];
    for n in 0..MUTATIONS {
        // A third each: the lockfile, its signature, a manifest (or lockstep.toml).
        let kind = n % 3;
        let path = match kind {
            0 => &lockfile,
            1 => &signature,
            _ => manifests[rng.below(manifests.len())],
        };
        let mut files = original.clone();
        let bytes = files.files.get_mut(path).unwrap();
        let at = rng.below(bytes.len());
        let old = bytes[at];
        let new = loop {
            let b = (rng.next() & 0xff) as u8;
            if b != old {
                break b;
            }
        };
        bytes[at] = new;
        assert!(
            verify_dir(&files, &policy).is_err(),
            "mutation {n} accepted: {path} byte {at} {old:#04x} -> {new:#04x}"
        );
        counts[kind] += 1;
    }
    assert_eq!(counts.iter().sum::<usize>(), MUTATIONS);
    eprintln!(
        "refused {MUTATIONS} mutations: lockfile {}, signature {}, manifests {}",
        counts[0], counts[1], counts[2]
    );
}

//! Tampering, measured: thousands of random single-byte mutations of a signed directory's
//! lockfile, signature and manifests. Every one must be refused by the shared verification
//! path (the one `verify`, `render` and the reconciler use), and for the reason that region
//! implies: a bad signature for the lockfile, a binding mismatch for a manifest. In memory, no registry: the
//! subject is verification, and a real fixture tree keeps the inputs realistic.

use jiff::Timestamp;
use lockstep::lockfile::Lockfile;
use lockstep::signing::{AllowedSigners, SigningKey};
use lockstep::source::{self, SourceFiles};

use std::collections::BTreeMap;

use crate::invariants;
use lockstep::check::Finding;
use lockstep::verify::{TrustPolicy, VerifyError, scan_dir, verify_dir};

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
    let fingerprint = key.fingerprint();
    let mut rng = Rng(0x5eed_10c4_57e9 ^ 0x9e37_79b9_7f4a_7c15);
    let mut problems: BTreeMap<&'static str, usize> = BTreeMap::new();
    for n in 0..MUTATIONS {
        // A third each: the lockfile, its signature, a manifest (or lockstep.toml).
        let region = match n % 3 {
            0 => Region::Lockfile,
            1 => Region::Signature,
            _ => Region::Manifest,
        };
        let path = match region {
            Region::Lockfile => &lockfile,
            Region::Signature => &signature,
            Region::Manifest => manifests[rng.below(manifests.len())],
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
        let what = format!("mutation {n}: {path} byte {at} {old:#04x} -> {new:#04x}");
        let refusal = verify_dir(&files, &policy).err();
        let kind = refusal_kind(region, refusal.as_ref(), &signature, &fingerprint)
            .unwrap_or_else(|| panic!("{what}: wrong refusal for the {region:?}: {refusal:?}"));
        *problems.entry(kind).or_default() += 1;
    }
    eprintln!("refused {MUTATIONS} mutations: {problems:?}");
    // Every lockfile byte is covered by the signature; a manifest byte by the binding,
    // checked before any manifest is parsed, so even a mutation that breaks the YAML is a
    // binding mismatch.
    assert_eq!(problems["lockfile: bad signature"], MUTATIONS.div_ceil(3));
    assert_eq!(problems["manifest: binding mismatch"], MUTATIONS / 3);
    // The signature's own bytes fail in several ways; the common ones all occur.
    for kind in [
        "signature: bad signature",
        "signature: malformed",
        "signature: not armored",
    ] {
        assert!(
            problems.get(kind).is_some_and(|&n| n > 0),
            "{kind}: {problems:?}"
        );
    }
}

#[derive(Debug, Clone, Copy)]
enum Region {
    Lockfile,
    Signature,
    Manifest,
}

/// The kind of a refusal, if it is the right one for a byte changed in `region`: a changed
/// lockfile breaks its one signature; a changed signature is refused for what it now is; a
/// changed manifest breaks the binding and nothing else.
fn refusal_kind(
    region: Region,
    refusal: Option<&VerifyError>,
    signature: &str,
    fingerprint: &str,
) -> Option<&'static str> {
    use lockstep::signing::{SignatureProblem as P, VerifyError as SigError};
    match (region, refusal?) {
        (Region::Manifest, VerifyError::Findings(findings)) => match findings.as_slice() {
            [
                Finding::BindingMismatch {
                    locked_digest,
                    locked_files,
                    actual_digest,
                    actual_files,
                    diff,
                },
            ] if locked_files == actual_files
                && locked_digest != actual_digest
                // The one mutated manifest is named, nothing else.
                && diff.changed.len() == 1
                && diff.added.is_empty()
                && diff.removed.is_empty() =>
            {
                Some("manifest: binding mismatch")
            }
            _ => None,
        },
        (Region::Manifest, _) => None,
        (
            region,
            VerifyError::Signatures(SigError::ThresholdNotMet {
                approvals: 0,
                threshold: 1,
                valid,
                rejected,
            }),
        ) if valid.is_empty() => {
            let [one] = rejected.as_slice() else {
                return None;
            };
            if one.file != signature {
                return None;
            }
            match (region, &one.problem) {
                (Region::Lockfile, P::BadSignature { fingerprint: f }) if f == fingerprint => {
                    Some("lockfile: bad signature")
                }
                (Region::Lockfile, _) => None,
                (_, P::BadSignature { .. }) => Some("signature: bad signature"),
                (_, P::NotCanonical) => Some("signature: not canonical"),
                (_, P::NotArmored(_)) => Some("signature: not armored"),
                (_, P::Malformed { .. }) => Some("signature: malformed"),
                (_, P::UnsupportedVersion(_)) => Some("signature: unsupported version"),
                (_, P::UnsupportedKeyType { .. }) => Some("signature: unsupported key type"),
                (_, P::WrongNamespace { .. }) => Some("signature: wrong namespace"),
                (_, P::UntrustedKey { .. }) => Some("signature: untrusted key"),
                // The trust and the time did not change: these cannot follow from a byte
                // of the signature.
                (_, P::NamespaceNotAllowed { .. } | P::OutsideValidity { .. }) => None,
            }
        }
        _ => None,
    }
}

#[test]
fn a_readme_is_bound_so_changing_it_fails_verify() {
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
    // Locked with a README beside the manifests: the binding covers it.
    let mut unsigned = pinned_fixtures(&lockstep::model::Digest::of(b"readme test image"));
    unsigned
        .insert("README.md".into(), b"# apps\n".to_vec())
        .unwrap();
    let scan = scan_dir(&unsigned).unwrap();
    let manifests = unsigned.manifests().count();
    assert_eq!(
        scan.binding.files,
        manifests + 2,
        "manifests, lockstep.toml, README"
    );
    let lock = Lockfile::build(
        1,
        Timestamp::from_second(1_700_000_000).unwrap(),
        scan.binding.clone(),
        &scan.uses,
        &Default::default(),
    );
    let bytes = lock.to_bytes();
    let sig = key.sign(&bytes).unwrap();
    let mut signed = unsigned;
    signed.insert(source::LOCKFILE.to_owned(), bytes).unwrap();
    signed
        .insert(source::signature_path("ci"), sig.into_bytes())
        .unwrap();
    verify_dir(&signed, &policy).expect("the directory as locked verifies");

    let binding_mismatch = |files: &SourceFiles, what: &str| match verify_dir(files, &policy) {
        Err(VerifyError::Findings(findings)) => assert!(
            matches!(findings.as_slice(), [Finding::BindingMismatch { .. }]),
            "{what}: {findings:?}"
        ),
        other => panic!("{what}: expected a binding mismatch, got {other:?}"),
    };
    let mut changed = signed.clone();
    changed
        .insert("README.md".into(), b"# apps (edited)\n".to_vec())
        .unwrap();
    binding_mismatch(&changed, "README changed");
    let mut removed = signed.clone();
    removed.files.remove("README.md");
    binding_mismatch(&removed, "README removed");
    let mut added = signed.clone();
    added
        .insert(".scripts/apply.sh".into(), b"kubectl apply -f .\n".to_vec())
        .unwrap();
    binding_mismatch(&added, "a hidden script added");
}

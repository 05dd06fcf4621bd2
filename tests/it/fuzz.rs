//! Fuzzing the input parsers with proptest, in every test run (scripts/fuzz runs the
//! coverage-guided cargo-fuzz targets for longer). The invariants are the cargo-fuzz
//! targets' own (`fuzz/src/lib.rs`, included as `crate::invariants`): the parser never
//! panics and answers `Ok` or an `Err` that renders; where there is a round trip
//! (`ImageRef` Display → parse, lockfile `to_bytes` → parse) it holds; a signature verifies
//! only if it is the genuine one. They panic on a violation; proptest catches the panic and
//! shrinks the case.
//!
//! In CI each target runs `CI_CASES` cases from a fixed seed. `LOCKSTEP_FUZZ_SECONDS=N` makes
//! each target run rounds from fresh seeds until N seconds have passed, printing the seeds
//! and the number of cases; a failure names its seed and the shrunk input.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use lockstep::lockfile::Lockfile;
use lockstep::manifest::scan_file;
use lockstep::signing::{AllowedSigners, SigningKey};
use lockstep::source;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

use crate::invariants::{
    armor, check_bundle, check_lockfile, check_reader, check_ref, check_scan, check_signature,
    check_signers, scan_config, signed,
};

/// Cases per target in an ordinary test run: a few seconds for all five together.
const CI_CASES: u32 = 256;
/// Cases per round in a timed run; each round has its own seed.
const ROUND_CASES: u32 = 512;

/// Runs `test` over `strategy`: `CI_CASES` cases from a seed fixed by `name`, or, with
/// `LOCKSTEP_FUZZ_SECONDS`, rounds from fresh seeds until the time is spent.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("LOCKSTEP_FUZZ_SECONDS").ok().map(|s| {
        s.parse::<u64>()
            .expect("LOCKSTEP_FUZZ_SECONDS is a number of seconds")
    });
    let fixed = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let Some(seconds) = budget else {
        run_round(name, &strategy, &test, fixed, CI_CASES);
        return;
    };
    let base = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("fuzz {name}: base seed {base:#x}, {seconds} s");
    let start = Instant::now();
    let (mut cases, mut round) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(seconds) {
        run_round(
            name,
            &strategy,
            &test,
            base.wrapping_add(round),
            ROUND_CASES,
        );
        cases += u64::from(ROUND_CASES);
        round += 1;
    }
    println!(
        "fuzz {name}: {cases} cases in {:.1} s ({round} rounds), 0 failures",
        start.elapsed().as_secs_f64()
    );
}

fn run_round<S: Strategy>(name: &str, strategy: &S, test: &impl Fn(S::Value), seed: u64, cases: u32)
where
    S::Value: std::fmt::Debug,
{
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    match runner.run(strategy, |value| {
        test(value);
        Ok(())
    }) {
        Ok(()) => {}
        Err(TestError::Fail(reason, input)) => {
            panic!("fuzz {name}, seed {seed:#x}: {reason}\nminimal input: {input:#?}")
        }
        Err(TestError::Abort(reason)) => panic!("fuzz {name}, seed {seed:#x}: aborted: {reason}"),
    }
}

/// A mutation of a byte string: positions are taken modulo its length when applied.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Copy `len` bytes from the first position over to the second (duplicated structure).
    Splice(usize, usize, usize),
    Truncate(usize),
}

fn mutation(tokens: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), 0u8..8).prop_map(|(p, bit)| Mutation::Flip(p, 1 << bit)),
        (any::<usize>(), proptest::sample::select(tokens))
            .prop_map(|(p, t)| Mutation::Insert(p, t.as_bytes().to_vec())),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), any::<usize>(), 1usize..64)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = bytes.len();
        let at = |p: usize| if len == 0 { 0 } else { p % len };
        match m {
            Mutation::Set(p, b) if len > 0 => bytes[at(*p)] = *b,
            Mutation::Flip(p, mask) if len > 0 => bytes[at(*p)] ^= mask,
            Mutation::Insert(p, b) => {
                let i = if len == 0 { 0 } else { p % (len + 1) };
                bytes.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(p, n) if len > 0 => {
                let i = at(*p);
                bytes.drain(i..(i + n).min(len));
            }
            Mutation::Splice(from, to, n) if len > 0 => {
                let (f, t) = (at(*from), at(*to));
                let piece = bytes[f..(f + n).min(len)].to_vec();
                bytes.splice(t..t, piece);
            }
            Mutation::Truncate(p) if len > 0 => bytes.truncate(at(*p)),
            _ => {}
        }
    }
}

/// Up to 8 mutations.
fn mutations(tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(tokens), 1..8)
}

/// Text assembled from `tokens` and arbitrary characters: deeper than random bytes, since
/// most random bytes are refused at the first check.
fn token_text(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(tokens).prop_map(str::to_owned),
            1 => any::<char>().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

/// Arbitrary bytes: mostly printable ASCII, sometimes anything.
fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..max),
        proptest::collection::vec(0x09u8..0x7f, 0..max),
    ]
}

// ---- the YAML scanner ----

const YAML_TOKENS: &[&str] = &[
    "\n",
    "\n  ",
    "\n    ",
    "\n      ",
    "  ",
    "- ",
    ": ",
    ":",
    ",",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "#",
    "|",
    "|-",
    ">",
    ">+",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: *a",
    "!!str ",
    "!tag ",
    "? ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "\r\n",
    "\t",
    "\u{feff}",
    "{{ .Values.image }}",
    "\\",
    "apiVersion: v1",
    "apiVersion: apps/v1",
    "kind: Pod",
    "kind: Deployment",
    "kind: List",
    "kind: CronJob",
    "metadata:",
    "name: x",
    "namespace: ns",
    "spec:",
    "template:",
    "containers:",
    "initContainers:",
    "ephemeralContainers:",
    "jobTemplate:",
    "items:",
    "image: ",
    "image: nginx:1.25",
    "REGISTRY/app:v1",
    "nginx",
    "@sha256:",
    "null",
    "~",
    "true",
    "0x1F",
    "1e9",
    "&",
    "*",
    "!",
    "@",
    "`",
    "%",
];

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/manifests")
}

/// Every fixture manifest (not the config), by path.
fn manifest_fixtures() -> &'static [(String, Vec<u8>)] {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let files = source::fs::read_dir(&fixtures()).unwrap();
        let out: Vec<_> = files
            .files
            .into_iter()
            .filter(|(p, _)| p.ends_with(".yaml") || p.ends_with(".yml"))
            // The fixtures' placeholder registry is not a valid name; a real one makes the
            // scanner go on to its image uses.
            .map(|(p, b)| {
                let text = String::from_utf8_lossy(&b).replace("REGISTRY/", "registry.example/");
                (p, text.into_bytes())
            })
            .collect();
        assert!(out.len() >= 8, "the fixtures are there: {out:?}");
        let uses: usize = out
            .iter()
            // (some fixtures are refused on purpose, e.g. legacy/controllers.yaml's `...`)
            .filter_map(|(p, b)| scan_file(p, b, scan_config()).ok().map(|s| s.uses.len()))
            .sum();
        assert!(uses >= 10, "the unmutated fixtures have image uses: {uses}");
        out
    })
}

#[test]
fn scan_arbitrary() {
    let strategy = prop_oneof![
        any_bytes(1024),
        token_text(YAML_TOKENS, 200).prop_map(String::into_bytes),
    ];
    fuzz("scan_arbitrary", strategy, |bytes| {
        check_scan("fuzz.yaml", &bytes)
    });
}

#[test]
fn scan_mutated_fixtures() {
    let n = manifest_fixtures().len();
    fuzz(
        "scan_mutated_fixtures",
        (0..n, mutations(YAML_TOKENS)),
        |(i, ms)| {
            let (path, original) = &manifest_fixtures()[i];
            let mut bytes = original.clone();
            mutate(&mut bytes, &ms);
            check_scan(path, &bytes)
        },
    );
}

#[test]
fn reader_mutated_fixtures() {
    let n = manifest_fixtures().len();
    fuzz(
        "reader_mutated_fixtures",
        (0..n, mutations(YAML_TOKENS)),
        |(i, ms)| {
            let (path, original) = &manifest_fixtures()[i];
            let mut bytes = original.clone();
            mutate(&mut bytes, &ms);
            check_reader(path, &bytes)
        },
    );
}

// ---- the image reference parser ----

const REF_TOKENS: &[&str] = &[
    "/",
    ":",
    "@",
    ".",
    "-",
    "_",
    "__",
    "--",
    "..",
    "sha256:",
    "sha512:",
    "localhost",
    "localhost:5000",
    "[::1]",
    "[::1]:5000",
    "[",
    "]",
    "docker.io",
    "index.docker.io",
    "registry.example",
    "ghcr.io",
    "library",
    "nginx",
    "app",
    "v1.2.3",
    "latest",
    "5000",
    "0",
    "a",
    "Z",
    "é",
    " ",
    "\t",
    "\n",
    "\0",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "0123456789abcdef0123456789abcdef",
    "ABCDEF",
];

#[test]
fn image_ref() {
    let strategy = prop_oneof![
        any::<String>(),
        "[a-z0-9.:/@_\\-\\[\\]]{0,80}",
        token_text(REF_TOKENS, 24),
    ];
    fuzz("image_ref", strategy, |s| check_ref(&s));
}

// ---- the lockfile parser ----

const TOML_TOKENS: &[&str] = &[
    "\n",
    " = ",
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "\"\"\"",
    "#",
    ".",
    "-",
    "version = 1",
    "version = 2",
    "generation = ",
    "created = ",
    "expires = ",
    "1979-05-27T07:32:00Z",
    "9999-12-31T23:59:59Z",
    "0",
    "-1",
    "18446744073709551615",
    "1e300",
    "nan",
    "inf",
    "true",
    "[manifests]",
    "[[image]]",
    "[[image.use]]",
    "[[image.platform]]",
    "mirror = [\"m.io/dr/app\"]",
    "digest = ",
    "\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
    "reference = \"nginx:1.25\"",
    "image = \"docker.io/library/nginx:1.25\"",
    "files = 3",
    "line = 0",
    "column = 99999999999",
    "\\u0000",
    "\\",
];

/// A real lockfile: the fixture manifests, every image pinned, built and serialized.
fn real_lockfile() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let files = crate::tamper::pinned_fixtures(&lockstep::model::Digest::of(b"fuzz image"));
        let scan = lockstep::verify::scan_dir(&files).unwrap();
        let created = Timestamp::from_second(1_700_000_000).unwrap();
        let lock = Lockfile::build(7, created, scan.binding, &scan.uses, &Default::default());
        let bytes = lock.to_bytes();
        assert_eq!(Lockfile::parse_unverified(&bytes).unwrap(), lock);
        bytes
    })
}

#[test]
fn lockfile_arbitrary() {
    let strategy = prop_oneof![
        any_bytes(1024),
        token_text(TOML_TOKENS, 120).prop_map(String::into_bytes),
    ];
    fuzz("lockfile_arbitrary", strategy, |bytes| {
        check_lockfile(&bytes)
    });
}

#[test]
fn lockfile_mutated() {
    fuzz("lockfile_mutated", mutations(TOML_TOKENS), |ms| {
        let mut bytes = real_lockfile().to_vec();
        mutate(&mut bytes, &ms);
        check_lockfile(&bytes)
    });
}

// ---- the SSHSIG parser ----

const ARMOR_TOKENS: &[&str] = &[
    "-----BEGIN SSH SIGNATURE-----\n",
    "-----END SSH SIGNATURE-----\n",
    "\n",
    "\r\n",
    "=",
    "==",
    "A",
    "/",
    "+",
    " ",
    "U1NIU0lH",
    "AAAA",
    "////",
];

#[test]
fn sshsig_arbitrary() {
    let strategy = prop_oneof![
        any_bytes(512),
        token_text(ARMOR_TOKENS, 60).prop_map(String::into_bytes),
        any_bytes(400).prop_map(|b| armor(&[b"SSHSIG".as_slice(), &b].concat())),
    ];
    fuzz("sshsig_arbitrary", strategy, check_signature);
}

#[test]
fn sshsig_mutated() {
    // Half the cases mutate the armored text, half the blob inside it (re-armored), which
    // gets past base64 into the SSHSIG fields.
    fuzz(
        "sshsig_mutated",
        (any::<bool>(), mutations(ARMOR_TOKENS)),
        |(inside, ms)| {
            let s = signed();
            let armored = if inside {
                let mut blob = s.blob.clone();
                mutate(&mut blob, &ms);
                armor(&blob)
            } else {
                let mut bytes = s.armored.clone().into_bytes();
                mutate(&mut bytes, &ms);
                bytes
            };
            check_signature(armored)
        },
    );
}

// ---- the allowed_signers parser ----

const SIGNERS_TOKENS: &[&str] = &[
    "\n",
    " ",
    "\t",
    "#",
    ",",
    "\"",
    "=",
    "*",
    "?",
    "!",
    "ci@example.com",
    "*@example.com",
    "namespaces=\"lockstep\"",
    "namespaces=\"git,lockstep\"",
    "namespaces=",
    "cert-authority",
    "valid-after=\"20230101\"",
    "valid-before=\"20991231235959Z\"",
    "valid-after=",
    "valid-before=\"2023\"",
    "valid-after=\"99999999999999\"",
    "ssh-ed25519 ",
    "ssh-rsa ",
    "ecdsa-sha2-nistp256 ",
    "sk-ssh-ed25519@openssh.com ",
    "AAAAC3NzaC1lZDI1NTE5AAAA",
    "AAAA",
    "Z",
    "é",
    "\\",
];

#[test]
fn allowed_signers_arbitrary() {
    let strategy = prop_oneof![any::<String>(), token_text(SIGNERS_TOKENS, 60),];
    fuzz("allowed_signers_arbitrary", strategy, |text| {
        check_signers(&text)
    });
}

#[test]
fn allowed_signers_mutated() {
    fuzz("allowed_signers_mutated", mutations(SIGNERS_TOKENS), |ms| {
        let line = signers_line();
        let mut bytes = line.as_bytes().to_vec();
        mutate(&mut bytes, &ms);
        // The parser takes text; invalid UTF-8 is refused before it, lossily kept here.
        check_signers(&String::from_utf8_lossy(&bytes))
    });
}

/// A real line with every option lockstep reads, and a comment line.
fn signers_line() -> &'static str {
    static LINE: OnceLock<String> = OnceLock::new();
    LINE.get_or_init(|| {
        let key = SigningKey::generate("ci@example.com").unwrap();
        let public = key.public_openssh();
        let text = format!(
            "# release signers\nci@example.com,*@ops.example namespaces=\"lockstep,git\",\
             valid-after=\"20230101\",valid-before=\"20991231235959Z\" {public}\n"
        );
        AllowedSigners::parse(&text, "seed").unwrap();
        text
    })
}

// ---- regressions: errors that quoted their input raw (found by the invariants above) ----

#[test]
fn error_escapes_a_signature_whose_key_type_carries_terminal_controls() {
    use lockstep::signing::{SignatureFile, verify};
    // The public key's type inside a genuine SSHSIG, changed to an ANSI colour sequence.
    let s = signed();
    let mut blob = s.blob.clone();
    let at = blob
        .windows(11)
        .position(|w| w == b"ssh-ed25519")
        .expect("the blob names its key type");
    blob[at..at + 11].copy_from_slice(b"ssh-\x1b[31mXX");
    let files = [SignatureFile {
        name: "lockstep.lock.fuzz.sig".to_owned(),
        armored: armor(&blob),
    }];
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let e = verify(crate::invariants::MESSAGE, &files, &s.trust, now, 1).unwrap_err();
    let shown = crate::invariants::check_error(&e, "lockstep.lock.fuzz.sig");
    assert!(shown.contains(r"ssh-\u{1b}[31mXX"), "{shown}");
}

#[test]
fn error_escapes_a_lockfile_toml_error_that_quotes_terminal_controls() {
    let e =
        Lockfile::parse_unverified(b"version = 1\nname \x1b[2J\x1b]0;owned\x07 = 1\n").unwrap_err();
    let shown = crate::invariants::check_error(&e, lockstep::lockfile::FILE_NAME);
    assert!(shown.contains(r"\u{1b}[2J"), "{shown}");
}

#[test]
fn error_escapes_a_scan_config_toml_error_that_quotes_terminal_controls() {
    let e =
        lockstep::manifest::ScanConfig::parse("[[custom]]\nkind = \"\u{1b}[2J\n", "lockstep.toml")
            .unwrap_err();
    let shown = crate::invariants::check_error(&e, "lockstep.toml:2:");
    assert!(shown.contains(r"\u{1b}[2J"), "{shown}");
}

// ---- Sigstore bundles and DSSE envelopes ----

const BUNDLE_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"dsseEnvelope\"",
    "\"payload\"",
    "\"payloadType\"",
    "\"application/vnd.in-toto+json\"",
    "\"signatures\"",
    "\"sig\"",
    "\"verificationMaterial\"",
    "\"certificate\"",
    "\"x509CertificateChain\"",
    "\"certificates\"",
    "\"rawBytes\"",
    "\"messageSignature\"",
    "\"AAAA\"",
    "\"eyJfdHlwZSI6MX0=\"",
    "\"\"",
    "null",
];

/// A real cosign v3 bundle (a key signature), the mutation target.
const BUNDLE_SEED: &[u8] = include_bytes!("../../fuzz/seeds/bundle/cosign-v3-key.json");

#[test]
fn bundle_arbitrary() {
    let strategy = prop_oneof![
        any_bytes(1024),
        token_text(BUNDLE_TOKENS, 80).prop_map(String::into_bytes),
    ];
    fuzz("bundle_arbitrary", strategy, |bytes| check_bundle(&bytes));
}

#[test]
fn bundle_mutated() {
    fuzz("bundle_mutated", mutations(BUNDLE_TOKENS), |ms| {
        let mut bytes = BUNDLE_SEED.to_vec();
        mutate(&mut bytes, &ms);
        check_bundle(&bytes)
    });
}

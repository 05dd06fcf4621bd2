//! The fuzzing invariants, as panics — one copy for both fuzzers: the libFuzzer targets
//! here (a panic is a crash) and the proptest targets of `tests/it/fuzz.rs`, which include
//! this file as a module (proptest catches the panic and shrinks the case) — and the fixed
//! inputs (scan config, signing key, message, trust, pinned fixtures) they check against.
//!
//! Property of every target: the parser never panics and answers `Ok` or an `Err` that
//! renders; where there is a round trip (`ImageRef` Display → parse, lockfile `to_bytes` →
//! parse) it holds; a signature verifies only if it is the genuine one.

use std::path::Path;
use std::sync::OnceLock;

use jiff::Timestamp;
use lockstep_core::files::SourceFiles;
use lockstep_core::lockfile::Lockfile;
use lockstep_core::manifest::{ScanConfig, scan_file};
use lockstep_core::model::{Digest, ImageRef};
use lockstep_core::signing::{AllowedSigners, SignatureFile, SigningKey, verify};
use lockstep_core::verify::render_objects;
use serde_json::{Map, Value};

/// The fixture manifests under `root` (fixtures/manifests) with every placeholder image
/// (`REGISTRY/<repo>:<tag>`) pinned to `digest` under `registry.example`: realistic, fully
/// pinned input without a registry.
pub fn pinned_fixtures(root: &Path, digest: &Digest) -> SourceFiles {
    let mut files = read_fixtures(root);
    for bytes in files.files.values_mut() {
        let text = String::from_utf8(bytes.clone()).unwrap();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("REGISTRY/") {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| c == '"' || c == '\'' || c.is_whitespace() || c == ',' || c == '}')
                .unwrap();
            out.push_str(&format!(
                "registry.example{}@{digest}",
                &tail["REGISTRY".len()..end]
            ));
            rest = &tail[end..];
        }
        out.push_str(rest);
        *bytes = out.into_bytes();
    }
    files
}

/// Every file under `root` (fixtures, so no limits or roles to judge: the core alone, no
/// filesystem edge).
pub fn read_fixtures(root: &Path) -> SourceFiles {
    let mut files = SourceFiles::default();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
                let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
                files.insert(rel, std::fs::read(&path).unwrap()).unwrap();
            }
        }
    }
    files
}

/// An error must render, with its causes: what a user would see.
pub fn render(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// What a user reads of a refusal: it renders with its causes, names what it is about
/// (`names`: the file, the reference), and carries no character that acts on a terminal or
/// splits a log line, since whatever of the input an error quotes must be escaped.
pub fn check_error(e: &dyn std::error::Error, names: &str) -> String {
    let shown = render(e);
    assert!(shown.contains(names), "{shown:?} does not name {names:?}");
    if let Some(c) = shown.chars().find(|&c| acts_on_a_terminal(c)) {
        panic!("{shown:?} carries {c:?} raw");
    }
    shown
}

/// Control characters (a line feed aside: findings are listed a line each), line and
/// paragraph separators, bidirectional overrides and isolates, and the BOM.
fn acts_on_a_terminal(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// A manifest refusal starts `file:line:` (a column may follow), at a line of the file.
fn check_scan_error(file: &str, bytes: &[u8], e: &dyn std::error::Error) {
    let shown = check_error(e, file);
    let rest = shown
        .strip_prefix(file)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{shown:?} does not start with {file:?} and a line"));
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let line: usize = rest[..digits]
        .parse()
        .unwrap_or_else(|_| panic!("{shown:?} names no line"));
    // Either break counts: a lone CR is refused, at its own line or the one before it.
    let lines = 1 + bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    assert!(
        (1..=lines).contains(&line),
        "{shown:?}: line {line} of a file of {lines} lines"
    );
}

// ---- the YAML scanner ----

/// The fixtures' scan config (custom resources with pod specs and image paths).
pub const SCAN_CONFIG: &str = include_str!("../../fixtures/manifests/lockstep.toml");

pub fn scan_config() -> &'static ScanConfig {
    static CONFIG: OnceLock<ScanConfig> = OnceLock::new();
    CONFIG.get_or_init(|| ScanConfig::parse(SCAN_CONFIG, "lockstep.toml").unwrap())
}

pub fn check_scan(file: &str, bytes: &[u8]) {
    match scan_file(file, bytes, scan_config()) {
        Ok(scan) => {
            for u in &scan.uses {
                // Every use points at bytes of the file.
                assert!(
                    u.span.start <= u.span.end && u.span.end <= bytes.len(),
                    "span {:?} outside the {} bytes of the file",
                    u.span,
                    bytes.len()
                );
                assert!(
                    u.line >= 1 && u.column >= 1,
                    "line {} column {}",
                    u.line,
                    u.column
                );
            }
        }
        Err(e) => check_scan_error(file, bytes, &e),
    }
}

// ---- the one reading: scan_file's objects ----

/// What `scan_file` accepts is one reading, and the same one again from `render`'s output:
/// every use's span slices to exactly the reference as written (what `lock` rewrites), every
/// object body survives a `serde_json` round trip (what `render` prints and the reconciler
/// sends), and `render_objects`' JSON stream, scanned again, gives the same bodies in the same
/// order. Errors render.
pub fn check_reader(file: &str, bytes: &[u8]) {
    let scan = match scan_file(file, bytes, scan_config()) {
        Ok(scan) => scan,
        Err(e) => return check_scan_error(file, bytes, &e),
    };
    for u in &scan.uses {
        let slice = bytes.get(u.span.clone());
        assert_eq!(
            slice,
            Some(u.written.as_bytes()),
            "the span {:?} of {} {} is not the reference as written",
            u.span,
            u.object,
            u.container
        );
    }
    let bodies: Vec<&Map<String, Value>> = scan.objects.iter().map(|o| &o.body).collect();
    for body in &bodies {
        let text = serde_json::to_string(body).expect("JSON values serialize");
        let back: Map<String, Value> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{text:?} does not read back as JSON: {e}"));
        assert_eq!(&&back, body, "a body changes through JSON: {text}");
    }
    // A stream of several JSON objects, as `render` prints it, is refused by `scan_file` (it
    // takes a `{`-first file as one YAML document; kubectl reads the stream): until that
    // changes, each object's line is read again on its own.
    let rendered = render_objects(&scan.objects);
    let lines: Vec<&[u8]> = if scan.objects.len() > 1 {
        rendered.split_inclusive(|&b| b == b'\n').collect()
    } else {
        vec![&rendered[..]]
    };
    let mut bodies_again = Vec::new();
    for line in lines {
        let again = scan_file("rendered.json", line, scan_config()).unwrap_or_else(|e| {
            panic!(
                "render's output is refused when read again: {}\n{}",
                render(&e),
                String::from_utf8_lossy(line)
            )
        });
        bodies_again.extend(again.objects.into_iter().map(|o| o.body));
    }
    let bodies_again: Vec<&Map<String, Value>> = bodies_again.iter().collect();
    assert_eq!(
        bodies_again,
        bodies,
        "render's output reads as other objects: {}",
        String::from_utf8_lossy(&rendered)
    );
}

// ---- the image reference parser ----

pub fn check_ref(written: &str) {
    match ImageRef::parse(written) {
        Ok(r) => {
            let shown = r.to_string();
            let again = ImageRef::parse(&shown);
            assert_eq!(
                again.as_ref().ok(),
                Some(&r),
                "{written:?} shown as {shown:?} parses to {again:?}"
            );
            assert_eq!(again.unwrap().to_string(), shown);
        }
        Err(e) => {
            check_error(&e, "invalid image reference");
            assert_eq!(e.reference, written, "the refusal quotes another reference");
        }
    }
}

// ---- the lockfile parser ----

pub fn check_lockfile(bytes: &[u8]) {
    match Lockfile::parse_unverified(bytes) {
        Ok(lock) => {
            // What parses, serializes to bytes that parse to the same lockfile.
            let written = lock.to_bytes();
            let again = Lockfile::parse_unverified(&written);
            assert_eq!(
                again.as_ref().ok(),
                Some(&lock),
                "re-serialized as {:?}",
                String::from_utf8_lossy(&written)
            );
        }
        Err(e) => {
            check_error(&e, lockstep_core::lockfile::FILE_NAME);
        }
    }
}

// ---- the SSHSIG parser ----

/// The signed message (a lockfile's first lines, as in tests/it/fuzz.rs).
pub const MESSAGE: &[u8] = b"version = 1\ngeneration = 1\n";

/// A throw-away ed25519 key made for fuzzing only (ssh-keygen -t ed25519 -N ''). Fixed, so
/// the genuine signature is the same in every run and can seed the corpus.
pub const FUZZ_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACCSGZ4trkjvXrwkcIsLTyB0YCg3ryuJa+KrzeDwLL2gzgAAAJha1LtOWtS7
TgAAAAtzc2gtZWQyNTUxOQAAACCSGZ4trkjvXrwkcIsLTyB0YCg3ryuJa+KrzeDwLL2gzg
AAAEAMxXxfi4I/oi8OgcwR+Wgz9OMLPSosx9Laq+XTFspQFZIZni2uSO9evCRwiwtPIHRg
KDevK4lr4qvN4PAsvaDOAAAAFWZ1enpAbG9ja3N0ZXAuZXhhbXBsZQ==
-----END OPENSSH PRIVATE KEY-----
";

pub fn fuzz_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_openssh(FUZZ_KEY, None).unwrap())
}

pub struct Signed {
    pub trust: AllowedSigners,
    /// The genuine signature of `MESSAGE` by `FUZZ_KEY`, armored.
    pub armored: String,
    /// The SSHSIG blob inside the armor.
    pub blob: Vec<u8>,
}

pub fn signed() -> &'static Signed {
    static SIGNED: OnceLock<Signed> = OnceLock::new();
    SIGNED.get_or_init(|| {
        let key = fuzz_key();
        let line = key.allowed_signers_line("ci@example.com");
        let trust = AllowedSigners::parse(&line, "trust").unwrap();
        let armored = key.sign(MESSAGE).unwrap();
        let blob = dearmor(armored.as_bytes()).unwrap();
        assert_eq!(&blob[..6], b"SSHSIG");
        Signed {
            trust,
            armored,
            blob,
        }
    })
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// The blob inside an armored signature, read as strictly as lockstep's own rule (a
/// signature file is exactly the armor): the text starts with the BEGIN line, as OpenSSH's
/// `sshsig_dearmor` requires, and has nothing but blanks after the END line; between them,
/// base64 with blanks anywhere and padding only at the end. `None` when that fails.
pub fn dearmor(armored: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(armored).ok()?;
    let (body, after) = text.strip_prefix(BEGIN)?.split_once(END)?;
    if !after.bytes().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let body: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let data = body
        .strip_suffix(b"==")
        .or_else(|| body.strip_suffix(b"="))
        .unwrap_or(&body);
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &c in data {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

/// The armor OpenSSH writes around an SSHSIG blob: 70-column base64 lines.
pub fn armor(blob: &[u8]) -> Vec<u8> {
    let b64 = base64_encode(blob);
    let mut out = String::from("-----BEGIN SSH SIGNATURE-----\n");
    for line in b64.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str("-----END SSH SIGNATURE-----\n");
    out.into_bytes()
}

/// Verifies `armored` over `MESSAGE` against the one trusted key. It must never panic, must
/// accept the genuine signature, and must accept nothing else: whatever verifies is the
/// genuine SSHSIG blob, byte for byte, in armor as strict as `dearmor` reads it (text
/// around the armor and SSHSIG version 0, which this target found accepted, are refused
/// since: see fuzz/regressions/sshsig/).
pub fn check_signature(armored: Vec<u8>) {
    let s = signed();
    let unchanged = armored == s.armored.as_bytes();
    let files = [SignatureFile {
        name: "lockstep.lock.fuzz.sig".to_owned(),
        armored,
    }];
    let at = Timestamp::from_second(1_800_000_000).unwrap();
    match verify(MESSAGE, &files, &s.trust, at, 1) {
        Ok(v) => {
            assert_eq!(v.approvals(), 1);
            let blob = dearmor(&files[0].armored);
            assert!(
                blob.as_deref() == Some(s.blob.as_slice()),
                "accepted a signature that is not the genuine one: {:?}",
                String::from_utf8_lossy(&files[0].armored)
            );
            // One signature, one file: the genuine bytes, or them checked out with CRLF.
            let crlf = s.armored.replace('\n', "\r\n");
            assert!(
                unchanged || files[0].armored == crlf.as_bytes(),
                "accepted another encoding of the genuine signature: {:?}",
                String::from_utf8_lossy(&files[0].armored)
            );
        }
        Err(e) => {
            assert!(
                !unchanged,
                "the real signature does not verify: {}",
                render(&e)
            );
            // The one signature is rejected, by its file's name.
            check_error(&e, "lockstep.lock.fuzz.sig");
        }
    }
}

// ---- the allowed_signers parser ----

pub fn check_signers(text: &str) {
    match AllowedSigners::parse(text, "fuzz_signers") {
        Ok(signers) => {
            let lines = text.lines().count();
            assert!(
                signers.keys().len() + signers.skipped().len() <= lines,
                "{} keys and {} skipped from {lines} lines",
                signers.keys().len(),
                signers.skipped().len()
            );
            for key in signers.keys() {
                assert!(
                    key.line() >= 1 && key.line() <= lines,
                    "key on line {} of {lines}",
                    key.line()
                );
                assert!(!key.principals().is_empty(), "a key without principals");
            }
            let _ = signers.notices();
        }
        Err(e) => {
            check_error(&e, "fuzz_signers:");
        }
    }
}

// ---- what a registry hands `lock` as a signature: Sigstore bundles, DSSE envelopes ----

/// A cosign public key nobody in the fuzzer holds the secret of: nothing arbitrary bytes
/// make may verify under it.
const FUZZ_COSIGN_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEQl20X3iC/uJ2jRpsannCLRuO7+xS
luHT3yGr22NoXZmG5Mlak5077Vjbuq9zrbcxwLnL5XOfORS6Rul17B4pEA==
-----END PUBLIC KEY-----
";

/// `bundle::candidate` and `attestation::envelope_candidate` on arbitrary bytes: never
/// panic, answer within their bounds (payload, signature, chain), and what they yield is no
/// signature or attestation of the fuzz rule: it does not verify under its key.
pub fn check_bundle(bytes: &[u8]) {
    use lockstep_core::provenance::{
        self, CosignKey, ImagePattern, ProvenanceRule, attestation, bundle,
    };
    let manifest = Digest::of(b"fuzz signature manifest");
    let digest = Digest::of(b"fuzz image");
    let image = ImageRef::parse(&format!("registry.example/shop/api@{digest}")).unwrap();
    let rule = ProvenanceRule {
        at: "fuzz".into(),
        images: vec![ImagePattern::parse("registry.example/**").unwrap()],
        keys: vec![CosignKey::from_pem("fuzz.pub", FUZZ_COSIGN_KEY.as_bytes()).unwrap()],
        key_files: vec!["fuzz.pub".into()],
        certificate: None,
        attestations: vec!["https://slsa.dev/provenance/v1".into()],
    };
    let at = Timestamp::from_second(1_800_000_000).unwrap();
    if let Ok(c) = bundle::candidate(manifest.clone(), bytes) {
        assert!(c.payload.len() <= provenance::MAX_PAYLOAD_BYTES);
        assert!(
            c.signature.len() <= 1024 + 3,
            "{} signature bytes",
            c.signature.len()
        );
        assert!(c.chain.len() <= provenance::certificate::MAX_CHAIN);
        assert!(provenance::check_signature(&image, &digest, &c, &rule, at).is_err());
        assert!(attestation::check_attestation(&digest, &c, &rule, at).is_err());
    }
    if let Ok(c) = attestation::envelope_candidate(manifest, bytes, None, Vec::new()) {
        assert!(c.payload.len() <= attestation::MAX_STATEMENT_BYTES);
        assert!(
            c.signature.len() <= 1024 + 3,
            "{} signature bytes",
            c.signature.len()
        );
        assert!(attestation::check_attestation(&digest, &c, &rule, at).is_err());
    }
}

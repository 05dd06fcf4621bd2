//! signing against the real OpenSSH: keys made by `ssh-keygen`, signatures checked by
//! `ssh-keygen -Y verify` and made by `ssh-keygen -Y sign`, validity windows cross-checked.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use jiff::Timestamp;
use lockstep::signing::{
    AllowedSigners, SignatureFile, SignatureProblem, SigningError, SigningKey, VerifyError, verify,
};

const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const LOCK: &[u8] = b"# lockstep.lock\nversion = 1\ngeneration = 3\n\n[[image]]\nname = \"docker.io/library/nginx\"\n";

/// Runs ssh-keygen with `stdin`, in UTC so its local-time readings match lockstep's.
fn ssh_keygen(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(SSH_KEYGEN)
        .args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh-keygen runs (install openssh-client)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "ssh-keygen failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `ssh-keygen -t TYPE -N PASSPHRASE -C COMMENT -f DIR/NAME`, returning the key path.
fn keygen(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec!["-q", "-f", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(ssh_keygen(&args, b""));
    path
}

/// An unencrypted ed25519 key by `ssh-keygen -t ed25519 -N ''`, and lockstep's reading of it.
fn keygen_ed25519(dir: &Path, comment: &str) -> (PathBuf, SigningKey) {
    let path = keygen(
        dir,
        "id_ed25519",
        &["-t", "ed25519", "-N", "", "-C", comment],
    );
    let key = SigningKey::from_openssh(&fs::read_to_string(&path).unwrap(), None).unwrap();
    (path, key)
}

fn pub_line(key: &Path) -> String {
    fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim_end()
        .to_owned()
}

/// `ssh-keygen -l`'s `SHA256:…` for a key file.
fn keygen_fingerprint(key: &Path) -> String {
    let out = ok(ssh_keygen(&["-l", "-f", key.to_str().unwrap()], b""));
    out.split_whitespace().nth(1).unwrap().to_owned()
}

/// `ssh-keygen -Y verify` of `signature` over `message`, with extra `-O` options.
fn keygen_verify(
    dir: &Path,
    allowed_signers: &str,
    principal: &str,
    signature: &str,
    message: &[u8],
    options: &[&str],
) -> Output {
    let allowed = dir.join("allowed_signers.for-ssh-keygen");
    fs::write(&allowed, allowed_signers).unwrap();
    let sig = dir.join("message.sig");
    fs::write(&sig, signature).unwrap();
    let mut args = vec![
        "-Y",
        "verify",
        "-f",
        allowed.to_str().unwrap(),
        "-I",
        principal,
        "-n",
        "lockstep",
        "-s",
        sig.to_str().unwrap(),
    ];
    for option in options {
        args.push("-O");
        args.push(option);
    }
    ssh_keygen(&args, message)
}

/// `ssh-keygen -Y sign -n NAMESPACE -f KEY` over `message`; the armored signature.
fn keygen_sign(key: &Path, namespace: &str, message: &[u8], options: &[&str]) -> Vec<u8> {
    let file = key.with_file_name("lockstep.lock");
    fs::write(&file, message).unwrap();
    let mut args = vec!["-Y", "sign", "-n", namespace, "-f", key.to_str().unwrap()];
    for option in options {
        args.push("-O");
        args.push(option);
    }
    args.push(file.to_str().unwrap());
    ok(ssh_keygen(&args, b""));
    let sig = file.with_file_name("lockstep.lock.sig");
    let armored = fs::read(&sig).unwrap();
    fs::remove_file(sig).unwrap();
    armored
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    at("2025-06-01T12:00:00Z")
}

fn file(name: &str, armored: impl Into<Vec<u8>>) -> SignatureFile {
    SignatureFile {
        name: name.to_owned(),
        armored: armored.into(),
    }
}

fn only_problem(result: Result<lockstep::signing::Verified<'_>, VerifyError>) -> SignatureProblem {
    match result {
        Err(VerifyError::ThresholdNotMet { mut rejected, .. }) if rejected.len() == 1 => {
            rejected.remove(0).problem
        }
        other => panic!("expected one rejected signature, got {other:?}"),
    }
}

#[test]
fn ssh_keygen_key_signs_what_ssh_keygen_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = keygen_ed25519(dir.path(), "ci@example");
    assert_eq!(key.comment(), "ci@example");
    assert_eq!(key.fingerprint(), keygen_fingerprint(&path));
    assert_eq!(key.public_openssh(), pub_line(&path));
    assert_eq!(
        lockstep::source::signature_path(&key.signer_name()),
        "lockstep.lock.ci-example.sig"
    );

    let signature = key.sign(LOCK).unwrap();
    let allowed = format!("ci@example namespaces=\"lockstep\" {}\n", pub_line(&path));
    let out = ok(keygen_verify(
        dir.path(),
        &allowed,
        "ci@example",
        &signature,
        LOCK,
        &[],
    ));
    assert!(
        out.contains("Good \"lockstep\" signature for ci@example"),
        "{out}"
    );

    // The same signature over one changed byte, or for another principal, is refused.
    let mut tampered = LOCK.to_vec();
    tampered[20] ^= 1;
    let out = keygen_verify(
        dir.path(),
        &allowed,
        "ci@example",
        &signature,
        &tampered,
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(255),
        "ssh-keygen -Y verify refuses a changed byte"
    );
    let out = keygen_verify(dir.path(), &allowed, "someone@else", &signature, LOCK, &[]);
    assert_eq!(
        out.status.code(),
        Some(255),
        "ssh-keygen -Y verify refuses another principal"
    );
}

#[test]
fn ssh_keygen_signature_verifies_with_ours() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keygen_ed25519(dir.path(), "ci@example");
    let trust = AllowedSigners::parse(
        &format!("ci@example,release@example {}\n", pub_line(&path)),
        "allowed_signers",
    )
    .unwrap();
    // ssh-keygen's default hash (sha512) and the other one it offers.
    for options in [&[][..], &["hashalg=sha256"][..]] {
        let armored = keygen_sign(&path, "lockstep", LOCK, options);
        let files = [file("lockstep.lock.ci.sig", armored)];
        let verified = verify(LOCK, &files, &trust, now(), 1).unwrap();
        assert_eq!(verified.bytes(), LOCK);
        assert_eq!(verified.principals(), ["ci@example", "release@example"]);
        assert_eq!(verified.signers()[0].fingerprint, keygen_fingerprint(&path));
        assert_eq!(verified.signers()[0].file, "lockstep.lock.ci.sig");

        let mut tampered = LOCK.to_vec();
        tampered.push(b'\n');
        assert_eq!(
            only_problem(verify(&tampered, &files, &trust, now(), 1)),
            SignatureProblem::BadSignature {
                fingerprint: keygen_fingerprint(&path)
            }
        );
    }
}

#[test]
fn encrypted_key_needs_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    // The default cipher (aes256-ctr) and an AEAD one, whose wrong-passphrase failure differs.
    for (name, cipher) in [("ctr", None), ("gcm", Some("aes256-gcm@openssh.com"))] {
        let mut args = vec!["-t", "ed25519", "-N", "correct horse", "-C", "enc@example"];
        if let Some(cipher) = cipher {
            args.extend(["-Z", cipher]);
        }
        let path = keygen(dir.path(), name, &args);
        let text = fs::read_to_string(&path).unwrap();

        let key = SigningKey::from_openssh(&text, Some("correct horse")).unwrap();
        assert_eq!(key.fingerprint(), keygen_fingerprint(&path));
        assert_eq!(key.comment(), "enc@example");
        let allowed = format!("enc@example {}\n", pub_line(&path));
        let signature = key.sign(LOCK).unwrap();
        ok(keygen_verify(
            dir.path(),
            &allowed,
            "enc@example",
            &signature,
            LOCK,
            &[],
        ));

        let err = SigningKey::from_openssh(&text, None).unwrap_err();
        assert!(
            matches!(err, SigningError::PassphraseRequired),
            "{name}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the signing key is encrypted with a passphrase, and none was given"
        );
        let err = SigningKey::from_openssh(&text, Some("wrong")).unwrap_err();
        assert!(
            matches!(err, SigningError::WrongPassphrase),
            "{name}: {err:?}"
        );
        let body = text.lines().nth(2).unwrap();
        assert!(!format!("{err} {err:?}").contains(body));
    }
}

#[test]
fn other_key_types_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, bits, algorithm) in [
        ("rsa", "1024", "ssh-rsa"),
        ("ecdsa", "256", "ecdsa-sha2-nistp256"),
    ] {
        let path = keygen(
            dir.path(),
            kind,
            &["-t", kind, "-b", bits, "-N", "", "-C", "x"],
        );
        let text = fs::read_to_string(&path).unwrap();
        let err = SigningKey::from_openssh(&text, None).unwrap_err();
        assert!(
            matches!(&err, SigningError::UnsupportedKeyType { algorithm: a } if a == algorithm),
            "{kind}: {err:?}"
        );
        assert!(err.to_string().contains(algorithm), "{err}");
        // An encrypted one is refused the same way, before any passphrase is asked for.
        let path = keygen(
            dir.path(),
            &format!("{kind}-enc"),
            &["-t", kind, "-b", bits, "-N", "pw", "-C", "x"],
        );
        let err = SigningKey::from_openssh(&fs::read_to_string(&path).unwrap(), None).unwrap_err();
        assert!(
            matches!(err, SigningError::UnsupportedKeyType { .. }),
            "{err:?}"
        );
    }
}

#[test]
fn signatures_for_other_namespaces_or_by_other_key_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = keygen_ed25519(dir.path(), "dev");
    let ecdsa = keygen(
        dir.path(),
        "id_ecdsa",
        &["-t", "ecdsa", "-N", "", "-C", "dev"],
    );
    let allowed = format!("dev {}\ndev {}\n", pub_line(&path), pub_line(&ecdsa));
    let trust = AllowedSigners::parse(&allowed, "allowed_signers").unwrap();
    assert_eq!(trust.skipped().len(), 1);
    assert_eq!(trust.skipped()[0].fingerprint, keygen_fingerprint(&ecdsa));

    // A Git commit signature (`-n git`) is no lockfile approval, even over the same bytes.
    let git = keygen_sign(&path, "git", LOCK, &[]);
    assert_eq!(
        only_problem(verify(LOCK, &[file("git.sig", git)], &trust, now(), 1)),
        SignatureProblem::WrongNamespace {
            fingerprint: keygen_fingerprint(&path),
            namespace: "git".into()
        }
    );
    // ssh-keygen itself accepts the ECDSA signature; lockstep names its type and key.
    let armored = keygen_sign(&ecdsa, "lockstep", LOCK, &[]);
    let sig = String::from_utf8(armored.clone()).unwrap();
    ok(keygen_verify(dir.path(), &allowed, "dev", &sig, LOCK, &[]));
    assert_eq!(
        only_problem(verify(
            LOCK,
            &[file("ecdsa.sig", armored)],
            &trust,
            now(),
            1
        )),
        SignatureProblem::UnsupportedKeyType {
            algorithm: "ecdsa-sha2-nistp256".into(),
            fingerprint: Some(keygen_fingerprint(&ecdsa)),
        }
    );
}

#[test]
fn validity_windows_agree_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = keygen_ed25519(dir.path(), "ci");
    let signature = key.sign(LOCK).unwrap();
    let files = [file("lockstep.lock.ci.sig", signature.clone())];
    // Without `Z`: lockstep reads UTC, ssh-keygen its local zone, which `ssh_keygen` sets to
    // UTC; the `Z` form means UTC to both.
    let allowed = format!(
        "ci valid-after=\"20250101\",valid-before=\"20250630120000Z\" {}\n",
        pub_line(&path)
    );
    let trust = AllowedSigners::parse(&allowed, "allowed_signers").unwrap();
    let cases = [
        ("20241231235959", at("2024-12-31T23:59:59Z"), false),
        ("20250101000000", at("2025-01-01T00:00:00Z"), true),
        ("20250301", at("2025-03-01T00:00:00Z"), true),
        ("20250630120000", at("2025-06-30T12:00:00Z"), true),
        ("20250630120001", at("2025-06-30T12:00:01Z"), false),
    ];
    for (keygen_time, time, valid) in cases {
        let theirs = keygen_verify(
            dir.path(),
            &allowed,
            "ci",
            &signature,
            LOCK,
            &[&format!("verify-time={keygen_time}")],
        );
        assert_eq!(
            theirs.status.success(),
            valid,
            "ssh-keygen at {keygen_time}: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let ours = verify(LOCK, &files, &trust, time, 1);
        assert_eq!(ours.is_ok(), valid, "lockstep at {time}: {ours:?}");
        if !valid {
            assert!(matches!(
                only_problem(ours),
                SignatureProblem::OutsideValidity { at, .. } if at == time
            ));
        }
    }
}

#[test]
fn generated_key_works_with_openssh_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("lockstep-ci").unwrap();
    let private = dir.path().join("generated");
    fs::write(&private, key.to_openssh().as_bytes()).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(private.with_extension("pub"), key.public_openssh() + "\n").unwrap();

    // OpenSSH reads the private key we wrote and derives the same public key from it.
    let derived = ok(ssh_keygen(&["-y", "-f", private.to_str().unwrap()], b""));
    assert_eq!(derived.trim_end(), key.public_openssh());
    assert_eq!(keygen_fingerprint(&private), key.fingerprint());

    // Our allowed_signers line works for ssh-keygen, and for us.
    let line = key.allowed_signers_line("ci@example");
    assert_eq!(
        line,
        format!(
            "ci@example namespaces=\"lockstep\" {}",
            key.public_openssh()
        )
    );
    let signature = key.sign(LOCK).unwrap();
    ok(keygen_verify(
        dir.path(),
        &line,
        "ci@example",
        &signature,
        LOCK,
        &[],
    ));
    let trust = AllowedSigners::parse(&line, "allowed_signers").unwrap();
    let theirs = keygen_sign(&private, "lockstep", LOCK, &[]);
    let files = [file("a.sig", signature), file("b.sig", theirs)];
    let verified = verify(LOCK, &files, &trust, now(), 1).unwrap();
    // Two files by one key are one approval.
    assert_eq!(verified.signers().len(), 2);
    assert_eq!(verified.approvals(), 1);
    assert!(matches!(
        verify(LOCK, &files, &trust, now(), 2),
        Err(VerifyError::ThresholdNotMet {
            approvals: 1,
            threshold: 2,
            ..
        })
    ));

    // A principal with a blank is quoted, and ssh-keygen still matches it.
    let line = key.allowed_signers_line("Release Team");
    assert!(line.starts_with("\"Release Team\" namespaces="), "{line}");
    let signature = key.sign(LOCK).unwrap();
    ok(keygen_verify(
        dir.path(),
        &line,
        "Release Team",
        &signature,
        LOCK,
        &[],
    ));
}

#[test]
fn ssh_keygen_and_lockstep_agree_on_namespace_restrictions() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key) = keygen_ed25519(dir.path(), "ci");
    let signature = key.sign(LOCK).unwrap();
    for (namespaces, allowed) in [
        ("lockstep", true),
        ("git,lock*", true),
        ("git", false),
        ("*,!lockstep", false),
    ] {
        let line = format!("ci namespaces=\"{namespaces}\" {}", pub_line(&path));
        let theirs = keygen_verify(dir.path(), &line, "ci", &signature, LOCK, &[]);
        assert_eq!(
            theirs.status.success(),
            allowed,
            "ssh-keygen with {namespaces}"
        );
        let trust = AllowedSigners::parse(&line, "allowed_signers").unwrap();
        let ours = verify(LOCK, &[file("s", signature.clone())], &trust, now(), 1);
        assert_eq!(
            ours.is_ok(),
            allowed,
            "lockstep with {namespaces}: {ours:?}"
        );
    }
}

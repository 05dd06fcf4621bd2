//! Verifying detached signatures over the exact lockfile bytes, against trusted keys, with a
//! threshold of distinct approvals.
//!
//! Like TUF's threshold signatures, a file that fails (a stale signature of a departed
//! signer, an untrusted key, garbage) does not veto the others: the lockfile is verified
//! when enough distinct trusted signers vouch for its bytes. Every failure is still
//! reported, on [`Verified::rejected`] or in [`VerifyError::ThresholdNotMet`].

use std::fmt;

use jiff::Timestamp;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, PublicKey, SshSig};

use super::allowed_signers::TrustedKey;
use super::{AllowedSigners, NAMESPACE, probe};

/// A detached signature file as read from disk or from a Git tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// The file name, e.g. `lockstep.lock.ci.sig` (used in reports only).
    pub name: String,
    /// The armored SSHSIG, `-----BEGIN SSH SIGNATURE-----…`.
    pub armored: Vec<u8>,
}

/// A valid signature by a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerReport {
    /// The signature file.
    pub file: String,
    /// The signing key's `SHA256:…` fingerprint.
    pub fingerprint: String,
    /// The principals of every `allowed_signers` line that admits the key for this
    /// signature (namespace and validity window included), in file order.
    pub principals: Vec<String>,
    /// Those lines' numbers.
    pub lines: Vec<usize>,
}

/// A signature file that does not count as an approval, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSignature {
    /// The signature file.
    pub file: String,
    /// Why it does not count.
    pub problem: SignatureProblem,
}

/// The validity window of one `allowed_signers` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidityWindow {
    /// The line number.
    pub line: usize,
    /// `valid-after`, if set.
    pub valid_after: Option<Timestamp>,
    /// `valid-before`, if set.
    pub valid_before: Option<Timestamp>,
}

/// Why one signature file is not an approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    /// Bytes before the armor's first line or after its last: RFC 7468 decoders skip them,
    /// OpenSSH refuses text before it, and either way the file would not be the one signing
    /// wrote.
    #[error(
        "{0}: a signature file is exactly the armored SSHSIG (as `ssh-keygen -Y sign` writes it)"
    )]
    NotArmored(&'static str),
    /// Not a decodable SSHSIG.
    #[error("not a valid SSH signature (-----BEGIN SSH SIGNATURE-----)")]
    Malformed {
        /// What the decoder found wrong.
        #[source]
        source: ssh_key::Error,
    },
    /// An SSHSIG version other than 1 (the version field is not covered by the signature;
    /// OpenSSH and ssh-key accept 0 too, so one signature would have two encodings).
    #[error(
        "SSHSIG version {0}; lockstep accepts version 1 only, as `ssh-keygen -Y sign` writes it"
    )]
    UnsupportedVersion(u32),
    /// A decodable SSHSIG whose file is not its canonical encoding (70-column base64, one
    /// final line ending, all LF or all CRLF): the decoder tolerates variants (a CR for the
    /// last LF, say), which would give one signature many files.
    #[error(
        "the file is not the armored SSHSIG exactly as `ssh-keygen -Y sign` writes it (70-column base64, one final newline, all LF or all CRLF line endings)"
    )]
    NotCanonical,
    /// Made with a key that is not ed25519.
    #[error(
        "made with a key of type {}{}; lockstep accepts ed25519 signatures only",
        crate::error_chain::escape(algorithm, false),
        fingerprint.as_deref().map(|f| format!(" ({f})")).unwrap_or_default()
    )]
    UnsupportedKeyType {
        /// The OpenSSH key type.
        algorithm: String,
        /// The key's fingerprint, when the signature is intact enough to tell.
        fingerprint: Option<String>,
    },
    /// Made for another purpose (`ssh-keygen -Y sign -n git`, …).
    #[error("made by {fingerprint} for namespace {namespace:?}, not \"lockstep\"")]
    WrongNamespace {
        /// The signing key.
        fingerprint: String,
        /// The namespace in the signature.
        namespace: String,
    },
    /// The signature does not verify over the bytes: they or it changed after signing.
    #[error(
        "the signature by {fingerprint} does not match lockstep.lock \
         (the lockfile or the signature changed after signing)"
    )]
    BadSignature {
        /// The key named in the signature.
        fingerprint: String,
    },
    /// The key is on no line of the allowed signers.
    #[error("made by {fingerprint}, which is not a trusted key (not in the allowed signers)")]
    UntrustedKey {
        /// The signing key.
        fingerprint: String,
    },
    /// The key is listed, but no line lets it sign in namespace `lockstep`.
    #[error(
        "made by {fingerprint}, which the allowed signers (line {}) do not allow in namespace \"lockstep\"",
        join(lines)
    )]
    NamespaceNotAllowed {
        /// The signing key.
        fingerprint: String,
        /// The lines that list the key.
        lines: Vec<usize>,
    },
    /// The key is listed for `lockstep`, but not at the verification time.
    #[error("made by {fingerprint}, which is not valid at {at}: {}", join(windows))]
    OutsideValidity {
        /// The signing key.
        fingerprint: String,
        /// The verification time.
        at: Timestamp,
        /// The windows of the lines that list the key for namespace `lockstep`.
        windows: Vec<ValidityWindow>,
    },
}

/// Why verification failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// There is no signature file at all.
    #[error("lockstep.lock is not signed: there is no lockstep.lock.<signer>.sig beside it")]
    NotSigned,
    /// A threshold of 0 would accept anything.
    #[error("the signature threshold must be at least 1")]
    ZeroThreshold,
    /// Fewer distinct trusted approvals than required.
    #[error("{}", shortfall(*approvals, *threshold, valid, rejected))]
    ThresholdNotMet {
        /// Distinct approvals found.
        approvals: usize,
        /// Approvals required.
        threshold: usize,
        /// The valid signatures (they may share principals and so count once).
        valid: Vec<SignerReport>,
        /// The signatures that did not count, and why.
        rejected: Vec<RejectedSignature>,
    },
}

/// Lockfile bytes whose signatures met the threshold. Only [`verify`] makes one, so a
/// function taking `Verified` cannot be handed unverified bytes.
#[derive(Clone)]
pub struct Verified<'a> {
    bytes: &'a [u8],
    signers: Vec<SignerReport>,
    rejected: Vec<RejectedSignature>,
    approvals: usize,
}

impl<'a> Verified<'a> {
    /// The verified bytes, exactly as signed.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The valid signatures by trusted keys, in input order.
    pub fn signers(&self) -> &[SignerReport] {
        &self.signers
    }

    /// Every principal that approved, sorted, each once.
    pub fn principals(&self) -> Vec<&str> {
        let mut principals: Vec<&str> = self
            .signers
            .iter()
            .flat_map(|s| s.principals.iter().map(String::as_str))
            .collect();
        principals.sort_unstable();
        principals.dedup();
        principals
    }

    /// The number of distinct approvals (signers sharing a principal or a key count once).
    pub fn approvals(&self) -> usize {
        self.approvals
    }

    /// Signature files that did not count (the threshold was met without them).
    pub fn rejected(&self) -> &[RejectedSignature] {
        &self.rejected
    }
}

impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .field("signers", &self.signers)
            .field("rejected", &self.rejected)
            .field("approvals", &self.approvals)
            .finish()
    }
}

/// Verifies `signatures` over `message` (the exact bytes of `lockstep.lock`).
///
/// Each signature must be an SSHSIG in namespace `lockstep` (sha256 or sha512) by an ed25519
/// key that `trust` lists on a line whose `namespaces=` allows `lockstep` and whose validity
/// window contains `at`, and must verify over `message`. The result counts *distinct*
/// approvals: valid signatures whose keys share a principal (or are the same key) are one
/// approval. At least `threshold` are needed.
pub fn verify<'a>(
    message: &'a [u8],
    signatures: &[SignatureFile],
    trust: &AllowedSigners,
    at: Timestamp,
    threshold: usize,
) -> Result<Verified<'a>, VerifyError> {
    if threshold == 0 {
        return Err(VerifyError::ZeroThreshold);
    }
    if signatures.is_empty() {
        return Err(VerifyError::NotSigned);
    }
    let mut valid = Vec::new();
    let mut rejected = Vec::new();
    for file in signatures {
        match check(message, file, trust, at) {
            Ok(signer) => valid.push(signer),
            Err(problem) => rejected.push(RejectedSignature {
                file: file.name.clone(),
                problem,
            }),
        }
    }
    let approvals = distinct_approvals(&valid);
    if approvals < threshold {
        return Err(VerifyError::ThresholdNotMet {
            approvals,
            threshold,
            valid,
            rejected,
        });
    }
    Ok(Verified {
        bytes: message,
        signers: valid,
        rejected,
        approvals,
    })
}

const ARMOR_BEGIN: &[u8] = b"-----BEGIN SSH SIGNATURE-----";
const ARMOR_END: &[u8] = b"-----END SSH SIGNATURE-----";

/// The file starts with the armor's first line (as OpenSSH requires) and has nothing but
/// line ends and spaces after its last, so one signature has one file.
fn check_armor(armored: &[u8]) -> Result<(), SignatureProblem> {
    if !armored.starts_with(ARMOR_BEGIN) {
        return Err(SignatureProblem::NotArmored(
            "the file does not start with -----BEGIN SSH SIGNATURE-----",
        ));
    }
    let end = armored
        .windows(ARMOR_END.len())
        .rposition(|w| w == ARMOR_END)
        .ok_or(SignatureProblem::NotArmored(
            "the file has no -----END SSH SIGNATURE----- line",
        ))?;
    if !armored[end + ARMOR_END.len()..]
        .iter()
        .all(u8::is_ascii_whitespace)
    {
        return Err(SignatureProblem::NotArmored(
            "the file has text after -----END SSH SIGNATURE-----",
        ));
    }
    Ok(())
}

/// The file is the one encoding of `signature` that signing writes, or that encoding with
/// every line ending CRLF (a checkout with `core.autocrlf`) — never a mix, never another
/// byte.
fn is_canonical(signature: &SshSig, armored: &[u8]) -> bool {
    [LineEnding::LF, LineEnding::CRLF]
        .into_iter()
        .any(|ending| {
            signature
                .to_pem(ending)
                .is_ok_and(|canonical| canonical.as_bytes() == armored)
        })
}

fn check(
    message: &[u8],
    file: &SignatureFile,
    trust: &AllowedSigners,
    at: Timestamp,
) -> Result<SignerReport, SignatureProblem> {
    let signature = decode(file)?;
    let (key, fingerprint) = check_signed(message, &signature)?;
    let admitting = admit(trust, key, &fingerprint, at)?;
    let mut principals: Vec<String> = Vec::new();
    for principal in admitting.iter().flat_map(|t| t.principals()) {
        if !principals.contains(principal) {
            principals.push(principal.clone());
        }
    }
    Ok(SignerReport {
        file: file.name.clone(),
        fingerprint,
        principals,
        lines: admitting.iter().map(|t| t.line()).collect(),
    })
}

/// The armored file as an SSHSIG, refused unless it is the one canonical encoding of version 1.
fn decode(file: &SignatureFile) -> Result<SshSig, SignatureProblem> {
    check_armor(&file.armored)?;
    let signature = match SshSig::from_pem(&file.armored) {
        Ok(signature) => signature,
        Err(source) => {
            return Err(match probe::signature_key(&file.armored) {
                Some((algorithm, fingerprint)) if algorithm != Algorithm::Ed25519.as_str() => {
                    SignatureProblem::UnsupportedKeyType {
                        algorithm,
                        fingerprint: Some(fingerprint),
                    }
                }
                _ => SignatureProblem::Malformed { source },
            });
        }
    };
    if signature.version() != SshSig::VERSION {
        return Err(SignatureProblem::UnsupportedVersion(signature.version()));
    }
    if !is_canonical(&signature, &file.armored) {
        return Err(SignatureProblem::NotCanonical);
    }
    Ok(signature)
}

/// The signing key and its fingerprint, once the signature is an Ed25519 one in lockstep's
/// namespace over exactly `message`.
fn check_signed<'s>(
    message: &[u8],
    signature: &'s SshSig,
) -> Result<(&'s KeyData, String), SignatureProblem> {
    let key = signature.public_key();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(SignatureProblem::UnsupportedKeyType {
            algorithm: key.algorithm().as_str().to_owned(),
            fingerprint: Some(fingerprint),
        });
    }
    if signature.namespace() != NAMESPACE {
        return Err(SignatureProblem::WrongNamespace {
            fingerprint,
            namespace: signature.namespace().to_owned(),
        });
    }
    // The hash algorithm comes from the signature; ssh-key decodes only sha256 and sha512.
    if PublicKey::from(key.clone())
        .verify(NAMESPACE, message, signature)
        .is_err()
    {
        return Err(SignatureProblem::BadSignature { fingerprint });
    }
    Ok((key, fingerprint))
}

/// The allowed_signers lines that admit `key` for lockstep's namespace at `at`; refused with
/// the first rule that excludes every listed line.
fn admit<'t>(
    trust: &'t AllowedSigners,
    key: &'t KeyData,
    fingerprint: &str,
    at: Timestamp,
) -> Result<Vec<&'t TrustedKey>, SignatureProblem> {
    let fingerprint = fingerprint.to_owned();
    let listed: Vec<&TrustedKey> = trust.lines_for(key).collect();
    if listed.is_empty() {
        return Err(SignatureProblem::UntrustedKey { fingerprint });
    }
    let for_lockstep: Vec<&TrustedKey> = listed
        .iter()
        .copied()
        .filter(|t| t.allows_namespace(NAMESPACE))
        .collect();
    if for_lockstep.is_empty() {
        return Err(SignatureProblem::NamespaceNotAllowed {
            fingerprint,
            lines: listed.iter().map(|t| t.line()).collect(),
        });
    }
    let admitting: Vec<&TrustedKey> = for_lockstep
        .iter()
        .copied()
        .filter(|t| t.is_valid_at(at))
        .collect();
    if admitting.is_empty() {
        return Err(SignatureProblem::OutsideValidity {
            fingerprint,
            at,
            windows: for_lockstep
                .iter()
                .map(|t| ValidityWindow {
                    line: t.line(),
                    valid_after: t.valid_after(),
                    valid_before: t.valid_before(),
                })
                .collect(),
        });
    }
    Ok(admitting)
}

/// Whether signers recorded when a lockfile was verified (each key's `SHA256:…` fingerprint
/// with the principals that admitted it then) still give `needed` distinct approvals under
/// `trust`: among the signers whose key a line still lists for namespace `lockstep`,
/// whatever the time, `needed` that share no key and no principal — which is what [`verify`]
/// counts (`needed` groups have `needed` such representatives, and back). A `valid-before`
/// that has passed stops a key from approving new lockfiles, it does not take back what the
/// key approved; removing its line does. The principals are the recorded ones, so a line
/// added or changed since cannot merge approvals that were distinct; and more signers never
/// make it false (a signer naming two others' principals does not undo their approvals).
pub fn approvals_stand<'s>(
    signers: impl IntoIterator<Item = (&'s str, &'s [String])>,
    trust: &AllowedSigners,
    needed: usize,
) -> bool {
    let listed: Vec<(&str, &[String])> = signers
        .into_iter()
        .filter(|(fingerprint, _)| {
            trust
                .keys()
                .iter()
                .any(|t| t.fingerprint() == *fingerprint && t.allows_namespace(NAMESPACE))
        })
        .collect();
    fn unrelated(a: (&str, &[String]), b: (&str, &[String])) -> bool {
        a.0 != b.0 && !a.1.iter().any(|p| b.1.contains(p))
    }
    // Backtracking over a handful of signers: pick `needed` pairwise unrelated ones.
    fn pick<'a>(
        listed: &[(&'a str, &'a [String])],
        from: usize,
        chosen: &mut Vec<(&'a str, &'a [String])>,
        needed: usize,
    ) -> bool {
        if chosen.len() == needed {
            return true;
        }
        for i in from..listed.len() {
            if chosen.iter().all(|c| unrelated(*c, listed[i])) {
                chosen.push(listed[i]);
                if pick(listed, i + 1, chosen, needed) {
                    return true;
                }
                chosen.pop();
            }
        }
        false
    }
    pick(&listed, 0, &mut Vec::new(), needed)
}

/// Counts groups of signers connected by a shared key or a shared principal (union-find):
/// one person with two keys, or the same key signing twice, is one approval.
fn distinct_approvals(signers: &[SignerReport]) -> usize {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..signers.len()).collect();
    for i in 0..signers.len() {
        for j in i + 1..signers.len() {
            let (a, b) = (&signers[i], &signers[j]);
            let related = a.fingerprint == b.fingerprint
                || a.principals.iter().any(|p| b.principals.contains(p));
            if related {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri] = rj;
            }
        }
    }
    (0..signers.len())
        .filter(|&i| root(&mut parent, i) == i)
        .count()
}

fn shortfall(
    approvals: usize,
    threshold: usize,
    valid: &[SignerReport],
    rejected: &[RejectedSignature],
) -> String {
    let mut out = format!(
        "lockstep.lock has {approvals} distinct trusted approval{} but {threshold} {} required",
        if approvals == 1 { "" } else { "s" },
        if threshold == 1 { "is" } else { "are" },
    );
    for signer in valid {
        out.push_str(&format!(
            "\n  {}: valid, by {} ({})",
            signer.file,
            signer.principals.join(", "),
            signer.fingerprint
        ));
    }
    for rejected in rejected {
        out.push_str(&format!("\n  {}: {}", rejected.file, rejected.problem));
    }
    out
}

impl fmt::Display for ValidityWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} allows ", self.line)?;
        match (self.valid_after, self.valid_before) {
            (Some(after), Some(before)) => write!(f, "{after} to {before}"),
            (Some(after), None) => write!(f, "from {after}"),
            (None, Some(before)) => write!(f, "until {before}"),
            (None, None) => write!(f, "any time"),
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;
    use crate::signing::probe::tests::{ECDSA_FINGERPRINT, ECDSA_SIG};

    const LOCK: &[u8] = b"version = 1\ngeneration = 7\n";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn now() -> Timestamp {
        at("2025-06-01T00:00:00Z")
    }

    fn key(comment: &str) -> SigningKey {
        SigningKey::generate(comment).unwrap()
    }

    fn sig(name: &str, key: &SigningKey, message: &[u8]) -> SignatureFile {
        SignatureFile {
            name: name.to_owned(),
            armored: key.sign(message).unwrap().into_bytes(),
        }
    }

    fn trust(lines: &[String]) -> AllowedSigners {
        AllowedSigners::parse(&lines.join("\n"), "allowed_signers").unwrap()
    }

    fn line(principals: &str, options: &str, key: &SigningKey) -> String {
        format!("{principals} {options} {}", key.public_openssh())
    }

    fn only_problem(result: Result<Verified<'_>, VerifyError>) -> SignatureProblem {
        match result {
            Err(VerifyError::ThresholdNotMet {
                rejected, valid, ..
            }) => {
                assert!(valid.is_empty());
                assert_eq!(rejected.len(), 1);
                rejected.into_iter().next().unwrap().problem
            }
            other => panic!("expected one rejected signature, got {other:?}"),
        }
    }

    #[test]
    fn a_trusted_signature_verifies_the_exact_bytes() {
        let ci = key("ci@example");
        let trust = trust(&[line("ci@example", "namespaces=\"lockstep\"", &ci)]);
        let verified = verify(
            LOCK,
            &[sig("lockstep.lock.ci.sig", &ci, LOCK)],
            &trust,
            now(),
            1,
        )
        .unwrap();
        assert_eq!(verified.bytes(), LOCK);
        assert_eq!(verified.approvals(), 1);
        assert_eq!(verified.principals(), ["ci@example"]);
        assert_eq!(
            verified.signers(),
            [SignerReport {
                file: "lockstep.lock.ci.sig".into(),
                fingerprint: ci.fingerprint(),
                principals: vec!["ci@example".into()],
                lines: vec![1],
            }]
        );
        assert!(verified.rejected().is_empty());
    }

    #[test]
    fn no_signature_files_is_its_own_error() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let err = verify(LOCK, &[], &trust, now(), 1).unwrap_err();
        assert_eq!(err, VerifyError::NotSigned);
        assert_eq!(
            err.to_string(),
            "lockstep.lock is not signed: there is no lockstep.lock.<signer>.sig beside it"
        );
        let err = verify(LOCK, &[sig("s", &ci, LOCK)], &trust, now(), 0).unwrap_err();
        assert_eq!(err, VerifyError::ZeroThreshold);
    }

    /// Regression (found by the cargo-fuzz `sshsig` target): text before the armor was
    /// skipped by the RFC 7468 decoder, so a signature file with bytes prepended still
    /// verified, though `ssh-keygen -Y verify` refuses it.
    #[test]
    fn text_around_the_armor_is_refused() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let genuine = sig("s", &ci, LOCK);
        let with = |prefix: &[u8], suffix: &[u8]| SignatureFile {
            name: "s".into(),
            armored: [prefix, genuine.armored.as_slice(), suffix].concat(),
        };
        for (prefix, suffix) in [
            (&b"\n\n\n\nAj19\n\n\n"[..], &b""[..]),
            (b"\n", b""),
            (b" ", b""),
            (b"", b"trailing"),
            (b"", b"-----BEGIN SSH SIGNATURE-----\n"),
        ] {
            let problem = only_problem(verify(LOCK, &[with(prefix, suffix)], &trust, now(), 1));
            assert!(
                matches!(problem, SignatureProblem::NotArmored(_)),
                "{prefix:?} {suffix:?}: {problem}"
            );
        }
        assert!(verify(LOCK, &[genuine], &trust, now(), 1).is_ok());
    }

    /// Regression (found by the cargo-fuzz `sshsig` target): the SSHSIG version is not
    /// signed, and version 0 was accepted (as OpenSSH does), so one signature had two files.
    #[test]
    fn a_version_other_than_1_is_refused() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let genuine = sig("s", &ci, LOCK);
        let text = String::from_utf8(genuine.armored.clone()).unwrap();
        // The base64 of "SSHSIG" + u32 1 starts "U1NIU0lHAAAAAQ"; with u32 0, "U1NIU0lHAAAAAA".
        assert!(text.contains("U1NIU0lHAAAAAQ"), "{text}");
        let version_0 = SignatureFile {
            name: "s".into(),
            armored: text
                .replacen("U1NIU0lHAAAAAQ", "U1NIU0lHAAAAAA", 1)
                .into_bytes(),
        };
        let problem = only_problem(verify(LOCK, &[version_0], &trust, now(), 1));
        assert_eq!(problem, SignatureProblem::UnsupportedVersion(0));
        assert!(verify(LOCK, &[genuine], &trust, now(), 1).is_ok());
    }

    /// Regression (CI, the tamper test): the genuine signature with its final LF turned
    /// into a CR verified — the decoder and the armor check took any trailing whitespace —
    /// so one signature had more than one file.
    #[test]
    fn only_the_canonical_encoding_verifies() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let genuine = sig("s", &ci, LOCK);
        let text = String::from_utf8(genuine.armored.clone()).unwrap();
        assert!(text.ends_with("-----END SSH SIGNATURE-----\n"), "{text}");
        let variants = [
            format!("{}\r", &text[..text.len() - 1]),
            text.replacen('\n', "\r\n", 1),
            format!("{text}\n"),
            format!("{text} "),
            text.trim_end().to_owned(),
        ];
        for variant in variants {
            let file = SignatureFile {
                name: "s".into(),
                armored: variant.clone().into_bytes(),
            };
            let problem = only_problem(verify(LOCK, &[file], &trust, now(), 1));
            assert!(
                matches!(
                    problem,
                    SignatureProblem::NotCanonical
                        | SignatureProblem::NotArmored(_)
                        | SignatureProblem::Malformed { .. }
                ),
                "{variant:?}: {problem}"
            );
        }
        assert!(verify(LOCK, &[genuine], &trust, now(), 1).is_ok());
    }

    /// Every position of the file, with values the decoders are lenient about (line
    /// endings, spaces, padding, a flipped low bit): none verifies.
    #[test]
    fn no_single_byte_change_to_a_signature_file_verifies() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let genuine = sig("s", &ci, LOCK);
        for at in 0..genuine.armored.len() {
            let old = genuine.armored[at];
            for new in [b'\r', b'\n', b' ', b'\t', b'=', old ^ 0x01, old ^ 0x20] {
                if new == old {
                    continue;
                }
                let mut armored = genuine.armored.clone();
                armored[at] = new;
                let file = SignatureFile {
                    name: "s".into(),
                    armored,
                };
                assert!(
                    verify(LOCK, &[file], &trust, now(), 1).is_err(),
                    "byte {at} {old:#04x} -> {new:#04x} verified"
                );
            }
        }
    }

    #[test]
    fn approvals_stand_for_recorded_signers_whose_keys_are_still_listed() {
        let (alice, bob, carol, dave) = (key("a"), key("b"), key("c"), key("d"));
        let recorded = |k: &SigningKey, principal: &str| (k.fingerprint(), vec![principal.into()]);
        let signers = [
            recorded(&alice, "alice@example.com"),
            recorded(&bob, "bob@example.com"),
            recorded(&carol, "alice@example.com"),
            recorded(&dave, "dave@example.com"),
        ];
        // The most approvals that still stand.
        let count = |signers: &[(String, Vec<String>)], trust: &AllowedSigners| {
            (0..=signers.len())
                .rev()
                .find(|&n| {
                    approvals_stand(
                        signers.iter().map(|(k, p)| (k.as_str(), p.as_slice())),
                        trust,
                        n,
                    )
                })
                .unwrap()
        };
        let trust = trust(&[
            line("alice@example.com", "", &alice),
            // Retired: no new approvals, but what it approved stands.
            line("bob@example.com", "valid-before=\"20200101\"", &bob),
            // Same person as alice: counts once with her.
            line("alice@example.com", "", &carol),
            // Listed, but not for lockstep.
            line("dave@example.com", "namespaces=\"git\"", &dave),
        ]);
        assert_eq!(count(&signers, &trust), 2);
        assert_eq!(count(&signers[2..], &trust), 1);
        assert_eq!(count(&signers[3..], &trust), 0);
        assert_eq!(count(&[("SHA256:gone".into(), vec![])], &trust), 0);
    }

    /// A signer whose principals bridge two others does not undo their approvals.
    #[test]
    fn a_bridging_signer_does_not_undo_approvals() {
        let (a, b, k) = (key("a"), key("b"), key("k"));
        let trust = trust(&[
            line("alice", "", &a),
            line("bob", "", &b),
            line("alice,bob", "", &k),
        ]);
        let p = |s: &str| vec![s.to_owned()];
        let signers = [
            (a.fingerprint(), p("alice")),
            (b.fingerprint(), p("bob")),
            (k.fingerprint(), vec!["alice".to_owned(), "bob".to_owned()]),
        ];
        let iter = || signers.iter().map(|(f, p)| (f.as_str(), p.as_slice()));
        assert!(approvals_stand(iter(), &trust, 2));
        assert!(!approvals_stand(iter(), &trust, 3));
    }

    /// Regression (review): counting with the principals of every line listing a key — an
    /// expired line naming another person included — merged two approvals that verify had
    /// counted apart, so a record released itself with the trust file unchanged.
    #[test]
    fn the_approvals_of_a_verified_lockfile_stand_as_verified() {
        let (a, b) = (key("a"), key("b"));
        let trust = trust(&[
            line("bob", "valid-before=\"20200101\"", &a),
            line("alice", "", &a),
            line("bob", "", &b),
        ]);
        let files = [sig("a", &a, LOCK), sig("b", &b, LOCK)];
        let verified = verify(LOCK, &files, &trust, now(), 2).unwrap();
        assert_eq!(verified.approvals(), 2);
        let recorded = || {
            verified
                .signers()
                .iter()
                .map(|s| (s.fingerprint.as_str(), s.principals.as_slice()))
        };
        assert!(approvals_stand(recorded(), &trust, 2));
        assert!(!approvals_stand(recorded(), &trust, 3));
    }

    #[test]
    fn changed_bytes_are_a_bad_signature() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let tampered = b"version = 1\ngeneration = 8\n";
        let problem = only_problem(verify(tampered, &[sig("s", &ci, LOCK)], &trust, now(), 1));
        assert_eq!(
            problem,
            SignatureProblem::BadSignature {
                fingerprint: ci.fingerprint()
            }
        );
    }

    #[test]
    fn an_unlisted_key_is_untrusted() {
        let ci = key("ci");
        let stranger = key("stranger");
        let trust = trust(&[line("ci", "", &ci)]);
        let problem = only_problem(verify(LOCK, &[sig("s", &stranger, LOCK)], &trust, now(), 1));
        assert_eq!(
            problem,
            SignatureProblem::UntrustedKey {
                fingerprint: stranger.fingerprint()
            }
        );
    }

    #[test]
    fn another_namespace_is_refused() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let git = SignatureFile {
            name: "s".into(),
            armored: ci.sign_with("git", HashAlg::Sha512, LOCK).into_bytes(),
        };
        let problem = only_problem(verify(LOCK, &[git], &trust, now(), 1));
        assert_eq!(
            problem,
            SignatureProblem::WrongNamespace {
                fingerprint: ci.fingerprint(),
                namespace: "git".into()
            }
        );
        // The namespace is compared exactly, not as a pattern or case-insensitively.
        let upper = SignatureFile {
            name: "s".into(),
            armored: ci.sign_with("Lockstep", HashAlg::Sha512, LOCK).into_bytes(),
        };
        assert!(matches!(
            only_problem(verify(LOCK, &[upper], &trust, now(), 1)),
            SignatureProblem::WrongNamespace { .. }
        ));
    }

    #[test]
    fn a_signature_checked_out_with_crlf_still_verifies() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let armored = ci.sign(LOCK).unwrap().replace('\n', "\r\n");
        let file = SignatureFile {
            name: "s".into(),
            armored: armored.into_bytes(),
        };
        assert!(verify(LOCK, &[file], &trust, now(), 1).is_ok());
    }

    #[test]
    fn sha256_signatures_are_accepted() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let file = SignatureFile {
            name: "s".into(),
            armored: ci.sign_with(NAMESPACE, HashAlg::Sha256, LOCK).into_bytes(),
        };
        assert!(verify(LOCK, &[file], &trust, now(), 1).is_ok());
    }

    #[test]
    fn a_line_must_allow_the_lockstep_namespace() {
        let ci = key("ci");
        let trust = trust(&[
            "# git only".to_owned(),
            line("ci", "namespaces=\"git\"", &ci),
            line("ci", "namespaces=\"*,!lockstep\"", &ci),
        ]);
        let problem = only_problem(verify(LOCK, &[sig("s", &ci, LOCK)], &trust, now(), 1));
        assert_eq!(
            problem,
            SignatureProblem::NamespaceNotAllowed {
                fingerprint: ci.fingerprint(),
                lines: vec![2, 3]
            }
        );
        assert!(problem.to_string().contains("(line 2, 3)"), "{problem}");
    }

    #[test]
    fn validity_windows_are_honoured_at_the_given_time() {
        let ci = key("ci");
        let trust = trust(&[line(
            "ci",
            "valid-after=\"20250101\",valid-before=\"20251231235959Z\"",
            &ci,
        )]);
        let files = [sig("s", &ci, LOCK)];
        assert!(verify(LOCK, &files, &trust, at("2025-01-01T00:00:00Z"), 1).is_ok());
        assert!(verify(LOCK, &files, &trust, at("2025-12-31T23:59:59Z"), 1).is_ok());
        let problem = only_problem(verify(LOCK, &files, &trust, at("2026-01-01T00:00:00Z"), 1));
        let expected = SignatureProblem::OutsideValidity {
            fingerprint: ci.fingerprint(),
            at: at("2026-01-01T00:00:00Z"),
            windows: vec![ValidityWindow {
                line: 1,
                valid_after: Some(at("2025-01-01T00:00:00Z")),
                valid_before: Some(at("2025-12-31T23:59:59Z")),
            }],
        };
        assert_eq!(problem, expected);
        assert_eq!(
            problem.to_string(),
            format!(
                "made by {}, which is not valid at 2026-01-01T00:00:00Z: \
                 line 1 allows 2025-01-01T00:00:00Z to 2025-12-31T23:59:59Z",
                ci.fingerprint()
            )
        );
        assert!(matches!(
            only_problem(verify(LOCK, &files, &trust, at("2024-12-31T23:59:59Z"), 1)),
            SignatureProblem::OutsideValidity { .. }
        ));
    }

    #[test]
    fn principals_come_from_the_lines_that_admit_the_key() {
        let ci = key("ci");
        let trust = trust(&[
            line("old-ci", "valid-before=\"20200101\"", &ci),
            line("git-ci", "namespaces=\"git\"", &ci),
            line("ci,release", "namespaces=\"lockstep\"", &ci),
            line("ci,deploy", "", &ci),
        ]);
        let verified = verify(LOCK, &[sig("s", &ci, LOCK)], &trust, now(), 1).unwrap();
        assert_eq!(
            verified.signers()[0].principals,
            ["ci", "release", "deploy"]
        );
        assert_eq!(verified.signers()[0].lines, [3, 4]);
        assert_eq!(verified.principals(), ["ci", "deploy", "release"]);
    }

    #[test]
    fn threshold_counts_distinct_principals_not_files() {
        let (alice, bob, carol) = (key("alice"), key("bob"), key("carol"));
        let alice2 = key("alice-laptop");
        let trust = trust(&[
            line("alice@x", "", &alice),
            line("alice@x", "", &alice2),
            line("bob@x", "", &bob),
            line("carol@x", "", &carol),
        ]);
        let files = |keys: &[&SigningKey]| -> Vec<SignatureFile> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| sig(&format!("lockstep.lock.{i}.sig"), k, LOCK))
                .collect()
        };
        let approvals = |keys: &[&SigningKey], threshold| match verify(
            LOCK,
            &files(keys),
            &trust,
            now(),
            threshold,
        ) {
            Ok(v) => Ok(v.approvals()),
            Err(VerifyError::ThresholdNotMet { approvals, .. }) => Err(approvals),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(approvals(&[&alice, &bob], 2), Ok(2));
        assert_eq!(approvals(&[&alice, &bob, &carol], 3), Ok(3));
        // One person with two keys is one approval.
        assert_eq!(approvals(&[&alice, &alice2], 2), Err(1));
        // The same key in two files is one approval.
        assert_eq!(approvals(&[&bob, &bob], 2), Err(1));
        assert_eq!(approvals(&[&alice, &alice2, &bob], 2), Ok(2));
        assert_eq!(approvals(&[&alice, &alice2, &bob], 3), Err(2));
    }

    #[test]
    fn shared_principals_merge_transitively() {
        let (a, b, c, d) = (key("a"), key("b"), key("c"), key("d"));
        let trust = trust(&[
            line("p1", "", &a),
            line("p1,p2", "", &b),
            line("p2", "", &c),
            line("p3", "", &d),
        ]);
        let files: Vec<_> = [&a, &c, &d, &b].iter().map(|k| sig("s", k, LOCK)).collect();
        let verified = verify(LOCK, &files, &trust, now(), 2).unwrap();
        assert_eq!(verified.approvals(), 2);
        assert!(matches!(
            verify(LOCK, &files, &trust, now(), 3),
            Err(VerifyError::ThresholdNotMet {
                approvals: 2,
                threshold: 3,
                ..
            })
        ));
    }

    #[test]
    fn failed_files_do_not_veto_a_met_threshold_but_are_reported() {
        let (alice, stranger) = (key("alice"), key("stranger"));
        let trust = trust(&[line("alice", "", &alice)]);
        let files = [
            sig("lockstep.lock.alice.sig", &alice, LOCK),
            sig("lockstep.lock.stranger.sig", &stranger, LOCK),
            SignatureFile {
                name: "lockstep.lock.junk.sig".into(),
                armored: b"junk".to_vec(),
            },
        ];
        let verified = verify(LOCK, &files, &trust, now(), 1).unwrap();
        assert_eq!(verified.signers().len(), 1);
        let rejected: Vec<&str> = verified
            .rejected()
            .iter()
            .map(|r| r.file.as_str())
            .collect();
        assert_eq!(
            rejected,
            ["lockstep.lock.stranger.sig", "lockstep.lock.junk.sig"]
        );
        assert!(matches!(
            verified.rejected()[1].problem,
            SignatureProblem::NotArmored(_)
        ));
    }

    #[test]
    fn the_error_names_every_file_and_why() {
        let (alice, bob) = (key("alice"), key("bob"));
        let trust = trust(&[
            line("alice", "", &alice),
            line("bob", "valid-before=\"20200101\"", &bob),
        ]);
        let files = [
            sig("lockstep.lock.alice.sig", &alice, LOCK),
            sig("lockstep.lock.bob.sig", &bob, LOCK),
            SignatureFile {
                name: "lockstep.lock.ecdsa.sig".into(),
                armored: ECDSA_SIG.into(),
            },
        ];
        let err = verify(LOCK, &files, &trust, now(), 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "lockstep.lock has 1 distinct trusted approval but 2 are required\n  \
                 lockstep.lock.alice.sig: valid, by alice ({alice})\n  \
                 lockstep.lock.bob.sig: made by {bob}, which is not valid at 2025-06-01T00:00:00Z: \
                 line 2 allows until 2020-01-01T00:00:00Z\n  \
                 lockstep.lock.ecdsa.sig: made with a key of type ecdsa-sha2-nistp256 ({ECDSA_FINGERPRINT}); \
                 lockstep accepts ed25519 signatures only",
                alice = alice.fingerprint(),
                bob = bob.fingerprint(),
            )
        );
    }

    #[test]
    fn verified_debug_does_not_dump_the_bytes() {
        let ci = key("ci");
        let trust = trust(&[line("ci", "", &ci)]);
        let verified = verify(LOCK, &[sig("s", &ci, LOCK)], &trust, now(), 1).unwrap();
        let debug = format!("{verified:?}");
        assert!(
            debug.contains(&format!("<{} bytes>", LOCK.len())),
            "{debug}"
        );
        assert!(!debug.contains("generation"));
    }
}

//! Image provenance: which signatures each pinned digest must carry, and checking one.
//!
//! A `[[provenance]]` rule of `lockstep.toml` names image patterns and the cosign public keys
//! (ECDSA P-256 or Ed25519, PEM `PUBLIC KEY` as `cosign generate-key-pair` writes them) one of
//! which must have signed each matching image's digest. A signature is cosign's: a
//! simple-signing payload (JSON naming the repository and the manifest digest) and a
//! signature over those exact bytes, or a Sigstore bundle's DSSE statement of the digest
//! ([`bundle`], cosign v3). [`check_signature`] verifies the signature **before** the payload
//! is parsed, then requires the payload to bind this digest (and, for simple-signing, this
//! repository). A rule may also require attestations ([`attestation`]).
//!
//! `lock` keeps, per image, the records that satisfied its rule ([`SignatureRecord`]: the
//! signature manifest's digest, the key's fingerprint, the payload and the signature), in the
//! signed lockfile; `verify` re-checks each record offline against the rule's keys
//! ([`check_policy`]), so the guarantee travels with the commit. Pure: the registry edge
//! fetches the candidates.

use std::collections::BTreeMap;

use base64ct::{Base64, Encoding as _};
use sha2::{Digest as _, Sha256};

use crate::model::{Digest, ImageRef};

pub mod attestation;
pub mod bundle;
pub mod certificate;
pub use attestation::AttestationRecord;
pub use certificate::CertificatePolicy;

/// Largest simple-signing payload accepted (cosign's are a few hundred bytes).
pub const MAX_PAYLOAD_BYTES: usize = 64 << 10;
/// Most signature records kept per image.
pub const MAX_RECORDS: usize = 8;
/// Largest public key file read.
pub const MAX_KEY_BYTES: usize = 16 << 10;

/// cosign's tag for the signatures of `digest` in the image's repository: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", digest.as_str().replacen(':', "-", 1))
}

/// A cosign public key, with the fingerprint records name it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CosignKey {
    /// `sha256:` of the key's DER `SubjectPublicKeyInfo`.
    pub fingerprint: String,
    key: PublicKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Why a key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct KeyError {
    pub file: String,
    pub reason: String,
}

impl CosignKey {
    /// Parse a PEM `PUBLIC KEY` (PKIX): ECDSA P-256 (or P-384) or Ed25519.
    pub fn from_pem(file: &str, bytes: &[u8]) -> Result<CosignKey, KeyError> {
        let bad = |reason: String| KeyError {
            file: file.to_owned(),
            reason,
        };
        if bytes.len() > MAX_KEY_BYTES {
            return Err(bad(format!("over {MAX_KEY_BYTES} bytes: not a public key")));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 PEM".into()))?;
        let der = pem_body(text).ok_or_else(|| {
            bad("not a PEM PUBLIC KEY of ECDSA P-256 or Ed25519 (as `cosign generate-key-pair` writes cosign.pub): no PEM PUBLIC KEY block".into())
        })?;
        CosignKey::from_spki_der(file, &der)
    }

    /// A DER `SubjectPublicKeyInfo`: ECDSA P-256, P-384 or Ed25519.
    pub fn from_spki_der(file: &str, der: &[u8]) -> Result<CosignKey, KeyError> {
        use p256::pkcs8::DecodePublicKey as _;
        let key = if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            PublicKey::P256(k)
        } else if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            PublicKey::P384(k)
        } else if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            PublicKey::Ed25519(k)
        } else {
            return Err(KeyError {
                file: file.to_owned(),
                reason: "not a PEM PUBLIC KEY of ECDSA P-256 or Ed25519 (as `cosign generate-key-pair` writes cosign.pub); RSA keys are not supported".into(),
            });
        };
        Ok(CosignKey {
            fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(der))),
            key,
        })
    }

    /// Every PEM `PUBLIC KEY` block of `bytes` (at least one).
    pub fn all_from_pem(file: &str, bytes: &[u8]) -> Result<Vec<CosignKey>, KeyError> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        let bad = |reason: String| KeyError {
            file: file.to_owned(),
            reason,
        };
        if bytes.len() > MAX_KEY_BYTES * 16 {
            return Err(bad(format!("over {} bytes", MAX_KEY_BYTES * 16)));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 PEM".into()))?;
        let keys = text
            .match_indices(BEGIN)
            .map(|(at, _)| {
                let end = text[at..]
                    .find("-----END PUBLIC KEY-----")
                    .map_or(text.len(), |e| at + e + "-----END PUBLIC KEY-----".len());
                CosignKey::from_pem(file, &text.as_bytes()[at..end])
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(bad("no PEM PUBLIC KEY block".into()));
        }
        Ok(keys)
    }

    /// Whether `signature` is this key's over exactly `payload` (ECDSA: SHA-256, DER or fixed
    /// 64-byte signature; Ed25519: the payload itself).
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match &self.key {
            PublicKey::P256(key) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
                sig.is_ok_and(|sig| key.verify(payload, &sig).is_ok())
            }
            PublicKey::P384(key) => {
                let sig = p384::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p384::ecdsa::Signature::from_slice(signature));
                sig.is_ok_and(|sig| key.verify(payload, &sig).is_ok())
            }
            PublicKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(payload, &sig).is_ok()),
        }
    }
}

/// Standard base64 (padded).
pub fn encode_base64(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

/// Standard base64 (padded), surrounding whitespace ignored: how cosign writes signatures.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    Base64::decode_vec(text.trim()).ok()
}

/// The DER bytes of the first PEM `PUBLIC KEY` block.
fn pem_body(text: &str) -> Option<Vec<u8>> {
    let start = text.find("-----BEGIN PUBLIC KEY-----")? + "-----BEGIN PUBLIC KEY-----".len();
    let end = start + text[start..].find("-----END PUBLIC KEY-----")?;
    let b64: String = text[start..end].split_whitespace().collect();
    Base64::decode_vec(&b64).ok()
}

/// The registry host as rules compare it: lower case, without the default HTTPS port, and
/// Docker Hub's other names read as `docker.io` — every spelling a runtime pulls from the
/// same place is one name, so no spelling escapes a rule.
pub fn canonical_registry(registry: &str) -> String {
    let lower = registry.to_ascii_lowercase();
    let host = lower.strip_suffix(":443").unwrap_or(&lower);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            crate::model::DOCKER_HUB.to_owned()
        }
        other => other.to_owned(),
    }
}

/// `registry/repository` with the registry canonical ([`canonical_registry`]).
pub fn canonical_name(image: &ImageRef) -> String {
    format!(
        "{}/{}",
        canonical_registry(image.registry()),
        image.repository()
    )
}

/// An image name pattern: `registry/repository` with `*` for any run of characters within one
/// path component and `**` for any run of characters, across components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePattern(String);

impl ImagePattern {
    /// Parse a pattern; it must name a registry (its first component) like a reference does.
    pub fn parse(text: &str) -> Result<ImagePattern, String> {
        if text.is_empty() || text.len() > 512 || text.chars().any(|c| c.is_whitespace()) {
            return Err(format!(
                "image pattern {text:?} must be a non-empty name without spaces"
            ));
        }
        if text.contains('@') || text.split('/').skip(1).any(|c| c.contains(':')) {
            return Err(format!(
                "image pattern {text:?} names a tag or digest: patterns match names (registry/repository)"
            ));
        }
        let Some((registry, path)) = text.split_once('/') else {
            return Err(format!(
                "image pattern {text:?} names no registry: write the full name, e.g. docker.io/library/{text} or registry.example.com/team/*"
            ));
        };
        let looks_like_registry = registry.contains(['.', ':', '*']) || registry == "localhost";
        if !looks_like_registry || path.is_empty() {
            return Err(format!(
                "image pattern {text:?} does not start with a registry host: write the full name as images are normalized, e.g. docker.io/{text} or registry.example.com/{path}"
            ));
        }
        let registry = canonical_registry(registry);
        if registry == crate::model::DOCKER_HUB && !path.contains('/') && !path.contains("**") {
            return Err(format!(
                "image pattern {text:?} can never match: Docker Hub names have a namespace (docker.io/library/{path})"
            ));
        }
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "image pattern {text:?} can never match: repository names are lower case"
            ));
        }
        Ok(ImagePattern(format!("{registry}/{path}")))
    }

    /// Whether the normalized name `registry/repository` matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `*` (not across `/`) and `**` (across) glob matching.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    // Memoized over (pattern index, name index): O(|pattern| * |name|) worst case, bounded
    // by the 512-byte pattern and 255-byte name limits.
    let mut memo = vec![None; (pattern.len() + 1) * (name.len() + 1)];
    fn go(p: &[u8], n: &[u8], i: usize, j: usize, memo: &mut [Option<bool>]) -> bool {
        let key = i * (n.len() + 1) + j;
        if let Some(v) = memo[key] {
            return v;
        }
        let v = if i == p.len() {
            j == n.len()
        } else if p[i] == b'*' {
            let double = p.get(i + 1) == Some(&b'*');
            let next = if double { i + 2 } else { i + 1 };
            // Zero characters, or one more (not a '/' for a single star).
            go(p, n, next, j, memo)
                || (j < n.len() && (double || n[j] != b'/') && go(p, n, i, j + 1, memo))
        } else {
            j < n.len() && p[i] == n[j] && go(p, n, i + 1, j + 1, memo)
        };
        memo[key] = Some(v);
        v
    }
    go(pattern, name, 0, 0, &mut memo)
}

/// One `[[provenance]]` rule, its keys loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenanceRule {
    /// Where it is declared (`lockstep.toml:12`), for messages.
    pub at: String,
    pub images: Vec<ImagePattern>,
    pub keys: Vec<CosignKey>,
    /// The key files as written, for messages.
    pub key_files: Vec<String>,
    /// `cosign-certificate`: signatures made with a certificate chaining to these roots and
    /// naming this identity also satisfy the rule.
    pub certificate: Option<CertificatePolicy>,
    /// `attestations`: the in-toto predicate types each governed digest must also carry an
    /// attestation of, signed like its signature (by a key or certificate of the rule).
    pub attestations: Vec<String>,
}

impl ProvenanceRule {
    /// What the rule accepts, for messages: `cosign.pub or a certificate for ci@… from ca.pem`.
    pub fn accepts(&self) -> String {
        let mut parts = self.key_files.clone();
        if let Some(c) = &self.certificate {
            parts.push(format!(
                "a certificate for {} from {}",
                c.identity,
                c.root_files.join(", ")
            ));
        }
        parts.join(" or ")
    }
}

/// The provenance policy of a directory: its rules, in file order. An image is governed by
/// the first rule whose patterns match its name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<ProvenanceRule>,
}

impl Policy {
    /// The rule governing `image`, if any (its name compared with the registry canonical).
    pub fn rule_for(&self, image: &ImageRef) -> Option<&ProvenanceRule> {
        let name = canonical_name(image);
        self.rules
            .iter()
            .find(|r| r.images.iter().any(|p| p.matches(&name)))
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// How a signature lays out what it signs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignatureFormat {
    /// cosign's simple-signing payload, signed as is: the `sha256-<hex>.sig` tag, and
    /// cosign's OCI 1.1 `sig` referrers (`--registry-referrers-mode=oci-1-1`).
    #[default]
    SimpleSigning,
    /// A Sigstore bundle's DSSE envelope of an in-toto statement, signed over DSSE's
    /// pre-authentication encoding (cosign v3's default, stored as a referrer).
    Dsse,
}

impl SignatureFormat {
    /// The lockfile's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureFormat::SimpleSigning => "simple-signing",
            SignatureFormat::Dsse => "dsse",
        }
    }
}

/// A signature found for an image's digest, as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The signature manifest's digest (`sha256-<hex>.sig`'s manifest, or a referrer).
    pub manifest: Digest,
    pub format: SignatureFormat,
    /// The simple-signing payload's exact bytes (the layer blob), or the DSSE envelope's
    /// payload (the in-toto statement's bytes).
    pub payload: Vec<u8>,
    /// The layer's `dev.cosignproject.cosign/signature` annotation, base64-decoded, or the
    /// envelope's signature.
    pub signature: Vec<u8>,
    /// The signing certificate (`dev.sigstore.cosign/certificate`), DER, when one is attached.
    pub certificate: Option<Vec<u8>>,
    /// Its chain (`dev.sigstore.cosign/chain`), DER, leaf's issuer first.
    pub chain: Vec<Vec<u8>>,
}

/// A signature that satisfied an image's rule: what the lockfile keeps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SignatureRecord {
    pub manifest: Digest,
    pub format: SignatureFormat,
    /// The fingerprint of the key that verified it (a certificate's: its public key's).
    pub key: String,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// When a certificate satisfied the rule: the leaf (DER), its chain, and the identity.
    pub certificate: Option<Vec<u8>>,
    pub chain: Vec<Vec<u8>>,
    pub identity: Option<String>,
}

impl SignatureRecord {
    pub fn payload_base64(&self) -> String {
        Base64::encode_string(&self.payload)
    }

    pub fn signature_base64(&self) -> String {
        Base64::encode_string(&self.signature)
    }

    /// From the lockfile's base64 fields.
    pub fn from_base64(
        manifest: Digest,
        key: String,
        payload: &str,
        signature: &str,
    ) -> Result<SignatureRecord, String> {
        let payload =
            Base64::decode_vec(payload).map_err(|_| "payload is not base64".to_owned())?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(format!("payload is over {MAX_PAYLOAD_BYTES} bytes"));
        }
        let signature =
            Base64::decode_vec(signature).map_err(|_| "signature is not base64".to_owned())?;
        if signature.len() > 1024 {
            return Err("signature is over 1024 bytes".to_owned());
        }
        Ok(SignatureRecord {
            manifest,
            format: SignatureFormat::SimpleSigning,
            key,
            payload,
            signature,
            certificate: None,
            chain: Vec::new(),
            identity: None,
        })
    }

    /// The record as a candidate again, for the offline re-check.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            manifest: self.manifest.clone(),
            format: self.format,
            payload: self.payload.clone(),
            signature: self.signature.clone(),
            certificate: self.certificate.clone(),
            chain: self.chain.clone(),
        }
    }
}

/// Why one candidate signature does not satisfy a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CandidateProblem {
    #[error("its signature does not verify under any key of the rule ({keys})")]
    NoKeyVerifies { keys: String },
    #[error("its payload is over {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge,
    #[error("its payload is not a cosign simple-signing payload: {0}")]
    NotSimpleSigning(String),
    #[error("its statement is not cosign's signature of an image: {0}")]
    NotCosignStatement(String),
    #[error("it signs another digest ({signed})")]
    OtherDigest { signed: String },
    #[error("it signs another repository ({signed})")]
    OtherRepository { signed: String },
    #[error("its certificate is not accepted: {0}")]
    Certificate(String),
    #[error("its signature does not verify under its own certificate's key")]
    CertificateKeyDoesNotVerify,
    #[error("it carries no certificate, and the rule accepts only certificates")]
    NoCertificate,
}

/// Check one candidate for `image` pinned at `digest` against `rule`: the signature over the
/// exact payload bytes verifies under one of the rule's keys (checked first: nothing an
/// attacker wrote is parsed before), then the payload is a cosign container image signature
/// of this digest and this repository.
pub fn check_signature(
    image: &ImageRef,
    digest: &Digest,
    candidate: &Candidate,
    rule: &ProvenanceRule,
    at: jiff::Timestamp,
) -> Result<SignatureRecord, CandidateProblem> {
    if candidate.payload.len() > MAX_PAYLOAD_BYTES {
        return Err(CandidateProblem::TooLarge);
    }
    let signed = match candidate.format {
        SignatureFormat::SimpleSigning => std::borrow::Cow::Borrowed(&candidate.payload[..]),
        SignatureFormat::Dsse => std::borrow::Cow::Owned(bundle::pae(
            bundle::IN_TOTO_PAYLOAD_TYPE,
            &candidate.payload,
        )),
    };
    let (key, certified) = verify_by_rule(&signed, candidate, rule, at)?;
    match candidate.format {
        SignatureFormat::SimpleSigning => check_payload(image, digest, &candidate.payload)?,
        SignatureFormat::Dsse => bundle::check_statement(digest, &candidate.payload)?,
    }
    Ok(SignatureRecord {
        manifest: candidate.manifest.clone(),
        format: candidate.format,
        key: key.fingerprint.clone(),
        payload: candidate.payload.clone(),
        signature: candidate.signature.clone(),
        certificate: certified.as_ref().and(candidate.certificate.clone()),
        identity: certified.as_ref().map(|(identity, _)| identity.clone()),
        chain: certified.map(|(_, path)| path).unwrap_or_default(),
    })
}

/// The key that verified a signature, and, when a certificate did, the identity it named and
/// its path (the intermediates, DER).
type VerifiedBy = (CosignKey, Option<(String, Vec<Vec<u8>>)>);

/// The key of `rule` that verified `signed` (the exact bytes the candidate's signature is
/// over), or the key of the candidate's certificate when the rule's certificate policy
/// accepts it, with the identity and the certificate path that did.
fn verify_by_rule(
    signed: &[u8],
    candidate: &Candidate,
    rule: &ProvenanceRule,
    at: jiff::Timestamp,
) -> Result<VerifiedBy, CandidateProblem> {
    let by_key = rule
        .keys
        .iter()
        .find(|k| k.verifies(signed, &candidate.signature));
    let (key, certified) = match (by_key, &candidate.certificate, &rule.certificate) {
        (Some(key), _, _) => (key.clone(), None),
        (None, Some(leaf), Some(policy)) => {
            // The certificate's key must verify the signature before anything else counts.
            let verified = certificate::verify_leaf(leaf, &candidate.chain, policy, at)
                .map_err(CandidateProblem::Certificate)?;
            if !verified.key.verifies(signed, &candidate.signature) {
                return Err(CandidateProblem::CertificateKeyDoesNotVerify);
            }
            (verified.key, Some((policy.identity.clone(), verified.path)))
        }
        (None, None, Some(_)) if rule.keys.is_empty() => {
            return Err(CandidateProblem::NoCertificate);
        }
        (None, _, _) => {
            return Err(CandidateProblem::NoKeyVerifies {
                keys: rule.accepts(),
            });
        }
    };
    Ok((key, certified))
}

/// The simple-signing payload names `digest` and `image`'s repository.
fn check_payload(
    image: &ImageRef,
    digest: &Digest,
    payload: &[u8],
) -> Result<(), CandidateProblem> {
    let bad = |why: &str| CandidateProblem::NotSimpleSigning(why.to_owned());
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| bad(&e.to_string()))?;
    let critical = value.get("critical").ok_or_else(|| bad("no `critical`"))?;
    let kind = critical.get("type").and_then(|t| t.as_str());
    if kind != Some("cosign container image signature") {
        return Err(bad(
            "`critical.type` is not \"cosign container image signature\"",
        ));
    }
    let signed = critical
        .pointer("/image/docker-manifest-digest")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("no `critical.image.docker-manifest-digest`"))?;
    if signed != digest.as_str() {
        return Err(CandidateProblem::OtherDigest {
            signed: signed.to_owned(),
        });
    }
    let reference = critical
        .pointer("/identity/docker-reference")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("no `critical.identity.docker-reference`"))?;
    if !same_repository(reference, image) {
        return Err(CandidateProblem::OtherRepository {
            signed: reference.to_owned(),
        });
    }
    Ok(())
}

/// Whether cosign's `docker-reference` (`registry/repository`, Docker Hub as `index.docker.io`)
/// names `image`'s repository.
fn same_repository(reference: &str, image: &ImageRef) -> bool {
    let normalized = reference
        .strip_prefix("index.docker.io/")
        .map_or_else(|| reference.to_owned(), |rest| format!("docker.io/{rest}"));
    ImageRef::parse(&normalized)
        .is_ok_and(|r| r.registry() == image.registry() && r.repository() == image.repository())
}

/// Why a lockfile's records do not satisfy the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyProblem {
    #[error(
        "{reference}: the provenance rule at {rule} requires a signature by {keys}, and the lockfile records none"
    )]
    Unsigned {
        reference: String,
        rule: String,
        keys: String,
    },
    #[error(
        "{reference}: the recorded signature {manifest} does not verify under the rule at {rule}: {problem}"
    )]
    Invalid {
        reference: String,
        rule: String,
        manifest: String,
        problem: CandidateProblem,
    },
    #[error(
        "{reference}: the provenance rule at {rule} requires attestations of {missing}, signed by {keys}, and the lockfile records none"
    )]
    Unattested {
        reference: String,
        rule: String,
        missing: String,
        keys: String,
    },
}

/// One image as the lockfile records it, for [`check_policy`].
pub struct RecordedImage<'a> {
    pub reference: &'a str,
    pub image: &'a ImageRef,
    pub digest: &'a Digest,
    pub signatures: &'a [SignatureRecord],
    pub attestations: &'a [AttestationRecord],
}

/// Offline: every image a rule governs records at least one signature, and every record of a
/// governed image verifies under its rule (a certificate judged at `at`, the time it was
/// locked) and binds its digest and repository.
pub fn check_policy<'a>(
    policy: &Policy,
    images: impl IntoIterator<Item = RecordedImage<'a>>,
    at: jiff::Timestamp,
) -> Vec<PolicyProblem> {
    let mut problems = Vec::new();
    for entry in images {
        let Some(rule) = policy.rule_for(entry.image) else {
            continue;
        };
        if entry.signatures.is_empty() {
            problems.push(PolicyProblem::Unsigned {
                reference: entry.reference.to_owned(),
                rule: rule.at.clone(),
                keys: rule.accepts(),
            });
        }
        let unattested = attestation::missing(rule, entry.attestations, at);
        if !unattested.is_empty() {
            problems.push(PolicyProblem::Unattested {
                reference: entry.reference.to_owned(),
                rule: rule.at.clone(),
                missing: unattested.join(", "),
                keys: rule.accepts(),
            });
        }
        for record in entry.signatures {
            // Checked the way it was accepted, with the key it names: a key record by that
            // key of the rule (one check per record), a certificate record by the rule's
            // certificate policy, its leaf's key being the one named.
            let narrowed = ProvenanceRule {
                keys: match record.certificate {
                    Some(_) => Vec::new(),
                    None => rule
                        .keys
                        .iter()
                        .filter(|k| k.fingerprint == record.key)
                        .cloned()
                        .collect(),
                },
                certificate: record.certificate.as_ref().and(rule.certificate.clone()),
                ..rule.clone()
            };
            let checked = check_signature(
                entry.image,
                entry.digest,
                &record.candidate(),
                &narrowed,
                at,
            )
            .and_then(|found| {
                if found.key == record.key {
                    Ok(())
                } else {
                    Err(CandidateProblem::NoKeyVerifies {
                        keys: format!("the recorded key {}", record.key),
                    })
                }
            });
            if let Err(problem) = checked {
                problems.push(PolicyProblem::Invalid {
                    reference: entry.reference.to_owned(),
                    rule: rule.at.clone(),
                    manifest: record.manifest.to_string(),
                    problem,
                });
            }
        }
    }
    problems
}

/// What `lock` decides for one governed image from the candidates the registry holds: the
/// records that satisfy its rule at `at` (at most [`MAX_RECORDS`], by manifest digest), or
/// every candidate's problem.
pub fn select(
    image: &ImageRef,
    digest: &Digest,
    rule: &ProvenanceRule,
    candidates: &[Candidate],
    at: jiff::Timestamp,
) -> Result<Vec<SignatureRecord>, Vec<(Digest, CandidateProblem)>> {
    let mut good = BTreeMap::new();
    let mut bad = Vec::new();
    for c in candidates {
        match check_signature(image, digest, c, rule, at) {
            Ok(record) => {
                good.entry(record.manifest.clone()).or_insert(record);
            }
            Err(problem) => bad.push((c.manifest.clone(), problem)),
        }
    }
    if good.is_empty() {
        return Err(bad);
    }
    Ok(good.into_values().take(MAX_RECORDS).collect())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const HOST: &str = "registry.example.com";

    pub(super) fn at() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn payload(repository: &str, digest: &Digest) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"{repository}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    pub(super) type Sign = Box<dyn Fn(&[u8]) -> Vec<u8>>;

    /// An ECDSA P-256 and an Ed25519 key (fixed), as PEM public keys and signing functions.
    pub(super) fn keys() -> Vec<(CosignKey, Sign)> {
        use p256::ecdsa::signature::Signer as _;
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        let ecdsa = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let ecdsa_pem = ecdsa
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let ed = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let ed_pem = ed
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        vec![
            (
                CosignKey::from_pem("ecdsa.pub", ecdsa_pem.as_bytes()).unwrap(),
                Box::new(move |m: &[u8]| {
                    let sig: p256::ecdsa::Signature = ecdsa.sign(m);
                    sig.to_der().as_bytes().to_vec()
                }),
            ),
            (
                CosignKey::from_pem("ed.pub", ed_pem.as_bytes()).unwrap(),
                Box::new(move |m: &[u8]| ed.sign(m).to_bytes().to_vec()),
            ),
        ]
    }

    pub(super) fn rule(keys: Vec<CosignKey>) -> ProvenanceRule {
        ProvenanceRule {
            at: "lockstep.toml:1".into(),
            images: vec![ImagePattern::parse(&format!("{HOST}/shop/*")).unwrap()],
            key_files: keys.iter().map(|k| k.fingerprint.clone()).collect(),
            keys,
            certificate: None,
            attestations: Vec::new(),
        }
    }

    #[test]
    fn patterns_match_names_with_single_and_double_stars() {
        let p = |t: &str| ImagePattern::parse(t).unwrap();
        assert!(p("r.io/shop/*").matches("r.io/shop/api"));
        assert!(!p("r.io/shop/*").matches("r.io/shop/team/api"));
        assert!(p("r.io/shop/**").matches("r.io/shop/team/api"));
        assert!(p("r.io/**/api").matches("r.io/a/b/api"));
        assert!(p("*.io/shop/api").matches("r.io/shop/api"));
        assert!(!p("r.io/shop/api").matches("r.io/shop/api2"));
        assert!(p("localhost:5000/x").matches("localhost:5000/x"));
        for bad in [
            "",
            "nginx",
            "r.io/shop/api:1",
            "r.io/x@sha256:00",
            "r.io/a b",
        ] {
            assert!(ImagePattern::parse(bad).is_err(), "{bad:?}");
        }
        // Bounded: a pathological pattern against a long name still answers at once.
        let long = format!("r.io/{}", "a/".repeat(120));
        assert!(!p(&format!("r.io/{}b", "**".repeat(100))).matches(&long));
    }

    #[test]
    fn a_signature_verifies_only_under_its_key_for_this_digest_and_repository() {
        let digest = Digest::of(b"image");
        let image = ImageRef::parse(&format!("{HOST}/shop/api:1@{digest}")).unwrap();
        let repository = format!("{HOST}/shop/api");
        for (key, sign) in keys() {
            let rule = rule(vec![key.clone()]);
            let good = payload(&repository, &digest);
            let candidate = |payload: Vec<u8>, signature: Vec<u8>| Candidate {
                manifest: Digest::of(b"sig manifest"),
                format: SignatureFormat::SimpleSigning,
                payload,
                signature,
                certificate: None,
                chain: Vec::new(),
            };
            let record = check_signature(
                &image,
                &digest,
                &candidate(good.clone(), sign(&good)),
                &rule,
                at(),
            )
            .unwrap();
            assert_eq!(record.key, key.fingerprint);
            // One flipped byte of the payload, or the signature of other bytes.
            let mut flipped = good.clone();
            flipped[10] ^= 1;
            assert!(matches!(
                check_signature(
                    &image,
                    &digest,
                    &candidate(flipped, sign(&good)),
                    &rule,
                    at()
                ),
                Err(CandidateProblem::NoKeyVerifies { .. })
            ));
            // Signed, but for another digest or another repository.
            let other = payload(&repository, &Digest::of(b"other"));
            assert!(matches!(
                check_signature(
                    &image,
                    &digest,
                    &candidate(other.clone(), sign(&other)),
                    &rule,
                    at()
                ),
                Err(CandidateProblem::OtherDigest { .. })
            ));
            let elsewhere = payload(&format!("{HOST}/shop/web"), &digest);
            assert!(matches!(
                check_signature(
                    &image,
                    &digest,
                    &candidate(elsewhere.clone(), sign(&elsewhere)),
                    &rule,
                    at()
                ),
                Err(CandidateProblem::OtherRepository { .. })
            ));
            // Signed garbage is not a payload.
            let junk = b"[1,2,3]".to_vec();
            assert!(matches!(
                check_signature(
                    &image,
                    &digest,
                    &candidate(junk.clone(), sign(&junk)),
                    &rule,
                    at()
                ),
                Err(CandidateProblem::NotSimpleSigning(_))
            ));
            // The recorded form round-trips and re-checks offline.
            let again = SignatureRecord::from_base64(
                record.manifest.clone(),
                record.key.clone(),
                &record.payload_base64(),
                &record.signature_base64(),
            )
            .unwrap();
            assert_eq!(again, record);
            let policy = Policy {
                rules: vec![rule.clone()],
            };
            let recorded = |signatures: &[SignatureRecord]| {
                check_policy(
                    &policy,
                    [RecordedImage {
                        reference: "api",
                        image: &image,
                        digest: &digest,
                        signatures,
                        attestations: &[],
                    }],
                    at(),
                )
            };
            assert!(recorded(std::slice::from_ref(&record)).is_empty());
            assert!(matches!(
                recorded(&[])[..],
                [PolicyProblem::Unsigned { .. }]
            ));
            // The same key over a DSSE statement (cosign v3's bundles): the signature is over
            // the PAE, never the bare statement; the statement binds the digest alone.
            let hex = digest.as_str().strip_prefix("sha256:").unwrap();
            let statement = format!(
                r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"{}","predicate":{{}}}}"#,
                bundle::COSIGN_SIGN_PREDICATE
            )
            .into_bytes();
            let dsse = |payload: Vec<u8>, signature: Vec<u8>| Candidate {
                format: SignatureFormat::Dsse,
                ..candidate(payload, signature)
            };
            let pae = bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &statement);
            let record = check_signature(
                &image,
                &digest,
                &dsse(statement.clone(), sign(&pae)),
                &rule,
                at(),
            )
            .unwrap();
            assert_eq!(record.format, SignatureFormat::Dsse);
            assert!(recorded(std::slice::from_ref(&record)).is_empty());
            assert!(matches!(
                check_signature(
                    &image,
                    &digest,
                    &dsse(statement.clone(), sign(&statement)),
                    &rule,
                    at()
                ),
                Err(CandidateProblem::NoKeyVerifies { .. })
            ));
            // A simple-signing record cannot be replayed as DSSE or the other way round.
            assert!(
                check_signature(
                    &image,
                    &digest,
                    &candidate(statement.clone(), sign(&pae)),
                    &rule,
                    at()
                )
                .is_err()
            );
            let elsewhere_image = ImageRef::parse(&format!("{HOST}/shop/web:1@{digest}")).unwrap();
            assert!(
                check_signature(
                    &elsewhere_image,
                    &digest,
                    &dsse(statement.clone(), sign(&pae)),
                    &rule,
                    at()
                )
                .is_ok(),
                "a statement names no repository: the digest alone is bound"
            );
        }
        // Docker Hub's name as cosign writes it.
        let hub = ImageRef::parse("nginx:1").unwrap();
        assert!(same_repository("index.docker.io/library/nginx", &hub));
        assert!(!same_repository("index.docker.io/library/redis", &hub));
    }

    #[test]
    fn key_files_that_are_not_p256_or_ed25519_public_keys_are_refused() {
        for junk in [
            &b"not pem"[..],
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            let err = CosignKey::from_pem("k.pub", junk).unwrap_err();
            assert!(
                err.to_string().starts_with("k.pub: not a PEM PUBLIC KEY"),
                "{err}"
            );
        }
        assert!(CosignKey::from_pem("k.pub", &vec![b'a'; MAX_KEY_BYTES + 1]).is_err());
    }
}

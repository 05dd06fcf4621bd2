//! Sigstore bundles (`application/vnd.dev.sigstore.bundle.v0.3+json`), the format cosign v3
//! signs container images in by default and stores as an OCI 1.1 referrer of the digest: a
//! DSSE envelope of an in-toto statement whose subject is the image digest and whose predicate
//! type is `https://sigstore.dev/cosign/sign/v1`, with the verification material (a key hint,
//! or the signing certificate) beside it.
//!
//! [`candidate`] takes only what an offline check uses out of a bundle — the envelope's payload
//! bytes, its signature and the certificates — and leaves the transparency-log entries and
//! timestamps alone (not verified: see the README). The signature is over DSSE's
//! pre-authentication encoding ([`pae`]) of the payload type and the payload, checked before
//! the statement is parsed.

use base64ct::{Base64, Encoding as _};

use super::{Candidate, MAX_PAYLOAD_BYTES, SignatureFormat};
use crate::model::Digest;

/// Largest bundle read (cosign's are a few KiB: a statement, a signature, a certificate and
/// a log entry).
pub const MAX_BUNDLE_BYTES: usize = 256 << 10;

/// The media types of the bundles read (v0.1 to v0.3, JSON).
pub fn is_bundle_media_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.dev.sigstore.bundle+json;version=0.1"
            | "application/vnd.dev.sigstore.bundle+json;version=0.2"
            | "application/vnd.dev.sigstore.bundle+json;version=0.3"
            | "application/vnd.dev.sigstore.bundle.v0.3+json"
    )
}

/// The only DSSE payload type a container signature may carry.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The predicate type of cosign's image signature statements.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// DSSE's pre-authentication encoding: what a DSSE signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    #[serde(default)]
    verification_material: Option<Material>,
    dsse_envelope: Option<Envelope>,
    message_signature: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    certificate: Option<RawBytes>,
    x509_certificate_chain: Option<Chain>,
}

#[derive(serde::Deserialize)]
struct Chain {
    #[serde(default)]
    certificates: Vec<RawBytes>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBytes {
    raw_bytes: String,
}

/// A DSSE envelope as JSON writes it (inside a bundle, or alone as cosign v2's attestation
/// layers).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Envelope {
    payload: String,
    payload_type: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSignature>,
}

#[derive(serde::Deserialize)]
pub(super) struct EnvelopeSignature {
    sig: String,
}

impl Envelope {
    /// Its payload (decoded, at most `max_payload` bytes) and first signature (at most 1024
    /// bytes), the payload type being in-toto's.
    pub(super) fn open(self, max_payload: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(format!(
                "the envelope's payload type is {:?}, not {IN_TOTO_PAYLOAD_TYPE:?}",
                self.payload_type
            ));
        }
        let payload = decode(&self.payload).ok_or("the envelope's payload is not base64")?;
        if payload.len() > max_payload {
            return Err(format!(
                "the envelope's payload is over {max_payload} bytes"
            ));
        }
        let signature = self
            .signatures
            .first()
            .filter(|s| s.sig.len() <= 2048)
            .and_then(|s| decode(&s.sig))
            .ok_or("the envelope has no base64 signature of at most 1024 bytes")?;
        Ok((payload, signature))
    }
}

/// The candidate signature in one bundle stored in signature manifest `manifest`: its DSSE
/// payload and signature, and its certificate (a v0.3 `certificate`, or an
/// `x509CertificateChain`'s leaf and the rest as its chain). Only the envelope's first
/// signature is read (cosign writes one). Nothing here is trusted; the caller checks it.
pub fn candidate(manifest: Digest, bytes: &[u8]) -> Result<Candidate, String> {
    candidate_within(manifest, bytes, MAX_BUNDLE_BYTES, MAX_PAYLOAD_BYTES)
}

/// [`candidate`] with other limits (an attestation's statement may be megabytes).
pub fn candidate_within(
    manifest: Digest,
    bytes: &[u8],
    max_bundle: usize,
    max_payload: usize,
) -> Result<Candidate, String> {
    if bytes.len() > max_bundle {
        return Err(format!("the bundle is over {max_bundle} bytes"));
    }
    let bundle: Bundle =
        serde_json::from_slice(bytes).map_err(|e| format!("not a Sigstore bundle: {e}"))?;
    let Some(envelope) = bundle.dsse_envelope else {
        return Err(match bundle.message_signature {
            Some(_) => "the bundle holds a message signature (`cosign sign-blob`), not a signed statement of an image".into(),
            None => "the bundle holds no DSSE envelope".into(),
        });
    };
    let (payload, signature) = envelope.open(max_payload)?;
    let mut certificates = Vec::new();
    if let Some(material) = bundle.verification_material {
        match (material.certificate, material.x509_certificate_chain) {
            (Some(_), Some(_)) => {
                return Err(
                    "the bundle holds both a certificate and a certificate chain (Sigstore's format allows one)".into(),
                );
            }
            (Some(leaf), None) => certificates.push(leaf),
            (None, Some(chain)) => certificates = chain.certificates,
            (None, None) => {}
        }
    }
    if certificates.len() > super::certificate::MAX_CHAIN + 1 {
        return Err("the bundle's certificate chain is too long".into());
    }
    let mut ders = Vec::with_capacity(certificates.len());
    for c in certificates {
        let der = decode(&c.raw_bytes).ok_or("a certificate is not base64")?;
        if der.len() > super::certificate::MAX_CERT_BYTES {
            return Err("a certificate is too large".into());
        }
        ders.push(der);
    }
    let mut ders = ders.into_iter();
    let certificate = ders.next();
    Ok(Candidate {
        manifest,
        format: SignatureFormat::Dsse,
        payload,
        signature,
        certificate,
        chain: ders.collect(),
    })
}

fn decode(text: &str) -> Option<Vec<u8>> {
    // protobuf JSON writes standard base64 with padding; accept URL-safe too, as its readers do.
    Base64::decode_vec(text.trim())
        .ok()
        .or_else(|| base64ct::Base64Url::decode_vec(text.trim()).ok())
}

/// Whether a verified in-toto statement is cosign's signature of `digest`: `_type` an in-toto
/// statement, `predicateType` cosign's, and a subject whose `sha256` is the digest's. The
/// statement names no repository (cosign v3 signs the digest alone), so none is bound.
pub(super) fn check_statement(
    digest: &Digest,
    payload: &[u8],
) -> Result<(), super::CandidateProblem> {
    let predicate = statement_about(digest, payload)?;
    if predicate != COSIGN_SIGN_PREDICATE {
        return Err(super::CandidateProblem::NotCosignStatement(format!(
            "its predicate type is {predicate:?}, not cosign's signature ({COSIGN_SIGN_PREDICATE})"
        )));
    }
    Ok(())
}

/// Whether a verified payload is an in-toto statement whose subject names `digest` (by
/// sha256); its predicate type.
pub(super) fn statement_about(
    digest: &Digest,
    payload: &[u8],
) -> Result<String, super::CandidateProblem> {
    use super::CandidateProblem;
    let bad = CandidateProblem::NotCosignStatement;
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("not an in-toto statement: {e}")))?;
    let kind = value.get("_type").and_then(|t| t.as_str());
    if !matches!(
        kind,
        Some("https://in-toto.io/Statement/v1" | "https://in-toto.io/Statement/v0.1")
    ) {
        return Err(bad(format!("`_type` {kind:?} is not an in-toto statement")));
    }
    let predicate = value
        .get("predicateType")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("no `predicateType`".into()))?
        .to_owned();
    let subjects = value
        .get("subject")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("no `subject` list".into()))?;
    let hex = digest
        .as_str()
        .strip_prefix("sha256:")
        .expect("digests are sha256");
    let signed: Vec<&str> = subjects
        .iter()
        .filter_map(|s| s.pointer("/digest/sha256").and_then(|d| d.as_str()))
        .collect();
    if signed.contains(&hex) {
        return Ok(predicate);
    }
    Err(CandidateProblem::OtherDigest {
        signed: match signed.first() {
            Some(first) => format!("sha256:{first}"),
            None => "no sha256 subject".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        // The example of the DSSE specification.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn a_bundle_yields_its_envelope_and_certificate_and_nothing_else() {
        let manifest = Digest::of(b"m");
        let payload = Base64::encode_string(b"{\"_type\":1}");
        let sig = Base64::encode_string(b"sig");
        let cert = Base64::encode_string(b"der");
        let text = format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"certificate":{{"rawBytes":"{cert}"}},"tlogEntries":[]}},"dsseEnvelope":{{"payload":"{payload}","payloadType":"application/vnd.in-toto+json","signatures":[{{"sig":"{sig}","keyid":""}}]}}}}"#
        );
        let c = candidate(manifest.clone(), text.as_bytes()).unwrap();
        assert_eq!(c.format, SignatureFormat::Dsse);
        assert_eq!(c.payload, b"{\"_type\":1}");
        assert_eq!(c.signature, b"sig");
        assert_eq!(c.certificate.as_deref(), Some(&b"der"[..]));
        assert!(c.chain.is_empty());
        let other_type = text.replace("application/vnd.in-toto+json", "text/plain");
        assert!(
            candidate(manifest.clone(), other_type.as_bytes())
                .unwrap_err()
                .contains("payload type")
        );
        let blob = r#"{"messageSignature":{"messageDigest":{},"signature":"AA=="}}"#;
        assert!(
            candidate(manifest.clone(), blob.as_bytes())
                .unwrap_err()
                .contains("sign-blob")
        );
        let huge = vec![b' '; MAX_BUNDLE_BYTES + 1];
        assert!(candidate(manifest, &huge).unwrap_err().contains("over"));
    }

    #[test]
    fn a_statement_must_be_cosigns_signature_of_this_digest() {
        let digest = Digest::of(b"image");
        let hex = digest.as_str().strip_prefix("sha256:").unwrap().to_owned();
        let statement = |kind: &str, predicate: &str, hex: &str| {
            format!(
                r#"{{"_type":"{kind}","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"{predicate}","predicate":{{}}}}"#
            )
            .into_bytes()
        };
        let v1 = "https://in-toto.io/Statement/v1";
        assert_eq!(
            check_statement(&digest, &statement(v1, COSIGN_SIGN_PREDICATE, &hex)),
            Ok(())
        );
        assert!(matches!(
            check_statement(
                &digest,
                &statement(v1, COSIGN_SIGN_PREDICATE, &"0".repeat(64))
            ),
            Err(super::super::CandidateProblem::OtherDigest { .. })
        ));
        assert!(
            check_statement(
                &digest,
                &statement(v1, "https://slsa.dev/provenance/v1", &hex)
            )
            .is_err()
        );
        assert!(check_statement(&digest, &statement("x", COSIGN_SIGN_PREDICATE, &hex)).is_err());
    }
}

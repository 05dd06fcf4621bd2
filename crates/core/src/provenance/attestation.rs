//! Attestations a `[[provenance]]` rule requires (`attestations = ["https://slsa.dev/provenance/v1"]`):
//! in-toto statements about the digest, signed in a DSSE envelope by a key or certificate of
//! the rule — what `cosign attest` stores (v2: layers of the `sha256-<hex>.att` manifest; v3:
//! Sigstore bundles as referrers).
//!
//! The envelope's signature over DSSE's pre-authentication encoding is verified first; only
//! then is the statement parsed: an in-toto statement whose subject names this digest, of the
//! predicate type the rule asks for. The predicate itself is not interpreted.
//!
//! The lockfile keeps, per required type, which attestation manifest satisfied it and the key
//! (or certificate identity) that signed it ([`AttestationRecord`]) — not the statement, which
//! may be megabytes: `verify` checks offline that every required type is recorded under a key
//! of the rule, and relies on the lockfile's signers for the check `lock` made. `check` asks
//! the registry that each recorded manifest is still there.

use super::{Candidate, CandidateProblem, ProvenanceRule, SignatureFormat, bundle};
use crate::model::Digest;

/// Largest statement read from an attestation (SLSA provenance is a few KiB; an SBOM
/// attestation can be megabytes).
pub const MAX_STATEMENT_BYTES: usize = 4 << 20;
/// Largest DSSE envelope or bundle read for an attestation (the statement, base64).
pub const MAX_ENVELOPE_BYTES: usize = 6 << 20;

/// An attestation that satisfied a required predicate type: what the lockfile keeps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttestationRecord {
    pub predicate_type: String,
    /// The manifest that holds it (the `.att` manifest, or a bundle referrer).
    pub manifest: Digest,
    /// The fingerprint of the key that verified it (a certificate's: its public key's).
    pub key: String,
    /// When a certificate signed it: the identity the rule required, the leaf (DER) and the
    /// path's intermediates, so that a verifier re-checks the certificate against its own
    /// roots, as for signatures.
    pub identity: Option<String>,
    pub certificate: Option<Vec<u8>>,
    pub chain: Vec<Vec<u8>>,
}

/// The candidate in a DSSE envelope (`application/vnd.dsse.envelope.v1+json`, a layer of
/// cosign v2's `.att` manifest): its payload, first signature and the layer's certificate
/// and chain (DER), as the manifest `manifest` holds them. Nothing here is trusted.
pub fn envelope_candidate(
    manifest: Digest,
    bytes: &[u8],
    certificate: Option<Vec<u8>>,
    chain: Vec<Vec<u8>>,
) -> Result<Candidate, String> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(format!("the envelope is over {MAX_ENVELOPE_BYTES} bytes"));
    }
    let envelope: bundle::Envelope =
        serde_json::from_slice(bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    let (payload, signature) = envelope.open(MAX_STATEMENT_BYTES)?;
    Ok(Candidate {
        manifest,
        format: SignatureFormat::Dsse,
        payload,
        signature,
        certificate,
        chain,
    })
}

/// Check one attestation candidate for `digest` against `rule`: the DSSE signature verifies
/// under a key or the certificate policy of the rule (before the statement is parsed), then
/// the statement is in-toto, about this digest; its predicate type is returned in the record
/// (whether the rule wants it is [`select`]'s question).
pub fn check_attestation(
    digest: &Digest,
    candidate: &Candidate,
    rule: &ProvenanceRule,
    at: jiff::Timestamp,
) -> Result<AttestationRecord, CandidateProblem> {
    if candidate.format != SignatureFormat::Dsse {
        return Err(CandidateProblem::NotCosignStatement(
            "an attestation is a DSSE envelope".into(),
        ));
    }
    if candidate.payload.len() > MAX_STATEMENT_BYTES {
        return Err(CandidateProblem::TooLarge);
    }
    let signed = bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &candidate.payload);
    let (key, certified) = super::verify_by_rule(&signed, candidate, rule, at)?;
    let predicate_type = bundle::statement_about(digest, &candidate.payload)?;
    let (identity, certificate, chain) = match certified {
        Some((identity, path)) => (Some(identity), candidate.certificate.clone(), path),
        None => (None, None, Vec::new()),
    };
    Ok(AttestationRecord {
        predicate_type,
        manifest: candidate.manifest.clone(),
        key: key.fingerprint,
        identity,
        certificate,
        chain,
    })
}

/// What `lock` decides for one governed digest: the records of the valid attestations of the
/// types the rule requires (each type at least once, at most [`super::MAX_RECORDS`] in all),
/// or, when a type has none, why — naming what was found.
pub fn select(
    digest: &Digest,
    rule: &ProvenanceRule,
    candidates: &[Candidate],
    at: jiff::Timestamp,
) -> Result<Vec<AttestationRecord>, Vec<String>> {
    let mut valid: Vec<AttestationRecord> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for c in candidates {
        match check_attestation(digest, c, rule, at) {
            Ok(record) => valid.push(record),
            Err(problem) => problems.push(format!("{}: {problem}", c.manifest)),
        }
    }
    valid.sort();
    valid.dedup();
    // Every valid attestation of a required type is kept (at most MAX_RECORDS, every type
    // first once): a verifier with its own, narrower trust finds the one it accepts.
    let mut missing = Vec::new();
    let mut records: Vec<AttestationRecord> = Vec::new();
    for wanted in &rule.attestations {
        match valid.iter().find(|r| &r.predicate_type == wanted) {
            Some(r) => records.push(r.clone()),
            None => missing.push(wanted.clone()),
        }
    }
    if missing.is_empty() {
        for r in valid
            .iter()
            .filter(|r| rule.attestations.contains(&r.predicate_type))
        {
            if records.len() >= super::MAX_RECORDS {
                break;
            }
            if !records.contains(r) {
                records.push(r.clone());
            }
        }
        records.sort();
        return Ok(records);
    }
    // cosign v3's image signatures are statements too; they are no attestation to name.
    let found: Vec<String> = valid
        .iter()
        .filter(|r| r.predicate_type != bundle::COSIGN_SIGN_PREDICATE)
        .map(|r| r.predicate_type.clone())
        .collect();
    let mut out = vec![format!(
        "no valid attestation of {} (valid ones found: {})",
        missing.join(", "),
        if found.is_empty() {
            "none".to_owned()
        } else {
            found.join(", ")
        }
    )];
    out.extend(problems);
    Err(out)
}

/// Offline: whether `records` cover every predicate type `rule` requires, each under a key
/// of the rule, or by a certificate record whose recorded leaf and chain verify under the
/// rule's certificate policy at `at` (roots, identity, issuer) with the recorded key. The
/// types missing, in the rule's order.
pub fn missing<'a>(
    rule: &'a ProvenanceRule,
    records: &[AttestationRecord],
    at: jiff::Timestamp,
) -> Vec<&'a str> {
    let accepted = |r: &AttestationRecord| match (&r.certificate, &rule.certificate) {
        (None, _) => r.identity.is_none() && rule.keys.iter().any(|k| k.fingerprint == r.key),
        (Some(leaf), Some(policy)) => {
            r.identity.as_deref() == Some(policy.identity.as_str())
                && super::certificate::verify_leaf(leaf, &r.chain, policy, at)
                    .is_ok_and(|v| v.key.fingerprint == r.key)
        }
        (Some(_), None) => false,
    };
    rule.attestations
        .iter()
        .filter(|wanted| {
            !records
                .iter()
                .any(|r| &r.predicate_type == *wanted && accepted(r))
        })
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, keys, rule};
    use super::*;

    const WANTED: &str = "https://slsa.dev/provenance/v1";

    fn statement(digest: &Digest, predicate: &str) -> Vec<u8> {
        let hex = digest.as_str().strip_prefix("sha256:").unwrap();
        format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{hex}"}}}}],"predicateType":"{predicate}","predicate":{{"big":true}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_required_attestation_must_be_signed_by_the_rule_over_the_pae_and_about_the_digest() {
        let digest = Digest::of(b"image");
        let other = Digest::of(b"other image");
        for (key, sign) in keys() {
            let mut rule = rule(vec![key.clone()]);
            rule.attestations = vec![WANTED.into()];
            let candidate = |payload: Vec<u8>, signature: Vec<u8>, n: u8| Candidate {
                manifest: Digest::of(&[n]),
                format: SignatureFormat::Dsse,
                payload,
                signature,
                certificate: None,
                chain: Vec::new(),
            };
            let good = statement(&digest, WANTED);
            let pae = bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &good);
            let record = check_attestation(
                &digest,
                &candidate(good.clone(), sign(&pae), 1),
                &rule,
                at(),
            )
            .unwrap();
            assert_eq!(record.predicate_type, WANTED);
            assert_eq!(record.key, key.fingerprint);
            // Over the bare statement, for another digest, of another type: each refused.
            assert!(matches!(
                check_attestation(
                    &digest,
                    &candidate(good.clone(), sign(&good), 2),
                    &rule,
                    at()
                ),
                Err(CandidateProblem::NoKeyVerifies { .. })
            ));
            let elsewhere = statement(&other, WANTED);
            let signed = sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &elsewhere));
            assert!(matches!(
                check_attestation(&digest, &candidate(elsewhere, signed, 3), &rule, at()),
                Err(CandidateProblem::OtherDigest { .. })
            ));
            let sbom = statement(&digest, "https://spdx.dev/Document");
            let sbom_sig = sign(&bundle::pae(bundle::IN_TOTO_PAYLOAD_TYPE, &sbom));
            let only_sbom = [candidate(sbom.clone(), sbom_sig.clone(), 4)];
            let err = select(&digest, &rule, &only_sbom, at()).unwrap_err();
            assert!(
                err[0].contains("no valid attestation of https://slsa.dev/provenance/v1 (valid ones found: https://spdx.dev/Document)"),
                "{err:?}"
            );
            let both = [
                candidate(sbom, sbom_sig, 4),
                candidate(good.clone(), sign(&pae), 1),
            ];
            let kept = select(&digest, &rule, &both, at()).unwrap();
            assert_eq!(
                kept,
                vec![record.clone()],
                "only the required type is recorded"
            );
            // Offline coverage: the record under a key of the rule, and nothing else.
            assert!(missing(&rule, &kept, at()).is_empty());
            assert_eq!(missing(&rule, &[], at()), vec![WANTED]);
            let foreign = AttestationRecord {
                key: "sha256:".to_owned() + &"0".repeat(64),
                ..record
            };
            assert_eq!(
                missing(&rule, std::slice::from_ref(&foreign), at()),
                vec![WANTED]
            );
            // A record claiming a certificate identity without a certificate is no record.
            let claimed = AttestationRecord {
                identity: Some("ci@example.com".into()),
                key: key.fingerprint.clone(),
                ..foreign
            };
            assert_eq!(missing(&rule, &[claimed], at()), vec![WANTED]);
        }
    }

    #[test]
    fn an_envelope_yields_its_payload_and_first_signature() {
        use base64ct::{Base64, Encoding as _};
        let text = format!(
            r#"{{"payloadType":"application/vnd.in-toto+json","payload":"{}","signatures":[{{"keyid":"","sig":"{}"}}]}}"#,
            Base64::encode_string(b"{}"),
            Base64::encode_string(b"sig")
        );
        let c = envelope_candidate(Digest::of(b"m"), text.as_bytes(), None, Vec::new()).unwrap();
        assert_eq!(
            (c.payload.as_slice(), c.signature.as_slice()),
            (&b"{}"[..], &b"sig"[..])
        );
        assert!(envelope_candidate(Digest::of(b"m"), b"[]", None, Vec::new()).is_err());
        let other = text.replace("application/vnd.in-toto+json", "text/plain");
        assert!(envelope_candidate(Digest::of(b"m"), other.as_bytes(), None, Vec::new()).is_err());
    }
}

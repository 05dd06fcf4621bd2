//! cosign signatures made with a certificate (`cosign sign --certificate C --certificate-chain
//! CH`, or Fulcio's keyless certificates): the leaf certificate's key verifies the payload,
//! the leaf chains through the given intermediates to a root the rule configures, each
//! certificate valid at the time judged, and the leaf names the rule's identity (a SAN email
//! or URI) and, when the rule sets one, its OIDC issuer (Fulcio's extension).
//!
//! The checks, each refusing with a reason: at most [`MAX_CHAIN`] certificates of at most
//! [`MAX_CERT_BYTES`] each; every link's subject/issuer names equal and its signature valid
//! (ECDSA P-256/SHA-256, P-384/SHA-384, Ed25519); every issuer a CA (`basicConstraints`) whose
//! `keyUsage` (when present) allows `keyCertSign` and whose `pathLenConstraint` holds; the
//! leaf not a CA, its `keyUsage` (when present) allowing `digitalSignature` and its
//! `extendedKeyUsage` (when present) including code signing; no critical extension lockstep
//! does not check. Offline only: no SCT, Rekor or revocation lookup.

use x509_cert::Certificate;
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};

use super::CosignKey;

/// Largest certificate accepted (DER).
pub const MAX_CERT_BYTES: usize = 16 << 10;
/// Most certificates in a chain (intermediates and roots given with a signature).
pub const MAX_CHAIN: usize = 8;

const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const ED25519: &str = "1.3.101.112";
const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
const ANY_EXTENDED_KEY_USAGE: &str = "2.5.29.37.0";
/// Fulcio's OIDC issuer extensions: v2 (a DER UTF8String) and v1 (the raw string).
const ISSUER_V2: &str = "1.3.6.1.4.1.57264.1.8";
const ISSUER_V1: &str = "1.3.6.1.4.1.57264.1.1";
/// The extensions this module checks; any other critical one refuses the certificate.
const UNDERSTOOD: [&str; 4] = ["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17"];

/// A rule's certificate requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificatePolicy {
    /// The trusted roots, DER.
    pub roots: Vec<Vec<u8>>,
    /// The root files as written, for messages.
    pub root_files: Vec<String>,
    /// A SAN email or URI the leaf must name exactly.
    pub identity: String,
    /// The OIDC issuer the leaf must carry, when set.
    pub issuer: Option<String>,
}

/// Parse every certificate of a PEM text to DER (at most [`MAX_CHAIN`], each at most
/// [`MAX_CERT_BYTES`]).
pub fn pem_chain(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if text.len() > MAX_CHAIN * MAX_CERT_BYTES * 2 {
        return Err("the certificate text is too large".into());
    }
    let certs =
        Certificate::load_pem_chain(text).map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM CERTIFICATE block".into());
    }
    if certs.len() > MAX_CHAIN {
        return Err(format!("more than {MAX_CHAIN} certificates"));
    }
    certs
        .iter()
        .map(|c| {
            let der = c.to_der().map_err(|e| e.to_string())?;
            if der.len() > MAX_CERT_BYTES {
                return Err(format!("a certificate is over {MAX_CERT_BYTES} bytes"));
            }
            Ok(der)
        })
        .collect()
}

/// A leaf that chained to a root: its key, and the intermediates of the path (DER, the
/// leaf's issuer first) — only those are recorded, not whatever else was attached.
#[derive(Clone, Debug)]
pub struct Verified {
    pub key: CosignKey,
    pub path: Vec<Vec<u8>>,
}

/// The leaf's key and path, once the leaf is shown to chain to a root and name the
/// identity, judged at `at`; `Err` says why not.
pub fn verify_leaf(
    leaf_der: &[u8],
    chain_der: &[Vec<u8>],
    policy: &CertificatePolicy,
    at: jiff::Timestamp,
) -> Result<Verified, String> {
    if leaf_der.len() > MAX_CERT_BYTES || chain_der.len() > MAX_CHAIN {
        return Err("the certificate or its chain is too large".into());
    }
    let parse =
        |der: &[u8]| Certificate::from_der(der).map_err(|e| format!("not a DER certificate: {e}"));
    let leaf = parse(leaf_der)?;
    let chain = chain_der
        .iter()
        .map(|d| parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    let roots = policy
        .roots
        .iter()
        .map(|d| parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    check_leaf(&leaf)?;
    check_validity(&leaf, at, "the signing certificate")?;
    identity(&leaf, policy)?;
    let mut current = &leaf;
    let mut path = Vec::new();
    // Each certificate of the chain is used once: a self-signed one (a root nobody
    // configured) or a loop ends the walk.
    let mut used = vec![false; chain.len()];
    // Why the last issuer candidate that signed was not fit, for the message.
    let mut unfit = None;
    // `below`: the intermediates traversed so far, the path length under the next issuer.
    for below in 0..=MAX_CHAIN {
        // An issuer: its subject is the child's issuer, it signed the child, and it may
        // issue here; a candidate that fails one of these is skipped, not fatal.
        let mut fit = |c: &Certificate, what: &str| {
            if c.tbs_certificate().subject() != current.tbs_certificate().issuer()
                || signed_by(current, c).is_err()
            {
                return false;
            }
            match check_issuer(c, below, at, what) {
                Ok(()) => true,
                Err(why) => {
                    unfit = Some(why);
                    false
                }
            }
        };
        if roots.iter().any(|r| fit(r, "the root")) {
            return Ok(Verified {
                key: leaf_key(&leaf)?,
                path,
            });
        }
        let found =
            (0..chain.len()).find(|&i| !used[i] && fit(&chain[i], "an intermediate certificate"));
        let Some(i) = found else {
            return Err(match (unfit, signed_by_name(current, &chain, &roots)) {
                (Some(why), _) | (None, Some(why)) => why,
                (None, None) => format!(
                    "it does not chain to a configured root ({})",
                    policy.root_files.join(", ")
                ),
            });
        };
        used[i] = true;
        path.push(chain_der[i].clone());
        current = &chain[i];
    }
    Err("the certificate chain is too long".into())
}

/// Why a certificate whose issuer name matches a candidate was not signed by it, if one
/// matches by name: a clearer message than "does not chain".
fn signed_by_name(
    child: &Certificate,
    chain: &[Certificate],
    roots: &[Certificate],
) -> Option<String> {
    chain
        .iter()
        .chain(roots)
        .find(|c| c.tbs_certificate().subject() == child.tbs_certificate().issuer())
        .and_then(|c| signed_by(child, c).err())
}

/// `child`'s signature over its exact TBS bytes verifies under `parent`'s key.
fn signed_by(child: &Certificate, parent: &Certificate) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier as _;
    let tbs = child
        .tbs_certificate()
        .to_der()
        .map_err(|e| format!("cannot encode a certificate: {e}"))?;
    let signature = child
        .signature()
        .as_bytes()
        .ok_or("the certificate signature is not whole bytes")?;
    let spki = parent
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| e.to_string())?;
    let algorithm = child.signature_algorithm().oid.to_string();
    let ok = match algorithm.as_str() {
        ECDSA_SHA256 => {
            use p256::pkcs8::DecodePublicKey as _;
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&spki)
                .map_err(|_| "an ECDSA-SHA256 certificate issued by a key that is not P-256")?;
            p256::ecdsa::Signature::from_der(signature).is_ok_and(|s| key.verify(&tbs, &s).is_ok())
        }
        ECDSA_SHA384 => {
            use p384::pkcs8::DecodePublicKey as _;
            let key = p384::ecdsa::VerifyingKey::from_public_key_der(&spki)
                .map_err(|_| "an ECDSA-SHA384 certificate issued by a key that is not P-384")?;
            p384::ecdsa::Signature::from_der(signature).is_ok_and(|s| key.verify(&tbs, &s).is_ok())
        }
        ED25519 => {
            use ed25519_dalek::pkcs8::DecodePublicKey as _;
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(&spki)
                .map_err(|_| "an Ed25519 certificate issued by a key that is not Ed25519")?;
            ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| key.verify_strict(&tbs, &s).is_ok())
        }
        other => {
            return Err(format!(
                "certificate signature algorithm {other} is not supported (ECDSA P-256/SHA-256, P-384/SHA-384, Ed25519)"
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err("a certificate's signature does not verify under its issuer's key".into())
    }
}

fn check_validity(cert: &Certificate, at: jiff::Timestamp, what: &str) -> Result<(), String> {
    let validity = cert.tbs_certificate().validity();
    let secs = |t: x509_cert::time::Time| t.to_unix_duration().as_secs() as i64;
    let (from, until) = (secs(validity.not_before), secs(validity.not_after));
    let now = at.as_second();
    if now < from || now > until {
        return Err(format!(
            "{what} is not valid at {at} (valid from {} to {})",
            jiff::Timestamp::from_second(from).map_or_else(|_| from.to_string(), |t| t.to_string()),
            jiff::Timestamp::from_second(until)
                .map_or_else(|_| until.to_string(), |t| t.to_string())
        ));
    }
    Ok(())
}

/// No critical extension this module does not check.
fn check_critical(cert: &Certificate, what: &str) -> Result<(), String> {
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        let oid = ext.extn_id.to_string();
        if ext.critical && !UNDERSTOOD.contains(&oid.as_str()) {
            return Err(format!(
                "{what} has a critical extension lockstep does not check ({oid})"
            ));
        }
    }
    Ok(())
}

/// An issuer: valid, a CA, allowed to sign certificates, with room for `below`
/// intermediates under it.
fn check_issuer(
    cert: &Certificate,
    below: usize,
    at: jiff::Timestamp,
    what: &str,
) -> Result<(), String> {
    check_validity(cert, at, what)?;
    check_critical(cert, what)?;
    let tbs = cert.tbs_certificate();
    let constraints = tbs
        .get_extension::<BasicConstraints>()
        .map_err(|e| format!("{what}: bad basicConstraints: {e}"))?;
    match constraints {
        Some((_, c)) if c.ca => {
            if let Some(limit) = c.path_len_constraint
                && below > usize::from(limit)
            {
                return Err(format!(
                    "{what} allows {limit} intermediate(s) below it, and the chain has {below}"
                ));
            }
        }
        _ => return Err(format!("{what} is not a CA (basicConstraints)")),
    }
    if let Some((_, usage)) = tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| format!("{what}: bad keyUsage: {e}"))?
        && !usage.0.contains(KeyUsages::KeyCertSign)
    {
        return Err(format!("{what} may not sign certificates (keyUsage)"));
    }
    // An issuer restricted to other purposes (a TLS-only intermediate) does not vouch for
    // code signing, as Go's x509 (and so `cosign verify`) also holds.
    if let Some((_, eku)) = tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(|e| format!("{what}: bad extendedKeyUsage: {e}"))?
        && !allows_code_signing(&eku)
    {
        return Err(format!(
            "{what} is restricted to other uses than code signing (extendedKeyUsage)"
        ));
    }
    Ok(())
}

fn allows_code_signing(eku: &ExtendedKeyUsage) -> bool {
    eku.0
        .iter()
        .any(|o| [CODE_SIGNING, ANY_EXTENDED_KEY_USAGE].contains(&o.to_string().as_str()))
}

/// The leaf: not a CA, allowed to sign (keyUsage) code (extendedKeyUsage).
fn check_leaf(leaf: &Certificate) -> Result<(), String> {
    let what = "the signing certificate";
    check_critical(leaf, what)?;
    let tbs = leaf.tbs_certificate();
    if let Some((_, c)) = tbs
        .get_extension::<BasicConstraints>()
        .map_err(|e| format!("{what}: bad basicConstraints: {e}"))?
        && c.ca
    {
        return Err(format!("{what} is a CA certificate"));
    }
    if let Some((_, usage)) = tbs
        .get_extension::<KeyUsage>()
        .map_err(|e| format!("{what}: bad keyUsage: {e}"))?
        && !usage.0.contains(KeyUsages::DigitalSignature)
    {
        return Err(format!("{what} may not make signatures (keyUsage)"));
    }
    if let Some((_, eku)) = tbs
        .get_extension::<ExtendedKeyUsage>()
        .map_err(|e| format!("{what}: bad extendedKeyUsage: {e}"))?
        && !allows_code_signing(&eku)
    {
        return Err(format!("{what} is not for code signing (extendedKeyUsage)"));
    }
    Ok(())
}

/// The leaf names the identity (SAN email or URI), and the issuer when the policy sets one.
fn identity(leaf: &Certificate, policy: &CertificatePolicy) -> Result<(), String> {
    let tbs = leaf.tbs_certificate();
    let names: Vec<String> = match tbs
        .get_extension::<SubjectAltName>()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
    {
        Some((_, san)) => san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::Rfc822Name(s) | GeneralName::UniformResourceIdentifier(s) => {
                    Some(s.to_string())
                }
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    if !names.contains(&policy.identity) {
        return Err(format!(
            "the certificate names {}, not the identity {}",
            if names.is_empty() {
                "no email or URI".to_owned()
            } else {
                names.join(", ")
            },
            policy.identity
        ));
    }
    if let Some(wanted) = &policy.issuer {
        let found = issuer_of(leaf);
        if found.as_deref() != Some(wanted.as_str()) {
            return Err(format!(
                "the certificate's OIDC issuer is {}, not {wanted}",
                found.as_deref().unwrap_or("absent")
            ));
        }
    }
    Ok(())
}

/// Fulcio's OIDC issuer extension (v2, else v1).
fn issuer_of(leaf: &Certificate) -> Option<String> {
    let exts = leaf.tbs_certificate().extensions()?;
    let find = |oid: &str| exts.iter().find(|e| e.extn_id.to_string() == oid);
    if let Some(e) = find(ISSUER_V2) {
        return x509_cert::der::asn1::Utf8StringRef::from_der(e.extn_value.as_bytes())
            .ok()
            .map(|s| s.as_str().to_owned());
    }
    find(ISSUER_V1).and_then(|e| String::from_utf8(e.extn_value.as_bytes().to_vec()).ok())
}

/// The leaf's public key as a cosign key (P-256, P-384 or Ed25519).
fn leaf_key(leaf: &Certificate) -> Result<CosignKey, String> {
    let spki = leaf
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| e.to_string())?;
    CosignKey::from_spki_der("the signing certificate", &spki).map_err(|e| e.reason)
}

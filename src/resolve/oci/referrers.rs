//! What a registry holds *about* a digest: cosign's signatures and the OCI 1.1 referrers.
//!
//! Signatures are found the ways the tools publish them, all read for every digest:
//! - cosign's tag scheme: the manifest tagged `sha256-<hex>.sig`, whose simple-signing layers
//!   carry the signature in an annotation (cosign v2's default);
//! - OCI 1.1 referrers of the digest (`GET /v2/NAME/referrers/DIGEST`; on a registry without
//!   that API, the referrers tag `sha256-<hex>` holding an index, which clients keep), whose
//!   manifests are cosign's `sig` artifacts (v2 with `--registry-referrers-mode=oci-1-1`) or
//!   Sigstore bundles (cosign v3's default).
//!
//! Every manifest is fetched by digest and hashed; a referrer must name the digest as its
//! `subject`. Nothing here is trusted: the core checks each candidate
//! ([`crate::provenance::select`]). A layer or referrer that cannot be read as stated is
//! skipped, not fatal — whoever can push junk next to an image must not block a lock that a
//! real signature satisfies; only an unreachable registry fails the fetch.

use std::collections::BTreeMap;

use reqwest::Method;

use super::{Access, Auth, Endpoint, FetchedManifest, OciRegistry, Trouble, parse_manifest};
use crate::model::{Digest, ImageRef};
use crate::provenance::attestation;
use crate::provenance::bundle::{self, MAX_BUNDLE_BYTES};
use crate::provenance::{Candidate, MAX_PAYLOAD_BYTES, SignatureFormat};
use crate::resolve::ResolveError;

/// The layer media type of a cosign simple-signing payload.
const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature over the payload.
const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The layer annotations holding the signing certificate and its chain (PEM).
const COSIGN_CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
const COSIGN_CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";
/// The artifact type of cosign's OCI 1.1 signature referrers.
pub const COSIGN_SIGNATURE_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The config media type of artifacts without a config (OCI 1.1), which some registries
/// report as the artifact type in a referrers list.
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// Most signature layers read from one signature manifest.
const MAX_SIGNATURE_LAYERS: usize = 32;
/// Most referrer manifests fetched per digest when looking for signatures, and most of them
/// that may name the digest as their subject (junk that does not is skipped and counts only
/// against the first bound).
const MAX_REFERRER_FETCHES: usize = 128;
const MAX_SIGNATURE_REFERRERS: usize = 64;
/// Most candidates kept per digest, and the largest signature read (cosign's are 64-72
/// bytes for ECDSA, 64 for Ed25519; lockfile records refuse more than 1024).
const MAX_CANDIDATES: usize = 64;
const MAX_SIGNATURE_BYTES: usize = 1024;
/// The layer media type of a DSSE envelope (cosign v2's attestations).
const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
/// Most attestation candidates kept per digest (those the caller keeps: junk is dropped as it
/// is read), and most bytes read for them in all.
pub const MAX_ATTESTATION_CANDIDATES: usize = 32;
pub const MAX_ATTESTATION_BYTES: usize = 64 << 20;
/// Most referrers listed per digest, and pages of the referrers API followed.
pub const MAX_REFERRERS: usize = 1024;
const MAX_REFERRER_PAGES: usize = 8;

/// A manifest that names a digest as its `subject`, as the referrers list describes it (the
/// list is not covered by any digest: a caller fetches the manifest by digest before using
/// anything else).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// Which candidates a caller wants kept as they are read (all are read, within the bounds:
/// a verifier with narrower trust than the rule's may need any valid one).
pub struct Wanted<'a> {
    pub keep: &'a (dyn Fn(&Candidate) -> bool + Sync),
}

impl Wanted<'static> {
    /// Every candidate, until the bounds.
    pub fn all() -> Wanted<'static> {
        Wanted { keep: &|_| true }
    }
}

/// The attestation candidates gathered for one digest, within their bounds.
struct Attestations<'a> {
    wanted: &'a Wanted<'a>,
    candidates: Vec<Candidate>,
    bytes: usize,
}

impl Attestations<'_> {
    fn full(&self) -> bool {
        self.candidates.len() >= MAX_ATTESTATION_CANDIDATES || self.bytes >= MAX_ATTESTATION_BYTES
    }

    fn left(&self) -> usize {
        MAX_ATTESTATION_BYTES.saturating_sub(self.bytes)
    }
}

impl Referrer {
    /// Whether the list's word leaves this a possible signature (a registry may report the
    /// config's media type instead of the artifact type).
    fn may_be_signature(&self) -> bool {
        match self.artifact_type.as_deref() {
            None | Some("") | Some(EMPTY_CONFIG) | Some(COSIGN_SIGNATURE_ARTIFACT) => true,
            Some(other) => bundle::is_bundle_media_type(other),
        }
    }

    /// The order referrers are tried in, most likely a signature first: the list is unsigned,
    /// so this only orders the fetches (cosign v3 attestations share the bundle type; their
    /// predicate annotation says so).
    fn signature_rank(&self) -> u8 {
        let predicate = self
            .annotations
            .get("dev.sigstore.bundle.predicateType")
            .map(String::as_str);
        match (self.artifact_type.as_deref(), predicate) {
            (_, Some(bundle::COSIGN_SIGN_PREDICATE)) | (Some(COSIGN_SIGNATURE_ARTIFACT), _) => 0,
            (_, None) => 1,
            (_, Some(_)) => 2,
        }
    }
}

impl OciRegistry {
    /// The cosign signatures stored for `digest` in `image`'s repository, by cosign's tag and
    /// as OCI 1.1 referrers (see the module documentation); an empty list when there are
    /// none, not an error.
    ///
    /// `enough` is asked after cosign's tag is read: when it says the candidates found there
    /// suffice (one satisfies the rule), the referrers are not asked — two requests saved per
    /// digest for the tag scheme's users.
    pub async fn cosign_signatures(
        &self,
        image: &ImageRef,
        digest: &Digest,
        enough: &(dyn Fn(&[Candidate]) -> bool + Sync),
    ) -> Result<Vec<Candidate>, ResolveError> {
        self.cosign_signatures_inner(image, digest, enough)
            .await
            .map_err(|t| t.into_error(image, self.settings.timeout))
    }

    /// The referrers of `digest` in `image`'s repository: the referrers API's list, or, where
    /// the registry has no such API, the referrers tag's index; empty when neither exists.
    pub async fn referrers(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<Referrer>, ResolveError> {
        let inner = async {
            let endpoint = self.endpoint(image.registry()).await?;
            let auth = endpoint
                .authorization(image.repository(), Access::Pull)
                .await?;
            self.list_referrers(&endpoint, &auth, image.repository(), digest)
                .await
        };
        inner
            .await
            .map_err(|t: Trouble| t.into_error(image, self.settings.timeout))
    }

    /// What a mirror copies beside `digest` so that it stays verifiable and complete: the
    /// manifests under cosign's `sha256-<hex>.sig`, `.att` and `.sbom` tags (pushed under that
    /// tag), then every OCI 1.1 referrer, each once (signatures, attestations, SBOMs; pushed
    /// by digest).
    /// Referrers of referrers are not followed.
    pub async fn attached(
        &self,
        image: &ImageRef,
        digest: &Digest,
    ) -> Result<Vec<(Digest, Option<String>)>, ResolveError> {
        let inner = async {
            let endpoint = self.endpoint(image.registry()).await?;
            let repository = image.repository();
            let auth = endpoint.authorization(repository, Access::Pull).await?;
            // cosign's tags first: a caller that bounds the list keeps them over junk.
            let mut out: Vec<(Digest, Option<String>)> = Vec::new();
            for suffix in ["sig", "att", "sbom"] {
                let tag = format!("{}.{suffix}", referrers_tag(digest));
                let url = endpoint.manifest_url(repository, &tag);
                // A HEAD names the digest on most registries; else the GET hashes the body.
                let head = self.request(Method::HEAD, &url, &auth).await?;
                if head.status == reqwest::StatusCode::NOT_FOUND {
                    continue;
                }
                if head.status.is_success()
                    && let Ok(Some(found)) = super::header_digest(&head.headers)
                {
                    out.push((found, Some(tag)));
                    continue;
                }
                match self.fetch_manifest(&url, &auth, None).await {
                    Ok(m) => out.push((m.digest, Some(tag))),
                    Err(Trouble::NotFound { .. }) => {}
                    Err(other) => return Err(other),
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            out.extend(
                self.list_referrers(&endpoint, &auth, repository, digest)
                    .await?
                    .into_iter()
                    .filter(|r| seen.insert(r.digest.clone()))
                    .map(|r| (r.digest, None)),
            );
            Ok(out)
        };
        inner
            .await
            .map_err(|t: Trouble| t.into_error(image, self.settings.timeout))
    }

    async fn cosign_signatures_inner(
        &self,
        image: &ImageRef,
        digest: &Digest,
        enough: &(dyn Fn(&[Candidate]) -> bool + Sync),
    ) -> Result<Vec<Candidate>, Trouble> {
        let endpoint = self.endpoint(image.registry()).await?;
        let repository = image.repository();
        let auth = endpoint.authorization(repository, Access::Pull).await?;
        let mut candidates = Vec::new();
        let tag = crate::provenance::signature_tag(digest);
        match self
            .fetch_manifest(&endpoint.manifest_url(repository, &tag), &auth, None)
            .await
        {
            Ok(manifest) => {
                self.simple_signing(&endpoint, &auth, repository, &manifest, &mut candidates)
                    .await?;
            }
            Err(Trouble::NotFound { .. }) => {}
            Err(other) => return Err(other),
        }
        if enough(&candidates) {
            return Ok(candidates);
        }
        let referrers = self
            .list_referrers(&endpoint, &auth, repository, digest)
            .await?;
        let mut seen = std::collections::BTreeSet::new();
        let mut tried: Vec<&Referrer> = referrers
            .iter()
            .filter(|r| r.may_be_signature() && seen.insert(&r.digest))
            .collect();
        tried.sort_by_key(|r| r.signature_rank());
        let mut about_this = 0;
        for referrer in tried.into_iter().take(MAX_REFERRER_FETCHES) {
            if about_this == MAX_SIGNATURE_REFERRERS || candidates.len() >= MAX_CANDIDATES {
                break;
            }
            let Some(manifest) = self
                .referrer_of(&endpoint, &auth, repository, referrer, digest)
                .await?
            else {
                continue;
            };
            about_this += 1;
            match artifact_type(&manifest).as_deref() {
                Some(COSIGN_SIGNATURE_ARTIFACT) => {
                    self.simple_signing(&endpoint, &auth, repository, &manifest, &mut candidates)
                        .await?;
                }
                Some(t) if bundle::is_bundle_media_type(t) => {
                    self.bundles(&endpoint, &auth, repository, &manifest, &mut candidates)
                        .await?;
                }
                _ => {}
            }
        }
        candidates.truncate(MAX_CANDIDATES);
        Ok(candidates)
    }

    /// The attestations stored for `digest` in `image`'s repository, as candidates for the
    /// core to check ([`crate::provenance::attestation::select`]): the DSSE envelopes of
    /// cosign's `sha256-<hex>.att` manifest (v2), and the OCI 1.1 referrers holding DSSE
    /// envelopes (v2's in-toto referrers) or Sigstore bundles (v3). At most
    /// [`MAX_ATTESTATION_CANDIDATES`] that `wanted` keeps (it judges each as it is read, so
    /// junk neither stays in memory nor crowds out the real one), and
    /// [`MAX_ATTESTATION_BYTES`] read in all.
    pub async fn cosign_attestation_candidates(
        &self,
        image: &ImageRef,
        digest: &Digest,
        wanted: &Wanted<'_>,
    ) -> Result<Vec<Candidate>, ResolveError> {
        let inner = async {
            let endpoint = self.endpoint(image.registry()).await?;
            let repository = image.repository();
            let auth = endpoint.authorization(repository, Access::Pull).await?;
            let mut found = Attestations {
                wanted,
                candidates: Vec::new(),
                bytes: 0,
            };
            let tag = format!("{}.att", referrers_tag(digest));
            match self
                .fetch_manifest(&endpoint.manifest_url(repository, &tag), &auth, None)
                .await
            {
                Ok(manifest) => {
                    self.attestation_layers(&endpoint, &auth, repository, &manifest, &mut found)
                        .await?;
                }
                Err(Trouble::NotFound { .. }) => {}
                Err(other) => return Err(other),
            }
            let referrers = self
                .list_referrers(&endpoint, &auth, repository, digest)
                .await?;
            let mut seen = std::collections::BTreeSet::new();
            let mut tried: Vec<&Referrer> = referrers
                .iter()
                .filter(|r| {
                    (r.may_be_signature()
                        || r.artifact_type.as_deref() == Some(bundle::IN_TOTO_PAYLOAD_TYPE))
                        && seen.insert(&r.digest)
                })
                .collect();
            // Most likely an attestation first: the reverse of the signatures' order.
            tried.sort_by_key(|r| std::cmp::Reverse(r.signature_rank()));
            for referrer in tried.into_iter().take(MAX_REFERRER_FETCHES) {
                if found.full() {
                    break;
                }
                if let Some(manifest) = self
                    .referrer_of(&endpoint, &auth, repository, referrer, digest)
                    .await?
                {
                    self.attestation_layers(&endpoint, &auth, repository, &manifest, &mut found)
                        .await?;
                }
            }
            Ok(found.candidates)
        };
        inner
            .await
            .map_err(|t: Trouble| t.into_error(image, self.settings.timeout))
    }

    /// The attestation candidates of one manifest: its DSSE envelope layers and its bundle
    /// layers, each fetched by digest within what is left of the budget.
    async fn attestation_layers(
        &self,
        endpoint: &Endpoint,
        auth: &Auth,
        repository: &str,
        manifest: &FetchedManifest,
        found: &mut Attestations<'_>,
    ) -> Result<(), Trouble> {
        let mut seen = std::collections::BTreeSet::new();
        for layer in manifest.body.layers.iter().take(MAX_SIGNATURE_LAYERS) {
            let kind = layer.media_type.as_deref().unwrap_or_default();
            let envelope = kind == DSSE_ENVELOPE;
            if (!envelope && !bundle::is_bundle_media_type(kind)) || !seen.insert(&layer.digest) {
                continue;
            }
            if found.full() {
                break;
            }
            let limit = found.left().min(attestation::MAX_ENVELOPE_BYTES);
            let Some(bytes) = self
                .layer_blob(endpoint, auth, repository, layer, limit)
                .await?
            else {
                continue;
            };
            found.bytes += bytes.len();
            let candidate = if envelope {
                let pem = |name: &str| {
                    layer.annotations.get(name).and_then(|text| {
                        crate::provenance::certificate::pem_chain(text.as_bytes()).ok()
                    })
                };
                attestation::envelope_candidate(
                    manifest.digest.clone(),
                    &bytes,
                    pem(COSIGN_CERTIFICATE_ANNOTATION).and_then(|c| c.into_iter().next()),
                    pem(COSIGN_CHAIN_ANNOTATION).unwrap_or_default(),
                )
            } else {
                bundle::candidate_within(
                    manifest.digest.clone(),
                    &bytes,
                    attestation::MAX_ENVELOPE_BYTES,
                    attestation::MAX_STATEMENT_BYTES,
                )
            };
            if let Ok(c) = candidate
                && (found.wanted.keep)(&c)
            {
                found.candidates.push(c);
            }
        }
        Ok(())
    }

    /// A listed referrer's manifest, fetched by digest, when it names `digest` as its
    /// `subject` (the list is unsigned: the manifest's own subject is what counts); `None`
    /// for one gone, unreadable, or about something else.
    async fn referrer_of(
        &self,
        endpoint: &Endpoint,
        auth: &Auth,
        repository: &str,
        referrer: &Referrer,
        digest: &Digest,
    ) -> Result<Option<FetchedManifest>, Trouble> {
        let url = endpoint.manifest_url(repository, referrer.digest.as_str());
        match self
            .fetch_manifest(&url, auth, Some(&referrer.digest))
            .await
        {
            Ok(m)
                if m.body.subject.as_ref().map(|s| s.digest.as_str()) == Some(digest.as_str()) =>
            {
                Ok(Some(m))
            }
            Ok(_)
            | Err(
                Trouble::NotFound { .. }
                | Trouble::BadManifest(_)
                | Trouble::DigestMismatch { .. }
                | Trouble::TooLarge,
            ) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The candidates of a cosign signature manifest: each simple-signing layer's payload
    /// (fetched by digest, at most [`MAX_PAYLOAD_BYTES`]) with its signature annotation and
    /// any attached certificate and chain.
    async fn simple_signing(
        &self,
        endpoint: &Endpoint,
        auth: &Auth,
        repository: &str,
        manifest: &FetchedManifest,
        candidates: &mut Vec<Candidate>,
    ) -> Result<(), Trouble> {
        let mut seen = std::collections::BTreeSet::new();
        for layer in manifest
            .body
            .layers
            .iter()
            .filter(|l| l.media_type.as_deref() == Some(COSIGN_SIMPLE_SIGNING))
            .filter(|l| seen.insert((&l.digest, l.annotations.get(COSIGN_SIGNATURE_ANNOTATION))))
            .take(MAX_SIGNATURE_LAYERS)
        {
            if candidates.len() >= MAX_CANDIDATES {
                break;
            }
            let Some(signature) = layer
                .annotations
                .get(COSIGN_SIGNATURE_ANNOTATION)
                .filter(|b64| b64.len() <= MAX_SIGNATURE_BYTES * 2)
                .and_then(|b64| crate::provenance::decode_base64(b64))
            else {
                continue;
            };
            let Some(payload) = self
                .layer_blob(endpoint, auth, repository, layer, MAX_PAYLOAD_BYTES)
                .await?
            else {
                continue;
            };
            // An attached certificate and chain (PEM in annotations); one that cannot be read
            // is left out, and the core then judges the signature without it.
            let pem = |name: &str| {
                layer.annotations.get(name).and_then(|text| {
                    crate::provenance::certificate::pem_chain(text.as_bytes()).ok()
                })
            };
            let certificate = pem(COSIGN_CERTIFICATE_ANNOTATION).and_then(|c| c.into_iter().next());
            let chain = pem(COSIGN_CHAIN_ANNOTATION).unwrap_or_default();
            candidates.push(Candidate {
                manifest: manifest.digest.clone(),
                format: SignatureFormat::SimpleSigning,
                payload,
                signature,
                certificate,
                chain,
            });
        }
        Ok(())
    }

    /// The candidates of a Sigstore bundle referrer: each bundle layer (at most
    /// [`MAX_BUNDLE_BYTES`]) read by the core into its DSSE payload, signature and
    /// certificate.
    async fn bundles(
        &self,
        endpoint: &Endpoint,
        auth: &Auth,
        repository: &str,
        manifest: &FetchedManifest,
        candidates: &mut Vec<Candidate>,
    ) -> Result<(), Trouble> {
        let mut seen = std::collections::BTreeSet::new();
        for layer in manifest
            .body
            .layers
            .iter()
            .filter(|l| {
                l.media_type
                    .as_deref()
                    .is_some_and(bundle::is_bundle_media_type)
                    && seen.insert(&l.digest)
            })
            .take(MAX_SIGNATURE_LAYERS)
        {
            if candidates.len() >= MAX_CANDIDATES {
                break;
            }
            let Some(bytes) = self
                .layer_blob(endpoint, auth, repository, layer, MAX_BUNDLE_BYTES)
                .await?
            else {
                continue;
            };
            if let Ok(candidate) = bundle::candidate(manifest.digest.clone(), &bytes) {
                candidates.push(candidate);
            }
        }
        Ok(())
    }

    /// A layer's bytes, fetched by digest and checked against it, at most `limit`; `None` when
    /// it cannot be read as stated (too large, gone, not its digest).
    async fn layer_blob(
        &self,
        endpoint: &Endpoint,
        auth: &Auth,
        repository: &str,
        layer: &super::Descriptor,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, Trouble> {
        let Ok(blob) = layer.digest.parse::<Digest>() else {
            return Ok(None);
        };
        if layer.size.is_some_and(|n| n > limit as u64) {
            return Ok(None);
        }
        let url = format!("{}/v2/{repository}/blobs/{blob}", endpoint.base);
        let answer = match self
            .request_limited(Method::GET, &url, auth, &|b| b, limit)
            .await
        {
            Ok(a) => a,
            Err(Trouble::TooLarge) => return Ok(None),
            Err(other) => return Err(other),
        };
        if !answer.status.is_success() || Digest::of(&answer.body) != blob {
            return Ok(None);
        }
        Ok(Some(answer.body))
    }

    /// The referrers list of `digest`: the API's pages (at most [`MAX_REFERRER_PAGES`],
    /// [`MAX_REFERRERS`] entries), or the referrers tag's index when the registry answers the
    /// API with 404 (no such API: the spec's signal to fall back), 400, 405 or 501 (what some
    /// registries answer an unknown route with).
    async fn list_referrers(
        &self,
        endpoint: &Endpoint,
        auth: &Auth,
        repository: &str,
        digest: &Digest,
    ) -> Result<Vec<Referrer>, Trouble> {
        let mut url = format!("{}/v2/{repository}/referrers/{digest}", endpoint.base);
        let mut out = Vec::new();
        for page in 0..MAX_REFERRER_PAGES {
            // A page too large or not an index ends the list (what was read is kept): junk
            // next to an image must not make its real signature unreadable.
            let answer = match self.request(Method::GET, &url, auth).await {
                Ok(a) => a,
                Err(Trouble::TooLarge) => break,
                Err(other) => return Err(other),
            };
            match answer.status.as_u16() {
                200 => {}
                404 | 400 | 405 | 501 if page == 0 => {
                    return self
                        .fallback_referrers(endpoint, auth, repository, digest)
                        .await;
                }
                _ => return Err(super::status_trouble(answer.status, &answer.body)),
            }
            let Ok(body) = parse_manifest(&answer.body) else {
                break;
            };
            out.extend(entries(&body));
            if out.len() >= MAX_REFERRERS {
                out.truncate(MAX_REFERRERS);
                break;
            }
            match next_page(&answer.headers, &endpoint.base) {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// The index under the referrers tag `sha256-<hex>`, which clients maintain on a registry
    /// without the referrers API.
    async fn fallback_referrers(
        &self,
        endpoint: &Endpoint,
        auth: &Auth,
        repository: &str,
        digest: &Digest,
    ) -> Result<Vec<Referrer>, Trouble> {
        let tag = referrers_tag(digest);
        match self
            .fetch_manifest(&endpoint.manifest_url(repository, &tag), auth, None)
            .await
        {
            Ok(index) => Ok(entries(&index.body).take(MAX_REFERRERS).collect()),
            Err(Trouble::NotFound { .. } | Trouble::BadManifest(_) | Trouble::TooLarge) => {
                Ok(Vec::new())
            }
            Err(other) => Err(other),
        }
    }
}

/// The referrers tag of `digest` (OCI 1.1's fallback): `sha256-<hex>`.
pub fn referrers_tag(digest: &Digest) -> String {
    digest.as_str().replacen(':', "-", 1)
}

/// A manifest's artifact type: its `artifactType`, else its config's media type.
pub(super) fn artifact_type(manifest: &FetchedManifest) -> Option<String> {
    manifest.body.artifact_type.clone().or_else(|| {
        manifest
            .body
            .config
            .as_ref()
            .and_then(|c| c.get("mediaType"))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    })
}

/// The entries of a referrers index, each with a sha256 digest (others are skipped).
fn entries(index: &super::ManifestBody) -> impl Iterator<Item = Referrer> + '_ {
    index
        .manifests
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| {
            Some(Referrer {
                digest: e.digest.parse().ok()?,
                media_type: e.media_type.clone().unwrap_or_default(),
                artifact_type: e.artifact_type.clone(),
                annotations: e.annotations.clone(),
            })
        })
}

/// The next page of a referrers list: the `Link: <URL>; rel="next"` header, followed only to
/// the same registry (the credentials go with it).
fn next_page(headers: &reqwest::header::HeaderMap, base: &str) -> Option<String> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    let target = link.split(',').find_map(|value| {
        let (target, params) = value.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then_some(target)
    })?;
    let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    if target.starts_with('/') {
        return Some(format!("{base}{target}"));
    }
    target
        .strip_prefix(base)
        .filter(|rest| rest.starts_with('/'))
        .map(|_| target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_stays_on_the_registry() {
        let base = "https://r.example";
        let link = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::LINK, v.parse().unwrap());
            h
        };
        assert_eq!(
            next_page(&link("</v2/a/referrers/sha256:1?n=2>; rel=\"next\""), base).as_deref(),
            Some("https://r.example/v2/a/referrers/sha256:1?n=2")
        );
        assert_eq!(
            next_page(&link("<https://r.example/v2/a?last=x>; rel=\"next\""), base).as_deref(),
            Some("https://r.example/v2/a?last=x")
        );
        assert_eq!(
            next_page(&link("<https://evil.example/v2/a>; rel=\"next\""), base),
            None
        );
        assert_eq!(
            next_page(&link("<https://r.example.evil/v2/a>; rel=\"next\""), base),
            None
        );
        assert_eq!(next_page(&link("</v2/a>; rel=\"prev\""), base), None);
        assert_eq!(
            next_page(&link("</v2/p>; rel=\"prev\", </v2/n>; rel=\"next\""), base).as_deref(),
            Some("https://r.example/v2/n")
        );
    }
}

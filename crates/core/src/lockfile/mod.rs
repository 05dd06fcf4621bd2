//! The lockfile `lockstep.lock`: the domain type, its TOML wire form, deterministic bytes,
//! and the manifests binding.
//!
//! Parsing a lockfile for trust goes through [`Lockfile::from_verified`], which only takes
//! bytes whose signatures were checked first (verify before parse). `lock` reads the previous
//! lockfile with [`Lockfile::parse_unverified`] only to number the next generation and to
//! reuse platform lists it will re-check against the registry anyway.

pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use jiff::Timestamp;

use crate::error_chain::Quoting;
use crate::model::{Digest, ImageRef, ImageUse, ObjectRef, RefError, strip_digest};
use crate::registry::{PlatformDigest, Resolved};
use crate::render::{RenderRecord, Renderer};
use crate::signing::Verified;
use wire::{
    WireAttestation, WireBinding, WireBoundFile, WireImage, WireLockfile, WirePlatform,
    WirePromotion, WireRender, WireSignature, WireUse,
};

/// The lockfile's name inside the manifests directory.
pub const FILE_NAME: &str = "lockstep.lock";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest lockfile accepted (a 10 000-image lockfile is ~3 MiB).
pub const MAX_BYTES: usize = 32 << 20;
/// Most distinct image references one manifests directory (and so one lockfile) may have:
/// twice the 10 000 images verify is benchmarked with.
pub const MAX_IMAGES: usize = 20_000;

const HEADER: &str = "\
# lockstep.lock: written by `lockstep lock`; do not edit by hand.
# Signed by the detached lockstep.lock.<signer>.sig files over these exact bytes.
# Check: lockstep verify --allowed-signers FILE (or ssh-keygen -Y verify -n lockstep).
";

/// Everything that can be wrong with a lockfile's text.
#[derive(Debug, thiserror::Error)]
pub enum LockfileError {
    #[error("{FILE_NAME} is {size} bytes, over the limit of {MAX_BYTES}")]
    TooLarge { size: usize },
    #[error("{FILE_NAME} is not UTF-8")]
    NotUtf8,
    #[error("{FILE_NAME} is not valid TOML")]
    Toml(#[source] crate::error_chain::Quoting),
    #[error("{FILE_NAME} has no `version`; it was not written by lockstep")]
    NoVersion,
    #[error(
        "{FILE_NAME} has format version {found}; this lockstep reads version {VERSION} only (upgrade lockstep, or re-lock)"
    )]
    UnknownVersion { found: i64 },
    #[error("{FILE_NAME}: {field} is not an RFC 3339 time: {value:?}")]
    Time { field: &'static str, value: String },
    #[error("{FILE_NAME}: image {reference:?}: {what}")]
    Image { reference: String, what: String },
    #[error("{FILE_NAME}: image {reference:?}")]
    Reference {
        reference: String,
        #[source]
        source: RefError,
    },
    #[error("{FILE_NAME}: image {reference:?} is listed twice")]
    DuplicateImage { reference: String },
    #[error("{FILE_NAME} lists {count} images; the limit is {MAX_IMAGES}")]
    TooManyImages { count: usize },
}

/// The binding between a lockfile and the exact bytes of the manifests it pins.
///
/// Two bindings are equal when their digest and file count are: the listing is what the
/// digest is computed from (checked when a lockfile is read), kept to name the files a
/// mismatch is about, and absent from lockfiles written before it was recorded.
#[derive(Debug, Clone)]
pub struct ManifestBinding {
    pub digest: Digest,
    pub files: usize,
    /// Each bound file and the sha256 of its bytes, sorted by path bytes (may be empty).
    pub listing: Vec<(String, Digest)>,
}

impl PartialEq for ManifestBinding {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.files == other.files
    }
}

impl Eq for ManifestBinding {}

impl ManifestBinding {
    /// sha256 over `<path>\0<hex sha256 of content>\n` for each file, sorted by path bytes.
    pub fn compute<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut listing: Vec<(String, Digest)> = files
            .into_iter()
            .map(|(p, b)| (p.to_owned(), Digest::of(b)))
            .collect();
        listing.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        ManifestBinding {
            digest: listing_digest(&listing),
            files: listing.len(),
            listing,
        }
    }

    /// The files that differ between `self` (locked) and `now`: changed, added, removed.
    /// Empty lists when the locked binding has no listing.
    pub fn differences(&self, now: &ManifestBinding) -> BindingDiff {
        let mut diff = BindingDiff::default();
        if self.listing.is_empty() {
            return diff;
        }
        let locked: BTreeMap<&str, &Digest> =
            self.listing.iter().map(|(p, d)| (p.as_str(), d)).collect();
        let found: BTreeMap<&str, &Digest> =
            now.listing.iter().map(|(p, d)| (p.as_str(), d)).collect();
        for (path, digest) in &found {
            match locked.get(path) {
                Some(d) if d == digest => {}
                Some(_) => diff.changed.push((*path).to_owned()),
                None => diff.added.push((*path).to_owned()),
            }
        }
        diff.removed = locked
            .keys()
            .filter(|p| !found.contains_key(*p))
            .map(|p| (*p).to_owned())
            .collect();
        diff
    }
}

/// What [`ManifestBinding::differences`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BindingDiff {
    pub changed: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

fn listing_digest(listing: &[(String, Digest)]) -> Digest {
    let mut text = String::new();
    for (path, digest) in listing {
        let _ = writeln!(text, "{path}\0{}", digest.hex());
    }
    Digest::of(text.as_bytes())
}

/// Where an image is used, as recorded in the lockfile.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UseSite {
    pub file: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub container: String,
}

impl UseSite {
    pub fn of(image_use: &ImageUse) -> Self {
        let ObjectRef {
            kind,
            namespace,
            name,
            ..
        } = &image_use.object;
        UseSite {
            file: image_use.file.clone(),
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            container: image_use.container.clone(),
        }
    }
}

/// One reference as written and the digest it is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// As written in the manifests, without a digest: the entry's key.
    pub reference: String,
    pub image: ImageRef,
    pub digest: Digest,
    pub media_type: String,
    pub platforms: Vec<PlatformDigest>,
    /// Mirror repositories holding this digest (see `lockstep mirror`): normalized
    /// `registry/repository` names, without tag or digest, sorted, unique.
    pub mirrors: Vec<String>,
    /// Held at this digest: later locks keep it until released (see `lock::Holds`).
    pub held: bool,
    /// The cosign signatures of this digest that satisfied its `[[provenance]]` rule when it
    /// was locked, sorted by signature manifest digest (empty when no rule governs it).
    pub signatures: Vec<crate::provenance::SignatureRecord>,
    /// The valid attestations of the types its rule requires, sorted (type, manifest, key).
    pub attestations: Vec<crate::provenance::AttestationRecord>,
    pub uses: Vec<UseSite>,
}

impl ImageEntry {
    /// Where the pinned digest can be pulled: the entry's own repository, then each mirror,
    /// each as a digest-only reference.
    pub fn locations(&self) -> Vec<ImageRef> {
        let own = self.image.pin(self.digest.clone()).image().by_digest();
        own.into_iter()
            .chain(
                self.mirrors
                    .iter()
                    .filter_map(|m| ImageRef::parse(&format!("{m}@{}", self.digest)).ok()),
            )
            .collect()
    }
}

/// Where a promoted lockfile's digests came from (see `lockstep promote`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub environment: Option<String>,
    pub generation: u64,
    /// sha256 of the source lockfile's bytes.
    pub lockfile: Digest,
    /// The source directory in the same repository ('/'-separated from its root, empty for
    /// the root): where a verifier looks for the source lockfile in history. `None` when
    /// the source was outside the target's repository.
    pub path: Option<String>,
    /// The commit the source lockfile was read from, when it was committed.
    pub commit: Option<String>,
    /// The images (`registry/repository@digest`, sorted) this lock pins that the source
    /// does not: resolved from the registry with `promote --resolve-missing`. Every other
    /// digest must be the source's, which verifiers check.
    pub resolved: Vec<String>,
}

/// A parsed lockfile.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockfile {
    pub generation: u64,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub environment: Option<String>,
    pub manifests: ManifestBinding,
    /// The verified lockfile a `promote` took every digest from.
    pub promoted_from: Option<Promotion>,
    /// Sorted by `reference`, unique.
    pub images: Vec<ImageEntry>,
    /// The rendered outputs' provenance, sorted by output, unique.
    pub renders: Vec<RenderRecord>,
}

impl Lockfile {
    /// Build the lockfile for `uses` (already pinned: each use's reference carries the digest
    /// it will be written with) and the registry's answers.
    pub fn build(
        generation: u64,
        created: Timestamp,
        manifests: ManifestBinding,
        uses: &[ImageUse],
        resolved: &BTreeMap<ImageRef, Resolved>,
    ) -> Self {
        let mut by_ref: BTreeMap<String, ImageEntry> = BTreeMap::new();
        for u in uses {
            let key = strip_digest(&u.written).to_owned();
            let digest = u
                .reference
                .digest()
                .expect("build takes pinned uses")
                .clone();
            let entry = by_ref.entry(key.clone()).or_insert_with(|| {
                // The tag's answer when the pin is the tag's digest, else the answer for the
                // digest itself (a pin the author wrote).
                let (media_type, platforms) =
                    [Some(lookup_key(&u.reference)), u.reference.by_digest()]
                        .into_iter()
                        .flatten()
                        .find_map(|key| resolved.get(&key).filter(|r| r.digest == digest))
                        .map(|r| (r.media_type.clone(), r.platforms.clone()))
                        .unwrap_or_default();
                ImageEntry {
                    reference: key,
                    image: u.reference.without_digest(),
                    digest,
                    media_type,
                    platforms,
                    mirrors: Vec::new(),
                    held: false,
                    signatures: Vec::new(),
                    attestations: Vec::new(),
                    uses: Vec::new(),
                }
            });
            entry.uses.push(UseSite::of(u));
        }
        let images = by_ref
            .into_values()
            .map(|mut e| {
                e.uses.sort();
                e.uses.dedup();
                e
            })
            .collect();
        Lockfile {
            generation,
            created,
            expires: None,
            environment: None,
            promoted_from: None,
            manifests,
            images,
            renders: Vec::new(),
        }
    }

    /// Parse bytes whose signatures have been verified.
    pub fn from_verified(verified: &Verified<'_>) -> Result<Self, LockfileError> {
        Self::parse_bytes(verified.bytes())
    }

    /// Parse bytes nobody vouched for. Only for `lock`, to continue the generation count
    /// and reuse facts it re-checks; never for a trust decision.
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self, LockfileError> {
        Self::parse_bytes(bytes)
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Self, LockfileError> {
        if bytes.len() > MAX_BYTES {
            return Err(LockfileError::TooLarge { size: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| LockfileError::NotUtf8)?;
        // One parse in the common case; only when it fails is the text read again loosely,
        // so that a lockfile from another format version is refused by its version number
        // rather than by whatever field it renamed.
        let wire: WireLockfile = match toml::from_str(text) {
            Ok(wire) => wire,
            Err(e) => {
                let table: toml::Table =
                    toml::from_str(text).map_err(|e| LockfileError::Toml(Quoting::of(&e)))?;
                return Err(match table.get("version") {
                    None => LockfileError::NoVersion,
                    Some(toml::Value::Integer(v)) if *v != i64::from(VERSION) => {
                        LockfileError::UnknownVersion { found: *v }
                    }
                    Some(_) => LockfileError::Toml(Quoting::of(&e)),
                });
            }
        };
        Self::try_from(wire)
    }

    /// The lockfile's bytes: a fixed header and deterministic TOML. Same lockfile, same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = WireLockfile::from(self);
        let body = toml::to_string(&wire).expect("the wire lockfile serializes");
        let mut out = String::with_capacity(HEADER.len() + body.len());
        out.push_str(HEADER);
        out.push_str(&body);
        out.into_bytes()
    }

    /// Is `other` the same lock apart from its generation and creation time? Then re-locking
    /// would change nothing a cluster can see.
    pub fn same_content(&self, other: &Lockfile) -> bool {
        self.expires == other.expires
            && self.environment == other.environment
            && self.promoted_from == other.promoted_from
            && self.manifests == other.manifests
            && self.images == other.images
            && self.renders == other.renders
    }

    /// The registry facts this lockfile recorded, keyed like `resolve_all`'s answers.
    pub fn known_resolutions(&self) -> BTreeMap<ImageRef, Resolved> {
        self.images
            .iter()
            .map(|e| {
                let resolved = Resolved {
                    digest: e.digest.clone(),
                    media_type: e.media_type.clone(),
                    platforms: e.platforms.clone(),
                };
                (e.image.clone(), resolved)
            })
            .collect()
    }

    /// The entry for a reference as written (with or without a digest).
    pub fn entry(&self, written: &str) -> Option<&ImageEntry> {
        let key = strip_digest(written);
        self.images
            .binary_search_by(|e| e.reference.as_str().cmp(key))
            .ok()
            .map(|i| &self.images[i])
    }
}

/// The key `resolve_all` answers under for a reference: without a digest when it has a tag
/// (the tag is what is resolved), else the digest-only reference itself.
pub fn lookup_key(reference: &ImageRef) -> ImageRef {
    if reference.tag().is_some() {
        reference.without_digest()
    } else {
        reference.clone()
    }
}

fn format_time(t: Timestamp) -> String {
    // Whole seconds, UTC, `Z`: one spelling per instant.
    Timestamp::from_second(t.as_second())
        .expect("seconds of a timestamp are in range")
        .to_string()
}

fn parse_time(field: &'static str, value: &str) -> Result<Timestamp, LockfileError> {
    value.parse().map_err(|_| LockfileError::Time {
        field,
        value: value.to_owned(),
    })
}

/// The recorded mirrors of one image: each a normalized `registry/repository` (no tag, no
/// digest), sorted and unique, so that a lockfile has one spelling.
fn mirror_names(reference: &str, names: Vec<String>) -> Result<Vec<String>, LockfileError> {
    let bad = |what: String| LockfileError::Image {
        reference: reference.to_owned(),
        what,
    };
    for (i, name) in names.iter().enumerate() {
        let image =
            ImageRef::parse(name).map_err(|e| bad(format!("mirror {name:?}: {}", e.reason)))?;
        // A tag or digest, or a name Docker would spell otherwise, changes the name.
        if image.name() != *name {
            return Err(bad(format!(
                "mirror {name:?} must be a normalized registry/repository name (it normalizes to {})",
                image.name()
            )));
        }
        if i > 0 && names[i - 1] >= *name {
            return Err(bad("mirrors must be sorted and unique".into()));
        }
    }
    Ok(names)
}

/// `binding` with the listing a lockfile recorded, which must be sorted, unique and hash to
/// the recorded digest and count.
fn with_listing(
    mut binding: ManifestBinding,
    listing: Vec<WireBoundFile>,
) -> Result<ManifestBinding, LockfileError> {
    if listing.is_empty() {
        return Ok(binding);
    }
    let bad = |what: String| LockfileError::Image {
        reference: "[manifests]".into(),
        what,
    };
    let mut parsed: Vec<(String, Digest)> = Vec::with_capacity(listing.len());
    for file in listing {
        let digest = file
            .sha256
            .parse::<Digest>()
            .map_err(|e| bad(format!("file {:?}: {}", file.path, e.reason)))?;
        if let Some((last, _)) = parsed.last()
            && last.as_bytes() >= file.path.as_bytes()
        {
            return Err(bad(
                "the file listing must be sorted by path and unique".into()
            ));
        }
        parsed.push((file.path, digest));
    }
    if parsed.len() != binding.files || listing_digest(&parsed) != binding.digest {
        return Err(bad(
            "the file listing does not hash to the manifests digest".into(),
        ));
    }
    binding.listing = parsed;
    Ok(binding)
}

impl From<&Lockfile> for WireLockfile {
    fn from(l: &Lockfile) -> Self {
        WireLockfile {
            version: VERSION,
            generation: l.generation,
            created: format_time(l.created),
            expires: l.expires.map(format_time),
            environment: l.environment.clone(),
            promoted_from: l.promoted_from.as_ref().map(|p| WirePromotion {
                environment: p.environment.clone(),
                generation: p.generation,
                lockfile: p.lockfile.to_string(),
                path: p.path.clone(),
                commit: p.commit.clone(),
                resolved: p.resolved.clone(),
            }),
            manifests: WireBinding {
                digest: l.manifests.digest.to_string(),
                files: l.manifests.files,
                listing: listing_to_wire(&l.manifests.listing),
            },
            images: l
                .images
                .iter()
                .map(|e| WireImage {
                    reference: e.reference.clone(),
                    name: e.image.name(),
                    tag: e.image.tag().map(str::to_owned),
                    digest: e.digest.to_string(),
                    media_type: e.media_type.clone(),
                    platforms: e
                        .platforms
                        .iter()
                        .map(|p| WirePlatform {
                            platform: p.platform.clone(),
                            digest: p.digest.to_string(),
                        })
                        .collect(),
                    mirrors: e.mirrors.clone(),
                    held: e.held,
                    signatures: e
                        .signatures
                        .iter()
                        .map(|r| WireSignature {
                            manifest: r.manifest.to_string(),
                            format: (r.format != crate::provenance::SignatureFormat::SimpleSigning)
                                .then(|| r.format.as_str().to_owned()),
                            key: r.key.clone(),
                            payload: r.payload_base64(),
                            signature: r.signature_base64(),
                            certificate: r
                                .certificate
                                .as_deref()
                                .map(crate::provenance::encode_base64),
                            chain: r
                                .chain
                                .iter()
                                .map(|c| crate::provenance::encode_base64(c))
                                .collect(),
                            identity: r.identity.clone(),
                        })
                        .collect(),
                    attestations: e
                        .attestations
                        .iter()
                        .map(|a| WireAttestation {
                            predicate_type: a.predicate_type.clone(),
                            manifest: a.manifest.to_string(),
                            key: a.key.clone(),
                            identity: a.identity.clone(),
                            certificate: a
                                .certificate
                                .as_deref()
                                .map(crate::provenance::encode_base64),
                            chain: a
                                .chain
                                .iter()
                                .map(|c| crate::provenance::encode_base64(c))
                                .collect(),
                        })
                        .collect(),
                    uses: e
                        .uses
                        .iter()
                        .map(|u| WireUse {
                            file: u.file.clone(),
                            kind: u.kind.clone(),
                            namespace: u.namespace.clone(),
                            name: u.name.clone(),
                            container: u.container.clone(),
                        })
                        .collect(),
                })
                .collect(),
            renders: l.renders.iter().map(render_to_wire).collect(),
        }
    }
}

fn listing_to_wire(listing: &[(String, Digest)]) -> Vec<WireBoundFile> {
    listing
        .iter()
        .map(|(path, sha256)| WireBoundFile {
            path: path.clone(),
            sha256: sha256.to_string(),
        })
        .collect()
}

fn render_to_wire(r: &RenderRecord) -> WireRender {
    WireRender {
        output: r.output.clone(),
        renderer: r.renderer.name().to_owned(),
        version: r.version.clone(),
        args: r.args.clone(),
        chart: r.chart.clone(),
        roots: r.roots.clone(),
        inputs: r.inputs.digest.to_string(),
        files: r.inputs.files,
        listing: listing_to_wire(&r.inputs.listing),
    }
}

/// One render record as read: a known renderer, an input listing that hashes to its digest.
fn render_from_wire(w: WireRender) -> Result<RenderRecord, LockfileError> {
    let what = format!("[render] {:?}", w.output);
    let bad = |why: String| LockfileError::Image {
        reference: what.clone(),
        what: why,
    };
    let renderer = Renderer::parse(&w.renderer)
        .ok_or_else(|| bad(format!("unknown renderer {:?}", w.renderer)))?;
    let digest = w.inputs.parse::<Digest>().map_err(|e| bad(e.reason))?;
    let inputs = with_listing(
        ManifestBinding {
            digest,
            files: w.files,
            listing: Vec::new(),
        },
        w.listing,
    )
    .map_err(|e| bad(e.to_string()))?;
    // The roots as `lock` writes them: normalized, sorted, none inside another, the output
    // a path inside the locked directory — so a reader never walks a path `lock` would not.
    let normalized = w
        .roots
        .iter()
        .all(|r| crate::render::normalize(r).as_deref() == Ok(r.as_str()));
    if !normalized || crate::render::minimal_roots(w.roots.iter().cloned()) != w.roots {
        return Err(bad(
            "its roots are not normalized, sorted and disjoint as `lockstep lock` writes them"
                .into(),
        ));
    }
    if crate::render::normalize(&w.output).as_deref() != Ok(w.output.as_str())
        || w.output.starts_with("..")
    {
        return Err(bad(
            "its output is not a path inside the locked directory".into()
        ));
    }
    if let Some(chart) = &w.chart {
        let pinned = chart
            .strip_prefix(crate::render::OCI_SCHEME)
            .and_then(|r| crate::model::ImageRef::parse(r).ok())
            .is_some_and(|r| r.digest().is_some());
        if !pinned {
            return Err(bad(format!(
                "its chart {chart:?} is not oci://REGISTRY/REPOSITORY[:VERSION]@sha256:…"
            )));
        }
    }
    Ok(RenderRecord {
        chart: w.chart,
        output: w.output,
        renderer,
        version: w.version,
        args: w.args,
        roots: w.roots,
        inputs,
    })
}

impl TryFrom<WireLockfile> for Lockfile {
    type Error = LockfileError;

    fn try_from(w: WireLockfile) -> Result<Self, LockfileError> {
        if w.version != VERSION {
            return Err(LockfileError::UnknownVersion {
                found: i64::from(w.version),
            });
        }
        let manifests = ManifestBinding {
            digest: w
                .manifests
                .digest
                .parse()
                .map_err(|e: RefError| LockfileError::Image {
                    reference: "[manifests]".into(),
                    what: e.reason,
                })?,
            files: w.manifests.files,
            listing: Vec::new(),
        };
        let manifests = with_listing(manifests, w.manifests.listing)?;
        if w.images.len() > MAX_IMAGES {
            return Err(LockfileError::TooManyImages {
                count: w.images.len(),
            });
        }
        let mut seen = BTreeSet::new();
        let mut images = Vec::with_capacity(w.images.len());
        for wi in w.images {
            if !seen.insert(wi.reference.clone()) {
                return Err(LockfileError::DuplicateImage {
                    reference: wi.reference,
                });
            }
            images.push(image_from_wire(wi)?);
        }
        images.sort_by(|a, b| a.reference.cmp(&b.reference));
        let mut renders = w
            .renders
            .into_iter()
            .map(render_from_wire)
            .collect::<Result<Vec<_>, _>>()?;
        renders.sort_by(|a, b| a.output.cmp(&b.output));
        if let Some(pair) = renders.windows(2).find(|p| p[0].output == p[1].output) {
            return Err(LockfileError::Image {
                reference: format!("[render] {:?}", pair[0].output),
                what: "the output is listed twice".into(),
            });
        }
        Ok(Lockfile {
            generation: w.generation,
            created: parse_time("created", &w.created)?,
            expires: w
                .expires
                .as_deref()
                .map(|e| parse_time("expires", e))
                .transpose()?,
            environment: w.environment,
            promoted_from: w.promoted_from.map(promotion_from_wire).transpose()?,
            manifests,
            images,
            renders,
        })
    }
}

/// A promotion record as read: its digest parses, its commit is a hex object id.
fn promotion_from_wire(w: WirePromotion) -> Result<Promotion, LockfileError> {
    let bad = |what: String| LockfileError::Image {
        reference: "[promoted-from]".into(),
        what,
    };
    let lockfile = w.lockfile.parse::<Digest>().map_err(|e| bad(e.reason))?;
    if let Some(commit) = &w.commit
        && !((commit.len() == 40 || commit.len() == 64)
            && commit
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(bad(format!("commit {commit:?} is not a Git object id")));
    }
    if let Some(path) = &w.path
        && !is_tree_path(path)
    {
        return Err(bad(format!(
            "path {path:?} is not a directory path relative to the repository root"
        )));
    }
    for r in &w.resolved {
        if ImageRef::parse(r).map_or(true, |i| i.digest().is_none() || i.tag().is_some()) {
            return Err(bad(format!(
                "resolved image {r:?} is not registry/repository@digest"
            )));
        }
    }
    if !w.resolved.is_sorted_by(|a, b| a < b) {
        return Err(bad("resolved images are not sorted, each once".into()));
    }
    Ok(Promotion {
        environment: w.environment,
        generation: w.generation,
        lockfile,
        path: w.path,
        commit: w.commit,
        resolved: w.resolved,
    })
}

/// A directory path as Git trees name it: '/'-separated, relative, no empty, `.` or `..`
/// component, no control characters (empty for the root).
fn is_tree_path(path: &str) -> bool {
    path.is_empty()
        || (path.len() <= 4096
            && !path.chars().any(char::is_control)
            && path
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// One image entry as read: its reference, name and tag agree, its digests parse, its
/// mirrors are normalized names.
fn image_from_wire(wi: WireImage) -> Result<ImageEntry, LockfileError> {
    let digest = |reference: &str, d: &str| {
        d.parse::<Digest>().map_err(|e| LockfileError::Image {
            reference: reference.to_owned(),
            what: e.reason,
        })
    };
    if wi.reference.contains('@') {
        return Err(LockfileError::Image {
            reference: wi.reference,
            what: "`reference` must be written without a digest".into(),
        });
    }
    let image = ImageRef::parse(&wi.reference).map_err(|source| LockfileError::Reference {
        reference: wi.reference.clone(),
        source,
    })?;
    if image.name() != wi.name || image.tag() != wi.tag.as_deref() {
        return Err(LockfileError::Image {
            reference: wi.reference,
            what: format!("`name`/`tag` disagree with the reference (it normalizes to {image})"),
        });
    }
    let platforms = wi
        .platforms
        .iter()
        .map(|p| {
            Ok(PlatformDigest {
                platform: p.platform.clone(),
                digest: digest(&wi.reference, &p.digest)?,
            })
        })
        .collect::<Result<Vec<_>, LockfileError>>()?;
    let uses = wi
        .uses
        .into_iter()
        .map(|u| UseSite {
            file: u.file,
            kind: u.kind,
            namespace: u.namespace,
            name: u.name,
            container: u.container,
        })
        .collect();
    let mirrors = mirror_names(&wi.reference, wi.mirrors)?;
    if wi.signatures.len() > crate::provenance::MAX_RECORDS {
        return Err(LockfileError::Image {
            reference: wi.reference.clone(),
            what: format!(
                "records {} signatures, over the limit of {}",
                wi.signatures.len(),
                crate::provenance::MAX_RECORDS
            ),
        });
    }
    let mut signatures = Vec::with_capacity(wi.signatures.len());
    for ws in wi.signatures {
        let bad = |what: String| LockfileError::Image {
            reference: wi.reference.clone(),
            what,
        };
        let manifest = digest(&wi.reference, &ws.manifest)?;
        if !is_fingerprint(&ws.key) {
            return Err(bad(format!(
                "signature key {:?} is not a sha256: fingerprint",
                ws.key
            )));
        }
        let mut record = crate::provenance::SignatureRecord::from_base64(
            manifest,
            ws.key,
            &ws.payload,
            &ws.signature,
        )
        .map_err(|e| bad(format!("signature record: {e}")))?;
        record.format = match ws.format.as_deref() {
            None => crate::provenance::SignatureFormat::SimpleSigning,
            Some("dsse") => crate::provenance::SignatureFormat::Dsse,
            Some(other) => {
                return Err(bad(format!(
                    "signature record: unknown format {other:?} (only \"dsse\", or none for simple-signing)"
                )));
            }
        };
        let cert = |b64: &str| {
            crate::provenance::decode_base64(b64)
                .filter(|d| d.len() <= crate::provenance::certificate::MAX_CERT_BYTES)
                .ok_or_else(|| {
                    bad(
                        "signature record: a certificate is not base64 DER within the size limit"
                            .into(),
                    )
                })
        };
        if ws.chain.len() > crate::provenance::certificate::MAX_CHAIN {
            return Err(bad(
                "signature record: the certificate chain is too long".into()
            ));
        }
        record.certificate = ws.certificate.as_deref().map(cert).transpose()?;
        record.chain = ws.chain.iter().map(|c| cert(c)).collect::<Result<_, _>>()?;
        if ws.identity.as_ref().is_some_and(|i| i.len() > 1024) {
            return Err(bad(
                "signature record: the identity is over 1024 bytes".into()
            ));
        }
        record.identity = ws.identity;
        if record.certificate.is_none() && (!record.chain.is_empty() || record.identity.is_some()) {
            return Err(bad(
                "signature record: a chain or identity without a certificate".into(),
            ));
        }
        signatures.push(record);
    }
    if !signatures.is_sorted_by(|a, b| a.manifest < b.manifest) {
        return Err(LockfileError::Image {
            reference: wi.reference.clone(),
            what: "signature records are not sorted by manifest digest, each once".into(),
        });
    }
    let attestations = attestation_records(&wi.reference, wi.attestations)?;
    Ok(ImageEntry {
        digest: digest(&wi.reference, &wi.digest)?,
        reference: wi.reference,
        image,
        media_type: wi.media_type,
        platforms,
        mirrors,
        held: wi.held,
        signatures,
        attestations,
        uses,
    })
}

/// An image's `[[image.attestation]]` records: at most [`crate::provenance::MAX_RECORDS`],
/// sorted by predicate type, each type once.
fn attestation_records(
    reference: &str,
    wire: Vec<WireAttestation>,
) -> Result<Vec<crate::provenance::AttestationRecord>, LockfileError> {
    let bad = |what: String| LockfileError::Image {
        reference: reference.to_owned(),
        what,
    };
    if wire.len() > crate::provenance::MAX_RECORDS {
        return Err(bad(format!(
            "records {} attestations, over the limit of {}",
            wire.len(),
            crate::provenance::MAX_RECORDS
        )));
    }
    let mut out = Vec::with_capacity(wire.len());
    for wa in wire {
        if wa.predicate_type.is_empty() || wa.predicate_type.len() > 256 {
            return Err(bad(
                "an attestation's predicate type is empty or over 256 bytes".into(),
            ));
        }
        if !is_fingerprint(&wa.key) {
            return Err(bad(format!(
                "attestation key {:?} is not a sha256: fingerprint",
                wa.key
            )));
        }
        if wa.identity.as_ref().is_some_and(|i| i.len() > 1024) {
            return Err(bad("an attestation's identity is over 1024 bytes".into()));
        }
        if wa.chain.len() > crate::provenance::certificate::MAX_CHAIN {
            return Err(bad("an attestation's certificate chain is too long".into()));
        }
        let cert = |b64: &str| {
            crate::provenance::decode_base64(b64)
                .filter(|d| d.len() <= crate::provenance::certificate::MAX_CERT_BYTES)
                .ok_or_else(|| {
                    bad(
                        "an attestation's certificate is not base64 DER within the size limit"
                            .into(),
                    )
                })
        };
        let certificate = wa.certificate.as_deref().map(cert).transpose()?;
        let chain = wa
            .chain
            .iter()
            .map(|c| cert(c))
            .collect::<Result<Vec<_>, _>>()?;
        if certificate.is_some() != wa.identity.is_some()
            || (certificate.is_none() && !chain.is_empty())
        {
            return Err(bad(
                "an attestation record has an identity without a certificate, or the reverse"
                    .into(),
            ));
        }
        out.push(crate::provenance::AttestationRecord {
            manifest: wa.manifest.parse::<Digest>().map_err(|e| bad(e.reason))?,
            predicate_type: wa.predicate_type,
            key: wa.key,
            identity: wa.identity,
            certificate,
            chain,
        });
    }
    if !out.is_sorted_by(|a, b| a < b) {
        return Err(bad(
            "attestation records are not sorted (by predicate type, manifest and key), each once"
                .into(),
        ));
    }
    Ok(out)
}

/// `sha256:` and 64 lowercase hex digits.
fn is_fingerprint(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lockfile {
        let d = Digest::of(b"api");
        let image = ImageRef::parse("127.0.0.1:5000/shop/api:1.4").unwrap();
        Lockfile {
            renders: Vec::new(),
            generation: 3,
            created: Timestamp::from_second(1_700_000_000).unwrap(),
            expires: None,
            environment: None,
            promoted_from: None,
            manifests: ManifestBinding::compute([("a.yaml", &b"x"[..])]),
            images: vec![ImageEntry {
                reference: "127.0.0.1:5000/shop/api:1.4".into(),
                image,
                digest: d.clone(),
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                platforms: vec![PlatformDigest {
                    platform: "linux/amd64".into(),
                    digest: Digest::of(b"amd64"),
                }],
                mirrors: vec!["mirror.example:5000/backup/shop/api".into()],
                held: false,
                signatures: Vec::new(),
                attestations: Vec::new(),
                uses: vec![UseSite {
                    file: "a.yaml".into(),
                    kind: "Deployment".into(),
                    namespace: "shop".into(),
                    name: "api".into(),
                    container: "containers/api".into(),
                }],
            }],
        }
    }

    #[test]
    fn round_trips_through_bytes_deterministically() {
        let lock = sample();
        let bytes = lock.to_bytes();
        let again = Lockfile::parse_unverified(&bytes).unwrap();
        assert_eq!(again, lock);
        assert_eq!(again.to_bytes(), bytes);
    }

    #[test]
    fn promotion_records_round_trip_and_paths_outside_the_repository_are_refused() {
        let with_path = |path: &str| {
            let mut lock = sample();
            lock.promoted_from = Some(Promotion {
                environment: Some("staging".into()),
                generation: 7,
                lockfile: Digest::of(b"staging lock"),
                path: Some(path.into()),
                commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                resolved: vec![format!("r.example/shop/api@{}", Digest::of(b"x"))],
            });
            let bytes = lock.to_bytes();
            (lock, Lockfile::parse_unverified(&bytes))
        };
        for good in ["", "envs/staging", "staging"] {
            let (lock, read) = with_path(good);
            assert_eq!(read.unwrap(), lock, "{good:?}");
        }
        for bad in [
            "../staging",
            "/envs/staging",
            "envs//staging",
            "envs/./s",
            "envs/",
            "a\nb",
        ] {
            let (_, read) = with_path(bad);
            let error = read.unwrap_err().to_string();
            assert!(error.contains("[promoted-from]"), "{bad:?}: {error}");
        }
    }

    /// Regression: a signed lockfile's render roots were used as written, so one with
    /// `../x/../../y` or a root inside another was walked where `lock` would never walk.
    #[test]
    fn render_records_with_roots_lock_would_not_write_are_refused() {
        let with_roots = |roots: &[&str], output: &str| {
            let mut lock = sample();
            lock.renders.push(RenderRecord {
                output: output.into(),
                renderer: Renderer::Helm,
                version: "v3.21.4".into(),
                args: vec!["template".into()],
                roots: roots.iter().map(|r| (*r).to_owned()).collect(),
                inputs: ManifestBinding::compute([("../c/Chart.yaml", &b"x"[..])]),
                chart: None,
            });
            Lockfile::parse_unverified(&lock.to_bytes())
        };
        assert!(with_roots(&["../c", "../values.yaml"], "api.yaml").is_ok());
        for roots in [
            &["../c/../../x"][..],
            &["../c", "../c/sub"],
            &["../z", "../c"],
            &["/etc"],
            &["../c", "../c"],
        ] {
            let err = with_roots(roots, "api.yaml").unwrap_err().to_string();
            assert!(
                err.contains("its roots are not normalized"),
                "{roots:?}: {err}"
            );
        }
        for output in ["../api.yaml", "./api.yaml", "/api.yaml"] {
            let err = with_roots(&["../c"], output).unwrap_err().to_string();
            assert!(err.contains("its output is not a path"), "{output}: {err}");
        }
    }

    #[test]
    fn unknown_version_is_refused_by_number() {
        let text = String::from_utf8(sample().to_bytes())
            .unwrap()
            .replace("version = 1", "version = 7");
        let err = Lockfile::parse_unverified(text.as_bytes()).unwrap_err();
        assert!(
            matches!(err, LockfileError::UnknownVersion { found: 7 }),
            "{err}"
        );
        assert!(err.to_string().contains("version 7"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = String::from_utf8(sample().to_bytes())
            .unwrap()
            .replace("generation = 3", "generation = 3\nsurprise = 1");
        assert!(matches!(
            Lockfile::parse_unverified(text.as_bytes()),
            Err(LockfileError::Toml(_))
        ));
    }

    #[test]
    fn mirrors_must_be_normalized_sorted_names() {
        let text = String::from_utf8(sample().to_bytes()).unwrap();
        let with = |mirrors: &str| {
            text.replace(
                "mirror = [\"mirror.example:5000/backup/shop/api\"]",
                &format!("mirror = {mirrors}"),
            )
        };
        assert_ne!(with("[]"), text, "the sample records a mirror");
        for bad in [
            r#"["mirror.example:5000/backup/shop/api:1.4"]"#,
            r#"["m.io/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#,
            r#"["nginx"]"#,
            r#"["m.io/b", "m.io/a"]"#,
            r#"["m.io/a", "m.io/a"]"#,
        ] {
            let err = Lockfile::parse_unverified(with(bad).as_bytes()).unwrap_err();
            assert!(matches!(err, LockfileError::Image { .. }), "{bad}: {err}");
        }
        let two = Lockfile::parse_unverified(with(r#"["m.io/a", "m.io/b"]"#).as_bytes()).unwrap();
        assert_eq!(two.images[0].mirrors, ["m.io/a", "m.io/b"]);
        let at: Vec<String> = two.images[0]
            .locations()
            .iter()
            .map(ToString::to_string)
            .collect();
        let d = Digest::of(b"api");
        assert_eq!(
            at,
            [
                format!("127.0.0.1:5000/shop/api@{d}"),
                format!("m.io/a@{d}"),
                format!("m.io/b@{d}")
            ]
        );
    }

    #[test]
    fn attestation_records_round_trip_and_malformed_ones_are_refused() {
        let mut lock = sample();
        let key = format!("sha256:{}", "a".repeat(64));
        let record = |kind: &str, n: &[u8]| crate::provenance::AttestationRecord {
            predicate_type: kind.into(),
            manifest: Digest::of(n),
            key: key.clone(),
            identity: None,
            certificate: None,
            chain: Vec::new(),
        };
        let mut records = vec![
            record("https://slsa.dev/provenance/v1", b"1"),
            record("https://spdx.dev/Document", b"2"),
        ];
        records.sort();
        lock.images[0].attestations = records.clone();
        let bytes = lock.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(
                "[[image.attestation]]\npredicate-type = \"https://slsa.dev/provenance/v1\""
            ),
            "{text}"
        );
        let again = Lockfile::parse_unverified(&bytes).unwrap();
        assert_eq!(again.images[0].attestations, records);
        // Unsorted, an identity without a certificate, a key that is no fingerprint.
        let mut swapped = lock.clone();
        swapped.images[0].attestations.reverse();
        let mut claimed = lock.clone();
        claimed.images[0].attestations[0].identity = Some("ci@example.com".into());
        let mut keyless = lock.clone();
        keyless.images[0].attestations[0].key = "cosign.pub".into();
        for (what, bad) in [
            ("unsorted", swapped),
            ("identity", claimed),
            ("key", keyless),
        ] {
            let err = Lockfile::parse_unverified(&bad.to_bytes()).unwrap_err();
            assert!(matches!(err, LockfileError::Image { .. }), "{what}: {err}");
        }
    }

    #[test]
    fn more_images_than_the_limit_are_refused_by_count() {
        let mut lock = sample();
        let entry = lock.images[0].clone();
        lock.images = (0..=MAX_IMAGES)
            .map(|i| {
                let reference = format!("127.0.0.1:5000/shop/api{i}:1.4");
                ImageEntry {
                    image: ImageRef::parse(&reference).unwrap(),
                    reference,
                    ..entry.clone()
                }
            })
            .collect();
        let err = Lockfile::parse_unverified(&lock.to_bytes()).unwrap_err();
        assert!(
            matches!(err, LockfileError::TooManyImages { count } if count == MAX_IMAGES + 1),
            "{err}"
        );
    }

    #[test]
    fn name_must_agree_with_reference() {
        let text = String::from_utf8(sample().to_bytes()).unwrap().replace(
            "name = \"127.0.0.1:5000/shop/api\"",
            "name = \"127.0.0.1:5000/shop/evil\"",
        );
        assert!(matches!(
            Lockfile::parse_unverified(text.as_bytes()),
            Err(LockfileError::Image { .. })
        ));
    }

    #[test]
    fn binding_depends_on_paths_and_bytes_not_order() {
        let a = ManifestBinding::compute([("a.yaml", &b"1"[..]), ("b.yaml", &b"2"[..])]);
        let b = ManifestBinding::compute([("b.yaml", &b"2"[..]), ("a.yaml", &b"1"[..])]);
        assert_eq!(a, b);
        assert_eq!(a.files, 2);
        let renamed = ManifestBinding::compute([("a.yaml", &b"1"[..]), ("c.yaml", &b"2"[..])]);
        assert_ne!(a.digest, renamed.digest);
        let edited = ManifestBinding::compute([("a.yaml", &b"1"[..]), ("b.yaml", &b"3"[..])]);
        assert_ne!(a.digest, edited.digest);
        // A path cannot run into its content: the separator is a NUL byte.
        let x = ManifestBinding::compute([("a", &b"b"[..])]);
        let y = ManifestBinding::compute([("a\0b", &b""[..])]);
        assert_ne!(x.digest, y.digest);
    }

    #[test]
    fn a_binding_names_the_files_that_differ_and_its_listing_must_hash_to_its_digest() {
        let locked = ManifestBinding::compute([("a.yaml", &b"a"[..]), ("b.yaml", &b"b"[..])]);
        let now = ManifestBinding::compute([("a.yaml", &b"A"[..]), ("c.yaml", &b"c"[..])]);
        assert_eq!(
            locked.differences(&now),
            BindingDiff {
                changed: vec!["a.yaml".into()],
                added: vec!["c.yaml".into()],
                removed: vec!["b.yaml".into()],
            }
        );
        // Written and read back, the listing stays; bindings compare by digest and count.
        let mut lock = sample();
        lock.manifests = locked.clone();
        let read = Lockfile::parse_unverified(&lock.to_bytes()).unwrap();
        assert_eq!(read.manifests.listing, locked.listing);
        let unlisted = ManifestBinding {
            listing: Vec::new(),
            ..locked.clone()
        };
        assert_eq!(unlisted, locked);
        assert_eq!(unlisted.differences(&now), BindingDiff::default());
        // A listing that does not hash to the digest is refused.
        let text = String::from_utf8(lock.to_bytes()).unwrap();
        let hash_of_a = Digest::of(b"a").to_string();
        let forged = text.replace(&hash_of_a, &Digest::of(b"x").to_string());
        assert_ne!(forged, text);
        let err = Lockfile::parse_unverified(forged.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not hash"), "{err}");
    }

    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schema/lockfile.schema.json"
        );
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current != wire::schema_json() {
            if std::env::var_os("LOCKSTEP_UPDATE_SCHEMA").is_some() {
                std::fs::write(path, wire::schema_json()).unwrap();
            } else {
                panic!(
                    "schema/lockfile.schema.json is stale: run LOCKSTEP_UPDATE_SCHEMA=1 cargo test -p lockstep-core schema"
                );
            }
        }
    }

    #[test]
    fn sample_lockfile_validates_field_names_against_schema() {
        // Every top-level and image key the writer emits is a property in the schema.
        let schema: serde_json::Value = serde_json::from_str(&wire::schema_json()).unwrap();
        let lock: toml::Table =
            toml::from_str(std::str::from_utf8(&sample().to_bytes()).unwrap()).unwrap();
        let props = schema["properties"].as_object().unwrap();
        for key in lock.keys() {
            assert!(props.contains_key(key), "{key} missing from schema");
        }
        let required: Vec<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for key in required {
            assert!(lock.contains_key(key), "required {key} not written");
        }
    }
}

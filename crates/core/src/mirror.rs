//! `lockstep mirror`, pure: where each pinned image is copied, the tag that keeps the copy
//! from garbage collection, and the totals of a run. The copying itself is an edge (the
//! `lockstep` crate's `resolve::Copier`, over the Distribution API); the lockfile
//! generation that records the mirror is [`crate::lock::mirrored`].
//!
//! A mirror name is `PREFIX/<repository>`: the source registry is dropped and the repository
//! path kept, so `registry.example/shop/api` mirrored to `backup.example/dr` lives at
//! `backup.example/dr/shop/api`. Copies are by digest, so two sources with the same
//! repository path share a mirror repository without overwriting each other.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::lockfile::Lockfile;
use crate::manifest::rewrite::{Edit, RewriteError, rewrite};
use crate::manifest::{DecodedObject, ScanError, scan_file};
use crate::model::{Digest, ImageRef};
use crate::verify::VerifiedDir;

/// `--to` was not `REGISTRY[/PATH]`, or names an image's own repository.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("--to {text:?}: {reason}")]
    BadTarget { text: String, reason: String },
    #[error(
        "{reference}: the mirror name {target} is the image's own repository; a mirror must be another repository"
    )]
    SameRepository { reference: String, target: String },
    #[error("the signed lockfile does not record the mirror {mirror} for {}: run `lockstep mirror --to {mirror}` first", .references.join(", "))]
    NotMirrored {
        mirror: String,
        references: Vec<String>,
    },
    #[error("cannot point the manifests at the mirror")]
    Rewrite(#[source] RewriteError),
    #[error("the manifests pointed at the mirror cannot be read back")]
    Reread(#[source] ScanError),
}

/// Where copies go: a registry host and an optional path prefix inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    registry: String,
    prefix: String,
}

impl MirrorTarget {
    /// Parse `REGISTRY[/PATH]`. The registry must be written out (a host with a `.` or a port,
    /// `localhost`, or an IP): a bare word would silently mean Docker Hub.
    pub fn parse(text: &str) -> Result<Self, MirrorError> {
        let fail = |reason: &str| MirrorError::BadTarget {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim_end_matches('/');
        let (registry, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if registry.is_empty() {
            return Err(fail("it must start with a registry host"));
        }
        // Parse a name under the target to reuse the reference rules (host, path components).
        let probe = ImageRef::parse(&format!("{trimmed}/x"))
            .map_err(|e| fail(&format!("not a registry/path: {}", e.reason)))?;
        if probe.registry() != registry {
            return Err(fail(
                "it must start with a registry host (a name with a dot or a port, localhost, or an IP address)",
            ));
        }
        Ok(MirrorTarget {
            registry: registry.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The registry the copies go to.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The mirror repository of `image`: `REGISTRY/PREFIX/<repository>`.
    pub fn name_for(&self, image: &ImageRef) -> String {
        if self.prefix.is_empty() {
            format!("{}/{}", self.registry, image.repository())
        } else {
            format!("{}/{}/{}", self.registry, self.prefix, image.repository())
        }
    }
}

impl std::fmt::Display for MirrorTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.registry)
        } else {
            write!(f, "{}/{}", self.registry, self.prefix)
        }
    }
}

/// The tag a mirrored image is also pushed under. Copies are addressed by digest; the tag
/// is there because registries garbage-collect untagged manifests (Distribution's
/// `garbage-collect --delete-untagged`, retention policies), and a recovery copy that
/// silently disappears is no copy. It names the digest, so it never moves.
pub fn protecting_tag(digest: &Digest) -> String {
    format!("lockstep-sha256-{}", digest.hex())
}

/// The verified manifests with every image pulled from its copy under `target`, by the same
/// digest: `registry/shop/api:1.4@sha256:…` becomes `MIRROR/shop/api:1.4@sha256:…`. Only
/// when the signed lockfile records that mirror for every image: the signers vouched that
/// the copy exists, and the digest makes the bytes the same wherever they are pulled from.
pub fn manifests_from_mirror<'a>(
    verified: &VerifiedDir<'a>,
    target: &MirrorTarget,
) -> Result<Vec<(&'a str, Vec<u8>)>, MirrorError> {
    let lock = verified.lockfile();
    let mut unmirrored = std::collections::BTreeSet::new();
    let mut edits: BTreeMap<&str, Vec<Edit>> = BTreeMap::new();
    for u in &verified.scan().uses {
        let pinned = u.reference.digest().zip(lock.entry(&u.written));
        let Some((digest, entry)) = pinned else {
            // verify_dir guarantees both; a use without them cannot be pointed anywhere.
            unmirrored.insert(u.written.clone());
            continue;
        };
        let name = target.name_for(&entry.image);
        if entry.mirrors.binary_search(&name).is_err() {
            unmirrored.insert(entry.reference.clone());
            continue;
        }
        let tag = u
            .reference
            .tag()
            .map(|t| format!(":{t}"))
            .unwrap_or_default();
        edits.entry(u.file.as_str()).or_default().push(Edit {
            span: u.span.clone(),
            replacement: format!("{name}{tag}@{digest}"),
        });
    }
    if !unmirrored.is_empty() {
        return Err(MirrorError::NotMirrored {
            mirror: target.to_string(),
            references: unmirrored.into_iter().collect(),
        });
    }
    verified
        .manifests()
        .map(|(path, bytes)| match edits.get(path) {
            Some(edits) => rewrite(path, bytes, edits)
                .map(|b| (path, b))
                .map_err(MirrorError::Rewrite),
            None => Ok((path, bytes.to_vec())),
        })
        .collect()
}

/// The verified objects with every image pointed at its copy under `target` (see
/// [`manifests_from_mirror`]): the rewritten files read back with the same reader and the same
/// `lockstep.toml`, so only the image strings differ from what was verified.
pub fn objects_from_mirror(
    verified: &VerifiedDir<'_>,
    target: &MirrorTarget,
) -> Result<Vec<DecodedObject>, MirrorError> {
    let mut objects = Vec::new();
    for (path, bytes) in manifests_from_mirror(verified, target)? {
        let scan = scan_file(path, &bytes, &verified.scan().config).map_err(MirrorError::Reread)?;
        objects.extend(scan.objects);
    }
    Ok(objects)
}

/// One image to copy: a pinned digest from its repository to its mirror repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    /// `registry/repository@digest` at the source.
    pub source: ImageRef,
    /// `registry/repository@digest` at the mirror.
    pub target: ImageRef,
    /// The lockfile references pinned to this digest, for messages.
    pub references: Vec<String>,
    /// The tag the copy is pushed under at the mirror: the [`protecting_tag`] of an image;
    /// for a cosign signature manifest, cosign's tag for the image's digest
    /// (`sha256-<hex>.sig`), where `cosign verify` against the mirror looks for it; none for
    /// a Sigstore bundle, an OCI 1.1 referrer of the image pushed by digest (and listed in the
    /// mirror's referrers tag when the mirror has no referrers API).
    pub tag: Option<String>,
}

impl CopyJob {
    /// The pinned digest (the same at both ends).
    pub fn digest(&self) -> &Digest {
        self.source.digest().expect("a copy job is by digest")
    }
}

/// The copies `lock` needs for `target`: one per distinct repository and digest, in
/// lockfile order. Images that already record this mirror are copied again too (a cheap
/// check when the copy is there), so a lost mirror can be repaired by re-running.
pub fn plan(lock: &Lockfile, target: &MirrorTarget) -> Result<Vec<CopyJob>, MirrorError> {
    let mut jobs: BTreeMap<ImageRef, CopyJob> = BTreeMap::new();
    for entry in &lock.images {
        let name = target.name_for(&entry.image);
        if name == entry.image.name() {
            return Err(MirrorError::SameRepository {
                reference: entry.reference.clone(),
                target: name,
            });
        }
        let at = |name: &str| {
            ImageRef::parse(&format!("{name}@{}", entry.digest)).map_err(|e| {
                MirrorError::BadTarget {
                    text: target.to_string(),
                    reason: e.to_string(),
                }
            })
        };
        let mirror_text = target.to_string();
        let source = at(&entry.image.name())?;
        let target = at(&name)?;
        jobs.entry(source.clone())
            .or_insert_with(|| CopyJob {
                source,
                target,
                references: Vec::new(),
                tag: Some(protecting_tag(&entry.digest)),
            })
            .references
            .push(entry.reference.clone());
        // The signatures that satisfied its provenance rule go along, so that the mirror
        // stays verifiable.
        // A manifest beside the image, at `name`.
        let beside = |name: &str, manifest: &Digest| {
            ImageRef::parse(&format!("{name}@{manifest}")).map_err(|e| MirrorError::BadTarget {
                text: mirror_text.clone(),
                reason: e.to_string(),
            })
        };
        for record in &entry.signatures {
            let source = beside(&entry.image.name(), &record.manifest)?;
            let target = beside(&name, &record.manifest)?;
            jobs.entry(source.clone())
                .or_insert_with(|| CopyJob {
                    source,
                    target,
                    references: Vec::new(),
                    tag: match record.format {
                        crate::provenance::SignatureFormat::SimpleSigning => {
                            Some(crate::provenance::signature_tag(&entry.digest))
                        }
                        crate::provenance::SignatureFormat::Dsse => None,
                    },
                })
                .references
                .push(format!("{} (its cosign signature)", entry.reference));
        }
        // And the attestations it requires, under cosign's `.att` tag unless a referrer.
        for record in &entry.attestations {
            let source = beside(&entry.image.name(), &record.manifest)?;
            let target = beside(&name, &record.manifest)?;
            jobs.entry(source.clone())
                .or_insert_with(|| CopyJob {
                    source,
                    target,
                    references: Vec::new(),
                    tag: Some(format!(
                        "{}.att",
                        entry.digest.as_str().replacen(':', "-", 1)
                    )),
                })
                .references
                .push(format!(
                    "{} (its {} attestation)",
                    entry.reference, record.predicate_type
                ));
        }
    }
    Ok(jobs.into_values().collect())
}

/// What copying one image (or, summed, a run) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Copied {
    /// Images found complete at the mirror (their protecting tag names the digest).
    pub images_present: usize,
    /// Images copied.
    pub images_copied: usize,
    /// Manifests pushed (an index and each of its platform manifests count one each).
    pub manifests_pushed: usize,
    /// Blobs the mirror had in that repository already.
    pub blobs_present: usize,
    /// Blobs mounted from another repository of the mirror registry (no bytes moved).
    pub blobs_mounted: usize,
    /// Blobs streamed from the source to the mirror.
    pub blobs_uploaded: usize,
    /// Bytes of the uploaded blobs.
    pub bytes_uploaded: u64,
}

impl std::ops::AddAssign for Copied {
    fn add_assign(&mut self, o: Copied) {
        self.images_present += o.images_present;
        self.images_copied += o.images_copied;
        self.manifests_pushed += o.manifests_pushed;
        self.blobs_present += o.blobs_present;
        self.blobs_mounted += o.blobs_mounted;
        self.blobs_uploaded += o.blobs_uploaded;
        self.bytes_uploaded += o.bytes_uploaded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockfile::{ImageEntry, ManifestBinding};
    use jiff::Timestamp;

    fn entry(reference: &str, digest: &Digest) -> ImageEntry {
        ImageEntry {
            reference: reference.into(),
            image: ImageRef::parse(reference).unwrap(),
            digest: digest.clone(),
            media_type: crate::registry::OCI_MANIFEST.into(),
            platforms: vec![],
            mirrors: vec![],
            held: false,
            signatures: Vec::new(),
            attestations: Vec::new(),
            uses: vec![],
        }
    }

    fn lock(entries: Vec<ImageEntry>) -> Lockfile {
        Lockfile {
            renders: Vec::new(),
            generation: 1,
            created: Timestamp::UNIX_EPOCH,
            expires: None,
            environment: None,
            promoted_from: None,
            manifests: ManifestBinding::compute([]),
            images: entries,
        }
    }

    #[test]
    fn targets_need_a_registry_host() {
        for ok in [
            "backup.example/dr",
            "127.0.0.1:5001",
            "127.0.0.1:5001/a/b/",
            "localhost/x",
        ] {
            assert!(MirrorTarget::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "dr",
            "dr/prod",
            "",
            "/x",
            "backup.example/UPPER",
            "h.io/a//b",
        ] {
            assert!(MirrorTarget::parse(bad).is_err(), "{bad}");
        }
        let t = MirrorTarget::parse("backup.example:5000/dr/").unwrap();
        assert_eq!(t.to_string(), "backup.example:5000/dr");
        assert_eq!(t.registry(), "backup.example:5000");
    }

    #[test]
    fn names_keep_the_repository_path() {
        let t = MirrorTarget::parse("backup.example/dr").unwrap();
        let nginx = ImageRef::parse("nginx:1.27").unwrap();
        assert_eq!(t.name_for(&nginx), "backup.example/dr/library/nginx");
        let bare = MirrorTarget::parse("backup.example").unwrap();
        let api = ImageRef::parse("r.io/shop/api:1").unwrap();
        assert_eq!(bare.name_for(&api), "backup.example/shop/api");
    }

    #[test]
    fn one_job_per_repository_and_digest() {
        let d1 = Digest::of(b"1");
        let d2 = Digest::of(b"2");
        let l = lock(vec![
            entry("r.io/shop/api:1", &d1),
            entry("r.io/shop/api:latest-stable", &d1),
            entry("r.io/shop/web:1", &d2),
        ]);
        let jobs = plan(&l, &MirrorTarget::parse("m.io/dr").unwrap()).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].source.to_string(), format!("r.io/shop/api@{d1}"));
        assert_eq!(jobs[0].target.to_string(), format!("m.io/dr/shop/api@{d1}"));
        assert_eq!(
            jobs[0].references,
            vec!["r.io/shop/api:1", "r.io/shop/api:latest-stable"]
        );
        assert_eq!(jobs[1].target.to_string(), format!("m.io/dr/shop/web@{d2}"));
    }

    #[test]
    fn a_mirror_onto_itself_is_refused() {
        let l = lock(vec![entry("r.io/shop/api:1", &Digest::of(b"1"))]);
        let err = plan(&l, &MirrorTarget::parse("r.io").unwrap()).unwrap_err();
        assert!(matches!(err, MirrorError::SameRepository { .. }), "{err}");
    }

    #[test]
    fn the_protecting_tag_names_the_digest_and_is_a_valid_tag() {
        let d = Digest::of(b"x");
        let tag = protecting_tag(&d);
        assert!(tag.ends_with(d.hex()));
        ImageRef::parse(&format!("r.io/a:{tag}")).unwrap();
    }
}

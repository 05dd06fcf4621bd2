//! The registry half of the truth, pure: which digests a lockfile pins (and so which
//! digest-only references `lockstep check` asks its registries about), and the verdict from
//! the answers. The command does the I/O; this file does none.
//!
//! The lockfile is trusted as parsed (unverified): the only question asked of it is "which
//! digests must still exist", and a forged lockfile can at worst make the check ask about
//! other digests. Whether it is the signed one is `verify`'s question.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::lockfile::Lockfile;
use crate::model::{Digest, ImageRef};
use crate::registry::{ResolveError, Resolved};

/// One pinned digest to confirm: where the lockfile pins it, and what to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The lockfile entry's reference, as written in the manifests.
    pub reference: String,
    /// The pinned digest (the index's, or one platform's).
    pub digest: Digest,
    /// `os/architecture[/variant]` when this is a platform manifest of an index.
    pub platform: Option<String>,
    /// Whether this is a cosign signature manifest the lockfile records for the image
    /// (`digest` is then the signature manifest's).
    pub signature: bool,
    /// Where it is asked: the image's own `registry/repository`, or a recorded mirror.
    pub location: String,
    /// Whether `location` is a mirror (`lockstep mirror`), not the image's own repository.
    pub mirror: bool,
    /// `location@digest`: asking by digest confirms the manifest exists, and a re-pushed tag
    /// does not change the answer.
    pub ask: ImageRef,
}

/// Every digest `lock` pinned, at every location the lockfile records: each entry's digest
/// and, for an index, each platform's, and the cosign signature manifests recorded for it
/// (`lockstep mirror` copies them too), in its own repository and in each mirror. In
/// lockfile order, entry before its platforms, own repository before mirrors.
pub fn probes(lock: &Lockfile) -> Vec<Probe> {
    let mut out = Vec::new();
    for entry in &lock.images {
        let own = entry.image.name();
        for location in entry.locations() {
            let name = location.name();
            let ask = |digest: &Digest| {
                location
                    .pin(digest.clone())
                    .image()
                    .by_digest()
                    .expect("a pinned reference has a digest")
            };
            let probe = |digest: &Digest, platform: Option<&String>, signature: bool| Probe {
                reference: entry.reference.clone(),
                digest: digest.clone(),
                platform: platform.cloned(),
                signature,
                location: name.clone(),
                mirror: name != own,
                ask: ask(digest),
            };
            out.push(probe(&entry.digest, None, false));
            for p in &entry.platforms {
                out.push(probe(&p.digest, Some(&p.platform), false));
            }
            for record in &entry.signatures {
                out.push(probe(&record.manifest, None, true));
            }
            for record in &entry.attestations {
                out.push(probe(&record.manifest, None, true));
            }
        }
    }
    out
}

/// What the registry already told `lock` about each digest-only reference, so that an index
/// still present costs one request (its platforms are asked about separately).
pub fn known(lock: &Lockfile) -> BTreeMap<ImageRef, Resolved> {
    let mut out = BTreeMap::new();
    for entry in &lock.images {
        for ask in entry.locations() {
            out.insert(
                ask,
                Resolved {
                    digest: entry.digest.clone(),
                    media_type: entry.media_type.clone(),
                    platforms: entry.platforms.clone(),
                },
            );
        }
    }
    out
}

/// A pinned digest a location no longer has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub reference: String,
    pub digest: String,
    /// Set when the missing manifest is one platform of an index.
    pub platform: Option<String>,
    /// Set when the missing manifest is the image's recorded cosign signature.
    pub signature: bool,
    /// The repository that lacks it (the image's own, or a mirror).
    pub location: String,
    pub mirror: bool,
    /// The other recorded locations that confirmed this digest: empty means no recorded
    /// copy is left.
    pub still_at: Vec<String>,
}

/// A pinned digest a location could not be asked about (unreachable, refused, lying).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unanswered {
    pub reference: String,
    pub digest: String,
    pub platform: Option<String>,
    pub signature: bool,
    pub location: String,
    /// Whether the registry did answer, wrongly (a digest mismatch, an unusable manifest):
    /// a finding like a missing digest, not an environment problem.
    pub finding: bool,
    /// Why, with its causes.
    pub error: String,
}

/// The verdict of `lockstep check`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Report {
    /// Distinct digest-only references asked about.
    pub checked: usize,
    /// Pinned digests the registry answered "not found" for, in lockfile order.
    pub missing: Vec<Missing>,
    /// Pinned digests without an answer, in lockfile order.
    pub unanswered: Vec<Unanswered>,
}

impl Report {
    /// Every pinned digest exists.
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.unanswered.is_empty()
    }
}

/// Judge the answers: `failures` are the references that did not resolve (every other
/// probe's reference was confirmed). Only "not found" counts as missing; anything else is
/// unanswered, since it says nothing about whether the manifest exists.
pub fn judge(probes: &[Probe], failures: &[(ImageRef, ResolveError)]) -> Report {
    let failed: BTreeMap<&ImageRef, &ResolveError> = failures.iter().map(|(r, e)| (r, e)).collect();
    let checked = probes.iter().map(|p| &p.ask).collect::<BTreeSet<_>>().len();
    let mut report = Report {
        checked,
        ..Report::default()
    };
    for p in probes {
        match failed.get(&p.ask) {
            None => {}
            Some(ResolveError::NotFound { .. }) => report.missing.push(Missing {
                reference: p.reference.clone(),
                digest: p.digest.to_string(),
                platform: p.platform.clone(),
                signature: p.signature,
                location: p.location.clone(),
                mirror: p.mirror,
                still_at: probes
                    .iter()
                    .filter(|o| {
                        o.reference == p.reference
                            && o.digest == p.digest
                            && o.location != p.location
                            && !failed.contains_key(&o.ask)
                    })
                    .map(|o| o.location.clone())
                    .collect(),
            }),
            Some(error) => report.unanswered.push(Unanswered {
                reference: p.reference.clone(),
                digest: p.digest.to_string(),
                platform: p.platform.clone(),
                signature: p.signature,
                location: p.location.clone(),
                finding: error.is_finding(),
                error: crate::error_chain::one_line(error),
            }),
        }
    }
    report
}

/// What a probe asks about besides the image's own manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part<'a> {
    Image,
    Platform(&'a str),
    Signature,
}

impl<'a> Part<'a> {
    pub fn of(platform: Option<&'a str>, signature: bool) -> Part<'a> {
        match (platform, signature) {
            (_, true) => Part::Signature,
            (Some(p), false) => Part::Platform(p),
            (None, false) => Part::Image,
        }
    }
}

/// One line naming a missing digest: `REFERENCE@DIGEST [platform P | its cosign signature]
/// [in mirror M]`.
pub fn describe(reference: &str, digest: &str, part: Part<'_>, mirror: Option<&str>) -> String {
    let mut out = format!("{reference}@{digest}");
    match part {
        Part::Image => {}
        Part::Platform(p) => out.push_str(&format!(" (platform {p} of the index)")),
        Part::Signature => {
            out.push_str(" (its recorded cosign signature or attestation manifest)");
        }
    }
    if let Some(m) = mirror {
        out.push_str(&format!(" in mirror {m}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockfile::{ImageEntry, ManifestBinding};
    use crate::registry::PlatformDigest;

    fn digest(seed: &str) -> Digest {
        Digest::of(seed.as_bytes())
    }

    fn lockfile() -> Lockfile {
        let entry = |reference: &str, d: Digest, platforms: Vec<PlatformDigest>| ImageEntry {
            reference: reference.to_owned(),
            image: ImageRef::parse(reference).unwrap(),
            digest: d,
            media_type: crate::registry::OCI_MANIFEST.to_owned(),
            platforms,
            mirrors: Vec::new(),
            held: false,
            signatures: Vec::new(),
            attestations: Vec::new(),
            uses: Vec::new(),
        };
        Lockfile {
            renders: Vec::new(),
            generation: 1,
            created: jiff::Timestamp::UNIX_EPOCH,
            expires: None,
            environment: None,
            promoted_from: None,
            manifests: ManifestBinding::compute(std::iter::empty()),
            images: vec![
                entry(
                    "reg.example/app:1",
                    digest("index"),
                    vec![PlatformDigest {
                        platform: "linux/arm64".into(),
                        digest: digest("arm"),
                    }],
                ),
                // Another tag pinned to the same digest: asked about once, reported twice.
                entry("reg.example/app:latest", digest("index"), Vec::new()),
            ],
        }
    }

    #[test]
    fn asks_by_digest_for_every_entry_and_platform() {
        let ps = probes(&lockfile());
        let asks: Vec<String> = ps.iter().map(|p| p.ask.to_string()).collect();
        assert_eq!(
            asks,
            vec![
                format!("reg.example/app@{}", digest("index")),
                format!("reg.example/app@{}", digest("arm")),
                format!("reg.example/app@{}", digest("index")),
            ]
        );
        assert_eq!(ps[1].platform.as_deref(), Some("linux/arm64"));
        assert_eq!(judge(&ps, &[]).checked, 2);
        assert!(judge(&ps, &[]).ok());
    }

    #[test]
    fn not_found_is_missing_and_other_errors_are_unanswered() {
        let ps = probes(&lockfile());
        let index = ps[0].ask.clone();
        let arm = ps[1].ask.clone();
        let failures = vec![
            (
                index.clone(),
                ResolveError::NotFound {
                    reference: index,
                    registry: "reg.example".into(),
                    code: String::new(),
                    message: String::new(),
                },
            ),
            (
                arm.clone(),
                ResolveError::Registry {
                    reference: arm,
                    registry: "reg.example".into(),
                    status: 500,
                    code: String::new(),
                    message: String::new(),
                },
            ),
        ];
        let report = judge(&ps, &failures);
        assert!(!report.ok());
        let missing: Vec<&str> = report
            .missing
            .iter()
            .map(|m| m.reference.as_str())
            .collect();
        assert_eq!(missing, ["reg.example/app:1", "reg.example/app:latest"]);
        assert_eq!(report.unanswered.len(), 1);
        assert_eq!(
            report.unanswered[0].platform.as_deref(),
            Some("linux/arm64")
        );
        assert!(report.unanswered[0].error.contains("HTTP 500"));
    }
}

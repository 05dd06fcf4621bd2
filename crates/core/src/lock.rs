//! The pure half of `lockstep lock`: what to ask the registry, how its answers pin the
//! manifests, and which lockfile that makes. The command (cli/commands/lock.rs) does the I/O
//! around these: read → [`resolution_targets`] → resolve → [`pin_files`] → [`next_lockfile`]
//! → sign → write.
//!
//! A new generation continues only from a lockfile the signer can verify
//! ([`verify_previous`]): the number a lockfile carries is believed only when a key the
//! signer trusts signed it, and the next number is computed without wrapping
//! ([`next_generation_number`]).

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use crate::check::check;
use crate::files::SourceFiles;
use crate::lockfile::{self, Lockfile, LockfileError, lookup_key};
use crate::manifest::rewrite::{RewriteError, pin_uses};
use crate::model::{Digest, ImageRef, ImageUse};
use crate::registry::Resolved;
use crate::signing::{self, AllowedSigners, SignatureFile};
use crate::verify::{ScanDirError, ScannedDir, TrustPolicy, VerifyError, check_policy, scan_dir};

/// Why pinning failed. Nothing has been written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{file}: cannot pin the images")]
    Rewrite {
        file: String,
        #[source]
        source: Box<RewriteError>,
    },
    #[error("the pinned manifests cannot be scanned again (a lockstep bug: please report it)")]
    Rescan(#[source] ScanDirError),
    #[error(
        "the pinned manifests do not match the lockfile made from them (a lockstep bug: please report it): {0}"
    )]
    Inconsistent(String),
    #[error("the images do not meet the directory's provenance rules; nothing was written")]
    Provenance(#[source] crate::verify::VerifyError),
    #[error("no answer from the registry for {0} (a lockstep bug: please report it)")]
    Unresolved(String),
    #[error("{created} plus {lifetime} is past the last time lockstep can write")]
    ExpiryOutOfRange {
        created: Timestamp,
        lifetime: SignedDuration,
    },
    #[error("{} problem(s) between the manifests and the lockfile; run `lockstep lock` instead:\n{}", .0.len(), .0.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"))]
    NotRefreshable(Vec<crate::check::Finding>),
    /// The previous generation is the last number a lockfile can carry. Only a trusted key
    /// can have signed it (see [`verify_previous`]), so this is a stolen key or a bug, and
    /// the count must start again.
    #[error(
        "{} is at generation {generation}, the highest there is: no later generation can be written",
        lockfile::FILE_NAME
    )]
    GenerationExhausted { generation: u64 },
    #[error("the registry gave no media type for {0} (a lockstep bug: please report it)")]
    NoMediaType(String),
    /// Two uses of one reference carry different digests written by hand: which one to hold
    /// is the author's to say.
    #[error(
        "{reference} is written with two digests by hand, {first} ({first_at}) and {second} ({second_at}); write one, or choose with `lockstep lock --hold {reference}@DIGEST`"
    )]
    ConflictingPins {
        reference: String,
        first: Digest,
        first_at: String,
        second: Digest,
        second_at: String,
    },
}

/// The generation that follows `previous`, or the first (1) without one. Never wraps: at
/// `u64::MAX` it is refused, since a wrapped 0 would look like a rollback to every
/// reconciler that applied anything.
pub fn next_generation_number(previous: Option<&Lockfile>) -> Result<u64, LockError> {
    match previous {
        None => Ok(1),
        Some(p) => p
            .generation
            .checked_add(1)
            .ok_or(LockError::GenerationExhausted {
                generation: p.generation,
            }),
    }
}

/// Whom the commands that write a new generation (`lock`, `refresh`, `mirror`) believe
/// about the lockfile already in the directory, and what `sign` checks before adding a
/// signature to it. Its bytes are unsigned input until [`verify_previous`] says otherwise.
#[derive(Debug, Clone, Copy)]
pub struct ContinuationTrust<'t> {
    /// The public half of the key signing now: a lockfile it signed is one this signer
    /// wrote (or approved) before. `None` only for `lock --check`, which signs nothing.
    pub own_key: Option<&'t AllowedSigners>,
    /// `--trust FILE`: the allowed_signers a verifier uses, when the user passes it.
    pub trusted: Option<&'t AllowedSigners>,
    /// When key validity windows (`valid-after`/`valid-before`) are judged: now.
    ///
    /// The previous lockfile's own `expires` is deliberately not judged: it says when
    /// verifiers stop *deploying* that generation, not whether its signer can be believed
    /// about its number, and `refresh` exists precisely to follow an expired lockfile.
    pub at: Timestamp,
    /// `lock --environment`: when set, the previous lockfile must be for exactly this
    /// environment, as `verify --environment` requires. A signer trusted for staging
    /// therefore cannot move production's generation count; changing a history's
    /// environment takes `lock --new-history`.
    pub environment: Option<&'t str>,
}

/// Why the lockfile in the directory cannot be continued from (or approved). Nothing has
/// been written when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum PreviousError {
    #[error(
        "{} is not signed by this key{}",
        lockfile::FILE_NAME,
        if *.with_trust { " (or by a key in --trust)" } else { " (and no --trust file was given)" }
    )]
    NotTrusted {
        /// Whether a `--trust` file was checked too.
        with_trust: bool,
        /// Why the widest trust checked refused it.
        #[source]
        source: signing::VerifyError,
    },
    #[error(
        "{} is signed by a trusted key but cannot be read",
        lockfile::FILE_NAME
    )]
    Unreadable(#[source] LockfileError),
    #[error("{} cannot be continued", lockfile::FILE_NAME)]
    Policy(#[source] VerifyError),
}

/// The lockfile's signature files, named as on disk.
fn signature_files(files: &SourceFiles) -> Vec<SignatureFile> {
    files
        .signatures()
        .map(|(signer, bytes)| SignatureFile {
            name: crate::files::signature_path(signer),
            armored: bytes.to_vec(),
        })
        .collect()
}

/// The directory's lockfile, believed: its signatures verify (one is enough) under the
/// signer's own key or under `--trust`, checked over the exact bytes before they are
/// parsed, and it is for `trust.environment` when that is set. `Ok(None)` when there is no
/// lockfile. Expiry is not judged (see [`ContinuationTrust::at`]).
pub fn verify_previous(
    files: &SourceFiles,
    trust: &ContinuationTrust<'_>,
) -> Result<Option<Lockfile>, PreviousError> {
    let Some(bytes) = files.lockfile() else {
        return Ok(None);
    };
    let signatures = signature_files(files);
    let mut refusal = signing::VerifyError::NotSigned;
    for signers in [trust.own_key, trust.trusted].into_iter().flatten() {
        let policy = TrustPolicy {
            signers,
            at: trust.at,
            threshold: 1,
            environment: trust.environment,
            strict: false,
        };
        match signing::verify(bytes, &signatures, policy.signers, policy.at, 1) {
            Ok(verified) => {
                let lock = Lockfile::from_verified(&verified).map_err(PreviousError::Unreadable)?;
                let unexpiring = Lockfile {
                    expires: None,
                    ..lock.clone()
                };
                check_policy(&unexpiring, &policy).map_err(PreviousError::Policy)?;
                return Ok(Some(lock));
            }
            Err(e) => refusal = e,
        }
    }
    Err(PreviousError::NotTrusted {
        with_trust: trust.trusted.is_some(),
        source: refusal,
    })
}

/// `created + lifetime`, the `expires` a lockfile made at `created` gets.
pub fn expiry(created: Timestamp, lifetime: SignedDuration) -> Result<Timestamp, LockError> {
    created
        .checked_add(lifetime)
        .map_err(|_| LockError::ExpiryOutOfRange { created, lifetime })
}

/// What `lock` records besides the images: both are part of the signed content.
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// `--expires-in`: the new lockfile expires this long after its creation. Without it a
    /// new generation has no expiry.
    pub lifetime: Option<SignedDuration>,
    /// `--environment`: the environment the lockfile is for. Without it, none (a change from
    /// a bound lockfile, hence a new generation).
    pub environment: Option<String>,
    /// The provenance of every rendered output (`[[render]]` steps), sorted by output.
    pub renders: Vec<crate::render::RenderRecord>,
    /// `promote`: the verified lockfile every digest was taken from.
    pub promoted_from: Option<lockfile::Promotion>,
    /// The signatures that satisfied each governed image's `[[provenance]]` rule, by
    /// (`registry/repository`, digest).
    pub signatures: BTreeMap<(String, Digest), Vec<crate::provenance::SignatureRecord>>,
    /// The attestations each governed image's rule requires, by (`registry/repository`,
    /// digest).
    pub attestations: BTreeMap<(String, Digest), Vec<crate::provenance::AttestationRecord>>,
}

/// `lock --hold` and `--release`: images kept at a digest across locks, and images let go
/// back to their tag. Keys are image references without a digest (normalized), matched
/// against each use's reference.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    /// `--hold REF@DIGEST`.
    pub hold: BTreeMap<ImageRef, Digest>,
    /// `--release REF`.
    pub release: BTreeSet<ImageRef>,
    /// The digests `lock --pin-sources` wrote into the render steps' sources in this run
    /// (REF without digest → digest): lockstep's pins, not digests written by hand.
    pub in_sources: BTreeMap<ImageRef, Digest>,
}

/// Why an image is pinned where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// The tag's digest in the registry now.
    Tag,
    /// `--hold` asked for this digest.
    HoldAsked,
    /// The digest was written in the manifest by hand, changing the previous lockfile's
    /// pin: held.
    WrittenByHand,
    /// A digest in the manifest with no previous lockfile to tell whose it is (a first lock,
    /// `--new-history`): kept for this lock, not held.
    AsWritten,
    /// Held by the previous lockfile.
    Held,
    /// A digest-only reference (no tag to follow).
    DigestOnly,
}

impl Holds {
    /// The hold `--hold` asks for `u`, if any.
    fn asked(&self, u: &ImageUse) -> Option<&Digest> {
        self.hold.get(&u.reference.without_digest())
    }

    fn released(&self, u: &ImageUse) -> bool {
        self.release.contains(&u.reference.without_digest())
    }

    /// Whether `u`'s digest is one `--pin-sources` wrote into a source this run.
    fn pinned_in_sources(&self, u: &ImageUse) -> bool {
        u.reference.digest().is_some()
            && self.in_sources.get(&u.reference.without_digest()) == u.reference.digest()
    }

    /// The digest `lock --pin-sources` writes into a source for `reference` (`name:tag`,
    /// as the rendered image names it), whatever digest the source carries now (a source's
    /// digest is lockstep's to keep once it pins sources): `--hold` asks for one; else a
    /// hold the previous lockfile records (until `--release`); else the tag's digest now.
    pub fn source_digest(
        &self,
        written: &str,
        reference: &ImageRef,
        previous: Option<&Lockfile>,
        tag_digest: &Digest,
    ) -> Digest {
        let key = reference.without_digest();
        if let Some(asked) = self.hold.get(&key) {
            return asked.clone();
        }
        if !self.release.contains(&key)
            && let Some(entry) = previous.and_then(|p| p.entry(written))
            && entry.held
        {
            return entry.digest.clone();
        }
        tag_digest.clone()
    }

    /// Each `--hold` and `--release` reference that no manifest uses (a typo, most likely).
    pub fn unused<'h>(&'h self, uses: &[ImageUse]) -> Vec<&'h ImageRef> {
        let used: BTreeSet<ImageRef> = uses.iter().map(|u| u.reference.without_digest()).collect();
        self.hold
            .keys()
            .chain(&self.release)
            .filter(|r| !used.contains(*r))
            .collect()
    }
}

/// Where `u` is pinned, and why: `--release` follows the tag; `--hold` takes its digest; a
/// digest written by hand (not the previous lockfile's pin) is held; a digest the previous
/// lockfile held stays; anything else follows its tag (`tag_digest`).
fn pin_target(
    u: &ImageUse,
    previous: Option<&Lockfile>,
    holds: &Holds,
    tag_digest: &Digest,
) -> (Digest, PinReason) {
    if u.reference.tag().is_none() {
        let written = u.reference.digest().unwrap_or(tag_digest);
        return (written.clone(), PinReason::DigestOnly);
    }
    if holds.released(u) {
        return (tag_digest.clone(), PinReason::Tag);
    }
    if let Some(d) = holds.asked(u) {
        return (d.clone(), PinReason::HoldAsked);
    }
    if let Some(written) = u.reference.digest()
        && !pinned_by_lockstep(u, previous)
        && !holds.pinned_in_sources(u)
    {
        let reason = if previous.is_some() {
            PinReason::WrittenByHand
        } else {
            PinReason::AsWritten
        };
        return (written.clone(), reason);
    }
    if let Some(entry) = previous.and_then(|p| p.entry(&u.written))
        && entry.held
    {
        return (entry.digest.clone(), PinReason::Held);
    }
    (tag_digest.clone(), PinReason::Tag)
}

impl PinReason {
    /// Whether the digest is held (recorded as such, kept by later locks).
    pub fn holds(self) -> bool {
        matches!(
            self,
            PinReason::HoldAsked | PinReason::WrittenByHand | PinReason::Held
        )
    }

    /// Which of two uses' reasons decides their shared reference: an explicit hold, then a
    /// digest written by hand, then the previous hold, then the tag.
    fn rank(self) -> u8 {
        match self {
            PinReason::HoldAsked => 4,
            PinReason::WrittenByHand | PinReason::AsWritten => 3,
            PinReason::Held => 2,
            PinReason::Tag | PinReason::DigestOnly => 1,
        }
    }
}

fn resolved_digest(
    resolved: &BTreeMap<ImageRef, Resolved>,
    u: &ImageUse,
) -> Result<Digest, LockError> {
    resolved
        .get(&lookup_key(&u.reference))
        .map(|r| r.digest.clone())
        .ok_or_else(|| LockError::Unresolved(u.written.clone()))
}

/// One pin per tagged reference (as written, without a digest), so that every use of it
/// carries the same digest: the strongest reason among its uses decides (see
/// [`PinReason::rank`]); two different digests written by hand are the author's to settle.
/// (digest, reason, the tag's digest now) by reference.
fn decide_pins(
    scan: &ScannedDir,
    previous: Option<&Lockfile>,
    resolved: &BTreeMap<ImageRef, Resolved>,
    holds: &Holds,
) -> Result<BTreeMap<String, (Digest, PinReason, Digest)>, LockError> {
    let mut decided: BTreeMap<String, (Digest, PinReason, Digest, String)> = BTreeMap::new();
    for u in scan.uses.iter().filter(|u| u.reference.tag().is_some()) {
        let tag_digest = resolved_digest(resolved, u)?;
        let (digest, reason) = pin_target(u, previous, holds, &tag_digest);
        let key = crate::model::strip_digest(&u.written).to_owned();
        match decided.get(&key) {
            Some((first, PinReason::WrittenByHand | PinReason::AsWritten, _, first_at))
                if reason.rank() == 3 && *first != digest =>
            {
                return Err(LockError::ConflictingPins {
                    reference: key,
                    first: first.clone(),
                    first_at: first_at.clone(),
                    second: digest,
                    second_at: u.location(),
                });
            }
            Some((_, decided_reason, _, _)) if decided_reason.rank() >= reason.rank() => {}
            _ => {
                decided.insert(key, (digest, reason, tag_digest, u.location()));
            }
        }
    }
    Ok(decided
        .into_iter()
        .map(|(k, (d, r, t, _))| (k, (d, r, t)))
        .collect())
}

/// A digest an entry of the lockfile moves to (or gets first), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChange {
    /// The reference as written, without a digest.
    pub reference: String,
    /// The previous lockfile's digest, if it has the entry.
    pub from: Option<Digest>,
    pub to: Digest,
    pub reason: PinReason,
}

/// Whether `u`'s digest is one lockstep wrote: the previous lockfile pins this reference to
/// exactly that digest. Such pins follow their tag on the next lock; a digest the author
/// wrote by hand is kept (with a warning when its tag has moved).
pub fn pinned_by_lockstep(u: &ImageUse, previous: Option<&Lockfile>) -> bool {
    match (
        u.reference.digest(),
        previous.and_then(|p| p.entry(&u.written)),
    ) {
        (Some(d), Some(entry)) => u.reference.tag().is_some() && entry.digest == *d,
        _ => false,
    }
}

/// The distinct references to ask the registry about: each tag (also when a digest is
/// written, to follow or warn about a moved tag), and the digest itself for digests the
/// author wrote (to confirm it exists and learn its media type). A no-op lock therefore
/// costs one request per distinct tag.
/// Held digests (`--hold`, or the previous lockfile's holds) are confirmed the same way.
pub fn resolution_targets(
    uses: &[ImageUse],
    previous: Option<&Lockfile>,
    holds: &Holds,
) -> Vec<ImageRef> {
    let mut set: BTreeSet<ImageRef> = BTreeSet::new();
    for u in uses {
        set.insert(lookup_key(&u.reference));
        if !pinned_by_lockstep(u, previous)
            && let Some(by_digest) = u.reference.by_digest()
        {
            set.insert(by_digest);
        }
        let held = holds.asked(u).cloned().or_else(|| {
            previous
                .and_then(|p| p.entry(&u.written))
                .filter(|e| e.held && !holds.released(u))
                .map(|e| e.digest.clone())
        });
        if let Some(digest) = held
            && u.reference.tag().is_some()
            && let Some(by_digest) = u.reference.pin(digest).image().by_digest()
        {
            set.insert(by_digest);
        }
    }
    set.into_iter().collect()
}

/// A reference written with a digest whose tag now points elsewhere in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMoved {
    pub location: String,
    pub written: String,
    pub registry_digest: Digest,
}

/// The manifests after pinning.
#[derive(Debug)]
pub struct Pinned {
    pub files: SourceFiles,
    /// Manifest files whose bytes changed.
    pub changed: Vec<String>,
    /// The scan of the pinned files.
    pub scan: ScannedDir,
    pub warnings: Vec<TagMoved>,
    /// The references (as written, without a digest) held at their digest.
    pub held: BTreeSet<String>,
    /// Every entry whose digest this lock sets differently from the previous lockfile.
    pub changes: Vec<DigestChange>,
}

/// Pin every image (see [`pin_target`]): a tag gets its resolved digest, also when lockstep
/// pinned it before (see [`pinned_by_lockstep`]); a held digest is kept (with a warning when
/// its tag has moved) until released.
pub fn pin_files(
    files: &SourceFiles,
    scan: &ScannedDir,
    previous: Option<&Lockfile>,
    resolved: &BTreeMap<ImageRef, Resolved>,
    holds: &Holds,
) -> Result<Pinned, LockError> {
    let mut by_file: BTreeMap<&str, Vec<&ImageUse>> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut target: BTreeMap<(String, usize), Digest> = BTreeMap::new();
    let mut held = BTreeSet::new();
    let mut changes: BTreeMap<String, DigestChange> = BTreeMap::new();
    let decided = decide_pins(scan, previous, resolved, holds)?;
    for u in &scan.uses {
        let key = crate::model::strip_digest(&u.written).to_owned();
        let (digest, reason, tag_digest) = if u.reference.tag().is_some() {
            decided[&key].clone()
        } else {
            let tag_digest = resolved_digest(resolved, u)?;
            let (digest, reason) = pin_target(u, previous, holds, &tag_digest);
            (digest, reason, tag_digest)
        };
        if reason.holds() {
            held.insert(key.clone());
            if digest != tag_digest {
                warnings.push(TagMoved {
                    location: u.location(),
                    written: u.written.clone(),
                    registry_digest: tag_digest.clone(),
                });
            }
        }
        let from = previous
            .and_then(|p| p.entry(&u.written))
            .map(|e| e.digest.clone());
        if from.as_ref() != Some(&digest) {
            changes.entry(key.clone()).or_insert(DigestChange {
                reference: key,
                from,
                to: digest.clone(),
                reason,
            });
        }
        target.insert((u.file.clone(), u.span.start), digest);
        by_file.entry(u.file.as_str()).or_default().push(u);
    }
    let mut out = files.clone();
    let mut changed = Vec::new();
    for (file, uses) in by_file {
        let bytes = &files.files[file];
        let uses: Vec<ImageUse> = uses.into_iter().cloned().collect();
        let pinned = pin_uses(file, bytes, &uses, |u| {
            target.get(&(u.file.clone(), u.span.start)).cloned()
        })
        .map_err(|source| LockError::Rewrite {
            file: file.to_owned(),
            source: Box::new(source),
        })?;
        if pinned != *bytes {
            changed.push(file.to_owned());
            out.replace(file.to_owned(), pinned);
        }
    }
    let scan = scan_dir(&out).map_err(LockError::Rescan)?;
    Ok(Pinned {
        files: out,
        changed,
        scan,
        warnings,
        held,
        changes: changes.into_values().collect(),
    })
}

/// What `lock` will write.
#[derive(Debug)]
pub enum LockDecision {
    /// The previous lockfile already pins exactly this: nothing to write.
    UpToDate(Lockfile),
    /// A new generation.
    New(Lockfile),
}

/// The lockfile for the pinned manifests: the previous one when nothing a cluster can see
/// changed, else the next generation. The result is checked with the same code `verify` uses
/// before anything is written.
///
/// Expiry: an up-to-date lockfile is kept as it is, its expiry included (extend it with
/// [`refreshed`]); only a lockfile without an expiry is superseded when `options.lifetime`
/// asks for one.
pub fn next_lockfile(
    previous: Option<&Lockfile>,
    created: Timestamp,
    pinned: &Pinned,
    resolved: &BTreeMap<ImageRef, Resolved>,
    options: &LockOptions,
) -> Result<LockDecision, LockError> {
    // Numbered below, once it is known to be a new generation: an up-to-date lockfile
    // needs no next number (and at u64::MAX has none).
    let mut lock = Lockfile::build(
        0,
        created,
        pinned.scan.binding.clone(),
        &pinned.scan.uses,
        resolved,
    );
    if let Some(previous) = previous {
        carry_mirrors(&mut lock, previous);
    }
    for entry in &mut lock.images {
        entry.held = pinned.held.contains(&entry.reference);
        let key = (entry.image.name(), entry.digest.clone());
        if let Some(records) = options.signatures.get(&key) {
            entry.signatures = records.clone();
        }
        if let Some(records) = options.attestations.get(&key) {
            entry.attestations = records.clone();
        }
    }
    lock.environment = options.environment.clone();
    lock.promoted_from = options.promoted_from.clone();
    lock.renders = options.renders.clone();
    lock.expires = options
        .lifetime
        .map(|lifetime| expiry(created, lifetime))
        .transpose()?;
    let findings = check(&lock, &pinned.scan.uses, &pinned.scan.binding);
    if let Some(f) = findings.first() {
        return Err(LockError::Inconsistent(f.to_string()));
    }
    // Never write a lockfile that verify would refuse for its provenance.
    crate::verify::check_provenance(&lock, &pinned.scan, &pinned.files)
        .map_err(LockError::Provenance)?;
    // Verify refuses a lockfile whose entry has no media type: never write one.
    if let Some(e) = lock.images.iter().find(|e| e.media_type.is_empty()) {
        return Err(LockError::NoMediaType(e.reference.clone()));
    }
    match previous {
        Some(prev) if up_to_date(prev, &lock, options) => Ok(LockDecision::UpToDate(prev.clone())),
        _ => {
            lock.generation = next_generation_number(previous)?;
            Ok(LockDecision::New(lock))
        }
    }
}

fn up_to_date(previous: &Lockfile, candidate: &Lockfile, options: &LockOptions) -> bool {
    let wants_expiry = options.lifetime.is_some() && previous.expires.is_none();
    let mut same_expiry = candidate.clone();
    same_expiry.expires = previous.expires;
    !wants_expiry && previous.same_content(&same_expiry)
}

/// Keep the mirrors recorded for an image whose digest did not change: the mirror holds that
/// digest still (copies are by digest). A new digest has no mirror until `mirror` runs again.
fn carry_mirrors(lock: &mut Lockfile, previous: &Lockfile) {
    for entry in &mut lock.images {
        if let Some(before) = previous.entry(&entry.reference)
            && before.image == entry.image
            && before.digest == entry.digest
            && before.platforms == entry.platforms
        {
            entry.mirrors = before.mirrors.clone();
        }
    }
}

/// The next generation of `previous`, made at `created`, when `scan` (the directory's
/// manifests now) still matches it; refused otherwise, so a new signature never vouches for
/// manifests nobody locked.
fn next_generation(
    previous: &Lockfile,
    scan: &ScannedDir,
    created: Timestamp,
) -> Result<Lockfile, LockError> {
    let findings = check(previous, &scan.uses, &scan.binding);
    if !findings.is_empty() {
        return Err(LockError::NotRefreshable(findings));
    }
    let mut next = previous.clone();
    next.generation = next_generation_number(Some(previous))?;
    next.created = created;
    Ok(next)
}

/// `mirror`: the lockfile recording that every image is also at its name under `target`,
/// as the next generation — or `None` when it records that already. Expiry and environment
/// stay as they were.
pub fn mirrored(
    previous: &Lockfile,
    scan: &ScannedDir,
    created: Timestamp,
    target: &crate::mirror::MirrorTarget,
) -> Result<Option<Lockfile>, LockError> {
    let mut next = next_generation(previous, scan, created)?;
    let mut added = false;
    for entry in &mut next.images {
        let name = target.name_for(&entry.image);
        if let Err(at) = entry.mirrors.binary_search(&name) {
            entry.mirrors.insert(at, name);
            added = true;
        }
    }
    Ok(added.then_some(next))
}

/// `refresh`: the same lockfile (images, binding, environment) as the next generation,
/// created now and expiring `lifetime` later. Refused unless `scan` (the directory's
/// manifests now) still matches it, so a refresh never vouches for manifests nobody locked.
pub fn refreshed(
    previous: &Lockfile,
    scan: &ScannedDir,
    created: Timestamp,
    lifetime: SignedDuration,
) -> Result<Lockfile, LockError> {
    let mut next = next_generation(previous, scan, created)?;
    next.expires = Some(expiry(created, lifetime)?);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lockfile::ManifestBinding;
    use crate::manifest::config::ScanConfig;
    use crate::manifest::scan::scan_file;

    fn uses(image: &str) -> Vec<ImageUse> {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n    - name: c\n      image: {image}\n"
        );
        scan_file("pod.yaml", yaml.as_bytes(), &ScanConfig::default())
            .unwrap()
            .uses
    }

    fn lock_pinning(written: &str, digest: &Digest) -> Lockfile {
        let pinned = uses(&crate::model::pin_written(written, digest));
        let binding = ManifestBinding::compute([("pod.yaml", &b""[..])]);
        Lockfile::build(1, Timestamp::UNIX_EPOCH, binding, &pinned, &BTreeMap::new())
    }

    fn scanned(image: &str) -> ScannedDir {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n    - name: c\n      image: {image}\n"
        );
        let mut files = SourceFiles::default();
        files.insert("pod.yaml".into(), yaml.into_bytes()).unwrap();
        scan_dir(&files).unwrap()
    }

    #[test]
    fn mirrored_records_the_mirror_once_as_a_new_generation() {
        let d = Digest::of(b"api");
        let written = crate::model::pin_written("r.io/shop/api:1", &d);
        let scan = scanned(&written);
        let mut lock = Lockfile::build(
            4,
            Timestamp::UNIX_EPOCH,
            scan.binding.clone(),
            &scan.uses,
            &BTreeMap::new(),
        );
        lock.expires = Some(Timestamp::from_second(2_000_000_000).unwrap());
        let target = crate::mirror::MirrorTarget::parse("m.io/dr").unwrap();
        let created = Timestamp::from_second(1_800_000_000).unwrap();
        let next = mirrored(&lock, &scan, created, &target).unwrap().unwrap();
        assert_eq!(next.generation, 5);
        assert_eq!(next.created, created);
        assert_eq!(next.expires, lock.expires, "mirroring keeps the expiry");
        assert_eq!(next.images[0].mirrors, ["m.io/dr/shop/api"]);
        assert!(
            mirrored(&next, &scan, created, &target).unwrap().is_none(),
            "recorded already"
        );
        // A stale lockfile is not mirrored.
        let other = scanned(&crate::model::pin_written(
            "r.io/shop/api:1",
            &Digest::of(b"x"),
        ));
        assert!(mirrored(&lock, &other, created, &target).is_err());
    }

    #[test]
    fn a_new_lock_keeps_mirrors_of_unchanged_digests_only() {
        let (d1, d2) = (Digest::of(b"1"), Digest::of(b"2"));
        let mut previous = lock_pinning("r.io/shop/api:1", &d1);
        previous.images[0].mirrors = vec!["m.io/dr/shop/api".into()];
        let mut same = lock_pinning("r.io/shop/api:1", &d1);
        carry_mirrors(&mut same, &previous);
        assert_eq!(same.images[0].mirrors, ["m.io/dr/shop/api"]);
        let mut moved = lock_pinning("r.io/shop/api:1", &d2);
        carry_mirrors(&mut moved, &previous);
        assert!(
            moved.images[0].mirrors.is_empty(),
            "the mirror has no copy of a new digest"
        );
    }

    /// Regression: after the first lock every image carries `tag@digest`, and the second lock
    /// kept those digests as if the author had written them, so a re-pushed tag was never
    /// picked up. A pin the previous lockfile recorded is lockstep's and follows its tag.
    #[test]
    fn regression_pins_lockstep_wrote_follow_their_tag() {
        let old = Digest::of(b"old");
        let previous = lock_pinning("r.example/app:1.0", &old);
        let u = &uses(&format!("r.example/app:1.0@{old}"))[0];
        assert!(pinned_by_lockstep(u, Some(&previous)));
        // Only the tag is asked about: a no-op lock costs one request per tag.
        let targets =
            resolution_targets(std::slice::from_ref(u), Some(&previous), &Holds::default());
        assert_eq!(targets, vec![ImageRef::parse("r.example/app:1.0").unwrap()]);
    }

    /// Regression (issue 10): a hand-written `tag@digest` (a rollback) was kept once, then
    /// the next unrelated lock re-pinned it to the tag with no notice. It is held now.
    #[test]
    fn regression_a_digest_written_by_hand_stays_held_across_later_locks() {
        let (tag_now, rollback) = (Digest::of(b"tag now"), Digest::of(b"rollback"));
        let none = Holds::default();
        // Lock 1: the author wrote the rollback digest by hand.
        let previous = lock_pinning("r.example/app:1.0", &tag_now);
        let u = &uses(&format!("r.example/app:1.0@{rollback}"))[0];
        assert_eq!(
            pin_target(u, Some(&previous), &none, &tag_now),
            (rollback.clone(), PinReason::WrittenByHand)
        );
        // Lock 2: the manifest now carries the pin lock 1 wrote, and its lockfile holds it.
        let mut held = lock_pinning("r.example/app:1.0", &rollback);
        held.images[0].held = true;
        assert_eq!(
            pin_target(u, Some(&held), &none, &tag_now),
            (rollback.clone(), PinReason::Held)
        );
        // Its held digest is confirmed with the registry, not only the tag.
        let targets = resolution_targets(std::slice::from_ref(u), Some(&held), &none);
        assert!(targets.contains(&ImageRef::parse(&format!("r.example/app@{rollback}")).unwrap()));
        // Released: it follows the tag again.
        let release = Holds {
            release: [ImageRef::parse("r.example/app:1.0").unwrap()].into(),
            ..Holds::default()
        };
        assert_eq!(
            pin_target(u, Some(&held), &release, &tag_now),
            (tag_now.clone(), PinReason::Tag)
        );
        // Without a hold, lockstep's own pin follows the tag as before.
        let ours = lock_pinning("r.example/app:1.0", &rollback);
        assert_eq!(
            pin_target(u, Some(&ours), &none, &tag_now),
            (tag_now, PinReason::Tag)
        );
    }

    #[test]
    fn hold_pins_every_use_of_its_reference_and_names_unused_ones() {
        let (tag_now, old) = (Digest::of(b"tag now"), Digest::of(b"old"));
        let hold = Holds {
            hold: [(ImageRef::parse("r.example/app:1.0").unwrap(), old.clone())].into(),
            ..Holds::default()
        };
        let u = &uses("r.example/app:1.0")[0];
        assert_eq!(
            pin_target(u, None, &hold, &tag_now),
            (old, PinReason::HoldAsked)
        );
        let other = &uses("r.example/other:1.0")[0];
        assert_eq!(pin_target(other, None, &hold, &tag_now).1, PinReason::Tag);
        assert!(hold.unused(std::slice::from_ref(u)).is_empty());
        assert_eq!(
            hold.unused(std::slice::from_ref(other)),
            [&ImageRef::parse("r.example/app:1.0").unwrap()]
        );
    }

    #[test]
    fn a_digest_the_author_wrote_is_kept_and_confirmed() {
        let mine = Digest::of(b"chosen by hand");
        let previous = lock_pinning("r.example/app:1.0", &Digest::of(b"something else"));
        let u = &uses(&format!("r.example/app:1.0@{mine}"))[0];
        assert!(!pinned_by_lockstep(u, Some(&previous)));
        assert!(!pinned_by_lockstep(u, None));
        let targets = resolution_targets(std::slice::from_ref(u), None, &Holds::default());
        let by_digest = ImageRef::parse(&format!("r.example/app@{mine}")).unwrap();
        assert_eq!(targets.len(), 2);
        assert!(targets.contains(&ImageRef::parse("r.example/app:1.0").unwrap()));
        assert!(targets.contains(&by_digest));
    }

    #[test]
    fn refresh_bumps_the_generation_and_expiry_only() {
        let d = Digest::of(b"x");
        let mut previous = lock_pinning("r.example/app:1.0", &d);
        previous.environment = Some("prod".into());
        let uses = uses(&crate::model::pin_written("r.example/app:1.0", &d));
        let scan = ScannedDir {
            uses,
            objects: Vec::new(),
            notices: Vec::new(),
            binding: previous.manifests.clone(),
            config: Default::default(),
        };
        let now = Timestamp::from_second(86_400).unwrap();
        let next = refreshed(&previous, &scan, now, SignedDuration::from_hours(1)).unwrap();
        assert_eq!(next.generation, previous.generation + 1);
        assert_eq!(next.created, now);
        assert_eq!(next.expires, Some(Timestamp::from_second(90_000).unwrap()));
        assert_eq!(next.images, previous.images);
        assert_eq!(next.environment, previous.environment);
        assert_eq!(next.manifests, previous.manifests);

        let moved = ScannedDir {
            binding: ManifestBinding::compute([("pod.yaml", &b"changed"[..])]),
            ..scan
        };
        assert!(matches!(
            refreshed(&previous, &moved, now, SignedDuration::from_hours(1)),
            Err(LockError::NotRefreshable(_))
        ));
    }

    /// A directory holding `lock` signed by `key` (as signer `ci`).
    fn signed_dir(lock: &Lockfile, key: &crate::signing::SigningKey) -> SourceFiles {
        let bytes = lock.to_bytes();
        let mut files = SourceFiles::default();
        files
            .insert(
                crate::files::signature_path("ci"),
                key.sign(&bytes).unwrap().into_bytes(),
            )
            .unwrap();
        files.insert(lockfile::FILE_NAME.into(), bytes).unwrap();
        files
    }

    fn trust_of(key: &crate::signing::SigningKey) -> AllowedSigners {
        AllowedSigners::parse(&key.allowed_signers_line("ci"), "test").unwrap()
    }

    fn continuing<'t>(
        own: &'t AllowedSigners,
        trusted: Option<&'t AllowedSigners>,
    ) -> ContinuationTrust<'t> {
        ContinuationTrust {
            own_key: Some(own),
            trusted,
            at: Timestamp::from_second(1_000_000).unwrap(),
            environment: None,
        }
    }

    #[test]
    fn the_generation_after_the_last_one_is_refused_not_wrapped() {
        let mut previous = lock_pinning("r.example/app:1.0", &Digest::of(b"x"));
        assert_eq!(next_generation_number(None).unwrap(), 1);
        previous.generation = u64::MAX - 1;
        assert_eq!(next_generation_number(Some(&previous)).unwrap(), u64::MAX);
        previous.generation = u64::MAX;
        let err = next_generation_number(Some(&previous)).unwrap_err();
        assert!(
            matches!(
                err,
                LockError::GenerationExhausted {
                    generation: u64::MAX
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("lockstep.lock is at generation 18446744073709551615")
        );
        // refresh and mirror go through the same number.
        let scan = ScannedDir {
            uses: uses(&crate::model::pin_written(
                "r.example/app:1.0",
                &Digest::of(b"x"),
            )),
            objects: Vec::new(),
            notices: Vec::new(),
            binding: previous.manifests.clone(),
            config: Default::default(),
        };
        let refused = refreshed(
            &previous,
            &scan,
            Timestamp::UNIX_EPOCH,
            SignedDuration::from_hours(1),
        );
        assert!(matches!(
            refused,
            Err(LockError::GenerationExhausted { .. })
        ));
    }

    #[test]
    fn a_previous_lockfile_is_believed_only_under_a_key_the_signer_trusts() {
        let mine = crate::signing::SigningKey::generate("ci").unwrap();
        let theirs = crate::signing::SigningKey::generate("release").unwrap();
        let (own, other) = (trust_of(&mine), trust_of(&theirs));
        let mut lock = lock_pinning("r.example/app:1.0", &Digest::of(b"x"));
        lock.generation = 7;
        // Long expired: expiry does not matter for continuing.
        lock.expires = Some(Timestamp::from_second(10).unwrap());

        let files = signed_dir(&lock, &mine);
        let believed = verify_previous(&files, &continuing(&own, None)).unwrap();
        assert_eq!(believed.unwrap().generation, 7);

        // Signed by someone else: only with --trust naming them.
        let files = signed_dir(&lock, &theirs);
        let err = verify_previous(&files, &continuing(&own, None)).unwrap_err();
        assert!(
            matches!(
                err,
                PreviousError::NotTrusted {
                    with_trust: false,
                    ..
                }
            ),
            "{err}"
        );
        let believed = verify_previous(&files, &continuing(&own, Some(&other))).unwrap();
        assert_eq!(believed.unwrap().generation, 7);

        // One unsigned edit, and nobody vouches for the bytes any more.
        let mut tampered = signed_dir(&lock, &mine);
        let text = String::from_utf8(lock.to_bytes()).unwrap();
        tampered.replace(
            lockfile::FILE_NAME.into(),
            text.replace("generation = 7", &format!("generation = {}", u64::MAX))
                .into_bytes(),
        );
        let err = verify_previous(&tampered, &continuing(&own, Some(&other))).unwrap_err();
        assert!(
            matches!(
                err,
                PreviousError::NotTrusted {
                    with_trust: true,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("lockstep.lock is not signed by this key (or by a key in --trust)")
        );

        // No lockfile: nothing to continue.
        assert!(
            verify_previous(&SourceFiles::default(), &continuing(&own, None))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_required_environment_must_match_the_previous_lockfile() {
        let key = crate::signing::SigningKey::generate("ci").unwrap();
        let own = trust_of(&key);
        let mut lock = lock_pinning("r.example/app:1.0", &Digest::of(b"x"));
        lock.environment = Some("staging".into());
        let files = signed_dir(&lock, &key);
        let prod = ContinuationTrust {
            environment: Some("prod"),
            ..continuing(&own, None)
        };
        let err = verify_previous(&files, &prod).unwrap_err();
        assert!(
            matches!(
                err,
                PreviousError::Policy(VerifyError::WrongEnvironment { .. })
            ),
            "{err}"
        );
        let staging = ContinuationTrust {
            environment: Some("staging"),
            ..prod
        };
        assert!(verify_previous(&files, &staging).unwrap().is_some());
        assert!(
            verify_previous(&files, &continuing(&own, None))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn digest_only_references_are_never_re_pinned() {
        let d = Digest::of(b"x");
        let written = format!("r.example/app@{d}");
        let previous = lock_pinning(&written, &d);
        let u = &uses(&written)[0];
        assert!(!pinned_by_lockstep(u, Some(&previous)), "no tag to follow");
    }
}

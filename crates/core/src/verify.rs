//! Verification, the one path shared by `verify`, `render` and the reconciler:
//! bytes → signatures checked against trusted keys → lockfile parsed → the binding checked
//! (hashes only) → manifests read once ([`crate::manifest::scan`]) → the verdict of
//! [`crate::check`]. Nothing an attacker may have added is parsed before the signatures and
//! the binding say the bytes are the signed ones. Pure: the caller reads the files (work tree
//! or Git).
//!
//! A [`VerifiedDir`] can only be made by [`verify_dir`], so "render or apply something
//! unverified" does not compile.

use jiff::Timestamp;

use crate::check::{Finding, check};
use crate::files::SourceFiles;
use crate::lockfile::{self, Lockfile, LockfileError, ManifestBinding};
use crate::manifest::config::{ConfigError, ScanConfig};
use crate::manifest::scan::{DecodedObject, FileScan, Notice, NoticeReason, ScanError, scan_file};
use crate::model::ImageUse;
use crate::signing::{self, AllowedSigners, SignatureFile, SignerReport};

/// What a verifier trusts, and as of when. Never read from the directory being verified.
#[derive(Debug, Clone, Copy)]
pub struct TrustPolicy<'t> {
    pub signers: &'t AllowedSigners,
    /// The time signatures' validity windows and the lockfile's expiry are judged at.
    pub at: Timestamp,
    /// How many distinct trusted principals must have signed.
    pub threshold: usize,
    /// When set, the lockfile must record exactly this environment. When unset, any
    /// lockfile (bound to an environment or not) passes: binding is opt-in per verifier.
    pub environment: Option<&'t str>,
    /// Refuse objects of kinds lockstep has no image paths for that hold `image` fields
    /// (otherwise they pass with a notice).
    pub strict: bool,
}

/// Every object and image in a directory, and the binding of its files.
#[derive(Debug, Clone)]
pub struct ScannedDir {
    pub uses: Vec<ImageUse>,
    /// Every object, decoded once: what `render` prints and the reconciler applies.
    pub objects: Vec<DecodedObject>,
    pub notices: Vec<Notice>,
    pub binding: ManifestBinding,
    /// The directory's `lockstep.toml` (or the default), as the manifests were read with it.
    pub config: ScanConfig,
}

/// Scanning failed; every file's problem is listed.
#[derive(Debug, thiserror::Error)]
pub enum ScanDirError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{} is not UTF-8", crate::files::CONFIG_FILE)]
    ConfigNotUtf8,
    #[error("{} manifest error(s):\n{}", .0.len(), render_list(.0))]
    Files(Vec<ScanError>),
    #[error(
        "the manifests use {count} distinct image references; the limit is {}",
        crate::lockfile::MAX_IMAGES
    )]
    TooManyImages { count: usize },
}

fn render_list(errors: &[ScanError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {}", crate::error_chain::one_line(e)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files the lockfile's binding covers: every file of the directory but the lockfile
/// and its signatures (manifests, `lockstep.toml`, and any other file, such as a README).
pub fn bound_files(files: &SourceFiles) -> impl Iterator<Item = (&str, &[u8])> {
    files.bound()
}

/// Scan every manifest with the directory's `lockstep.toml`, collecting all errors.
pub fn scan_dir(files: &SourceFiles) -> Result<ScannedDir, ScanDirError> {
    let config = match files.config() {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| ScanDirError::ConfigNotUtf8)?;
            ScanConfig::parse(text, crate::files::CONFIG_FILE)?
        }
        None => ScanConfig::default(),
    };
    let mut uses = Vec::new();
    let mut objects = Vec::new();
    let mut notices = Vec::new();
    let mut errors = Vec::new();
    for result in scan_in_parallel(files.manifests().collect(), &config) {
        match result {
            Ok(scan) => {
                uses.extend(scan.uses);
                objects.extend(scan.objects);
                notices.extend(scan.notices);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(ScanDirError::Files(errors));
    }
    let distinct = uses
        .iter()
        .map(|u| crate::model::strip_digest(&u.written))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if distinct > crate::lockfile::MAX_IMAGES {
        return Err(ScanDirError::TooManyImages { count: distinct });
    }
    let binding = ManifestBinding::compute(bound_files(files));
    Ok(ScannedDir {
        uses,
        objects,
        notices,
        binding,
        config,
    })
}

/// Scan files on every core (scanning is the CPU cost of verification), answering in the
/// input's order so results stay deterministic.
fn scan_in_parallel(
    manifests: Vec<(&str, &[u8])>,
    config: &ScanConfig,
) -> Vec<Result<FileScan, ScanError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let total: usize = manifests.iter().map(|(_, b)| b.len()).sum();
    // Below ~1 MB the threads cost more than they save.
    if threads == 1 || total < 1 << 20 {
        return manifests
            .iter()
            .map(|(path, bytes)| scan_file(path, bytes, config))
            .collect();
    }
    let chunk = manifests.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = manifests
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(path, bytes)| scan_file(path, bytes, config))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// Why a directory failed verification. Each variant names what failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "no {} in the manifests directory: run `lockstep lock` first",
        lockfile::FILE_NAME
    )]
    NoLockfile,
    #[error("signature check failed")]
    Signatures(#[source] signing::VerifyError),
    #[error("the signed lockfile cannot be read")]
    Lockfile(#[source] LockfileError),
    #[error("the manifests cannot be scanned")]
    Scan(#[source] ScanDirError),
    #[error(
        "the lockfile expired at {expired} (checked as of {at}): run `lockstep refresh` to re-sign it with a new expiry"
    )]
    Expired { expired: Timestamp, at: Timestamp },
    #[error("the lockfile is for {}, but {expected:?} is required", .found.as_deref().map_or("no environment".to_owned(), |f| format!("environment {f:?}")))]
    WrongEnvironment {
        expected: String,
        found: Option<String>,
    },
    #[error("{} problem(s) between the manifests and the signed lockfile:\n{}", .0.len(), .0.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"))]
    Findings(Vec<Finding>),
    #[error("{} problem(s) between the render steps, their inputs and the signed lockfile:\n{}", .0.len(), .0.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"))]
    Renders(Vec<crate::render::RenderFinding>),
    #[error("{} object(s) hold images lockstep does not pin or check (--strict):\n{}", .0.len(), .0.iter().map(|n| format!("  {n}")).collect::<Vec<_>>().join("\n"))]
    UnscannedImages(Vec<Notice>),
    #[error("{} image(s) without the signatures their provenance rule requires:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Provenance(Vec<crate::provenance::PolicyProblem>),
}

/// A directory whose lockfile is signed by enough trusted keys and whose every manifest
/// matches it, every image pinned.
#[derive(Debug)]
pub struct VerifiedDir<'a> {
    files: &'a SourceFiles,
    lock_bytes: &'a [u8],
    lock: Lockfile,
    signers: Vec<SignerReport>,
    scan: ScannedDir,
}

impl<'a> VerifiedDir<'a> {
    pub fn lockfile(&self) -> &Lockfile {
        &self.lock
    }

    pub fn signers(&self) -> &[SignerReport] {
        &self.signers
    }

    /// The principals whose signatures approved the lockfile, sorted, each once.
    pub fn principals(&self) -> Vec<String> {
        let mut principals: Vec<String> = self
            .signers
            .iter()
            .flat_map(|s| s.principals.iter().cloned())
            .collect();
        principals.sort();
        principals.dedup();
        principals
    }

    pub fn scan(&self) -> &ScannedDir {
        &self.scan
    }

    /// The exact bytes of the lockfile the signatures cover.
    pub fn lockfile_bytes(&self) -> &'a [u8] {
        self.lock_bytes
    }

    /// The verified manifests as (path, bytes), in path order: what the binding covers.
    pub fn manifests(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.files.manifests()
    }

    /// The verified objects, decoded once, files in path order, objects in file order.
    pub fn objects(&self) -> &[DecodedObject] {
        &self.scan.objects
    }

    /// The verified objects as a stream any Kubernetes reader reads back as exactly these
    /// objects: see [`render_objects`].
    pub fn render(&self) -> Vec<u8> {
        render_objects(self.objects())
    }
}

/// Objects as a JSON stream, one object per line. JSON leaves a reader nothing to interpret
/// (no comments, tags, anchors or document markers, and no file names in the stream), and
/// kubectl, Argo CD and Flux read a stream starting with `{` as JSON.
pub fn render_objects(objects: &[DecodedObject]) -> Vec<u8> {
    let mut out = String::new();
    for object in objects {
        let line = serde_json::to_string(&object.body).expect("JSON values serialize");
        // JSON allows these raw in strings; YAML readers (lockstep's own among them) take them
        // for line breaks or refuse them. Escaped, every reader reads the same string.
        for c in line.chars() {
            match c {
                '\u{2028}' | '\u{2029}' | '\u{7f}'..='\u{9f}' | '\u{feff}' => {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                }
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Verify a directory's files against a trust policy. Signatures are checked over the exact
/// lockfile bytes before anything in them is parsed.
pub fn verify_dir<'a>(
    files: &'a SourceFiles,
    policy: &TrustPolicy<'_>,
) -> Result<VerifiedDir<'a>, VerifyError> {
    let lock_bytes = files.lockfile().ok_or(VerifyError::NoLockfile)?;
    let signatures: Vec<SignatureFile> = files
        .signatures()
        .map(|(signer, bytes)| SignatureFile {
            name: crate::files::signature_path(signer),
            armored: bytes.to_vec(),
        })
        .collect();
    let verified = signing::verify(
        lock_bytes,
        &signatures,
        policy.signers,
        policy.at,
        policy.threshold,
    )
    .map_err(VerifyError::Signatures)?;
    let lock = Lockfile::from_verified(&verified).map_err(VerifyError::Lockfile)?;
    check_policy(&lock, policy)?;
    let signers = verified.signers().to_vec();
    // Cost before trust: hashes only, before any file is parsed — an unsigned file cannot
    // make verification do more than read and hash it.
    let binding = ManifestBinding::compute(bound_files(files));
    if let Some(mismatch) = crate::check::binding_finding(&lock, &binding) {
        return Err(VerifyError::Findings(vec![mismatch]));
    }
    let scan = scan_dir(files).map_err(VerifyError::Scan)?;
    let findings = check(&lock, &scan.uses, &scan.binding);
    if !findings.is_empty() {
        return Err(VerifyError::Findings(findings));
    }
    if policy.strict {
        refuse_unscanned_images(&scan.notices)?;
    }
    check_provenance(&lock, &scan, files)?;
    Ok(VerifiedDir {
        files,
        lock_bytes,
        lock,
        signers,
        scan,
    })
}

/// Every image a `[[provenance]]` rule governs records signatures that verify, offline,
/// under the rule's keys (bound files of the directory) and bind its digest and repository.
/// With a rule, objects that hold images lockstep does not scan are refused (as with
/// `--strict`): an image no scanner sees is an image no rule can govern.
pub fn check_provenance(
    lock: &Lockfile,
    scan: &ScannedDir,
    files: &SourceFiles,
) -> Result<(), VerifyError> {
    let config = &scan.config;
    if config.provenance().is_empty() {
        return Ok(());
    }
    refuse_unscanned_images(&scan.notices)?;
    let policy = config
        .provenance_policy(files)
        .map_err(|e| VerifyError::Scan(ScanDirError::Config(e)))?;
    check_recorded_signatures(&policy, lock)
}

/// The lockfile's signature records against `policy` ([`crate::provenance::check_policy`]):
/// the one check behind the directory's rules, `verify --cosign-key` and the reconciler's
/// `spec.provenance`.
pub fn check_recorded_signatures(
    policy: &crate::provenance::Policy,
    lock: &Lockfile,
) -> Result<(), VerifyError> {
    let problems = crate::provenance::check_policy(
        policy,
        lock.images
            .iter()
            .map(|e| crate::provenance::RecordedImage {
                reference: &e.reference,
                image: &e.image,
                digest: &e.digest,
                signatures: &e.signatures,
                attestations: &e.attestations,
            }),
        lock.created,
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(VerifyError::Provenance(problems))
    }
}

/// The render steps of a verified directory against the signed records: every declared
/// step recorded with its command, and every input file hashing as it did when the output
/// was rendered (hashes only). `reader` reads the inputs from the same source as the
/// directory (work tree or commit).
pub fn check_render_inputs(
    verified: &VerifiedDir<'_>,
    reader: &dyn crate::render::InputReader,
) -> Result<(), VerifyError> {
    let findings = crate::render::check_renders(
        &verified.lock.renders,
        verified.scan.config.renders(),
        reader,
    );
    if findings.is_empty() {
        Ok(())
    } else {
        Err(VerifyError::Renders(findings))
    }
}

/// `--strict`: refuse objects of kinds lockstep has no image paths for that hold images.
pub fn refuse_unscanned_images(notices: &[Notice]) -> Result<(), VerifyError> {
    let unscanned: Vec<Notice> = notices
        .iter()
        .filter(|n| matches!(n.reason, NoticeReason::UnscannedImages { .. }))
        .cloned()
        .collect();
    if unscanned.is_empty() {
        Ok(())
    } else {
        Err(VerifyError::UnscannedImages(unscanned))
    }
}

/// The lockfile-level promises a policy asks for: not expired as of `policy.at` (the expiry
/// instant itself counts as expired), and bound to `policy.environment` when one is required.
/// Signatures are checked before this; manifests after.
pub fn check_policy(lock: &Lockfile, policy: &TrustPolicy<'_>) -> Result<(), VerifyError> {
    if let Some(expired) = lock.expires
        && policy.at >= expired
    {
        return Err(VerifyError::Expired {
            expired,
            at: policy.at,
        });
    }
    if let Some(expected) = policy.environment
        && lock.environment.as_deref() != Some(expected)
    {
        return Err(VerifyError::WrongEnvironment {
            expected: expected.to_owned(),
            found: lock.environment.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_distinct_images_than_a_lockfile_may_hold_are_refused_by_count() {
        let pod = |images: std::ops::Range<usize>| {
            let mut yaml = String::from(
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n",
            );
            for i in images {
                yaml.push_str(&format!("    - {{name: c{i}, image: r.io/app{i}:1}}\n"));
            }
            yaml.into_bytes()
        };
        let mut files = SourceFiles::default();
        files
            .insert("a.yaml".into(), pod(0..lockfile::MAX_IMAGES))
            .unwrap();
        assert_eq!(scan_dir(&files).unwrap().uses.len(), lockfile::MAX_IMAGES);
        files.insert("b.yaml".into(), pod(0..1)).unwrap();
        assert!(
            scan_dir(&files).is_ok(),
            "a repeated reference is not a new one"
        );
        files
            .insert(
                "b.yaml".into(),
                pod(lockfile::MAX_IMAGES..lockfile::MAX_IMAGES + 1),
            )
            .unwrap();
        let err = scan_dir(&files).unwrap_err();
        assert!(
            matches!(err, ScanDirError::TooManyImages { count } if count == lockfile::MAX_IMAGES + 1),
            "{err}"
        );
    }

    fn lock(expires: Option<i64>, environment: Option<&str>) -> Lockfile {
        let mut l = Lockfile::build(
            1,
            Timestamp::from_second(1_000).unwrap(),
            ManifestBinding::compute([("a.yaml", &b""[..])]),
            &[],
            &Default::default(),
        );
        l.expires = expires.map(|s| Timestamp::from_second(s).unwrap());
        l.environment = environment.map(str::to_owned);
        l
    }

    fn policy<'t>(trust: &'t AllowedSigners, at: i64, env: Option<&'t str>) -> TrustPolicy<'t> {
        TrustPolicy {
            signers: trust,
            at: Timestamp::from_second(at).unwrap(),
            threshold: 1,
            environment: env,
            strict: false,
        }
    }

    #[test]
    fn expiry_is_judged_at_the_policy_time() {
        let trust = AllowedSigners::parse("", "empty").unwrap();
        let l = lock(Some(2_000), None);
        assert!(check_policy(&l, &policy(&trust, 1_999, None)).is_ok());
        let err = check_policy(&l, &policy(&trust, 2_000, None)).unwrap_err();
        assert!(
            matches!(err, VerifyError::Expired { expired, .. } if expired.as_second() == 2_000)
        );
        assert!(
            err.to_string().contains("expired at 1970-01-01T00:33:20Z"),
            "{err}"
        );
        assert!(check_policy(&lock(None, None), &policy(&trust, i32::MAX.into(), None)).is_ok());
    }

    #[test]
    fn a_required_environment_must_be_recorded() {
        let trust = AllowedSigners::parse("", "empty").unwrap();
        let prod = policy(&trust, 1_500, Some("prod"));
        assert!(check_policy(&lock(None, Some("prod")), &prod).is_ok());
        let staging = check_policy(&lock(None, Some("staging")), &prod).unwrap_err();
        assert!(
            staging.to_string().contains("environment \"staging\""),
            "{staging}"
        );
        let none = check_policy(&lock(None, None), &prod).unwrap_err();
        assert!(none.to_string().contains("no environment"), "{none}");
        // Without a required environment, a bound lockfile passes.
        assert!(check_policy(&lock(None, Some("prod")), &policy(&trust, 1_500, None)).is_ok());
    }
}

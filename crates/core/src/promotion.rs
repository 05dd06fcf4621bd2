//! Checking a promotion (`lockstep promote`): the lockfile must record one from the wanted
//! environment, and the source lockfile it names — found in the repository's history by the
//! edge that reads Git — must be the recorded bytes and must have verified, for that
//! environment, when the promotion was signed.
//!
//! The record alone is a claim made by whoever signed the target; checking the source makes
//! it a fact a second set of keys (the source's signers) vouches for. The source is judged as
//! of the promoted lockfile's `created` time: a staging lockfile that expired after it was
//! promoted was still good when it was promoted (and the source must not be created after
//! it). Every digest the promoted lockfile pins must be one the source pins, except those
//! the record names as resolved from the registry (`promote --resolve-missing`).

use crate::files::SourceFiles;
use crate::lockfile::{Lockfile, Promotion};
use crate::model::Digest;
use crate::signing::AllowedSigners;
use crate::verify::{TrustPolicy, VerifyError, verify_dir};

/// What a promotion must satisfy.
pub struct PromotionPolicy<'t> {
    /// The environment the source lockfile must be for.
    pub from: &'t str,
    /// Who may have signed the source lockfile.
    pub signers: &'t AllowedSigners,
    /// How many distinct principals must have signed it.
    pub threshold: usize,
}

/// Why a promotion does not hold.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error("the lockfile records no promotion (it was locked from the registry)")]
    NotPromoted,
    #[error(
        "the lockfile records a promotion from {}, not from {wanted}",
        found.as_deref().unwrap_or("a lockfile with no environment")
    )]
    OtherEnvironment {
        found: Option<String>,
        wanted: String,
    },
    #[error(
        "the promotion record names no source directory in this repository (it was promoted from outside it), so its source lockfile cannot be checked"
    )]
    NoPath,
    #[error("{}", not_found(path, lockfile, commit.as_deref()))]
    NotFound {
        path: String,
        lockfile: Digest,
        commit: Option<String>,
    },
    #[error("the source lockfile {path} at commit {commit} does not verify")]
    Unverified {
        path: String,
        commit: String,
        #[source]
        source: VerifyError,
    },
    #[error(
        "{reference} is pinned at {digest}, which the source lockfile {path} at commit {commit} does not pin, and the promotion does not record it as resolved from the registry"
    )]
    NotFromSource {
        reference: String,
        digest: String,
        path: String,
        commit: String,
    },
    #[error(
        "the source lockfile {path} at commit {commit} was created at {source_created}, after the promotion ({promoted_created}): a promotion cannot come from a later lockfile"
    )]
    CreatedLater {
        path: String,
        commit: String,
        source_created: jiff::Timestamp,
        promoted_created: jiff::Timestamp,
    },
    #[error(
        "the source lockfile {path} at commit {commit} has generation {found}; the promotion records {recorded}"
    )]
    Generation {
        path: String,
        commit: String,
        found: u64,
        recorded: u64,
    },
}

fn not_found(path: &str, lockfile: &Digest, commit: Option<&str>) -> String {
    let file = lockfile_path(path);
    match commit {
        Some(c) => format!(
            "the recorded source commit {c} is not in the repository, or its {file} is not the promoted one ({lockfile})"
        ),
        None => format!("no commit in the history has the promoted {file} ({lockfile})"),
    }
}

/// The source lockfile's path for messages: `staging/lockstep.lock`.
pub fn lockfile_path(dir: &str) -> String {
    if dir.is_empty() {
        crate::lockfile::FILE_NAME.to_owned()
    } else {
        format!("{dir}/{}", crate::lockfile::FILE_NAME)
    }
}

/// The lockfile's promotion record, when it records one from `from`; with the source
/// directory to look for in history.
pub fn record<'l>(
    lock: &'l Lockfile,
    from: &str,
) -> Result<(&'l Promotion, &'l str), PromotionError> {
    let record = lock
        .promoted_from
        .as_ref()
        .ok_or(PromotionError::NotPromoted)?;
    if record.environment.as_deref() != Some(from) {
        return Err(PromotionError::OtherEnvironment {
            found: record.environment.clone(),
            wanted: from.to_owned(),
        });
    }
    let path = record.path.as_deref().ok_or(PromotionError::NoPath)?;
    Ok((record, path))
}

/// The source that was found verified: the commit it was read from and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSource {
    pub commit: String,
    pub path: String,
    pub generation: u64,
    /// The principals whose signatures approved the source, sorted.
    pub signers: Vec<String>,
    /// The images the promotion resolved from the registry instead (`--resolve-missing`).
    pub resolved: Vec<String>,
}

/// Judge the source lockfile found at `commit` (the files of the recorded directory there)
/// against the record of `promoted` and the policy. The bytes are hashed before anything
/// else; the signatures are checked before the lockfile is parsed (by [`verify_dir`]).
pub fn verify_source(
    promoted: &Lockfile,
    files: &SourceFiles,
    commit: &str,
    policy: &PromotionPolicy<'_>,
) -> Result<VerifiedSource, PromotionError> {
    let (record, path) = record(promoted, policy.from)?;
    let not_found = || PromotionError::NotFound {
        path: path.to_owned(),
        lockfile: record.lockfile.clone(),
        commit: record.commit.clone(),
    };
    let bytes = files.lockfile().ok_or_else(not_found)?;
    if Digest::of(bytes) != record.lockfile {
        return Err(not_found());
    }
    let trust = TrustPolicy {
        signers: policy.signers,
        at: promoted.created,
        threshold: policy.threshold,
        environment: Some(policy.from),
        strict: false,
    };
    let verified = verify_dir(files, &trust).map_err(|source| PromotionError::Unverified {
        path: lockfile_path(path),
        commit: commit.to_owned(),
        source,
    })?;
    let generation = verified.lockfile().generation;
    if generation != record.generation {
        return Err(PromotionError::Generation {
            path: lockfile_path(path),
            commit: commit.to_owned(),
            found: generation,
            recorded: record.generation,
        });
    }
    let source = verified.lockfile();
    if source.created > promoted.created {
        return Err(PromotionError::CreatedLater {
            path: lockfile_path(path),
            commit: commit.to_owned(),
            source_created: source.created,
            promoted_created: promoted.created,
        });
    }
    // The point of a promotion: every digest is the source's, but those recorded as
    // resolved from the registry (and so shown as such).
    let pinned: std::collections::BTreeSet<(String, &Digest)> = source
        .images
        .iter()
        .map(|e| (e.image.name(), &e.digest))
        .collect();
    for entry in &promoted.images {
        let name = entry.image.name();
        let resolved = format!("{name}@{}", entry.digest);
        if !pinned.contains(&(name, &entry.digest)) && !record.resolved.contains(&resolved) {
            return Err(PromotionError::NotFromSource {
                reference: entry.reference.clone(),
                digest: entry.digest.to_string(),
                path: lockfile_path(path),
                commit: commit.to_owned(),
            });
        }
    }
    let signers = verified.principals();
    Ok(VerifiedSource {
        commit: commit.to_owned(),
        path: path.to_owned(),
        generation,
        signers,
        resolved: record.resolved.clone(),
    })
}

//! The shared verdict on a manifests directory against its (verified) lockfile.
//!
//! `verify`, `render` and the reconciler all ask the same question here: do these manifest
//! bytes, scanned, match what the signed lockfile pins? Pure; the caller did the I/O and the
//! signature check.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::lockfile::{BindingDiff, Lockfile, ManifestBinding, UseSite};
use crate::model::{ImageUse, strip_digest};

/// One reason a manifests directory does not match its lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "kebab-case")]
pub enum Finding {
    /// The files are not the ones the lockfile was made for.
    BindingMismatch {
        locked_digest: String,
        locked_files: usize,
        actual_digest: String,
        actual_files: usize,
        /// The files that differ, when the lockfile records its file listing.
        diff: BindingDiff,
    },
    /// An image is used by tag alone.
    Unpinned {
        location: String,
        object: String,
        container: String,
        reference: String,
    },
    /// A pinned image whose reference the lockfile does not list.
    NotInLock {
        location: String,
        object: String,
        container: String,
        reference: String,
    },
    /// A pinned image whose digest differs from the lockfile's.
    DigestMismatch {
        location: String,
        object: String,
        container: String,
        reference: String,
        locked: String,
    },
    /// The lockfile lists an image no manifest uses.
    UnusedEntry { reference: String },
    /// The lockfile's record of where an image is used differs from the manifests.
    UsesDiffer { reference: String },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::BindingMismatch {
                locked_digest,
                locked_files,
                actual_digest,
                actual_files,
                diff,
            } => {
                write!(
                    f,
                    "the manifests are not the ones locked: lockfile binds {locked_files} files ({locked_digest}), found {actual_files} files ({actual_digest})"
                )?;
                for (what, paths) in [
                    ("changed", &diff.changed),
                    ("added", &diff.added),
                    ("removed", &diff.removed),
                ] {
                    if !paths.is_empty() {
                        write!(f, "; {what}: {}", named(paths))?;
                    }
                }
                Ok(())
            }
            Finding::Unpinned {
                location,
                object,
                container,
                reference,
            } => {
                write!(
                    f,
                    "{location}: {object} {container}: image {reference} is not pinned to a digest"
                )
            }
            Finding::NotInLock {
                location,
                object,
                container,
                reference,
            } => {
                write!(
                    f,
                    "{location}: {object} {container}: image {reference} is not in the lockfile"
                )
            }
            Finding::DigestMismatch {
                location,
                object,
                container,
                reference,
                locked,
            } => write!(
                f,
                "{location}: {object} {container}: image {reference} does not match the lockfile's digest {locked}"
            ),
            Finding::UnusedEntry { reference } => {
                write!(
                    f,
                    "lockfile lists image {reference} but no manifest uses it"
                )
            }
            Finding::UsesDiffer { reference } => {
                write!(
                    f,
                    "lockfile's record of where {reference} is used differs from the manifests"
                )
            }
        }
    }
}

/// The finding when the files are not the ones the lockfile binds (hashes only: checked
/// before anything is parsed).
///
/// The diff names files by path only: their names are in the signed lockfile and in the
/// file set, nothing is parsed to find them.
pub fn binding_finding(lock: &Lockfile, binding: &ManifestBinding) -> Option<Finding> {
    (*binding != lock.manifests).then(|| Finding::BindingMismatch {
        locked_digest: lock.manifests.digest.to_string(),
        locked_files: lock.manifests.files,
        actual_digest: binding.digest.to_string(),
        actual_files: binding.files,
        diff: lock.manifests.differences(binding),
    })
}

/// Everything wrong with `uses` (every image found in the bound files) and `binding` (computed
/// from those files) against `lock`. Empty means the directory is exactly what was locked.
pub fn check(lock: &Lockfile, uses: &[ImageUse], binding: &ManifestBinding) -> Vec<Finding> {
    let mut findings: Vec<Finding> = binding_finding(lock, binding).into_iter().collect();
    let mut used = BTreeSet::new();
    for u in uses {
        let object = u.object.to_string();
        let location = u.location();
        let container = u.container.clone();
        let Some(digest) = u.reference.digest() else {
            findings.push(Finding::Unpinned {
                location,
                object,
                container,
                reference: u.written.clone(),
            });
            continue;
        };
        let Some(entry) = lock.entry(&u.written) else {
            findings.push(Finding::NotInLock {
                location,
                object,
                container,
                reference: u.written.clone(),
            });
            continue;
        };
        used.insert(entry.reference.as_str());
        if entry.digest != *digest {
            findings.push(Finding::DigestMismatch {
                location,
                object,
                container,
                reference: u.written.clone(),
                locked: entry.digest.to_string(),
            });
        }
    }
    // Where each reference is used, grouped once (not per lockfile entry: 10 000 images
    // would make that quadratic).
    let mut sites: BTreeMap<&str, Vec<UseSite>> = BTreeMap::new();
    for u in uses {
        sites
            .entry(strip_digest(&u.written))
            .or_default()
            .push(UseSite::of(u));
    }
    for entry in &lock.images {
        if !used.contains(entry.reference.as_str()) {
            findings.push(Finding::UnusedEntry {
                reference: entry.reference.clone(),
            });
            continue;
        }
        let mut actual = sites.remove(entry.reference.as_str()).unwrap_or_default();
        actual.sort();
        actual.dedup();
        if actual != entry.uses {
            findings.push(Finding::UsesDiffer {
                reference: entry.reference.clone(),
            });
        }
    }
    findings
}

/// Up to ten paths, then how many more.
fn named(paths: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut shown: Vec<&str> = paths.iter().take(SHOWN).map(String::as_str).collect();
    let more = paths.len().saturating_sub(SHOWN);
    let rest = format!("and {more} more");
    if more > 0 {
        shown.push(&rest);
    }
    shown.join(", ")
}

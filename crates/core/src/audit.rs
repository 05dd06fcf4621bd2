//! The audit of a history: from what each commit that touched the manifests holds (its
//! verification verdict, its lockfile, its signatures) to one row per commit and the findings
//! an auditor acts on. Pure: the CLI walks Git and runs [`crate::verify::verify_dir`]; this
//! module only compares commits with each other.
//!
//! Findings:
//! - **unlocked change**: the commit changed the inputs but does not verify (no lockfile, a
//!   stale or unsigned one, a manifest the lock does not match).
//! - **generation regression**: a verified lockfile whose generation is not above the highest
//!   generation verified earlier on the walk, while its bytes differ from that lockfile's
//!   (a rollback to an older signed lock, or two locks forked from one generation).
//! - **unknown signer**: a signature file made by a key that is not in the allowed signers.
//! - **promotion unverified**: a verified lockfile records a promotion (`lockstep promote`)
//!   whose source lockfile is not in the history, or did not verify when it was promoted.
//! - **not promoted**: with a policy that the directory must be promoted from an environment,
//!   a new verified lockfile that does not record a promotion from it (it resolved tags
//!   itself, or came from elsewhere).

use std::collections::BTreeMap;

use jiff::Timestamp;

/// What one commit holds, as the CLI found it.
#[derive(Debug, Clone)]
pub struct CommitFacts {
    /// The full commit id.
    pub id: String,
    /// The committer time (the time the verification was judged at).
    pub time: Timestamp,
    /// The first line of the message.
    pub summary: String,
    /// `Ok` with the approving principals when the directory verifies, else the first reason.
    pub verdict: Result<Vec<String>, String>,
    /// The lockfile as parsed: verified when the verdict is `Ok`, else read unverified (for
    /// reporting only); `None` when there is none or it cannot be parsed.
    pub lock: Option<LockFacts>,
    /// Fingerprints of the keys of signature files that no allowed signer lists, by file.
    pub unknown_signers: Vec<UnknownSigner>,
}

/// The parts of a lockfile an audit compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFacts {
    /// The lockfile's generation.
    pub generation: u64,
    /// Each image reference as written in the manifests, and its pinned digest.
    pub images: BTreeMap<String, String>,
    /// The SHA-256 of the lockfile's bytes, to tell two locks of one generation apart.
    pub sha256: String,
    /// The mirrors recorded for each reference that has any (`lockstep mirror`).
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// The environment the lockfile is for.
    pub environment: Option<String>,
    /// The promotion it records, if any.
    pub promoted_from: Option<PromotionFacts>,
}

/// A lockfile's promotion record, and what the CLI found of its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionFacts {
    /// The source's environment, as recorded.
    pub environment: Option<String>,
    /// The source's generation, as recorded.
    pub generation: u64,
    /// `Ok` with the commit its source lockfile was found verified at, `Err` with why not;
    /// `None` when it was not looked for (an unverified lockfile, a source with no
    /// environment).
    pub source: Option<Result<String, String>>,
}

/// What the auditor requires beyond each commit verifying.
#[derive(Debug, Clone, Default)]
pub struct AuditPolicy {
    /// Every new lockfile must record a verified promotion from this environment.
    pub require_promotion_from: Option<String>,
}

/// A promotion as shown in a row: `staging generation 7 → prod generation 12`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PromotionRow {
    pub from_environment: Option<String>,
    pub from_generation: u64,
    /// Where the source lockfile was found verified; `None` when it was not.
    pub source_commit: Option<String>,
    pub to_environment: Option<String>,
    pub to_generation: u64,
}

/// A signature file made by a key that is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnknownSigner {
    /// The signature file, e.g. `lockstep.lock.mallory.sig`.
    pub file: String,
    /// The key's `SHA256:…` fingerprint.
    pub fingerprint: String,
}

/// How one image changed between two audited commits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum ImageChange {
    /// A reference that the previous lock did not have.
    Added { reference: String, digest: String },
    /// A reference that this lock no longer has.
    Removed { reference: String, digest: String },
    /// The same reference pinned to another digest.
    DigestChanged {
        reference: String,
        old: String,
        new: String,
    },
    /// The pinned digest is recorded in mirrors it was not recorded in before.
    Mirrored {
        reference: String,
        mirrors: Vec<String>,
    },
}

/// What an auditor must look at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Finding {
    /// The inputs changed and the commit does not verify.
    UnlockedChange { reason: String },
    /// A verified lockfile not newer than one verified earlier on the walk.
    GenerationRegression {
        generation: u64,
        earlier_generation: u64,
        earlier_commit: String,
    },
    /// A signature by a key nobody trusts.
    UnknownSigner { file: String, fingerprint: String },
    /// A recorded promotion whose source lockfile was not found verified.
    PromotionUnverified { from: String, reason: String },
    /// A new lockfile that the policy says must be promoted, and is not (from there).
    NotPromoted {
        required: String,
        found: Option<String>,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::UnlockedChange { reason } => write!(f, "unlocked change: {reason}"),
            Finding::GenerationRegression {
                generation,
                earlier_generation,
                earlier_commit,
            } => write!(
                f,
                "generation regression: {generation} after generation {earlier_generation} at {earlier_commit}"
            ),
            Finding::UnknownSigner { file, fingerprint } => {
                write!(f, "unknown signer: {file} is signed by {fingerprint}")
            }
            Finding::PromotionUnverified { from, reason } => {
                write!(f, "promotion unverified: from {from}: {reason}")
            }
            Finding::NotPromoted { required, found } => match found {
                None => write!(
                    f,
                    "not promoted: the policy requires a promotion from {required}, and this lock resolved its tags itself"
                ),
                Some(other) => write!(
                    f,
                    "not promoted: the policy requires a promotion from {required}, and this lock was promoted from {other}"
                ),
            },
        }
    }
}

/// One audited commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// The full commit id.
    pub commit: String,
    /// The committer time, RFC 3339.
    pub date: String,
    /// The first line of the message.
    pub summary: String,
    /// Whether the directory verifies at this commit.
    pub valid: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
    /// The approving principals, sorted, each once.
    pub signers: Vec<String>,
    /// The lockfile's generation (also shown for an unverified lockfile).
    pub generation: Option<u64>,
    /// The promotion the lockfile records, if any.
    pub promoted_from: Option<PromotionRow>,
    /// The image changes against the previous audited commit that had a lockfile.
    pub changes: Vec<ImageChange>,
    /// What the auditor must look at.
    pub findings: Vec<Finding>,
}

/// The rows of an audit, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Audit {
    pub rows: Vec<Row>,
}

impl Audit {
    /// Every finding, with its commit.
    pub fn findings(&self) -> impl Iterator<Item = (&Row, &Finding)> {
        self.rows
            .iter()
            .flat_map(|row| row.findings.iter().map(move |f| (row, f)))
    }

    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings().next().is_none()
    }
}

/// Audit commits given oldest first.
pub fn audit(commits: &[CommitFacts], policy: &AuditPolicy) -> Audit {
    let mut rows = Vec::with_capacity(commits.len());
    let mut previous: Option<&LockFacts> = None;
    // The highest verified generation so far: (generation, lock sha256, commit).
    let mut highest: Option<(u64, &str, &str)> = None;
    for commit in commits {
        let mut findings = Vec::new();
        let (valid, reason, mut signers) = match &commit.verdict {
            Ok(principals) => (true, None, principals.clone()),
            Err(reason) => {
                findings.push(Finding::UnlockedChange {
                    reason: reason.clone(),
                });
                (false, Some(reason.clone()), Vec::new())
            }
        };
        signers.sort();
        signers.dedup();
        if valid && let Some(lock) = &commit.lock {
            match highest {
                Some((generation, sha256, earlier))
                    if lock.generation <= generation && lock.sha256 != sha256 =>
                {
                    findings.push(Finding::GenerationRegression {
                        generation: lock.generation,
                        earlier_generation: generation,
                        earlier_commit: earlier.to_owned(),
                    });
                }
                Some((generation, ..)) if lock.generation <= generation => {}
                _ => highest = Some((lock.generation, &lock.sha256, &commit.id)),
            }
        }
        for signer in &commit.unknown_signers {
            findings.push(Finding::UnknownSigner {
                file: signer.file.clone(),
                fingerprint: signer.fingerprint.clone(),
            });
        }
        if valid && let Some(lock) = &commit.lock {
            promotion_findings(lock, previous, policy, &mut findings);
        }
        let promoted_from = commit.lock.as_ref().and_then(|lock| {
            lock.promoted_from.as_ref().map(|p| PromotionRow {
                from_environment: p.environment.clone(),
                from_generation: p.generation,
                source_commit: p.source.clone().and_then(Result::ok),
                to_environment: lock.environment.clone(),
                to_generation: lock.generation,
            })
        });
        let changes = match &commit.lock {
            Some(lock) => {
                let changes = image_changes(previous, lock);
                previous = Some(lock);
                changes
            }
            None => Vec::new(),
        };
        rows.push(Row {
            commit: commit.id.clone(),
            date: commit.time.to_string(),
            summary: commit.summary.clone(),
            valid,
            reason,
            signers,
            generation: commit.lock.as_ref().map(|l| l.generation),
            promoted_from,
            changes,
            findings,
        });
    }
    Audit { rows }
}

/// The findings about a verified lockfile's promotion: its source not found verified, and,
/// when the policy requires a promotion, a new lockfile (not the previous one again) without
/// one from the required environment.
fn promotion_findings(
    lock: &LockFacts,
    previous: Option<&LockFacts>,
    policy: &AuditPolicy,
    findings: &mut Vec<Finding>,
) {
    let from = lock.promoted_from.as_ref().map(|p| {
        p.environment
            .clone()
            .unwrap_or_else(|| "(no environment)".into())
    });
    if let (Some(from), Some(Some(Err(reason)))) = (
        &from,
        lock.promoted_from.as_ref().map(|p| p.source.as_ref()),
    ) {
        findings.push(Finding::PromotionUnverified {
            from: from.clone(),
            reason: reason.clone(),
        });
    }
    let Some(required) = &policy.require_promotion_from else {
        return;
    };
    if previous.is_some_and(|p| p.sha256 == lock.sha256) {
        return;
    }
    match &lock.promoted_from {
        Some(p) if p.environment.as_deref() == Some(required.as_str()) => {
            if p.source.is_none() {
                findings.push(Finding::PromotionUnverified {
                    from: required.clone(),
                    reason: "its source lockfile was not checked".into(),
                });
            }
        }
        _ => findings.push(Finding::NotPromoted {
            required: required.clone(),
            found: from,
        }),
    }
}

/// Added, removed and re-pinned references from `old` to `new`, in reference order.
pub fn image_changes(old: Option<&LockFacts>, new: &LockFacts) -> Vec<ImageChange> {
    let (no_images, no_mirrors) = (BTreeMap::new(), BTreeMap::new());
    let (old, old_mirrors) = old.map_or((&no_images, &no_mirrors), |o| (&o.images, &o.mirrors));
    let mut changes = digest_changes(old, &new.images);
    for (reference, mirrors) in &new.mirrors {
        // Mirrors of a digest that was not pinned before are all new.
        let same_digest = old.get(reference) == new.images.get(reference);
        let before = old_mirrors
            .get(reference)
            .filter(|_| same_digest)
            .map_or(&[][..], Vec::as_slice);
        let added: Vec<String> = mirrors
            .iter()
            .filter(|m| !before.contains(m))
            .cloned()
            .collect();
        if !added.is_empty() {
            changes.push(ImageChange::Mirrored {
                reference: reference.clone(),
                mirrors: added,
            });
        }
    }
    changes
}

fn digest_changes(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<ImageChange> {
    let mut changes = Vec::new();
    for (reference, digest) in new {
        match old.get(reference) {
            None => changes.push(ImageChange::Added {
                reference: reference.clone(),
                digest: digest.clone(),
            }),
            Some(before) if before != digest => changes.push(ImageChange::DigestChanged {
                reference: reference.clone(),
                old: before.clone(),
                new: digest.clone(),
            }),
            Some(_) => {}
        }
    }
    for (reference, digest) in old {
        if !new.contains_key(reference) {
            changes.push(ImageChange::Removed {
                reference: reference.clone(),
                digest: digest.clone(),
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(generation: u64, sha: &str, images: &[(&str, &str)]) -> Option<LockFacts> {
        Some(LockFacts {
            mirrors: BTreeMap::new(),
            generation,
            images: images
                .iter()
                .map(|(r, d)| (r.to_string(), d.to_string()))
                .collect(),
            sha256: sha.into(),
            environment: None,
            promoted_from: None,
        })
    }

    fn commit(id: &str, verdict: Result<&str, &str>, lock: Option<LockFacts>) -> CommitFacts {
        CommitFacts {
            id: id.into(),
            time: Timestamp::from_second(1_700_000_000).unwrap(),
            summary: format!("commit {id}"),
            verdict: verdict.map(|p| vec![p.to_owned()]).map_err(str::to_owned),
            lock,
            unknown_signers: Vec::new(),
        }
    }

    #[test]
    fn promotions_are_shown_and_the_policy_flags_locks_that_did_not_promote() {
        let promoted = |generation, sha: &str, from: &str, source: Result<&str, &str>| {
            let mut l = lock(generation, sha, &[]).unwrap();
            l.environment = Some("prod".into());
            l.promoted_from = Some(PromotionFacts {
                environment: Some(from.into()),
                generation: 7,
                source: Some(source.map(str::to_owned).map_err(str::to_owned)),
            });
            Some(l)
        };
        let history = [
            commit("a", Ok("ci"), lock(1, "x", &[])),
            commit("b", Ok("ci"), promoted(2, "y", "staging", Ok("s1"))),
            commit(
                "c",
                Ok("ci"),
                promoted(3, "z", "staging", Err("not in history")),
            ),
            commit("d", Ok("ci"), promoted(4, "w", "qa", Ok("q1"))),
            commit("e", Ok("ci"), promoted(4, "w", "qa", Ok("q1"))),
        ];
        let policy = AuditPolicy {
            require_promotion_from: Some("staging".into()),
        };
        let audit = audit(&history, &policy);
        let kinds: Vec<(&str, String)> = audit
            .findings()
            .map(|(r, f)| (r.commit.as_str(), f.to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", "not promoted: the policy requires a promotion from staging, and this lock resolved its tags itself".to_owned()),
                ("c", "promotion unverified: from staging: not in history".to_owned()),
                ("d", "not promoted: the policy requires a promotion from staging, and this lock was promoted from qa".to_owned()),
            ],
            "the unchanged lock of e is not flagged again"
        );
        assert_eq!(
            audit.rows[1].promoted_from,
            Some(PromotionRow {
                from_environment: Some("staging".into()),
                from_generation: 7,
                source_commit: Some("s1".into()),
                to_environment: Some("prod".into()),
                to_generation: 2,
            })
        );
        // Without the policy, only the unverified source is a finding.
        let plain = super::audit(&history, &AuditPolicy::default());
        assert_eq!(plain.findings().count(), 1);
    }

    #[test]
    fn a_clean_history_reports_changes_and_no_findings() {
        let audit = audit(
            &[
                commit(
                    "a",
                    Ok("ci"),
                    lock(1, "x", &[("api:1", "d1"), ("web:2", "w")]),
                ),
                commit(
                    "b",
                    Ok("ci"),
                    lock(2, "y", &[("api:1", "d2"), ("db:3", "b")]),
                ),
            ],
            &AuditPolicy::default(),
        );
        assert!(audit.is_clean());
        assert_eq!(audit.rows[0].changes.len(), 2);
        assert_eq!(
            audit.rows[1].changes,
            vec![
                ImageChange::DigestChanged {
                    reference: "api:1".into(),
                    old: "d1".into(),
                    new: "d2".into()
                },
                ImageChange::Added {
                    reference: "db:3".into(),
                    digest: "b".into()
                },
                ImageChange::Removed {
                    reference: "web:2".into(),
                    digest: "w".into()
                },
            ]
        );
    }

    #[test]
    fn new_mirrors_of_an_unchanged_digest_are_reported_once() {
        let with_mirrors = |generation, digest: &str, mirrors: &[&str]| {
            let mut l = lock(generation, &format!("{generation}"), &[("api:1", digest)]).unwrap();
            if !mirrors.is_empty() {
                l.mirrors.insert(
                    "api:1".into(),
                    mirrors.iter().map(|m| m.to_string()).collect(),
                );
            }
            Some(l)
        };
        let audit = audit(
            &[
                commit("a", Ok("ci"), with_mirrors(1, "d1", &[])),
                commit("b", Ok("ci"), with_mirrors(2, "d1", &["m.io/dr/api"])),
                commit(
                    "c",
                    Ok("ci"),
                    with_mirrors(3, "d1", &["m.io/dr/api", "n.io/api"]),
                ),
                commit("d", Ok("ci"), with_mirrors(4, "d2", &["m.io/dr/api"])),
            ],
            &AuditPolicy::default(),
        );
        let mirrored = |row: usize| -> Vec<Vec<String>> {
            audit.rows[row]
                .changes
                .iter()
                .filter_map(|c| match c {
                    ImageChange::Mirrored { mirrors, .. } => Some(mirrors.clone()),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(mirrored(1), vec![vec!["m.io/dr/api".to_owned()]]);
        assert_eq!(
            mirrored(2),
            vec![vec!["n.io/api".to_owned()]],
            "only the new one"
        );
        assert_eq!(
            mirrored(3),
            vec![vec!["m.io/dr/api".to_owned()]],
            "a new digest's copy is new"
        );
    }

    #[test]
    fn rollback_and_fork_are_regressions_but_an_unchanged_lock_is_not() {
        let audit = audit(
            &[
                commit("a", Ok("ci"), lock(1, "x", &[])),
                commit("b", Ok("ci"), lock(2, "y", &[])),
                commit("c", Ok("ci"), lock(2, "y", &[])),
                commit("d", Ok("ci"), lock(1, "x", &[])),
                commit("e", Ok("ci"), lock(2, "z", &[])),
                commit("f", Ok("ci"), lock(3, "w", &[])),
            ],
            &AuditPolicy::default(),
        );
        let flagged: Vec<&str> = audit.findings().map(|(r, _)| r.commit.as_str()).collect();
        assert_eq!(flagged, ["d", "e"]);
        assert_eq!(
            audit.rows[3].findings,
            vec![Finding::GenerationRegression {
                generation: 1,
                earlier_generation: 2,
                earlier_commit: "b".into()
            }]
        );
    }

    #[test]
    fn an_unverified_commit_is_an_unlocked_change_and_does_not_raise_the_generation() {
        let mut unknown = commit("c", Ok("ci"), lock(2, "y", &[]));
        unknown.unknown_signers.push(UnknownSigner {
            file: "lockstep.lock.m.sig".into(),
            fingerprint: "SHA256:m".into(),
        });
        let audit = audit(
            &[
                commit("a", Ok("ci"), lock(1, "x", &[])),
                commit("b", Err("not signed"), lock(5, "q", &[])),
                unknown,
            ],
            &AuditPolicy::default(),
        );
        assert_eq!(
            audit.rows[1].findings,
            vec![Finding::UnlockedChange {
                reason: "not signed".into()
            }]
        );
        assert!(!audit.rows[1].valid);
        assert_eq!(
            audit.rows[2].findings,
            vec![Finding::UnknownSigner {
                file: "lockstep.lock.m.sig".into(),
                fingerprint: "SHA256:m".into()
            }]
        );
    }
}

//! Rollback protection (pure). A new lockfile may not step back from what was applied: a
//! lower generation, or the applied generation with other bytes, is refused.
//!
//! The floor is not simply the last applied generation. Each applied lockfile is recorded
//! with the keys that approved it (and the principals that admitted them) and the threshold
//! it met (`status.appliedHistory`), and a record binds only while those keys, under the
//! trust file read for this pass, still give that threshold — or the current one, if lower. (Raising `spec.threshold` must not release
//! anything: it would reopen rollbacks to older lockfiles signed often enough.)
//! So a compromised key that signed a huge generation (TUF's fast-forward attack) blocks
//! honest lockfiles only until it is removed from `allowed_signers`: then its generations
//! are released and the floor falls back to the highest applied lockfile that keys still
//! trusted approved. Releasing is reported, and the released records are forgotten at the
//! next apply, so putting the key back does not bring them back.

use super::crd::{AppliedRecord, LockstepSyncStatus, RecordedSigner};
use super::plan::LockIdentity;

/// How many applied lockfiles the history keeps (after dropping redundant ones).
pub const HISTORY_LEN: usize = 10;

/// How many signers one record keeps (a lockfile rarely has more than a few).
pub const MAX_SIGNERS: usize = 32;

/// Why a verified lockfile is refused as a step backwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// A lower generation than the one applied.
    #[error(
        "lockfile generation {candidate} is lower than the applied generation {applied}: refusing a rollback. To roll back, lock a new generation that pins the old digests: `lockstep lock --hold IMAGE:TAG@OLD_DIGEST` (held across later locks until `--release IMAGE:TAG`), or write the old digest in the manifest by hand and lock (held the same way); `git revert` of the manifests alone is refused like this"
    )]
    Older { candidate: u64, applied: u64 },
    /// The applied generation, but other lockfile bytes.
    #[error(
        "lockfile generation {generation} is already applied with other content ({applied}, now {candidate}); a new lockfile must have a higher generation"
    )]
    SameGenerationOtherContent {
        generation: u64,
        applied: String,
        candidate: String,
    },
}

/// The rollback rule: a lockfile with a lower generation than the applied one is refused,
/// and so is the applied generation with different bytes. The same lockfile again is fine.
pub fn check_rollback(
    applied: Option<&LockIdentity>,
    candidate: &LockIdentity,
) -> Result<(), RollbackError> {
    let Some(applied) = applied else {
        return Ok(());
    };
    if candidate.generation < applied.generation {
        return Err(RollbackError::Older {
            candidate: candidate.generation,
            applied: applied.generation,
        });
    }
    if candidate.generation == applied.generation && candidate.sha256 != applied.sha256 {
        return Err(RollbackError::SameGenerationOtherContent {
            generation: candidate.generation,
            applied: applied.sha256.to_string(),
            candidate: candidate.sha256.to_string(),
        });
    }
    Ok(())
}

/// What a candidate lockfile is held to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollbackFloor {
    /// The highest applied lockfile that trusted keys still approve: a candidate may not go
    /// below it. `None`: nothing applied, or nothing applied that still stands.
    pub floor: Option<LockIdentity>,
    /// Applied lockfiles above the floor whose approving keys no longer give the threshold:
    /// they bind no more.
    pub released: Vec<LockIdentity>,
}

/// The applied lockfile, from the status.
pub fn applied_lock(status: &LockstepSyncStatus) -> Option<LockIdentity> {
    Some(LockIdentity {
        generation: status.applied_generation?,
        sha256: status.applied_lockfile_sha256.as_deref()?.parse().ok()?,
    })
}

/// The floor for the next lockfile, with `threshold` the sync's threshold now and
/// `stands(signers, needed)` whether recorded signers still give `needed` distinct
/// approvals under the current trust file.
///
/// A status written before the history existed has no keys on record: its applied lockfile
/// binds as before.
pub fn floor(
    status: &LockstepSyncStatus,
    threshold: u32,
    stands: impl Fn(&[RecordedSigner], usize) -> bool,
) -> RollbackFloor {
    if status.applied_history.is_empty() {
        return RollbackFloor {
            floor: applied_lock(status),
            released: Vec::new(),
        };
    }
    let mut floor: Option<LockIdentity> = None;
    let mut released = Vec::new();
    // Records are the controller's own status; one whose digest does not parse is skipped.
    for (record, id) in status
        .applied_history
        .iter()
        .filter_map(|r| Some((r, identity(r)?)))
    {
        let needed = record.threshold.min(threshold) as usize;
        if !stands(&record.signers, needed) {
            released.push(id);
        } else if floor.as_ref().is_none_or(|f| id.generation > f.generation) {
            floor = Some(id);
        }
    }
    released.retain(|r| floor.as_ref().is_none_or(|f| r.generation > f.generation));
    RollbackFloor { floor, released }
}

/// The history after applying `record`: the `released` lockfiles forgotten, `record` first
/// — merged with the record of the same lockfile bytes, if any — then the older records it
/// does not make redundant, at most [`HISTORY_LEN`].
///
/// One record per lockfile: its signers are every signer it was ever applied with, its
/// threshold the lowest it met, so it stands whenever any of those approvals would (standing
/// is monotonic in signers). Regressions (review): keeping only the latest signers let a
/// commit with just a compromised key's signature replace the honest approvals; keeping one
/// record per signer set let such commits (one per subset of the honest signatures) flush
/// the honest records out of the history. A record is redundant next to one with at least
/// its generation, no higher threshold and a superset of its signers.
pub fn next_history(
    history: &[AppliedRecord],
    released: &[LockIdentity],
    mut record: AppliedRecord,
) -> Vec<AppliedRecord> {
    if let Some(same) = history
        .iter()
        .find(|old| old.lockfile_sha256 == record.lockfile_sha256)
    {
        let mut signers = same.signers.clone();
        for signer in record.signers {
            if !signers.contains(&signer) {
                signers.push(signer);
            }
        }
        signers.truncate(MAX_SIGNERS);
        record.signers = signers;
        record.threshold = record.threshold.min(same.threshold);
    }
    let mut next = vec![record];
    for old in history {
        let forgotten = released
            .iter()
            .any(|r| r.sha256.to_string() == old.lockfile_sha256);
        let redundant = next.iter().any(|kept| {
            kept.lockfile_sha256 == old.lockfile_sha256
                || (kept.generation >= old.generation
                    && kept.threshold <= old.threshold
                    && old.signers.iter().all(|s| kept.signers.contains(s)))
        });
        if !forgotten && !redundant {
            next.push(old.clone());
        }
    }
    next.truncate(HISTORY_LEN);
    next
}

fn identity(record: &AppliedRecord) -> Option<LockIdentity> {
    Some(LockIdentity {
        generation: record.generation,
        sha256: record.lockfile_sha256.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(n: u64) -> String {
        format!("sha256:{n:064x}")
    }

    fn record(generation: u64, keys: &[&str]) -> AppliedRecord {
        AppliedRecord {
            generation,
            lockfile_sha256: sha(generation),
            commit: format!("c{generation}"),
            // In these tests each key is its own principal.
            signers: keys
                .iter()
                .map(|k| RecordedSigner {
                    key: (*k).to_owned(),
                    principals: vec![(*k).to_owned()],
                })
                .collect(),
            threshold: 1,
        }
    }

    fn id(generation: u64) -> LockIdentity {
        LockIdentity {
            generation,
            sha256: sha(generation).parse().unwrap(),
        }
    }

    fn status(history: Vec<AppliedRecord>) -> LockstepSyncStatus {
        let head = history.first().cloned();
        LockstepSyncStatus {
            applied_generation: head.as_ref().map(|r| r.generation),
            applied_lockfile_sha256: head.map(|r| r.lockfile_sha256),
            applied_history: history,
            ..Default::default()
        }
    }

    /// Every key trusted, one approval each.
    fn all(signers: &[RecordedSigner], needed: usize) -> bool {
        signers.len() >= needed
    }

    /// Trusted: every key but "B", one approval each.
    fn without_b(signers: &[RecordedSigner], needed: usize) -> bool {
        signers.iter().filter(|s| s.key != "B").count() >= needed
    }

    #[test]
    fn rollback_rule() {
        // A lockfile with content n and generation g.
        let lock = |generation, n| LockIdentity {
            generation,
            sha256: sha(n).parse().unwrap(),
        };
        assert_eq!(check_rollback(None, &lock(1, 1)), Ok(()));
        assert_eq!(check_rollback(Some(&lock(3, 1)), &lock(3, 1)), Ok(()));
        assert_eq!(check_rollback(Some(&lock(3, 1)), &lock(4, 2)), Ok(()));
        assert_eq!(
            check_rollback(Some(&lock(3, 1)), &lock(2, 2)),
            Err(RollbackError::Older {
                candidate: 2,
                applied: 3
            })
        );
        let err = check_rollback(Some(&lock(3, 1)), &lock(3, 2)).unwrap_err();
        assert!(matches!(
            err,
            RollbackError::SameGenerationOtherContent { generation: 3, .. }
        ));
    }

    #[test]
    fn the_applied_lockfile_is_the_floor_while_its_keys_are_trusted() {
        let s = status(vec![record(3, &["A"]), record(2, &["A"])]);
        let f = floor(&s, 1, all);
        assert_eq!(f.floor, Some(id(3)));
        assert!(f.released.is_empty());
    }

    #[test]
    fn a_revoked_key_releases_its_generations_and_the_floor_falls_back() {
        // Fast-forward: B (compromised) signed generation 1 000 000 over A's generation 2.
        let s = status(vec![record(1_000_000, &["B"]), record(2, &["A"])]);
        assert_eq!(floor(&s, 1, all).floor, Some(id(1_000_000)));
        let f = floor(&s, 1, without_b);
        assert_eq!(f.floor, Some(id(2)));
        assert_eq!(f.released, vec![id(1_000_000)]);
        // Generation 3 by A is accepted then; generation 1 still is not.
        assert_eq!(check_rollback(f.floor.as_ref(), &id(3)), Ok(()));
        assert!(check_rollback(f.floor.as_ref(), &id(1)).is_err());
    }

    #[test]
    fn a_record_stands_while_its_remaining_keys_meet_its_threshold() {
        // Threshold 1: co-signed by A, it stands without B.
        let s = status(vec![record(9, &["A", "B"]), record(2, &["A"])]);
        assert_eq!(floor(&s, 1, without_b).floor, Some(id(9)));
        // Approved at threshold 2 by A and B: without B it is released, whatever the
        // threshold now — unless the sync now needs only one approval.
        let mut two = record(9, &["A", "B"]);
        two.threshold = 2;
        let s = status(vec![two, record(2, &["A"])]);
        let f = floor(&s, 2, without_b);
        assert_eq!((f.floor, f.released), (Some(id(2)), vec![id(9)]));
        assert_eq!(floor(&s, 1, without_b).floor, Some(id(9)));
    }

    /// Raising the threshold is hardening: it must not release what was applied (that would
    /// let an older lockfile with enough signatures roll the cluster back).
    #[test]
    fn raising_the_threshold_releases_nothing() {
        let s = status(vec![record(9, &["A"]), record(5, &["A", "B"])]);
        let f = floor(&s, 2, all);
        assert_eq!((f.floor, f.released), (Some(id(9)), vec![]));
    }

    /// Regression (review): the same lockfile re-committed with only a compromised key's
    /// signature replaced the record of its honest approval, so revoking that key released
    /// the lockfile and any older one signed by the honest key could be rolled back to.
    #[test]
    fn the_same_lockfile_keeps_every_signer_it_was_applied_with() {
        let h = next_history(&[record(50, &["A"])], &[], record(50, &["K"]));
        assert_eq!(h.len(), 1);
        let keys: Vec<&str> = h[0].signers.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["A", "K"]);
        let f = floor(&status(h), 1, |signers, needed| {
            signers.iter().filter(|s| s.key != "K").count() >= needed
        });
        assert_eq!(f.floor, Some(id(50)));
        assert!(f.released.is_empty(), "{:?}", f.released);
    }

    /// Regression (second review): with one record per signer set, commits of the applied
    /// lockfile with K and each pair of five honest signatures (threshold 3) made ten records
    /// and pushed the honest one out; revoking K then left no floor at all.
    #[test]
    fn subsets_of_the_honest_signatures_cannot_flush_the_history() {
        let mut honest = record(50, &["A", "B", "C", "D", "E"]);
        honest.threshold = 3;
        let mut h = vec![record(40, &["A", "B", "C"]), honest];
        let names = ["A", "B", "C", "D", "E"];
        for (i, x) in names.iter().enumerate() {
            for y in &names[i + 1..] {
                let mut variant = record(50, &["K", x, y]);
                variant.threshold = 3;
                h = next_history(&h, &[], variant);
            }
        }
        assert_eq!(h.len(), 2, "{h:?}");
        let f = floor(&status(h), 3, |signers, needed| {
            signers.iter().filter(|s| s.key != "K").count() >= needed
        });
        assert_eq!(f.floor, Some(id(50)));
    }

    #[test]
    fn a_status_without_history_binds_its_applied_lockfile() {
        let s = LockstepSyncStatus {
            applied_generation: Some(4),
            applied_lockfile_sha256: Some(sha(4)),
            ..Default::default()
        };
        assert_eq!(floor(&s, 1, |_, _| false).floor, Some(id(4)));
        assert_eq!(
            floor(&LockstepSyncStatus::default(), 1, all),
            RollbackFloor::default()
        );
    }

    #[test]
    fn the_history_merges_records_of_the_same_keys_and_forgets_released_ones() {
        // An attacker's many generations under one key collapse into the highest.
        let mut history = vec![record(1, &["A"])];
        for g in 100..120 {
            history = next_history(&history, &[], record(g, &["B"]));
        }
        let generations: Vec<u64> = history.iter().map(|r| r.generation).collect();
        assert_eq!(generations, [119, 1]);
        // The same lockfile at a new commit, same signers, replaces its record.
        let mut again = record(119, &["B"]);
        again.commit = "later".into();
        let h = next_history(&history, &[], again);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].commit, "later");
        // Released records are forgotten when the next lockfile is applied.
        let h = next_history(&history, &[id(119)], record(2, &["A"]));
        let generations: Vec<u64> = h.iter().map(|r| r.generation).collect();
        assert_eq!(generations, [2]);
        // Distinct key sets are kept, at most HISTORY_LEN.
        let mut h = Vec::new();
        for g in 0..15 {
            h = next_history(&h, &[], record(g, &[&format!("K{g}")]));
        }
        assert_eq!(h.len(), HISTORY_LEN);
        assert_eq!(h[0].generation, 14);
        // A record is merged only into one that stands whenever it does: met at a lower
        // threshold, yes; at a higher one, no.
        let mut strict = record(4, &["A"]);
        strict.threshold = 2;
        assert_eq!(
            next_history(&[record(3, &["A"])], &[], strict.clone()).len(),
            2
        );
        let mut loose = record(4, &["A"]);
        loose.threshold = 1;
        strict.generation = 3;
        assert_eq!(next_history(&[strict], &[], loose).len(), 1);
    }
}

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

/// How many applied lockfiles the history keeps (after merging those with the same keys).
pub const HISTORY_LEN: usize = 10;

/// Why a verified lockfile is refused as a step backwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// A lower generation than the one applied.
    #[error(
        "lockfile generation {candidate} is lower than the applied generation {applied}: refusing a rollback (roll back with a new commit that pins the old digests under a higher generation)"
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
/// `approvals(signers)` the distinct approvals recorded signers still give under the
/// current trust file.
///
/// A status written before the history existed has no keys on record: its applied lockfile
/// binds as before.
pub fn floor(
    status: &LockstepSyncStatus,
    threshold: u32,
    approvals: impl Fn(&[RecordedSigner]) -> usize,
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
        if approvals(&record.signers) < needed {
            released.push(id);
        } else if floor.as_ref().is_none_or(|f| id.generation > f.generation) {
            floor = Some(id);
        }
    }
    released.retain(|r| floor.as_ref().is_none_or(|f| r.generation > f.generation));
    RollbackFloor { floor, released }
}

/// The history after applying `record`: the `released` lockfiles forgotten, `record` first,
/// then the older records it does not make redundant, at most [`HISTORY_LEN`]. A record is
/// redundant next to one approved by the same signers, at no higher threshold, with at least
/// its generation: whenever it would stand, so would that one. The same lockfile approved by
/// other signers is another record (Regression: merging by lockfile bytes let a commit that
/// kept only a compromised key's signature replace the record of the honest approvals).
pub fn next_history(
    history: &[AppliedRecord],
    released: &[LockIdentity],
    record: AppliedRecord,
) -> Vec<AppliedRecord> {
    let mut next = vec![record];
    for old in history {
        let forgotten = released
            .iter()
            .any(|r| r.sha256.to_string() == old.lockfile_sha256);
        let redundant = next.iter().any(|kept| {
            kept.generation >= old.generation
                && kept.threshold <= old.threshold
                && same_signers(&kept.signers, &old.signers)
        });
        if !forgotten && !redundant {
            next.push(old.clone());
        }
    }
    next.truncate(HISTORY_LEN);
    next
}

fn same_signers(a: &[RecordedSigner], b: &[RecordedSigner]) -> bool {
    a.len() == b.len() && a.iter().all(|s| b.contains(s))
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
    fn all(signers: &[RecordedSigner]) -> usize {
        signers.len()
    }

    /// Trusted: every key but "B", one approval each.
    fn without_b(signers: &[RecordedSigner]) -> usize {
        signers.iter().filter(|s| s.key != "B").count()
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
    fn the_same_lockfile_with_other_signers_is_another_record() {
        let honest = record(50, &["A"]);
        let only_k = record(50, &["K"]);
        let h = next_history(&[honest], &[], only_k);
        assert_eq!(h.len(), 2);
        let trusted_but_k =
            |signers: &[RecordedSigner]| signers.iter().filter(|s| s.key != "K").count();
        let f = floor(&status(h), 1, trusted_but_k);
        assert_eq!(f.floor, Some(id(50)));
        assert!(f.released.is_empty(), "{:?}", f.released);
    }

    #[test]
    fn a_status_without_history_binds_its_applied_lockfile() {
        let s = LockstepSyncStatus {
            applied_generation: Some(4),
            applied_lockfile_sha256: Some(sha(4)),
            ..Default::default()
        };
        assert_eq!(floor(&s, 1, |_| 0).floor, Some(id(4)));
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

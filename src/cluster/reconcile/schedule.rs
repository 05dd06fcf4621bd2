//! When each sync's next pass is due. Status writes trigger the watch too and must not start
//! a pass before its time; a new spec or a new request annotation makes a pass due at once;
//! transient failures in a row back off exponentially, up to the interval.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt as _;

use super::REQUEST_ANNOTATION;
use crate::cluster::crd::LockstepSync;
use crate::cluster::plan::SyncId;

/// Backoff for transient failures: doubled per failure in a row, up to the interval.
const BACKOFF_START: Duration = Duration::from_secs(2);

/// The due passes of every sync.
#[derive(Default)]
pub(super) struct Schedule(Mutex<HashMap<SyncId, Scheduled>>);

/// When a sync's next pass is due, and for which spec.
#[derive(Clone, Debug)]
struct Scheduled {
    trigger: Trigger,
    due: Instant,
    failures: u32,
}

/// What makes a pass due at once: a new spec, a new request annotation, or a new push
/// request from the webhook receiver (`status.pushRequestedAt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Trigger {
    generation: Option<i64>,
    requested: Option<String>,
    pushed: Option<String>,
}

impl Trigger {
    pub(super) fn of(sync: &LockstepSync) -> Trigger {
        Trigger {
            generation: sync.metadata.generation,
            requested: sync.annotations().get(REQUEST_ANNOTATION).cloned(),
            pushed: sync
                .status
                .as_ref()
                .and_then(|s| s.push_requested_at.clone()),
        }
    }
}

impl Schedule {
    fn entries(&self) -> MutexGuard<'_, HashMap<SyncId, Scheduled>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forget every due time: each sync gets a pass at once.
    pub(super) fn forget_all(&self) {
        self.entries().clear();
    }

    /// Forget syncs that no longer exist; the ones forgotten.
    pub(super) fn retain(&self, live: impl Fn(&SyncId) -> bool) -> Vec<SyncId> {
        let mut entries = self.entries();
        let gone: Vec<SyncId> = entries.keys().filter(|id| !live(id)).cloned().collect();
        for id in &gone {
            entries.remove(id);
        }
        gone
    }

    /// How long until the pass of `trigger` is due, when it is not due now: a watch event
    /// that is not a new spec or request (our own status write, say) waits for its time.
    pub(super) fn not_due_for(&self, id: &SyncId, trigger: &Trigger) -> Option<Duration> {
        let entries = self.entries();
        let scheduled = entries.get(id).filter(|s| s.trigger == *trigger)?;
        let now = Instant::now();
        (now < scheduled.due).then(|| scheduled.due - now)
    }

    /// A pass succeeded: the next one is due after `requeue`.
    pub(super) fn passed(&self, id: SyncId, trigger: Trigger, requeue: Duration) {
        self.entries().insert(
            id,
            Scheduled {
                trigger,
                due: Instant::now() + requeue,
                failures: 0,
            },
        );
    }

    /// A pass failed transiently: [`Schedule::backoff`] sets when it is retried, counting the
    /// failures in a row.
    pub(super) fn failed(&self, id: SyncId, trigger: Trigger) {
        let mut entries = self.entries();
        let failures = entries.get(&id).map_or(0, |s| s.failures);
        entries.insert(
            id,
            Scheduled {
                trigger,
                due: Instant::now(),
                failures,
            },
        );
    }

    /// The wait before retrying a transient failure of `sync`, capped at its interval.
    pub(super) fn backoff(&self, id: SyncId, sync: &LockstepSync, interval: Duration) -> Duration {
        let mut entries = self.entries();
        let entry = entries.entry(id).or_insert_with(|| Scheduled {
            trigger: Trigger {
                generation: sync.metadata.generation,
                requested: None,
                pushed: None,
            },
            due: Instant::now(),
            failures: 0,
        });
        let backoff = BACKOFF_START
            .saturating_mul(1u32 << entry.failures.min(16))
            .min(interval.max(BACKOFF_START));
        entry.failures = entry.failures.saturating_add(1);
        entry.due = Instant::now() + backoff;
        backoff
    }
}

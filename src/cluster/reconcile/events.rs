//! The Events a pass leaves on its `LockstepSync`: a refusal, a change applied, drift put
//! back, an unhealthy rollout — each note kept.
//!
//! Written here rather than with kube-runtime's `Recorder`: that one folds every repeat of
//! (type, reason, action, object) into the first Event's `series.count`, so the Applied note
//! of a later generation (what it pruned), a later DriftCorrected or RollbackRefused note
//! was lost. Here an Event is named after its note: the same note again is counted on its
//! Event (a refusal retried each interval does not flood the namespace), a new note is a new
//! Event. Each note is also logged.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use super::Context;
use super::outcome::{FailedStep, PassOutcome, short};
use super::status::{applied_message, conflict_message, list};
use crate::cluster::crd::LockstepSync;
use crate::cluster::kube_error::describe;

/// One Event to publish: type, reason, action and note.
type Note = (EventType, &'static str, &'static str, String);

/// `Normal` or `Warning`, as the Events API spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Notes remembered (by Event name) before the memory is dropped and rebuilt from the API.
const REMEMBERED: usize = 4096;

/// Writes Events as one controller instance, counting repeats of a note on its Event.
pub(super) struct EventWriter {
    client: Client,
    instance: String,
    /// Event name → how many times its note was published.
    counts: Mutex<HashMap<String, i32>>,
}

impl EventWriter {
    pub(super) fn new(client: Client, instance: Option<String>) -> Self {
        EventWriter {
            client,
            instance: instance.unwrap_or_else(|| "lockstep".into()),
            counts: Mutex::default(),
        }
    }

    /// Publish one note on `sync`: a new Event, or one more occurrence of the same note.
    async fn publish(&self, sync: &LockstepSync, note: &Note, now: Timestamp) -> kube::Result<()> {
        let (type_, reason, action, text) = note;
        let namespace = sync.namespace().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let name = event_name(&sync.name_any(), note);
        // Not held across the requests: one sync's passes never overlap, and each Event is
        // one sync's.
        let known = self.counts.lock().await.get(&name).copied();
        let count = match known {
            Some(count) => Some(count),
            None => match api.get_opt(&name).await? {
                Some(old) => Some(old.series.map_or(1, |s| s.count)),
                None => None,
            },
        };
        let count = match count {
            Some(count) => {
                let series = json!({"series": {
                    "count": count + 1,
                    "lastObservedTime": MicroTime(now),
                }});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(series))
                    .await?;
                count + 1
            }
            None => {
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace),
                        ..ObjectMeta::default()
                    },
                    event_time: Some(MicroTime(now)),
                    type_: Some(type_.as_str().into()),
                    reason: Some((*reason).into()),
                    action: Some((*action).into()),
                    // The Events API caps notes at 1 kB.
                    note: Some(truncate(text, 1000)),
                    regarding: Some(sync.object_ref(&())),
                    reporting_controller: Some("lockstep".into()),
                    reporting_instance: Some(self.instance.clone()),
                    series: None::<EventSeries>,
                    ..Event::default()
                };
                api.create(&PostParams::default(), &event).await?;
                1
            }
        };
        let mut counts = self.counts.lock().await;
        if counts.len() >= REMEMBERED {
            counts.clear();
        }
        counts.insert(name, count);
        Ok(())
    }
}

/// `<sync>.<first 16 hex digits of the note's SHA-256>`: the same note, the same Event.
fn event_name(sync: &str, (type_, reason, action, text): &Note) -> String {
    let mut hash = Sha256::new();
    for part in [type_.as_str(), reason, action, text] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hex::encode(hash.finalize());
    format!("{sync}.{}", &digest[..16])
}

/// Publish and log the Events of `outcome`; a failure to publish is logged, not a failed pass.
pub(super) async fn publish_events(ctx: &Context, sync: &LockstepSync, outcome: &PassOutcome) {
    let now = (ctx.clock)();
    for note in events_of(outcome) {
        let (type_, reason, action, text) = &note;
        match type_ {
            EventType::Normal => {
                tracing::info!(sync = %sync.name_any(), namespace = sync.namespace().unwrap_or_default(), reason, action, note = %text, "event")
            }
            EventType::Warning => {
                tracing::warn!(sync = %sync.name_any(), namespace = sync.namespace().unwrap_or_default(), reason, action, note = %text, "event")
            }
        }
        if let Err(e) = ctx.events.publish(sync, &note, now).await {
            tracing::warn!(error = %describe(&e), "cannot publish an Event");
        }
    }
}

fn events_of(outcome: &PassOutcome) -> Vec<Note> {
    let mut events = Vec::new();
    match outcome {
        PassOutcome::Suspended => {}
        PassOutcome::Refused(refusal) => {
            let action = match refusal.step {
                FailedStep::Spec | FailedStep::Trust => "ReadSpec",
                FailedStep::Fetch | FailedStep::Read => "Fetch",
                FailedStep::Verify | FailedStep::Rollback => "Verify",
                FailedStep::Plan | FailedStep::Apply => "Apply",
            };
            events.push((
                EventType::Warning,
                refusal.reason,
                action,
                refusal.message.clone(),
            ));
        }
        PassOutcome::Applied(pass) => {
            let changed = pass.created + pass.updated + pass.pruned.deleted.len();
            if changed > 0 || !pass.pruned.kept.is_empty() {
                events.push((EventType::Normal, "Applied", "Apply", applied_message(pass)));
            }
            if !pass.conflicts.is_empty() {
                events.push((
                    EventType::Warning,
                    "OwnershipConflict",
                    "Apply",
                    conflict_message(pass),
                ));
            }
            if !pass.drifted.is_empty() {
                events.push((
                    EventType::Warning,
                    "DriftCorrected",
                    "Apply",
                    format!(
                        "{} object(s) had drifted from commit {} and were put back: {}",
                        pass.drifted.len(),
                        short(&pass.commit),
                        list(&pass.drifted)
                    ),
                ));
            }
            if !pass.health.failed.is_empty() {
                events.push((
                    EventType::Warning,
                    "Unhealthy",
                    "Health",
                    pass.health.message(),
                ));
            }
        }
    }
    events
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(600);
        let cut = truncate(&long, 1000);
        assert!(cut.len() <= 1000 && cut.ends_with("..."));
    }
}

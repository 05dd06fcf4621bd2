//! The Events a pass leaves on its `LockstepSync`: a refusal, a change applied, drift put
//! back, an unhealthy rollout.

use kube::Resource as _;
use kube::runtime::events::{Event, EventType};

use super::Context;
use super::outcome::{FailedStep, PassOutcome, short};
use super::status::{applied_message, list};
use crate::cluster::crd::LockstepSync;
use crate::cluster::kube_error::describe;

/// One Event to publish: type, reason, action and note.
type Note = (EventType, &'static str, &'static str, String);

/// Publish the Events of `outcome`; a failure to publish is logged, not a failed pass.
pub(super) async fn publish_events(ctx: &Context, sync: &LockstepSync, outcome: &PassOutcome) {
    let reference = sync.object_ref(&());
    for (type_, reason, action, note) in events_of(outcome) {
        let event = Event {
            type_,
            reason: reason.into(),
            // The Events API caps notes at 1 kB.
            note: Some(truncate(&note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
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
            if changed > 0 {
                events.push((EventType::Normal, "Applied", "Apply", applied_message(pass)));
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

//! The registry gate of `spec.checkImages`: every pinned digest must still exist where the
//! cluster will pull it before a rollout.

use std::collections::{BTreeMap, BTreeSet};

use super::Registries;
use super::outcome::{FailedStep, Refusal};
use crate::error_chain::one_line;
use crate::exists::{self, Probe};
use crate::lockfile::Lockfile;
use crate::mirror::MirrorTarget;
use crate::model::ImageRef;
use crate::resolve::oci::OciRegistry;
use crate::resolve::{NoProgress, Resolved, check_exists};

/// What `spec.checkImages` asks about: every pinned digest where the cluster will pull it
/// (the image's own repository, or its copy in `mirror`), and what the lockfile already says
/// about each (so an index costs one request).
pub(super) fn pull_locations(
    lock: &Lockfile,
    mirror: Option<&MirrorTarget>,
) -> (BTreeMap<ImageRef, Resolved>, Vec<Probe>) {
    let pulled: BTreeSet<String> = lock
        .images
        .iter()
        .map(|e| match mirror {
            Some(m) => m.name_for(&e.image),
            None => e.image.name(),
        })
        .collect();
    let probes = exists::probes(lock)
        .into_iter()
        .filter(|p| pulled.contains(&p.location))
        .collect();
    (exists::known(lock), probes)
}

/// Ask the registries for every probe's digest, by digest: refused (`ImagesMissing`) when
/// any is gone, transiently (`RegistryUnavailable`) when any could not be asked.
pub(super) async fn check_images_exist(
    registries: &Registries,
    known: &BTreeMap<ImageRef, Resolved>,
    probes: &[Probe],
) -> Result<(), Refusal> {
    let registry = OciRegistry::new(registries.settings.clone())
        .map_err(|e| Refusal::new(FailedStep::Verify, "RegistryUnavailable", one_line(&e)))?;
    let report = check_exists(
        &registry,
        probes,
        known,
        registries.concurrency,
        &NoProgress,
    )
    .await;
    if !report.missing.is_empty() {
        let missing: Vec<String> = report
            .missing
            .iter()
            .map(|m| {
                format!(
                    "{} at {}",
                    exists::describe(
                        &m.reference,
                        &m.digest,
                        exists::Part::of(m.platform.as_deref(), m.signature),
                        None,
                    ),
                    m.location
                )
            })
            .collect();
        return Err(Refusal::new(
            FailedStep::Verify,
            "ImagesMissing",
            format!(
                "{} pinned digest(s) no longer exist where the cluster would pull them: {}",
                missing.len(),
                missing.join("; ")
            ),
        ));
    }
    if !report.unanswered.is_empty() {
        let unanswered: Vec<&str> = report.unanswered.iter().map(|u| u.error.as_str()).collect();
        let mut refusal = Refusal::new(
            FailedStep::Verify,
            "RegistryUnavailable",
            format!(
                "{} pinned digest(s) could not be checked: {}",
                unanswered.len(),
                unanswered.join("; ")
            ),
        );
        // A registry that answered wrongly (bytes that do not match a digest) will not get
        // better by asking again; one that could not be asked may.
        refusal.transient = !report.unanswered.iter().any(|u| u.finding);
        return Err(refusal);
    }
    Ok(())
}

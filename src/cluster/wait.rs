//! What `lockstep wait` decides from one look at a `LockstepSync`: has the commit CI pushed
//! been applied and become healthy, was it refused, or is it still on its way?
//!
//! Pure: a function of the status, the resource's `metadata.generation` and the wanted
//! revision. The watch that feeds it is the CLI's.

use super::crd::{Condition, LockstepSyncStatus};

/// The shortest commit prefix `wait` accepts: shorter ones collide too easily.
pub const MIN_PREFIX: usize = 7;

/// A commit id, or a prefix of one, as `wait --rev` takes it (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedCommit(String);

/// A `--rev` that is not a commit id or a long enough prefix of one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--rev {0:?} is not a commit id: give the full id or a prefix of at least 7 hex digits (branch and tag names are not accepted: they move)"
)]
pub struct InvalidRev(pub String);

impl WantedCommit {
    /// Parse a full commit id (40 or 64 hex digits) or a prefix of at least [`MIN_PREFIX`].
    pub fn parse(rev: &str) -> Result<Self, InvalidRev> {
        let lower = rev.trim().to_ascii_lowercase();
        let hex = lower.chars().all(|c| c.is_ascii_hexdigit());
        if !hex || lower.len() < MIN_PREFIX || lower.len() > 64 {
            return Err(InvalidRev(rev.to_owned()));
        }
        Ok(WantedCommit(lower))
    }

    /// Whether `commit` (a full id) is the wanted one.
    pub fn matches(&self, commit: &str) -> bool {
        commit.to_ascii_lowercase().starts_with(&self.0)
    }

    /// The id or prefix as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The wanted commit is applied and healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Success {
    pub commit: String,
    pub generation: Option<u64>,
    pub signers: Vec<String>,
    /// The Healthy condition's message.
    pub health: String,
}

/// The wanted commit will not become applied and healthy without a new commit or a human.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The full commit id the status names (the wanted id or prefix, for a refusal before
    /// any commit was fetched).
    pub commit: String,
    /// The condition reason: `SignaturesRejected`, `RollbackRefused`, `UnpinnedImage`,
    /// `Unhealthy`, …
    pub reason: String,
    /// The condition's message, naming the file, object, container or key.
    pub message: String,
}

/// One look's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet; the text says what state the sync is in (for a timeout).
    Waiting(String),
    Succeeded(Success),
    Failed(Failure),
    /// The prefix matches two different commits in the status.
    Ambiguous {
        first: String,
        second: String,
    },
}

/// Judge one status against the wanted commit. `generation` is the resource's
/// `metadata.generation`: a refusal recorded for an older spec says nothing about the
/// current one (the trust may have been fixed since), so it is not final.
pub fn judge(
    status: Option<&LockstepSyncStatus>,
    generation: Option<i64>,
    wanted: &WantedCommit,
) -> Verdict {
    let Some(status) = status else {
        return Verdict::Waiting("no status yet: the controller has not looked at it".into());
    };
    let applied = status
        .applied_commit
        .as_deref()
        .filter(|c| wanted.matches(c));
    let observed = status
        .observed_commit
        .as_deref()
        .filter(|c| wanted.matches(c));
    if let (Some(a), Some(o)) = (applied, observed)
        && a != o
    {
        return Verdict::Ambiguous {
            first: a.to_owned(),
            second: o.to_owned(),
        };
    }
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let current_spec = status.observed_generation == generation;

    if let Some(commit) = applied {
        return judge_applied(status, commit);
    }
    if let Some(commit) = observed
        && current_spec
        && let Some(refusal) = final_refusal(condition("Verified"), condition("Applied"))
    {
        return Verdict::Failed(Failure {
            commit: commit.to_owned(),
            reason: refusal.reason.clone(),
            message: refusal.message.clone(),
        });
    }
    // A refusal before any commit is fetched (the spec, the trust, the rights to read them)
    // refuses every commit until a human fixes it: waiting cannot help.
    if current_spec
        && let Some(v) = condition("Verified")
        && v.status == "False"
        && NEEDS_A_HUMAN.contains(&v.reason.as_str())
    {
        return Verdict::Failed(Failure {
            commit: wanted.as_str().to_owned(),
            reason: v.reason.clone(),
            message: v.message.clone(),
        });
    }
    Verdict::Waiting(state(status, observed.is_some(), current_spec))
}

/// The verdict on a wanted commit that is the applied one.
fn judge_applied(status: &LockstepSyncStatus, commit: &str) -> Verdict {
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    // Objects of the commit another sync owns were not applied: the commit is not what
    // runs, and only a human can settle whose they are.
    if let Some(r) = condition("Ready")
        && r.status == "False"
        && r.reason == "OwnershipConflict"
    {
        return Verdict::Failed(Failure {
            commit: commit.to_owned(),
            reason: r.reason.clone(),
            message: r.message.clone(),
        });
    }
    // Healthy describes the applied commit's objects: written by the pass that applied
    // it and re-judged by every later pass, refused ones too.
    match condition("Healthy") {
        Some(h) if h.status == "True" => Verdict::Succeeded(Success {
            commit: commit.to_owned(),
            generation: status.applied_generation,
            signers: status.signers.clone(),
            health: h.message.clone(),
        }),
        Some(h) if h.status == "False" && h.reason == "Failed" => Verdict::Failed(Failure {
            commit: commit.to_owned(),
            reason: "Unhealthy".into(),
            message: h.message.clone(),
        }),
        Some(h) => Verdict::Waiting(format!(
            "commit {} is applied, rolling out: {}",
            short(commit),
            h.message
        )),
        None => Verdict::Waiting(format!("commit {} is applied", short(commit))),
    }
}

/// The source environment runs the promoted lockfile, healthy, long enough.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soaked {
    pub commit: String,
    pub generation: Option<u64>,
    /// How long it has been applied and healthy (from the later of `status.appliedAt` and
    /// the Healthy condition's last transition); `None` when no soak was asked for and the
    /// status cannot say.
    pub for_: Option<std::time::Duration>,
}

/// What `promote --require-applied [--soak D]` decides from one look at the source
/// environment's `LockstepSync`: the lockfile with sha256 `lockfile` (`sha256:…`) must be the
/// applied one, its objects healthy (and no ownership conflict), for at least `soak`,
/// judged at `now`. `Err` says why not, for people.
pub fn judge_soak(
    status: Option<&LockstepSyncStatus>,
    generation: Option<i64>,
    lockfile: &str,
    now: jiff::Timestamp,
    soak: std::time::Duration,
) -> Result<Soaked, String> {
    let status = status.ok_or("it has no status yet: the controller has not looked at it")?;
    // A status written for an older spec (another path, trust or environment) says nothing
    // about the current one.
    if status.observed_generation != generation {
        return Err(format!(
            "its status is for spec generation {}, not the current {}: the controller has not reconciled the current spec yet",
            status
                .observed_generation
                .map_or_else(|| "?".to_owned(), |g| g.to_string()),
            generation.map_or_else(|| "?".to_owned(), |g| g.to_string())
        ));
    }
    let (Some(commit), Some(applied)) = (
        status.applied_commit.as_deref(),
        status.applied_lockfile_sha256.as_deref(),
    ) else {
        return Err("it has applied nothing yet".into());
    };
    if applied != lockfile {
        return Err(format!(
            "it applies another lockfile ({applied}, generation {}, commit {}), not the one being promoted ({lockfile})",
            status
                .applied_generation
                .map_or_else(|| "?".to_owned(), |g| g.to_string()),
            short(commit)
        ));
    }
    match judge_applied(status, commit) {
        Verdict::Succeeded(_) => {}
        Verdict::Failed(f) => {
            return Err(format!(
                "its applied objects are not healthy ({}): {}",
                f.reason, f.message
            ));
        }
        Verdict::Waiting(w) | Verdict::Ambiguous { first: w, .. } => {
            return Err(format!("it has not become healthy yet: {w}"));
        }
    }
    let healthy_since = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Healthy")
        .and_then(|c| c.last_transition_time.parse::<jiff::Timestamp>().ok());
    let applied_at = status
        .applied_at
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let since = match (applied_at, healthy_since) {
        (Some(a), Some(h)) => Some(a.max(h)),
        _ => None,
    };
    let for_ = since
        .map(|since| std::time::Duration::try_from(now.duration_since(since)).unwrap_or_default());
    if !soak.is_zero() {
        let Some(for_) = for_ else {
            return Err("its status records no appliedAt or Healthy transition time (a controller older than this lockstep?), so the soak cannot be judged".into());
        };
        if for_ < soak {
            return Err(format!(
                "it has been applied and healthy for {}, less than the soak of {}",
                human(for_),
                human(soak)
            ));
        }
    }
    Ok(Soaked {
        commit: commit.to_owned(),
        generation: status.applied_generation,
        for_,
    })
}

/// A duration in whole seconds, for people: `1h 2m 3s`.
pub fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}

/// Reasons of a refusal before any commit is fetched that only a human can lift.
const NEEDS_A_HUMAN: [&str; 5] = [
    "InvalidSpec",
    "Forbidden",
    "TrustNotFound",
    "TrustInvalid",
    "CredentialsNotFound",
];

/// A condition that refuses the observed commit for good: verification (signatures,
/// binding, unpinned or unlocked images, rollback) failed, or it cannot be planned.
/// Apply failures are not final: the API server may come back.
fn final_refusal<'c>(
    verified: Option<&'c Condition>,
    applied: Option<&'c Condition>,
) -> Option<&'c Condition> {
    if let Some(v) = verified
        && v.status == "False"
        && !TRANSIENT_REASONS.contains(&v.reason.as_str())
    {
        return Some(v);
    }
    applied.filter(|a| {
        a.status == "False"
            && matches!(
                a.reason.as_str(),
                "InvalidManifests" | "UnknownKind" | "ApplyRejected"
            )
    })
}

/// Reasons a pass can give that say nothing final about a commit.
const TRANSIENT_REASONS: [&str; 5] = [
    "ClusterUnavailable",
    "FetchFailed",
    "ApplyFailed",
    "CommitUnreadable",
    "RegistryUnavailable",
];

/// The sync's state in words, for a verdict still waiting.
fn state(status: &LockstepSyncStatus, observed_wanted: bool, current_spec: bool) -> String {
    let mut parts = Vec::new();
    match &status.applied_commit {
        Some(c) => parts.push(format!(
            "applied commit {} (generation {})",
            short(c),
            status
                .applied_generation
                .map_or_else(|| "?".to_owned(), |g| g.to_string())
        )),
        None => parts.push("nothing applied yet".to_owned()),
    }
    match &status.observed_commit {
        Some(c) if Some(c) != status.applied_commit.as_ref() => {
            parts.push(format!("last fetched commit {}", short(c)));
        }
        _ => {}
    }
    if observed_wanted && !current_spec {
        parts.push("the spec changed since that commit was judged".to_owned());
    }
    if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready") {
        parts.push(format!(
            "Ready={} {}: {}",
            ready.status, ready.reason, ready.message
        ));
    }
    parts.join("; ")
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "1111111111111111111111111111111111111111";
    const BAD: &str = "2222222222222222222222222222222222222222";

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: "2026-01-01T00:00:00Z".into(),
            observed_generation: Some(1),
        }
    }

    fn applied(commit: &str, healthy: Condition) -> LockstepSyncStatus {
        LockstepSyncStatus {
            observed_generation: Some(1),
            observed_commit: Some(commit.into()),
            applied_commit: Some(commit.into()),
            applied_generation: Some(3),
            signers: vec!["ci@example.com".into()],
            conditions: vec![
                condition("Ready", "True", "Applied", "ok"),
                condition("Verified", "True", "Verified", "signed"),
                condition("Applied", "True", "Applied", "3 objects"),
                healthy,
            ],
            ..Default::default()
        }
    }

    fn rev(s: &str) -> WantedCommit {
        WantedCommit::parse(s).unwrap()
    }

    #[test]
    fn a_promotion_soaks_only_on_the_same_lockfile_applied_and_healthy_long_enough() {
        let lock = "sha256:aaaa";
        let healthy = condition("Healthy", "True", "Current", "3 current");
        let mut status = applied(GOOD, healthy);
        status.applied_lockfile_sha256 = Some(lock.into());
        status.applied_at = Some("2026-01-01T00:30:00Z".into());
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        let hour = std::time::Duration::from_secs(3600);
        // Healthy since 00:00, applied at 00:30: the soak runs from 00:30.
        let soaked = judge_soak(
            Some(&status),
            Some(1),
            lock,
            at("2026-01-01T01:30:00Z"),
            hour,
        )
        .unwrap();
        assert_eq!(soaked.for_, Some(hour));
        assert_eq!(soaked.commit, GOOD);
        let early = judge_soak(
            Some(&status),
            Some(1),
            lock,
            at("2026-01-01T01:00:00Z"),
            hour,
        )
        .unwrap_err();
        assert_eq!(
            early,
            "it has been applied and healthy for 30m, less than the soak of 1h"
        );
        // Without a soak, applied and healthy is enough.
        assert!(
            judge_soak(
                Some(&status),
                Some(1),
                lock,
                at("2026-01-01T00:31:00Z"),
                Default::default()
            )
            .is_ok()
        );
        // A status for an older spec says nothing about the current one.
        let stale = judge_soak(
            Some(&status),
            Some(2),
            lock,
            at("2026-01-01T01:30:00Z"),
            hour,
        )
        .unwrap_err();
        assert!(
            stale.contains("spec generation 1, not the current 2"),
            "{stale}"
        );
        // Another lockfile applied there.
        let other = judge_soak(
            Some(&status),
            Some(1),
            "sha256:bbbb",
            at("2026-01-02T00:00:00Z"),
            hour,
        )
        .unwrap_err();
        assert!(
            other.starts_with(
                "it applies another lockfile (sha256:aaaa, generation 3, commit 111111111111)"
            ),
            "{other}"
        );
        // Not healthy.
        let mut sick = applied(
            GOOD,
            condition("Healthy", "False", "Failed", "Deployment/api: crash loop"),
        );
        sick.applied_lockfile_sha256 = Some(lock.into());
        sick.applied_at = status.applied_at.clone();
        let why =
            judge_soak(Some(&sick), Some(1), lock, at("2026-01-02T00:00:00Z"), hour).unwrap_err();
        assert!(
            why.contains("not healthy (Unhealthy): Deployment/api: crash loop"),
            "{why}"
        );
        // No status, nothing applied, no appliedAt to measure from.
        assert!(judge_soak(None, Some(1), lock, at("2026-01-02T00:00:00Z"), hour).is_err());
        status.applied_at = None;
        let why = judge_soak(
            Some(&status),
            Some(1),
            lock,
            at("2026-01-02T00:00:00Z"),
            hour,
        )
        .unwrap_err();
        assert!(why.contains("cannot be judged"), "{why}");
    }

    #[test]
    fn revs_are_full_ids_or_prefixes_of_seven_hex_digits() {
        assert!(WantedCommit::parse(GOOD).is_ok());
        assert!(
            WantedCommit::parse("ABCDEF0")
                .unwrap()
                .matches("abcdef0123")
        );
        for bad in ["abc123", "main", "v1.2.3", "abcdefg", ""] {
            assert_eq!(
                WantedCommit::parse(bad),
                Err(InvalidRev(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn applied_and_healthy_succeeds_with_generation_and_signers() {
        let status = applied(
            GOOD,
            condition("Healthy", "True", "Current", "all 3 current"),
        );
        assert_eq!(
            judge(Some(&status), Some(1), &rev("1111111")),
            Verdict::Succeeded(Success {
                commit: GOOD.into(),
                generation: Some(3),
                signers: vec!["ci@example.com".into()],
                health: "all 3 current".into(),
            })
        );
    }

    #[test]
    fn an_applied_rollout_in_progress_waits_and_a_failed_one_fails() {
        let progressing = applied(
            GOOD,
            condition("Healthy", "False", "Progressing", "Deployment/api: 1 of 2"),
        );
        let Verdict::Waiting(state) = judge(Some(&progressing), Some(1), &rev(GOOD)) else {
            panic!("should wait");
        };
        assert!(
            state.contains("rolling out: Deployment/api: 1 of 2"),
            "{state}"
        );

        let failed = applied(
            GOOD,
            condition(
                "Healthy",
                "False",
                "Failed",
                "Deployment/api failed: deadline",
            ),
        );
        assert_eq!(
            judge(Some(&failed), Some(1), &rev(GOOD)),
            Verdict::Failed(Failure {
                commit: GOOD.into(),
                reason: "Unhealthy".into(),
                message: "Deployment/api failed: deadline".into(),
            })
        );
    }

    fn refused(reason: &str, message: &str) -> LockstepSyncStatus {
        let mut status = applied(GOOD, condition("Healthy", "True", "Current", "ok"));
        status.observed_commit = Some(BAD.into());
        status.conditions[0] = condition("Ready", "False", reason, message);
        status.conditions[1] = condition("Verified", "False", reason, message);
        status
    }

    #[test]
    fn a_refused_commit_fails_with_the_reason_and_message() {
        for reason in [
            "BindingMismatch",
            "SignaturesRejected",
            "UnpinnedImage",
            "RollbackRefused",
        ] {
            let status = refused(reason, "commit 222: app.yaml");
            assert_eq!(
                judge(Some(&status), Some(1), &rev(BAD)),
                Verdict::Failed(Failure {
                    commit: BAD.into(),
                    reason: reason.into(),
                    message: "commit 222: app.yaml".into(),
                })
            );
        }
        // The previously applied commit is still applied and healthy.
        assert!(matches!(
            judge(Some(&refused("UnpinnedImage", "x")), Some(1), &rev(GOOD)),
            Verdict::Succeeded(_)
        ));
    }

    #[test]
    fn an_applied_commit_with_objects_another_sync_owns_fails() {
        let mut status = applied(GOOD, condition("Healthy", "True", "Current", "all current"));
        status.conditions[0] = condition(
            "Ready",
            "False",
            "OwnershipConflict",
            "ConfigMap/shop/settings (owned by LockstepSync ops/app)",
        );
        assert_eq!(
            judge(Some(&status), Some(1), &rev(GOOD)),
            Verdict::Failed(Failure {
                commit: GOOD.into(),
                reason: "OwnershipConflict".into(),
                message: "ConfigMap/shop/settings (owned by LockstepSync ops/app)".into(),
            })
        );
    }

    #[test]
    fn a_refusal_before_any_fetch_that_needs_a_human_fails_at_once() {
        // regression: a forbidden read of the trust was ClusterUnavailable, and wait burned
        // its whole timeout.
        let mut status = refused("Forbidden", "namespace shop has not opted in");
        status.observed_commit = Some(GOOD.into());
        status.applied_commit = None;
        assert_eq!(
            judge(Some(&status), Some(1), &rev(BAD)),
            Verdict::Failed(Failure {
                commit: BAD.into(),
                reason: "Forbidden".into(),
                message: "namespace shop has not opted in".into(),
            })
        );
        // Recorded for an older spec: it may be fixed already.
        assert!(matches!(
            judge(Some(&status), Some(2), &rev(BAD)),
            Verdict::Waiting(_)
        ));
    }

    #[test]
    fn transient_failures_and_refusals_of_an_older_spec_wait() {
        let status = refused("ClusterUnavailable", "connection refused");
        let Verdict::Waiting(state) = judge(Some(&status), Some(1), &rev(BAD)) else {
            panic!("should wait");
        };
        assert!(
            state.contains("Ready=False ClusterUnavailable: connection refused"),
            "{state}"
        );
        assert!(
            state.contains("applied commit 111111111111 (generation 3)"),
            "{state}"
        );

        // The spec changed (generation 2) since BAD was refused: the next pass decides.
        let status = refused("SignaturesRejected", "untrusted");
        let Verdict::Waiting(state) = judge(Some(&status), Some(2), &rev(BAD)) else {
            panic!("should wait");
        };
        assert!(state.contains("spec changed"), "{state}");
    }

    #[test]
    fn a_commit_not_seen_yet_waits() {
        let status = applied(GOOD, condition("Healthy", "True", "Current", "ok"));
        assert!(matches!(
            judge(Some(&status), Some(1), &rev(BAD)),
            Verdict::Waiting(_)
        ));
        assert_eq!(
            judge(None, Some(1), &rev(BAD)),
            Verdict::Waiting("no status yet: the controller has not looked at it".into())
        );
    }

    #[test]
    fn a_prefix_naming_two_commits_is_ambiguous() {
        let mut status = refused("UnpinnedImage", "x");
        status.observed_commit = Some(format!("1111111{}", &BAD[7..]));
        assert!(matches!(
            judge(Some(&status), Some(1), &rev("1111111")),
            Verdict::Ambiguous { .. }
        ));
    }

    #[test]
    fn an_unplannable_or_rejected_commit_fails_but_a_transient_apply_error_waits() {
        let mut status = refused("x", "x");
        status.conditions[0] = condition("Ready", "False", "UnknownKind", "Gadget");
        status.conditions[1] = condition("Verified", "True", "Verified", "signed");
        status.conditions[2] = condition("Applied", "False", "UnknownKind", "Gadget");
        assert!(matches!(
            judge(Some(&status), Some(1), &rev(BAD)),
            Verdict::Failed(f) if f.reason == "UnknownKind"
        ));
        status.conditions[2] = condition("Applied", "False", "ApplyFailed", "503");
        assert!(matches!(
            judge(Some(&status), Some(1), &rev(BAD)),
            Verdict::Waiting(_)
        ));
        // Regression: a 422 from the API server was reported as ApplyFailed, so `wait` only
        // ended at its timeout.
        status.conditions[2] = condition("Applied", "False", "ApplyRejected", "422 Invalid");
        assert!(matches!(
            judge(Some(&status), Some(1), &rev(BAD)),
            Verdict::Failed(f) if f.reason == "ApplyRejected"
        ));
    }

    #[test]
    fn a_registry_that_cannot_be_asked_waits() {
        let status = refused("RegistryUnavailable", "connection refused");
        assert!(matches!(
            judge(Some(&status), Some(1), &rev(BAD)),
            Verdict::Waiting(_)
        ));
        let status = refused("ImagesMissing", "gone");
        assert!(matches!(
            judge(Some(&status), Some(1), &rev(BAD)),
            Verdict::Failed(f) if f.reason == "ImagesMissing"
        ));
    }
}

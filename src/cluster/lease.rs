//! Leader election through a `coordination.k8s.io/v1` Lease, so that two replicas of the
//! controller never apply at the same time.
//!
//! client-go's scheme, hand-written (kube-runtime 5 has none): the holder renews the Lease
//! every `duration / 5`; a candidate takes it over once the Lease's record has not changed
//! for a whole `leaseDurationSeconds` *as measured by its own clock since it first saw that
//! record* (so clock skew between replicas does not matter); every write carries the
//! `resourceVersion` it read, so of two candidates exactly one wins. A holder that cannot
//! renew for two thirds of the duration stops leading before anyone may take over.
//!
//! [`decide`] is pure; [`hold`] is the loop around the API.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tokio::sync::watch;

use super::reconcile::Clock;

/// What the election needs to know.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity, unique among the replicas (host name and process id).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
}

impl LeaseSettings {
    /// How often the holder renews and candidates look.
    pub fn retry_period(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(100))
    }

    /// How long a holder keeps leading without a successful renewal.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// What a replica sees of a Lease: who holds it, and how long its record has not changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub holder: Option<String>,
    /// The Lease's `leaseDurationSeconds` (the holder's promise).
    pub duration: Option<Duration>,
    /// How long this replica has seen the same `resourceVersion`.
    pub unchanged_for: Duration,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds it: follow.
    Follow { holder: String },
}

/// Decide from one observation of the Lease.
pub fn decide(observed: Option<&Observed>, me: &str, our_duration: Duration) -> Step {
    let Some(o) = observed else {
        return Step::Create;
    };
    match o.holder.as_deref().filter(|h| !h.is_empty()) {
        None => Step::TakeOver,
        Some(h) if h == me => Step::Renew,
        Some(h) => {
            if o.unchanged_for >= o.duration.unwrap_or(our_duration) {
                Step::TakeOver
            } else {
                Step::Follow {
                    holder: h.to_owned(),
                }
            }
        }
    }
}

/// Run the election forever, publishing whether this replica leads on `leading`.
pub async fn hold(
    api: Api<Lease>,
    settings: LeaseSettings,
    clock: Clock,
    leading: watch::Sender<bool>,
) {
    let mut seen: Option<(String, Instant)> = None;
    let mut last_renewal: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let result = match api.get_opt(&settings.name).await {
            Err(e) => Err(e),
            Ok(lease) => {
                let observed = lease.as_ref().map(|l| {
                    let rv = l.metadata.resource_version.clone().unwrap_or_default();
                    let since = match &seen {
                        Some((old, at)) if *old == rv => *at,
                        _ => {
                            seen = Some((rv, now));
                            now
                        }
                    };
                    let spec = l.spec.clone().unwrap_or_default();
                    Observed {
                        holder: spec.holder_identity,
                        duration: spec
                            .lease_duration_seconds
                            .map(|s| Duration::from_secs(s.max(1) as u64)),
                        unchanged_for: now - since,
                    }
                });
                let step = decide(observed.as_ref(), &settings.identity, settings.duration);
                write(&api, &settings, lease, &step, &clock).await
            }
        };
        let leads = match result {
            Ok(true) => {
                last_renewal = Some(now);
                true
            }
            Ok(false) => {
                last_renewal = None;
                false
            }
            Err(e) => {
                tracing::warn!(lease = %settings.name, error = %e, "cannot read or write the Lease");
                // Keep leading through short outages, but stop before anyone may take over.
                last_renewal.is_some_and(|at| now - at < settings.renew_deadline())
            }
        };
        if *leading.borrow() != leads {
            tracing::info!(
                lease = %settings.name,
                identity = %settings.identity,
                leading = leads,
                "leadership changed"
            );
        }
        leading.send_replace(leads);
        tokio::time::sleep(settings.retry_period()).await;
    }
}

/// Carry out a step; Ok(true) when this replica now holds the Lease. A conflict (another
/// replica wrote first) is Ok(false).
async fn write(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    current: Option<Lease>,
    step: &Step,
    clock: &Clock,
) -> Result<bool, kube::Error> {
    let now = MicroTime((clock)());
    let duration = settings.duration.as_secs().clamp(1, i32::MAX as u64) as i32;
    let result = match (step, current) {
        (Step::Follow { .. }, _) => return Ok(false),
        (Step::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(settings.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (Step::Renew | Step::TakeOver, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if *step == Step::TakeOver {
                spec.holder_identity = Some(settings.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(duration);
            spec.renew_time = Some(now);
            // `replace` sends the resourceVersion we read: a precondition.
            api.replace(&settings.name, &PostParams::default(), &lease)
                .await
        }
        (Step::Renew | Step::TakeOver, None) => return Ok(false),
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Give the Lease up (on shutdown) so that another replica takes over at once; best effort.
pub async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    if let Err(e) = api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(lease = %settings.name, error = %e, "cannot release the Lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    fn seen(holder: Option<&str>, unchanged_for: u64) -> Observed {
        Observed {
            holder: holder.map(str::to_owned),
            duration: Some(SECS(15)),
            unchanged_for: SECS(unchanged_for),
        }
    }

    #[test]
    fn no_lease_is_created_ours_is_renewed() {
        assert_eq!(decide(None, "a", SECS(15)), Step::Create);
        assert_eq!(
            decide(Some(&seen(Some("a"), 100)), "a", SECS(15)),
            Step::Renew
        );
    }

    #[test]
    fn another_holder_is_followed_until_its_record_is_stale_for_its_duration() {
        assert_eq!(
            decide(Some(&seen(Some("b"), 14)), "a", SECS(15)),
            Step::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&seen(Some("b"), 15)), "a", SECS(15)),
            Step::TakeOver
        );
        // The holder's own duration counts, not ours.
        let mut long = seen(Some("b"), 20);
        long.duration = Some(SECS(60));
        assert!(matches!(
            decide(Some(&long), "a", SECS(15)),
            Step::Follow { .. }
        ));
        long.duration = None;
        assert_eq!(decide(Some(&long), "a", SECS(15)), Step::TakeOver);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        assert_eq!(decide(Some(&seen(None, 0)), "a", SECS(15)), Step::TakeOver);
        assert_eq!(
            decide(Some(&seen(Some(""), 0)), "a", SECS(15)),
            Step::TakeOver
        );
    }

    #[test]
    fn periods_follow_the_duration() {
        let s = LeaseSettings {
            name: "l".into(),
            namespace: "n".into(),
            identity: "a".into(),
            duration: SECS(15),
        };
        assert_eq!(s.retry_period(), SECS(3));
        assert_eq!(s.renew_deadline(), SECS(10));
    }
}

//! The controller: one pass per `LockstepSync` — fetch → read the commit → verify (trust from
//! the cluster, never from the repository) → rollback check → plan → apply → prune → health
//! → status, Events and metrics → requeue after the interval.
//!
//! **Fail closed.** Any failure before the apply (spec, trust, fetch, verification, rollback,
//! plan) applies and prunes nothing; the status keeps the last applied commit, generation and
//! inventory, and the conditions say why, naming the file, object, container or key. Errors
//! come in two kinds (fluxcd's split): *stalled* — a human must change the commit, the spec or
//! the trust; the pass is retried at the interval — and *transient* — Git or the API server
//! unreachable; the pass is retried with backoff.
//!
//! Where each part lives:
//! - `pass`: one pass as named stages, spec → source → verify → gate → plan → apply/prune,
//!   up to a [`PassOutcome`] (the vocabulary of `outcome`);
//! - `spec`, `source`, `images`: what a stage reads from the cluster, Git and registries;
//! - [`next_status`] (pure) and `events`: how an outcome is reported;
//! - `schedule`: when a sync's next pass is due; `driver`: [`reconcile`], [`error_policy`]
//!   and [`run`], the kube-runtime side.
//!
//! This file holds what every pass is given: the [`Context`].

mod driver;
mod events;
mod images;
mod outcome;
mod pass;
mod schedule;
mod source;
mod spec;
mod status;
mod sweep;

use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;
use kube::Client;

use super::apply::Cluster;
use super::metrics::Metrics;
use crate::resolve::DEFAULT_CONCURRENCY;
use crate::resolve::oci::OciSettings;

pub use driver::{ReconcileError, error_policy, reconcile, run, sync_id};
pub use outcome::{AppliedPass, FailedStep, PassOutcome, Refusal, plan_reason, verify_reason};
pub use status::{CONDITION_TYPES, next_status};

/// Annotate a `LockstepSync` with a new value here to have it reconciled now.
pub const REQUEST_ANNOTATION: &str = "lockstep.dev/reconcile-requested-at";

/// A source of the current time (the binary passes the system clock).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// What every pass needs, built once by the binary.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Where the bare Git cache repositories live (one per sync and URL).
    pub cache_dir: PathBuf,
    /// The current time: verification time and condition timestamps.
    pub clock: Clock,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// How `checkImages` reaches registries.
    pub registry: Registries,
    events: events::EventWriter,
    cluster: Cluster,
    schedule: schedule::Schedule,
}

/// How the reconciler reaches registries (`checkImages`): the controller's `--ca-file`,
/// `--insecure-registry`, `--timeout` and `--concurrency`. A client is built from these per
/// pass on purpose: a client keeps what it learned about each registry (scheme, token, or
/// the failure) for its run, which a controller running for weeks must not keep.
#[derive(Clone, Debug)]
pub struct Registries {
    pub settings: OciSettings,
    /// Requests at once.
    pub concurrency: usize,
}

impl Default for Registries {
    fn default() -> Self {
        Registries {
            settings: OciSettings::default(),
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl Context {
    /// A context reporting Events as `instance` of the `lockstep` controller.
    pub fn new(
        client: Client,
        cache_dir: PathBuf,
        clock: Clock,
        metrics: Arc<Metrics>,
        registry: Registries,
        instance: Option<String>,
    ) -> Self {
        Context {
            events: events::EventWriter::new(client.clone(), instance),
            cluster: Cluster::new(client.clone()),
            client,
            cache_dir,
            clock,
            metrics,
            registry,
            schedule: schedule::Schedule::default(),
        }
    }

    /// Forget when passes are due, so that every sync gets a pass at once (a replica that
    /// has just become the leader must not trust what it planned while it was not).
    pub fn forget_schedule(&self) {
        self.schedule.forget_all();
    }
}

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
//! [`next_status`] (how an outcome becomes the status) is pure; [`reconcile`] does the I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::apply::{ApplyError, Baseline, Change, Cluster, FIELD_MANAGER, PruneReport};
use super::crd::{
    AppliedRecord, Condition, InventoryEntry, LockstepSync, LockstepSyncStatus, RecordedSigner,
    Revision, TrustKind,
};
use super::health::HealthSummary;
use super::metrics::{Metrics, PassResult};
use super::plan::{LockIdentity, PlanError, PlanSettings, SyncId, VerifiedObjects};
use super::rollback::{self, RollbackFloor, applied_lock, check_rollback};
use crate::check::Finding;
use crate::error_chain::one_line;
use crate::exists::{self, Probe};
use crate::lockfile::Lockfile;
use crate::mirror::MirrorTarget;
use crate::model::{ImageRef, ObjectRef};
use crate::resolve::oci::{OciRegistry, OciSettings};
use crate::resolve::{DEFAULT_CONCURRENCY, NoProgress, Resolved, resolve_all};
use crate::signing::{self, AllowedSigners};
use crate::source::git::{self, FetchRef, GitCredentials, HttpCredentials, SshCredentials};
use crate::verify::{TrustPolicy, VerifyError, verify_dir};

/// The condition types, in the order they are written.
pub const CONDITION_TYPES: [&str; 4] = ["Ready", "Verified", "Applied", "Healthy"];
/// Annotate a `LockstepSync` with a new value here to have it reconciled now.
pub const REQUEST_ANNOTATION: &str = "lockstep.dev/reconcile-requested-at";
/// How soon a rollout still in progress is looked at again.
const PROGRESS_REQUEUE: Duration = Duration::from_secs(5);
/// Backoff for transient failures: doubled per failure in a row, up to the interval.
const BACKOFF_START: Duration = Duration::from_secs(2);

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
    recorder: Recorder,
    cluster: Cluster,
    schedule: Mutex<HashMap<SyncId, Scheduled>>,
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

/// When a sync's next pass is due, and for which spec: status writes trigger the watch too,
/// and must not start a pass before its time.
#[derive(Clone, Debug)]
struct Scheduled {
    trigger: Trigger,
    due: Instant,
    failures: u32,
}

/// What makes a pass due at once: a new spec, or a new request annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Trigger {
    generation: Option<i64>,
    requested: Option<String>,
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
        let reporter = Reporter {
            controller: "lockstep".into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            cluster: Cluster::new(client.clone()),
            client,
            cache_dir,
            clock,
            metrics,
            registry,
            schedule: Mutex::new(HashMap::new()),
        }
    }

    /// Forget when passes are due, so that every sync gets a pass at once (a replica that
    /// has just become the leader must not trust what it planned while it was not).
    pub fn forget_schedule(&self) {
        self.schedule().clear();
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, HashMap<SyncId, Scheduled>> {
        self.schedule
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A pass that must be retried soon (the API server or Git was unreachable). Stalled
/// failures are not errors: they are written to the status and retried at the interval.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ReconcileError {
    pub reason: &'static str,
    pub message: String,
}

/// Where a pass stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailedStep {
    /// The spec is invalid (a ref naming two revisions, say).
    Spec,
    /// The trusted signers could not be read.
    Trust,
    /// Fetching the commit failed.
    Fetch,
    /// The commit was fetched but its files could not be read.
    Read,
    /// Signatures, lockfile, binding or images failed verification.
    Verify,
    /// The lockfile is older than the applied one.
    Rollback,
    /// The verified manifests cannot be planned (an unknown kind, a duplicate).
    Plan,
    /// The API server refused or failed an apply or a prune.
    Apply,
}

/// A pass that applied and pruned nothing new (or, at [`FailedStep::Apply`], stopped midway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub step: FailedStep,
    /// The condition reason (CamelCase).
    pub reason: &'static str,
    /// What failed, naming the file, object, container or key.
    pub message: String,
    /// The commit fetched, when fetching got that far.
    pub commit: Option<String>,
    /// Retry soon (true) or at the interval (false).
    pub transient: bool,
    /// At the apply step: the verified lockfile and what the plan would have applied (kept
    /// in the inventory, since some of it may now be in the cluster).
    pub verified: Option<(LockIdentity, Vec<String>)>,
    pub touched: Vec<ObjectRef>,
}

/// A pass that applied a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedPass {
    pub commit: String,
    pub lock: LockIdentity,
    pub signers: Vec<String>,
    /// The keys that approved the lockfile, with the principals that admitted each.
    pub approvals: Vec<RecordedSigner>,
    /// The threshold of approvals it met.
    pub threshold: u32,
    /// Applied lockfiles that no longer hold rollback protection: the keys that approved
    /// them were removed from the trust file.
    pub released: Vec<LockIdentity>,
    pub inventory: Vec<ObjectRef>,
    pub created: usize,
    pub updated: usize,
    pub drifted: Vec<ObjectRef>,
    pub unchanged: usize,
    pub pruned: PruneReport,
    pub health: HealthSummary,
}

/// How a pass ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassOutcome {
    Suspended,
    Refused(Refusal),
    Applied(Box<AppliedPass>),
}

/// The status after a pass: on a refusal the applied commit, generation, signers and
/// inventory stay as they were; conditions change only when their status, reason or message
/// does (`lastTransitionTime` moves only when the status does).
pub fn next_status(
    previous: &LockstepSyncStatus,
    generation: Option<i64>,
    outcome: &PassOutcome,
    now: Timestamp,
) -> LockstepSyncStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let mut conditions = previous.conditions.clone();
    let mut set = |type_: &str, value: &str, reason: &str, message: String| {
        set_condition(
            &mut conditions,
            Condition {
                type_: type_.to_owned(),
                status: value.to_owned(),
                reason: reason.to_owned(),
                message,
                last_transition_time: now.to_string(),
                observed_generation: generation,
            },
        );
    };
    match outcome {
        PassOutcome::Suspended => {
            set(
                "Ready",
                "Unknown",
                "Suspended",
                "spec.suspend is true: nothing is fetched or applied".into(),
            );
        }
        PassOutcome::Refused(refusal) => {
            if let Some(commit) = &refusal.commit {
                status.observed_commit = Some(commit.clone());
            }
            status.last_error = Some(refusal.message.clone());
            set("Ready", "False", refusal.reason, refusal.message.clone());
            match (&refusal.step, &refusal.verified) {
                (FailedStep::Plan | FailedStep::Apply, Some((lock, signers))) => {
                    set(
                        "Verified",
                        "True",
                        "Verified",
                        verified_message(refusal.commit.as_deref(), lock, signers),
                    );
                    set("Applied", "False", refusal.reason, refusal.message.clone());
                }
                _ => set("Verified", "False", refusal.reason, refusal.message.clone()),
            }
            if refusal.step == FailedStep::Apply {
                let mut inventory: BTreeSet<InventoryEntry> =
                    status.inventory.iter().cloned().collect();
                inventory.extend(refusal.touched.iter().map(InventoryEntry::from));
                status.inventory = inventory.into_iter().collect();
            }
        }
        PassOutcome::Applied(pass) => {
            status.observed_commit = Some(pass.commit.clone());
            status.applied_commit = Some(pass.commit.clone());
            status.applied_generation = Some(pass.lock.generation);
            status.applied_lockfile_sha256 = Some(pass.lock.sha256.to_string());
            status.signers = pass.signers.clone();
            status.applied_history = rollback::next_history(
                &previous.applied_history,
                &pass.released,
                AppliedRecord {
                    generation: pass.lock.generation,
                    lockfile_sha256: pass.lock.sha256.to_string(),
                    commit: pass.commit.clone(),
                    signers: pass.approvals.clone(),
                    threshold: pass.threshold,
                },
            );
            status.inventory = pass.inventory.iter().map(InventoryEntry::from).collect();
            status.drift_count += pass.drifted.len() as u64;
            status.last_error = None;
            let mut verified = verified_message(Some(&pass.commit), &pass.lock, &pass.signers);
            if !pass.released.is_empty() {
                verified.push_str(&format!(
                    "; {} no longer held rollback protection (the keys that approved {} were removed from the trust file)",
                    generations(&pass.released),
                    if pass.released.len() == 1 { "it" } else { "them" }
                ));
            }
            set("Verified", "True", "Verified", verified);
            set("Applied", "True", "Applied", applied_message(pass));
            if !pass.health.failed.is_empty() {
                set("Healthy", "False", "Failed", pass.health.message());
                set("Ready", "False", "Unhealthy", pass.health.message());
            } else if !pass.health.in_progress.is_empty() {
                set("Healthy", "False", "Progressing", pass.health.message());
                set("Ready", "False", "Progressing", pass.health.message());
            } else {
                set("Healthy", "True", "Current", pass.health.message());
                set(
                    "Ready",
                    "True",
                    "Applied",
                    format!(
                        "commit {} (lockfile generation {}) is applied and healthy",
                        short(&pass.commit),
                        pass.lock.generation
                    ),
                );
            }
        }
    }
    conditions.sort_by_key(|c| {
        CONDITION_TYPES
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(CONDITION_TYPES.len())
    });
    status.conditions = conditions;
    status
}

fn verified_message(commit: Option<&str>, lock: &LockIdentity, signers: &[String]) -> String {
    let at = commit
        .map(|c| format!("commit {}: ", short(c)))
        .unwrap_or_default();
    format!(
        "{at}lockfile generation {} ({}) signed by {}",
        lock.generation,
        lock.sha256,
        signers.join(", ")
    )
}

fn generations(locks: &[LockIdentity]) -> String {
    let list: Vec<String> = locks.iter().map(|l| l.generation.to_string()).collect();
    format!(
        "applied generation{} {}",
        if list.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

fn applied_message(pass: &AppliedPass) -> String {
    let mut message = format!(
        "commit {}: {} objects ({} created, {} updated, {} drifted and put back, {} unchanged)",
        short(&pass.commit),
        pass.inventory.len(),
        pass.created,
        pass.updated,
        pass.drifted.len(),
        pass.unchanged
    );
    if !pass.pruned.deleted.is_empty() {
        message.push_str(&format!("; pruned {}", list(&pass.pruned.deleted)));
    }
    if !pass.pruned.not_ours.is_empty() {
        message.push_str(&format!(
            "; not pruned (not applied by this LockstepSync): {}",
            list(&pass.pruned.not_ours)
        ));
    }
    message
}

fn list(objects: &[ObjectRef]) -> String {
    const SHOWN: usize = 10;
    let mut names: Vec<String> = objects
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect();
    if objects.len() > SHOWN {
        names.push(format!("and {} more", objects.len() - SHOWN));
    }
    names.join(", ")
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Replace the condition of the same type, keeping its transition time when its status is
/// unchanged.
fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
    }
}

/// The condition reason for a verification failure: which check failed.
pub fn verify_reason(error: &VerifyError) -> &'static str {
    match error {
        VerifyError::NoLockfile => "LockfileMissing",
        VerifyError::Signatures(_) => "SignaturesRejected",
        VerifyError::Lockfile(_) => "LockfileInvalid",
        VerifyError::Expired { .. } => "LockfileExpired",
        VerifyError::WrongEnvironment { .. } => "EnvironmentMismatch",
        VerifyError::Scan(_) => "ManifestsInvalid",
        VerifyError::UnscannedImages(_) => "UnscannedImages",
        VerifyError::Findings(findings) => {
            if findings
                .iter()
                .any(|f| matches!(f, Finding::Unpinned { .. }))
            {
                "UnpinnedImage"
            } else if findings
                .iter()
                .any(|f| matches!(f, Finding::BindingMismatch { .. }))
            {
                "BindingMismatch"
            } else {
                "LockfileMismatch"
            }
        }
    }
}

/// The step and condition reason for a plan failure.
pub fn plan_reason(error: &PlanError) -> (FailedStep, &'static str) {
    match error {
        PlanError::Unpinned { .. } => (FailedStep::Verify, "UnpinnedImage"),
        PlanError::NotInLock { .. } => (FailedStep::Verify, "ImageNotInLock"),
        PlanError::Environment { .. } => (FailedStep::Verify, "EnvironmentMismatch"),
        PlanError::Mirror(_) => (FailedStep::Verify, "NotMirrored"),
        PlanError::UnknownKind { .. } => (FailedStep::Plan, "UnknownKind"),
        PlanError::NoName { .. } | PlanError::BadObject { .. } | PlanError::Duplicate { .. } => {
            (FailedStep::Plan, "InvalidManifests")
        }
    }
}

/// The sync's identity.
pub fn sync_id(sync: &LockstepSync) -> SyncId {
    SyncId {
        namespace: sync.namespace().unwrap_or_default(),
        name: sync.name_any(),
    }
}

fn refuse(step: FailedStep, reason: &'static str, message: String) -> Refusal {
    Refusal {
        step,
        reason,
        message,
        commit: None,
        transient: false,
        verified: None,
        touched: Vec::new(),
    }
}

fn kube_refusal(step: FailedStep, what: String, error: &kube::Error) -> Refusal {
    let transient = match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        _ => true,
    };
    let mut refusal = refuse(
        step,
        "ClusterUnavailable",
        format!("{what}: {}", one_line(error)),
    );
    refusal.transient = transient;
    refusal
}

/// Read the allowed_signers text named by the spec, from this namespace.
async fn read_trust(client: &Client, sync: &LockstepSync) -> Result<AllowedSigners, Refusal> {
    let namespace = sync.namespace().unwrap_or_default();
    let trust = &sync.spec.trust;
    let source = format!(
        "{:?} {}/{} key {:?}",
        trust.kind, namespace, trust.name, trust.key
    );
    let text: Option<Vec<u8>> = match trust.kind {
        TrustKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
            let found = api.get_opt(&trust.name).await.map_err(|e| {
                kube_refusal(FailedStep::Trust, format!("cannot read {source}"), &e)
            })?;
            let Some(map) = found else {
                return Err(refuse(
                    FailedStep::Trust,
                    "TrustNotFound",
                    format!("{source}: the ConfigMap does not exist"),
                ));
            };
            map.data
                .as_ref()
                .and_then(|d| d.get(&trust.key))
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| {
                    map.binary_data
                        .as_ref()
                        .and_then(|d| d.get(&trust.key))
                        .map(|b| b.0.clone())
                })
        }
        TrustKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
            let found = api.get_opt(&trust.name).await.map_err(|e| {
                kube_refusal(FailedStep::Trust, format!("cannot read {source}"), &e)
            })?;
            let Some(secret) = found else {
                return Err(refuse(
                    FailedStep::Trust,
                    "TrustNotFound",
                    format!("{source}: the Secret does not exist"),
                ));
            };
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(&trust.key))
                .map(|b| b.0.clone())
        }
    };
    let Some(text) = text else {
        return Err(refuse(
            FailedStep::Trust,
            "TrustNotFound",
            format!("{source}: no such key"),
        ));
    };
    let text = String::from_utf8(text).map_err(|_| {
        refuse(
            FailedStep::Trust,
            "TrustInvalid",
            format!("{source}: not UTF-8"),
        )
    })?;
    AllowedSigners::parse(&text, &source)
        .map_err(|e| refuse(FailedStep::Trust, "TrustInvalid", one_line(&e)))
}

/// Read the Git credentials Secret: for an SSH URL `identity` (a deploy key) and
/// `known_hosts`; for HTTPS `token`, or `username` and `password`.
async fn read_credentials(
    client: &Client,
    sync: &LockstepSync,
) -> Result<Option<GitCredentials>, Refusal> {
    let Some(secret_ref) = &sync.spec.git_credentials else {
        return Ok(None);
    };
    let namespace = sync.namespace().unwrap_or_default();
    let what = format!("Secret {namespace}/{}", secret_ref.name);
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = api
        .get_opt(&secret_ref.name)
        .await
        .map_err(|e| kube_refusal(FailedStep::Fetch, format!("cannot read {what}"), &e))?
        .ok_or_else(|| {
            refuse(
                FailedStep::Fetch,
                "CredentialsNotFound",
                format!("{what} (spec.gitCredentials) does not exist"),
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).trim_end().to_owned())
    };
    if git::ssh::is_ssh_url(&sync.spec.url) {
        return match (text("identity"), text("known_hosts")) {
            (Some(identity), Some(known_hosts)) => Ok(Some(GitCredentials::Ssh(SshCredentials {
                identity: identity.into(),
                known_hosts,
            }))),
            (identity, _) => Err(refuse(
                FailedStep::Fetch,
                "CredentialsInvalid",
                format!(
                    "{what} has no `{}`: an SSH URL needs `identity` (a deploy key) and `known_hosts` (the server's host keys)",
                    if identity.is_none() {
                        "identity"
                    } else {
                        "known_hosts"
                    }
                ),
            )),
        };
    }
    let credentials = match (text("username"), text("password"), text("token")) {
        (Some(username), Some(password), _) => HttpCredentials {
            username,
            password: password.into(),
        },
        (username, None, Some(token)) => HttpCredentials {
            // Forges take any user name with a token as the password.
            username: username.unwrap_or_else(|| "git".to_owned()),
            password: token.into(),
        },
        _ => {
            return Err(refuse(
                FailedStep::Fetch,
                "CredentialsInvalid",
                format!("{what} has neither `token` nor `username` and `password`"),
            ));
        }
    };
    Ok(Some(GitCredentials::Http(credentials)))
}

/// The cache repository of a sync and URL: separate per URL, so that a commit fetched from
/// one repository is never taken as present in another.
fn cache_path(ctx: &Context, id: &SyncId, url: &str) -> PathBuf {
    let url_hash = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    ctx.cache_dir
        .join(format!("{}_{}", id.namespace, id.name))
        .join(url_hash)
}

/// What `spec.checkImages` asks about: every pinned digest where the cluster will pull it
/// (the image's own repository, or its copy in `mirror`), and what the lockfile already says
/// about each (so an index costs one request).
fn pull_locations(
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
async fn check_images_exist(
    registries: &Registries,
    known: &BTreeMap<ImageRef, Resolved>,
    probes: &[Probe],
) -> Result<(), Refusal> {
    let registry = OciRegistry::new(registries.settings.clone())
        .map_err(|e| refuse(FailedStep::Verify, "RegistryUnavailable", one_line(&e)))?;
    let asks = probes.iter().map(|p| p.ask.clone()).collect();
    let failures =
        match resolve_all(&registry, asks, known, registries.concurrency, &NoProgress).await {
            Ok(_) => Vec::new(),
            Err(e) => e.failures,
        };
    let report = exists::judge(probes, &failures);
    if !report.missing.is_empty() {
        let missing: Vec<String> = report
            .missing
            .iter()
            .map(|m| {
                format!(
                    "{} at {}",
                    exists::describe(&m.reference, &m.digest, m.platform.as_deref(), None),
                    m.location
                )
            })
            .collect();
        return Err(refuse(
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
        let mut refusal = refuse(
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

/// One pass, up to the outcome; writes to the cluster only through [`Cluster`].
async fn pass(sync: &LockstepSync, ctx: &Context) -> PassOutcome {
    if sync.spec.suspend {
        return PassOutcome::Suspended;
    }
    match pass_inner(sync, ctx).await {
        Ok(applied) => PassOutcome::Applied(Box::new(applied)),
        Err(refusal) => PassOutcome::Refused(refusal),
    }
}

async fn pass_inner(sync: &LockstepSync, ctx: &Context) -> Result<AppliedPass, Refusal> {
    let id = sync_id(sync);
    let spec = &sync.spec;
    let status = sync.status.clone().unwrap_or_default();
    let revision = spec
        .git_ref
        .revision()
        .map_err(|e| refuse(FailedStep::Spec, "InvalidSpec", e.to_string()))?;
    if spec.threshold == 0 {
        return Err(refuse(
            FailedStep::Spec,
            "InvalidSpec",
            "spec.threshold must be at least 1".into(),
        ));
    }
    let mirror = spec
        .mirror
        .as_deref()
        .map(MirrorTarget::parse)
        .transpose()
        .map_err(|e| refuse(FailedStep::Spec, "InvalidSpec", format!("spec.mirror: {e}")))?;
    let trust = read_trust(&ctx.client, sync).await?;
    let credentials = read_credentials(&ctx.client, sync).await?;

    // Git is blocking: fetch and read on the blocking pool.
    let cache = cache_path(ctx, &id, &spec.url);
    let url = spec.url.clone();
    let path = spec.path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let wanted = match &revision {
            Revision::Branch(b) => FetchRef::Branch(b),
            Revision::Tag(t) => FetchRef::Tag(t),
            Revision::Commit(c) => FetchRef::Commit(c),
        };
        let info = git::fetch(&cache, &url, wanted, credentials.as_ref())
            .map_err(|e| (FailedStep::Fetch, None, e))?;
        git::read_commit(&cache, &info.id, &path).map_err(|e| (FailedStep::Read, Some(info.id), e))
    })
    .await;
    let (files, commit) = match read {
        Ok(Ok((files, info))) => (files, info.id),
        Ok(Err((step, commit, error))) => {
            let mut refusal = match step {
                FailedStep::Fetch => refuse(step, "FetchFailed", one_line(&error)),
                _ => refuse(step, "CommitUnreadable", one_line(&error)),
            };
            // An unreachable remote may come back; a missing branch or path needs a human.
            refusal.transient = error.is_transient();
            refusal.commit = commit;
            return Err(refusal);
        }
        Err(join) => {
            let mut refusal = refuse(FailedStep::Fetch, "FetchFailed", join.to_string());
            refusal.transient = true;
            return Err(refusal);
        }
    };
    let at_commit = |mut refusal: Refusal| {
        refusal.commit = Some(commit.clone());
        refusal
    };

    let (objects, probes) = {
        let policy = TrustPolicy {
            signers: &trust,
            at: (ctx.clock)(),
            threshold: spec.threshold as usize,
            environment: spec.environment.as_deref(),
            strict: spec.strict,
        };
        let verified = verify_dir(&files, &policy).map_err(|e| {
            at_commit(refuse(
                FailedStep::Verify,
                verify_reason(&e),
                format!("commit {}: {}", short(&commit), one_line(&e)),
            ))
        })?;
        for notice in &verified.scan().notices {
            tracing::warn!(commit = %short(&commit), "{notice}");
        }
        let parsed = match &mirror {
            Some(mirror) => VerifiedObjects::parse_from_mirror(&verified, mirror),
            None => VerifiedObjects::parse(&verified),
        };
        let objects = parsed.map_err(|e| {
            let (step, reason) = plan_reason(&e);
            at_commit(refuse(
                step,
                reason,
                format!("commit {}: {e}", short(&commit)),
            ))
        })?;
        let probes = spec
            .check_images
            .then(|| pull_locations(verified.lockfile(), mirror.as_ref()));
        (objects, probes)
    };
    let applied_before = applied_lock(&status);
    let RollbackFloor { floor, released } =
        rollback::floor(&status, spec.threshold, |signers, needed| {
            signing::approvals_stand(
                signers
                    .iter()
                    .map(|s| (s.key.as_str(), s.principals.as_slice())),
                &trust,
                needed,
            )
        });
    check_rollback(floor.as_ref(), objects.lock()).map_err(|e| {
        at_commit(refuse(
            FailedStep::Rollback,
            "RollbackRefused",
            format!("commit {}: {e}", short(&commit)),
        ))
    })?;
    // The registry gates a rollout, not drift correction: the applied lockfile was checked
    // when it rolled out, and a flaky registry must not stop putting it back.
    if let Some((known, probes)) = probes
        && applied_before.as_ref() != Some(objects.lock())
    {
        check_images_exist(&ctx.registry, &known, &probes)
            .await
            .map_err(|mut refusal| {
                refusal.message = format!("commit {}: {}", short(&commit), refusal.message);
                at_commit(refusal)
            })?;
    }

    let kinds = objects.kinds_to_discover();
    let discovered = ctx.cluster.discover(&kinds).await.map_err(|e| {
        let mut refusal = at_commit(refuse(
            FailedStep::Apply,
            "ClusterUnavailable",
            one_line(&e),
        ));
        refusal.transient = e.is_transient();
        refusal
    })?;
    let lock = objects.lock().clone();
    let settings = PlanSettings {
        sync: id.clone(),
        default_namespace: spec
            .target_namespace
            .clone()
            .unwrap_or_else(|| id.namespace.clone()),
        environment: spec.environment.clone(),
    };
    let verified_signers = objects.signers().to_vec();
    let approvals = objects.approvals().to_vec();
    let plan = objects.plan(&settings, &discovered.scopes()).map_err(|e| {
        let (step, reason) = plan_reason(&e);
        let mut refusal = at_commit(refuse(
            step,
            reason,
            format!("commit {}: {e}", short(&commit)),
        ));
        if step == FailedStep::Plan {
            // Verified, but not applicable (a kind the cluster does not serve, say).
            refusal.verified = Some((lock.clone(), verified_signers.clone()));
        }
        refusal
    })?;
    let signers = plan.signers().to_vec();

    let previous: Vec<ObjectRef> = status.inventory.iter().map(ObjectRef::from).collect();
    let applied_condition_current = status.conditions.iter().any(|c| {
        c.type_ == "Applied"
            && c.status == "True"
            && c.observed_generation == sync.metadata.generation
    });
    let baseline = Baseline {
        inventory: previous.iter().cloned().collect(),
        same_desired_state: applied_condition_current && applied_before.as_ref() == Some(&lock),
    };
    let apply_failed = |e: ApplyError| {
        // A refusal that will not change by itself (422 Invalid, 403) is named apart, so
        // that `lockstep wait` can fail at once instead of waiting for its timeout.
        let transient = e.is_transient();
        let reason = if transient {
            "ApplyFailed"
        } else {
            "ApplyRejected"
        };
        let mut refusal = at_commit(refuse(FailedStep::Apply, reason, one_line(&e)));
        refusal.transient = transient;
        refusal.verified = Some((lock.clone(), signers.clone()));
        refusal.touched = plan.inventory();
        refusal
    };
    let report = ctx
        .cluster
        .apply(&plan, &discovered, &baseline)
        .await
        .map_err(apply_failed)?;
    let pruned = if spec.prune {
        ctx.cluster
            .prune(&id, &plan.prune_set(&previous))
            .await
            .map_err(apply_failed)?
    } else {
        PruneReport::default()
    };
    let health = HealthSummary::of(
        report
            .objects
            .iter()
            .map(|o| (o.key.clone(), o.health.clone())),
    );
    Ok(AppliedPass {
        commit,
        inventory: plan.inventory(),
        signers,
        approvals,
        threshold: spec.threshold,
        released,
        lock,
        created: report.with(Change::Created).count(),
        updated: report.with(Change::Updated).count(),
        drifted: report.with(Change::Drifted).cloned().collect(),
        unchanged: report.with(Change::Unchanged).count(),
        pruned,
        health,
    })
}

/// Reconcile one `LockstepSync`: a pass when one is due, then its status, Events and
/// metrics.
#[tracing::instrument(skip_all, fields(sync = %sync_id(&sync)))]
pub async fn reconcile(
    sync: Arc<LockstepSync>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let id = sync_id(&sync);
    let interval: Duration = sync.spec.interval.into();
    let interval = interval.max(Duration::from_secs(1));
    let trigger = Trigger {
        generation: sync.metadata.generation,
        requested: sync.annotations().get(REQUEST_ANNOTATION).cloned(),
    };
    if let Some(scheduled) = ctx.schedule().get(&id)
        && scheduled.trigger == trigger
    {
        // A watch event that is not a new spec or request (our own status write, say).
        let now = Instant::now();
        if now < scheduled.due {
            return Ok(Action::requeue(scheduled.due - now));
        }
    }
    let started = Instant::now();
    let outcome = pass(&sync, &ctx).await;
    let now = (ctx.clock)();
    let previous = sync.status.clone().unwrap_or_default();
    let status = next_status(&previous, sync.metadata.generation, &outcome, now);
    let status_written = write_status(&ctx.client, &sync, &status).await;
    publish_events(&ctx, &sync, &outcome).await;

    let (result, requeue) = match &outcome {
        PassOutcome::Suspended => (PassResult::Suspended, interval),
        PassOutcome::Applied(pass) => {
            ctx.metrics.drifted(&id, pass.drifted.len() as u64);
            ctx.metrics.applied_generation(&id, pass.lock.generation);
            let requeue = if pass.health.healthy() {
                interval
            } else {
                interval.min(PROGRESS_REQUEUE)
            };
            (PassResult::Applied, requeue)
        }
        PassOutcome::Refused(refusal) => {
            if matches!(refusal.step, FailedStep::Verify | FailedStep::Rollback) {
                ctx.metrics.verification_failure(refusal.reason);
            }
            if refusal.transient {
                (PassResult::Failed, interval)
            } else {
                (PassResult::Refused, interval)
            }
        }
    };
    ctx.metrics.pass(result, started.elapsed());
    let transient_error = match (&outcome, status_written) {
        (PassOutcome::Refused(r), _) if r.transient => Some(ReconcileError {
            reason: r.reason,
            message: r.message.clone(),
        }),
        (_, Err(e)) => Some(ReconcileError {
            reason: "StatusNotWritten",
            message: one_line(&e),
        }),
        _ => None,
    };
    if let Some(error) = transient_error {
        tracing::warn!(reason = error.reason, message = %error.message, "pass failed; retrying with backoff");
        // error_policy schedules the retry (and counts the failures in a row).
        let mut schedule = ctx.schedule();
        let failures = schedule.get(&id).map_or(0, |s| s.failures);
        schedule.insert(
            id,
            Scheduled {
                trigger,
                due: Instant::now(),
                failures,
            },
        );
        return Err(error);
    }
    tracing::info!(result = ?result, requeue_secs = requeue.as_secs(), "pass done");
    ctx.schedule().insert(
        id,
        Scheduled {
            trigger,
            due: Instant::now() + requeue,
            failures: 0,
        },
    );
    Ok(Action::requeue(requeue))
}

/// Retry a transient failure with exponential backoff, capped at the interval.
pub fn error_policy(sync: Arc<LockstepSync>, _error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let id = sync_id(&sync);
    let interval: Duration = sync.spec.interval.into();
    let mut schedule = ctx.schedule();
    let entry = schedule.entry(id).or_insert_with(|| Scheduled {
        trigger: Trigger {
            generation: sync.metadata.generation,
            requested: None,
        },
        due: Instant::now(),
        failures: 0,
    });
    let backoff = BACKOFF_START
        .saturating_mul(1u32 << entry.failures.min(16))
        .min(interval.max(BACKOFF_START));
    entry.failures = entry.failures.saturating_add(1);
    entry.due = Instant::now() + backoff;
    Action::requeue(backoff)
}

async fn write_status(
    client: &Client,
    sync: &LockstepSync,
    status: &LockstepSyncStatus,
) -> Result<(), kube::Error> {
    if sync.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<LockstepSync> =
        Api::namespaced(client.clone(), &sync.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "lockstep.dev/v1alpha1",
        "kind": "LockstepSync",
        "status": status,
    });
    api.patch_status(
        &sync.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish_events(ctx: &Context, sync: &LockstepSync, outcome: &PassOutcome) {
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
    let reference = sync.object_ref(&());
    for (type_, reason, action, note) in events {
        let event = Event {
            type_,
            reason: reason.into(),
            // The Events API caps notes at 1 kB.
            note: Some(truncate(&note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %one_line(&e), "cannot publish an Event");
        }
    }
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

/// Run the controller over the `LockstepSync`s of `namespace` (all namespaces when `None`)
/// until a termination signal.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let api: Api<LockstepSync> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %one_line(&e), "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::health::Health;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn lock(generation: u64) -> LockIdentity {
        LockIdentity {
            generation,
            sha256: crate::model::Digest::of(format!("lock {generation}").as_bytes()),
        }
    }

    fn object(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn applied(commit: &str, generation: u64, health: HealthSummary) -> PassOutcome {
        PassOutcome::Applied(Box::new(AppliedPass {
            commit: commit.into(),
            lock: lock(generation),
            signers: vec!["ci@example.com".into()],
            approvals: vec![RecordedSigner {
                key: "SHA256:ci".into(),
                principals: vec!["ci@example.com".into()],
            }],
            threshold: 1,
            released: vec![],
            inventory: vec![object("api"), object("web")],
            created: 2,
            updated: 0,
            drifted: vec![],
            unchanged: 0,
            pruned: PruneReport::default(),
            health,
        }))
    }

    fn condition<'s>(status: &'s LockstepSyncStatus, type_: &str) -> &'s Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn healthy() -> HealthSummary {
        HealthSummary::of([
            (object("api"), Health::Current),
            (object("web"), Health::Current),
        ])
    }

    #[test]
    fn an_applied_healthy_commit_is_ready() {
        let status = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1c1c1c1c1c1c1c1", 1, healthy()),
            at(100),
        );
        assert_eq!(status.applied_commit.as_deref(), Some("c1c1c1c1c1c1c1c1"));
        assert_eq!(status.applied_generation, Some(1));
        assert_eq!(status.inventory.len(), 2);
        assert_eq!(status.signers, ["ci@example.com"]);
        assert_eq!(status.applied_history.len(), 1);
        assert_eq!(status.applied_history[0].signers[0].key, "SHA256:ci");
        assert_eq!(status.applied_history[0].commit, "c1c1c1c1c1c1c1c1");
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, CONDITION_TYPES);
        for c in &status.conditions {
            assert_eq!(c.status, "True", "{c:?}");
            assert_eq!(c.observed_generation, Some(1));
        }
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn an_apply_past_released_generations_says_so_and_forgets_them() {
        let first = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1_000_000, healthy()),
            at(100),
        );
        let mut pass = applied("c2", 2, healthy());
        if let PassOutcome::Applied(pass) = &mut pass {
            pass.released = vec![lock(1_000_000)];
        }
        let status = next_status(&first, Some(1), &pass, at(200));
        assert_eq!(status.applied_generation, Some(2));
        let generations: Vec<u64> = status
            .applied_history
            .iter()
            .map(|r| r.generation)
            .collect();
        assert_eq!(generations, [2]);
        let message = &condition(&status, "Verified").message;
        assert!(
            message.contains("applied generation 1000000 no longer held rollback protection"),
            "{message}"
        );
    }

    #[test]
    fn a_refusal_keeps_the_applied_state_and_says_why() {
        let good = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let refusal = PassOutcome::Refused(Refusal {
            step: FailedStep::Verify,
            reason: "UnpinnedImage",
            message: "commit c2: app.yaml:9:18: Deployment/shop/api app: nginx:1 is not pinned"
                .into(),
            commit: Some("c2".into()),
            transient: false,
            verified: None,
            touched: vec![],
        });
        let status = next_status(&good, Some(1), &refusal, at(200));
        assert_eq!(status.observed_commit.as_deref(), Some("c2"));
        assert_eq!(status.applied_commit.as_deref(), Some("c1"));
        assert_eq!(status.applied_generation, Some(1));
        assert_eq!(status.inventory, good.inventory);
        let verified = condition(&status, "Verified");
        assert_eq!(verified.status, "False");
        assert_eq!(verified.reason, "UnpinnedImage");
        assert!(verified.message.contains("app.yaml:9:18"));
        assert_eq!(verified.last_transition_time, at(200).to_string());
        assert_eq!(condition(&status, "Ready").reason, "UnpinnedImage");
        // Applied and Healthy still describe what runs.
        assert_eq!(condition(&status, "Applied").status, "True");
        assert_eq!(condition(&status, "Healthy").status, "True");
        assert_eq!(
            condition(&status, "Applied").last_transition_time,
            at(100).to_string()
        );
        assert!(status.last_error.unwrap().contains("not pinned"));
    }

    #[test]
    fn transition_times_move_only_with_the_status() {
        let first = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let again = next_status(&first, Some(1), &applied("c1", 1, healthy()), at(400));
        assert_eq!(
            again, first,
            "a repeated pass changes nothing in the status"
        );
        let progressing = HealthSummary::of([(
            object("api"),
            Health::InProgress("1 of 2 replicas updated".into()),
        )]);
        let rolling = next_status(&first, Some(1), &applied("c2", 2, progressing), at(500));
        let ready = condition(&rolling, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Progressing")
        );
        assert_eq!(ready.last_transition_time, at(500).to_string());
        assert!(
            condition(&rolling, "Healthy")
                .message
                .contains("Deployment/shop/api in progress: 1 of 2 replicas updated")
        );
        assert_eq!(
            condition(&rolling, "Verified").last_transition_time,
            at(100).to_string()
        );
    }

    #[test]
    fn drift_is_counted_across_passes() {
        let mut outcome = applied("c1", 1, healthy());
        if let PassOutcome::Applied(pass) = &mut outcome {
            pass.drifted = vec![object("api")];
        }
        let once = next_status(&LockstepSyncStatus::default(), Some(1), &outcome, at(1));
        let twice = next_status(&once, Some(1), &outcome, at(2));
        assert_eq!(twice.drift_count, 2);
    }

    #[test]
    fn an_apply_failure_keeps_what_may_have_been_applied_in_the_inventory() {
        let good = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let failed = PassOutcome::Refused(Refusal {
            step: FailedStep::Apply,
            reason: "ApplyFailed",
            message: "cannot apply ConfigMap/shop/new (from new.yaml): invalid".into(),
            commit: Some("c2".into()),
            transient: false,
            verified: Some((lock(2), vec!["ci@example.com".into()])),
            touched: vec![object("api"), object("new")],
        });
        let status = next_status(&good, Some(1), &failed, at(200));
        let names: Vec<&str> = status.inventory.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["api", "new", "web"]);
        assert_eq!(condition(&status, "Verified").status, "True");
        assert_eq!(condition(&status, "Applied").status, "False");
        assert_eq!(condition(&status, "Applied").reason, "ApplyFailed");
        assert_eq!(status.applied_generation, Some(1));
    }

    #[test]
    fn a_verified_commit_that_cannot_be_planned_is_verified_but_not_applied() {
        let refusal = PassOutcome::Refused(Refusal {
            step: FailedStep::Plan,
            reason: "UnknownKind",
            message: "commit c1: w.yaml: Widget w: the cluster serves no example.com/v1 Widget"
                .into(),
            commit: Some("c1".into()),
            transient: false,
            verified: Some((lock(1), vec!["ci@example.com".into()])),
            touched: vec![],
        });
        let status = next_status(&LockstepSyncStatus::default(), Some(1), &refusal, at(1));
        assert_eq!(condition(&status, "Verified").status, "True");
        let applied = condition(&status, "Applied");
        assert_eq!(
            (applied.status.as_str(), applied.reason.as_str()),
            ("False", "UnknownKind")
        );
        assert!(applied.message.contains("w.yaml"));
        assert_eq!(status.applied_commit, None);
        assert!(status.inventory.is_empty());
    }

    #[test]
    fn suspended_touches_only_ready() {
        let good = next_status(
            &LockstepSyncStatus::default(),
            Some(1),
            &applied("c1", 1, healthy()),
            at(100),
        );
        let status = next_status(&good, Some(2), &PassOutcome::Suspended, at(200));
        assert_eq!(condition(&status, "Ready").reason, "Suspended");
        assert_eq!(condition(&status, "Applied").status, "True");
        assert_eq!(status.applied_commit, good.applied_commit);
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(600);
        let cut = truncate(&long, 1000);
        assert!(cut.len() <= 1000 && cut.ends_with("..."));
    }
}

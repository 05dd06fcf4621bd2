//! The reconciler against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok from `scripts/cluster`), real Git
//! repositories locked by the real `lockstep` binary against a real registry.
//!
//! One control plane serves the whole test binary (started on first use, stopped when the
//! binary exits); each test works in its own namespace. Tests drive passes by calling
//! [`reconcile`] directly (bumping the request annotation, as a user would), so each step is
//! deterministic; one test runs the controller loop itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::{Client, CustomResourceExt as _};
use serde_json::json;

use crate::cli::{ci_key, code, git, init_repo, keygen, run, stderr};
use crate::harness::{RegistryOptions, TestRegistry, TestSshd};
use lockstep::cluster::crd::{LockstepSync, LockstepSyncStatus};
use lockstep::cluster::metrics::Metrics;
use lockstep::cluster::plan::SYNC_ANNOTATION;
use lockstep::cluster::reconcile::{self, Context, REQUEST_ANNOTATION, Registries};
use lockstep::cluster::wait::{Verdict, WantedCommit, judge};
use lockstep::resolve::oci::OciSettings;
use lockstep::source::git::{FetchRef, GitError, fetch, read_commit};

mod promotion;
mod provenance;
mod prune;
mod render;
mod webhook;

// ------------------------------------------------------------------ the control plane

struct ControlPlane {
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

fn cluster_script() -> PathBuf {
    if let Some(script) = std::env::var_os("LOCKSTEP_CLUSTER_SCRIPT") {
        return PathBuf::from(script);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster")
}

/// The shared control plane, started on first use. `scripts/cluster` stops it when this
/// process exits (LOCKSTEP_CLUSTER_WATCH_PID).
fn control_plane() -> &'static ControlPlane {
    static PLANE: OnceLock<ControlPlane> = OnceLock::new();
    PLANE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lockstep-cluster-")
            .tempdir()
            .unwrap();
        let script = cluster_script();
        assert!(
            script.exists(),
            "{} is missing: the reconciler tests need the control plane script (or set LOCKSTEP_CLUSTER_SCRIPT)",
            script.display()
        );
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .env("LOCKSTEP_CLUSTER_WATCH_PID", std::process::id().to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/cluster start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ControlPlane {
            kubeconfig: dir.path().join("kubeconfig"),
            _dir: dir,
        }
    })
}

/// A client of the shared control plane (started on first use), as its admin.
pub(crate) async fn client() -> Client {
    lockstep::resolve::install_crypto_provider();
    let plane = tokio::task::block_in_place(control_plane);
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Install the LockstepSync CRD (idempotent) and wait until it is served.
async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "lockstepsyncs.lockstep.dev",
        &PatchParams::apply("lockstep-test").force(),
        &Patch::Apply(LockstepSync::crd()),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = crds.get("lockstepsyncs.lockstep.dev").await.unwrap();
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the LockstepSync CRD is not Established"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------ a locked repository

/// A Git repository whose `deploy/` is locked by the `lockstep` binary against a registry.
struct Repo {
    registry: TestRegistry,
    tmp: tempfile::TempDir,
    repo: PathBuf,
    dir: PathBuf,
    key: PathBuf,
    allowed_signers: String,
}

fn deployment(registry: &str, name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
        - name: app
          image: {registry}/{image}
"
    )
}

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

impl Repo {
    /// `deploy/` with a Deployment `api` (2 replicas, shop/api:1) and ConfigMaps `settings`
    /// and `extra`, locked and committed: generation 1.
    fn new() -> Repo {
        Repo::with_registry(RegistryOptions::default())
    }

    /// As [`Repo::new`], with images in a registry started with `opts`.
    fn with_registry(opts: RegistryOptions) -> Repo {
        let registry = TestRegistry::start(opts);
        registry.push_image("shop/api", "1", b"api v1");
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let dir = repo.join("deploy");
        std::fs::create_dir_all(&dir).unwrap();
        init_repo(&repo);
        let (key, trust_line) = ci_key(tmp.path());
        let r = Repo {
            allowed_signers: trust_line,
            registry,
            tmp,
            repo,
            dir,
            key,
        };
        r.write(
            "app.yaml",
            &deployment(&r.registry.host(), "api", "shop/api:1", 2),
        );
        r.write("config.yaml", &config_map("settings", "one"));
        r.write("extra.yaml", &config_map("extra", "x"));
        r.lock_commit();
        r
    }

    fn url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.join(rel)).unwrap();
    }

    /// Commit the work tree as it is (no lock): what a careless or hostile push does.
    fn commit_all(&self, message: &str) -> String {
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-qm", message, "--allow-empty"]);
        self.head()
    }

    /// Commit the manifests, then `lockstep lock --commit` them.
    fn lock_commit(&self) -> String {
        self.commit_all("manifests");
        let ca = self.tmp.path().join("registry-ca.pem");
        let mut args = vec![
            "lock",
            self.dir.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
            "--commit",
        ];
        if let Some(pem) = self.registry.ca_pem() {
            std::fs::write(&ca, pem).unwrap();
            args.extend(["--ca-file", ca.to_str().unwrap()]);
        }
        let out = run(&args, &[("SOURCE_DATE_EPOCH", "1700000000")]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(git(&self.repo, &["status", "--porcelain"]), "");
        self.head()
    }

    fn head(&self) -> String {
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// The pinned reference `lock` wrote for the api Deployment.
    fn pinned_api_image(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("app.yaml")).unwrap();
        let line = text.lines().find(|l| l.contains("image:")).unwrap();
        line.split_once("image:").unwrap().1.trim().to_owned()
    }
}

// ------------------------------------------------------------------ a sync under test

struct Sync {
    client: Client,
    ns: String,
    ctx: Arc<Context>,
    api: Api<LockstepSync>,
    requests: std::sync::atomic::AtomicU64,
}

impl Sync {
    /// A namespace named after the test, the trust ConfigMap, and a LockstepSync `app`
    /// following `repo`'s `main` branch, `deploy/`.
    async fn new(test: &str, repo: &Repo) -> Sync {
        Sync::on(client().await, test, repo).await
    }

    /// As [`Sync::new`], on the control plane `client` talks to.
    async fn on(client: Client, test: &str, repo: &Repo) -> Sync {
        install_crd(&client).await;
        let ns = format!("t-{test}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        maps.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "trust"},
                "data": {"allowed_signers": repo.allowed_signers},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        let api: Api<LockstepSync> = Api::namespaced(client.clone(), &ns);
        let sync: LockstepSync = serde_json::from_value(json!({
            "apiVersion": "lockstep.dev/v1alpha1",
            "kind": "LockstepSync",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {
                "url": repo.url(),
                "path": "deploy",
                "interval": "1h",
                "trust": {"kind": "ConfigMap", "name": "trust"},
            }
        }))
        .unwrap();
        api.create(&PostParams::default(), &sync).await.unwrap();
        let ctx = Arc::new(Context::new(
            client.clone(),
            repo.tmp.path().join("cache"),
            Arc::new(jiff::Timestamp::now),
            Arc::new(Metrics::default()),
            Default::default(),
            Some(format!("test-{test}")),
        ));
        Sync {
            client,
            ns,
            ctx,
            api,
            requests: Default::default(),
        }
    }

    /// Ask for a pass (the request annotation), run it, and return the resulting status.
    /// The same sync, reconciled by a controller reaching registries with `registries`.
    fn with_registries(mut self, registries: Registries) -> Sync {
        self.ctx = Arc::new(Context::new(
            self.client.clone(),
            self.ctx.cache_dir.clone(),
            self.ctx.clock.clone(),
            self.ctx.metrics.clone(),
            registries,
            Some("test-registries".into()),
        ));
        self
    }

    /// The same sync, reconciled by a controller that talks to the API server as `client`.
    fn reconciled_by(mut self, client: Client) -> Sync {
        self.ctx = Arc::new(Context::new(
            client,
            self.ctx.cache_dir.clone(),
            self.ctx.clock.clone(),
            self.ctx.metrics.clone(),
            Default::default(),
            Some("test-identity".into()),
        ));
        self
    }

    async fn pass(&self) -> LockstepSyncStatus {
        let n = self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.api
            .patch(
                "app",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {REQUEST_ANNOTATION: n.to_string()}}}),
                ),
            )
            .await
            .unwrap();
        let sync = self.api.get("app").await.unwrap();
        let _ = reconcile::reconcile(Arc::new(sync), self.ctx.clone()).await;
        self.status().await
    }

    /// Passes until Ready=True (the rollout is healthy), at most 90 s.
    async fn pass_until_ready(&self) -> LockstepSyncStatus {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let status = self.pass().await;
            if condition(&status, "Ready").0 == "True" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "not Ready after 90 s: {:#?}",
                status.conditions
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn status(&self) -> LockstepSyncStatus {
        self.api
            .get("app")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// Replace the trusted allowed_signers text (the ConfigMap `trust`).
    async fn set_trust(&self, allowed_signers: &str) {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .patch(
                "trust",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"allowed_signers": allowed_signers}})),
            )
            .await
            .unwrap();
    }

    async fn set_spec(&self, spec: serde_json::Value) {
        self.api
            .patch(
                "app",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    async fn deployment(&self, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn config_map(&self, name: &str) -> Option<ConfigMap> {
        Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns)
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn image_of(&self, name: &str) -> String {
        let d = self.deployment(name).await.expect("deployment exists");
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    async fn event_reasons(&self) -> Vec<String> {
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }
}

/// The message of a pass refused with `reason` (Ready=False); fails the test otherwise.
fn refused(status: &LockstepSyncStatus, reason: &str) -> String {
    let (ready, found, message) = condition(status, "Ready");
    assert_eq!(
        (ready.as_str(), found.as_str()),
        ("False", reason),
        "{message}"
    );
    message
}

/// (status, reason, message) of a condition.
fn condition(status: &LockstepSyncStatus, type_: &str) -> (String, String, String) {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| ("Missing".into(), String::new(), String::new()))
}

/// `Kind/name` of each inventory entry, sorted.
fn inventory_names(status: &LockstepSyncStatus) -> Vec<String> {
    let mut names: Vec<String> = status
        .inventory
        .iter()
        .map(|e| format!("{}/{}", e.kind, e.name))
        .collect();
    names.sort();
    names
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_applies_a_locked_commit_then_rolls_out_a_new_digest() {
    let repo = Repo::new();
    let sync = Sync::new("apply", &repo).await;
    let first = repo.head();

    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(first.as_str()));
    assert_eq!(status.applied_generation, Some(1));
    assert!(
        status
            .applied_lockfile_sha256
            .as_deref()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(status.signers, ["ci@example.com"]);
    assert_eq!(
        inventory_names(&status),
        ["ConfigMap/extra", "ConfigMap/settings", "Deployment/api"]
    );
    for type_ in ["Ready", "Verified", "Applied", "Healthy"] {
        assert_eq!(condition(&status, type_).0, "True", "{type_}: {status:#?}");
    }
    // The cluster runs exactly the pinned image, marked as this sync's, managed by lockstep.
    let pinned_v1 = repo.pinned_api_image();
    assert!(pinned_v1.contains("@sha256:"), "{pinned_v1}");
    assert_eq!(sync.image_of("api").await, pinned_v1);
    let live = sync.deployment("api").await.unwrap();
    assert_eq!(
        live.metadata.annotations.unwrap()[SYNC_ANNOTATION],
        format!("{}/app", sync.ns)
    );
    assert!(
        live.metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|m| m.manager.as_deref() == Some("lockstep")
                && m.operation.as_deref() == Some("Apply"))
    );
    assert!(sync.event_reasons().await.contains(&"Applied".to_owned()));

    // A pass with nothing new changes nothing: same resourceVersion, same status.
    let rv = sync
        .deployment("api")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let again = sync.pass().await;
    assert_eq!(
        sync.deployment("api")
            .await
            .unwrap()
            .metadata
            .resource_version,
        rv
    );
    assert_eq!(again.applied_commit, status.applied_commit);
    assert_eq!(again.drift_count, 0);
    assert!(
        condition(&again, "Applied")
            .2
            .contains("0 created, 0 updated, 0 drifted"),
        "{again:#?}"
    );

    // The tag moves in the registry; CI re-locks (generation 2): the new digest rolls out.
    repo.registry.push_image("shop/api", "1", b"api v2");
    let second = repo.lock_commit();
    let pinned_v2 = repo.pinned_api_image();
    assert_ne!(pinned_v1, pinned_v2);
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(second.as_str()));
    assert_eq!(status.applied_generation, Some(2));
    assert_eq!(sync.image_of("api").await, pinned_v2);
    let live = sync.deployment("api").await.unwrap().status.unwrap();
    assert_eq!(live.updated_replicas, Some(2));
    assert_eq!(live.available_replicas, Some(2));
    assert_eq!(
        status.drift_count, 0,
        "a new commit is an update, not drift"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_pointed_at_a_mirror_pulls_from_it_once_the_signed_lockfile_records_it() {
    let repo = Repo::new();
    let backup = TestRegistry::start(RegistryOptions::default());
    let mirror = format!("{}/dr", backup.host());
    let sync = Sync::new("mirror", &repo).await;
    sync.set_spec(json!({"mirror": mirror})).await;

    // The commit records no mirror: refused, nothing applied.
    let status = sync.pass().await;
    let (verified, reason, message) = condition(&status, "Verified");
    assert_eq!(
        (verified.as_str(), reason.as_str()),
        ("False", "NotMirrored"),
        "{message}"
    );
    assert!(message.contains("lockstep mirror --to"), "{message}");
    assert!(sync.deployment("api").await.is_none());

    // CI mirrors and commits the new generation; the source registry is then lost.
    let out = run(
        &[
            "mirror",
            repo.dir.to_str().unwrap(),
            "--key",
            repo.key.to_str().unwrap(),
            "--to",
            &mirror,
            "--commit",
        ],
        &[("SOURCE_DATE_EPOCH", "1700000100")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pinned = repo.pinned_api_image();
    let digest = pinned.split_once('@').unwrap().1;
    repo.registry.stop();

    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_generation, Some(2));
    assert_eq!(status.applied_commit.as_deref(), Some(repo.head().as_str()));
    assert_eq!(
        sync.image_of("api").await,
        format!("{mirror}/shop/api:1@{digest}"),
        "the same digest, from the mirror"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_images_refuses_a_rollout_whose_digests_are_gone_and_keeps_the_applied_one() {
    let repo = Repo::new();
    let sync = Sync::new("check-images", &repo).await;
    sync.set_spec(json!({"checkImages": true})).await;
    let first = sync.pass_until_ready().await;
    assert_eq!(first.applied_generation, Some(1));
    let pinned_v1 = repo.pinned_api_image();

    // Generation 2 pins a new digest, which is then deleted from the registry.
    let v2 = repo.registry.push_image("shop/api", "1", b"api v2");
    repo.lock_commit();
    repo.registry.delete_manifest("shop/api", &v2);
    let status = sync.pass().await;
    let (verified, reason, message) = condition(&status, "Verified");
    assert_eq!(
        (verified.as_str(), reason.as_str()),
        ("False", "ImagesMissing"),
        "{message}"
    );
    assert!(
        message.contains(v2.as_str()) && message.contains("shop/api"),
        "{message}"
    );
    assert_eq!(
        status.applied_generation,
        Some(1),
        "the applied state is kept"
    );
    assert_eq!(sync.image_of("api").await, pinned_v1);

    // The same bytes pushed again: the digest exists, the rollout proceeds.
    assert_eq!(repo.registry.push_image("shop/api", "1", b"api v2"), v2);
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_generation, Some(2));
    assert!(sync.image_of("api").await.ends_with(v2.as_str()));

    // Drift correction of the applied lockfile does not depend on the registry.
    repo.registry.stop();
    let again = sync.pass().await;
    assert_eq!(
        condition(&again, "Applied").0,
        "True",
        "{:#?}",
        again.conditions
    );
}

/// Regression (issue 9): the reconciler built its registry client with default settings on
/// every pass, so `checkImages` could not be given a private CA. The controller's registry
/// settings reach it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_images_reaches_registries_with_the_controllers_settings() {
    let repo = Repo::with_registry(RegistryOptions {
        tls: true,
        ..RegistryOptions::default()
    });
    let sync = Sync::new("check-images-ca", &repo).await;
    sync.set_spec(json!({"checkImages": true})).await;
    // Without the CA the registry cannot be asked: retried, nothing applied.
    let status = sync.pass().await;
    let (verified, reason, message) = condition(&status, "Verified");
    assert_eq!(
        (verified.as_str(), reason.as_str()),
        ("False", "RegistryUnavailable"),
        "{message}"
    );
    assert!(message.contains("is not trusted"), "{message}");
    assert_eq!(status.applied_generation, None);
    // With the CA the controller was given (`--ca-file`): checked and applied.
    let sync = sync.with_registries(Registries {
        settings: OciSettings {
            extra_ca_pem: repo.registry.ca_pem(),
            ..OciSettings::default()
        },
        concurrency: 4,
    });
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_generation, Some(1));
    assert_eq!(sync.image_of("api").await, repo.pinned_api_image());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_put_back_counted_and_evented() {
    let repo = Repo::new();
    let sync = Sync::new("drift", &repo).await;
    sync.pass_until_ready().await;
    let pinned = repo.pinned_api_image();

    // Someone edits the image in the cluster, and a ConfigMap value, and deletes another.
    let deployments: Api<Deployment> = Api::namespaced(sync.client.clone(), &sync.ns);
    deployments
        .patch(
            "api",
            &PatchParams::apply("kubectl-edit").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api"},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:debug"}]}}}
            })),
        )
        .await
        .unwrap();
    assert_eq!(sync.image_of("api").await, "nginx:debug");
    let maps: Api<ConfigMap> = Api::namespaced(sync.client.clone(), &sync.ns);
    maps.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"value": "hand-edited"}})),
    )
    .await
    .unwrap();
    maps.delete("extra", &Default::default()).await.unwrap();

    let status = sync.pass().await;
    assert_eq!(
        sync.image_of("api").await,
        pinned,
        "the pinned image is put back"
    );
    assert_eq!(
        sync.config_map("settings").await.unwrap().data.unwrap()["value"],
        "one"
    );
    assert!(
        sync.config_map("extra").await.is_some(),
        "the deleted object is back"
    );
    assert_eq!(status.drift_count, 3, "{status:#?}");
    let applied = condition(&status, "Applied").2;
    assert!(applied.contains("3 drifted and put back"), "{applied}");
    assert!(
        sync.event_reasons()
            .await
            .contains(&"DriftCorrected".to_owned())
    );
    let metrics = sync.ctx.metrics.render();
    let line = format!(
        "lockstep_drifted_objects_total{{namespace=\"{}\",name=\"app\"}} 3",
        sync.ns
    );
    assert!(metrics.lines().any(|l| l == line), "{metrics}");

    // Nothing drifted since: the count stays.
    let status = sync.pass().await;
    assert_eq!(status.drift_count, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_dropped_from_the_commit_are_pruned_only_when_lockstep_applied_them() {
    let repo = Repo::new();
    repo.write("taken.yaml", &config_map("taken", "t"));
    repo.lock_commit();
    let sync = Sync::new("prune", &repo).await;
    sync.pass_until_ready().await;
    assert!(sync.config_map("extra").await.is_some());

    // Another owner takes `taken` over (its annotation no longer names this sync).
    let maps: Api<ConfigMap> = Api::namespaced(sync.client.clone(), &sync.ns);
    maps.patch(
        "taken",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {SYNC_ANNOTATION: "other/sync"}}})),
    )
    .await
    .unwrap();
    repo.remove("extra.yaml");
    repo.remove("taken.yaml");
    let commit = repo.lock_commit();

    let status = sync.pass().await;
    assert_eq!(status.applied_commit.as_deref(), Some(commit.as_str()));
    assert_eq!(
        inventory_names(&status),
        ["ConfigMap/settings", "Deployment/api"]
    );
    // Foreground deletion: gone, or on its way out.
    let extra = sync.config_map("extra").await;
    assert!(
        extra.is_none_or(|m| m.metadata.deletion_timestamp.is_some()),
        "extra was not pruned"
    );
    assert!(
        sync.config_map("taken").await.is_some(),
        "someone else's object was pruned"
    );
    let applied = condition(&status, "Applied").2;
    assert!(applied.contains("pruned ConfigMap/"), "{applied}");
    assert!(
        applied.contains("not pruned: ConfigMap/t-prune/taken (not applied by this LockstepSync)"),
        "{applied}"
    );

    // With prune off, a dropped object stays.
    sync.set_spec(json!({"prune": false})).await;
    repo.remove("config.yaml");
    repo.lock_commit();
    let status = sync.pass().await;
    assert_eq!(inventory_names(&status), ["Deployment/api"]);
    assert!(sync.config_map("settings").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commits_are_refused_and_the_last_good_state_kept() {
    let repo = Repo::new();
    let sync = Sync::new("refuse", &repo).await;
    repo.registry.push_image("shop/api", "1", b"api v2");
    let generation_1 = repo.head();
    let good = repo.lock_commit();
    let good_status = sync.pass_until_ready().await;
    assert_eq!(good_status.applied_generation, Some(2));
    let good_image = sync.image_of("api").await;
    let good_rv = sync
        .deployment("api")
        .await
        .unwrap()
        .metadata
        .resource_version;

    // Every refusal: nothing applied or pruned, applied state and inventory unchanged, and
    // Verified=False with a reason and a message naming what failed.
    let expect_refused = |status: &LockstepSyncStatus, commit: &str, reason: &str, needle: &str| {
        assert_eq!(status.observed_commit.as_deref(), Some(commit));
        assert_eq!(status.applied_commit.as_deref(), Some(good.as_str()));
        assert_eq!(status.applied_generation, Some(2));
        assert_eq!(status.inventory, good_status.inventory);
        let (verified, why, message) = condition(status, "Verified");
        eprintln!("refused {reason}: {message}");
        assert_eq!(
            (verified.as_str(), why.as_str()),
            ("False", reason),
            "{message}"
        );
        assert!(
            message.contains(needle),
            "{reason}: {message:?} lacks {needle:?}"
        );
        assert_eq!(condition(status, "Ready").0, "False");
        assert_eq!(
            condition(status, "Applied").0,
            "True",
            "Applied still describes what runs"
        );
        assert!(status.last_error.is_some());
    };
    let unchanged = || async {
        let d = sync.deployment("api").await.unwrap();
        assert_eq!(
            d.metadata.resource_version, good_rv,
            "the cluster was touched"
        );
        assert!(sync.config_map("extra").await.is_some());
    };

    // Tampered: a manifest changed after signing.
    let scaled = std::fs::read_to_string(repo.dir.join("app.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 9");
    repo.write("app.yaml", &scaled);
    let tampered = repo.commit_all("scale up without locking");
    expect_refused(
        &sync.pass().await,
        &tampered,
        "BindingMismatch",
        "manifests",
    );
    unchanged().await;

    // Unpinned and not locked: an image by tag alone (and extra.yaml dropped, which must not
    // be pruned). The binding no longer matches, so no manifest is even parsed.
    git(&repo.repo, &["checkout", "-q", &good, "--", "deploy"]);
    repo.write(
        "app.yaml",
        &deployment(&repo.registry.host(), "api", "shop/api:1", 2),
    );
    repo.remove("extra.yaml");
    let unpinned = repo.commit_all("unpin");
    expect_refused(
        &sync.pass().await,
        &unpinned,
        "BindingMismatch",
        "; changed: app.yaml; removed: extra.yaml",
    );
    unchanged().await;

    // Unpinned but signed: an image in a kind lockstep has no image paths for, so `lock`
    // leaves it (with a note) and signs; the reconciler refuses an unpinned image in any
    // container list of any object.
    git(&repo.repo, &["checkout", "-q", &good, "--", "deploy"]);
    repo.write(
        "runner.yaml",
        &format!(
            "apiVersion: example.com/v1\nkind: Runner\nmetadata: {{name: r}}\nspec:\n  template:\n    spec:\n      containers:\n      - {{name: c, image: '{}/shop/api:1'}}\n",
            repo.registry.host()
        ),
    );
    let signed_unpinned = repo.lock_commit();
    expect_refused(
        &sync.pass().await,
        &signed_unpinned,
        "UnpinnedImage",
        "runner.yaml",
    );
    unchanged().await;
    repo.remove("runner.yaml");

    // Unsigned: the signature removed.
    git(&repo.repo, &["checkout", "-q", &good, "--", "deploy"]);
    repo.remove("lockstep.lock.ci-example.com.sig");
    let unsigned = repo.commit_all("drop the signature");
    expect_refused(
        &sync.pass().await,
        &unsigned,
        "SignaturesRejected",
        "signature",
    );
    unchanged().await;

    // Signed by a key the cluster does not trust.
    git(&repo.repo, &["checkout", "-q", &good, "--", "deploy"]);
    let (stranger, _) = keygen(repo.tmp.path(), "stranger", "ci@example.com");
    repo.registry.push_image("shop/api", "1", b"api v3");
    let out = run(
        &[
            "lock",
            repo.dir.to_str().unwrap(),
            "--key",
            stranger.to_str().unwrap(),
            "--signer",
            "ci-example.com",
            // The stranger cannot continue the CI key's generation count.
            "--new-history",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let untrusted = repo.commit_all("signed by a stranger");
    expect_refused(
        &sync.pass().await,
        &untrusted,
        "SignaturesRejected",
        "ci-example.com",
    );
    unchanged().await;

    // Rolled back: the branch forced back to generation 1 (validly signed, but older).
    git(&repo.repo, &["reset", "-q", "--hard", &generation_1]);
    expect_refused(
        &sync.pass().await,
        &generation_1,
        "RollbackRefused",
        "generation 1 is lower than the applied generation 2",
    );
    unchanged().await;
    assert_eq!(sync.image_of("api").await, good_image);

    // Git unreachable: a transient failure, retried with backoff; still nothing touched.
    sync.set_spec(json!({"url": format!("file://{}/nowhere", repo.tmp.path().display())}))
        .await;
    let status = sync.pass().await;
    let (ready, reason, message) = condition(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "FetchFailed"),
        "{message}"
    );
    assert_eq!(status.applied_commit.as_deref(), Some(good.as_str()));
    unchanged().await;

    let metrics = sync.ctx.metrics.render();
    for reason in [
        "BindingMismatch",
        "UnpinnedImage",
        "SignaturesRejected",
        "RollbackRefused",
    ] {
        assert!(
            metrics.contains(&format!(
                "lockstep_verification_failures_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("lockstep_reconciles_total{result=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        sync.event_reasons()
            .await
            .contains(&"RollbackRefused".to_owned())
    );
}

/// TUF's fast-forward attack: a trusted key, compromised, signs a huge generation; honest
/// lockfiles are then refused as rollbacks — until the key is removed from the trust file,
/// which releases what only it approved, with no other reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_compromised_key_releases_the_generation_it_fast_forwarded() {
    let repo = Repo::new();
    let generation_1 = repo.head();
    let (release_key, release_line) = keygen(repo.tmp.path(), "release_key", "release@example.com");
    let sync = Sync::new("fastforward", &repo).await;
    let both = format!("{}\n{}", repo.allowed_signers.trim(), release_line.trim());
    sync.set_trust(&both).await;
    assert_eq!(sync.pass().await.applied_generation, Some(1));

    // The release key, compromised, signs the same manifests as generation 1 000 000.
    let lockfile = repo.dir.join("lockstep.lock");
    let text = std::fs::read_to_string(&lockfile).unwrap();
    assert!(text.contains("\ngeneration = 1\n"), "{text}");
    std::fs::write(
        &lockfile,
        text.replace("\ngeneration = 1\n", "\ngeneration = 1000000\n"),
    )
    .unwrap();
    for entry in std::fs::read_dir(&repo.dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sig") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let out = run(
        &[
            "sign",
            repo.dir.to_str().unwrap(),
            "--key",
            release_key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let forward = repo.commit_all("generation 1000000");
    let status = sync.pass().await;
    assert_eq!(status.applied_commit.as_deref(), Some(forward.as_str()));
    assert_eq!(status.applied_generation, Some(1_000_000));

    // The honest pipeline goes on from generation 1: generation 2 is refused as a rollback.
    git(&repo.repo, &["reset", "-q", "--hard", &generation_1]);
    repo.registry.push_image("shop/api", "1", b"api v2");
    let honest = repo.lock_commit();
    let status = sync.pass().await;
    let (verified, reason, message) = condition(&status, "Verified");
    assert_eq!(
        (verified.as_str(), reason.as_str()),
        ("False", "RollbackRefused"),
        "{message}"
    );
    assert!(
        message.contains("lower than the applied generation 1000000"),
        "{message}"
    );
    assert_eq!(status.applied_commit.as_deref(), Some(forward.as_str()));

    // Removing the compromised key is all it takes: generation 2 applies, saying why.
    sync.set_trust(&repo.allowed_signers).await;
    let status = sync.pass().await;
    assert_eq!(status.applied_commit.as_deref(), Some(honest.as_str()));
    assert_eq!(status.applied_generation, Some(2));
    let (verified, _, message) = condition(&status, "Verified");
    assert_eq!(verified, "True", "{message}");
    assert!(
        message.contains("applied generation 1000000 no longer held rollback protection"),
        "{message}"
    );
    let generations: Vec<u64> = status
        .applied_history
        .iter()
        .map(|r| r.generation)
        .collect();
    assert_eq!(
        generations,
        [2],
        "the released record is forgotten, generation 1 merged into 2"
    );
    assert_eq!(sync.image_of("api").await, repo.pinned_api_image());

    // Protection holds from there: back to generation 1 is a rollback again, and trusting
    // the key again does not bring its generation back.
    sync.set_trust(&both).await;
    git(&repo.repo, &["reset", "-q", "--hard", &generation_1]);
    let (verified, reason, message) = condition(&sync.pass().await, "Verified");
    assert_eq!(
        (verified.as_str(), reason.as_str()),
        ("False", "RollbackRefused"),
        "{message}"
    );
    assert!(
        message.contains("lower than the applied generation 2"),
        "{message}"
    );
    git(&repo.repo, &["reset", "-q", "--hard", &honest]);
    let status = sync.pass().await;
    assert_eq!(condition(&status, "Verified").0, "True");
    assert_eq!(status.applied_generation, Some(2));
}

/// A sync over SSH: the deploy key and host keys from a Secret (`identity`, `known_hosts`,
/// the names Flux uses), the real OpenSSH server; a Secret without `known_hosts` is refused
/// without connecting, and the applied state is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_over_ssh_uses_the_deploy_key_and_host_keys_from_its_secret() {
    let repo = Repo::new();
    let sshd = TestSshd::start();
    let sync = Sync::new("ssh", &repo).await;
    let secrets: Api<Secret> = Api::namespaced(sync.client.clone(), &sync.ns);
    let secret = |name: &str, data: serde_json::Value| {
        serde_json::from_value::<Secret>(json!({
            "metadata": {"name": name},
            "stringData": data,
        }))
        .unwrap()
    };
    secrets
        .create(
            &PostParams::default(),
            &secret(
                "git-ssh",
                json!({"identity": sshd.identity(), "known_hosts": sshd.known_hosts()}),
            ),
        )
        .await
        .unwrap();
    secrets
        .create(
            &PostParams::default(),
            &secret("no-hosts", json!({"identity": sshd.identity()})),
        )
        .await
        .unwrap();
    sync.set_spec(json!({"url": sshd.url(&repo.repo), "gitCredentials": {"name": "git-ssh"}}))
        .await;
    let status = sync.pass().await;
    let (applied, _, message) = condition(&status, "Applied");
    assert_eq!(applied, "True", "{message}\nsshd: {}", sshd.log());
    assert_eq!(status.applied_commit.as_deref(), Some(repo.head().as_str()));
    assert_eq!(sync.image_of("api").await, repo.pinned_api_image());
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());

    let connections = sshd.log().matches("Connection from").count();
    sync.set_spec(json!({"gitCredentials": {"name": "no-hosts"}}))
        .await;
    let status = sync.pass().await;
    let (ready, reason, message) = condition(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "CredentialsInvalid"),
        "{message}"
    );
    assert!(message.contains("known_hosts"), "{message}");
    assert_eq!(status.applied_commit.as_deref(), Some(repo.head().as_str()));
    assert_eq!(sshd.log().matches("Connection from").count(), connections);
}

/// A sync over HTTPS, run by the controller binary as users run it: the token from the
/// sync's Secret, the server Git's own `git http-backend` behind HTTPS with a private CA
/// (`SSL_CERT_FILE`). A wrong token is refused naming the URL, and the token appears neither
/// in the status nor in the controller's logs; the right one applies the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_over_https_takes_its_token_from_the_secret_and_never_shows_it() {
    const TOKEN: &str = "glpat-reconcile-https-token-5d1c";
    const WRONG: &str = "glpat-reconcile-wrong-token-9e8f";
    let repo = Repo::new();
    let server = crate::git_http_server::TestGitHttps::serve(repo.tmp.path(), TOKEN);
    let url = server.url("repo");
    let sync = Sync::new("https", &repo).await;
    let secrets: Api<Secret> = Api::namespaced(sync.client.clone(), &sync.ns);
    let secret = |token: &str| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "git-https"},
            "stringData": {"token": token},
        }))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret(WRONG))
        .await
        .unwrap();
    sync.set_spec(json!({"url": url, "gitCredentials": {"name": "git-https"}}))
        .await;
    let log = repo.tmp.path().join("controller.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("controller")
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .args(["--namespace", &sync.ns])
        .args(["--metrics-address", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(repo.tmp.path().join("controller-cache"))
        .env("RUST_LOG", "debug")
        .env("SSL_CERT_FILE", server.ca_file())
        .env_remove("SSL_CERT_DIR")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let refused = status_when(&sync, &log, |s| condition(s, "Ready").1 == "FetchFailed").await;
    let (_, _, message) = condition(&refused, "Ready");
    assert!(
        message.contains(&format!(
            "{url} did not accept the credentials given for it (HTTP 401/403)"
        )),
        "{message}"
    );
    assert_eq!(refused.applied_commit, None);

    secrets
        .replace("git-https", &PostParams::default(), &secret(TOKEN))
        .await
        .unwrap();
    // A refused token is not retried with backoff: ask for a pass, as a user would.
    sync.api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {REQUEST_ANNOTATION: "token fixed"}}}),
            ),
        )
        .await
        .unwrap();
    let applied = status_when(&sync, &log, |s| s.applied_generation == Some(1)).await;
    assert_eq!(
        applied.applied_commit.as_deref(),
        Some(repo.head().as_str())
    );
    assert_eq!(sync.image_of("api").await, repo.pinned_api_image());
    child.kill().unwrap();
    child.wait().unwrap();

    let logs = std::fs::read_to_string(&log).unwrap();
    let status = serde_json::to_string(&sync.status().await).unwrap();
    // The (debug) logs cover the refused pass, and hold no token.
    assert!(logs.contains("result=Refused"), "{logs}");
    for token in [TOKEN, WRONG] {
        assert!(!logs.contains(token), "the token is in the logs:\n{logs}");
        assert!(
            !status.contains(token),
            "the token is in the status: {status}"
        );
    }
    assert!(
        server.seen().iter().any(|r| r.authorized),
        "{:?}",
        server.seen()
    );
}

/// The sync's status once `done` holds (the controller binary, logging to `log`, works on
/// it meanwhile), at most 90 s.
async fn status_when(
    sync: &Sync,
    log: &Path,
    done: impl Fn(&LockstepSyncStatus) -> bool,
) -> LockstepSyncStatus {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = sync.status().await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{status:#?}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_are_applied_and_established_before_their_objects() {
    let repo = Repo::new();
    let group = "t-crd.lockstep.test";
    repo.write(
        "z-gadget.yaml",
        &format!("apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec:\n  size: 3\n"),
    );
    repo.write(
        "a-crd.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {{type: integer}}
"
        ),
    );
    repo.lock_commit();
    let sync = Sync::new("crd", &repo).await;
    let status = sync.pass_until_ready().await;
    assert!(
        inventory_names(&status).contains(&"Gadget/g1".to_owned()),
        "{status:#?}"
    );
    let resource = ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    };
    let gadgets: Api<DynamicObject> =
        Api::namespaced_with(sync.client.clone(), &sync.ns, &resource);
    let g1 = gadgets.get("g1").await.unwrap();
    assert_eq!(g1.data["spec"]["size"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_loop_applies_on_creation_and_on_request() {
    let repo = Repo::new();
    let sync = Sync::new("loop", &repo).await;
    let ctx = sync.ctx.clone();
    let ns = sync.ns.clone();
    let controller = tokio::spawn(async move { reconcile::run(ctx, Some(&ns)).await });

    let wait_for = |generation: u64| {
        let api = sync.api.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let status = api.get("app").await.unwrap().status.unwrap_or_default();
                if status.applied_generation == Some(generation)
                    && condition(&status, "Ready").0 == "True"
                {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "generation {generation} not Ready: {status:#?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let started = Instant::now();
    wait_for(1).await;
    eprintln!("created → Ready (generation 1): {:?}", started.elapsed());

    repo.registry.push_image("shop/api", "1", b"api v2");
    let second = repo.lock_commit();
    let started = Instant::now();
    sync.api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REQUEST_ANNOTATION: "now"}}})),
        )
        .await
        .unwrap();
    let status = wait_for(2).await;
    eprintln!("requested → Ready (generation 2): {:?}", started.elapsed());
    assert_eq!(status.applied_commit.as_deref(), Some(second.as_str()));
    controller.abort();
}

/// Regression (issue 10): a fixed trust ConfigMap was noticed only at the next interval.
/// Trust refusals are retried within seconds (no watch: RBAC grants no list/watch on
/// ConfigMaps); the interval here is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_trust_configmap_is_picked_up_without_waiting_for_the_interval() {
    let repo = Repo::new();
    let sync = Sync::new("trust-fix", &repo).await;
    let (_, stranger) = keygen(repo.tmp.path(), "stranger", "stranger@example.com");
    sync.set_trust(&stranger).await;
    let ctx = sync.ctx.clone();
    let ns = sync.ns.clone();
    let controller = tokio::spawn(async move { reconcile::run(ctx, Some(&ns)).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = sync.status().await;
        if status
            .conditions
            .iter()
            .any(|c| c.reason == "SignaturesRejected")
        {
            break;
        }
        assert!(Instant::now() < deadline, "not refused: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sync.set_trust(&repo.allowed_signers).await;
    let fixed = Instant::now();
    loop {
        let status = sync.status().await;
        if status.applied_commit.as_deref() == Some(repo.head().as_str()) {
            break;
        }
        assert!(
            fixed.elapsed() < Duration::from_secs(40),
            "the fixed trust was not picked up: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("trust fixed → applied: {:?}", fixed.elapsed());
    controller.abort();
}

/// Regression (issue 10): the Git cache and the metrics of a deleted LockstepSync stayed.
/// Deleting one orphans its objects (documented), and removes what the controller kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_sync_orphans_its_objects_and_removes_its_cache_and_metrics() {
    let repo = Repo::new();
    let sync = Sync::new("delete-sync", &repo).await;
    let ctx = sync.ctx.clone();
    let ns = sync.ns.clone();
    let controller = tokio::spawn(async move { reconcile::run(ctx, Some(&ns)).await });
    let cache = sync.ctx.cache_dir.join(format!("{}_app", sync.ns));
    let series = format!(
        "lockstep_applied_generation{{namespace=\"{}\",name=\"app\"}} 1",
        sync.ns
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while sync.status().await.applied_commit.is_none() {
        assert!(Instant::now() < deadline, "not applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cache.is_dir(), "{} is not there", cache.display());
    assert!(sync.ctx.metrics.render().contains(&series));

    sync.api.delete("app", &Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while cache.exists() || sync.ctx.metrics.render().contains(&series) {
        assert!(
            Instant::now() < deadline,
            "the cache or the metrics of the deleted sync stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Orphaned, not pruned.
    assert!(sync.deployment("api").await.is_some());
    assert!(sync.config_map("settings").await.is_some());
    controller.abort();
}

// ------------------------------------------------------------------ an API server outage

/// Runs `scripts/cluster ARGS…`, panicking with its stderr when it fails.
fn cluster(args: &[&Path]) {
    let out = Command::new(cluster_script())
        .args(args)
        .env("LOCKSTEP_CLUSTER_WATCH_PID", std::process::id().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/cluster {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The apiserver is killed while a pass applies 600 objects. This test starts its OWN
/// control plane: the shared one serves the other tests running in parallel, which an
/// outage would fail at random (serializing every cluster test behind it would cost more
/// than the ~6 s and ~550 MiB of a second control plane).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_outage_mid_pass_is_a_transient_failure_and_the_next_pass_converges() {
    const MANY: usize = 600;
    let plane = tempfile::Builder::new()
        .prefix("lockstep-outage-")
        .tempdir()
        .unwrap();
    let dir = plane.path();
    tokio::task::block_in_place(|| cluster(&[Path::new("start"), dir]));
    lockstep::resolve::install_crypto_provider();
    let kubeconfig = Kubeconfig::read_from(dir.join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();

    let repo = Repo::new();
    let sync = Sync::on(client.clone(), "outage", &repo).await;
    let first = sync.pass_until_ready().await;
    assert_eq!(first.applied_generation, Some(1));

    // Generation 2: 600 more ConfigMaps, and `extra` dropped (to be pruned, later).
    let many: String = (0..MANY)
        .map(|i| format!("---\n{}", config_map(&format!("many-{i}"), "v")))
        .collect();
    repo.write("many.yaml", &many);
    repo.remove("extra.yaml");
    let second = repo.lock_commit();

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &sync.ns);
    sync.api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REQUEST_ANNOTATION: "outage"}}})),
        )
        .await
        .unwrap();
    let to_pass = sync.api.get("app").await.unwrap();
    let ctx = sync.ctx.clone();
    let pass = tokio::spawn(reconcile::reconcile(Arc::new(to_pass), ctx));
    // Mid-pass: once the apply has begun, take the apiserver down (SIGTERM, SIGKILL after 2 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while maps.get_opt("many-0").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the apply never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| cluster(&[Path::new("down"), dir, Path::new("kube-apiserver")]));
    let result = tokio::time::timeout(Duration::from_secs(120), pass)
        .await
        .expect("the pass hangs on a dead apiserver")
        .unwrap();
    let error = result.expect_err("a pass that lost the apiserver must fail");
    eprintln!("interrupted pass: {error}");
    assert!(
        ["ApplyFailed", "ClusterUnavailable", "StatusNotWritten"].contains(&error.reason),
        "{error}"
    );
    assert!(
        sync.ctx
            .metrics
            .render()
            .contains("lockstep_reconciles_total{result=\"failed\"} 1"),
        "counted as a transient failure"
    );

    tokio::task::block_in_place(|| cluster(&[Path::new("up"), dir, Path::new("kube-apiserver")]));
    // Partial, and nothing wrong: some of the 600 were applied, nothing was pruned (prune
    // runs only after every apply succeeded), the status still names generation 1.
    let applied_before = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|m| {
            m.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with("many-")
        })
        .count();
    eprintln!("ConfigMaps applied before the outage: {applied_before} of {MANY}");
    assert!(
        (1..MANY).contains(&applied_before),
        "the outage did not fall mid-apply ({applied_before} of {MANY})"
    );
    assert!(
        sync.config_map("extra").await.is_some(),
        "pruned after a failed pass"
    );
    let status = sync.status().await;
    assert_eq!(status.applied_generation, Some(1));
    assert_eq!(status.applied_commit, first.applied_commit);

    // The next pass converges.
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(second.as_str()));
    assert_eq!(status.applied_generation, Some(2));
    assert_eq!(status.inventory.len(), MANY + 2);
    assert!(
        sync.config_map("extra").await.is_none(),
        "extra is pruned now"
    );
    assert!(
        sync.config_map(&format!("many-{}", MANY - 1))
            .await
            .is_some()
    );
    tokio::task::block_in_place(|| cluster(&[Path::new("stop"), dir]));
}

// ------------------------------------------------------------------ lockstep wait

/// `lockstep wait NAME --rev REV --json` against the shared control plane, started in the
/// background; `finish` collects its exit code and JSON.
struct WaitRun(std::process::Child);

impl WaitRun {
    fn start(sync: &Sync, rev: &str, timeout: &str) -> WaitRun {
        let child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .args(["wait", "app", "--rev", rev, "--namespace", &sync.ns])
            .args(["--timeout", timeout, "--json", "--kubeconfig"])
            .arg(&control_plane().kubeconfig)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        WaitRun(child)
    }

    async fn finish(self) -> (i32, serde_json::Value, String) {
        let out = tokio::task::spawn_blocking(move || self.0.wait_with_output().unwrap())
            .await
            .unwrap();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (code(&out), json, stderr(&out))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_succeeds_for_a_good_commit_and_fails_for_a_tampered_one_or_a_timeout() {
    let repo = Repo::new();
    let sync = Sync::new("wait", &repo).await;
    let good = repo.head();

    // No pass yet: a short timeout fails and says what state the sync was in.
    let started = Instant::now();
    let (exit, json, err) = WaitRun::start(&sync, &good[..8], "2s").finish().await;
    assert_eq!(exit, 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(json["reason"], "Timeout", "{json}");
    assert!(
        err.contains("timed out after 2s waiting for commit")
            && err.contains("no status yet: the controller has not looked at it"),
        "{err}"
    );

    // Started before the pass: it learns from the watch.
    let waiting = WaitRun::start(&sync, &good[..8], "90s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    sync.pass_until_ready().await;
    let (exit, json, err) = waiting.finish().await;
    assert_eq!(exit, 0, "{err}\n{json}");
    assert_eq!(json["ok"], true);
    assert_eq!(json["commit"], good.as_str());
    assert_eq!(json["generation"], 1);
    assert_eq!(json["signers"], json!(["ci@example.com"]));
    assert!(
        json["health"].as_str().unwrap().contains("current"),
        "{json}"
    );

    // A tampered commit: refused, exit 1 with the reason and the file.
    let scaled = std::fs::read_to_string(repo.dir.join("app.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 9");
    repo.write("app.yaml", &scaled);
    let tampered = repo.commit_all("scale up without locking");
    let waiting = WaitRun::start(&sync, &tampered, "90s");
    tokio::time::sleep(Duration::from_millis(500)).await;
    sync.pass().await;
    let (exit, json, err) = waiting.finish().await;
    assert_eq!(exit, 1, "{err}\n{json}");
    assert_eq!(json["reason"], "BindingMismatch", "{json}");
    assert_eq!(json["commit"], tampered.as_str());
    assert!(
        err.contains(&format!("commit {tampered} was refused (BindingMismatch)")),
        "{err}"
    );
    // The good commit is still the one applied and healthy.
    let (exit, json, err) = WaitRun::start(&sync, &good, "5s").finish().await;
    assert_eq!((exit, &json["ok"]), (0, &json!(true)), "{err}");

    // Usage and environment: no such LockstepSync → exit 2.
    let out = run(
        &[
            "wait",
            "nope",
            "--rev",
            &good,
            "--namespace",
            &sync.ns,
            "--kubeconfig",
            control_plane().kubeconfig.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("there is no LockstepSync {}/nope", sync.ns)),
        "{}",
        stderr(&out)
    );
}

// ------------------------------------------------------------------ the Git edge

/// A repository with two commits on `main`, an annotated tag on the first, and a commit on
/// no branch.
pub(crate) fn git_fixture() -> (tempfile::TempDir, String, String, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("origin");
    std::fs::create_dir_all(repo.join("deploy/sub")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("deploy/a.yaml"), "a: 1\n").unwrap();
    std::fs::write(repo.join("deploy/sub/b.yaml"), "b: 1\n").unwrap();
    std::fs::write(repo.join("README.md"), "not an input\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "one"]);
    let first = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    git(&repo, &["tag", "-a", "v1", "-m", "release 1"]);
    std::fs::write(repo.join("deploy/a.yaml"), "a: 2\n").unwrap();
    git(&repo, &["commit", "-qam", "two"]);
    let second = git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let orphan = git(&repo, &["commit-tree", "HEAD^{tree}", "-m", "dangling"])
        .trim()
        .to_owned();
    let url = format!("file://{}", repo.display());
    (tmp, url, first, second, orphan)
}

#[test]
fn fetch_a_branch_a_tag_and_a_commit_into_a_bare_cache_and_read_without_checkout() {
    let (tmp, url, first, second, orphan) = git_fixture();
    let cache = tmp.path().join("cache");
    let head = fetch(&cache, &url, FetchRef::Branch("main"), None).unwrap();
    assert_eq!(head.id, second);
    assert_eq!(head.summary, "two");
    assert!(
        cache.join("HEAD").exists() && !cache.join(".git").exists(),
        "a bare cache"
    );
    let (files, info) = read_commit(&cache, &head.id, "deploy").unwrap();
    assert_eq!(info.id, second);
    let names: Vec<&str> = files.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["a.yaml", "sub/b.yaml"]);
    assert_eq!(files.files["a.yaml"], b"a: 2\n");
    // Leading/trailing slashes and `./` are the same directory.
    assert_eq!(read_commit(&cache, &second, "./deploy/").unwrap().0, files);

    let tag = fetch(&cache, &url, FetchRef::Tag("v1"), None).unwrap();
    assert_eq!(tag.id, first, "the annotated tag is peeled to its commit");
    assert_eq!(
        read_commit(&cache, &first, "deploy").unwrap().0.files["a.yaml"],
        b"a: 1\n"
    );

    let by_id = fetch(
        &tmp.path().join("cache2"),
        &url,
        FetchRef::Commit(&first),
        None,
    )
    .unwrap();
    assert_eq!(by_id.id, first);

    let err = fetch(
        &tmp.path().join("cache3"),
        &url,
        FetchRef::Commit(&orphan),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, GitError::CommitNotFound { .. }), "{err}");
    let err = fetch(&cache, &url, FetchRef::Branch("nope"), None).unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    assert_eq!(err.to_string(), format!("{url} has no branch \"nope\""));
    let err = fetch(&cache, &url, FetchRef::Commit("abc"), None).unwrap_err();
    assert!(matches!(err, GitError::InvalidRef { .. }), "{err}");
    let err = fetch(&cache, &url, FetchRef::Branch("a..b"), None).unwrap_err();
    assert!(matches!(err, GitError::InvalidRef { .. }), "{err}");
    let err = read_commit(&cache, &second, "missing").unwrap_err();
    assert!(matches!(err, GitError::DirNotInCommit { .. }), "{err}");
    let err = read_commit(&cache, &second, "deploy/../x").unwrap_err();
    assert!(matches!(err, GitError::InvalidDirPath { .. }), "{err}");
    let err = fetch(
        &cache,
        &format!("{url}-missing"),
        FetchRef::Branch("main"),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, GitError::Git { .. }), "{err}");
}

#[test]
fn a_force_pushed_branch_is_followed() {
    let (tmp, url, first, _second, _) = git_fixture();
    let cache = tmp.path().join("cache");
    fetch(&cache, &url, FetchRef::Branch("main"), None).unwrap();
    let origin = tmp.path().join("origin");
    git(&origin, &["reset", "-q", "--hard", &first]);
    let head = fetch(&cache, &url, FetchRef::Branch("main"), None).unwrap();
    assert_eq!(
        head.id, first,
        "the cache follows the remote, not its own history"
    );
}

// ------------------------------------------------------------------ the binary

/// `GET path` on 127.0.0.1:`port`: (status line, body), or None when nothing listens yet.
fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_binary_applies_and_serves_health_and_metrics() {
    let repo = Repo::new();
    let sync = Sync::new("binary", &repo).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = repo.tmp.path().join("controller.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("controller")
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .args(["--namespace", &sync.ns])
        .args(["--metrics-address", &format!("127.0.0.1:{port}")])
        .arg("--cache-dir")
        .arg(repo.tmp.path().join("controller-cache"))
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let status = sync.status().await;
        if status.applied_generation == Some(1) && condition(&status, "Ready").0 == "True" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "not applied by the binary: {status:#?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.applied_commit.as_deref(), Some(repo.head().as_str()));
    assert_eq!(
        http_get(port, "/healthz").unwrap(),
        ("HTTP/1.1 200 OK".to_owned(), "ok\n".to_owned())
    );
    let (ready, _) = http_get(port, "/readyz").unwrap();
    assert_eq!(ready, "HTTP/1.1 200 OK");
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let generation = format!(
        "lockstep_applied_generation{{namespace=\"{}\",name=\"app\"}} 1",
        sync.ns
    );
    assert!(metrics.lines().any(|l| l == generation), "{metrics}");
    assert!(
        !metrics.contains("lockstep_reconciles_total{result=\"applied\"} 0"),
        "{metrics}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log).unwrap();
    let first = logs.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "JSON logs: {first}"
    );
}

/// `lockstep controller --leader-election` with a short Lease, as replica `instance`.
fn elected_controller(sync: &Sync, repo: &Repo, instance: &str) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("controller")
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .args(["--namespace", &sync.ns])
        .args(["--metrics-address", &format!("127.0.0.1:{port}")])
        .arg("--cache-dir")
        .arg(repo.tmp.path().join(format!("cache-{instance}")))
        .args(["--instance", instance, "--leader-election"])
        .args(["--lease-name", "lockstep", "--lease-duration", "3s"])
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(repo.tmp.path().join(format!("{instance}.log"))).unwrap())
        .spawn()
        .unwrap();
    (child, port)
}

/// The value of an unlabelled metric, or of `lockstep_reconciles_total` summed over results.
fn metric(port: u16, name: &str) -> Option<u64> {
    let (_, body) = http_get(port, "/metrics")?;
    let values = body
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    Some(values.sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_elected_controllers_one_reconciles_and_the_other_takes_over_when_it_dies() {
    use k8s_openapi::api::coordination::v1::Lease;
    let repo = Repo::new();
    let sync = Sync::new("lease", &repo).await;
    let leases: Api<Lease> = Api::namespaced(sync.client.clone(), &sync.ns);
    let (a, port_a) = elected_controller(&sync, &repo, "replica-a");
    let (b, port_b) = elected_controller(&sync, &repo, "replica-b");
    let mut children = [("replica-a", a, port_a), ("replica-b", b, port_b)];

    // Exactly one holds the Lease and applies.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = sync.status().await;
        if status.applied_generation == Some(1) && condition(&status, "Ready").0 == "True" {
            break;
        }
        assert!(Instant::now() < deadline, "not applied: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let holder = leases.get("lockstep").await.unwrap().spec.unwrap();
    let holder = holder.holder_identity.unwrap();
    let leader = children
        .iter()
        .position(|(name, ..)| holder.starts_with(&format!("{name}_")))
        .unwrap_or_else(|| panic!("holder {holder:?} is neither replica"));
    let follower = 1 - leader;
    let (leader_port, follower_port) = (children[leader].2, children[follower].2);
    // Let a few renewals pass: the follower must stay a follower.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(metric(leader_port, "lockstep_leader"), Some(1));
    assert_eq!(metric(follower_port, "lockstep_leader"), Some(0));
    assert!(metric(leader_port, "lockstep_reconciles_total{").unwrap() >= 1);
    assert_eq!(
        metric(follower_port, "lockstep_reconciles_total{"),
        Some(0),
        "the follower reconciled"
    );
    assert_eq!(
        leases
            .get("lockstep")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity,
        Some(holder.clone())
    );

    // Kill the leader (no release: a crash). The follower may take over only once the
    // record has not changed for the lease duration, and then must: wait for the takeover
    // with a generous bound (a loaded machine delays polls, not correctness), and check the
    // Lease's own times for the safety half.
    children[leader].1.kill().unwrap();
    children[leader].1.wait().unwrap();
    let killed = Instant::now();
    let last_renewal = leases.get("lockstep").await.unwrap().spec.unwrap();
    assert_eq!(
        last_renewal.holder_identity.as_deref(),
        Some(holder.as_str())
    );
    let last_renewal = last_renewal.renew_time.expect("the holder renewed").0;
    let taken = loop {
        let spec = leases.get("lockstep").await.unwrap().spec.unwrap();
        let h = spec.holder_identity.clone().unwrap_or_default();
        if h != holder && !h.is_empty() {
            break spec;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no takeover 60 s after the holder was killed (lease duration 3 s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "takeover after the holder was killed: {:?} (lease duration 3 s)",
        killed.elapsed()
    );
    let new_holder = taken.holder_identity.unwrap();
    assert!(new_holder.starts_with(&format!("{}_", children[follower].0)));
    // Both replicas stamp the Lease from this machine's clock: the takeover comes a lease
    // duration after the dead holder's last renewal, less at most the latency of the request
    // in which the follower first saw that renewal (it counts from when it asked). A
    // follower that did not wait would take over within one 0.6 s poll.
    let acquired = taken.acquire_time.expect("a takeover sets acquireTime").0;
    let unrenewed = acquired.duration_since(last_renewal);
    assert!(
        unrenewed >= jiff::SignedDuration::from_secs(2),
        "taken over {unrenewed:?} after the last renewal, before the 3 s lease expired"
    );

    // The new leader reconciles: a new commit, requested, gets applied.
    repo.registry.push_image("shop/api", "1", b"api v2");
    let second = repo.lock_commit();
    sync.api
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REQUEST_ANNOTATION: "lease"}}})),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = sync.status().await;
        if status.applied_commit.as_deref() == Some(second.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not applied by the new leader: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(follower_port, "lockstep_leader"), Some(1));
    assert!(metric(follower_port, "lockstep_reconciles_total{").unwrap() >= 1);

    // A graceful stop releases the Lease.
    let pid = children[follower].1.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    children[follower].1.wait().unwrap();
    let spec = leases.get("lockstep").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity, None, "released on SIGTERM");
}

/// Not a timed test: prints how long passes over 1000 objects take and the controller's
/// memory (`cargo test --test it -- --ignored bench_reconcile --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly"]
async fn bench_reconcile_1000_objects() {
    let repo = Repo::new();
    let mut maps = String::new();
    for i in 0..999 {
        maps.push_str(&format!("---\n{}", config_map(&format!("cm-{i:04}"), "v")));
    }
    repo.write("maps.yaml", &maps);
    repo.remove("config.yaml");
    repo.remove("extra.yaml");
    repo.lock_commit();
    let sync = Sync::new("bench", &repo).await;
    let timed = |label: &'static str| {
        let sync = &sync;
        async move {
            let started = Instant::now();
            let status = sync.pass().await;
            eprintln!("{label}: {:?}", started.elapsed());
            status
        }
    };
    let status = timed("first pass (1000 objects created)").await;
    assert_eq!(status.inventory.len(), 1000, "{:#?}", status.conditions);
    for _ in 0..3 {
        let status = timed("no-op pass (1000 objects unchanged)").await;
        assert!(condition(&status, "Applied").2.contains("1000 unchanged"));
    }

    // The binary's memory once it has applied the same 1000 objects.
    let log = repo.tmp.path().join("controller.log");
    let sync2 = Sync::new("bench-rss", &repo).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("controller")
        .arg("--kubeconfig")
        .arg(&control_plane().kubeconfig)
        .args(["--namespace", &sync2.ns, "--metrics-address", "127.0.0.1:0"])
        .arg("--cache-dir")
        .arg(repo.tmp.path().join("controller-cache"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let status = sync2.status().await;
        if status.inventory.len() == 1000 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "not applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "binary: created → 1000 objects applied: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    for line in proc_status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
    {
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        eprintln!("controller ({profile} build) {line}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Regression: the threat model said a hanging Git server had no timeout. HTTP requests of
/// the handshake time out without an answer (`HTTP_TIMEOUT`, 30 s), and the error is a transport
/// error the reconciler retries.
#[test]
fn a_git_server_that_never_answers_fails_the_fetch_instead_of_hanging() {
    let mock = crate::harness::MockLyingRegistry::start(crate::harness::MockBehavior::Stall);
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let err = fetch(
        &tmp.path().join("cache"),
        &format!("http://{}/repo.git", mock.host()),
        FetchRef::Branch("main"),
        None,
    )
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, GitError::Git { .. }), "{err}");
    assert!(err.to_string().contains("cannot fetch branch"), "{err}");
}

/// A client that authenticates as the controller's ServiceAccount, installed from deploy/
/// (namespace, ServiceAccount, RBAC): a token from a TokenRequest, nothing else.
async fn service_account_client(admin: &Client) -> Client {
    for rel in [
        "deploy/namespace.yaml",
        "deploy/serviceaccount.yaml",
        "deploy/rbac.yaml",
    ] {
        crate::deploy::apply(admin, &crate::deploy::documents(rel), false).await;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "lockstep-system");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = accounts
        .create_token_request("lockstep", &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let plane = tokio::task::block_in_place(control_plane);
    let kubeconfig = Kubeconfig::read_from(&plane.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    Client::try_from(config).unwrap()
}

/// regression: the applier role may read every ConfigMap, so a ConfigMap trust was read in
/// namespaces nobody had opted in, against the README's promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_lockstep_sources_binding_opts_a_namespace_in_under_the_service_accounts_identity() {
    let admin = client().await;
    let controller = service_account_client(&admin).await;
    let repo = Repo::new();
    let sync = Sync::on(admin.clone(), "optin", &repo)
        .await
        .reconciled_by(controller);

    let status = sync.pass().await;
    let (ready, reason, message) = condition(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "Forbidden"),
        "{message}"
    );
    assert!(
        message.contains("namespace t-optin has not opted in")
            && message.contains("lockstep-sources"),
        "{message}"
    );
    assert!(sync.deployment("api").await.is_none());
    assert!(sync.config_map("settings").await.is_none());
    // `wait` gives up at once, with the reason.
    let generation = sync.api.get("app").await.unwrap().metadata.generation;
    let wanted = WantedCommit::parse(&repo.head()).unwrap();
    assert!(
        matches!(
            judge(Some(&status), generation, &wanted),
            Verdict::Failed(ref f) if f.reason == "Forbidden"
        ),
        "{:?}",
        judge(Some(&status), generation, &wanted)
    );

    // The namespace opts in: a RoleBinding of lockstep-sources for the ServiceAccount.
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), &sync.ns);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "lockstep-sources"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "lockstep-sources"},
        "subjects": [{"kind": "ServiceAccount", "name": "lockstep", "namespace": "lockstep-system"}],
    }))
    .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(repo.head().as_str()));
    assert!(sync.deployment("api").await.is_some());
}

/// regression: a refused pass never re-judged health, so `Healthy` stayed at what the
/// applying pass saw (a rollout just begun) and `wait` for the applied commit timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pass_rejudges_the_applied_commits_health_so_wait_for_it_succeeds() {
    let repo = Repo::new();
    let sync = Sync::new("rejudge", &repo).await;
    let applied = repo.head();
    let first = sync.pass().await;
    assert_eq!(first.applied_commit.as_deref(), Some(applied.as_str()));
    assert_ne!(
        condition(&first, "Healthy").0,
        "True",
        "judged right after the apply, the rollout has not begun"
    );

    // A commit that bypassed `lock`: every later pass refuses it.
    repo.write("config.yaml", &config_map("settings", "tampered"));
    let tampered = repo.commit_all("tampered");
    let generation = sync.api.get("app").await.unwrap().metadata.generation;
    let wanted = WantedCommit::parse(&applied).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        let status = sync.pass().await;
        assert_eq!(status.observed_commit.as_deref(), Some(tampered.as_str()));
        assert_eq!(condition(&status, "Ready").0, "False");
        if condition(&status, "Healthy").0 == "True" {
            break status;
        }
        assert!(Instant::now() < deadline, "{:#?}", status.conditions);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(condition(&status, "Verified").1, "BindingMismatch");
    assert!(matches!(
        judge(Some(&status), generation, &wanted),
        Verdict::Succeeded(_)
    ));
    assert_eq!(
        sync.config_map("settings").await.unwrap().data.unwrap()["value"],
        "one"
    );
}

/// regression: pods the ReplicaSet may not create (Pod Security "restricted") were seen only
/// as "0 of 2 replicas updated" until the progress deadline; `ReplicaFailure` is a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_forbidden_by_pod_security_fail_the_rollout_with_the_reason() {
    let repo = Repo::new();
    let sync = Sync::new("podsecurity", &repo).await;
    Api::<Namespace>::all(sync.client.clone())
        .patch(
            &sync.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted"
            }}})),
        )
        .await
        .unwrap();
    let generation = sync.api.get("app").await.unwrap().metadata.generation;
    let wanted = WantedCommit::parse(&repo.head()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = sync.pass().await;
        if condition(&status, "Healthy").1 == "Failed" {
            break status;
        }
        assert!(Instant::now() < deadline, "{:#?}", status.conditions);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (_, _, message) = condition(&status, "Healthy");
    assert!(
        message.contains("ReplicaFailure") && message.contains("PodSecurity"),
        "{message}"
    );
    assert!(
        message.contains("Deployment") && message.contains("api"),
        "{message}"
    );
    let verdict = judge(Some(&status), generation, &wanted);
    assert!(
        matches!(verdict, Verdict::Failed(ref f) if f.reason == "Unhealthy"),
        "{verdict:?}"
    );
}

/// regression: kube-runtime's recorder folded every repeat of (type, reason, action, object)
/// into the first Event, so what a later pass applied, pruned or refused was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pass_note_is_kept_as_its_own_event_and_repeats_are_counted() {
    let repo = Repo::new();
    let sync = Sync::new("eventnotes", &repo).await;
    sync.pass().await;
    repo.write("config.yaml", &config_map("settings", "two"));
    repo.lock_commit();
    sync.pass().await;
    repo.remove("extra.yaml");
    let third = repo.lock_commit();
    sync.pass().await;

    // The same refusal three times: one Event, counted.
    repo.write("config.yaml", &config_map("settings", "tampered"));
    repo.commit_all("tampered");
    for _ in 0..3 {
        sync.pass().await;
    }

    let events: Api<K8sEvent> = Api::namespaced(sync.client.clone(), &sync.ns);
    let events = events.list(&ListParams::default()).await.unwrap().items;
    let applied: Vec<&str> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Applied"))
        .filter_map(|e| e.note.as_deref())
        .collect();
    assert_eq!(applied.len(), 3, "{applied:#?}");
    assert!(
        applied
            .iter()
            .any(|n| n.starts_with(&format!("commit {}", &third[..12]))
                && n.contains("pruned ConfigMap")
                && n.contains("extra")),
        "the third pass's prune is kept: {applied:#?}"
    );
    let refused: Vec<&K8sEvent> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("BindingMismatch"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].series.as_ref().map(|s| s.count), Some(3));
    assert_eq!(refused[0].type_.as_deref(), Some("Warning"));
    assert_eq!(refused[0].reporting_controller.as_deref(), Some("lockstep"));
}

/// regression: resuming from `spec.suspend` changed the spec's generation, so a change made
/// in the cluster while suspended was counted as an update, not as drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_suspended_is_drift_when_resumed() {
    let repo = Repo::new();
    let sync = Sync::new("suspenddrift", &repo).await;
    sync.pass().await;
    sync.set_spec(json!({"suspend": true})).await;
    let suspended = sync.pass().await;
    assert_eq!(condition(&suspended, "Ready").1, "Suspended");
    Api::<ConfigMap>::namespaced(sync.client.clone(), &sync.ns)
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"value": "edited while suspended"}})),
        )
        .await
        .unwrap();
    sync.set_spec(json!({"suspend": false, "interval": "2h"}))
        .await;
    let status = sync.pass().await;
    assert_eq!(
        sync.config_map("settings").await.unwrap().data.unwrap()["value"],
        "one"
    );
    assert_eq!(status.drift_count, 1, "{:#?}", status.conditions);
    let applied = condition(&status, "Applied").2;
    assert!(
        applied.contains("0 updated, 1 drifted and put back"),
        "{applied}"
    );
}

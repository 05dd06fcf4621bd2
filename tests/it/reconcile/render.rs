//! A commit whose manifests were rendered by a kustomize render step and a Helm chart with
//! per-environment values, applied by the reconciler on the real API server; a later commit that changes the step's source without
//! a new lock is refused (RenderMismatch) and the applied state kept.

use super::{Repo, Sync, condition, deployment, inventory_names};
use crate::cli::{code, run, stderr};

/// `lockstep lock --commit` with the real kustomize and helm (the render steps of `deploy/`).
fn lock_with_renderers(repo: &Repo) -> String {
    repo.commit_all("sources");
    let (kustomize, helm) = crate::hydrate::tools();
    let out = run(
        &[
            "lock",
            repo.dir.to_str().unwrap(),
            "--key",
            repo.key.to_str().unwrap(),
            "--kustomize",
            kustomize,
            "--helm",
            helm,
            "--commit",
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    repo.head()
}

fn write_source(repo: &Repo, rel: &str, text: &str) {
    let path = repo.repo.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendered_commit_is_applied_and_a_source_changed_without_a_lock_is_refused() {
    let repo = Repo::new();
    let host = repo.registry.host();
    write_source(
        &repo,
        "base/kustomization.yaml",
        "resources:\n  - web.yaml\ncommonLabels:\n  tier: front\n",
    );
    write_source(
        &repo,
        "base/web.yaml",
        &deployment(&host, "web", "shop/api:1", 1),
    );
    write_source(
        &repo,
        "charts/api/Chart.yaml",
        "apiVersion: v2\nname: api\nversion: 0.1.0\n",
    );
    write_source(
        &repo,
        "charts/api/values.yaml",
        &format!("image: {host}/shop/api:1\nreplicas: 1\n"),
    );
    write_source(
        &repo,
        "charts/api/templates/deployment.yaml",
        concat!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n",
            "  labels:\n    app.kubernetes.io/managed-by: {{ .Release.Service }}\n",
            "spec:\n  replicas: {{ .Values.replicas }}\n",
            "  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n",
            "  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n",
            "    spec:\n      containers:\n        - name: api\n          image: {{ .Values.image | quote }}\n",
        ),
    );
    write_source(&repo, "values/prod.yaml", "replicas: 2\n");
    repo.write(
        "lockstep.toml",
        concat!(
            "[[render]]\nkustomize = \"../base\"\noutput = \"rendered/web.yaml\"\n",
            "[[render]]\nhelm = { chart = \"../charts/api\", release = \"backend\", values = [\"../values/prod.yaml\"] }\n",
            "output = \"rendered/api.yaml\"\n",
        ),
    );
    let rendered = lock_with_renderers(&repo);

    let sync = Sync::new("render", &repo).await;
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(rendered.as_str()));
    assert!(
        ["Deployment/web", "Deployment/backend"]
            .iter()
            .all(|n| inventory_names(&status).contains(&(*n).to_owned())),
        "{status:#?}"
    );
    // What runs is the rendered object: kustomize's label, the pinned image.
    let live = sync.deployment("web").await.unwrap();
    assert_eq!(live.metadata.labels.unwrap()["tier"], "front");
    let image = live.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert!(image.contains("/shop/api:1@sha256:"), "{image}");
    // And the chart's: the production values, Helm's label, the pinned image.
    let api = sync.deployment("backend").await.unwrap();
    assert_eq!(
        api.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "Helm"
    );
    let spec = api.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let image = spec.template.spec.unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert!(image.contains("/shop/api:1@sha256:"), "{image}");

    // The source changes, the rendered file and the lockfile do not: refused, nothing applied.
    write_source(
        &repo,
        "base/web.yaml",
        &deployment(&host, "web", "shop/api:1", 5),
    );
    let unlocked = repo.commit_all("more replicas, not rendered");
    let status = sync.pass().await;
    let (ready, reason, message) = condition(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "RenderMismatch"),
        "{message}"
    );
    assert!(
        message.contains("rendered/web.yaml: its render inputs are not the ones it was rendered from; changed: ../base/web.yaml"),
        "{message}"
    );
    assert!(message.contains(&unlocked[..12]), "{message}");
    assert_eq!(status.applied_commit.as_deref(), Some(rendered.as_str()));
    let replicas = sync.deployment("web").await.unwrap().spec.unwrap().replicas;
    assert_eq!(replicas, Some(1));
}

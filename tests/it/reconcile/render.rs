//! A commit whose manifests were rendered by a kustomize render step, applied by the
//! reconciler on the real API server; a later commit that changes the step's source without
//! a new lock is refused (RenderMismatch) and the applied state kept.

use super::{Repo, Sync, condition, deployment, inventory_names};
use crate::cli::{code, run, stderr};

/// `lockstep lock --commit` with the real kustomize (the render step of `deploy/`).
fn lock_with_kustomize(repo: &Repo) -> String {
    repo.commit_all("sources");
    let (kustomize, _) = crate::hydrate::tools();
    let out = run(
        &[
            "lock",
            repo.dir.to_str().unwrap(),
            "--key",
            repo.key.to_str().unwrap(),
            "--kustomize",
            kustomize,
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
    repo.write(
        "lockstep.toml",
        "[[render]]\nkustomize = \"../base\"\noutput = \"rendered/web.yaml\"\n",
    );
    let rendered = lock_with_kustomize(&repo);

    let sync = Sync::new("render", &repo).await;
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(rendered.as_str()));
    assert!(
        inventory_names(&status).contains(&"Deployment/web".to_owned()),
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

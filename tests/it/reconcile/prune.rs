//! Prune and ownership on the real API server: a pass never deletes what the commit still
//! declares or what lockstep did not apply, and never takes another sync's objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use super::{Repo, Sync, condition, config_map, deployment, inventory_names};
use lockstep::cluster::crd::LockstepSyncStatus;
use lockstep::cluster::plan::SYNC_ANNOTATION;

/// A manifest `text` (of a namespaced object) placed in `namespace`.
fn in_namespace(text: &str, namespace: &str) -> String {
    text.replacen(
        "metadata:\n",
        &format!("metadata:\n  namespace: {namespace}\n"),
        1,
    )
}

/// (kind/name, reason, message) of each object the last prune kept.
fn kept(status: &LockstepSyncStatus) -> Vec<(String, String, String)> {
    let record = status.last_prune.as_ref().expect("status.lastPrune");
    record
        .kept
        .iter()
        .map(|k| {
            (
                format!("{}/{}", k.object.kind, k.object.name),
                k.reason.clone(),
                k.message.clone(),
            )
        })
        .collect()
}

fn deleted(status: &LockstepSyncStatus) -> Vec<String> {
    let record = status.last_prune.as_ref().expect("status.lastPrune");
    record
        .deleted
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect()
}

async fn live_namespace(sync: &Sync, name: &str) -> Option<Namespace> {
    Api::<Namespace>::all(sync.client.clone())
        .get_opt(name)
        .await
        .unwrap()
}

/// Regression (issue 10): removing only the `Namespace team` manifest deleted the namespace,
/// and with it a Deployment the same commit still declared and a ConfigMap nobody gave
/// lockstep; every later pass failed with `namespaces "team" not found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_namespace_is_kept_while_it_holds_declared_or_foreign_objects() {
    let team = "t-prune-ns-team";
    let repo = Repo::new();
    repo.write(
        "team/namespace.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {team}\n"),
    );
    repo.write(
        "team/web.yaml",
        &in_namespace(
            &deployment(&repo.registry.host(), "web", "shop/api:1", 1),
            team,
        ),
    );
    repo.lock_commit();
    let sync = Sync::new("prune-ns", &repo).await;
    sync.pass_until_ready().await;
    let web: Api<Deployment> = Api::namespaced(sync.client.clone(), team);
    assert!(web.get_opt("web").await.unwrap().is_some());
    // Somebody else's object in the namespace.
    let maps: Api<ConfigMap> = Api::namespaced(sync.client.clone(), team);
    maps.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bystander"}, "data": {"k": "v"}}))
            .unwrap(),
    )
    .await
    .unwrap();

    // 1. Only the Namespace manifest goes: the Deployment in it is still declared.
    repo.remove("team/namespace.yaml");
    let commit = repo.lock_commit();
    let status = sync.pass().await;
    assert_eq!(status.applied_commit.as_deref(), Some(commit.as_str()));
    let ns = live_namespace(&sync, team).await.expect("namespace kept");
    assert!(
        ns.metadata.deletion_timestamp.is_none(),
        "namespace is being deleted"
    );
    assert!(
        web.get_opt("web").await.unwrap().is_some(),
        "web was deleted"
    );
    let kept_now = kept(&status);
    assert_eq!(kept_now.len(), 1, "{kept_now:?}");
    assert_eq!(kept_now[0].0, format!("Namespace/{team}"));
    assert_eq!(kept_now[0].1, "HoldsDeclaredObjects");
    assert!(
        kept_now[0].2.contains(&format!("Deployment/{team}/web")),
        "{kept_now:?}"
    );
    // Still this sync's: a later pass deletes it once it is safe to.
    assert!(
        inventory_names(&status).contains(&format!("Namespace/{team}")),
        "{:?}",
        inventory_names(&status)
    );
    let applied = condition(&status, "Applied").2;
    assert!(
        applied.contains(&format!(
            "not pruned: Namespace/{team} (the commit still declares"
        )),
        "{applied}"
    );
    // The pass after that one still fails nothing.
    let status = sync.pass().await;
    assert_eq!(
        condition(&status, "Applied").0,
        "True",
        "{:?}",
        status.conditions
    );

    // 2. The Deployment goes too: it is pruned; the namespace still holds `bystander`.
    repo.remove("team/web.yaml");
    repo.lock_commit();
    let status = sync.pass().await;
    assert_eq!(deleted(&status), ["Deployment/web"]);
    let kept_now = kept(&status);
    assert_eq!(kept_now.len(), 1, "{kept_now:?}");
    assert_eq!(kept_now[0].1, "HoldsForeignObjects", "{kept_now:?}");
    assert!(
        kept_now[0]
            .2
            .contains(&format!("ConfigMap/{team}/bystander")),
        "{kept_now:?}"
    );
    assert!(maps.get_opt("bystander").await.unwrap().is_some());
    assert!(live_namespace(&sync, team).await.is_some());

    // 3. Its owner removes `bystander`: the next pass, with no new commit, deletes the
    //    namespace (what is left of web is being deleted, or gone).
    maps.delete("bystander", &DeleteParams::default())
        .await
        .unwrap();
    let status = sync.pass().await;
    assert_eq!(
        deleted(&status),
        [format!("Namespace/{team}")],
        "{:?}",
        status.last_prune
    );
    assert!(kept(&status).is_empty());
    assert!(
        live_namespace(&sync, team)
            .await
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace not deleted"
    );
    assert!(!inventory_names(&status).contains(&format!("Namespace/{team}")));

    // 4. What was pruned stays in the status across a pass with nothing to prune.
    let status = sync.pass().await;
    assert_eq!(deleted(&status), [format!("Namespace/{team}")]);
}

/// With `spec.prune: false` the status shows what a prune would delete (the API server's
/// dry run), and nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prune_off_the_status_shows_what_a_prune_would_delete() {
    let repo = Repo::new();
    let sync = Sync::new("prune-dry", &repo).await;
    sync.set_spec(json!({"prune": false})).await;
    sync.pass_until_ready().await;
    repo.remove("extra.yaml");
    repo.lock_commit();
    let status = sync.pass().await;
    let record = status.last_prune.clone().expect("status.lastPrune");
    assert!(record.dry_run, "{record:?}");
    assert_eq!(deleted(&status), ["ConfigMap/extra"]);
    let extra = sync.config_map("extra").await.expect("extra is kept");
    assert!(extra.metadata.deletion_timestamp.is_none());
    let applied = condition(&status, "Applied").2;
    assert!(
        applied.contains("would prune (spec.prune is false) ConfigMap/"),
        "{applied}"
    );
    // Not this sync's any more: a later prune does not take it.
    assert_eq!(
        inventory_names(&status),
        ["ConfigMap/settings", "Deployment/api"]
    );
}

/// Regression (issue 10): two LockstepSyncs declaring one object fought over it — the sync
/// annotation flipped each pass, drift was counted every time and prune rights followed
/// whoever wrote last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_another_sync_owns_is_skipped_and_the_conflict_reported() {
    let repo_a = Repo::new();
    let a = Sync::new("own-a", &repo_a).await;
    a.pass_until_ready().await;

    let repo_b = Repo::new();
    repo_b.write(
        "shared.yaml",
        &in_namespace(&config_map("settings", "from b"), &a.ns),
    );
    repo_b.lock_commit();
    let b = Sync::new("own-b", &repo_b).await;
    let status = b.pass().await;
    // B applied its own objects, not A's ConfigMap.
    assert_eq!(
        condition(&status, "Applied").0,
        "True",
        "{:?}",
        status.conditions
    );
    let (ready, reason, message) = condition(&status, "Ready");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "OwnershipConflict")
    );
    assert!(
        message.contains(&format!(
            "ConfigMap/{}/settings (owned by LockstepSync {}/app)",
            a.ns, a.ns
        )),
        "{message}"
    );
    assert_eq!(status.conflicts.len(), 1, "{:?}", status.conflicts);
    assert_eq!(status.conflicts[0].owner, format!("{}/app", a.ns));
    assert!(
        !status
            .inventory
            .iter()
            .any(|e| e.namespace == a.ns && e.name == "settings"),
        "{:?}",
        status.inventory
    );
    let settings = a.config_map("settings").await.unwrap();
    assert_eq!(
        settings.data.unwrap()["value"],
        "one",
        "B overwrote A's value"
    );
    assert_eq!(
        settings.metadata.annotations.unwrap()[SYNC_ANNOTATION],
        format!("{}/app", a.ns)
    );
    assert!(
        b.event_reasons()
            .await
            .contains(&"OwnershipConflict".to_owned())
    );
    let metrics = b.ctx.metrics.render();
    assert!(
        metrics.contains(&format!(
            "lockstep_ownership_conflicts{{namespace=\"{}\",name=\"app\"}} 1",
            b.ns
        )),
        "{metrics}"
    );

    // A sees no drift and stays Ready; neither sync flips the annotation.
    let drift_before = a.status().await.drift_count;
    let status_a = a.pass().await;
    assert_eq!(status_a.drift_count, drift_before);
    assert_eq!(condition(&status_a, "Ready").0, "True");
    b.pass().await;
    let settings = a.config_map("settings").await.unwrap();
    assert_eq!(
        settings.metadata.annotations.unwrap()[SYNC_ANNOTATION],
        format!("{}/app", a.ns)
    );

    // B drops it: B prunes nothing of A's, and the conflict clears.
    repo_b.remove("shared.yaml");
    repo_b.lock_commit();
    let status = b.pass_until_ready().await;
    assert!(status.conflicts.is_empty());
    assert!(a.config_map("settings").await.is_some());
}

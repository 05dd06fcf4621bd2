//! What deleted syncs leave behind, removed: their Git cache directories (and those of URLs
//! a sync no longer follows), their metrics series and their schedule. A deleted
//! LockstepSync's objects are *orphaned*, not pruned: they stay in the cluster as they were
//! applied (annotated with the sync's name), as `kubectl delete` of a Flux Kustomization
//! with `prune: false` or an Argo CD Application without its finalizer leaves them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::Store;

use super::Context;
use super::driver::sync_id;
use super::source::{sync_dir, url_dir};
use crate::cluster::crd::LockstepSync;

/// How often the sweep runs while the controller reconciles.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Sweep every [`SWEEP_EVERY`], once the watch has listed the syncs. `namespace` is the
/// one the controller watches (`None`: all): cache directories of other namespaces are not
/// its to judge.
pub(super) async fn every(
    store: Store<LockstepSync>,
    ctx: Arc<Context>,
    namespace: Option<&str>,
) -> std::convert::Infallible {
    if store.wait_until_ready().await.is_err() {
        // The controller is gone (its writer dropped): nothing to judge against.
        return std::future::pending().await;
    }
    loop {
        sweep(&store, &ctx, namespace);
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

fn sweep(store: &Store<LockstepSync>, ctx: &Context, namespace: Option<&str>) {
    let syncs = store.state();
    let live: BTreeSet<_> = syncs.iter().map(|s| sync_id(s)).collect();
    for id in ctx.schedule.retain(|id| live.contains(id)) {
        ctx.metrics.forget(&id);
        tracing::info!(sync = %id, "LockstepSync deleted: its metrics and schedule are forgotten, its objects stay (orphaned)");
    }
    let wanted: BTreeSet<(String, String)> = syncs
        .iter()
        .map(|s| (sync_dir(&sync_id(s)), url_dir(&s.spec.url)))
        .collect();
    for stale in stale_dirs(&ctx.cache_dir, &wanted, namespace) {
        match std::fs::remove_dir_all(&stale) {
            Ok(()) => tracing::info!(dir = %stale.display(), "removed a Git cache no sync uses"),
            Err(e) => {
                tracing::warn!(dir = %stale.display(), error = %e, "cannot remove a stale Git cache")
            }
        }
    }
}

/// The cache directories under `root` that no wanted (sync directory, URL directory) pair
/// uses: whole sync directories of deleted syncs, and URL directories a live sync no longer
/// follows. Only directories of `namespace` (all when `None`) are judged; anything that is
/// not a `<namespace>_<name>` directory is left alone.
pub fn stale_dirs(
    root: &Path,
    wanted: &BTreeSet<(String, String)>,
    namespace: Option<&str>,
) -> Vec<std::path::PathBuf> {
    let mut stale = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return stale;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((ns, _)) = name.split_once('_') else {
            continue;
        };
        if namespace.is_some_and(|n| n != ns) || !entry.path().is_dir() {
            continue;
        }
        if !wanted.iter().any(|(dir, _)| *dir == name) {
            stale.push(entry.path());
            continue;
        }
        let Ok(urls) = std::fs::read_dir(entry.path()) else {
            continue;
        };
        for url in urls.flatten() {
            let url_name = url.file_name().to_string_lossy().into_owned();
            if !wanted.contains(&(name.clone(), url_name)) {
                stale.push(url.path());
            }
        }
    }
    stale.sort();
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_caches_no_live_sync_uses_are_stale() {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "shop_app/aaaa",
            "shop_app/bbbb",
            "shop_gone/cccc",
            "ops_other/dddd",
            "not-a-sync",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let wanted: BTreeSet<(String, String)> =
            [("shop_app".to_owned(), "aaaa".to_owned())].into();
        let names = |dirs: Vec<std::path::PathBuf>| -> Vec<String> {
            dirs.iter()
                .map(|d| d.strip_prefix(root.path()).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(
            names(stale_dirs(root.path(), &wanted, Some("shop"))),
            ["shop_app/bbbb", "shop_gone"]
        );
        assert_eq!(
            names(stale_dirs(root.path(), &wanted, None)),
            ["ops_other", "shop_app/bbbb", "shop_gone"]
        );
        assert!(stale_dirs(&root.path().join("absent"), &wanted, None).is_empty());
    }
}

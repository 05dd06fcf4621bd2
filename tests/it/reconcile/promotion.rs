//! Promotion across two clusters' worth of syncs on the real API server: `promote
//! --require-applied` asks the staging LockstepSync whether it runs the staging lockfile,
//! healthy, for the soak; the production sync with `spec.promotion` applies only a lockfile
//! promoted from a staging lockfile found verified in the repository's history, and refuses
//! one that resolved its tags itself (`PromotionUnverified`), keeping the promoted state.

use serde_json::json;

use super::{Repo, Sync, control_plane, deployment, refused};
use crate::cli::{code, run, stderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_applies_only_what_staging_ran_for_the_soak_and_was_promoted() {
    let repo = Repo::new();
    let host = repo.registry.host();
    let staging = repo.repo.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(
        staging.join("app.yaml"),
        deployment(&host, "api", "shop/api:1", 1),
    )
    .unwrap();
    repo.commit_all("a staging environment");
    let trust = repo.tmp.path().join("allowed_signers");
    std::fs::write(&trust, &repo.allowed_signers).unwrap();
    let out = run(
        &[
            "lock",
            staging.to_str().unwrap(),
            "--key",
            repo.key.to_str().unwrap(),
            "--environment",
            "staging",
            "--commit",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let kubeconfig = control_plane().kubeconfig.clone();
    let staging_sync = Sync::new("promo-staging", &repo).await;
    staging_sync
        .set_spec(json!({"path": "staging", "environment": "staging"}))
        .await;
    let require_applied = format!("{}/app", staging_sync.ns);
    let promote = |extra: &[&str]| {
        let mut args = vec![
            "promote",
            staging.to_str().unwrap(),
            repo.dir.to_str().unwrap(),
            "--from-allowed-signers",
            trust.to_str().unwrap(),
            "--from-environment",
            "staging",
            "--key",
            repo.key.to_str().unwrap(),
            "--require-applied",
            &require_applied,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args, &[])
    };
    // Staging has not applied it yet: refused, nothing written.
    let before = crate::cli::snapshot(&repo.dir);
    let out = promote(&["--commit"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "it has no status yet: the controller has not looked at it; nothing was promoted"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(crate::cli::snapshot(&repo.dir), before);

    let status = staging_sync.pass_until_ready().await;
    assert!(status.applied_at.is_some(), "{status:#?}");
    // Applied and healthy, but not for an hour.
    let out = promote(&["--soak", "1h", "--commit"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("less than the soak of 1h"),
        "{}",
        stderr(&out)
    );
    assert_eq!(crate::cli::snapshot(&repo.dir), before);
    let out = promote(&["--commit"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "LockstepSync {require_applied} runs this lockfile (generation 1"
        )),
        "{}",
        stderr(&out)
    );
    let promoted = repo.head();

    // Production requires the promotion from staging.
    let prod = Sync::new("promo-prod", &repo).await;
    prod.set_spec(json!({"promotion": {"from": "staging"}}))
        .await;
    let status = prod.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(promoted.as_str()));
    let pinned = prod.image_of("api").await;

    // Someone locks production straight from the registry after the tag moved.
    repo.registry
        .push_image("shop/api", "1", b"api v1, rebuilt untested");
    let out = run(
        &[
            "lock",
            repo.dir.to_str().unwrap(),
            "--key",
            repo.key.to_str().unwrap(),
            "--commit",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let unpromoted = repo.head();
    let status = prod.pass().await;
    let message = refused(&status, "PromotionUnverified");
    assert!(
        message.contains(&unpromoted[..12])
            && message.contains("spec.promotion.from staging: the lockfile records no promotion"),
        "{message}"
    );
    assert_eq!(status.applied_commit.as_deref(), Some(promoted.as_str()));
    assert_eq!(prod.image_of("api").await, pinned);
}

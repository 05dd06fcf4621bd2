//! `spec.provenance` on the real API server: the cluster's own cosign keys (a ConfigMap)
//! must have signed every image the applied lockfile records, whatever the repository's
//! lockstep.toml says: a commit without such records is refused (`ProvenanceUnverified`),
//! the applied state kept; once the lockfile records a signature by that key, it applies.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::{Repo, Sync, refused};
use crate::provenance::{cosign, cosign_keys};

/// Sign the Deployment `api`'s pinned digest with cosign `key` (and `extra` flags).
fn sign_api(repo: &Repo, key: &std::path::Path, extra: &[&str]) {
    let pinned = repo.pinned_api_image();
    let (named, digest) = pinned.split_once('@').unwrap();
    let by_digest = format!("{}@{digest}", named.rsplit_once(':').unwrap().0);
    let mut args = vec!["sign", "--key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend([
        "--tlog-upload=false",
        "--allow-insecure-registry",
        &by_digest,
    ]);
    let out = cosign(repo.tmp.path(), &args);
    assert!(out.status.success(), "{}", crate::cli::stderr(&out));
}

/// A ConfigMap `name` in the sync's namespace holding `file`'s text under `key`.
async fn config_map(sync: &Sync, name: &str, key: &str, file: &std::path::Path) {
    Api::<ConfigMap>::namespaced(sync.client.clone(), &sync.ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": name},
                "data": {key: std::fs::read_to_string(file).unwrap()},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_cosign_keys_gate_what_is_applied() {
    let repo = Repo::new();
    let first = repo.head();
    let (key, public) = cosign_keys(repo.tmp.path(), "build");
    sign_api(&repo, &key, &[]);

    let sync = Sync::new("provenance", &repo).await;
    config_map(&sync, "cosign", "cosign.pub", &public).await;
    sync.set_spec(json!({"provenance": {"keys": {"kind": "ConfigMap", "name": "cosign", "key": "cosign.pub"}}}))
        .await;
    // The lockfile records no signature: refused, nothing applied.
    let status = sync.pass().await;
    let message = refused(&status, "ProvenanceUnverified");
    assert!(
        message.contains(&first[..12])
            && message.contains("the provenance rule at spec.provenance"),
        "{message}"
    );
    assert!(status.applied_commit.is_none());

    // The repository adopts a rule with the build key: the lock records the signature.
    repo.write(
        "lockstep.toml",
        &format!(
            "[[provenance]]\nimages = [\"{}/shop/*\"]\ncosign-keys = [\"cosign.pub\"]\n",
            repo.registry.host()
        ),
    );
    std::fs::copy(&public, repo.dir.join("cosign.pub")).unwrap();
    let signed = repo.lock_commit();
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(signed.as_str()));

    // The cluster now also requires an attestation by its key: the same commit, recording
    // none, is refused and the applied state kept...
    let kind = "https://lockstep.test/ci/v1";
    sync.set_spec(json!({"provenance": {
        "keys": {"kind": "ConfigMap", "name": "cosign", "key": "cosign.pub"},
        "attestations": [kind],
    }}))
    .await;
    let status = sync.pass().await;
    let message = refused(&status, "ProvenanceUnverified");
    assert!(
        message.contains(&format!("requires attestations of {kind}")),
        "{message}"
    );
    assert_eq!(status.applied_commit.as_deref(), Some(signed.as_str()));
    // ...until the build attests the digest and the repository's rule records it.
    let pinned = repo.pinned_api_image();
    let (named, digest) = pinned.split_once('@').unwrap();
    let by_digest = format!("{}@{digest}", named.rsplit_once(':').unwrap().0);
    let predicate = repo.tmp.path().join("predicate.json");
    std::fs::write(&predicate, "{}").unwrap();
    let out = cosign(
        repo.tmp.path(),
        &[
            "attest",
            "--key",
            key.to_str().unwrap(),
            "--type",
            kind,
            "--predicate",
            predicate.to_str().unwrap(),
            "--tlog-upload=false",
            "--allow-insecure-registry",
            &by_digest,
        ],
    );
    assert!(out.status.success(), "{}", crate::cli::stderr(&out));
    repo.write(
        "lockstep.toml",
        &format!(
            "[[provenance]]\nimages = [\"{}/shop/*\"]\ncosign-keys = [\"cosign.pub\"]\nattestations = [\"{kind}\"]\n",
            repo.registry.host()
        ),
    );
    let attested = repo.lock_commit();
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(attested.as_str()));
}

/// `spec.provenance.certificate`: the cluster's own CA and identity; the commit applies only
/// once the lockfile records a signature made with a certificate from that CA for that
/// identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_ca_and_identity_gate_what_is_applied() {
    let repo = Repo::new();
    let first = repo.head();
    let issuer = "https://issuer.example.com";
    let (ca, key, leaf) =
        crate::provenance::test_ca(repo.tmp.path(), "pki", "ci@example.com", issuer);
    sign_api(
        &repo,
        &key,
        &[
            "--certificate",
            leaf.to_str().unwrap(),
            "--certificate-chain",
            ca.to_str().unwrap(),
        ],
    );

    let sync = Sync::new("provenance-cert", &repo).await;
    config_map(&sync, "ca", "ca.pem", &ca).await;
    sync.set_spec(json!({"provenance": {"certificate": {
        "roots": {"kind": "ConfigMap", "name": "ca", "key": "ca.pem"},
        "identity": "ci@example.com",
        "issuer": issuer,
    }}}))
    .await;
    let status = sync.pass().await;
    let message = refused(&status, "ProvenanceUnverified");
    assert!(message.contains(&first[..12]), "{message}");
    assert!(status.applied_commit.is_none());

    repo.write(
        "lockstep.toml",
        &format!(
            "[[provenance]]\nimages = [\"{}/shop/*\"]\ncosign-certificate = {{ roots = [\"ca.pem\"], identity = \"ci@example.com\", issuer = \"{issuer}\" }}\n",
            repo.registry.host()
        ),
    );
    std::fs::copy(&ca, repo.dir.join("ca.pem")).unwrap();
    // Certificates are judged at the lockfile's creation time: lock now (Repo::lock_commit
    // fixes SOURCE_DATE_EPOCH in 2023, before this certificate existed).
    repo.commit_all("a certificate rule");
    let out = crate::cli::run(
        &[
            "lock",
            repo.dir.to_str().unwrap(),
            "--key",
            repo.key.to_str().unwrap(),
            "--commit",
        ],
        &[],
    );
    assert_eq!(crate::cli::code(&out), 0, "{}", crate::cli::stderr(&out));
    let signed = repo.head();
    let status = sync.pass_until_ready().await;
    assert_eq!(status.applied_commit.as_deref(), Some(signed.as_str()));
}

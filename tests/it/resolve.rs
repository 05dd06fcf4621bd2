//! Resolution against the real Distribution registry (plain, basic auth, TLS), and against
//! `MockLyingRegistry` for lies, transient errors and stalls.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lockstep::model::{Digest, ImageRef};
use lockstep::resolve::oci::{OciRegistry, OciSettings};
use lockstep::resolve::{
    DOCKER_LIST, NoProgress, OCI_INDEX, OCI_MANIFEST, PlatformDigest, Registry, ResolveError,
    Resolved, resolve_all,
};

use crate::harness::{MockBehavior, MockLyingRegistry, RegistryOptions, TestRegistry};

/// Settings that ignore the developer's own Docker config.
fn settings() -> OciSettings {
    OciSettings {
        docker_config_dir: Some("/nonexistent/lockstep-test".into()),
        ..OciSettings::default()
    }
}

fn client(settings: OciSettings) -> OciRegistry {
    lockstep::resolve::install_crypto_provider();
    OciRegistry::new(settings).unwrap()
}

fn img(s: &str) -> ImageRef {
    ImageRef::parse(s).unwrap()
}

fn platforms(list: &[(String, Digest)]) -> Vec<PlatformDigest> {
    list.iter()
        .map(|(platform, digest)| PlatformDigest {
            platform: platform.clone(),
            digest: digest.clone(),
        })
        .collect()
}

/// The registry's manifest and ping requests (not blob uploads) after the first `skip`.
fn reads_since(registry: &TestRegistry, skip: usize) -> Vec<String> {
    registry
        .requests()
        .into_iter()
        .skip(skip)
        .filter(|r| r.starts_with("HEAD ") || r.starts_with("GET "))
        .collect()
}

#[tokio::test]
async fn oci_image_resolves_to_its_manifest_digest() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let digest = reg.push_image("team/app", "v1", b"oci-image");
    let oci = client(settings());
    let got = oci
        .resolve(&img(&format!("{}/team/app:v1", reg.host())), None)
        .await
        .unwrap();
    assert_eq!(
        got,
        Resolved {
            digest,
            media_type: OCI_MANIFEST.into(),
            platforms: vec![]
        }
    );
}

#[tokio::test]
async fn oci_index_is_pinned_by_the_index_digest_with_each_platform_recorded() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let (index, children) = reg.push_index("multi", "v1", b"oci-index");
    let got = client(settings())
        .resolve(&img(&format!("{}/multi:v1", reg.host())), None)
        .await
        .unwrap();
    assert_eq!(got.digest, index);
    assert_eq!(got.media_type, OCI_INDEX);
    assert_eq!(got.platforms, platforms(&children));
    assert_eq!(
        got.platforms
            .iter()
            .map(|p| p.platform.as_str())
            .collect::<Vec<_>>(),
        ["linux/amd64", "linux/arm64/v8"]
    );
}

#[tokio::test]
async fn docker_manifest_list_is_pinned_by_the_list_digest_not_the_amd64_child() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let (list, children) = reg.push_docker_list("legacy", "v1", b"docker-list");
    let got = client(settings())
        .resolve(&img(&format!("{}/legacy:v1", reg.host())), None)
        .await
        .unwrap();
    assert_eq!(got.digest, list);
    assert_ne!(
        got.digest, children[0].1,
        "Distribution hands out the amd64 child when asked with Docker v2 only"
    );
    assert_eq!(got.media_type, DOCKER_LIST);
    assert_eq!(got.platforms, platforms(&children));
}

#[tokio::test]
async fn a_digest_only_reference_is_confirmed_and_typed() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let digest = reg.push_image("app", "v1", b"by-digest");
    let (index, children) = reg.push_index("app", "multi", b"by-digest-index");
    let oci = client(settings());
    let got = oci
        .resolve(&img(&format!("{}/app@{digest}", reg.host())), None)
        .await
        .unwrap();
    assert_eq!(
        got,
        Resolved {
            digest,
            media_type: OCI_MANIFEST.into(),
            platforms: vec![]
        }
    );
    let got = oci
        .resolve(&img(&format!("{}/app@{index}", reg.host())), None)
        .await
        .unwrap();
    assert_eq!(
        got,
        Resolved {
            digest: index,
            media_type: OCI_INDEX.into(),
            platforms: platforms(&children)
        }
    );

    let absent = Digest::of(b"never pushed");
    let err = oci
        .resolve(&img(&format!("{}/app@{absent}", reg.host())), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("digest not found"), "{err}");
}

#[tokio::test]
async fn a_missing_tag_is_a_clear_error() {
    let reg = TestRegistry::start(RegistryOptions::default());
    reg.push_image("app", "v1", b"present");
    let reference = img(&format!("{}/app:v2", reg.host()));
    let err = client(settings())
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::NotFound { reference: r, .. } if *r == reference),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{reference}: tag not found in registry {}", reg.host())
    );
}

#[tokio::test]
async fn a_deleted_tag_is_not_found() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let digest = reg.push_image("app", "gone", b"deleted");
    let reference = img(&format!("{}/app:gone", reg.host()));
    let oci = client(settings());
    assert_eq!(oci.resolve(&reference, None).await.unwrap().digest, digest);
    reg.delete_manifest("app", &digest);
    let err = oci.resolve(&reference, None).await.unwrap_err();
    assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn every_failing_reference_is_reported_together() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let good = reg.push_image("app", "v1", b"good");
    let host = reg.host();
    let refs: Vec<ImageRef> = ["app:v1", "app:nope", "other:v1", "app:v1", "third:x"]
        .iter()
        .map(|r| img(&format!("{host}/{r}")))
        .collect();
    let oci = client(settings());
    let err = resolve_all(&oci, refs, &BTreeMap::new(), 4, &NoProgress)
        .await
        .unwrap_err();
    let failed: Vec<String> = err.failures.iter().map(|(r, _)| r.to_string()).collect();
    assert_eq!(
        failed,
        [
            format!("{host}/app:nope"),
            format!("{host}/other:v1"),
            format!("{host}/third:x")
        ]
    );
    let text = err.to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    for (line, reference) in text.lines().zip(&failed) {
        assert!(
            line.starts_with(&format!("{reference}: tag not found")),
            "{line}"
        );
    }
    // The good one alone resolves fine.
    let ok = resolve_all(
        &oci,
        vec![img(&format!("{host}/app:v1"))],
        &BTreeMap::new(),
        4,
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(ok.values().next().unwrap().digest, good);
}

#[tokio::test]
async fn an_unchanged_lock_costs_one_head_per_reference() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let host = reg.host();
    reg.push_image("a", "v1", b"noop-a");
    reg.push_index("b", "v1", b"noop-b");
    reg.push_docker_list("c", "v1", b"noop-c");
    let refs: Vec<ImageRef> = ["a:v1", "b:v1", "c:v1", "b:v1"]
        .iter()
        .map(|r| img(&format!("{host}/{r}")))
        .collect();

    let before = reg.requests().len();
    let cold = resolve_all(
        &client(settings()),
        refs.clone(),
        &BTreeMap::new(),
        8,
        &NoProgress,
    )
    .await
    .unwrap();
    let mut cold_reads = reads_since(&reg, before);
    cold_reads.sort();
    let index_get = |repo: &str| {
        format!(
            "GET /v2/{repo}/manifests/{}",
            cold[&img(&format!("{host}/{repo}:v1"))].digest
        )
    };
    let mut expected = vec![
        "GET /v2/".to_owned(),
        "HEAD /v2/a/manifests/v1".to_owned(),
        "HEAD /v2/b/manifests/v1".to_owned(),
        "HEAD /v2/c/manifests/v1".to_owned(),
        index_get("b"),
        index_get("c"),
    ];
    expected.sort();
    assert_eq!(
        cold_reads, expected,
        "cold: a ping, a HEAD each, and the indexes fetched by digest"
    );

    // A new run, as `lockstep lock` would start, with the lockfile's entries as `known`.
    let before = reg.requests().len();
    let warm = resolve_all(&client(settings()), refs, &cold, 8, &NoProgress)
        .await
        .unwrap();
    assert_eq!(warm, cold);
    let mut warm_reads = reads_since(&reg, before);
    warm_reads.sort();
    assert_eq!(
        warm_reads,
        [
            "GET /v2/",
            "HEAD /v2/a/manifests/v1",
            "HEAD /v2/b/manifests/v1",
            "HEAD /v2/c/manifests/v1"
        ],
        "no-op: one ping per registry and exactly one request per distinct reference"
    );
}

#[tokio::test]
async fn a_moved_tag_is_not_answered_from_the_old_lock() {
    let reg = TestRegistry::start(RegistryOptions::default());
    let reference = img(&format!("{}/b:v1", reg.host()));
    reg.push_index("b", "v1", b"first");
    let oci = client(settings());
    let old = oci.resolve(&reference, None).await.unwrap();
    let (new_index, new_children) = reg.push_index("b", "v1", b"second");
    let got = oci.resolve(&reference, Some(&old)).await.unwrap();
    assert_eq!(got.digest, new_index);
    assert_eq!(got.platforms, platforms(&new_children));
    assert_ne!(got.platforms, old.platforms);
}

#[tokio::test]
async fn basic_auth_comes_from_the_docker_config() {
    let reg = TestRegistry::start(RegistryOptions {
        auth: Some(("ci".into(), "hunter2".into())),
        tls: false,
        ..RegistryOptions::default()
    });
    let digest = reg.push_image("private/app", "v1", b"auth");
    let reference = img(&format!("{}/private/app:v1", reg.host()));

    let config = tempfile::tempdir().unwrap();
    let write_config = |password: &str| {
        let json =
            serde_json::json!({"auths": {reg.host(): {"username": "ci", "password": password}}});
        std::fs::write(config.path().join("config.json"), json.to_string()).unwrap();
    };
    write_config("hunter2");
    let with_config = OciSettings {
        docker_config_dir: Some(config.path().into()),
        ..OciSettings::default()
    };
    let got = client(with_config.clone())
        .resolve(&reference, None)
        .await
        .unwrap();
    assert_eq!(got.digest, digest);

    // No credentials: refused, with the registry's code and a hint.
    let err = client(settings())
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("UNAUTHORIZED") && text.contains(&format!("docker login {}", reg.host())),
        "{text}"
    );

    write_config("wrong");
    let err = client(with_config)
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn tls_with_the_extra_ca_is_trusted() {
    let reg = TestRegistry::start(RegistryOptions {
        auth: Some(("u".into(), "p".into())),
        tls: true,
        ..RegistryOptions::default()
    });
    let digest = reg.push_image("app", "v1", b"tls");
    let config = tempfile::tempdir().unwrap();
    let json = serde_json::json!({"auths": {reg.host(): {"username": "u", "password": "p"}}});
    std::fs::write(config.path().join("config.json"), json.to_string()).unwrap();
    let oci = client(OciSettings {
        extra_ca_pem: reg.ca_pem(),
        docker_config_dir: Some(config.path().into()),
        ..OciSettings::default()
    });
    let got = oci
        .resolve(&img(&format!("{}/app:v1", reg.host())), None)
        .await
        .unwrap();
    assert_eq!(got.digest, digest);
}

#[tokio::test]
async fn tls_without_the_ca_fails_clearly_and_never_falls_back_to_http() {
    let reg = TestRegistry::start(RegistryOptions {
        auth: None,
        tls: true,
        ..RegistryOptions::default()
    });
    reg.push_image("app", "v1", b"tls-untrusted");
    let reference = img(&format!("{}/app:v1", reg.host()));
    let err = client(settings())
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("is not trusted"), "{err}");
    let before = reg.requests().len();
    let err = client(settings())
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::Tls { .. }), "{err:?}");
    assert_eq!(
        reads_since(&reg, before),
        Vec::<String>::new(),
        "nothing was asked, in the clear or otherwise"
    );
}

#[tokio::test]
async fn a_registry_whose_digest_header_lies_is_rejected() {
    let mock = MockLyingRegistry::start(MockBehavior::LyingDigest);
    let err = client(settings())
        .resolve(&img(&format!("{}/app:v1", mock.host())), None)
        .await
        .unwrap_err();
    match &err {
        ResolveError::DigestMismatch {
            claimed, computed, ..
        } => {
            assert_eq!(*computed, mock.served_digest());
            assert_ne!(claimed, computed);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[tokio::test]
async fn a_registry_substituting_an_index_is_rejected() {
    let mock = MockLyingRegistry::start(MockBehavior::LyingIndex);
    let err = client(settings())
        .resolve(&img(&format!("{}/app:v1", mock.host())), None)
        .await
        .unwrap_err();
    let ResolveError::DigestMismatch {
        claimed, computed, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_ne!(claimed, computed);
    let requests = mock.requests();
    assert!(
        requests.contains(&format!("GET /v2/app/manifests/{claimed}")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_succeed() {
    let mock = MockLyingRegistry::start(MockBehavior::FailThenServe {
        status: 500,
        retry_after_secs: None,
        times: 2,
    });
    let started = Instant::now();
    let got = client(settings())
        .resolve(&img(&format!("{}/app:v1", mock.host())), None)
        .await
        .unwrap();
    assert_eq!(got.digest, mock.served_digest());
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "200 ms + 400 ms of backoff"
    );
    assert_eq!(
        mock.requests(),
        [
            "GET /v2/",
            "HEAD /v2/app/manifests/v1",
            "HEAD /v2/app/manifests/v1",
            "HEAD /v2/app/manifests/v1"
        ]
    );
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_time_asked() {
    let mock = MockLyingRegistry::start(MockBehavior::FailThenServe {
        status: 429,
        retry_after_secs: Some(1),
        times: 1,
    });
    let started = Instant::now();
    let got = client(settings())
        .resolve(&img(&format!("{}/app:v1", mock.host())), None)
        .await
        .unwrap();
    assert_eq!(got.digest, mock.served_digest());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_the_retries() {
    let mock = MockLyingRegistry::start(MockBehavior::FailThenServe {
        status: 503,
        retry_after_secs: None,
        times: 100,
    });
    let oci = client(OciSettings {
        max_retries: 1,
        ..settings()
    });
    let err = oci
        .resolve(&img(&format!("{}/app:v1", mock.host())), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::Registry { status: 503, .. }),
        "{err:?}"
    );
    // A HEAD answer has no body, so no registry message to quote.
    assert_eq!(
        err.to_string(),
        format!(
            "{}/app:v1: registry {} answered HTTP 503",
            mock.host(),
            mock.host()
        )
    );
    let heads = mock
        .requests()
        .iter()
        .filter(|r| r.starts_with("HEAD"))
        .count();
    assert_eq!(
        heads, 2,
        "one try and one retry, and no GET after a transient failure"
    );
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn a_stalled_registry_times_out_clearly() {
    let mock = MockLyingRegistry::start(MockBehavior::Stall);
    let oci = client(OciSettings {
        timeout: Duration::from_millis(300),
        max_retries: 1,
        ..settings()
    });
    let reference = img(&format!("{}/app:v1", mock.host()));
    let started = Instant::now();
    let err = oci.resolve(&reference, None).await.unwrap_err();
    assert!(
        matches!(err, ResolveError::Timeout { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        err.to_string(),
        format!(
            "{reference}: registry {} did not answer within 300ms (2 attempts)",
            mock.host()
        )
    );
}

#[tokio::test]
async fn a_stopped_registry_is_an_error() {
    let reg = TestRegistry::start(RegistryOptions::default());
    reg.push_image("app", "v1", b"stopped");
    reg.push_image("app", "v2", b"stopped-2");
    let oci = client(settings());
    oci.resolve(&img(&format!("{}/app:v1", reg.host())), None)
        .await
        .unwrap();
    reg.stop();
    // Mid-run (the scheme already decided) and in a new run alike.
    let reference = img(&format!("{}/app:v2", reg.host()));
    for oci in [oci, client(settings())] {
        let err = oci.resolve(&reference, None).await.unwrap_err();
        assert!(matches!(err, ResolveError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "{reference}: cannot reach registry {}",
                reg.host()
            )),
            "{err}"
        );
    }
}

#[tokio::test]
async fn bearer_tokens_are_fetched_with_the_docker_config_credentials() {
    let reg = TestRegistry::start_with_token_auth("robot", "t0ken-pass");
    let digest = reg.push_image("team/app", "v1", b"bearer");
    let (index, _) = reg.push_index("team/multi", "v1", b"bearer-index");
    let config = tempfile::tempdir().unwrap();
    let json =
        serde_json::json!({"auths": {reg.host(): {"username": "robot", "password": "t0ken-pass"}}});
    std::fs::write(config.path().join("config.json"), json.to_string()).unwrap();
    let oci = client(OciSettings {
        docker_config_dir: Some(config.path().into()),
        ..settings()
    });
    let refs = vec![
        img(&format!("{}/team/app:v1", reg.host())),
        img(&format!("{}/team/multi:v1", reg.host())),
    ];
    let got = resolve_all(&oci, refs.clone(), &BTreeMap::new(), 4, &NoProgress)
        .await
        .unwrap();
    assert_eq!(got[&refs[0]].digest, digest);
    assert_eq!(got[&refs[1]].digest, index);

    // Without credentials the token service refuses, and the error says where to log in.
    let err = client(settings())
        .resolve(&refs[0], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ResolveError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("the token service refused") && text.contains("docker login"),
        "{text}"
    );
}

#[tokio::test]
async fn connections_closed_mid_request_are_retried() {
    let mock = MockLyingRegistry::start(MockBehavior::HangUpThenServe { times: 2 });
    let got = client(settings())
        .resolve(&img(&format!("{}/app:v1", mock.host())), None)
        .await
        .unwrap();
    assert_eq!(got.digest, mock.served_digest());
    let heads = mock
        .requests()
        .iter()
        .filter(|r| r.starts_with("HEAD"))
        .count();
    assert_eq!(heads, 3, "two hang-ups, then the answer");
}

#[tokio::test]
async fn an_oversized_manifest_is_refused() {
    // Distribution itself refuses to store manifests over 4 MiB, so only a mock sends one.
    let mock = MockLyingRegistry::start(MockBehavior::Oversized);
    let reference = img(&format!("{}/big:v1", mock.host()));
    let err = client(settings())
        .resolve(&reference, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ResolveError::TooLarge { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{reference}: the manifest is larger than 4194304 bytes")
    );
}

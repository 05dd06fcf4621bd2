//! Building and pushing small test images with oci-client: shared by the integration tests
//! (through the harness) and by `examples/push_images.rs` (the demo and the benchmark).

#![allow(dead_code)]

use std::time::Duration;

use lockstep::model::Digest;
use lockstep::resolve::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

/// Pushes images to one registry. Every method is synchronous (a private runtime in a scoped
/// thread), so sync tests and `#[tokio::test]`s can both use it.
#[derive(Clone, Debug)]
pub struct Pusher {
    /// `HOST:PORT`.
    pub host: String,
    /// The CA of a TLS registry; plain HTTP when `None`.
    pub ca_pem: Option<Vec<u8>>,
    /// Basic auth credentials.
    pub auth: Option<(String, String)>,
}

/// The two platforms of [`TestRegistry::push_index`] and [`TestRegistry::push_docker_list`].
const PLATFORMS: [(&str, &str, Option<&str>); 2] =
    [("linux", "amd64", None), ("linux", "arm64", Some("v8"))];

pub fn base_url(host: &str, tls: bool) -> String {
    format!("{}://{host}", if tls { "https" } else { "http" })
}

pub fn http_client(ca_pem: Option<&[u8]>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = ca_pem {
        builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem).unwrap());
    }
    builder.build().unwrap()
}

/// `len` bytes that look random, derived from `seed`.
pub fn pseudo_random(seed: &[u8], len: usize) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(seed).to_vec();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = sha2::Sha256::digest(&block).to_vec();
    }
    out.truncate(len);
    out
}

/// Run `future` to completion on a private runtime in a scoped thread, so the harness
/// works from sync tests and from inside a tokio runtime alike.
pub fn run<T: Send>(future: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(future)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Pusher {
    /// Push a single-platform OCI image (random-looking layer and config derived from
    /// `seed`: same seed, same digest) as `repo:tag`; returns the manifest digest.
    pub fn push_image(&self, repo: &str, tag: &str, seed: &[u8]) -> Digest {
        run(async {
            let client = self.oci_client().await;
            self.push_platform_manifest(&client, repo, Some(tag), seed, PLATFORMS[0], false)
                .await
        })
    }

    /// Push an OCI image index of linux/amd64 and linux/arm64/v8 images as `repo:tag`;
    /// returns the index digest and each `(platform, manifest digest)`.
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        seed: &[u8],
    ) -> (Digest, Vec<(String, Digest)>) {
        self.push_multi(repo, tag, seed, false)
    }

    /// Like [`Self::push_index`] but a Docker manifest list of Docker schema 2 manifests.
    pub fn push_docker_list(
        &self,
        repo: &str,
        tag: &str,
        seed: &[u8],
    ) -> (Digest, Vec<(String, Digest)>) {
        self.push_multi(repo, tag, seed, true)
    }

    /// Delete a manifest by digest (its tags go with it).
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base_url());
        let client = self.http_client();
        let status = run(async {
            let mut req = client.delete(&url);
            if let Some((u, p)) = &self.auth {
                req = req.basic_auth(u, Some(p));
            }
            req.send().await.expect("DELETE manifest").status()
        });
        assert_eq!(status.as_u16(), 202, "DELETE {url}");
    }

    /// Whether the registry has the manifest `digest` in `repo` (HEAD with every manifest
    /// type in `Accept`).
    pub fn has_manifest(&self, repo: &str, digest: &str) -> bool {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base_url());
        let client = self.http_client();
        let status = run(async {
            let mut req = client
                .head(&url)
                .header("Accept", lockstep::resolve::MANIFEST_MEDIA_TYPES.join(", "));
            if let Some((u, p)) = &self.auth {
                req = req.basic_auth(u, Some(p));
            }
            req.send().await.expect("HEAD manifest").status()
        });
        status.is_success()
    }

    fn push_multi(
        &self,
        repo: &str,
        tag: &str,
        seed: &[u8],
        docker: bool,
    ) -> (Digest, Vec<(String, Digest)>) {
        run(async {
            let client = self.oci_client().await;
            let (index_type, child_type) = if docker {
                (DOCKER_LIST, DOCKER_MANIFEST)
            } else {
                (OCI_INDEX, OCI_MANIFEST)
            };
            let mut entries = Vec::new();
            let mut platforms = Vec::new();
            for platform in PLATFORMS {
                let (os, arch, variant) = platform;
                let mut child_seed = seed.to_vec();
                child_seed.extend_from_slice(format!("/{os}/{arch}").as_bytes());
                let (bytes, digest) = self
                    .push_platform_manifest_bytes(
                        &client,
                        repo,
                        None,
                        &child_seed,
                        platform,
                        docker,
                    )
                    .await;
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = v.into();
                }
                entries.push(serde_json::json!({
                    "mediaType": child_type, "digest": digest.as_str(), "size": bytes.len(), "platform": p,
                }));
                let name = match variant {
                    Some(v) => format!("{os}/{arch}/{v}"),
                    None => format!("{os}/{arch}"),
                };
                platforms.push((name, digest));
            }
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": index_type, "manifests": entries});
            let bytes = serde_json::to_vec(&index).unwrap();
            let reference = Reference::with_tag(self.host.clone(), repo.to_owned(), tag.to_owned());
            client
                .push_manifest_raw(&reference, bytes.clone(), index_type.parse().unwrap())
                .await
                .expect("push index");
            (Digest::of(&bytes), platforms)
        })
    }

    async fn push_platform_manifest(
        &self,
        client: &Client,
        repo: &str,
        tag: Option<&str>,
        seed: &[u8],
        platform: (&str, &str, Option<&str>),
        docker: bool,
    ) -> Digest {
        self.push_platform_manifest_bytes(client, repo, tag, seed, platform, docker)
            .await
            .1
    }

    /// Push layer, config and manifest; by tag, or by digest when `tag` is `None`.
    async fn push_platform_manifest_bytes(
        &self,
        client: &Client,
        repo: &str,
        tag: Option<&str>,
        seed: &[u8],
        (os, arch, variant): (&str, &str, Option<&str>),
        docker: bool,
    ) -> (Vec<u8>, Digest) {
        let blob_ref = Reference::with_tag(self.host.clone(), repo.to_owned(), "blobs".to_owned());
        let layer = pseudo_random(seed, 512);
        let layer_digest = Digest::of(&layer);
        let mut config = serde_json::json!({
            "architecture": arch, "os": os,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest.as_str()]},
            "config": {},
        });
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = Digest::of(&config);
        let (pushed_layer, pushed_config) = futures::join!(
            client.push_blob(&blob_ref, layer.clone(), layer_digest.as_str()),
            client.push_blob(&blob_ref, config.clone(), config_digest.as_str()),
        );
        pushed_layer.expect("push layer");
        pushed_config.expect("push config");
        let (manifest_type, config_type, layer_type) = if docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar",
            )
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "digest": config_digest.as_str(), "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest.as_str(), "size": layer.len()}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = Digest::of(&bytes);
        let reference = match tag {
            Some(tag) => Reference::with_tag(self.host.clone(), repo.to_owned(), tag.to_owned()),
            None => Reference::with_digest(self.host.clone(), repo.to_owned(), digest.to_string()),
        };
        client
            .push_manifest_raw(&reference, bytes.clone(), manifest_type.parse().unwrap())
            .await
            .expect("push manifest");
        (bytes, digest)
    }

    fn base_url(&self) -> String {
        base_url(&self.host, self.ca_pem.is_some())
    }

    fn http_client(&self) -> reqwest::Client {
        http_client(self.ca_pem.as_deref())
    }

    async fn oci_client(&self) -> Client {
        let client = Client::new(ClientConfig {
            protocol: if self.ca_pem.is_some() {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            extra_root_certificates: self
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            // POST + PUT per blob instead of POST + PATCH + PUT.
            use_monolithic_push: true,
            ..ClientConfig::default()
        });
        // Anonymous is left unstored: oci-client would otherwise ping /v2/ before every
        // request (it never caches an anonymous "token").
        if let Some((u, p)) = &self.auth {
            let auth = RegistryAuth::Basic(u.clone(), p.clone());
            client.store_auth_if_needed(&self.host, &auth).await;
        }
        client
    }
}

//! The registry edge: resolves references over the OCI Distribution API. The only file that
//! imports `oci_client`.
//!
//! Requests: one `GET /v2/` per registry and run (it decides HTTPS or plain HTTP and which
//! authentication the registry wants), then per reference one manifest `HEAD` with all four
//! manifest types in `Accept`. A `GET` follows only when it must: no usable
//! `Docker-Content-Digest` on the `HEAD`, a `HEAD` refused for another reason than 404, or
//! an index whose platforms are not already known. Every `GET` body is hashed, and the hash
//! must equal both the digest the registry claimed and the one asked for.
//!
//! Why reqwest sends the manifest requests and not oci-client: `Client::fetch_manifest_digest`
//! sends the right `Accept` set but returns only the digest, not the `Content-Type`, so
//! telling an index from an image would cost a second request per reference;
//! `pull_manifest_raw` reads bodies without a size limit; and its errors drop the HTTP status
//! and `Retry-After` the retry policy needs. oci-client does the bearer-token dance
//! (`Client::auth`: challenge, realm, scope, token decoding), for registries that ask for it.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use super::{
    Cause, Failure, MANIFEST_MEDIA_TYPES, OCI_INDEX, OCI_MANIFEST, PlatformDigest, Registry,
    ResolveError, Resolved, RetryPolicy, is_index, parse_retry_after,
};
use crate::model::{DOCKER_HUB, Digest, ImageRef};

mod copy;
mod referrers;

pub use referrers::{Referrer, Wanted};

/// The largest manifest accepted. Real manifests and indexes are a few KiB; the OCI
/// distribution spec suggests registries refuse manifests above 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// The largest Helm chart archive fetched (charts are kilobytes; the biggest public ones a
/// few megabytes).
pub const MAX_CHART_BYTES: usize = 16 * 1024 * 1024;
/// The layer of a Helm chart pushed to an OCI registry.
const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// How much of an error answer is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
const DIGEST_HEADER: &str = "Docker-Content-Digest";
/// Docker Hub's API host and the key Docker stores its credentials under.
const DOCKER_HUB_API: &str = "index.docker.io";
const DOCKER_HUB_CREDENTIALS_KEY: &str = "https://index.docker.io/v1/";

/// How [`OciRegistry`] reaches registries.
#[derive(Clone, Debug)]
pub struct OciSettings {
    /// Registries (`HOST[:PORT]`, exactly as in references) that may be reached over plain
    /// HTTP when HTTPS fails. Loopback registries (localhost, 127.0.0.0/8, [::1]) always may.
    pub insecure_registries: Vec<String>,
    /// Extra trusted CA certificates (PEM), on top of the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Limit for one request (connect, answer and body).
    pub timeout: Duration,
    /// Retries of a request after a transient failure (see [`RetryPolicy`]).
    pub max_retries: u32,
    /// The directory holding Docker's `config.json`; `None` means `$DOCKER_CONFIG`, else
    /// `~/.docker`, as Docker does.
    pub docker_config_dir: Option<PathBuf>,
}

impl Default for OciSettings {
    fn default() -> Self {
        OciSettings {
            insecure_registries: Vec::new(),
            extra_ca_pem: None,
            timeout: Duration::from_secs(30),
            max_retries: RetryPolicy::default().max_retries,
            docker_config_dir: None,
        }
    }
}

/// The client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OciSetupError {
    /// The extra CA file is not PEM certificates.
    #[error("the CA file holds no usable PEM certificate")]
    BadCa(#[source] reqwest::Error),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A [`Registry`] that talks to real registries over the OCI Distribution API.
pub struct OciRegistry {
    http: reqwest::Client,
    settings: OciSettings,
    retry: RetryPolicy,
    docker_config: Option<PathBuf>,
    /// Per registry, decided once per run: scheme and authentication (or why it failed).
    endpoints: OnceEach<Arc<Endpoint>>,
    /// Per target registry and blob digest, the repository a copy put it in this run, so
    /// that other images mount it instead of uploading it again.
    blob_homes: copy::BlobHomes,
    /// Held while a copy rewrites a mirror's referrers tag (read, add, put), so that two
    /// referrers of one image copied at once do not drop each other.
    referrers_tags: tokio::sync::Mutex<()>,
}

impl OciRegistry {
    /// A registry client with `settings`.
    pub fn new(settings: OciSettings) -> Result<Self, OciSetupError> {
        // Cheap insurance: main installs it too, first thing.
        super::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("lockstep/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout);
        if let Some(pem) = &settings.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(OciSetupError::BadCa)?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(OciSetupError::Client)?;
        let docker_config = settings
            .docker_config_dir
            .clone()
            .or_else(default_docker_config_dir);
        let retry = RetryPolicy {
            max_retries: settings.max_retries,
            ..RetryPolicy::default()
        };
        Ok(OciRegistry {
            http,
            settings,
            retry,
            docker_config,
            endpoints: Mutex::default(),
            blob_homes: Mutex::default(),
            referrers_tags: tokio::sync::Mutex::default(),
        })
    }

    async fn resolve_inner(
        &self,
        image: &ImageRef,
        known: Option<&Resolved>,
    ) -> Result<Resolved, Trouble> {
        let endpoint = self.endpoint(image.registry()).await?;
        let auth = endpoint
            .authorization(image.repository(), Access::Pull)
            .await?;
        // A tag is resolved even when a digest is also given: the caller compares.
        let (reference, wanted) = match (image.tag(), image.digest()) {
            (Some(tag), _) => (tag.to_owned(), None),
            (None, Some(digest)) => (digest.to_string(), Some(digest)),
            (None, None) => ("latest".to_owned(), None),
        };
        let url = endpoint.manifest_url(image.repository(), &reference);

        let head = self.request(Method::HEAD, &url, &auth).await?;
        let status = head.status;
        if status == StatusCode::NOT_FOUND {
            return Err(Trouble::NotFound {
                code: String::new(),
                message: String::new(),
            });
        }
        if status.is_success() {
            let claimed = header_digest(&head.headers)?;
            let media_type = header_media_type(&head.headers);
            if let (Some(digest), Some(media_type)) = (claimed, media_type)
                && wanted.is_none_or(|w| *w == digest)
            {
                if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
                    return Err(Trouble::BadManifest(format!(
                        "unsupported media type {media_type:?}"
                    )));
                }
                if !is_index(&media_type) {
                    return Ok(Resolved {
                        digest,
                        media_type,
                        platforms: Vec::new(),
                    });
                }
                if let Some(known) =
                    known.filter(|k| k.digest == digest && k.media_type == media_type)
                {
                    return Ok(known.clone());
                }
                let index_url = endpoint.manifest_url(image.repository(), digest.as_str());
                return self.get_manifest(&index_url, &auth, Some(&digest)).await;
            }
        } else if super::is_retryable_status(status.as_u16()) {
            // Retries are spent already; a GET would only wait the same way again.
            return Err(status_trouble(status, &head.body));
        }
        // No usable digest header, or HEAD refused (401, 405, ...): the GET tells.
        self.get_manifest(&url, &auth, wanted).await
    }

    /// The Helm chart `image` names (an OCI artifact, as `helm push` stores it): the
    /// manifest's digest and the chart archive, each checked against its digest. A reference
    /// with a digest is fetched by it alone.
    pub async fn fetch_chart(&self, image: &ImageRef) -> Result<(Digest, Vec<u8>), ResolveError> {
        self.fetch_chart_inner(image)
            .await
            .map_err(|t| t.into_error(image, self.settings.timeout))
    }

    async fn fetch_chart_inner(&self, image: &ImageRef) -> Result<(Digest, Vec<u8>), Trouble> {
        // A pinned chart is fetched by its digest alone: its tag may have moved since.
        let digest_of_manifest = match image.digest() {
            Some(digest) => digest.clone(),
            None => self.resolve_inner(image, None).await?.digest,
        };
        let endpoint = self.endpoint(image.registry()).await?;
        let auth = endpoint
            .authorization(image.repository(), Access::Pull)
            .await?;
        let url = endpoint.manifest_url(image.repository(), digest_of_manifest.as_str());
        let manifest = self
            .fetch_manifest(&url, &auth, Some(&digest_of_manifest))
            .await?;
        if is_index(&manifest.media_type) {
            return Err(Trouble::BadManifest(
                "an image index, not a Helm chart".into(),
            ));
        }
        let layer = manifest
            .body
            .layers
            .iter()
            .find(|l| l.media_type.as_deref() == Some(HELM_CHART_LAYER))
            .ok_or_else(|| {
                Trouble::BadManifest(format!(
                    "no {HELM_CHART_LAYER} layer: not a Helm chart (push one with `helm push`)"
                ))
            })?;
        let digest: Digest = layer
            .digest
            .parse()
            .map_err(|_| Trouble::BadManifest(format!("bad layer digest {:?}", layer.digest)))?;
        let too_large =
            || Trouble::BadManifest(format!("the chart archive is over {MAX_CHART_BYTES} bytes"));
        if layer.size.is_some_and(|n| n > MAX_CHART_BYTES as u64) {
            return Err(too_large());
        }
        let blob_url = format!("{}/v2/{}/blobs/{digest}", endpoint.base, image.repository());
        let answer = self
            .request_limited(Method::GET, &blob_url, &auth, &|b| b, MAX_CHART_BYTES)
            .await
            .map_err(|t| match t {
                Trouble::TooLarge => too_large(),
                other => other,
            })?;
        if !answer.status.is_success() {
            return Err(status_trouble(answer.status, &answer.body));
        }
        let computed = Digest::of(&answer.body);
        if computed != digest {
            return Err(Trouble::DigestMismatch {
                claimed: digest,
                computed,
            });
        }
        Ok((digest_of_manifest, answer.body))
    }

    /// GET a manifest, hash it, check the hash against the claimed and wanted digests.
    async fn get_manifest(
        &self,
        url: &str,
        auth: &Auth,
        wanted: Option<&Digest>,
    ) -> Result<Resolved, Trouble> {
        let manifest = self.fetch_manifest(url, auth, wanted).await?;
        let platforms = if is_index(&manifest.media_type) {
            platforms(&manifest.body)?
        } else {
            Vec::new()
        };
        Ok(Resolved {
            digest: manifest.digest,
            media_type: manifest.media_type,
            platforms,
        })
    }

    /// GET a manifest's bytes; their hash must equal the digest the registry claimed and the
    /// one asked for.
    async fn fetch_manifest(
        &self,
        url: &str,
        auth: &Auth,
        wanted: Option<&Digest>,
    ) -> Result<FetchedManifest, Trouble> {
        let answer = self.request(Method::GET, url, auth).await?;
        if !answer.status.is_success() {
            return Err(status_trouble(answer.status, &answer.body));
        }
        let computed = Digest::of(&answer.body);
        if let Some(claimed) = header_digest(&answer.headers)?
            && claimed != computed
        {
            return Err(Trouble::DigestMismatch { claimed, computed });
        }
        if let Some(wanted) = wanted
            && *wanted != computed
        {
            return Err(Trouble::DigestMismatch {
                claimed: wanted.clone(),
                computed,
            });
        }
        let body = parse_manifest(&answer.body)?;
        let media_type = body_media_type(&body, header_media_type(&answer.headers))?;
        Ok(FetchedManifest {
            digest: computed,
            media_type,
            body,
            bytes: answer.body,
        })
    }

    /// The endpoint of `registry`, deciding scheme and authentication on first use.
    async fn endpoint(&self, registry: &str) -> Result<Arc<Endpoint>, Trouble> {
        let cell = {
            let mut endpoints = self.endpoints.lock().expect("endpoint map lock");
            endpoints.entry(registry.to_owned()).or_default().clone()
        };
        cell.get_or_init(|| self.connect(registry)).await.clone()
    }

    /// Ping `GET /v2/`: HTTPS first; plain HTTP when allowed and HTTPS failed for another
    /// reason than an untrusted certificate (a server that does not speak TLS). The answer's
    /// challenge tells which authentication the registry wants.
    async fn connect(&self, registry: &str) -> Result<Arc<Endpoint>, Trouble> {
        let host = if registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            registry
        };
        let (scheme, base, answer) = self.ping(registry, host).await?;
        let challenge = answer
            .headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let scheme_word = challenge
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let kind = if answer.status != StatusCode::UNAUTHORIZED {
            AuthKind::None
        } else if scheme_word == "bearer" {
            let auth = match self.credentials(registry).await? {
                Some((user, pass)) => RegistryAuth::Basic(user, pass),
                None => RegistryAuth::Anonymous,
            };
            AuthKind::Bearer {
                oci: self.token_client(scheme),
                auth,
                tokens: Mutex::default(),
            }
        } else {
            match self.credentials(registry).await? {
                Some((user, pass)) => AuthKind::Basic(user, pass),
                // Without credentials the manifest request gets the 401 and says so.
                None => AuthKind::None,
            }
        };
        Ok(Arc::new(Endpoint {
            host: host.to_owned(),
            base,
            kind,
        }))
    }

    /// `GET /v2/` over each scheme the registry may use, in order; a TLS failure or a timeout
    /// ends the search (falling back to plain HTTP then would hide it).
    async fn ping(
        &self,
        registry: &str,
        host: &str,
    ) -> Result<(&'static str, String, Answer), Trouble> {
        let mut last = None;
        for &scheme in schemes(registry, &self.settings.insecure_registries) {
            let base = format!("{scheme}://{host}");
            match self
                .request(Method::GET, &format!("{base}/v2/"), &Auth::Anonymous)
                .await
            {
                Ok(answer) => return Ok((scheme, base, answer)),
                Err(trouble @ (Trouble::Tls(_) | Trouble::Timeout { .. })) => return Err(trouble),
                Err(trouble) => last = Some(trouble),
            }
        }
        Err(last.expect("at least one scheme was tried"))
    }

    /// oci-client, used only for its token exchange, with the same CAs and timeouts.
    fn token_client(&self, scheme: &str) -> oci_client::Client {
        oci_client::Client::new(ClientConfig {
            protocol: if scheme == "http" {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: self
                .settings
                .extra_ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            read_timeout: Some(self.settings.timeout),
            connect_timeout: Some(self.settings.timeout),
            platform_resolver: None,
            ..ClientConfig::default()
        })
    }

    /// Docker's credentials for `registry`, from `config.json` (`auths`, `credHelpers`,
    /// `credsStore`). No config file, or no entry, means anonymous.
    async fn credentials(&self, registry: &str) -> Result<Option<(String, String)>, Trouble> {
        let Some(dir) = self.docker_config.clone() else {
            return Ok(None);
        };
        let key = if registry == DOCKER_HUB {
            DOCKER_HUB_CREDENTIALS_KEY.to_owned()
        } else {
            registry.to_owned()
        };
        // Credential helpers are programs: keep them off the async workers.
        tokio::task::spawn_blocking(move || docker_credentials(&dir, &key))
            .await
            .map_err(|e| Trouble::Credentials(format!("credential lookup failed: {e}")))?
    }

    /// Send one request, retrying transient failures per the policy. Returns the last
    /// answer whatever its status (the caller judges it), or the transport failure.
    async fn request(&self, method: Method, url: &str, auth: &Auth) -> Result<Answer, Trouble> {
        self.request_with(method, url, auth, &|b| b).await
    }

    /// [`Self::request`] with `customize` applied to every attempt (headers, a body).
    async fn request_with(
        &self,
        method: Method,
        url: &str,
        auth: &Auth,
        customize: Customize<'_>,
    ) -> Result<Answer, Trouble> {
        self.request_limited(method, url, auth, customize, MAX_MANIFEST_BYTES)
            .await
    }

    /// [`Self::request_with`], a successful answer's body read up to `limit` bytes.
    async fn request_limited(
        &self,
        method: Method,
        url: &str,
        auth: &Auth,
        customize: Customize<'_>,
        limit: usize,
    ) -> Result<Answer, Trouble> {
        // An answer whose status is not worth retrying, or the last one, is the caller's to
        // judge: it comes back as `Ok` whatever its status.
        let outcome = with_retries(&self.retry, |retry| {
            let method = method.clone();
            async move {
                match self.attempt(method, url, auth, customize, limit).await {
                    Ok(answer) if answer.status.is_success() => Ok(answer),
                    Ok(answer) => {
                        let retry_after = answer
                            .headers
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after);
                        let failure = Failure::Status {
                            status: answer.status.as_u16(),
                            retry_after,
                        };
                        Err((failure, Ok(answer)))
                    }
                    Err(AttemptError::TooLarge) => Err((Failure::Other, Err(Trouble::TooLarge))),
                    Err(AttemptError::Http(error)) => {
                        let failure = classify(&error);
                        Err((failure, Err(transport_trouble(error, failure, retry + 1))))
                    }
                }
            }
        })
        .await;
        outcome.or_else(|last| last)
    }

    /// One attempt: send, then read the body (bounded) for GETs.
    async fn attempt(
        &self,
        method: Method,
        url: &str,
        auth: &Auth,
        customize: Customize<'_>,
        success_limit: usize,
    ) -> Result<Answer, AttemptError> {
        let is_head = method == Method::HEAD;
        let builder = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPES.join(", "));
        let builder = customize(auth.apply(builder));
        let mut response = builder.send().await.map_err(AttemptError::Http)?;
        let status = response.status();
        let headers = response.headers().clone();
        let limit = if status.is_success() {
            success_limit
        } else {
            MAX_ERROR_BODY_BYTES
        };
        let mut body = Vec::new();
        if !is_head {
            let declared = headers
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if status.is_success() && declared.is_some_and(|n| n > limit as u64) {
                return Err(AttemptError::TooLarge);
            }
            while let Some(chunk) = response.chunk().await.map_err(AttemptError::Http)? {
                if body.len() + chunk.len() > limit {
                    if status.is_success() {
                        return Err(AttemptError::TooLarge);
                    }
                    // An error message that long is cut, not fatal.
                    break;
                }
                body.extend_from_slice(&chunk);
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl Registry for OciRegistry {
    async fn resolve(
        &self,
        image: &ImageRef,
        known: Option<&Resolved>,
    ) -> Result<Resolved, ResolveError> {
        self.resolve_inner(image, known)
            .await
            .map_err(|t| t.into_error(image, self.settings.timeout))
    }
}

/// Per key, one shared computation whose outcome (success or failure) the run reuses.
type OnceEach<T> = Mutex<HashMap<String, Arc<OnceCell<Result<T, Trouble>>>>>;

/// One registry as decided for this run.
struct Endpoint {
    /// The host requests go to (Docker Hub's API host for `docker.io`).
    host: String,
    /// `scheme://host`.
    base: String,
    kind: AuthKind,
}

enum AuthKind {
    None,
    Basic(String, String),
    /// Token per repository, fetched by oci-client once and shared by the run.
    Bearer {
        oci: oci_client::Client,
        auth: RegistryAuth,
        tokens: OnceEach<Auth>,
    },
}

impl Endpoint {
    fn manifest_url(&self, repository: &str, reference: &str) -> String {
        format!("{}/v2/{repository}/manifests/{reference}", self.base)
    }

    /// The `Authorization` to send for `repository`.
    async fn authorization(&self, repository: &str, access: Access) -> Result<Auth, Trouble> {
        match &self.kind {
            AuthKind::None => Ok(Auth::Anonymous),
            AuthKind::Basic(user, pass) => Ok(Auth::Basic(user.clone(), pass.clone())),
            AuthKind::Bearer { oci, auth, tokens } => {
                let cell = tokens
                    .lock()
                    .expect("token map lock")
                    .entry(format!("{access:?} {repository}"))
                    .or_default()
                    .clone();
                let operation = match access {
                    Access::Pull => oci_client::RegistryOperation::Pull,
                    Access::Push => oci_client::RegistryOperation::Push,
                };
                cell.get_or_init(|| async {
                    let reference = oci_client::Reference::with_tag(
                        self.host.clone(),
                        repository.to_owned(),
                        "latest".to_owned(),
                    );
                    match oci.auth(&reference, auth, operation).await {
                        Ok(Some(token)) => Ok(Auth::Bearer(token)),
                        // The registry fell back to basic authentication.
                        Ok(None) => Ok(match auth {
                            RegistryAuth::Basic(u, p) => Auth::Basic(u.clone(), p.clone()),
                            _ => Auth::Anonymous,
                        }),
                        Err(e) => Err(token_trouble(e)),
                    }
                })
                .await
                .clone()
            }
        }
    }
}

/// What goes into one request's `Authorization` header.
#[derive(Clone)]
enum Auth {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Auth {
    fn apply(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::Anonymous => builder,
            Auth::Basic(user, pass) => builder.basic_auth(user, Some(pass)),
            Auth::Bearer(token) => builder.bearer_auth(token),
        }
    }
}

/// Runs `attempt` (given the 0-based retry number) until it succeeds, or until `policy` says
/// its failure is not worth another try or the retries are spent: then its error. The one
/// retry loop of the registry client, for single requests and for whole blob transfers.
pub(crate) async fn with_retries<T, E, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, (Failure, E)>>,
{
    let mut retry = 0;
    loop {
        match attempt(retry).await {
            Ok(value) => return Ok(value),
            Err((failure, error)) => match policy.delay(retry, &failure) {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
                None => return Err(error),
            },
        }
    }
}

/// Adds headers or a body to each attempt of a request.
type Customize<'a> = &'a (dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync);

/// Pull (resolve, check, the source of a copy) or push (the target of a copy): bearer
/// tokens are scoped to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Pull,
    Push,
}

/// A manifest as received: its bytes (hashed), digest, media type and the parsed fields.
struct FetchedManifest {
    digest: Digest,
    media_type: String,
    body: ManifestBody,
    bytes: Vec<u8>,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

enum AttemptError {
    Http(reqwest::Error),
    TooLarge,
}

/// A failure before the reference is attached ([`Trouble::into_error`] attaches it).
#[derive(Clone, Debug)]
enum Trouble {
    NotFound {
        code: String,
        message: String,
    },
    Unauthorized {
        status: u16,
        code: String,
        message: String,
    },
    Status {
        status: u16,
        code: String,
        message: String,
    },
    Timeout {
        attempts: u32,
    },
    Tls(Cause),
    Connect(Cause),
    DigestMismatch {
        claimed: Digest,
        computed: Digest,
    },
    BadDigestHeader(String),
    TooLarge,
    BadManifest(String),
    Credentials(String),
}

impl Trouble {
    fn into_error(self, image: &ImageRef, timeout: Duration) -> ResolveError {
        let reference = image.clone();
        let registry = image.registry().to_owned();
        match self {
            Trouble::NotFound { code, message } => ResolveError::NotFound {
                reference,
                registry,
                code,
                message,
            },
            Trouble::Unauthorized {
                status,
                code,
                message,
            } => ResolveError::Unauthorized {
                reference,
                registry,
                status,
                code,
                message,
            },
            Trouble::Status {
                status,
                code,
                message,
            } => ResolveError::Registry {
                reference,
                registry,
                status,
                code,
                message,
            },
            Trouble::Timeout { attempts } => ResolveError::Timeout {
                reference,
                registry,
                timeout,
                attempts,
            },
            Trouble::Tls(source) => ResolveError::Tls {
                reference,
                registry,
                source,
            },
            Trouble::Connect(source) => ResolveError::Connect {
                reference,
                registry,
                source,
            },
            Trouble::DigestMismatch { claimed, computed } => ResolveError::DigestMismatch {
                reference,
                claimed,
                computed,
            },
            Trouble::BadDigestHeader(value) => ResolveError::BadDigestHeader {
                reference,
                registry,
                value,
            },
            Trouble::TooLarge => ResolveError::TooLarge {
                reference,
                limit: MAX_MANIFEST_BYTES,
            },
            Trouble::BadManifest(reason) => ResolveError::BadManifest { reference, reason },
            Trouble::Credentials(reason) => ResolveError::Credentials {
                reference,
                registry,
                reason,
            },
        }
    }
}

/// The trouble an error status means, with the registry's error code and message.
fn status_trouble(status: StatusCode, body: &[u8]) -> Trouble {
    let (code, message) = error_envelope(body);
    match status {
        StatusCode::NOT_FOUND => Trouble::NotFound { code, message },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Trouble::Unauthorized {
            status: status.as_u16(),
            code,
            message,
        },
        _ => Trouble::Status {
            status: status.as_u16(),
            code,
            message,
        },
    }
}

/// The first error of a Distribution error body (`{"errors":[{"code","message"}]}`), or
/// the start of the body as text when it is not one.
fn error_envelope(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<EnvelopeError>,
    }
    #[derive(serde::Deserialize)]
    struct EnvelopeError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body)
        && let Some(first) = envelope.errors.into_iter().next()
    {
        return (first.code, first.message);
    }
    let text: String = String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(200)
        .collect();
    (String::new(), text)
}

/// A transport failure that was not (or no longer) retried.
fn transport_trouble(error: reqwest::Error, failure: Failure, attempts: u32) -> Trouble {
    if failure == Failure::Timeout {
        return Trouble::Timeout { attempts };
    }
    if is_certificate_error(&error) {
        return Trouble::Tls(Arc::new(error));
    }
    Trouble::Connect(Arc::new(error))
}

fn token_trouble(error: oci_client::errors::OciDistributionError) -> Trouble {
    use oci_client::errors::OciDistributionError as E;
    match error {
        E::AuthenticationFailure(message) => Trouble::Unauthorized {
            status: 401,
            code: String::new(),
            message: format!("the token service refused: {}", message.trim()),
        },
        E::RequestError(e) => {
            let failure = classify(&e);
            transport_trouble(e, failure, 1)
        }
        other => Trouble::Unauthorized {
            status: 401,
            code: String::new(),
            message: other.to_string(),
        },
    }
}

/// What kind of failure a transport error is, for the retry policy.
fn classify(error: &reqwest::Error) -> Failure {
    if error.is_timeout() {
        return Failure::Timeout;
    }
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
            ) {
                return Failure::ConnectionReset;
            }
            if io.kind() == K::TimedOut {
                return Failure::Timeout;
            }
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return Failure::ConnectionReset;
        }
        cause = e.source();
    }
    Failure::Other
}

/// Whether the failure is a TLS certificate the client did not accept (as opposed to a
/// server that does not speak TLS at all, where plain HTTP may be tried).
fn is_certificate_error(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::InvalidCertRevocationList(_)
            );
        }
        // io::Error::source skips the error it wraps; look inside explicitly.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_certificate_error(inner)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The schemes to try for `registry`, in order: HTTPS only, unless it is a loopback
/// registry or listed as insecure, which may fall back to plain HTTP.
fn schemes(registry: &str, insecure: &[String]) -> &'static [&'static str] {
    if is_loopback(registry) || insecure.iter().any(|r| r == registry) {
        &["https", "http"]
    } else {
        &["https"]
    }
}

/// localhost, 127.0.0.0/8 and [::1], with or without a port: Docker reaches these over
/// plain HTTP when HTTPS fails.
fn is_loopback(registry: &str) -> bool {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest
            .split_once(']')
            .and_then(|(ip, _)| ip.parse::<Ipv6Addr>().ok())
            .is_some_and(|ip| ip.is_loopback());
    }
    let host = registry.split_once(':').map_or(registry, |(h, _)| h);
    host == "localhost" || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// The `Docker-Content-Digest` header: absent is `None`; present but not sha256 is an error.
fn header_digest(headers: &HeaderMap) -> Result<Option<Digest>, Trouble> {
    let Some(value) = headers.get(DIGEST_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Trouble::BadDigestHeader(String::from_utf8_lossy(value.as_bytes()).into()))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim()
        .parse::<Digest>()
        .map(Some)
        .map_err(|_| Trouble::BadDigestHeader(text.to_owned()))
}

/// The `Content-Type` without parameters, lowercased.
fn header_media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media_type = value.split(';').next()?.trim().to_ascii_lowercase();
    (!media_type.is_empty()).then_some(media_type)
}

/// The fields of a manifest or index that resolution looks at.
#[derive(serde::Deserialize)]
struct ManifestBody {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
    config: Option<serde_json::Value>,
    /// An image manifest's layers (what a mirror copies).
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// The manifest this one is about (OCI 1.1: a signature's or attestation's image).
    subject: Option<Descriptor>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

/// A content descriptor: a blob's digest and, for non-distributable layers, where it lives.
#[derive(serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    /// The blob's size in bytes, as the (hashed) manifest declares it.
    size: Option<u64>,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    digest: String,
    platform: Option<Platform>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

fn parse_manifest(body: &[u8]) -> Result<ManifestBody, Trouble> {
    serde_json::from_slice(body)
        .map_err(|e| Trouble::BadManifest(format!("not a JSON manifest: {e}")))
}

/// The media type of a received manifest: its own `mediaType` field (covered by the digest),
/// else the `Content-Type` when it is a manifest type, else what its fields say (OCI allows
/// leaving `mediaType` out).
fn body_media_type(body: &ManifestBody, header: Option<String>) -> Result<String, Trouble> {
    let media_type = match (&body.media_type, header) {
        (Some(own), _) => own.clone(),
        (None, Some(h)) if MANIFEST_MEDIA_TYPES.contains(&h.as_str()) => h,
        (None, _) if body.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, _) if body.config.is_some() => OCI_MANIFEST.to_owned(),
        (None, other) => {
            return Err(Trouble::BadManifest(format!(
                "cannot tell the manifest type (Content-Type {other:?})"
            )));
        }
    };
    if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(Trouble::BadManifest(format!(
            "unsupported media type {media_type:?}"
        )));
    }
    Ok(media_type)
}

/// Each platform entry of an index, in index order. Entries without a platform (not
/// runnable images, e.g. some attestations) are left out.
fn platforms(body: &ManifestBody) -> Result<Vec<PlatformDigest>, Trouble> {
    let entries = body.manifests.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for entry in entries {
        let Some(p) = &entry.platform else { continue };
        let digest = entry.digest.parse::<Digest>().map_err(|_| {
            Trouble::BadManifest(format!(
                "index entry digest {:?} is not sha256",
                entry.digest
            ))
        })?;
        let platform = match p.variant.as_deref().filter(|v| !v.is_empty()) {
            Some(variant) => format!("{}/{}/{variant}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        };
        out.push(PlatformDigest { platform, digest });
    }
    Ok(out)
}

/// `$DOCKER_CONFIG`, else `~/.docker`.
fn default_docker_config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker")))
}

/// Username and password for `key` from `dir/config.json` (blocking: may run a helper).
fn docker_credentials(dir: &Path, key: &str) -> Result<Option<(String, String)>, Trouble> {
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    let path = dir.join("config.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Trouble::Credentials(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    match docker_credential::get_credential_from_reader(bytes.as_slice(), key) {
        Ok(DockerCredential::UsernamePassword(user, pass)) => Ok(Some((user, pass))),
        Ok(DockerCredential::IdentityToken(_)) => Err(Trouble::Credentials(format!(
            "{} holds an identity token for {key}, which lockstep does not support; use a username and password (or token) instead",
            path.display()
        ))),
        Err(E::NoCredentialConfigured) => Ok(None),
        Err(e) => Err(Trouble::Credentials(format!("{}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::DOCKER_LIST;

    #[test]
    fn loopback_registries() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
            "128.0.0.1",
            "[::1",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        let insecure = vec!["10.0.0.5:5000".to_owned()];
        assert_eq!(schemes("127.0.0.1:5000", &insecure), ["https", "http"]);
        assert_eq!(schemes("localhost", &[]), ["https", "http"]);
        assert_eq!(schemes("10.0.0.5:5000", &insecure), ["https", "http"]);
        assert_eq!(
            schemes("10.0.0.5:5001", &insecure),
            ["https"],
            "the port is part of the name"
        );
        assert_eq!(schemes("ghcr.io", &insecure), ["https"]);
    }

    #[test]
    fn registry_error_envelopes() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"v9"}}]}"#;
        assert_eq!(
            error_envelope(body),
            ("MANIFEST_UNKNOWN".into(), "manifest unknown".into())
        );
        assert_eq!(
            error_envelope(b"  upstream connect error \n"),
            (String::new(), "upstream connect error".into())
        );
        match status_trouble(StatusCode::NOT_FOUND, body) {
            Trouble::NotFound { code, .. } => assert_eq!(code, "MANIFEST_UNKNOWN"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            status_trouble(StatusCode::FORBIDDEN, b""),
            Trouble::Unauthorized { status: 403, .. }
        ));
        assert!(matches!(
            status_trouble(StatusCode::BAD_GATEWAY, b""),
            Trouble::Status { status: 502, .. }
        ));
    }

    #[test]
    fn media_type_prefers_the_hashed_body() {
        let body = |s: &str| parse_manifest(s.as_bytes()).unwrap();
        let docker = body(&format!(
            r#"{{"mediaType":"{DOCKER_LIST}","manifests":[]}}"#
        ));
        assert_eq!(
            body_media_type(&docker, Some("application/json".into())).unwrap(),
            DOCKER_LIST
        );
        let bare_index = body(r#"{"schemaVersion":2,"manifests":[]}"#);
        assert_eq!(body_media_type(&bare_index, None).unwrap(), OCI_INDEX);
        let bare_image = body(r#"{"schemaVersion":2,"config":{},"layers":[]}"#);
        assert_eq!(
            body_media_type(&bare_image, Some(OCI_MANIFEST.into())).unwrap(),
            OCI_MANIFEST
        );
        let schema1 =
            body(r#"{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#);
        assert!(matches!(
            body_media_type(&schema1, None),
            Err(Trouble::BadManifest(_))
        ));
        assert!(matches!(
            parse_manifest(b"<html>"),
            Err(Trouble::BadManifest(_))
        ));
    }

    #[test]
    fn platforms_in_index_order_with_variants() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = Digest::of(b"c");
        let json = format!(
            r#"{{"manifests":[
                {{"digest":"{a}","platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"digest":"{b}","platform":{{"os":"linux","architecture":"amd64"}}}},
                {{"digest":"{c}"}}
            ]}}"#
        );
        let got = platforms(&parse_manifest(json.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            got,
            vec![
                PlatformDigest {
                    platform: "linux/arm64/v8".into(),
                    digest: a
                },
                PlatformDigest {
                    platform: "linux/amd64".into(),
                    digest: b
                },
            ]
        );
        let bad = r#"{"manifests":[{"digest":"sha512:00","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert!(matches!(
            platforms(&parse_manifest(bad.as_bytes()).unwrap()),
            Err(Trouble::BadManifest(_))
        ));
    }

    #[test]
    fn digest_header_must_be_sha256() {
        let mut h = HeaderMap::new();
        assert!(header_digest(&h).unwrap().is_none());
        let d = Digest::of(b"x");
        h.insert(DIGEST_HEADER, d.as_str().parse().unwrap());
        assert_eq!(header_digest(&h).unwrap(), Some(d));
        h.insert(DIGEST_HEADER, "sha512:abcd".parse().unwrap());
        assert!(
            matches!(header_digest(&h), Err(Trouble::BadDigestHeader(v)) if v == "sha512:abcd")
        );
        h.insert(
            CONTENT_TYPE,
            "application/vnd.oci.image.index.v1+json; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert_eq!(header_media_type(&h).as_deref(), Some(OCI_INDEX));
    }

    #[test]
    fn docker_config_credentials() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            docker_credentials(dir.path(), "r.io").unwrap(),
            None,
            "no config file: anonymous"
        );
        // "alice:s3cret" in base64.
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"r.io":{"auth":"YWxpY2U6czNjcmV0"}}}"#,
        )
        .unwrap();
        assert_eq!(
            docker_credentials(dir.path(), "r.io").unwrap(),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(docker_credentials(dir.path(), "other.io").unwrap(), None);
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"r.io":{"identitytoken":"t"}}}"#,
        )
        .unwrap();
        assert!(
            matches!(docker_credentials(dir.path(), "r.io"), Err(Trouble::Credentials(m)) if m.contains("identity token"))
        );
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers":{"r.io":"lockstep-no-such-helper"}}"#,
        )
        .unwrap();
        assert!(matches!(
            docker_credentials(dir.path(), "r.io"),
            Err(Trouble::Credentials(_))
        ));
    }
}

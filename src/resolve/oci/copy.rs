//! `lockstep mirror`'s copy over the Distribution API: a manifest by digest (an index with
//! every child manifest, whatever its platform), each blob mounted across repositories when
//! the target registry already holds it, else streamed from the source to the target and
//! hashed on the way. The top manifest is pushed under [`protecting_tag`].
//!
//! Order: blobs before the manifest that names them, children before their index, so a
//! registry never holds a manifest whose content is missing, and an interrupted copy leaves
//! nothing a puller could half-use. Re-running skips whatever is there already (one `HEAD`
//! per image when it is complete).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::{
    Access, Auth, Endpoint, ManifestBody, OciRegistry, Trouble, classify, header_digest,
    status_trouble, transport_trouble, with_retries,
};
use crate::mirror::{Copied, CopyJob};
use crate::model::{Digest, ImageRef};
use crate::resolve::Copier;
use crate::resolve::Failure;
use crate::resolve::{ResolveError, is_index};

/// Per `"<target registry> <blob digest>"`, the repository one copy of this run put the blob
/// in (or why it failed). The first image to need a blob places it; the others wait, then
/// mount it from there.
pub(super) type BlobHomes =
    Mutex<HashMap<String, Arc<OnceCell<Result<(String, Placed), ResolveError>>>>>;

/// A blob transfer may take long (layers of gigabytes); the client's per-request timeout is
/// for manifests, not for them.
const BLOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// How a blob came to be in the target repository.
#[derive(Clone, Copy, Debug)]
pub(super) enum Placed {
    Present,
    Mounted,
    Uploaded(u64),
}

/// One end of a copy: the repository, its endpoint and the authorization for it.
struct Side {
    image: ImageRef,
    endpoint: Arc<Endpoint>,
    auth: Auth,
}

impl Side {
    fn repository(&self) -> &str {
        self.image.repository()
    }

    fn manifest_url(&self, reference: &str) -> String {
        self.endpoint.manifest_url(self.repository(), reference)
    }

    fn blob_url(&self, digest: &Digest) -> String {
        format!(
            "{}/v2/{}/blobs/{digest}",
            self.endpoint.base,
            self.repository()
        )
    }

    fn uploads_url(&self) -> String {
        format!(
            "{}/v2/{}/blobs/uploads/",
            self.endpoint.base,
            self.repository()
        )
    }

    /// Attach `registry/repository@digest` of this side to a failure.
    fn fail(&self, digest: &Digest, timeout: Duration) -> impl Fn(Trouble) -> ResolveError {
        let at = self
            .image
            .pin(digest.clone())
            .image()
            .by_digest()
            .expect("a pinned reference has a digest");
        move |trouble| trouble.into_error(&at, timeout)
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Copier for OciRegistry {
    async fn copy(&self, job: &CopyJob) -> Result<Copied, ResolveError> {
        let timeout = self.settings.timeout;
        let digest = job.digest();
        let source = self
            .side(&job.source, Access::Pull)
            .await
            .map_err(|t| t.into_error(&job.source, timeout))?;
        let target = self
            .side(&job.target, Access::Push)
            .await
            .map_err(|t| t.into_error(&job.target, timeout))?;
        let tag = job.tag.as_deref();
        let fail = target.fail(digest, timeout);
        let mut copied = Copied::default();
        // A referrer (no tag) is copied again even when there, so that its listing in the
        // mirror's referrers tag is repaired after an interrupted run.
        if let Some(tag) = tag {
            let head = self
                .request(Method::HEAD, &target.manifest_url(tag), &target.auth)
                .await
                .map_err(&fail)?;
            if head.status.is_success()
                && header_digest(&head.headers).map_err(&fail)?.as_ref() == Some(digest)
            {
                copied.images_present = 1;
                return Ok(copied);
            }
        }
        self.copy_manifest(&source, &target, digest, tag, true, &mut copied)
            .await?;
        copied.images_copied = 1;
        Ok(copied)
    }
}

impl OciRegistry {
    async fn side(&self, image: &ImageRef, access: Access) -> Result<Side, Trouble> {
        let endpoint = self.endpoint(image.registry()).await?;
        let auth = endpoint.authorization(image.repository(), access).await?;
        Ok(Side {
            image: image.clone(),
            endpoint,
            auth,
        })
    }

    /// Copy the manifest `digest` and everything it names; push it under `tag` when given,
    /// else by digest (a child the target has already is skipped; the top of a copy is not,
    /// so that a referrer already there is still listed in the referrers tag). A manifest
    /// with a `subject` (a referrer) is pushed by digest whatever `tag` says: the tag is
    /// another signature's to hold.
    fn copy_manifest<'a>(
        &'a self,
        src: &'a Side,
        dst: &'a Side,
        digest: &'a Digest,
        tag: Option<&'a str>,
        top: bool,
        copied: &'a mut Copied,
    ) -> BoxFuture<'a, Result<(), ResolveError>> {
        Box::pin(async move {
            let timeout = self.settings.timeout;
            let dst_fail = dst.fail(digest, timeout);
            if tag.is_none() && !top {
                let head = self
                    .request(Method::HEAD, &dst.manifest_url(digest.as_str()), &dst.auth)
                    .await
                    .map_err(&dst_fail)?;
                if head.status.is_success() {
                    return Ok(());
                }
            }
            let src_fail = src.fail(digest, timeout);
            let manifest = self
                .fetch_manifest(&src.manifest_url(digest.as_str()), &src.auth, Some(digest))
                .await
                .map_err(&src_fail)?;
            if is_index(&manifest.media_type) {
                for child in children(&manifest.body).map_err(&src_fail)? {
                    self.copy_manifest(src, dst, &child, None, false, copied)
                        .await?;
                }
            } else {
                for (blob, size) in blobs(&manifest.body).map_err(&src_fail)? {
                    self.copy_blob(src, dst, &blob, size, copied).await?;
                }
            }
            let tag = tag.filter(|_| manifest.body.subject.is_none());
            let media_type = manifest.media_type.as_str();
            let bytes = &manifest.bytes;
            let put = self
                .request_with(
                    Method::PUT,
                    &dst.manifest_url(tag.unwrap_or(digest.as_str())),
                    &dst.auth,
                    &|b| b.header(CONTENT_TYPE, media_type).body(bytes.clone()),
                )
                .await
                .map_err(&dst_fail)?;
            if !put.status.is_success() {
                return Err(dst_fail(status_trouble(put.status, &put.body)));
            }
            if let Some(stored) = header_digest(&put.headers).map_err(&dst_fail)?
                && stored != *digest
            {
                return Err(dst_fail(Trouble::DigestMismatch {
                    claimed: stored,
                    computed: digest.clone(),
                }));
            }
            copied.manifests_pushed += 1;
            // A referrer (a signature or attestation naming its image as `subject`): a
            // registry with the referrers API says so with `OCI-Subject`; on one without,
            // the referrers tag must list it, as OCI 1.1 asks of clients.
            if let Some(subject) = &manifest.body.subject
                && !put.headers.contains_key("oci-subject")
            {
                let subject = subject.digest.parse::<Digest>().map_err(|_| {
                    src_fail(Trouble::BadManifest("the subject is not sha256".into()))
                })?;
                self.list_in_referrers_tag(dst, &subject, &manifest, digest)
                    .await
                    .map_err(&dst_fail)?;
            }
            Ok(())
        })
    }

    /// Add `manifest` (pushed as `digest`) to the index under `subject`'s referrers tag at
    /// `dst`, creating it when missing; nothing when it is listed already.
    async fn list_in_referrers_tag(
        &self,
        dst: &Side,
        subject: &Digest,
        manifest: &super::FetchedManifest,
        digest: &Digest,
    ) -> Result<(), Trouble> {
        let _one_at_a_time = self.referrers_tags.lock().await;
        let url = dst.manifest_url(&super::referrers::referrers_tag(subject));
        let mut index = match self.fetch_manifest(&url, &dst.auth, None).await {
            Ok(existing) if is_index(&existing.media_type) => {
                serde_json::from_slice::<serde_json::Value>(&existing.bytes)
                    .map_err(|e| Trouble::BadManifest(e.to_string()))?
            }
            Ok(_) => {
                return Err(Trouble::BadManifest(
                    "the referrers tag holds something else than an index; left as it is".into(),
                ));
            }
            Err(Trouble::NotFound { .. }) => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": super::OCI_INDEX,
                "manifests": [],
            }),
            Err(other) => return Err(other),
        };
        let Some(entries) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) else {
            return Err(Trouble::BadManifest(
                "the referrers tag holds an index without `manifests`".into(),
            ));
        };
        if entries
            .iter()
            .any(|e| e.get("digest").and_then(|d| d.as_str()) == Some(digest.as_str()))
        {
            return Ok(());
        }
        let mut entry = serde_json::json!({
            "mediaType": manifest.media_type,
            "digest": digest.as_str(),
            "size": manifest.bytes.len(),
        });
        if let Some(kind) = super::referrers::artifact_type(manifest) {
            entry["artifactType"] = kind.into();
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
            && let Some(annotations) = value.get("annotations")
        {
            entry["annotations"] = annotations.clone();
        }
        entries.push(entry);
        let body = serde_json::to_vec(&index).expect("JSON");
        let put = self
            .request_with(Method::PUT, &url, &dst.auth, &|b| {
                b.header(CONTENT_TYPE, super::OCI_INDEX).body(body.clone())
            })
            .await?;
        if !put.status.is_success() {
            return Err(status_trouble(put.status, &put.body));
        }
        Ok(())
    }

    /// Put one blob into the target repository, once per run and registry: the first image
    /// that needs it places it, later ones mount it from there.
    async fn copy_blob(
        &self,
        src: &Side,
        dst: &Side,
        digest: &Digest,
        size: Option<u64>,
        copied: &mut Copied,
    ) -> Result<(), ResolveError> {
        let cell = self
            .blob_homes
            .lock()
            .expect("blob map lock")
            .entry(format!("{} {digest}", dst.image.registry()))
            .or_default()
            .clone();
        let ran = AtomicBool::new(false);
        let home = cell
            .get_or_init(|| async {
                ran.store(true, Ordering::SeqCst);
                self.place_blob(src, dst, digest, size, None)
                    .await
                    .map(|placed| (dst.repository().to_owned(), placed))
            })
            .await
            .clone();
        let placed = match home {
            Ok((_, placed)) if ran.load(Ordering::SeqCst) => placed,
            Ok((repository, _)) if repository == dst.repository() => Placed::Present,
            Ok((repository, _)) => {
                self.place_blob(src, dst, digest, size, Some(&repository))
                    .await?
            }
            Err(e) if ran.load(Ordering::SeqCst) => return Err(e),
            // Another image's attempt failed; this one tries on its own.
            Err(_) => self.place_blob(src, dst, digest, size, None).await?,
        };
        match placed {
            Placed::Present => copied.blobs_present += 1,
            Placed::Mounted => copied.blobs_mounted += 1,
            Placed::Uploaded(bytes) => {
                copied.blobs_uploaded += 1;
                copied.bytes_uploaded += bytes;
            }
        }
        Ok(())
    }

    /// Make the target repository hold `digest`: there already, mounted from `mount_from`
    /// (or from the source repository when both are on one registry), else uploaded.
    async fn place_blob(
        &self,
        src: &Side,
        dst: &Side,
        digest: &Digest,
        size: Option<u64>,
        mount_from: Option<&str>,
    ) -> Result<Placed, ResolveError> {
        let dst_fail = dst.fail(digest, self.settings.timeout);
        let head = self
            .request(Method::HEAD, &dst.blob_url(digest), &dst.auth)
            .await
            .map_err(&dst_fail)?;
        if head.status.is_success() {
            return Ok(Placed::Present);
        }
        let same_registry = src.image.registry() == dst.image.registry();
        let from = mount_from.or(same_registry.then(|| src.repository()));
        let mut session = None;
        if let Some(from) = from {
            let url = format!("{}?mount={digest}&from={from}", dst.uploads_url());
            let answer = self
                .request_with(Method::POST, &url, &dst.auth, &|b| {
                    b.header(CONTENT_LENGTH, 0)
                })
                .await
                .map_err(&dst_fail)?;
            match answer.status {
                StatusCode::CREATED => return Ok(Placed::Mounted),
                // The registry would not mount, and opened an upload instead.
                StatusCode::ACCEPTED => session = upload_location(dst, &answer.headers),
                _ => {}
            }
        }
        // The streamed upload cannot be replayed request by request: a transient failure
        // retries the whole transfer, in a new upload session, per the retry policy.
        let session = Mutex::new(session);
        with_retries(&self.retry, |_| async {
            let opened = session.lock().expect("session lock").take();
            let url = match opened {
                Some(url) => url,
                None => self
                    .open_upload(dst, digest)
                    .await
                    .map_err(|e| (Failure::Other, e))?,
            };
            self.upload(src, dst, digest, size, url).await
        })
        .await
    }

    /// Open an upload session in the target repository: its URL.
    async fn open_upload(&self, dst: &Side, digest: &Digest) -> Result<reqwest::Url, ResolveError> {
        let dst_fail = dst.fail(digest, self.settings.timeout);
        let answer = self
            .request_with(Method::POST, &dst.uploads_url(), &dst.auth, &|b| {
                b.header(CONTENT_LENGTH, 0)
            })
            .await
            .map_err(&dst_fail)?;
        if answer.status != StatusCode::ACCEPTED {
            return Err(dst_fail(status_trouble(answer.status, &answer.body)));
        }
        upload_location(dst, &answer.headers).ok_or_else(|| {
            dst_fail(Trouble::BadManifest(
                "the upload answer has no usable Location".into(),
            ))
        })
    }

    /// Stream the blob from the source into the upload session, hashing it on the way: bytes
    /// that do not hash to `digest`, or more bytes than the manifest's `size` declares, end
    /// the upload with an error before it can complete.
    async fn upload(
        &self,
        src: &Side,
        dst: &Side,
        digest: &Digest,
        size: Option<u64>,
        mut session: reqwest::Url,
    ) -> Result<Placed, (Failure, ResolveError)> {
        let timeout = self.settings.timeout;
        let src_fail = |t| (Failure::Other, src.fail(digest, timeout)(t));
        // Transport failures and error statuses say whether retrying may help.
        let transport = |side: &Side, e: reqwest::Error| {
            let failure = classify(&e);
            (
                failure,
                side.fail(digest, timeout)(transport_trouble(e, failure, 1)),
            )
        };
        let status_failure = |side: &Side, status: StatusCode, body: &[u8]| {
            let failure = Failure::Status {
                status: status.as_u16(),
                retry_after: None,
            };
            (
                failure,
                side.fail(digest, timeout)(status_trouble(status, body)),
            )
        };
        let response = src
            .auth
            .apply(self.http.get(src.blob_url(digest)))
            .timeout(BLOB_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport(src, e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(status_failure(src, status, &body));
        }
        let length = match (response.content_length(), size) {
            (Some(sent), Some(declared)) if sent != declared => {
                return Err(src_fail(Trouble::BadManifest(format!(
                    "the registry sends {sent} bytes for a blob the manifest declares as {declared}"
                ))));
            }
            (sent, declared) => sent.or(declared),
        };
        let (body, hashed) = hashing(response, digest, length);
        session
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let mut put = dst
            .auth
            .apply(self.http.put(session))
            .timeout(BLOB_TIMEOUT)
            .header(CONTENT_TYPE, "application/octet-stream");
        if let Some(length) = length {
            put = put.header(CONTENT_LENGTH, length);
        }
        let sent = put.body(body).send().await;
        let bytes = judge_sent(&hashed, digest, length).map_err(src_fail)?;
        let answer = sent.map_err(|e| transport(dst, e))?;
        let status = answer.status();
        if status != StatusCode::CREATED {
            let body = answer.bytes().await.unwrap_or_default();
            return Err(status_failure(dst, status, &body));
        }
        Ok(Placed::Uploaded(bytes))
    }
}

/// What the stream of a blob has seen: the hash so far, the bytes so far, and the digest once
/// the stream has ended.
type Hashed = Arc<Mutex<(Sha256, u64, Option<Digest>)>>;

/// The blob's body as a stream that hashes every chunk on its way to the target, ends in an
/// error past `length` bytes, and, at its end, in an error unless it hashed to `digest`.
fn hashing(
    response: reqwest::Response,
    digest: &Digest,
    length: Option<u64>,
) -> (reqwest::Body, Hashed) {
    let hashed: Hashed = Arc::new(Mutex::new((Sha256::new(), 0u64, None)));
    let feed = hashed.clone();
    let end = hashed.clone();
    let expected = digest.clone();
    let body = response
        .bytes_stream()
        .map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let mut state = feed.lock().expect("hash lock");
            state.0.update(&chunk);
            state.1 += chunk.len() as u64;
            if length.is_some_and(|limit| state.1 > limit) {
                return Err(std::io::Error::other("the blob is longer than declared"));
            }
            Ok(chunk)
        })
        .chain(futures::stream::once(async move {
            let mut state = end.lock().expect("hash lock");
            let computed = Digest::from_hasher(state.0.clone());
            state.2 = Some(computed.clone());
            if computed == expected {
                Ok(bytes::Bytes::new())
            } else {
                Err(std::io::Error::other(format!(
                    "the blob hashes to {computed}, not {expected}"
                )))
            }
        }));
    (reqwest::Body::wrap_stream(body), hashed)
}

/// The bytes sent, unless they were more than `length` or a complete blob that does not hash
/// to `digest`. The stream's last element may not be polled once `Content-Length` bytes are
/// out, so the hash of every byte sent is judged here either way.
fn judge_sent(hashed: &Hashed, digest: &Digest, length: Option<u64>) -> Result<u64, Trouble> {
    let (hasher, bytes, ended) = hashed.lock().expect("hash lock").clone();
    if length.is_some_and(|limit| bytes > limit) {
        return Err(Trouble::BadManifest(format!(
            "the blob {digest} is longer than the {} bytes declared",
            length.unwrap_or_default()
        )));
    }
    let complete = ended.is_some() || length == Some(bytes);
    let computed = ended.unwrap_or_else(|| Digest::from_hasher(hasher));
    if complete && computed != *digest {
        return Err(Trouble::DigestMismatch {
            claimed: digest.clone(),
            computed,
        });
    }
    Ok(bytes)
}

/// The upload session URL from a `Location` header (absolute, or relative to the registry).
fn upload_location(dst: &Side, headers: &reqwest::header::HeaderMap) -> Option<reqwest::Url> {
    let location = headers.get(LOCATION)?.to_str().ok()?;
    reqwest::Url::parse(&dst.endpoint.base)
        .ok()?
        .join(location)
        .ok()
}

fn parse_digest(text: &str, what: &str) -> Result<Digest, Trouble> {
    text.parse()
        .map_err(|_| Trouble::BadManifest(format!("{what} digest {text:?} is not sha256")))
}

/// Every manifest an index names, whatever its platform (attestations included): a mirror
/// is a copy, not a selection.
fn children(body: &ManifestBody) -> Result<Vec<Digest>, Trouble> {
    body.manifests
        .iter()
        .flatten()
        .map(|m| parse_digest(&m.digest, "index entry"))
        .collect()
}

/// The blobs an image manifest names, with their declared sizes: its config and its layers.
/// Non-distributable layers (with `urls`) live where their urls say and are not copied, as
/// registries do.
fn blobs(body: &ManifestBody) -> Result<Vec<(Digest, Option<u64>)>, Trouble> {
    let mut out = Vec::new();
    if let Some(config) = &body.config {
        let digest = config
            .get("digest")
            .and_then(|d| d.as_str())
            .ok_or_else(|| Trouble::BadManifest("the config has no digest".into()))?;
        let size = config.get("size").and_then(|s| s.as_u64());
        out.push((parse_digest(digest, "config")?, size));
    }
    for layer in body.layers.iter().filter(|l| l.urls.is_empty()) {
        out.push((parse_digest(&layer.digest, "layer")?, layer.size));
    }
    Ok(out)
}

//! The push webhook receiver: `POST /hook/github`, `/hook/gitlab` and `/hook/generic` on
//! their own address. Each request is rate-limited, size-limited and authenticated (cost
//! before trust: the body is parsed only once its signature or token checks out); a valid
//! push requests a pass now of every LockstepSync following that repository and ref.
//!
//! Answers: 202 with how many syncs were triggered, 400 malformed, 401 a missing or wrong
//! signature, 404/405 wrong path or method, 413 too large, 429 rate-limited, 503 the secret
//! unreadable. Neither answers nor logs say anything about the secret.

mod auth;
mod push;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::net::TcpListener;

pub use auth::{RateLimit, SecretSource, WebhookSecret, authentic, sign};
pub use push::{Format, Malformed, Push, normalise, parse};

use crate::cluster::crd::LockstepSync;
use crate::cluster::plan::SyncId;
use crate::cluster::reconcile::sync_id;

/// The largest body accepted (GitHub caps its payloads at 25 MB, but a push of a few
/// commits is a few KiB).
pub const MAX_BODY: usize = 1 << 20;
/// Requests at once, then per second, over every source.
pub const BURST: u32 = 20;
pub const PER_SECOND: u32 = 5;
/// How long one connection may take, request and answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the receiver needs: a client, where the secret is, the limit.
pub struct Receiver {
    pub client: Client,
    pub secret: WebhookSecret,
    pub limit: RateLimit,
    /// The namespace the controller watches, or all.
    pub namespace: Option<String>,
}

/// Serve webhooks on `listener` until the process ends.
pub async fn serve(listener: TcpListener, receiver: Arc<Receiver>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection on the webhook address");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let receiver = receiver.clone();
                async move { Ok::<_, Infallible>(receiver.answer(request).await) }
            });
            let connection = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn refuse(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({ "error": why }).to_string() + "\n",
    )
}

impl Receiver {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.limit.take() {
            return refuse(StatusCode::TOO_MANY_REQUESTS, "rate limited; retry later");
        }
        let format = match request.uri().path() {
            "/hook/github" => Format::GitHub,
            "/hook/gitlab" => Format::GitLab,
            "/hook/generic" => Format::Generic,
            _ => {
                return refuse(
                    StatusCode::NOT_FOUND,
                    "POST to /hook/github, /hook/gitlab or /hook/generic",
                );
            }
        };
        if request.method() != Method::POST {
            return refuse(StatusCode::METHOD_NOT_ALLOWED, "POST only");
        }
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 1 MiB");
        }
        let headers = request.headers().clone();
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 1 MiB");
            }
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "the body could not be read"),
        };
        let secret = match self.secret.get().await {
            Ok(secret) => secret,
            Err(e) => {
                tracing::warn!(error = %e, "webhook refused: the secret is unavailable");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the receiver is not configured",
                );
            }
        };
        let presented = headers
            .get(auth::signature_header(format))
            .map_or(&[][..], |v| v.as_bytes());
        if !authentic(format, &secret, presented, &body) {
            tracing::warn!(format = ?format, "webhook refused: missing or wrong signature");
            return refuse(StatusCode::UNAUTHORIZED, "missing or wrong signature");
        }
        if !is_push(format, &headers) {
            return reply(
                StatusCode::ACCEPTED,
                "{\"triggered\":0,\"note\":\"not a push event\"}\n".into(),
            );
        }
        let push = match parse(format, &body) {
            Ok(push) => push,
            Err(Malformed(why)) => return refuse(StatusCode::BAD_REQUEST, &why),
        };
        match self.trigger(&push).await {
            Ok(n) => reply(StatusCode::ACCEPTED, format!("{{\"triggered\":{n}}}\n")),
            Err(e) => {
                tracing::warn!(error = %crate::cluster::kube_error::describe(&e), "webhook: cannot list the LockstepSyncs");
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot list the LockstepSyncs",
                )
            }
        }
    }

    /// Request a pass of every sync `push` concerns; how many. The request is written to
    /// each sync's `status.pushRequestedAt`, so the replica that reconciles sees it through
    /// its watch, whichever replica took the webhook.
    async fn trigger(&self, push: &Push) -> Result<usize, kube::Error> {
        let api: Api<LockstepSync> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let syncs = api.list(&Default::default()).await?;
        let now = jiff::Timestamp::now().to_string();
        let mut triggered = Vec::new();
        for sync in syncs.items.iter().filter(|s| push.concerns(&s.spec)) {
            let id = sync_id(sync);
            request_pass(&self.client, &id, &now).await?;
            triggered.push(id.to_string());
        }
        tracing::info!(git_ref = %push.git_ref, syncs = ?triggered, "push webhook: passes requested");
        Ok(triggered.len())
    }
}

/// The webhook receiver's field manager: it owns `status.pushRequestedAt` only.
pub const FIELD_MANAGER: &str = "lockstep-webhook";

/// Ask for a pass of `id` now: its `status.pushRequestedAt` set to `at`.
pub async fn request_pass(client: &Client, id: &SyncId, at: &str) -> Result<(), kube::Error> {
    let api: Api<LockstepSync> = Api::namespaced(client.clone(), &id.namespace);
    let patch = serde_json::json!({
        "apiVersion": "lockstep.dev/v1alpha1",
        "kind": "LockstepSync",
        "status": {"pushRequestedAt": at},
    });
    api.patch_status(
        &id.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Whether the event header says push (GitHub `push`, GitLab `Push Hook` or `Tag Push
/// Hook`); the generic format has only pushes.
fn is_push(format: Format, headers: &hyper::HeaderMap) -> bool {
    let event = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    match format {
        Format::GitHub => event("x-github-event") == "push",
        Format::GitLab => matches!(event("x-gitlab-event"), "Push Hook" | "Tag Push Hook"),
        Format::Generic => true,
    }
}

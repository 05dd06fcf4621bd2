//! `lockstep controller`: the in-cluster reconciler, with `/healthz`, `/readyz` and
//! `/metrics` (Prometheus text) on one address.
//!
//! The HTTP side is hyper's HTTP/1 server (already in the tree through kube): three fixed
//! GET endpoints do not need a web framework.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::error::{CliError, Message};
use crate::cluster::crd::GROUP;
use crate::cluster::lease::{self, LeaseSettings};
use crate::cluster::metrics::{self, Metrics};
use crate::cluster::reconcile::{self, Context, Registries};
use crate::cluster::webhook::{self, RateLimit, Receiver, SecretSource, WebhookSecret};

/// Validated settings of `lockstep controller`.
pub struct ControllerSettings {
    /// How `checkImages` reaches registries.
    pub registries: Registries,
    /// Reconcile only while holding this Lease.
    pub leader_election: Option<LeaderElection>,
    pub namespace: Option<String>,
    pub metrics_address: SocketAddr,
    /// The push webhook receiver, when asked for.
    pub webhook: Option<Webhook>,
    pub cache_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub instance: Option<String>,
    pub json_logs: bool,
    pub clock: fn() -> Timestamp,
}

/// `--webhook-address` and where its secret is.
pub struct Webhook {
    pub address: SocketAddr,
    pub secret_name: String,
    pub secret_key: String,
    /// Default: the watched namespace, else the kubeconfig's.
    pub secret_namespace: Option<String>,
}

/// `--leader-election` and its Lease.
pub struct LeaderElection {
    pub lease_name: String,
    /// Default: the watched namespace, else the kubeconfig's.
    pub lease_namespace: Option<String>,
    pub duration: Duration,
}

/// Run until SIGTERM or Ctrl-C.
pub async fn run(settings: ControllerSettings) -> Result<(), CliError> {
    install_logs(settings.json_logs);
    let client = client(settings.kubeconfig.as_deref()).await?;
    std::fs::create_dir_all(&settings.cache_dir).map_err(|e| {
        CliError::usage(Message(format!(
            "cannot create the cache directory {}: {e}",
            settings.cache_dir.display()
        )))
    })?;
    // Deploy keys a killed predecessor left behind (the cache outlives container restarts).
    crate::source::git::ssh::remove_stale_sessions(&settings.cache_dir);
    let listener = TcpListener::bind(settings.metrics_address)
        .await
        .map_err(|e| {
            CliError::usage(Message(format!(
                "cannot listen on {}: {e}",
                settings.metrics_address
            )))
        })?;
    let metrics = Arc::new(Metrics::new(settings.leader_election.is_some()));
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(serve(listener, metrics.clone(), ready.clone()));
    tokio::spawn(watch_readiness(client.clone(), ready));

    let clock = settings.clock;
    let instance = settings.instance.or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
    });
    let lease = settings.leader_election.map(|election| LeaseSettings {
        namespace: election
            .lease_namespace
            .or_else(|| settings.namespace.clone())
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        name: election.lease_name,
        // Unique per replica even when two share a host name.
        identity: format!(
            "{}_{}",
            instance.as_deref().unwrap_or("lockstep"),
            std::process::id()
        ),
        duration: election.duration,
    });
    let ctx = Arc::new(Context::new(
        client,
        settings.cache_dir,
        Arc::new(clock),
        metrics,
        settings.registries,
        instance,
    ));
    if let Some(webhook) = settings.webhook {
        start_webhook(webhook, ctx.clone(), settings.namespace.clone()).await?;
    }
    tracing::info!(
        namespace = settings.namespace.as_deref().unwrap_or("(all)"),
        address = %settings.metrics_address,
        "lockstep controller started"
    );
    match lease {
        None => reconcile::run(ctx, settings.namespace.as_deref()).await,
        Some(lease) => run_elected(ctx, settings.namespace.as_deref(), lease).await,
    }
    tracing::info!("lockstep controller stopped");
    Ok(())
}

/// Listen for push webhooks (an address that cannot be bound is a usage error).
async fn start_webhook(
    webhook: Webhook,
    ctx: Arc<Context>,
    namespace: Option<String>,
) -> Result<(), CliError> {
    let listener = TcpListener::bind(webhook.address).await.map_err(|e| {
        CliError::usage(Message(format!(
            "cannot listen on {} (--webhook-address): {e}",
            webhook.address
        )))
    })?;
    let source = SecretSource {
        namespace: webhook
            .secret_namespace
            .or_else(|| namespace.clone())
            .unwrap_or_else(|| ctx.client.default_namespace().to_owned()),
        name: webhook.secret_name,
        key: webhook.secret_key,
    };
    tracing::info!(
        address = %webhook.address,
        secret = %format!("{}/{}", source.namespace, source.name),
        "push webhook receiver started"
    );
    let receiver = Arc::new(Receiver {
        secret: WebhookSecret::new(ctx.client.clone(), source),
        limit: RateLimit::new(webhook::BURST, webhook::PER_SECOND),
        client: ctx.client.clone(),
        namespace,
    });
    tokio::spawn(webhook::serve(listener, receiver));
    Ok(())
}

/// Reconcile while this replica holds the Lease; stop reconciling as soon as it does not.
/// On shutdown the Lease is released, so another replica takes over without waiting.
async fn run_elected(ctx: Arc<Context>, namespace: Option<&str>, lease: LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &lease.namespace);
    let (leading_tx, mut leading) = watch::channel(false);
    tracing::info!(
        lease = %format!("{}/{}", lease.namespace, lease.name),
        identity = %lease.identity,
        "leader election: waiting for the Lease"
    );
    let election = tokio::spawn(lease::hold(
        api.clone(),
        lease.clone(),
        ctx.clock.clone(),
        leading_tx,
    ));
    ctx.metrics.leader(false);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            became = leading.wait_for(|l| *l) => if became.is_err() { break },
        }
        ctx.metrics.leader(true);
        ctx.forget_schedule();
        tracing::info!(identity = %lease.identity, "holding the Lease: reconciling");
        // reconcile::run returns on SIGTERM/Ctrl-C itself.
        let stopped = tokio::select! {
            () = reconcile::run(ctx.clone(), namespace) => true,
            _ = leading.wait_for(|l| !*l) => false,
        };
        ctx.metrics.leader(false);
        if stopped {
            break;
        }
        tracing::warn!(identity = %lease.identity, "lost the Lease: stopped reconciling");
    }
    election.abort();
    lease::release(&api, &lease).await;
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn install_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // Err: a subscriber is already installed (a test running several commands); keep it.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub(crate) async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client, CliError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| CliError::usage(e).hint(format!("--kubeconfig {}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(CliError::usage)?
        }
        None => kube::Config::infer().await.map_err(|e| {
            CliError::usage(e)
                .hint("run in a Pod with a service account, or pass --kubeconfig / set KUBECONFIG")
        })?,
    };
    Client::try_from(config).map_err(CliError::usage)
}

/// Ready while the API server answers and serves the LockstepSync kind (the CRD is
/// installed); checked every few seconds.
async fn watch_readiness(client: Client, ready: Arc<AtomicBool>) {
    let gvk = GroupVersionKind::gvk(GROUP, "v1alpha1", "LockstepSync");
    loop {
        let ok = kube::discovery::pinned_kind(&client, &gvk).await.is_ok();
        if ready.swap(ok, Ordering::SeqCst) != ok {
            tracing::info!(ready = ok, "readiness changed");
        }
        tokio::time::sleep(Duration::from_secs(if ok { 10 } else { 2 })).await;
    }
}

/// How long to wait after a failed `accept` (out of file descriptors, say) before the
/// next: the error would otherwise repeat at once, spinning a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long one connection may take, request and answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve(listener: TcpListener, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection on the metrics address");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &metrics, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            // One request per connection, as probes and scrapers use it.
            let connection = http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

/// The answer to one request (hyper leaves the body out for HEAD).
fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        route(request.method(), request.uri().path(), metrics, ready);
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn route(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> (StatusCode, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    match path {
        "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" if ready.load(Ordering::SeqCst) => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "the API server is unreachable or does not serve lockstep.dev/v1alpha1 LockstepSync\n"
                .into(),
        ),
        "/metrics" => (StatusCode::OK, metrics::CONTENT_TYPE, metrics.render()),
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let metrics = Metrics::default();
        let ready = AtomicBool::new(false);
        let get = |path| route(&Method::GET, path, &metrics, &ready).0;
        assert_eq!(get("/healthz"), StatusCode::OK);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get("/readyz"), StatusCode::OK);
        let (status, content_type, body) = route(&Method::GET, "/metrics", &metrics, &ready);
        assert_eq!(
            (status, content_type),
            (StatusCode::OK, metrics::CONTENT_TYPE)
        );
        assert!(body.contains("lockstep_reconciles_total{result=\"applied\"} 0"));
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        assert_eq!(
            route(&Method::POST, "/metrics", &metrics, &ready).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    /// One raw HTTP/1.1 request, as a probe sends it (no `Connection: close`): the answer's
    /// status line, headers and body, read until the server closes the connection.
    async fn raw(port: u16, request: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
            .await
            .expect("the server closes the connection after one answer")
            .unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn the_probes_and_metrics_answer_over_http_and_close_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let metrics = Arc::new(Metrics::default());
        let ready = Arc::new(AtomicBool::new(false));
        tokio::spawn(serve(listener, metrics, ready.clone()));
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");

        let (head, body) = raw(port, &get("/healthz")).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, "ok\n");
        let (head, _) = raw(port, &get("/readyz")).await;
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable"),
            "{head}"
        );
        ready.store(true, Ordering::SeqCst);
        let (head, _) = raw(port, &get("/readyz?verbose")).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        let (head, body) = raw(port, &get("/metrics")).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {}", metrics::CONTENT_TYPE)),
            "{head}"
        );
        assert!(
            body.lines()
                .any(|l| l == "lockstep_reconciles_total{result=\"failed\"} 0")
        );
        let (head, body) = raw(port, "HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert_eq!(body, "", "no body for HEAD");
        let (head, _) = raw(port, &get("/nope")).await;
        assert!(head.starts_with("HTTP/1.1 404 Not Found"), "{head}");
        let (head, _) = raw(
            port,
            "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed"),
            "{head}"
        );
    }
}

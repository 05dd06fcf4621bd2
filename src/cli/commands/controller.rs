//! `lockstep controller`: the in-cluster reconciler, with `/healthz`, `/readyz` and
//! `/metrics` (Prometheus text) on one address.
//!
//! The HTTP side is a few lines of HTTP/1.1 over tokio: three fixed GET endpoints do not
//! need a web framework.

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
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::error::{CliError, Message};
use crate::cluster::crd::GROUP;
use crate::cluster::lease::{self, LeaseSettings};
use crate::cluster::metrics::{self, Metrics};
use crate::cluster::reconcile::{self, Context, Registries};

/// Validated settings of `lockstep controller`.
pub struct ControllerSettings {
    /// How `checkImages` reaches registries.
    pub registries: Registries,
    /// Reconcile only while holding this Lease.
    pub leader_election: Option<LeaderElection>,
    pub namespace: Option<String>,
    pub metrics_address: SocketAddr,
    pub cache_dir: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    pub instance: Option<String>,
    pub json_logs: bool,
    pub clock: fn() -> Timestamp,
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

async fn serve(listener: TcpListener, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &metrics, &ready))
                .await;
        });
    }
}

/// Answer one request and close the connection.
async fn answer(
    mut stream: tokio::net::TcpStream,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = route(method, path, metrics, ready);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

fn route(
    method: &str,
    path: &str,
    metrics: &Metrics,
    ready: &AtomicBool,
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    match path {
        "/healthz" => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" if ready.load(Ordering::SeqCst) => ("200 OK", TEXT, "ok\n".into()),
        "/readyz" => (
            "503 Service Unavailable",
            TEXT,
            "the API server is unreachable or does not serve lockstep.dev/v1alpha1 LockstepSync\n"
                .into(),
        ),
        "/metrics" => ("200 OK", metrics::CONTENT_TYPE, metrics.render()),
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let metrics = Metrics::default();
        let ready = AtomicBool::new(false);
        assert_eq!(route("GET", "/healthz", &metrics, &ready).0, "200 OK");
        assert_eq!(
            route("GET", "/readyz", &metrics, &ready).0,
            "503 Service Unavailable"
        );
        ready.store(true, Ordering::SeqCst);
        assert_eq!(route("GET", "/readyz", &metrics, &ready).0, "200 OK");
        let (status, content_type, body) = route("GET", "/metrics", &metrics, &ready);
        assert_eq!((status, content_type), ("200 OK", metrics::CONTENT_TYPE));
        assert!(body.contains("lockstep_reconciles_total{result=\"applied\"} 0"));
        assert_eq!(route("GET", "/nope", &metrics, &ready).0, "404 Not Found");
        assert_eq!(
            route("POST", "/metrics", &metrics, &ready).0,
            "405 Method Not Allowed"
        );
    }
}

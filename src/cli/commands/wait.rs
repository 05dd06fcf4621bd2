//! `lockstep wait`: CI feedback. Watch a `LockstepSync` until the commit just pushed is
//! applied and healthy (exit 0), refused or unhealthy (exit 1, saying why), or the timeout
//! passes (exit 1, saying what state it was in). The verdict is [`crate::cluster::wait`]'s;
//! this file is the watch around it.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::cli::commands::controller::client;
use crate::cli::error::{CliError, Message};
use crate::cli::printer::Printer;
use crate::cluster::crd::LockstepSync;
use crate::cluster::kube_error::describe;
use crate::cluster::wait::{Verdict, WantedCommit, judge};

/// Validated settings of `lockstep wait`.
pub struct WaitSettings {
    pub name: String,
    pub namespace: Option<String>,
    pub rev: WantedCommit,
    pub timeout: Duration,
    pub kubeconfig: Option<PathBuf>,
}

/// Wait for the verdict. A check failure (refused, unhealthy, timeout) has already printed
/// its JSON with `--json`; usage and environment errors have not.
pub async fn run(settings: WaitSettings, printer: Printer) -> Result<(), CliError> {
    let client = client(settings.kubeconfig.as_deref()).await?;
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let api: Api<LockstepSync> = Api::namespaced(client, &namespace);
    let what = format!("LockstepSync {namespace}/{}", settings.name);
    let found = api.get_opt(&settings.name).await.map_err(|e| {
        CliError::usage(e).hint(format!(
            "cannot read {what}: is the API server reachable, and may this user get lockstepsyncs?"
        ))
    })?;
    let Some(sync) = found else {
        return Err(CliError::usage(Message(format!("there is no {what}")))
            .hint("check the name and --namespace (and that the LockstepSync CRD is installed)"));
    };
    printer.note(format!(
        "waiting up to {} for {what} to apply commit {}",
        crate::cluster::wait::human(settings.timeout),
        settings.rev.as_str()
    ));
    let mut verdict = judge(
        sync.status.as_ref(),
        sync.metadata.generation,
        &settings.rev,
    );
    let mut last_watch_error = None;
    if matches!(verdict, Verdict::Waiting(_)) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", settings.name));
        let mut events = watcher::watcher(api, config).default_backoff().boxed();
        let deadline = tokio::time::Instant::now() + settings.timeout;
        loop {
            let event = match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_elapsed) => break,
                Ok(None) => break,
                Ok(Some(event)) => event,
            };
            let sync = match event {
                Ok(Event::Apply(s) | Event::InitApply(s)) => s,
                Ok(Event::Delete(_)) => {
                    return Err(CliError::usage(Message(format!(
                        "{what} was deleted while waiting"
                    ))));
                }
                Ok(Event::Init | Event::InitDone) => continue,
                Err(e) => {
                    // The watcher retries with backoff; say why if the timeout comes first.
                    last_watch_error = Some(describe(&e));
                    continue;
                }
            };
            last_watch_error = None;
            verdict = judge(
                sync.status.as_ref(),
                sync.metadata.generation,
                &settings.rev,
            );
            if !matches!(verdict, Verdict::Waiting(_)) {
                break;
            }
        }
    }
    report(&namespace, &settings, verdict, last_watch_error, printer)
}

fn report(
    namespace: &str,
    settings: &WaitSettings,
    verdict: Verdict,
    watch_error: Option<String>,
    printer: Printer,
) -> Result<(), CliError> {
    let name = &settings.name;
    match verdict {
        Verdict::Succeeded(s) => {
            let generation = s
                .generation
                .map_or_else(|| "?".to_owned(), |g| g.to_string());
            printer.result(format!(
                "commit {} is applied and healthy: lockfile generation {generation}, signed by {}; {}",
                s.commit,
                s.signers.join(", "),
                s.health
            ));
            printer.json(&json!({
                "ok": true, "namespace": namespace, "name": name, "commit": s.commit,
                "generation": s.generation, "signers": s.signers, "health": s.health,
            }));
            Ok(())
        }
        Verdict::Failed(f) => {
            printer.json(&json!({
                "ok": false, "namespace": namespace, "name": name, "commit": f.commit,
                "reason": f.reason, "message": f.message,
            }));
            let what = if f.reason == "Unhealthy" {
                "is applied but unhealthy"
            } else {
                "was refused"
            };
            Err(CliError::check(Message(format!(
                "commit {} {what} ({}): {}",
                f.commit, f.reason, f.message
            ))))
        }
        Verdict::Waiting(state) => {
            let state = match watch_error {
                Some(e) => format!("{state}; the watch is failing: {e}"),
                None => state,
            };
            printer.json(&json!({
                "ok": false, "namespace": namespace, "name": name,
                "commit": settings.rev.as_str(), "reason": "Timeout", "message": state,
            }));
            Err(CliError::check(Message(format!(
                "timed out after {} waiting for commit {}: {state}",
                crate::cluster::wait::human(settings.timeout),
                settings.rev.as_str()
            ))))
        }
        Verdict::Ambiguous { first, second } => Err(CliError::usage(Message(format!(
            "--rev {} matches both {first} and {second}",
            settings.rev.as_str()
        )))
        .hint("give a longer prefix or the full commit id")),
    }
}

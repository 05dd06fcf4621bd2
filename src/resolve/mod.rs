//! Asking registries (edge): resolving image references to digests and copying images.
//!
//! Owns the [`Registry`] trait (one reference → [`Resolved`]) and [`resolve_all`] (distinct
//! references, bounded concurrency, every failure collected), the [`Copier`] trait and
//! [`copy_all`] for `mirror`. The vocabulary (what a registry answers, how asking fails, when
//! to retry) is the core's [`lockstep_core::registry`], re-exported here. The only
//! implementation that talks to the network is [`oci::OciRegistry`]; this file does no I/O.

pub mod oci;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use futures::StreamExt as _;

pub use lockstep_core::registry::*;

use crate::exists::{self, Probe, Report};
use crate::mirror::{Copied, CopyJob};
use crate::model::ImageRef;

/// A way to resolve one image reference.
pub trait Registry: Send + Sync {
    /// Resolve `image`: its tag when it has one, else its digest (which confirms the
    /// manifest exists and gives its media type). `known` is what the previous lockfile
    /// recorded for this reference: when the registry still reports the same digest, its
    /// platforms are reused instead of fetching the index again, so an unchanged reference
    /// costs one request.
    fn resolve(
        &self,
        image: &ImageRef,
        known: Option<&Resolved>,
    ) -> impl Future<Output = Result<Resolved, ResolveError>> + Send;
}

/// How many references are resolved at once unless the caller says otherwise: enough to keep
/// a registry's request handlers busy over the round-trip latency without opening hundreds
/// of connections.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// Resolve every distinct reference of `images`, at most `concurrency` at a time.
///
/// Every failure is collected (not fail-fast): the error lists each failing reference and
/// why. `known` maps references to what the previous lockfile recorded (see
/// [`Registry::resolve`]).
pub async fn resolve_all<R: Registry>(
    registry: &R,
    images: Vec<ImageRef>,
    known: &BTreeMap<ImageRef, Resolved>,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<BTreeMap<ImageRef, Resolved>, ResolveFailures> {
    let distinct: Vec<ImageRef> = images
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let outcomes = run_all(
        distinct,
        concurrency,
        progress,
        |image| image,
        |image| async {
            let outcome = registry.resolve(&image, known.get(&image)).await;
            (image, outcome)
        },
    )
    .await;

    let mut resolved = BTreeMap::new();
    let mut failures = Vec::new();
    for (image, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                resolved.insert(image, r);
            }
            Err(e) => failures.push((image, e)),
        }
    }
    if failures.is_empty() {
        Ok(resolved)
    } else {
        failures.sort_by(|a, b| a.0.cmp(&b.0));
        Err(ResolveFailures { failures })
    }
}

/// Ask for every probe's digest, by digest, and judge the answers ([`exists::judge`]): the
/// one way `lockstep check` and the reconciler's `spec.checkImages` ask whether pinned
/// digests still exist. `known` is what the lockfile recorded ([`exists::known`]).
pub async fn check_exists<R: Registry>(
    registry: &R,
    probes: &[Probe],
    known: &BTreeMap<ImageRef, Resolved>,
    concurrency: usize,
    progress: &dyn Progress,
) -> Report {
    let asks = probes.iter().map(|p| p.ask.clone()).collect();
    let failures = match resolve_all(registry, asks, known, concurrency, progress).await {
        Ok(_) => Vec::new(),
        Err(e) => e.failures,
    };
    exists::judge(probes, &failures)
}

/// Run `work` on every item, at most `concurrency` at a time, reporting each as done under
/// `key`; every outcome is returned (not fail-fast), in completion order. `work` owns its
/// item and hands it back with the outcome.
pub async fn run_all<I, T, K, W, F>(
    items: Vec<I>,
    concurrency: usize,
    progress: &dyn Progress,
    key: K,
    work: W,
) -> Vec<(I, Result<T, ResolveError>)>
where
    K: Fn(&I) -> &ImageRef,
    W: Fn(I) -> F,
    F: Future<Output = (I, Result<T, ResolveError>)>,
{
    progress.start(items.len());
    let key = &key;
    let outcomes = futures::stream::iter(items)
        .map(|item| {
            let running = work(item);
            async move {
                let (item, outcome) = running.await;
                progress.done(key(&item));
                (item, outcome)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    progress.finish();
    outcomes
}

/// A way to copy one image, every manifest and blob of it, by digest.
pub trait Copier: Send + Sync {
    /// Copy `job.source` to `job.target`, verifying every byte against its digest. Errors
    /// name the reference (source or target side) that failed.
    fn copy(&self, job: &CopyJob) -> impl Future<Output = Result<Copied, ResolveError>> + Send;
}

/// Copy every job, at most `concurrency` at a time; every failure is collected.
pub async fn copy_all<C: Copier>(
    copier: &C,
    jobs: Vec<CopyJob>,
    concurrency: usize,
    progress: &dyn Progress,
) -> Result<Copied, ResolveFailures> {
    let outcomes = run_all(
        jobs,
        concurrency,
        progress,
        |job| &job.source,
        |job| async {
            let outcome = copier.copy(&job).await;
            (job, outcome)
        },
    )
    .await;
    let mut total = Copied::default();
    let mut failures = Vec::new();
    for (job, outcome) in outcomes {
        match outcome {
            Ok(c) => total += c,
            Err(e) => failures.push((job.source, e)),
        }
    }
    if failures.is_empty() {
        Ok(total)
    } else {
        failures.sort_by(|a, b| a.0.cmp(&b.0));
        Err(ResolveFailures { failures })
    }
}

/// Install the process-level rustls CryptoProvider (aws-lc-rs). Call once at start-up,
/// before any TLS client is built; calling it again is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all we need.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Digest;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// A registry made of a table: answers from `table`, counts calls per reference, and
    /// records the `known` it was given.
    struct TableRegistry {
        table: BTreeMap<ImageRef, Result<Resolved, ResolveError>>,
        calls: Mutex<Vec<(ImageRef, Option<Resolved>)>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Registry for TableRegistry {
        async fn resolve(
            &self,
            image: &ImageRef,
            known: Option<&Resolved>,
        ) -> Result<Resolved, ResolveError> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.calls
                .lock()
                .unwrap()
                .push((image.clone(), known.cloned()));
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.table[image].clone()
        }
    }

    fn img(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap()
    }

    fn resolved(seed: &str) -> Resolved {
        Resolved {
            digest: Digest::of(seed.as_bytes()),
            media_type: OCI_MANIFEST.into(),
            platforms: vec![],
        }
    }

    #[derive(Default)]
    struct CountingProgress {
        total: AtomicUsize,
        done: AtomicUsize,
        finished: AtomicUsize,
    }

    impl Progress for CountingProgress {
        fn start(&self, total: usize) {
            self.total.store(total, Ordering::SeqCst);
        }
        fn done(&self, _image: &ImageRef) {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
        fn finish(&self) {
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn distinct_references_once_each_with_their_known_entry() {
        let (a, b) = (img("r.io/a:1"), img("r.io/b:1"));
        let registry = TableRegistry {
            table: [
                (a.clone(), Ok(resolved("a"))),
                (b.clone(), Ok(resolved("b"))),
            ]
            .into(),
            calls: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        };
        let known = BTreeMap::from([(a.clone(), resolved("old-a"))]);
        let progress = CountingProgress::default();
        let out = resolve_all(
            &registry,
            vec![a.clone(), b.clone(), a.clone(), b.clone(), a.clone()],
            &known,
            4,
            &progress,
        )
        .await
        .unwrap();
        assert_eq!(
            out,
            BTreeMap::from([(a.clone(), resolved("a")), (b.clone(), resolved("b"))])
        );
        let mut calls = registry.calls.into_inner().unwrap();
        calls.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(calls, vec![(a, Some(resolved("old-a"))), (b, None)]);
        assert_eq!(progress.total.load(Ordering::SeqCst), 2);
        assert_eq!(progress.done.load(Ordering::SeqCst), 2);
        assert_eq!(progress.finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn every_failure_is_reported_not_just_the_first() {
        let refs: Vec<ImageRef> = (0..6).map(|i| img(&format!("r.io/app{i}:v"))).collect();
        let table = refs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let outcome = if i % 2 == 0 {
                    Err(ResolveError::NotFound {
                        reference: r.clone(),
                        registry: "r.io".into(),
                        code: "MANIFEST_UNKNOWN".into(),
                        message: "manifest unknown".into(),
                    })
                } else {
                    Ok(resolved(&i.to_string()))
                };
                (r.clone(), outcome)
            })
            .collect();
        let registry = TableRegistry {
            table,
            calls: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        };
        let err = resolve_all(&registry, refs.clone(), &BTreeMap::new(), 2, &NoProgress)
            .await
            .unwrap_err();
        let failed: Vec<&ImageRef> = err.failures.iter().map(|(r, _)| r).collect();
        assert_eq!(failed, vec![&refs[0], &refs[2], &refs[4]]);
        assert_eq!(
            registry.calls.lock().unwrap().len(),
            6,
            "failures do not stop the others"
        );
        assert!(
            registry.max_in_flight.load(Ordering::SeqCst) <= 2,
            "concurrency is bounded"
        );
        let text = err.to_string();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(
            text.lines().next().unwrap(),
            "r.io/app0:v: tag not found in registry r.io: MANIFEST_UNKNOWN: manifest unknown"
        );
    }
}

//! What registries answer, and how asking one fails: the vocabulary the pure core and the
//! registry edge share. A [`Resolved`] digest with its platforms and media type,
//! [`ResolveError`] (every variant names its reference), the [`RetryPolicy`] (a pure
//! function of the failure and the attempt) and the [`Progress`] reporter trait. No I/O:
//! the requests are made by the `lockstep` crate's `resolve` edge.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::model::{Digest, ImageRef};

/// What a registry said about one reference: the digest to pin and, for an index, the
/// digest of each platform's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The digest of the manifest the reference names (the index digest for an index,
    /// never a platform child).
    pub digest: Digest,
    /// The manifest's media type, e.g. `application/vnd.oci.image.index.v1+json`.
    pub media_type: String,
    /// For an index or manifest list, each platform's manifest digest in index order;
    /// empty for a single-platform manifest.
    pub platforms: Vec<PlatformDigest>,
}

/// One platform entry of an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformDigest {
    /// `os/architecture[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
    pub platform: String,
    /// The platform's manifest digest.
    pub digest: Digest,
}

/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The Docker manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The Docker image manifest (schema 2) media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Every manifest type lockstep accepts, sent together in `Accept`: Distribution 2.8
/// answers 404 for OCI content and a child's digest for Docker lists when types are missing.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Whether `media_type` names a multi-platform index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Progress of [`resolve_all`], reported to the edge (a progress bar, or nothing).
pub trait Progress: Send + Sync {
    /// Resolution of `total` distinct references begins.
    fn start(&self, total: usize);
    /// One reference is done (resolved or failed).
    fn done(&self, image: &ImageRef);
    /// Every reference is done.
    fn finish(&self);
}

/// A [`Progress`] that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _total: usize) {}
    fn done(&self, _image: &ImageRef) {}
    fn finish(&self) {}
}

/// Every reference that failed to resolve, sorted by reference, and why.
#[derive(Debug)]
pub struct ResolveFailures {
    /// Each failing reference with its error.
    pub failures: Vec<(ImageRef, ResolveError)>,
}

impl fmt::Display for ResolveFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line per failure; each error already names its reference.
        for (i, (_, error)) in self.failures.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&crate::error_chain::one_line(error))?;
        }
        Ok(())
    }
}

impl std::error::Error for ResolveFailures {}

impl ResolveFailures {
    /// Whether any failure is a finding ([`ResolveError::is_finding`]): one definite answer
    /// decides, even when other references could not be asked.
    pub fn has_finding(&self) -> bool {
        self.failures.iter().any(|(_, e)| e.is_finding())
    }
}

/// A transport-level cause (connection, TLS, I/O), shared so that errors stay `Clone`.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why one reference could not be resolved. Every variant names the reference.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The registry has no manifest for the tag or digest.
    #[error("{reference}: {what} not found in registry {registry}{detail}", what = if reference.tag().is_some() { "tag" } else { "digest" }, detail = registry_detail(code, message))]
    NotFound {
        reference: ImageRef,
        registry: String,
        code: String,
        message: String,
    },

    /// The registry wants credentials, or refused the ones it got.
    #[error("{reference}: registry {registry} refused access (HTTP {status}{detail}); log in with `docker login {registry}` or set DOCKER_CONFIG to a directory whose config.json has credentials for it", detail = registry_detail(code, message))]
    Unauthorized {
        reference: ImageRef,
        registry: String,
        status: u16,
        code: String,
        message: String,
    },

    /// Any other error answer from the registry, after retries when it was transient.
    #[error("{reference}: registry {registry} answered HTTP {status}{detail}", detail = registry_detail(code, message))]
    Registry {
        reference: ImageRef,
        registry: String,
        status: u16,
        code: String,
        message: String,
    },

    /// No answer within the timeout, on every attempt.
    #[error(
        "{reference}: registry {registry} did not answer within {timeout:?} ({attempts} attempts)"
    )]
    Timeout {
        reference: ImageRef,
        registry: String,
        timeout: Duration,
        attempts: u32,
    },

    /// The registry's TLS certificate was not accepted.
    #[error(
        "{reference}: the TLS certificate of registry {registry} is not trusted (add its CA with --ca-file)"
    )]
    Tls {
        reference: ImageRef,
        registry: String,
        #[source]
        source: Cause,
    },

    /// The connection failed (refused, reset, DNS), after retries when it was transient.
    #[error("{reference}: cannot reach registry {registry}")]
    Connect {
        reference: ImageRef,
        registry: String,
        #[source]
        source: Cause,
    },

    /// The bytes received do not hash to the digest the registry claimed (or the one asked for).
    #[error(
        "{reference}: digest mismatch: the registry claimed {claimed} but the manifest it sent hashes to {computed}"
    )]
    DigestMismatch {
        reference: ImageRef,
        claimed: Digest,
        computed: Digest,
    },

    /// The registry sent a `Docker-Content-Digest` that is not a sha256 digest.
    #[error(
        "{reference}: registry {registry} sent an unusable Docker-Content-Digest {value:?} (only sha256 is accepted)"
    )]
    BadDigestHeader {
        reference: ImageRef,
        registry: String,
        value: String,
    },

    /// The manifest is larger than lockstep accepts.
    #[error("{reference}: the manifest is larger than {limit} bytes")]
    TooLarge { reference: ImageRef, limit: usize },

    /// The manifest is not one lockstep can pin (unknown media type, malformed index).
    #[error("{reference}: unusable manifest: {reason}")]
    BadManifest { reference: ImageRef, reason: String },

    /// The Docker credentials configured for the registry could not be read.
    #[error("{reference}: cannot get credentials for registry {registry}: {reason}")]
    Credentials {
        reference: ImageRef,
        registry: String,
        reason: String,
    },
}

impl ResolveError {
    /// Whether the registry answered and the answer is the failure: the tag or digest is not
    /// there, or what was sent does not hash to its digest or cannot be pinned. Such an error
    /// is a finding about the input (exit 1). Every other error means the registry could not
    /// be asked (unreachable, TLS, credentials, an error status): the environment (exit 2).
    pub fn is_finding(&self) -> bool {
        match self {
            ResolveError::NotFound { .. }
            | ResolveError::DigestMismatch { .. }
            | ResolveError::BadDigestHeader { .. }
            | ResolveError::TooLarge { .. }
            | ResolveError::BadManifest { .. } => true,
            ResolveError::Unauthorized { .. }
            | ResolveError::Registry { .. }
            | ResolveError::Timeout { .. }
            | ResolveError::Tls { .. }
            | ResolveError::Connect { .. }
            | ResolveError::Credentials { .. } => false,
        }
    }

    /// The reference that failed.
    pub fn reference(&self) -> &ImageRef {
        match self {
            ResolveError::NotFound { reference, .. }
            | ResolveError::Unauthorized { reference, .. }
            | ResolveError::Registry { reference, .. }
            | ResolveError::Timeout { reference, .. }
            | ResolveError::Tls { reference, .. }
            | ResolveError::Connect { reference, .. }
            | ResolveError::DigestMismatch { reference, .. }
            | ResolveError::BadDigestHeader { reference, .. }
            | ResolveError::TooLarge { reference, .. }
            | ResolveError::BadManifest { reference, .. }
            | ResolveError::Credentials { reference, .. } => reference,
        }
    }
}

/// `": CODE: message"` from a registry error envelope, or nothing when it sent none.
fn registry_detail(code: &str, message: &str) -> String {
    // The registry's words: whatever it sent is shown, escaped.
    let (code, message) = (
        crate::error_chain::escape(code, false),
        crate::error_chain::escape(message, false),
    );
    match (code.is_empty(), message.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(": {code}"),
        (true, false) => format!(": {message}"),
        (false, false) => format!(": {code}: {message}"),
    }
}

/// How one attempt of a request failed, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The registry answered with this HTTP status (and `Retry-After`, in seconds, if any).
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// No answer within the timeout.
    Timeout,
    /// The connection broke mid-request (reset, aborted, closed early).
    ConnectionReset,
    /// Anything else (refused connection, TLS, DNS): retrying will not help.
    Other,
}

/// When to retry a request: which failures are transient, and how long to wait.
///
/// Delays are deterministic (no jitter): `base`, `2·base`, `4·base`, … so tests and runs
/// repeat exactly. A `Retry-After` is honoured when it is at most `max_retry_after`; a
/// registry asking for more is not retried (the run would stall for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (3: four attempts in all).
    pub max_retries: u32,
    /// The first backoff delay; each retry doubles it.
    pub base: Duration,
    /// The longest `Retry-After` worth waiting for.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based) after `failure`, or `None` to give up.
    pub fn delay(&self, retry: u32, failure: &Failure) -> Option<Duration> {
        if retry >= self.max_retries {
            return None;
        }
        let backoff = self
            .base
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX));
        match *failure {
            Failure::Status {
                status: 429,
                retry_after: Some(after),
            } => (after <= self.max_retry_after).then_some(after),
            Failure::Status { status, .. } if is_retryable_status(status) => Some(backoff),
            Failure::Status { .. } | Failure::Other => None,
            Failure::Timeout | Failure::ConnectionReset => Some(backoff),
        }
    }
}

/// Whether an HTTP status is worth retrying: 429 and the 5xx that mean "not now"
/// (501 Not Implemented and 505 HTTP Version Not Supported will not change).
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || ((500..600).contains(&status) && status != 501 && status != 505)
}

/// Parse a `Retry-After` header value given in seconds. An HTTP-date is not parsed: that
/// would need the clock, and the regular backoff is a fine answer to it.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn error_escapes_what_a_registry_says() {
        let e = ResolveError::NotFound {
            reference: "example.com/app:1".parse().unwrap(),
            registry: "example.com".into(),
            code: "MANIFEST_UNKNOWN".into(),
            message: "gone\u{1b}[2J\n  example.com/app:1: ok".into(),
        };
        let shown = e.to_string();
        assert!(
            !shown.chars().any(crate::error_chain::acts_on_a_terminal),
            "{shown:?}"
        );
        assert!(
            shown.ends_with(r"gone\u{1b}[2J\u{a}  example.com/app:1: ok"),
            "{shown}"
        );
    }

    #[test]
    fn backoff_doubles_then_gives_up() {
        let p = RetryPolicy::default();
        let f = Failure::Status {
            status: 503,
            retry_after: None,
        };
        assert_eq!(p.delay(0, &f), Some(MS(200)));
        assert_eq!(p.delay(1, &f), Some(MS(400)));
        assert_eq!(p.delay(2, &f), Some(MS(800)));
        assert_eq!(p.delay(3, &f), None);
        assert_eq!(p.delay(0, &Failure::Timeout), Some(MS(200)));
        assert_eq!(p.delay(2, &Failure::ConnectionReset), Some(MS(800)));
        assert_eq!(p.delay(3, &Failure::Timeout), None);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let p = RetryPolicy::default();
        for status in [400, 401, 403, 404, 405, 501, 505] {
            assert_eq!(
                p.delay(
                    0,
                    &Failure::Status {
                        status,
                        retry_after: None
                    }
                ),
                None,
                "{status}"
            );
        }
        for status in [429, 500, 502, 503, 504] {
            assert!(
                p.delay(
                    0,
                    &Failure::Status {
                        status,
                        retry_after: None
                    }
                )
                .is_some(),
                "{status}"
            );
        }
        assert_eq!(p.delay(0, &Failure::Other), None);
    }

    #[test]
    fn retry_after_is_honoured_within_reason() {
        let p = RetryPolicy::default();
        let asked = |s| Failure::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(p.delay(0, &asked(2)), Some(Duration::from_secs(2)));
        assert_eq!(p.delay(2, &asked(0)), Some(Duration::ZERO));
        assert_eq!(
            p.delay(0, &asked(61)),
            None,
            "a minute-plus wait is not worth stalling for"
        );
        assert_eq!(p.delay(3, &asked(1)), None, "retries are still bounded");
        // 429 without Retry-After falls back to the backoff.
        assert_eq!(
            p.delay(
                1,
                &Failure::Status {
                    status: 429,
                    retry_after: None
                }
            ),
            Some(MS(400))
        );
    }

    #[test]
    fn no_retries_means_none() {
        let p = RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(0, &Failure::Timeout), None);
    }

    #[test]
    fn huge_retry_counts_do_not_overflow() {
        let p = RetryPolicy {
            max_retries: u32::MAX,
            ..RetryPolicy::default()
        };
        assert!(p.delay(40, &Failure::Timeout).is_some());
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn unauthorized_says_how_to_log_in() {
        let e = ResolveError::Unauthorized {
            reference: ImageRef::parse("r.io/a:1").unwrap(),
            registry: "r.io".into(),
            status: 401,
            code: "UNAUTHORIZED".into(),
            message: "authentication required".into(),
        };
        let text = e.to_string();
        assert!(text.starts_with("r.io/a:1: registry r.io refused access (HTTP 401: UNAUTHORIZED: authentication required)"), "{text}");
        assert!(
            text.contains("docker login r.io") && text.contains("DOCKER_CONFIG"),
            "{text}"
        );
    }
}

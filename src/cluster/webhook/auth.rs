//! Who may trigger passes: the shared secret (from a Kubernetes Secret, re-read at most every
//! [`SECRET_TTL`], never logged or answered), the signature or token each format carries
//! (checked in constant time), and a rate limit in front of everything.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit as _, Mac as _};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::push::Format;

/// How long a secret read from the cluster is used before it is read again (rotation).
const SECRET_TTL: Duration = Duration::from_secs(30);

/// Where the webhook secret is: a key of a Kubernetes Secret.
#[derive(Clone, Debug)]
pub struct SecretSource {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// The webhook secret, read from its Secret and kept for [`SECRET_TTL`].
pub struct WebhookSecret {
    api: Api<Secret>,
    source: SecretSource,
    cached: tokio::sync::Mutex<Option<(Instant, Zeroizing<Vec<u8>>)>>,
}

/// Why the secret is not at hand; the message names the Secret, never its content.
#[derive(Debug, thiserror::Error)]
#[error("the webhook secret {namespace}/{name} key {key}: {why}")]
pub struct SecretUnavailable {
    namespace: String,
    name: String,
    key: String,
    why: String,
}

impl WebhookSecret {
    pub fn new(client: Client, source: SecretSource) -> WebhookSecret {
        WebhookSecret {
            api: Api::namespaced(client, &source.namespace),
            source,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The secret's bytes (surrounding whitespace trimmed, as `kubectl create secret
    /// --from-file` keeps a final newline).
    pub async fn get(&self) -> Result<Zeroizing<Vec<u8>>, SecretUnavailable> {
        let mut cached = self.cached.lock().await;
        if let Some((read, value)) = cached.as_ref()
            && read.elapsed() < SECRET_TTL
        {
            return Ok(value.clone());
        }
        let unavailable = |why: String| SecretUnavailable {
            namespace: self.source.namespace.clone(),
            name: self.source.name.clone(),
            key: self.source.key.clone(),
            why,
        };
        let secret = self
            .api
            .get(&self.source.name)
            .await
            .map_err(|e| unavailable(crate::cluster::kube_error::describe(&e)))?;
        let value = secret
            .data
            .and_then(|mut d| d.remove(&self.source.key))
            .map(|v| {
                let raw = Zeroizing::new(v.0);
                Zeroizing::new(raw.trim_ascii().to_vec())
            })
            .filter(|v| !v.is_empty())
            .ok_or_else(|| unavailable("no such key, or it is empty".to_owned()))?;
        *cached = Some((Instant::now(), value.clone()));
        Ok(value)
    }
}

/// The header carrying the signature or token of each format.
pub fn signature_header(format: Format) -> &'static str {
    match format {
        Format::GitHub => "x-hub-signature-256",
        Format::GitLab => "x-gitlab-token",
        Format::Generic => "x-lockstep-signature-256",
    }
}

/// Whether `presented` (the value of [`signature_header`]) proves knowledge of `secret` for
/// `body`: `sha256=<hex HMAC-SHA256 of the body>` (GitHub, generic), or the secret itself
/// (GitLab). Constant time in the secret and the signature.
pub fn authentic(format: Format, secret: &[u8], presented: &[u8], body: &[u8]) -> bool {
    match format {
        Format::GitLab => bool::from(presented.ct_eq(secret)),
        Format::GitHub | Format::Generic => {
            let Some(hex) = presented.strip_prefix(b"sha256=") else {
                return false;
            };
            let Ok(signature) = hex::decode(hex) else {
                return false;
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                return false;
            };
            mac.update(body);
            mac.verify_slice(&signature).is_ok()
        }
    }
}

/// `sha256=<hex>`: the signature GitHub and the generic format send (for tests and for
/// scripts that post the generic format).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A token bucket over every request, authenticated or not: `burst` at once, then `per_second`.
pub struct RateLimit {
    burst: f64,
    per_second: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn new(burst: u32, per_second: u32) -> RateLimit {
        RateLimit {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Take a token; false when none is left.
    pub fn take(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, since) = &mut *state;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*since).as_secs_f64() * self.per_second).min(self.burst);
        *since = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_against_the_body_and_the_secret() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        // RFC 4231-style known answer: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
        assert_eq!(
            sign(b"key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let good = sign(b"s3cret", body);
        for format in [Format::GitHub, Format::Generic] {
            assert!(authentic(format, b"s3cret", good.as_bytes(), body));
            assert!(!authentic(format, b"other", good.as_bytes(), body));
            assert!(!authentic(format, b"s3cret", good.as_bytes(), b"{}"));
            assert!(!authentic(format, b"s3cret", &good.as_bytes()[7..], body));
            assert!(!authentic(format, b"s3cret", b"sha256=zz", body));
            assert!(!authentic(format, b"s3cret", b"", body));
        }
        assert!(authentic(Format::GitLab, b"s3cret", b"s3cret", body));
        assert!(!authentic(Format::GitLab, b"s3cret", b"s3cre", body));
        assert!(!authentic(Format::GitLab, b"s3cret", good.as_bytes(), body));
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_refills() {
        let limit = RateLimit::new(3, 1000);
        assert!((0..3).all(|_| limit.take()));
        let slow = RateLimit::new(2, 1);
        assert!(slow.take() && slow.take());
        assert!(!slow.take(), "the burst is spent");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(slow.take(), "a token came back after a second");
    }
}

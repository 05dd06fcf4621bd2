//! What a push webhook says (which repository, which ref) in the GitHub, GitLab and generic
//! formats, and which syncs follow it: URLs compared by repository identity, not spelling.

use serde::Deserialize;

use crate::cluster::crd::{LockstepSyncSpec, Revision};

/// The Git host that sent a webhook, from the path it was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `X-Hub-Signature-256`, `X-GitHub-Event`.
    GitHub,
    /// `X-Gitlab-Token`, `X-Gitlab-Event`.
    GitLab,
    /// `X-Lockstep-Signature-256` and `{"repository": URL, "ref" | "branch": …}`.
    Generic,
}

/// A push: the repository's URLs (any of them may be the one a sync names) and the ref.
#[derive(Debug, PartialEq, Eq)]
pub struct Push {
    pub urls: Vec<String>,
    /// `refs/heads/main`, `refs/tags/v1`, or a bare branch name (generic `branch`).
    pub git_ref: String,
}

/// A body that is not a push of the format it claims.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

#[derive(Deserialize)]
struct GitHubBody {
    #[serde(rename = "ref")]
    git_ref: String,
    repository: GitHubRepo,
}

#[derive(Deserialize)]
struct GitHubRepo {
    clone_url: Option<String>,
    html_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
}

#[derive(Deserialize)]
struct GitLabBody {
    #[serde(rename = "ref")]
    git_ref: String,
    project: GitLabProject,
}

#[derive(Deserialize)]
struct GitLabProject {
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct GenericBody {
    repository: String,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    branch: Option<String>,
}

/// The push in an authenticated `body` of `format`.
pub fn parse(format: Format, body: &[u8]) -> Result<Push, Malformed> {
    let bad = |e: serde_json::Error| Malformed(format!("not a push event body: {e}"));
    let push = match format {
        Format::GitHub => {
            let b: GitHubBody = serde_json::from_slice(body).map_err(bad)?;
            let r = b.repository;
            Push {
                urls: [r.clone_url, r.html_url, r.ssh_url, r.git_url]
                    .into_iter()
                    .flatten()
                    .collect(),
                git_ref: b.git_ref,
            }
        }
        Format::GitLab => {
            let b: GitLabBody = serde_json::from_slice(body).map_err(bad)?;
            let p = b.project;
            Push {
                urls: [p.git_http_url, p.git_ssh_url, p.web_url]
                    .into_iter()
                    .flatten()
                    .collect(),
                git_ref: b.git_ref,
            }
        }
        Format::Generic => {
            let b: GenericBody = serde_json::from_slice(body).map_err(bad)?;
            let git_ref = b.git_ref.or(b.branch).ok_or_else(|| {
                Malformed("the body names neither \"ref\" nor \"branch\"".to_owned())
            })?;
            Push {
                urls: vec![b.repository],
                git_ref,
            }
        }
    };
    if push.urls.is_empty() {
        return Err(Malformed("the body names no repository URL".to_owned()));
    }
    Ok(push)
}

/// A repository's identity, the same for every spelling of its URL: `host/path` with the
/// host lower-cased, user, port and scheme (https, http, ssh, git, scp-like `user@host:path`)
/// dropped, and the path without a trailing `/` or `.git`. `file://` URLs keep their
/// absolute path (`/srv/git/repo`).
pub fn normalise(url: &str) -> String {
    let url = url.trim();
    let (host, path) = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').unwrap_or((rest, "")),
        // scp-like: user@host:path (no scheme, a ':' before any '/')
        None => match url.split_once(':') {
            Some((host, path)) if !host.contains('/') => (host, path),
            _ => ("", url),
        },
    };
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let mut path = path.trim_matches('/');
    while let Some(p) = path.strip_suffix(".git").or_else(|| path.strip_suffix('/')) {
        path = p;
    }
    format!(
        "{}/{}",
        host.to_ascii_lowercase(),
        path.trim_start_matches('/')
    )
}

impl Push {
    /// Whether a sync with `spec` follows the pushed repository and ref: its branch (or tag,
    /// for a moved tag) is the one pushed. A sync pinned to a commit follows no push.
    pub fn concerns(&self, spec: &LockstepSyncSpec) -> bool {
        let wanted = normalise(&spec.url);
        if !self.urls.iter().any(|u| normalise(u) == wanted) {
            return false;
        }
        let pushed = self.git_ref.as_str();
        match spec.git_ref.revision() {
            Ok(Revision::Branch(b)) => {
                pushed == b || pushed.strip_prefix("refs/heads/") == Some(b.as_str())
            }
            Ok(Revision::Tag(t)) => pushed.strip_prefix("refs/tags/") == Some(t.as_str()),
            Ok(Revision::Commit(_)) | Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_repository_is_the_same_repository() {
        let same = [
            "https://github.com/org/repo",
            "https://GitHub.com/org/repo.git",
            "https://github.com/org/repo/",
            "http://user:token@github.com:443/org/repo.git/",
            "git@github.com:org/repo.git",
            "ssh://git@github.com/org/repo",
            "ssh://git@GITHUB.COM:22/org/repo.git",
            "git://github.com/org/repo.git",
        ];
        for url in same {
            assert_eq!(normalise(url), "github.com/org/repo", "{url}");
        }
        for other in [
            "https://github.com/org/repo2",
            "https://gitlab.com/org/repo",
            "https://github.com/org/repo/sub",
            "https://github.com/other/repo",
        ] {
            assert_ne!(normalise(other), "github.com/org/repo", "{other}");
        }
        assert_eq!(normalise("file:///srv/git/repo.git"), "/srv/git/repo");
        assert_eq!(
            normalise("file:///srv/git/repo/"),
            normalise("file:///srv/git/repo")
        );
        assert_ne!(
            normalise("file:///srv/git/repo"),
            normalise("file:///srv/git/other")
        );
    }

    fn spec(url: &str, git_ref: serde_json::Value) -> LockstepSyncSpec {
        serde_json::from_value(serde_json::json!({
            "url": url, "ref": git_ref, "trust": {"kind": "ConfigMap", "name": "t"}
        }))
        .unwrap()
    }

    #[test]
    fn a_push_concerns_the_syncs_of_its_repository_and_ref_only() {
        let push = parse(
            Format::GitHub,
            br#"{"ref": "refs/heads/main", "repository": {
                "clone_url": "https://github.com/org/repo.git",
                "ssh_url": "git@github.com:org/repo.git"}}"#,
        )
        .unwrap();
        let main = serde_json::json!({"branch": "main"});
        assert!(push.concerns(&spec("ssh://git@github.com/org/repo", main.clone())));
        assert!(push.concerns(&spec("https://github.com/org/repo", main.clone())));
        assert!(!push.concerns(&spec("https://github.com/org/other", main)));
        let dev = serde_json::json!({"branch": "dev"});
        assert!(!push.concerns(&spec("https://github.com/org/repo", dev)));
        let pinned = serde_json::json!({"commit": "0".repeat(40)});
        assert!(!push.concerns(&spec("https://github.com/org/repo", pinned)));

        let tag = parse(
            Format::GitLab,
            br#"{"ref": "refs/tags/v1", "project": {"git_http_url": "https://gitlab.com/g/r.git"}}"#,
        )
        .unwrap();
        assert!(tag.concerns(&spec(
            "https://gitlab.com/g/r",
            serde_json::json!({"tag": "v1"})
        )));
        assert!(!tag.concerns(&spec(
            "https://gitlab.com/g/r",
            serde_json::json!({"branch": "v1"})
        )));

        let generic = parse(
            Format::Generic,
            br#"{"repository": "file:///srv/r", "branch": "main"}"#,
        )
        .unwrap();
        assert!(generic.concerns(&spec(
            "file:///srv/r.git",
            serde_json::json!({"branch": "main"})
        )));
    }

    #[test]
    fn bodies_that_are_not_pushes_are_malformed() {
        assert!(parse(Format::GitHub, b"not json").is_err());
        assert!(parse(Format::GitHub, br#"{"ref": "refs/heads/main"}"#).is_err());
        assert!(parse(Format::Generic, br#"{"repository": "https://h/r"}"#).is_err());
        assert!(parse(Format::GitLab, br#"{"ref": "x", "project": {}}"#).is_err());
    }
}

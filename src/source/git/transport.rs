//! How a fetch reaches its remote: the credentials a caller gives (HTTP user and password
//! or token, or an SSH deploy key), handed to gix without Git's credential helpers or a
//! prompt.

use std::path::Path;
use std::time::Duration;

use gix::Repository;

use super::ssh::{self, SshCredentials};
use super::{GitError, gix_error};

/// Credentials for a remote: a user and password (or token) for HTTPS, a deploy key and
/// host keys for SSH.
#[derive(Clone, Debug)]
pub enum GitCredentials {
    Http(HttpCredentials),
    Ssh(SshCredentials),
}

/// Credentials for an HTTPS remote. `Debug` does not show the password.
#[derive(Clone)]
pub struct HttpCredentials {
    pub username: String,
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for HttpCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How one fetch reaches its remote, checked against the URL before anything connects.
pub(super) enum Access<'a> {
    /// HTTP(S), `file://` or `git://`: with HTTP credentials, or none.
    Plain(Option<&'a HttpCredentials>),
    /// An SSH URL: always with a deploy key and host keys.
    Ssh(&'a SshCredentials),
}

impl<'a> Access<'a> {
    /// The access `credentials` give to `url`: an SSH URL needs SSH credentials, and SSH
    /// credentials are for an SSH URL only.
    pub(super) fn choose(
        url: &str,
        credentials: Option<&'a GitCredentials>,
    ) -> Result<Access<'a>, GitError> {
        match (ssh::is_ssh_url(url), credentials) {
            (true, Some(GitCredentials::Ssh(key))) => Ok(Access::Ssh(key)),
            (true, _) => Err(GitError::SshNeedsKey {
                url: url.to_owned(),
            }),
            (false, Some(GitCredentials::Ssh(_))) => Err(GitError::SshKeyForOtherUrl {
                url: url.to_owned(),
            }),
            (false, Some(GitCredentials::Http(http))) => Ok(Access::Plain(Some(http))),
            (false, None) => Ok(Access::Plain(None)),
        }
    }

    /// Whether the caller gave credentials.
    pub(super) fn has_credentials(&self) -> bool {
        !matches!(self, Access::Plain(None))
    }

    /// For SSH, the key files of this fetch (next to the cache) and `repo`'s configuration
    /// to run `ssh` with them alone, killed after `deadline`.
    pub(super) fn ssh_session(
        &self,
        repo: &mut Repository,
        cache: &Path,
        url: &str,
        deadline: Duration,
    ) -> Result<Option<ssh::SshSession>, GitError> {
        let Access::Ssh(key) = self else {
            return Ok(None);
        };
        let parent = cache.parent().unwrap_or(cache);
        let session = ssh::SshSession::new(key, parent).map_err(GitError::Ssh)?;
        let setup_error = || gix_error(format!("cannot set up ssh for {url}"));
        let mut config = repo.config_snapshot_mut();
        config
            .set_value(
                &gix::config::tree::Core::SSH_COMMAND,
                session.command(deadline).as_str(),
            )
            .map_err(setup_error())?;
        config
            .set_value(&gix::config::tree::Ssh::VARIANT, "ssh")
            .map_err(setup_error())?;
        config.commit().map_err(setup_error())?;
        Ok(Some(session))
    }

    /// `connection` with our own credentials or none (a controller must never run
    /// credential helpers or prompt) and, over HTTP(S), every request bounded by `timeout`.
    pub(super) fn prepare<'remote, 'auth, 'repo, T>(
        &self,
        repo: &Repository,
        url: &str,
        connection: gix::remote::Connection<'remote, 'auth, 'repo, T>,
        timeout: Duration,
    ) -> Result<gix::remote::Connection<'remote, 'static, 'repo, T>, gix::Error>
    where
        T: gix::protocol::transport::client::blocking_io::Transport,
    {
        let connection = self.authenticate(connection);
        Ok(match http_options(repo, url, timeout)? {
            Some(options) => connection.with_transport_options(options),
            None => connection,
        })
    }

    /// `connection` with our own credentials or none.
    fn authenticate<'remote, 'auth, 'repo, T>(
        &self,
        connection: gix::remote::Connection<'remote, 'auth, 'repo, T>,
    ) -> gix::remote::Connection<'remote, 'static, 'repo, T>
    where
        T: gix::protocol::transport::client::blocking_io::Transport,
    {
        let http = match self {
            Access::Plain(http) => *http,
            Access::Ssh(_) => None,
        };
        let username = http.map(|c| c.username.clone());
        let password = http.map(|c| c.password.clone());
        connection.with_credentials(move |action| match (action, &username, &password) {
            (gix::credentials::helper::Action::Get(context), Some(username), Some(password)) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: username.clone(),
                        password: password.to_string(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
            }
            _ => Ok(None),
        })
    }
}

/// Whether `url` is fetched over HTTP(S), where a refusal (401, 403) is about credentials.
pub(super) fn is_http_url(url: &str) -> bool {
    gix::url::parse(gix::bstr::BStr::new(url))
        .is_ok_and(|u| matches!(u.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https))
}

/// How long one HTTP request may wait: to connect (TCP and TLS), for the answer's headers,
/// and for each read of its body. A server that accepts and then says nothing fails after
/// this; one that keeps answering is bounded by the fetch deadline instead.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The transport options Git config gives `url`, with the reqwest client's timeouts set to
/// `timeout` (gix's reqwest backend ignores `http.lowSpeedTime` and friends, and its own
/// defaults are reqwest's); `None` for a URL that is not HTTP(S).
fn http_options(
    repo: &Repository,
    url: &str,
    timeout: Duration,
) -> Result<Option<Box<dyn std::any::Any>>, gix::Error> {
    use gix::protocol::transport::client::blocking_io::http;
    let Some(mut options) = repo.transport_options(url, None)? else {
        return Ok(None);
    };
    let Some(http_options) = options.downcast_mut::<http::Options>() else {
        return Ok(Some(options));
    };
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |client| {
            Ok(client.connect_timeout(timeout).timeout(timeout))
        })),
        configure_request: None,
    };
    http_options.backend = Some(std::sync::Arc::new(std::sync::Mutex::new(backend)));
    Ok(Some(options))
}

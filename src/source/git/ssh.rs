//! Fetching over SSH, with nothing from the machine it runs on: the deploy key and the
//! `known_hosts` lines come from the caller (a sync's Secret), are written to a private
//! directory for the one fetch and removed after it, and `ssh` runs with no user or system
//! config, no agent, no prompt, and the host key checked strictly against those lines only.

use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::signing::OpenSshKeyHeader;

/// How long `ssh` may take to connect, and how long a silent server is tolerated.
const CONNECT_TIMEOUT_SECONDS: u32 = 30;
const SERVER_ALIVE_SECONDS: u32 = 15;

/// A deploy key and the host keys to accept. `Debug` does not show the key.
#[derive(Clone)]
pub struct SshCredentials {
    /// An unencrypted OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub identity: Zeroizing<String>,
    /// `known_hosts` lines for the server: the only host keys accepted.
    pub known_hosts: String,
}

impl fmt::Debug for SshCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshCredentials")
            .field("identity", &"<redacted>")
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// Why SSH credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The identity is not a private key.
    #[error("the SSH identity is not a private key: {0}")]
    BadIdentity(String),
    /// The identity needs a passphrase, which nothing could type.
    #[error("the SSH identity is passphrase-protected; use a deploy key without a passphrase")]
    EncryptedIdentity,
    /// No host key to check the server against.
    #[error("known_hosts is empty: lockstep never connects to an SSH server it cannot check")]
    NoKnownHosts,
    /// Writing the files for `ssh` failed.
    #[error("cannot write the SSH key files in {dir}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether gix fetches `url` with `ssh` (`ssh://…`, `git+ssh://…`, scp-like `host:path`):
/// asked of gix's own URL parser, so the two can never disagree. (Regression: a hand-made
/// test took `a:repo` and `[::1]:repo` for local paths, which gix fetches over ssh — with
/// the machine's ssh setup.)
pub fn is_ssh_url(url: &str) -> bool {
    gix::url::parse(gix::bstr::BStr::new(url)).is_ok_and(|u| u.scheme == gix::url::Scheme::Ssh)
}

/// Check the key text before ssh sees it: one armored private key, and not one that needs
/// a passphrase (nothing could type it; a bad Secret must fail once, not be retried against
/// the Git host). For the OpenSSH format the cipher is read from the key's header (the
/// core's [`OpenSshKeyHeader`], which reads signing keys too), whatever its type; the rest
/// of the key is for ssh to judge.
fn check_identity(text: &str) -> Result<(), SshError> {
    if text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        let header =
            OpenSshKeyHeader::read(text).map_err(|why| SshError::BadIdentity(why.to_string()))?;
        return if header.is_encrypted() {
            Err(SshError::EncryptedIdentity)
        } else {
            Ok(())
        };
    }
    let bad = |why: &str| Err(SshError::BadIdentity(why.to_owned()));
    let pem = text.starts_with("-----BEGIN ")
        && text
            .lines()
            .next()
            .is_some_and(|l| l.ends_with(" PRIVATE KEY-----"));
    if !pem {
        return bad("no -----BEGIN … PRIVATE KEY----- armor at the start");
    }
    // PEM: `Proc-Type: 4,ENCRYPTED`, or PKCS#8 `BEGIN ENCRYPTED PRIVATE KEY`.
    if text.contains("ENCRYPTED") {
        return Err(SshError::EncryptedIdentity);
    }
    Ok(())
}

/// Remove what a killed process left under `cache_root` (its per-sync directories hold the
/// key directories): run at startup, before any fetch.
pub fn remove_stale_sessions(cache_root: &Path) {
    let Ok(syncs) = std::fs::read_dir(cache_root) else {
        return;
    };
    for sync in syncs.flatten() {
        let Ok(entries) = std::fs::read_dir(sync.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(SESSION_PREFIX)
            {
                overwrite(&entry.path().join("identity"));
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

const SESSION_PREFIX: &str = ".lockstep-ssh-";

/// The key files of one fetch, in a directory only this process can read; removed (the key
/// overwritten first) when dropped.
pub struct SshSession {
    dir: tempfile::TempDir,
}

impl SshSession {
    /// Check `credentials` and write them under `parent`.
    pub fn new(credentials: &SshCredentials, parent: &Path) -> Result<SshSession, SshError> {
        check_identity(credentials.identity.trim())?;
        if credentials
            .known_hosts
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Err(SshError::NoKnownHosts);
        }
        let io_error = |source| SshError::Io {
            dir: parent.to_owned(),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix(SESSION_PREFIX)
            .tempdir_in(parent)
            .map_err(io_error)?;
        let session = SshSession { dir };
        // Only this process's user may enter it (tempfile makes the files 0600, ssh wants it).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(session.dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(io_error)?;
        }
        let mut identity = Zeroizing::new(credentials.identity.trim().to_owned());
        identity.push('\n');
        session
            .write("identity", identity.as_bytes())
            .map_err(io_error)?;
        let mut known_hosts = credentials.known_hosts.trim_end().to_owned();
        known_hosts.push('\n');
        session
            .write("known_hosts", known_hosts.as_bytes())
            .map_err(io_error)?;
        Ok(session)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut file = tempfile::Builder::new()
            .prefix(name)
            .tempfile_in(self.dir.path())?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        file.persist(self.dir.path().join(name))
            .map_err(|e| e.error)?;
        Ok(())
    }

    /// The `ssh` command line for `core.sshCommand` (run by a shell, so paths are quoted);
    /// its stderr goes to a file, for [`Self::stderr`]. `ssh` is killed after `limit`
    /// (coreutils `timeout`): keep-alives only show that sshd lives, not that the Git side
    /// answers, and gix cannot interrupt a read blocked on ssh's output.
    pub fn command(&self, limit: Duration) -> String {
        let path = |name: &str| quote(&self.dir.path().join(name));
        [
            format!(
                "exec timeout --kill-after=5 {}",
                (limit.as_secs() + u64::from(limit.subsec_nanos() > 0)).max(1)
            ),
            "ssh -F /dev/null".to_owned(),
            format!("-i {}", path("identity")),
            "-o IdentitiesOnly=yes -o IdentityAgent=none".to_owned(),
            format!("-o UserKnownHostsFile={}", path("known_hosts")),
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes".to_owned(),
            "-o BatchMode=yes -o LogLevel=ERROR".to_owned(),
            format!("-o ConnectTimeout={CONNECT_TIMEOUT_SECONDS}"),
            format!("-o ServerAliveInterval={SERVER_ALIVE_SECONDS} -o ServerAliveCountMax=4"),
            format!("2>>{}", path("stderr")),
        ]
        .join(" ")
    }

    /// What `ssh` said on stderr, in short: its last lines that are not banner art (the
    /// `@@@` of a changed host key), joined, at most 500 characters. Empty if nothing.
    pub fn stderr(&self) -> String {
        let text = std::fs::read(self.dir.path().join("stderr")).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('@'))
            .collect();
        let said = lines[lines.len().saturating_sub(2)..].join(" ");
        said.chars().take(500).collect()
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        overwrite(&self.dir.path().join("identity"));
    }
}

/// Best effort: the key's bytes do not stay on disk after the fetch.
fn overwrite(identity: &Path) {
    if let Ok(len) = std::fs::metadata(identity).map(|m| m.len())
        && let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(identity)
    {
        let _ = file.write_all(&vec![0; len as usize]);
        let _ = file.sync_all();
    }
}

/// `path` in single quotes for `sh`.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::SigningKey;

    fn credentials() -> SshCredentials {
        let key = SigningKey::generate("deploy").unwrap();
        SshCredentials {
            identity: key.to_openssh(),
            known_hosts: "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n".into(),
        }
    }

    #[test]
    fn ssh_urls_are_told_apart() {
        for url in [
            "ssh://git@example.com/shop.git",
            "ssh://git@example.com:2222/shop.git",
            "git+ssh://example.com/shop.git",
            "git@example.com:shop/deploy.git",
            "example.com:shop.git",
            // What gix fetches over ssh, so what must need a deploy key.
            "a:repo",
            "x:/r",
            "[::1]:repo",
        ] {
            assert!(is_ssh_url(url), "{url}");
        }
        for url in [
            "https://example.com/shop.git",
            "file:///srv/git/shop.git",
            "/srv/git/shop.git",
            "./shop.git",
        ] {
            assert!(!is_ssh_url(url), "{url}");
        }
    }

    #[test]
    fn the_session_writes_private_files_and_removes_them() {
        let parent = tempfile::tempdir().unwrap();
        let c = credentials();
        let session = SshSession::new(&c, parent.path()).unwrap();
        let dir = session.dir.path().to_owned();
        let identity = std::fs::read_to_string(dir.join("identity")).unwrap();
        assert_eq!(identity.trim(), c.identity.trim());
        assert!(identity.ends_with('\n'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("identity")), 0o600);
        }
        let command = session.command(Duration::from_secs(300));
        assert!(
            command.starts_with("exec timeout --kill-after=5 300 ssh "),
            "{command}"
        );
        assert!(command.contains("StrictHostKeyChecking=yes"), "{command}");
        assert!(command.contains(&format!("-i '{}/identity'", dir.display())));
        drop(session);
        assert!(!dir.exists());
    }

    #[test]
    fn unusable_credentials_are_refused_before_anything_is_written() {
        let parent = tempfile::tempdir().unwrap();
        let mut no_hosts = credentials();
        no_hosts.known_hosts = "# nothing\n\n".into();
        assert!(matches!(
            SshSession::new(&no_hosts, parent.path()),
            Err(SshError::NoKnownHosts)
        ));
        let mut not_a_key = credentials();
        not_a_key.identity = "ssh-ed25519 AAAA… a public key".to_owned().into();
        assert!(matches!(
            SshSession::new(&not_a_key, parent.path()),
            Err(SshError::BadIdentity(_))
        ));
        for junk in [
            "-----BEGIN OPENSSH PRIVATE KEY-----\n!!!\n-----END OPENSSH PRIVATE KEY-----\n",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n",
            "text first\n-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        ] {
            let mut c = credentials();
            c.identity = junk.to_owned().into();
            assert!(
                matches!(
                    SshSession::new(&c, parent.path()),
                    Err(SshError::BadIdentity(_))
                ),
                "{junk}"
            );
        }
        for encrypted in [
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        ] {
            let mut c = credentials();
            c.identity = encrypted.to_owned().into();
            assert!(matches!(
                SshSession::new(&c, parent.path()),
                Err(SshError::EncryptedIdentity)
            ));
        }
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
        let debug = format!("{:?}", credentials());
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    #[test]
    fn key_directories_a_killed_process_left_are_removed_at_startup() {
        let root = tempfile::tempdir().unwrap();
        let sync = root.path().join("shop_app");
        std::fs::create_dir_all(&sync).unwrap();
        let left = SshSession::new(&credentials(), &sync).unwrap();
        let dir = left.dir.path().to_owned();
        std::mem::forget(left); // as if the process died mid-fetch
        let cache = sync.join("0123abcd");
        std::fs::create_dir_all(&cache).unwrap();
        remove_stale_sessions(root.path());
        assert!(!dir.exists());
        assert!(cache.exists(), "the Git cache stays");
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}

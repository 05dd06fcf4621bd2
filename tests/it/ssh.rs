//! Git over SSH against a real OpenSSH server ([`TestSshd`]): the deploy key and host keys
//! come from the caller, the host key is checked strictly, and nothing is left on disk.

use std::process::Command;
use std::time::{Duration, Instant};

use lockstep::source::git::{
    FetchRef, GitCredentials, GitError, HttpCredentials, SshCredentials, fetch, fetch_within,
    read_commit,
};

use crate::harness::TestSshd;
use crate::invariants::render;
use crate::reconcile::git_fixture;

fn credentials(sshd: &TestSshd) -> GitCredentials {
    GitCredentials::Ssh(SshCredentials {
        identity: sshd.identity().into(),
        known_hosts: sshd.known_hosts(),
    })
}

/// The Git fixture (see `git_fixture`) and its URL on `sshd`.
fn served(sshd: &TestSshd) -> (tempfile::TempDir, String, String, String, String) {
    let (tmp, file_url, first, second, _) = git_fixture();
    let url = sshd.url(std::path::Path::new(file_url.trim_start_matches("file://")));
    (tmp, url, file_url, first, second)
}

/// Every `.lockstep-ssh-*` directory left under `dir`.
fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".lockstep-ssh-"))
        .collect()
}

#[test]
fn a_branch_tag_and_commit_are_fetched_over_ssh_with_a_deploy_key() {
    let sshd = TestSshd::start();
    let (tmp, url, _, first, second) = served(&sshd);
    let cache = tmp.path().join("cache");
    let head = fetch(
        &cache,
        &url,
        FetchRef::Branch("main"),
        Some(&credentials(&sshd)),
    )
    .unwrap_or_else(|e| panic!("{e:?}\nsshd: {}", sshd.log()));
    assert_eq!(head.id, second);
    let (files, _) = read_commit(&cache, &head.id, "deploy").unwrap();
    assert_eq!(files.files["a.yaml"], b"a: 2\n");
    let tag = fetch(&cache, &url, FetchRef::Tag("v1"), Some(&credentials(&sshd))).unwrap();
    assert_eq!(tag.id, first);
    let by_id = fetch(
        &tmp.path().join("cache2"),
        &url,
        FetchRef::Commit(&first),
        Some(&credentials(&sshd)),
    )
    .unwrap();
    assert_eq!(by_id.id, first);
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    // The key files are gone once each fetch is over.
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[test]
fn a_server_whose_host_key_is_not_in_known_hosts_is_refused() {
    let sshd = TestSshd::start();
    let other = TestSshd::start();
    let (tmp, url, ..) = served(&sshd);
    let cache = tmp.path().join("cache");
    // This server's address with the other server's host key.
    let (ours, theirs) = (sshd.known_hosts(), other.known_hosts());
    let wrong = format!(
        "{} {}",
        ours.split_once(' ').unwrap().0,
        theirs.split_once(' ').unwrap().1
    );
    let credentials = GitCredentials::Ssh(SshCredentials {
        identity: sshd.identity().into(),
        known_hosts: wrong,
    });
    let err = fetch(&cache, &url, FetchRef::Branch("main"), Some(&credentials)).unwrap_err();
    let chain = render(&err);
    eprintln!("refused: {chain}");
    assert!(matches!(err, GitError::Git { .. }), "{chain}");
    assert!(chain.contains("Host key verification failed"), "{chain}");
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "the key was offered to an unverified server: {}",
        sshd.log()
    );
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

#[test]
fn a_key_the_server_does_not_authorize_is_refused() {
    let sshd = TestSshd::start();
    let stranger = TestSshd::start();
    let (tmp, url, ..) = served(&sshd);
    let credentials = GitCredentials::Ssh(SshCredentials {
        identity: stranger.identity().into(),
        known_hosts: sshd.known_hosts(),
    });
    let err = fetch(
        &tmp.path().join("cache"),
        &url,
        FetchRef::Branch("main"),
        Some(&credentials),
    )
    .unwrap_err();
    let chain = render(&err);
    eprintln!("refused: {chain}");
    assert!(matches!(err, GitError::Git { .. }), "{chain}");
    assert!(chain.contains("Permission denied (publickey)"), "{chain}");
    assert!(!sshd.log().contains("Accepted publickey"), "{}", sshd.log());
}

#[test]
fn an_ssh_url_without_a_deploy_key_is_refused_before_connecting() {
    let sshd = TestSshd::start();
    let (tmp, url, file_url, ..) = served(&sshd);
    let cache = tmp.path().join("cache");
    for credentials in [
        None,
        Some(GitCredentials::Http(HttpCredentials {
            username: "git".into(),
            password: "token".to_owned().into(),
        })),
    ] {
        let err = fetch(&cache, &url, FetchRef::Branch("main"), credentials.as_ref()).unwrap_err();
        assert!(matches!(err, GitError::SshNeedsKey { .. }), "{err}");
        assert!(err.to_string().contains("known_hosts"), "{err}");
    }
    // And a deploy key for a URL that is not SSH.
    let err = fetch(
        &cache,
        &file_url,
        FetchRef::Branch("main"),
        Some(&credentials(&sshd)),
    )
    .unwrap_err();
    assert!(matches!(err, GitError::SshKeyForOtherUrl { .. }), "{err}");
    // One connection: the harness's own readiness probe.
    assert_eq!(
        sshd.log().matches("Connection from").count(),
        1,
        "a connection was made: {}",
        sshd.log()
    );
}

/// An ssh-keygen key of `args` (type, format, passphrase) in `dir`: (private, public).
fn ssh_keygen(dir: &std::path::Path, name: &str, args: &[&str]) -> (String, String) {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-C", name, "-f"])
        .arg(&path)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success());
    (
        std::fs::read_to_string(&path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub")).unwrap(),
    )
}

/// Regression (review): only keys ssh-key decodes were taken (ed25519, OpenSSH format); an
/// ECDSA key or a PEM-format RSA key, which ssh takes, was refused as "not a key".
#[test]
fn ecdsa_and_pem_format_deploy_keys_work_and_a_passphrase_is_refused_up_front() {
    let sshd = TestSshd::start();
    let (tmp, url, ..) = served(&sshd);
    for (name, args) in [
        ("ecdsa", &["-t", "ecdsa", "-N", ""][..]),
        (
            "rsa_pem",
            &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""][..],
        ),
    ] {
        let (identity, public) = ssh_keygen(tmp.path(), name, args);
        sshd.authorize(&public);
        let credentials = GitCredentials::Ssh(SshCredentials {
            identity: identity.into(),
            known_hosts: sshd.known_hosts(),
        });
        fetch(
            &tmp.path().join(format!("cache-{name}")),
            &url,
            FetchRef::Branch("main"),
            Some(&credentials),
        )
        .unwrap_or_else(|e| panic!("{name}: {}\nsshd: {}", render(&e), sshd.log()));
    }
    // Passphrase-protected, of a type ssh-key decodes and of one it does not: refused
    // before connecting, as a problem of the Secret (not a transient Git error).
    for (name, kind) in [("locked", "ed25519"), ("locked_ecdsa", "ecdsa")] {
        let (identity, public) = ssh_keygen(tmp.path(), name, &["-t", kind, "-N", "secret"]);
        sshd.authorize(&public);
        let credentials = GitCredentials::Ssh(SshCredentials {
            identity: identity.into(),
            known_hosts: sshd.known_hosts(),
        });
        let err = fetch(
            &tmp.path().join(format!("cache-{name}")),
            &url,
            FetchRef::Branch("main"),
            Some(&credentials),
        )
        .unwrap_err();
        assert!(matches!(err, GitError::Ssh(_)), "{name}: {}", render(&err));
        assert!(render(&err).contains("passphrase"), "{}", render(&err));
    }
}

/// Regression (review): the deadline covered receiving the pack only; a server that
/// completes the SSH handshake and then says nothing (keep-alives answered, Git silent)
/// hung the fetch, and with it the sync, for good.
#[test]
fn a_server_that_logs_in_and_then_says_nothing_fails_at_the_deadline() {
    let sshd = TestSshd::start_with("ForceCommand sleep 600");
    let (tmp, url, ..) = served(&sshd);
    let started = Instant::now();
    let err = fetch_within(
        &tmp.path().join("cache"),
        &url,
        FetchRef::Branch("main"),
        Some(&credentials(&sshd)),
        Duration::from_secs(3),
    )
    .unwrap_err();
    let took = started.elapsed();
    let chain = render(&err);
    eprintln!("after {took:?}: {chain}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(chain.contains("no complete answer within 3s"), "{chain}");
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
}

//! Shared parts of the integration tests: a real Distribution registry, image pushing, and
//! a mock for what a real registry cannot do.
//!
//! - [`TestRegistry`]: the Debian `docker-registry` on a free 127.0.0.1 port (storage in a
//!   temp dir under /dev/shm, delete enabled), optionally with htpasswd basic auth and/or
//!   TLS from a throw-away CA; killed on drop. Pushes test images with oci-client.
//! - [`MockLyingRegistry`]: a hand-written HTTP/1.1 server for lying digests, transient
//!   errors and stalls.
//! - [`TestSshd`]: Debian's OpenSSH server on a free 127.0.0.1 port, for Git over SSH.
//!
//! Every method is synchronous, so sync tests (running the `lockstep` binary) and
//! `#[tokio::test]`s can both use them: async work runs on a private runtime in a
//! scoped thread.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::images::{Pusher, base_url, http_client, run};
use lockstep::model::Digest;
use lockstep::resolve::{OCI_INDEX, OCI_MANIFEST};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How to run a [`TestRegistry`].
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth (htpasswd, bcrypt) with this user and password.
    pub auth: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a fresh test CA (see [`TestRegistry::ca_pem`]).
    pub tls: bool,
    /// Run an OCI 1.1 registry that serves the referrers API (go-containerregistry's, see
    /// `tests/ociregistry`) instead of Debian's `docker-registry` (Distribution 2.8), which
    /// does not. No auth or TLS with it.
    pub referrers: bool,
}

/// The OCI 1.1 registry with the referrers API (`tests/ociregistry`):
/// `$LOCKSTEP_OCIREGISTRY` (scripts/test exports it), else `scripts/oracle build ociregistry`.
fn oci_registry() -> PathBuf {
    crate::k8s_reader::built_oracle("ociregistry", "LOCKSTEP_OCIREGISTRY")
        .expect("the referrers tests need tests/ociregistry: run scripts/oracle build ociregistry")
}

/// A running `docker-registry serve`, killed on drop.
pub struct TestRegistry {
    child: Mutex<Option<Child>>,
    host: String,
    ca_pem: Option<Vec<u8>>,
    auth: Option<(String, String)>,
    log: PathBuf,
    /// The token service when started with [`TestRegistry::start_with_token_auth`].
    token_server: Option<MockServer>,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// Start a registry and wait until `GET /v2/` answers. Panics (with the registry's log)
    /// if it does not come up.
    pub fn start(opts: RegistryOptions) -> TestRegistry {
        Self::start_inner(opts, false)
    }

    /// Start a plain-HTTP registry that wants bearer tokens (Distribution's `auth: token`)
    /// from a mock token service on another port, which issues RS256 JWTs to `user`/`pass`
    /// (and to nobody else): the flow of Docker Hub, GHCR and most hosted registries.
    pub fn start_with_token_auth(user: &str, pass: &str) -> TestRegistry {
        Self::start_inner(
            RegistryOptions {
                auth: Some((user.into(), pass.into())),
                ..RegistryOptions::default()
            },
            true,
        )
    }

    fn start_inner(opts: RegistryOptions, token_auth: bool) -> TestRegistry {
        lockstep::resolve::install_crypto_provider();
        let shm = Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("lockstep-registry-");
        // Distribution fsyncs every file; memory-backed storage keeps tests fast.
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm)
        } else {
            builder.tempdir()
        }
        .expect("temp dir");
        let root = dir.path();
        let mut extra = String::new();
        let ca_pem = opts.tls.then(|| {
            let ca = make_certificates(root);
            extra.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                root.join("server.pem").display(),
                root.join("server.key").display()
            ));
            ca
        });
        let mut auth_yaml = String::new();
        let mut token_server = None;
        match &opts.auth {
            Some((user, pass)) if token_auth => {
                let server = start_token_server(root, user, pass);
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    server.host,
                    root.join("token.pem").display()
                );
                token_server = Some(server);
            }
            Some((user, pass)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .expect("run htpasswd (apache2-utils)");
                assert!(
                    out.status.success(),
                    "htpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::fs::write(root.join("htpasswd"), &out.stdout).unwrap();
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: lockstep-test\n    path: {}\n",
                    root.join("htpasswd").display()
                );
            }
            None => {}
        }
        let log = root.join("registry.log");
        // A free port can be taken between our probe and the registry's bind: try again.
        for _ in 0..5 {
            let port = StdListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: lockstep-test\n{extra}{auth_yaml}",
                data = root.join("data").display(),
            );
            let config_path = root.join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let out = std::fs::File::create(&log).unwrap();
            let mut command = if opts.referrers {
                assert!(
                    opts.auth.is_none() && !opts.tls,
                    "the referrers registry has no auth or TLS"
                );
                let mut c = Command::new(oci_registry());
                c.arg("--addr")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--dir")
                    .arg(root.join("data"));
                c
            } else {
                let mut c = Command::new("docker-registry");
                c.arg("serve").arg(&config_path);
                c
            };
            let program = format!("{:?}", command.get_program());
            let mut child = command
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("start {program} (scripts/test installs it): {e}"));
            let host = format!("127.0.0.1:{port}");
            match wait_ready(
                &mut child,
                &base_url(&host, ca_pem.is_some()),
                ca_pem.as_deref(),
            ) {
                Ok(()) => {
                    return TestRegistry {
                        child: Mutex::new(Some(child)),
                        host,
                        ca_pem,
                        auth: opts.auth,
                        log,
                        token_server,
                        dir,
                    };
                }
                Err(exited) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if exited && text.contains("address already in use") {
                        continue;
                    }
                    panic!("{program} did not start; its log:\n{text}");
                }
            }
        }
        panic!("the test registry: no free port after 5 tries");
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// The test CA's certificate (PEM) when started with `tls: true`.
    pub fn ca_pem(&self) -> Option<Vec<u8>> {
        self.ca_pem.clone()
    }

    /// Kill the registry now (for "registry stopped mid-run" tests). Idempotent.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The requests the registry served so far, as `"METHOD /path"` (from its access log),
    /// e.g. `"HEAD /v2/app/manifests/v1"`. TLS probes that never became HTTP are not listed.
    pub fn requests(&self) -> Vec<String> {
        // The access log line is written before the answer is flushed; a short pause makes
        // sure a just-finished request is on disk regardless.
        std::thread::sleep(Duration::from_millis(50));
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(access_log_request).collect()
    }

    /// A pusher for this registry (also usable from examples and scripts).
    pub fn pusher(&self) -> Pusher {
        Pusher {
            host: self.host.clone(),
            ca_pem: self.ca_pem.clone(),
            auth: self.auth.clone(),
        }
    }

    /// See [`Pusher::push_image`].
    pub fn push_image(&self, repo: &str, tag: &str, seed: &[u8]) -> Digest {
        self.pusher().push_image(repo, tag, seed)
    }

    /// See [`Pusher::push_index`].
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        seed: &[u8],
    ) -> (Digest, Vec<(String, Digest)>) {
        self.pusher().push_index(repo, tag, seed)
    }

    /// See [`Pusher::push_docker_list`].
    pub fn push_docker_list(
        &self,
        repo: &str,
        tag: &str,
        seed: &[u8],
    ) -> (Digest, Vec<(String, Digest)>) {
        self.pusher().push_docker_list(repo, tag, seed)
    }

    /// See [`Pusher::delete_manifest`].
    pub fn delete_manifest(&self, repo: &str, digest: &Digest) {
        self.pusher().delete_manifest(repo, digest)
    }

    fn base_url(&self) -> String {
        base_url(&self.host, self.ca_pem.is_some())
    }

    fn http_client(&self) -> reqwest::Client {
        http_client(self.ca_pem.as_deref())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real OpenSSH server (Debian's `openssh-server`) on a free 127.0.0.1 port, with its own
/// host key and one authorized client key, logging in as the current user: a Git URL on it
/// runs the real `git-upload-pack`. Killed on drop.
pub struct TestSshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    user: String,
}

impl TestSshd {
    pub fn start() -> TestSshd {
        TestSshd::start_with("")
    }

    /// [`TestSshd::start`] with extra `sshd_config` lines (a `ForceCommand`, say).
    pub fn start_with(extra_config: &str) -> TestSshd {
        let dir = tempfile::tempdir().unwrap();
        let keygen = |name: &str| {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                .arg(dir.path().join(name))
                .status()
                .unwrap();
            assert!(status.success(), "ssh-keygen {name}");
        };
        keygen("host_key");
        keygen("client_key");
        std::fs::copy(
            dir.path().join("client_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let sshd = ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd (Debian package openssh-server; scripts/test installs it)");
        // Privilege separation wants this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PidFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nLogLevel VERBOSE\n{extra_config}\n"
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-f"])
            .arg(dir.path().join("sshd_config"))
            .arg("-E")
            .arg(dir.path().join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        let mut sshd = TestSshd {
            child,
            port,
            dir,
            user,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited ({status}): {}", sshd.log());
            }
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Read as _;
                let mut banner = [0u8; 8];
                if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "sshd not up: {}", sshd.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// `ssh://USER@127.0.0.1:PORT/ABSOLUTE/PATH` for a repository on this machine.
    pub fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            repo.display()
        )
    }

    /// The `known_hosts` line for this server.
    pub fn known_hosts(&self) -> String {
        let key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        format!("[127.0.0.1]:{} {}", self.port, key.trim())
    }

    /// Authorize one more public key (an `authorized_keys` line).
    pub fn authorize(&self, public_key: &str) {
        let path = self.dir.path().join("authorized_keys");
        let mut keys = std::fs::read_to_string(&path).unwrap();
        keys.push_str(public_key.trim());
        keys.push('\n');
        std::fs::write(path, keys).unwrap();
    }

    /// The authorized client's private key (OpenSSH format).
    pub fn identity(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client_key")).unwrap()
    }

    /// What sshd logged (LogLevel VERBOSE: connections, accepted and refused keys).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `GET /v2/` until it answers (200, or 401 with auth). `Err(true)` if the process
/// exited, `Err(false)` after 10 s.
fn wait_ready(child: &mut Child, base_url: &str, ca_pem: Option<&[u8]>) -> Result<(), bool> {
    let client = http_client(ca_pem);
    let url = format!("{base_url}/v2/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Err(true);
        }
        let status = run(async { client.get(&url).send().await.map(|r| r.status().as_u16()) });
        if matches!(status, Ok(200 | 401)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(false)
}

/// `"METHOD /path"` from a combined-format access log line
/// (`127.0.0.1 - - [date] "HEAD /v2/a/manifests/v1 HTTP/1.1" 200 ...`).
fn access_log_request(line: &str) -> Option<String> {
    let (_, rest) = line.split_once("] \"")?;
    let request = rest.split('"').next()?;
    let mut parts = request.split(' ');
    let (method, path) = (parts.next()?, parts.next()?);
    Some(format!("{method} {path}"))
}

/// Run the `openssl` CLI in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "openssl {args:?}: {stderr}");
}

/// A throw-away CA and a server certificate for 127.0.0.1 / localhost, made with the
/// `openssl` CLI into `dir` (`server.pem`, `server.key`); returns the CA certificate (PEM).
pub(crate) fn make_certificates(dir: &Path) -> Vec<u8> {
    let openssl = |args: &[&str]| openssl(dir, args);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lockstep test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    std::fs::read(dir.join("ca.pem")).unwrap()
}

/// What a [`MockLyingRegistry`] does. `GET /v2/` always answers 200.
#[derive(Clone, Copy, Debug)]
pub enum MockBehavior {
    /// `HEAD` answers without `Docker-Content-Digest`; `GET` sends a manifest together with a
    /// `Docker-Content-Digest` that is not its sha256.
    LyingDigest,
    /// `HEAD` claims an OCI index with digest D; `GET` of D sends another index (still
    /// claiming D): a registry substituting platform manifests.
    LyingIndex,
    /// The first `times` manifest requests answer `status` (with `Retry-After: secs` when
    /// given); after that it serves a manifest honestly.
    FailThenServe {
        status: u16,
        retry_after_secs: Option<u64>,
        times: usize,
    },
    /// The first `times` manifest requests get the connection closed without an answer
    /// (a reset mid-request); after that it serves a manifest honestly.
    HangUpThenServe { times: usize },
    /// `HEAD` claims an OCI index; `GET` sends a body larger than any manifest, with no
    /// `Content-Length` (delimited by closing the connection), so only counting stops it.
    Oversized,
    /// Accepts connections and never answers (not even a TLS handshake).
    Stall,
    /// Serves the manifest honestly, but any blob it names with other bytes (claiming the
    /// digest asked for): a registry whose storage was tampered with, seen by a copy.
    LyingBlob,
    /// Like `LyingBlob`, but the blob is longer than the manifest declares.
    LongBlob,
    /// Serves the manifest honestly; the first `times` blob requests answer 503, then the
    /// blob is served honestly.
    FlakyBlob { times: usize },
}

/// A mock registry on 127.0.0.1 for cases a real registry cannot produce: lying digests,
/// transient errors, stalls. Plain HTTP; it answers a TLS ClientHello with a plain 400 as a
/// Go server does, so clients fall back to HTTP. Stops on drop.
pub struct MockLyingRegistry {
    server: MockServer,
}

struct MockState {
    behavior: MockBehavior,
    failures_served: AtomicUsize,
}

/// The honest single-platform manifest the mock serves.
fn mock_manifest() -> Vec<u8> {
    let d = Digest::of(b"mock");
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d.as_str(), "size": 4},
        "layers": [],
    }))
    .unwrap()
}

/// An index naming `child` for linux/amd64.
fn mock_index(child: &Digest) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.as_str(), "size": 1,
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap()
}

impl MockLyingRegistry {
    /// Start the mock on a free port.
    pub fn start(behavior: MockBehavior) -> MockLyingRegistry {
        let state = MockState {
            behavior,
            failures_served: AtomicUsize::new(0),
        };
        let server = MockServer::start(move |request: &MockRequest| match state.behavior {
            MockBehavior::Stall => MockAnswer::Stall,
            MockBehavior::Oversized
                if request.method == "GET" && request.path.contains("/manifests/") =>
            {
                let mut answer = format!(
                    "HTTP/1.1 200 Mock\r\nContent-Type: {OCI_INDEX}\r\nConnection: close\r\n\r\n"
                )
                .into_bytes();
                answer.resize(
                    answer.len() + lockstep::resolve::oci::MAX_MANIFEST_BYTES + 1,
                    b' ',
                );
                MockAnswer::SendAndClose(answer)
            }
            MockBehavior::HangUpThenServe { times }
                if request.path.contains("/manifests/")
                    && state.failures_served.fetch_add(1, Ordering::SeqCst) < times =>
            {
                MockAnswer::HangUp
            }
            _ => MockAnswer::Send(mock_response(&state, &request.method, &request.path)),
        });
        MockLyingRegistry { server }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.server.host.clone()
    }

    /// The digest of the manifest the mock serves honestly (what `FailThenServe` resolves to,
    /// and what `LyingDigest`'s body really hashes to).
    pub fn served_digest(&self) -> Digest {
        Digest::of(&mock_manifest())
    }

    /// The requests received so far, as `"METHOD /path"`.
    pub fn requests(&self) -> Vec<String> {
        self.server.requests.lock().unwrap().clone()
    }
}

/// One request as a [`MockServer`] handler sees it.
struct MockRequest {
    method: String,
    /// Path and query, as sent.
    path: String,
    /// The header lines, unparsed.
    headers: String,
}

impl MockRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// What a [`MockServer`] does with one request.
enum MockAnswer {
    /// Write these bytes (a whole HTTP answer) and keep the connection.
    Send(Vec<u8>),
    /// Write these bytes, then close the connection.
    SendAndClose(Vec<u8>),
    /// Hold the connection and say nothing.
    Stall,
    /// Close the connection without answering.
    HangUp,
}

type MockHandler = dyn Fn(&MockRequest) -> MockAnswer + Send + Sync;

/// A hand-written HTTP/1.1 server on 127.0.0.1 with keep-alive, in a thread of its own.
/// The handler decides each answer. Stops on drop.
struct MockServer {
    host: String,
    requests: Arc<Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockServer {
    fn start(handler: impl Fn(&MockRequest) -> MockAnswer + Send + Sync + 'static) -> MockServer {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<MockHandler> = Arc::new(handler);
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread_requests = requests.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            tokio::spawn(mock_connection(stream, handler.clone(), thread_requests.clone()));
                        }
                    }
                }
            });
        });
        MockServer {
            host,
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn mock_connection(
    mut stream: tokio::net::TcpStream,
    handler: Arc<MockHandler>,
    requests: Arc<Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if buf.first() == Some(&0x16) {
                // A TLS ClientHello: answer like a plain-HTTP Go server, then hang up.
                let _ = stream
                    .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                    .await;
                return;
            }
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let (first, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
        let mut words = first.split(' ');
        let request = MockRequest {
            method: words.next().unwrap_or("").to_owned(),
            path: words.next().unwrap_or("").to_owned(),
            headers: headers.to_owned(),
        };
        requests
            .lock()
            .unwrap()
            .push(format!("{} {}", request.method, request.path));
        match handler(&request) {
            MockAnswer::Send(response) => {
                if stream.write_all(&response).await.is_err() {
                    return;
                }
            }
            MockAnswer::SendAndClose(response) => {
                let _ = stream.write_all(&response).await;
                return;
            }
            MockAnswer::Stall => std::future::pending::<()>().await,
            MockAnswer::HangUp => return,
        }
    }
}

const TOKEN_SERVICE: &str = "lockstep-test";
const TOKEN_ISSUER: &str = "lockstep-test-issuer";

/// A mock token service (Distribution has none of its own): `GET /token?scope=…` with the
/// right basic credentials answers `{"token": JWT}` granting the scopes asked for; anything
/// else is 401. Keys and certificate (`token.pem`, which the registry trusts) go to `dir`.
fn start_token_server(dir: &Path, user: &str, pass: &str) -> MockServer {
    let openssl = |args: &[&str]| openssl(dir, args);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "token.key",
        "-out",
        "token.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lockstep test token issuer",
    ]);
    openssl(&[
        "x509",
        "-in",
        "token.pem",
        "-outform",
        "DER",
        "-out",
        "token.der",
    ]);
    let cert_der = std::fs::read(dir.join("token.der")).unwrap();
    let key = dir.join("token.key");
    let expected = format!(
        "Basic {}",
        base64(format!("{user}:{pass}").as_bytes(), false)
    );
    let user = user.to_owned();
    MockServer::start(move |request: &MockRequest| {
        let (path, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
        if path != "/token" || request.header("Authorization") != Some(expected.as_str()) {
            return MockAnswer::Send(http_response(
                401,
                &[],
                b"{\"details\":\"bad credentials\"}",
                false,
            ));
        }
        let access: Vec<serde_json::Value> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("scope="))
            .map(percent_decode)
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header =
            serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64(&cert_der, false)]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER, "sub": user, "aud": TOKEN_SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            base64(&serde_json::to_vec(&header).unwrap(), true),
            base64(&serde_json::to_vec(&claims).unwrap(), true)
        );
        let mut sign = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl dgst");
        sign.stdin
            .take()
            .unwrap()
            .write_all(signing_input.as_bytes())
            .unwrap();
        let signature = sign.wait_with_output().unwrap().stdout;
        let token = format!("{signing_input}.{}", base64(&signature, true));
        let body = serde_json::to_vec(&serde_json::json!({"token": token})).unwrap();
        MockAnswer::Send(http_response(
            200,
            &[("Content-Type", "application/json".into())],
            &body,
            false,
        ))
    })
}

/// Base64 (RFC 4648), standard with padding or URL-safe without.
pub fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if !url_safe {
            out.push_str(&"=="[..3 - chunk.len()]);
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mock_response(state: &MockState, method: &str, path: &str) -> Vec<u8> {
    let head = method == "HEAD";
    if path == "/v2/" {
        return http_response(200, &[], b"{}", head);
    }
    if let (MockBehavior::LyingBlob | MockBehavior::LongBlob, Some((_, digest))) =
        (state.behavior, path.split_once("/blobs/"))
    {
        let headers = [
            ("Content-Type", "application/octet-stream".to_owned()),
            ("Docker-Content-Digest", digest.to_owned()),
        ];
        let body: &[u8] = match state.behavior {
            MockBehavior::LongBlob => b"much longer than four bytes",
            _ => b"evil",
        };
        return http_response(200, &headers, body, head);
    }
    if let (MockBehavior::FlakyBlob { times }, true) = (state.behavior, path.contains("/blobs/")) {
        if state.failures_served.fetch_add(1, Ordering::SeqCst) < times {
            return http_response(503, &[], b"{\"errors\":[]}", head);
        }
        return http_response(200, &[], b"mock", head);
    }
    if !path.contains("/manifests/") {
        return http_response(
            404,
            &[],
            b"{\"errors\":[{\"code\":\"NOT_FOUND\",\"message\":\"not found\"}]}",
            head,
        );
    }
    let honest = mock_manifest();
    let honest_digest = Digest::of(&honest);
    match state.behavior {
        MockBehavior::LyingDigest => {
            if head {
                http_response(200, &[("Content-Type", OCI_MANIFEST.into())], &honest, true)
            } else {
                let lie = Digest::of(b"something else");
                http_response(
                    200,
                    &[
                        ("Content-Type", OCI_MANIFEST.into()),
                        ("Docker-Content-Digest", lie.to_string()),
                    ],
                    &honest,
                    false,
                )
            }
        }
        MockBehavior::LyingIndex => {
            let claimed_index = mock_index(&honest_digest);
            let claimed = Digest::of(&claimed_index);
            let substituted = mock_index(&Digest::of(b"a substituted platform manifest"));
            let headers = [
                ("Content-Type", OCI_INDEX.to_owned()),
                ("Docker-Content-Digest", claimed.to_string()),
            ];
            let body = if head { claimed_index } else { substituted };
            http_response(200, &headers, &body, head)
        }
        MockBehavior::FailThenServe {
            status,
            retry_after_secs,
            times,
        } => {
            if state.failures_served.fetch_add(1, Ordering::SeqCst) < times {
                let mut headers = Vec::new();
                if let Some(secs) = retry_after_secs {
                    headers.push(("Retry-After", secs.to_string()));
                }
                let body =
                    b"{\"errors\":[{\"code\":\"UNAVAILABLE\",\"message\":\"try again later\"}]}";
                return http_response(status, &headers, body, head);
            }
            honest_answer(head)
        }
        // Hang-ups happen before this is asked.
        MockBehavior::HangUpThenServe { .. }
        | MockBehavior::LyingBlob
        | MockBehavior::LongBlob
        | MockBehavior::FlakyBlob { .. } => honest_answer(head),
        MockBehavior::Oversized => {
            let headers = [
                ("Content-Type", OCI_INDEX.to_owned()),
                ("Docker-Content-Digest", Digest::of(b"huge").to_string()),
            ];
            http_response(200, &headers, b"", head)
        }
        MockBehavior::Stall => unreachable!("a stalled mock answers nothing"),
    }
}

/// The honest manifest with its true digest.
fn honest_answer(head: bool) -> Vec<u8> {
    let honest = mock_manifest();
    let headers = [
        ("Content-Type", OCI_MANIFEST.to_owned()),
        ("Docker-Content-Digest", Digest::of(&honest).to_string()),
    ];
    http_response(200, &headers, &honest, head)
}

/// An HTTP/1.1 answer with `Content-Length` (the body left out for HEAD).
fn http_response(status: u16, headers: &[(&str, String)], body: &[u8], head: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write!(
        out,
        "HTTP/1.1 {status} Mock\r\nContent-Length: {}\r\n",
        body.len()
    )
    .unwrap();
    for (name, value) in headers {
        write!(out, "{name}: {value}\r\n").unwrap();
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(body);
    }
    out
}

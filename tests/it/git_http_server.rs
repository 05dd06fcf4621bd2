//! [`TestGitHttps`]: a real Git server over HTTPS for the tests — Git's own `git http-backend`
//! (CGI, from the git package) behind a small HTTPS front written here (rustls, a
//! certificate from the harness's throw-away CA), which wants HTTP Basic auth with a token as
//! the password, as GitHub and GitLab take it (any non-empty user name), and answers 401
//! with `WWW-Authenticate: Basic` otherwise. Or, with [`TestGitHttps::silent`], a server that
//! accepts connections and never says a word. Stopped on drop.

// Not every test uses every helper.
#![allow(dead_code)]

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use ssh_key::encoding::base64::{Base64, Encoding as _};

/// One request the server saw: method, path (with query) and the Basic user, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub user: Option<String>,
    pub authorized: bool,
}

/// A running HTTPS Git server on 127.0.0.1 (see the module docs).
pub struct TestGitHttps {
    port: u16,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// What the accept loop does with a connection.
#[derive(Clone)]
enum Mode {
    /// Serve `git http-backend` for the repositories under `root` to whoever sends `token`.
    Serve { root: PathBuf, token: String },
    /// Keep the connection open and never answer (not even the TLS handshake).
    Silent,
}

impl TestGitHttps {
    /// Serve the repositories under `root` (`https://127.0.0.1:PORT/<dir name>`) to requests
    /// with `Authorization: Basic base64(<any user>:<token>)`.
    pub fn serve(root: &Path, token: &str) -> TestGitHttps {
        Self::start(Mode::Serve {
            root: root.to_owned(),
            token: token.to_owned(),
        })
    }

    /// Accept connections and never answer them.
    pub fn silent() -> TestGitHttps {
        Self::start(Mode::Silent)
    }

    fn start(mode: Mode) -> TestGitHttps {
        lockstep::resolve::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        crate::harness::make_certificates(dir.path());
        let config = Arc::new(tls_config(dir.path()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || accept_loop(listener, mode, config, stop, seen));
        }
        TestGitHttps {
            port,
            stop,
            seen,
            ca_file: dir.path().join("ca.pem"),
            _dir: dir,
        }
    }

    /// The URL of the repository directory `name` under the served root.
    pub fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    /// The test CA's certificate file (for `SSL_CERT_FILE`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The requests served so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestGitHttps {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn tls_config(dir: &Path) -> rustls::ServerConfig {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap()
}

fn accept_loop(
    listener: TcpListener,
    mode: Mode,
    config: Arc<rustls::ServerConfig>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
) {
    // Silent connections are held here until the server stops.
    let mut held = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => return,
        };
        stream.set_nonblocking(false).unwrap();
        match &mode {
            Mode::Silent => held.push(stream),
            Mode::Serve { root, token } => {
                let (root, token, config, seen) =
                    (root.clone(), token.clone(), config.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &root, &token, config, &seen);
                });
            }
        }
    }
}

/// One request on one connection (answered with `Connection: close`).
fn serve_one(
    tcp: TcpStream,
    root: &Path,
    token: &str,
    config: Arc<rustls::ServerConfig>,
    seen: &Mutex<Vec<SeenRequest>>,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let request = read_request(&mut reader)?;
    let user = request.basic_user_and_password();
    let authorized = user
        .as_ref()
        .is_some_and(|(user, password)| !user.is_empty() && password == token);
    seen.lock().unwrap().push(SeenRequest {
        method: request.method.clone(),
        path: request.target.clone(),
        user: user.map(|(user, _)| user),
        authorized,
    });
    let answer = if authorized {
        run_http_backend(root, &request)?
    } else {
        (
            "401 Unauthorized".to_owned(),
            vec!["WWW-Authenticate: Basic realm=\"lockstep-test\"".to_owned()],
            b"authentication required\n".to_vec(),
        )
    };
    let (status, headers, body) = answer;
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for header in headers {
        head.push_str(&header);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let stream = reader.get_mut();
    stream.write_all(head.as_bytes())?;
    stream.write_all(&body)?;
    stream.conn.send_close_notify();
    stream.flush()
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn basic_user_and_password(&self) -> Option<(String, String)> {
        let encoded = self.header("authorization")?.strip_prefix("Basic ")?;
        let decoded = String::from_utf8(Base64::decode_vec(encoded.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some((user.to_owned(), password.to_owned()))
    }
}

fn read_request(reader: &mut impl std::io::BufRead) -> std::io::Result<Request> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = request.header("content-length") {
        let mut body = vec![0; len.parse().unwrap_or(0)];
        reader.read_exact(&mut body)?;
        request.body = body;
    } else if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        request.body = read_chunked(reader)?;
    }
    Ok(request)
}

fn read_chunked(reader: &mut impl std::io::BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16).map_err(std::io::Error::other)?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                if line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

/// Run `git http-backend` for `request`: (status, headers, body) of its CGI answer.
fn run_http_backend(
    root: &Path,
    request: &Request,
) -> std::io::Result<(String, Vec<String>, Vec<u8>)> {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", "lockstep-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (header, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(value) = request.header(header) {
            command.env(variable, value);
        }
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let body = request.body.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out)?;
    let _ = writer.join();
    child.wait()?;
    Ok(parse_cgi(&out))
}

/// A CGI answer: headers (with `Status:` as the status), a blank line, the body.
fn parse_cgi(out: &[u8]) -> (String, Vec<String>, Vec<u8>) {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        });
    let Some((end, body_start)) = split else {
        return ("502 Bad Gateway".to_owned(), Vec::new(), out.to_vec());
    };
    let mut status = "200 OK".to_owned();
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(&out[..end]).lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_owned();
            }
            Some(_) => headers.push(line.trim().to_owned()),
            None => {}
        }
    }
    (status, headers, out[body_start..].to_vec())
}

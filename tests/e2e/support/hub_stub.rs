//! A Hugging Face Hub-shaped HTTP server on `127.0.0.1:0` for tests (issue 6, contract §3).
//!
//! It serves what the runtime's `hub` module asks for, the way huggingface.co answers:
//! - `GET /api/models/{org}/{name}/revision/{rev}` → `{"id", "sha", "siblings": [{"rfilename"}]}`;
//! - `HEAD|GET /{org}/{name}/resolve/{rev}/{file}` → `X-Repo-Commit`, `ETag` (git blob sha1 of a
//!   regular file) and the body; for large ("LFS") files a `302` to a CDN path on another host name
//!   (`localhost` instead of `127.0.0.1`) with `X-Linked-Etag` (the sha256) and `X-Linked-Size`;
//! - `GET /cdn/{sha256}` → the blob, with `Range: bytes=N-` support (206).
//!
//! Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) as the Hub
//! does. A repository can be made private (a bearer token is then required); every request is
//! counted and recorded; downloads of a blob can be broken midway a number of times, so that
//! resumption is tested.
//!
//! The same file is compiled into the library's unit tests (`#[path]` from `hub/mod.rs`) and into
//! the e2e test binary, so it only uses crates both have.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use sha1::Digest as _;

/// File extensions the stub stores "in LFS" (redirected to the CDN path, etag = sha256).
const LFS_EXTENSIONS: [&str; 6] = ["safetensors", "bin", "model", "spm", "wasm", "gz"];

/// One request the stub received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// `GET`, `HEAD`, ...
    pub(crate) method: String,
    /// Path and query.
    pub(crate) path: String,
    /// The `Range` header, if sent.
    pub(crate) range: Option<String>,
    /// The `Authorization` header, if sent.
    pub(crate) authorization: Option<String>,
    /// The `Host` header.
    pub(crate) host: Option<String>,
}

/// A file of a commit.
#[derive(Clone)]
struct StubFile {
    content: Bytes,
    sha256: String,
    git_sha1: String,
}

impl StubFile {
    fn new(content: Bytes) -> Self {
        let sha256 = sha256_hex(&content);
        let mut git = sha1::Sha1::new();
        git.update(format!("blob {}\0", content.len()).as_bytes());
        git.update(&content);
        let git_sha1 = hex(&git.finalize());
        Self {
            content,
            sha256,
            git_sha1,
        }
    }
}

#[derive(Default)]
struct StubRepo {
    /// Bearer token required to read the repository.
    token: Option<String>,
    /// Branch or tag name → commit.
    refs: HashMap<String, String>,
    /// Commit → file name → file.
    commits: HashMap<String, BTreeMap<String, StubFile>>,
}

/// Breaks the next `times` downloads of the blob whose sha256 is the key after `after` bytes.
#[derive(Clone, Copy)]
struct BreakRule {
    after: usize,
    times: usize,
}

#[derive(Default)]
struct StubState {
    repos: Mutex<HashMap<String, StubRepo>>,
    requests: Mutex<Vec<Recorded>>,
    breaks: Mutex<HashMap<String, BreakRule>>,
    /// Blobs (by sha256) served with their first byte changed.
    corrupt: Mutex<std::collections::HashSet<String>>,
    /// Requests still to be answered with 500.
    fail_next: Mutex<usize>,
    /// `false` while file bodies are held back ([`HubStub::hold_downloads`]).
    gate: Option<tokio::sync::watch::Sender<bool>>,
    /// Base URL the CDN redirects point to.
    cdn_base: Mutex<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running stub Hub; stops when dropped.
pub(crate) struct HubStub {
    addr: SocketAddr,
    state: Arc<StubState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HubStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HubStub {
    /// Starts an empty stub on `127.0.0.1:0` on the current tokio runtime.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stub hub");
        let addr = listener.local_addr().expect("stub hub address");
        let state = Arc::new(StubState {
            gate: Some(tokio::sync::watch::Sender::new(true)),
            ..StubState::default()
        });
        *lock(&state.cdn_base) = format!("http://localhost:{}", addr.port());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// The Hub base URL (`HF_ENDPOINT`), without a trailing slash.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// Publishes every file of `dir` (recursively, names relative to it) as a new commit of
    /// `model_id` and points `main` at it. Returns the commit hash.
    pub(crate) fn add_model_dir(&self, model_id: &str, dir: &Path) -> String {
        let mut files = BTreeMap::new();
        collect(dir, dir, &mut files);
        self.add_commit(model_id, "main", files)
    }

    /// Publishes `files` as a new commit of `model_id` and points `revision` (a branch or tag
    /// name) at it. Returns the commit hash.
    pub(crate) fn add_commit(
        &self,
        model_id: &str,
        revision: &str,
        files: BTreeMap<String, Bytes>,
    ) -> String {
        let files: BTreeMap<String, StubFile> = files
            .into_iter()
            .map(|(name, content)| (name, StubFile::new(content)))
            .collect();
        let mut h = sha1::Sha1::new();
        h.update(model_id.as_bytes());
        h.update(revision.as_bytes());
        for (name, file) in &files {
            h.update(name.as_bytes());
            h.update(file.sha256.as_bytes());
        }
        let commit = hex(&h.finalize());
        let mut repos = lock(&self.state.repos);
        let repo = repos.entry(model_id.to_owned()).or_default();
        repo.commits.insert(commit.clone(), files);
        repo.refs.insert(revision.to_owned(), commit.clone());
        commit
    }

    /// Makes `model_id` private: requests need `Authorization: Bearer {token}`.
    pub(crate) fn set_private(&self, model_id: &str, token: &str) {
        lock(&self.state.repos)
            .entry(model_id.to_owned())
            .or_default()
            .token = Some(token.to_owned());
    }

    /// Breaks the next `times` downloads of the blob with this sha256 after `after` bytes (the
    /// connection is cut; the response had announced the full length).
    pub(crate) fn break_downloads(&self, sha256: &str, after: usize, times: usize) {
        lock(&self.state.breaks).insert(sha256.to_owned(), BreakRule { after, times });
    }

    /// Serves the blob with this sha256 with its first byte changed (its etag stays).
    pub(crate) fn corrupt_downloads(&self, sha256: &str) {
        lock(&self.state.corrupt).insert(sha256.to_owned());
    }

    /// Answers the next `n` requests with `500 Internal Server Error`.
    pub(crate) fn fail_next(&self, n: usize) {
        *lock(&self.state.fail_next) = n;
    }

    /// Holds every file body (resolve and CDN `GET`s) until [`HubStub::release_downloads`];
    /// listings and `HEAD`s still answer.
    pub(crate) fn hold_downloads(&self) {
        if let Some(gate) = &self.state.gate {
            gate.send_replace(false);
        }
    }

    /// Lets held and future downloads go on.
    pub(crate) fn release_downloads(&self) {
        if let Some(gate) = &self.state.gate {
            gate.send_replace(true);
        }
    }

    /// Number of requests received so far.
    pub(crate) fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests.
    pub(crate) fn reset_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

/// Lowercase hex sha256 of `data`.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, Bytes>) {
    for entry in std::fs::read_dir(dir).expect("read fixture dir") {
        let path = entry.expect("fixture entry").path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let name = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(
                name,
                Bytes::from(std::fs::read(&path).expect("read fixture file")),
            );
        }
    }
}

fn is_lfs(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| LFS_EXTENSIONS.contains(&ext))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut resp = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if let Some(code) = code {
        resp.headers_mut()
            .insert("x-error-code", HeaderValue::from_str(code).expect("ascii"));
    }
    resp.headers_mut().insert(
        "x-error-message",
        HeaderValue::from_str(message).expect("ascii"),
    );
    resp
}

async fn handle(State(state): State<Arc<StubState>>, req: Request) -> Response {
    let headers = req.headers().clone();
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = req.uri().path().to_owned();
    lock(&state.requests).push(Recorded {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| path.clone(), |p| p.to_string()),
        range: text(header::RANGE),
        authorization: text(header::AUTHORIZATION),
        host: text(header::HOST),
    });
    {
        let mut fail = lock(&state.fail_next);
        if *fail > 0 {
            *fail -= 1;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "stub hub: failing on purpose",
            );
        }
    }
    let method = req.method().clone();
    if method == Method::GET
        && !path.starts_with("/api/")
        && let Some(gate) = &state.gate
    {
        let mut open = gate.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, None, "method not allowed");
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((id, rev)) = rest.split_once("/revision/") else {
            return error(StatusCode::NOT_FOUND, None, "not found");
        };
        return revision_info(&state, &headers, id, &percent_decode(rev));
    }
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let file = {
            let repos = lock(&state.repos);
            repos
                .values()
                .flat_map(|r| r.commits.values())
                .flat_map(BTreeMap::values)
                .find(|f| f.sha256 == sha)
                .cloned()
        };
        return match file {
            Some(file) => body_response(&state, &headers, &method, &file, HeaderMap::new()),
            None => error(StatusCode::NOT_FOUND, None, "no such blob"),
        };
    }
    // /{org}/{name}/resolve/{rev}/{file...}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if let [org, name, "resolve", rev, file] = parts.as_slice() {
        let id = format!("{org}/{name}");
        return resolve(
            &state,
            &headers,
            &method,
            &id,
            &percent_decode(rev),
            &percent_decode(file),
        );
    }
    error(StatusCode::NOT_FOUND, None, "not found")
}

/// Checks the token and the revision; returns the commit and its files.
fn lookup(
    state: &StubState,
    headers: &HeaderMap,
    id: &str,
    rev: &str,
) -> Result<(String, BTreeMap<String, StubFile>), Box<Response>> {
    let repos = lock(&state.repos);
    let Some(repo) = repos.get(id) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            Some("RepoNotFound"),
            "Repository not found",
        )));
    };
    if let Some(token) = &repo.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match sent {
            // The Hub does not tell a private repository from a missing one without a token.
            None => {
                return Err(Box::new(error(
                    StatusCode::UNAUTHORIZED,
                    Some("RepoNotFound"),
                    "Repository not found",
                )));
            }
            Some(sent) if sent != format!("Bearer {token}") => {
                return Err(Box::new(error(
                    StatusCode::UNAUTHORIZED,
                    None,
                    "Invalid credentials in Authorization header",
                )));
            }
            Some(_) => {}
        }
    }
    let commit = if repo.commits.contains_key(rev) {
        rev.to_owned()
    } else if let Some(commit) = repo.refs.get(rev) {
        commit.clone()
    } else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            Some("RevisionNotFound"),
            "Invalid rev id",
        )));
    };
    let files = repo.commits.get(&commit).cloned().unwrap_or_default();
    Ok((commit, files))
}

fn revision_info(state: &StubState, headers: &HeaderMap, id: &str, rev: &str) -> Response {
    match lookup(state, headers, id, rev) {
        Err(resp) => *resp,
        Ok((commit, files)) => {
            let siblings: Vec<_> = files
                .keys()
                .map(|name| serde_json::json!({ "rfilename": name }))
                .collect();
            axum::Json(serde_json::json!({
                "id": id,
                "modelId": id,
                "sha": commit,
                "private": false,
                "siblings": siblings,
            }))
            .into_response()
        }
    }
}

fn resolve(
    state: &StubState,
    headers: &HeaderMap,
    method: &Method,
    id: &str,
    rev: &str,
    name: &str,
) -> Response {
    let (commit, files) = match lookup(state, headers, id, rev) {
        Ok(found) => found,
        Err(resp) => return *resp,
    };
    let Some(file) = files.get(name) else {
        let mut resp = error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            "Entry not found",
        );
        resp.headers_mut().insert(
            "x-repo-commit",
            HeaderValue::from_str(&commit).expect("hex"),
        );
        return resp;
    };
    let mut extra = HeaderMap::new();
    extra.insert(
        "x-repo-commit",
        HeaderValue::from_str(&commit).expect("hex"),
    );
    if is_lfs(name) {
        let location = format!("{}/cdn/{}", lock(&state.cdn_base), file.sha256);
        let mut resp = StatusCode::FOUND.into_response();
        let h = resp.headers_mut();
        h.extend(extra);
        h.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).expect("url"),
        );
        h.insert(
            "x-linked-etag",
            HeaderValue::from_str(&format!("\"{}\"", file.sha256)).expect("hex"),
        );
        h.insert("x-linked-size", HeaderValue::from(file.content.len()));
        h.insert(
            header::ETAG,
            HeaderValue::from_str(&format!("\"{}\"", file.git_sha1)).expect("hex"),
        );
        return resp;
    }
    extra.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", file.git_sha1)).expect("hex"),
    );
    body_response(state, headers, method, file, extra)
}

/// The file's bytes (from the `Range` start when asked), cut short when a break rule applies.
fn body_response(
    state: &StubState,
    headers: &HeaderMap,
    method: &Method,
    file: &StubFile,
    extra: HeaderMap,
) -> Response {
    let len = file.content.len();
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, from) = match start {
        Some(s) if s >= len && len > 0 => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            return resp;
        }
        Some(s) => (StatusCode::PARTIAL_CONTENT, s),
        None => (StatusCode::OK, 0),
    };
    let mut body_bytes = file.content.slice(from..);
    if lock(&state.corrupt).contains(&file.sha256) && !body_bytes.is_empty() {
        let mut v = body_bytes.to_vec();
        v[0] ^= 0xff;
        body_bytes = Bytes::from(v);
    }
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, body_bytes.len())
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {from}-{}/{len}", len.saturating_sub(1)),
        );
    }
    let rule = if *method == Method::GET {
        let mut breaks = lock(&state.breaks);
        match breaks.get_mut(&file.sha256) {
            Some(rule) if rule.times > 0 => {
                rule.times -= 1;
                Some(*rule)
            }
            _ => None,
        }
    } else {
        None
    };
    let body = match rule {
        Some(rule) if rule.after < body_bytes.len() => {
            let head = body_bytes.slice(..rule.after);
            use futures_util::StreamExt as _;
            // The pause lets hyper flush the head to the socket before the connection is cut.
            let cut = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Err::<Bytes, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "stub hub: broken on purpose",
                ))
            });
            Body::from_stream(futures_util::stream::iter([Ok(head)]).chain(cut))
        }
        _ => Body::from(body_bytes),
    };
    let mut resp = builder.body(body).expect("valid response");
    resp.headers_mut().extend(extra);
    resp
}

/// A moto S3 server (`moto_server`, pip package `moto[server]`) on a free port of 127.0.0.1,
/// killed on drop. `.ci/s3-setup.sh` installs it when missing; without it this panics loudly.
pub(crate) struct Moto {
    child: std::process::Child,
    /// `http://127.0.0.1:{port}`.
    pub(crate) endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_command() -> Option<std::process::Command> {
    use std::process::{Command, Stdio};
    let works = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(Command::new("moto_server").arg("--help")) {
        return Some(Command::new("moto_server"));
    }
    if works(Command::new("python3").args(["-c", "import moto.server"])) {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "moto.server"]);
        return Some(cmd);
    }
    None
}

impl Moto {
    /// Starts moto and waits until it accepts connections.
    pub(crate) async fn start() -> Self {
        use std::process::{Command, Stdio};
        let found = moto_command().or_else(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/s3-setup.sh");
            eprintln!("moto_server not found; running {}", script.display());
            let _ = Command::new("bash").arg(script).status();
            moto_command()
        });
        let Some(mut cmd) = found else {
            panic!(
                "\n\n!!!!! S3 TESTS CANNOT RUN: moto_server is not installed and .ci/s3-setup.sh \
                 could not install it (pip install 'moto[server]') !!!!!\n\n"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto_server");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return moto;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("moto_server did not listen on port {port}");
    }

    /// Creates `bucket` and stores `body` under `key` (moto accepts unsigned requests).
    pub(crate) async fn put(&self, bucket: &str, key: &str, body: Bytes) {
        let http = reqwest::Client::new();
        let bucket_url = format!("{}/{bucket}", self.endpoint);
        let created = http.put(&bucket_url).send().await.expect("create bucket");
        assert!(
            created.status().is_success() || created.status() == 409,
            "{created:?}"
        );
        let put = http
            .put(format!("{bucket_url}/{key}"))
            .body(body)
            .send()
            .await
            .expect("put");
        assert!(put.status().is_success(), "{put:?}");
    }
}

//! Test support: start the real server binary, find fixtures, compare answers.

#![allow(dead_code, unreachable_pub)]

pub mod compare;
pub mod guest_build;
pub mod guests;
pub mod hub_stub;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) use guest_build::repo_root;

/// A conformance fixture model directory, e.g. `fixture("bert-seqcls")`.
pub fn fixture(name: &str) -> PathBuf {
    repo_root()
        .join("tests/fixtures/conformance/models")
        .join(name)
}

/// A conformance case file.
pub fn cases_file(model: &str) -> PathBuf {
    repo_root()
        .join("tests/fixtures/conformance/cases")
        .join(format!("{model}.jsonl"))
}

/// Runs recorded cases (JSON objects with `id` and an optional `env` object) with one server
/// per distinct `env`, started on `model` with those variables; each case goes through
/// `run_case`. Fails listing every case that failed; returns how many ran.
pub fn run_cases_by_env(
    model: &Path,
    cases: Vec<serde_json::Value>,
    run_case: impl Fn(&Server, &serde_json::Value) -> Result<(), String>,
) -> usize {
    let mut groups: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        std::collections::BTreeMap::new();
    for case in cases {
        groups
            .entry(case["env"].to_string())
            .or_default()
            .push(case);
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for cases in groups.values() {
        let mut builder = Server::builder().model(model);
        for (k, v) in cases[0]["env"].as_object().into_iter().flatten() {
            builder = builder.env(k, v.as_str().unwrap_or_default());
        }
        let server = builder.start().wait_ready();
        for case in cases {
            ran += 1;
            if let Err(e) = run_case(&server, case) {
                failures.push(format!("{}: {e}", case["id"].as_str().unwrap_or("?")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    ran
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct ServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    bare: bool,
}

impl ServerBuilder {
    /// `--model PATH`.
    pub fn model(mut self, path: impl AsRef<Path>) -> Self {
        self.args.push("--model".into());
        self.args.push(path.as_ref().display().to_string());
        self
    }

    /// Any extra flag.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Start with the bare argument `serve` and configuration from the environment only.
    pub fn bare(mut self) -> Self {
        self.bare = true;
        self
    }

    /// Spawns the binary and waits for its "listening on" log line.
    pub fn start(self) -> Server {
        let Spawned {
            child, logs, addr, ..
        } = spawn(&self);
        let addr = addr.unwrap_or_else(|| {
            panic!(
                "server did not log its address; logs:\n{}",
                logs.lock().unwrap()
            )
        });
        Server { child, addr, logs }
    }

    /// Spawns the binary and waits for it to exit (for start-up errors); returns its status and
    /// everything it wrote. The output readers end when the process closes its pipes, so
    /// joining them is the synchronisation: no output can arrive after this returns.
    pub fn run_to_exit(self) -> (ExitStatus, String) {
        let Spawned {
            mut child,
            logs,
            readers,
            ..
        } = spawn(&self);
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            for reader in readers {
                let _ = reader.join();
            }
            let _ = done.send(());
        });
        if finished.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!(
                "server did not exit within 30 s; logs:\n{}",
                logs.lock().unwrap()
            );
        }
        let status = child.wait().expect("wait");
        let text = logs.lock().unwrap().clone();
        (status, text)
    }
}

/// A spawned server process and the threads that read its output.
struct Spawned {
    child: Child,
    logs: Arc<Mutex<String>>,
    addr: Option<SocketAddr>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn spawn(builder: &ServerBuilder) -> Spawned {
    let home = std::env::temp_dir().join("sagebrush-e2e-home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagebrush"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("RUST_LOG", "info");
    if builder.bare {
        cmd.arg("serve");
    } else {
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"]);
    }
    cmd.args(&builder.args);
    for (k, v) in &builder.env {
        cmd.env(k, v);
    }
    spawn_command(cmd)
}

/// Spawns `cmd` (stdout and stderr piped), collects its output and waits for the "listening
/// on" log line.
fn spawn_command(mut cmd: Command) -> Spawned {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sagebrush");
    let logs = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let mut readers = Vec::new();
    for stream in [
        Box::new(child.stderr.take().expect("stderr")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().expect("stdout")),
    ] {
        let (logs, tx) = (logs.clone(), tx.clone());
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let addr = addr
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .unwrap_or("");
                    if let Ok(addr) = addr.parse::<SocketAddr>() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = logs.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        }));
    }
    drop(tx);
    // Ends with the address, or early when the process exits without one (the readers drop
    // their senders at end of output).
    let addr = rx.recv_timeout(Duration::from_secs(30)).ok();
    Spawned {
        child,
        logs,
        addr,
        readers,
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A running server process; killed on drop.
pub struct Server {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
    logs: Arc<Mutex<String>>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: reqwest::header::HeaderMap,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the contract §7 error shape and status, and returns the message.
    pub fn expect_error(&self, status: u16, error_type: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["code"], status, "{body}");
        assert_eq!(body["error_type"], error_type, "{body}");
        assert!(body["type"].is_string(), "{body}");
        let rid = self.header("x-request-id").expect("x-request-id");
        assert_eq!(body["request_id"], rid, "{body}");
        body["message"].as_str().expect("message").to_owned()
    }
}

impl Server {
    /// Starts a server with the defaults and `model`.
    pub fn start(model: impl AsRef<Path>) -> Self {
        ServerBuilder::default().model(model).start()
    }

    /// A builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Runs `cmd` (e.g. `docker run IMAGE serve`) as the server and waits for its "listening
    /// on" log line; the logs as the error if it never logs one.
    pub fn from_command(cmd: Command) -> Result<Self, String> {
        let Spawned {
            child, logs, addr, ..
        } = spawn_command(cmd);
        match addr {
            Some(addr) => Ok(Self { child, addr, logs }),
            None => Err(logs.lock().unwrap().clone()),
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until `/ping` is 200 (panics after 120 s with the logs).
    pub fn wait_ready(self) -> Self {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if client()
                .get(self.url("/ping"))
                .send()
                .is_ok_and(|r| r.status() == 200)
            {
                return self;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("server never became ready; logs:\n{}", self.logs());
    }

    /// Waits until `/ping` stops saying "loading" and returns its answer.
    pub fn wait_settled(&self) -> Answer {
        let start = Instant::now();
        loop {
            let a = self.get("/ping");
            let loading = a.status == 503 && a.body.contains("still loading");
            if !loading || start.elapsed() > Duration::from_secs(120) {
                return a;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the log holds a line containing every one of `needles` (up to 10 s) and
    /// returns that line.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let logs = self.logs();
            if let Some(line) = logs.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no log line with {needles:?} in:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// GET.
    pub fn get(&self, path: &str) -> Answer {
        answer(client().get(self.url(path)).send().expect("GET"))
    }

    /// POST with headers.
    pub fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::blocking::Body>,
    ) -> Answer {
        let mut req = client().post(self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.send().expect("POST"))
    }

    /// POST only the head of a request that declares a `content_length`-byte body, and read
    /// the answer without sending the body: for limits decided on the declared length, without
    /// racing a client still writing a body the server will not read.
    pub fn post_head_only(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        content_length: usize,
    ) -> Answer {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut head =
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {content_length}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send the head");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).expect("read the answer");
            assert!(
                n > 0,
                "closed before a whole answer: {}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let mut lines = head.lines();
            let status: u16 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .expect("status line");
            let mut headers = reqwest::header::HeaderMap::new();
            for line in lines {
                if let Some((k, v)) = line.split_once(':') {
                    let name = reqwest::header::HeaderName::from_bytes(
                        k.trim().to_ascii_lowercase().as_bytes(),
                    )
                    .expect("header name");
                    headers.insert(name, v.trim().parse().expect("header value"));
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            if body.len() >= len {
                return Answer {
                    status,
                    headers,
                    body: body[..len].to_owned(),
                };
            }
        }
    }

    /// POST a JSON body to /invocations.
    pub fn invoke(&self, body: &serde_json::Value) -> Answer {
        self.post(
            "/invocations",
            &[("content-type", "application/json")],
            body.to_string(),
        )
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_with_timeout(&mut self.child, limit)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

fn answer(r: reqwest::blocking::Response) -> Answer {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

/// A temporary SageMaker base dir whose `model` is a copy of `fixture`.
pub fn base_dir_with(fixture_dir: &Path) -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("tempdir");
    copy_dir(fixture_dir, &base.path().join("model"));
    base
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

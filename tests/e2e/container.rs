//! The SageMaker container (contract §1, §6, §8; issue 14): the image `scripts/image` builds, run
//! the way SageMaker and the SDK's local mode run it (`docker run --network host IMAGE serve`,
//! the model at `/opt/ml/model`, `source_dir` at `/opt/ml/code`, the SDK's environment).
//!
//! The static binary comes from `SAGEBRUSH_STATIC_BINARY` (`./scripts/test` links it with
//! `scripts/image --profile dev --static-only` before cargo runs, since a test cannot run cargo
//! on the target dir its own run holds). Where docker cannot run, each test prints why and runs
//! the same checks on the static binary (or, without one, on the test build) with
//! `SAGEMAKER_BASE_DIR` pointing at a folder laid out as `/opt/ml`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::guests::guest;
use crate::support::hub_stub::HubStub;
use crate::support::{Server, cases_file, compare, copy_dir, fixture, repo_root};

/// The environment variable naming the static binary built before the tests.
const STATIC_BINARY: &str = "SAGEBRUSH_STATIC_BINARY";
/// SageMaker's label for images that take the port from `SAGEMAKER_BIND_TO_PORT`.
const BIND_TO_PORT_LABEL: &str = "com.amazonaws.sagemaker.capabilities.accept-bind-to-port";

/// How the server runs in these tests.
enum Runtime {
    /// `docker run` of this image.
    Docker { image: String },
    /// The binary itself, with `SAGEMAKER_BASE_DIR` standing in for `/opt/ml`.
    Binary { path: PathBuf },
}

fn static_binary() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(STATIC_BINARY)?);
    assert!(
        path.is_file(),
        "{STATIC_BINARY}={} is not a file",
        path.display()
    );
    Some(path)
}

fn docker_problem() -> Option<String> {
    match Command::new("docker").arg("info").output() {
        Err(err) => Some(format!("cannot run `docker`: {err}")),
        Ok(out) if !out.status.success() => Some(format!(
            "`docker info` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => None,
    }
}

/// Decides once how to run, builds the image when docker can run, and prints the reason when
/// it cannot.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let Some(binary) = static_binary() else {
            eprintln!(
                "container tests: {STATIC_BINARY} is not set (./scripts/test links the static binary); checking the SageMaker layout on the test build instead of an image"
            );
            return Runtime::Binary {
                path: PathBuf::from(env!("CARGO_BIN_EXE_sagebrush")),
            };
        };
        if let Some(problem) = docker_problem() {
            eprintln!(
                "container tests: docker cannot run here ({problem}); checking the SageMaker layout on the static binary instead of an image"
            );
            return Runtime::Binary { path: binary };
        }
        let image = format!("sagebrush-e2e:{}", std::process::id());
        let out = Command::new(repo_root().join("scripts/image"))
            .args(["--binary", &binary.display().to_string(), "--tag", &image])
            .output()
            .expect("scripts/image runs");
        assert!(
            out.status.success(),
            "scripts/image failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "container tests: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        Runtime::Docker { image }
    })
}

/// A folder laid out like `/opt/ml`: `model/` (a copy of a fixture, or empty), `code/`,
/// `input/` and `output/`.
struct OptMl {
    dir: tempfile::TempDir,
}

impl OptMl {
    fn empty() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["model", "code", "input", "output"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Self { dir }
    }

    fn with_model(name: &str) -> Self {
        let layout = Self::empty();
        copy_dir(&fixture(name), &layout.path().join("model"));
        layout
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, relative: &str, contents: &[u8]) {
        let file = self.path().join(relative);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(file, contents).expect("write");
    }

    /// The image runs as a non-root user: the mounted files must be readable by others, as
    /// SageMaker's unpacked model is, and `output/` writable.
    fn open_to_the_image_user(&self) {
        for (mode, path) in [
            ("a+rX", self.path().to_owned()),
            ("a+rwx", self.path().join("output")),
        ] {
            let status = Command::new("chmod")
                .args(["-R", mode])
                .arg(path)
                .status()
                .expect("chmod");
            assert!(status.success());
        }
    }
}

/// What one start of the image (or the binary) needs beyond the `/opt/ml` layout.
#[derive(Default)]
struct Launch<'a> {
    /// Environment, SageMaker's names; values under `/opt/ml` are translated for the binary.
    env: Vec<(&'a str, String)>,
    /// Host names that resolve to 127.0.0.1 (`docker run --add-host`; the binary cannot add
    /// names, so tests use `localhost` there).
    hosts: Vec<&'a str>,
}

/// The command that runs `args` (`serve`, `batch …`) the way SageMaker runs the image, and the
/// container's name when it is a container.
fn command(layout: &OptMl, launch: &Launch<'_>, args: &[&str]) -> (Command, Option<String>) {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let base = layout.path();
    match runtime() {
        Runtime::Docker { image } => {
            layout.open_to_the_image_user();
            let name = format!(
                "sagebrush-e2e-{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            );
            let mut cmd = Command::new("docker");
            cmd.args(["run", "--rm", "--name", &name, "--network", "host"])
                .arg("-v")
                .arg(format!("{}:/opt/ml", base.display()));
            for host in &launch.hosts {
                cmd.arg("--add-host").arg(format!("{host}:127.0.0.1"));
            }
            for (k, v) in &launch.env {
                cmd.arg("-e").arg(format!("{k}={v}"));
            }
            cmd.arg(image).args(args);
            (cmd, Some(name))
        }
        Runtime::Binary { path } => {
            let translate = |v: &str| match v.strip_prefix("/opt/ml") {
                Some(rest) => format!("{}{rest}", base.display()),
                None => v.to_owned(),
            };
            let mut cmd = Command::new(path);
            cmd.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", base.join("home"))
                .env("SAGEMAKER_BASE_DIR", base);
            for (k, v) in &launch.env {
                cmd.env(k, translate(v));
            }
            cmd.args(args.iter().map(|a| translate(a)));
            (cmd, None)
        }
    }
}

/// A server started by these tests; a container is removed on drop.
struct Running {
    server: Server,
    container: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(name) = &self.container {
            let _ = Command::new("docker")
                .args(["rm", "--force", name])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Running {
    /// Sends SIGTERM the way the platform does: `docker stop` with a 10 s grace period (a
    /// container still running then gets SIGKILL and exits 137), or `kill -TERM`.
    fn stop(&self) -> std::thread::JoinHandle<()> {
        match &self.container {
            Some(name) => {
                let name = name.clone();
                std::thread::spawn(move || {
                    let status = Command::new("docker")
                        .args(["stop", "-t", "10", &name])
                        .stdout(Stdio::null())
                        .status()
                        .expect("docker stop");
                    assert!(status.success(), "docker stop failed");
                })
            }
            None => {
                self.server.sigterm();
                std::thread::spawn(|| ())
            }
        }
    }
}

/// Starts `serve` (the argument SageMaker passes) on `layout` on a free port of 127.0.0.1.
fn serve(layout: &OptMl, mut launch: Launch<'_>) -> Running {
    launch.env.push(("SAGEMAKER_BIND_TO_PORT", "0".to_owned()));
    launch.env.push(("SAGEBRUSH_HOST", "127.0.0.1".to_owned()));
    let (cmd, container) = command(layout, &launch, &["serve"]);
    let server = Server::from_command(cmd)
        .unwrap_or_else(|logs| panic!("the server did not start; logs:\n{logs}"));
    Running { server, container }
}

/// What the SageMaker SDK passes for a model deployed with `entry_point` and `source_dir`
/// (local mode mounts the directory at `/opt/ml/code`).
fn sdk_env() -> Vec<(&'static str, String)> {
    [
        ("SAGEMAKER_SUBMIT_DIRECTORY", "/opt/ml/code"),
        ("SAGEMAKER_REGION", "us-west-2"),
        ("SAGEMAKER_ENABLE_CLOUDWATCH_METRICS", "false"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "3600"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

/// Polls `/ping` like the SDK's local mode, which gives a container 120 s.
fn wait_healthy(server: &Server) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if server.get("/ping").status == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("/ping never answered 200; logs:\n{}", server.logs());
}

/// The first conformance case of `model`: request body and expected answer.
fn first_case(model: &str) -> (Value, Value) {
    let text = std::fs::read_to_string(cases_file(model)).expect("cases");
    let case: Value = serde_json::from_str(text.lines().next().expect("a case")).expect("json");
    let body: Value =
        serde_json::from_str(case["request"]["body"].as_str().expect("body")).expect("json body");
    (body, case["expect"]["json"].clone())
}

#[test]
fn static_binary_is_statically_linked() {
    let Some(binary) = static_binary() else {
        eprintln!("skipped: {STATIC_BINARY} is not set (./scripts/test links the static binary)");
        return;
    };
    let out = Command::new("ldd").arg(&binary).output().expect("ldd runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("not a dynamic executable") || text.contains("statically linked"),
        "ldd {}: {text}",
        binary.display()
    );
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("runs");
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("sagebrush "));
}

#[test]
fn the_image_holds_only_the_binary_certificates_and_licences() {
    let Runtime::Docker { image } = runtime() else {
        eprintln!("skipped: no image (the reason is printed above)");
        return;
    };
    let config = docker_json(&["image", "inspect", image.as_str()])[0]["Config"].clone();
    assert_eq!(config["Labels"][BIND_TO_PORT_LABEL], "true", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/sagebrush"]));
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    let user = config["User"].as_str().unwrap_or_default();
    assert!(
        !user.is_empty() && !user.starts_with("0:") && user != "0" && !user.starts_with("root"),
        "the image must not run as root: {config}"
    );
    let entries = image_files(image);
    for needed in [
        "sagebrush",
        "etc/ssl/certs/ca-certificates.crt",
        "licenses/sagebrush/LICENSE",
        "licenses/THIRD-PARTY.md",
        "tmp/",
    ] {
        assert!(entries.iter().any(|e| e == needed), "{needed} missing");
    }
    let allowed = |e: &str| {
        matches!(
            e,
            "sagebrush"
                | "etc/"
                | "etc/ssl/"
                | "etc/ssl/certs/"
                | "etc/ssl/certs/ca-certificates.crt"
                | "tmp/"
        ) || e.starts_with("licenses/")
    };
    let extra: Vec<_> = entries.iter().filter(|e| !allowed(e)).collect();
    assert!(extra.is_empty(), "unexpected files in the image: {extra:?}");
    for crate_licence in ["licenses/crates/tokio-", "licenses/crates/wasmtime-"] {
        assert!(
            entries.iter().any(|e| e.starts_with(crate_licence)),
            "{crate_licence}* missing: third-party licences are incomplete"
        );
    }
}

fn docker_json(args: &[&str]) -> Value {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(out.status.success(), "docker {args:?} failed");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Every path in the image's layers (from `docker save`).
fn image_files(image: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["save", image])
        .output()
        .expect("docker save");
    assert!(out.status.success(), "docker save failed");
    let mut saved = tar::Archive::new(out.stdout.as_slice());
    let mut layers = Vec::new();
    let mut manifest = Value::Null;
    for entry in saved.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read");
        if path == "manifest.json" {
            manifest = serde_json::from_slice(&bytes).expect("manifest");
        } else {
            layers.push((path, bytes));
        }
    }
    let mut files = Vec::new();
    for layer in manifest[0]["Layers"].as_array().expect("layers") {
        let layer = layer.as_str().expect("layer path");
        let (_, bytes) = layers.iter().find(|(p, _)| p == layer).expect("layer");
        for entry in tar::Archive::new(bytes.as_slice()).entries().expect("tar") {
            let entry = entry.expect("entry");
            let mut path = entry.path().expect("path").display().to_string();
            if entry.header().entry_type().is_dir() && !path.ends_with('/') {
                path.push('/');
            }
            files.push(path.trim_start_matches("./").to_owned());
        }
    }
    files.retain(|f| !f.is_empty());
    files
}

#[test]
fn serves_the_model_and_code_from_the_sagemaker_layout() {
    let layout = OptMl::with_model("bert-seqcls");
    let wasm = std::fs::read(guest("postprocess")).expect("guest");
    layout.write("code/inference.wasm", &wasm);
    layout.write("code/requirements.txt", b"transformers==4.51.3\n");
    let mut env = sdk_env();
    env.push(("SAGEMAKER_PROGRAM", "inference.wasm".to_owned()));
    env.push(("SAGEMAKER_CONTAINER_LOG_LEVEL", "10".to_owned()));
    let running = serve(&layout, Launch { env, hosts: vec![] });
    let server = &running.server;
    wait_healthy(server);
    let (body, _) = first_case("bert-seqcls");
    let a = server.invoke(&body);
    assert_eq!(a.status, 200, "{}", a.body);
    // The guest from /opt/ml/code answered (the postprocess example tags and reshapes it).
    assert_eq!(a.header("x-sagebrush-guest"), Some("postprocess"), "{a:?}");
    assert_eq!(a.json()["task"], "text-classification", "{}", a.body);
    let params = server.get("/execution-parameters");
    assert_eq!(params.status, 200);
    assert_eq!(params.json()["BatchStrategy"], "MULTI_RECORD");
    server.wait_for_log(&["requirements.txt is not used"]);
    // SAGEMAKER_CONTAINER_LOG_LEVEL=10 (Python's DEBUG): the health checks are logged.
    server.wait_for_log(&["DEBUG", "/ping"]);
}

#[test]
fn python_user_code_is_refused_with_a_clear_message() {
    let layout = OptMl::with_model("bert-seqcls");
    layout.write(
        "code/inference.py",
        b"def model_fn(model_dir):\n    return None\n",
    );
    let mut env = sdk_env();
    env.push(("SAGEMAKER_PROGRAM", "inference.py".to_owned()));
    let running = serve(&layout, Launch { env, hosts: vec![] });
    let server = &running.server;
    let ping = server.wait_settled();
    assert_eq!(ping.status, 503, "{}", ping.body);
    server.wait_for_log(&["Python user code", "code/inference.wasm"]);
    // SAGEMAKER_CONTAINER_LOG_LEVEL unset: info, so the health checks are not logged.
    assert!(!server.logs().contains("DEBUG"), "{}", server.logs());
}

/// `docker run IMAGE batch …`: any argument list but `serve` is a sagebrush subcommand. The
/// model is RoBERTa, whose byte-level BPE pre-tokenizer runs the Oniguruma C code linked into
/// the static binary.
#[test]
fn another_argument_list_runs_as_a_subcommand() {
    let layout = OptMl::with_model("roberta-seqcls");
    let (body, expected) = first_case("roberta-seqcls");
    layout.write(
        "input/data/records.jsonl",
        format!("{body}\n{body}\n").as_bytes(),
    );
    let (mut cmd, container) = command(
        &layout,
        &Launch::default(),
        &[
            "batch",
            "--input",
            "/opt/ml/input/data",
            "--output",
            "/opt/ml/output/predictions",
        ],
    );
    let out = cmd.output().expect("runs");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{container:?}: {logs}");
    assert!(logs.contains("batch job finished"), "{logs}");
    let answers =
        std::fs::read_to_string(layout.path().join("output/predictions/records.jsonl.out"))
            .expect("the job's output");
    let lines: Vec<&str> = answers.lines().collect();
    assert_eq!(lines.len(), 2, "{answers}");
    for line in lines {
        let got: Value = serde_json::from_str(line).expect("JSON line");
        compare::json_close(&got, &expected, 1e-4).expect("the conformance answer");
    }
}

/// `HF_MODEL_ID` with a Hub whose host name only the container's `/etc/hosts` knows: the static
/// binary resolves names without the NSS modules a scratch image lacks.
#[test]
fn a_hub_model_is_fetched_by_host_name() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let stub = rt.block_on(HubStub::start());
    stub.add_model_dir("org/bert", &fixture("bert-seqcls"));
    let host = match runtime() {
        Runtime::Docker { .. } => "sagebrush-hub.test",
        Runtime::Binary { .. } => "localhost",
    };
    let endpoint = stub.endpoint().replace("127.0.0.1", host);
    let layout = OptMl::empty();
    let env = vec![
        ("HF_MODEL_ID", "org/bert".to_owned()),
        ("HF_ENDPOINT", endpoint),
    ];
    let running = serve(
        &layout,
        Launch {
            env,
            hosts: vec![host],
        },
    );
    let server = &running.server;
    wait_healthy(server);
    let (body, expected) = first_case("bert-seqcls");
    let a = server.invoke(&body);
    assert_eq!(a.status, 200, "{}", a.body);
    compare::json_close(&a.json(), &expected, 1e-4).expect("the conformance answer");
}

/// An `https://` model archive from a host name only the container's `/etc/hosts` knows,
/// signed by a private CA given as `SSL_CERT_FILE`: TLS (rustls with aws-lc), the CA bundle
/// setting and name resolution all work in the static binary and the empty image.
#[test]
fn an_https_archive_is_fetched_by_host_name_with_the_ca_bundle_setting() {
    let host = match runtime() {
        Runtime::Docker { .. } => "sagebrush-files.test",
        Runtime::Binary { .. } => "localhost",
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let archive =
        std::fs::read(fixture("bert-seqcls-targz").join("model.tar.gz")).expect("archive");
    let (port, ca) = rt.block_on(serve_tls(host, archive));
    let layout = OptMl::empty();
    layout.write("ca.pem", ca.as_bytes());
    let env = vec![
        (
            "SAGEBRUSH_MODEL",
            format!("https://{host}:{port}/model.tar.gz"),
        ),
        ("SSL_CERT_FILE", "/opt/ml/ca.pem".to_owned()),
    ];
    let running = serve(
        &layout,
        Launch {
            env,
            hosts: vec![host],
        },
    );
    let server = &running.server;
    wait_healthy(server);
    let (body, expected) = first_case("bert-seqcls");
    let a = server.invoke(&body);
    assert_eq!(a.status, 200, "{}", a.body);
    compare::json_close(&a.json(), &expected, 1e-4).expect("the conformance answer");
}

/// Serves `body` for any GET over TLS on 127.0.0.1 with a self-signed certificate for `host`;
/// returns the port and the certificate (PEM), which is its own CA.
async fn serve_tls(host: &str, body: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let key = rcgen::generate_simple_self_signed(vec![host.to_owned()]).expect("cert");
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], der)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut chunk = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let status = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(status.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, key.cert.pem())
}

/// `docker stop` while a request is in flight (its body still arriving): the request completes,
/// new connections are refused, and the process exits 0 within the 10 s grace period (exit 137
/// would mean SIGKILL). Synchronised without sleeps, as in `process.rs`: the server's
/// `100 Continue` proves the request is in flight before the signal, the "shutting down" log
/// line that the signal was taken.
#[test]
fn stop_drains_the_in_flight_request_and_exits_zero() {
    let layout = OptMl::with_model("bert-seqcls");
    let mut running = serve(
        &layout,
        Launch {
            env: sdk_env(),
            hosts: vec![],
        },
    );
    wait_healthy(&running.server);
    let addr = running.server.addr;
    let body = r#"{"inputs": "in flight during shutdown"}"#;
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len(),
    )
    .expect("write head");
    let interim = read_head(&mut stream);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream
        .write_all(&body.as_bytes()[..10])
        .expect("write part");

    let stopping = running.stop();
    running
        .server
        .wait_for_log(&["shutting down: finishing in-flight requests", "SIGTERM"]);
    let refused_by = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < refused_by,
            "new connections must be refused after SIGTERM"
        );
        std::thread::yield_now();
    }
    stream
        .write_all(&body.as_bytes()[10..])
        .expect("write rest");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"label\""), "{response}");
    stopping.join().expect("docker stop finished");
    let status = running
        .server
        .wait_exit(Duration::from_secs(30))
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", running.server.logs());
}

/// Reads one response head (through the blank line) byte by byte.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read");
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

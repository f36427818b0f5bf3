//! The SageMaker container (contract §1, §6, §8): the image `scripts/image` builds, run the way
//! SageMaker and the SDK's local mode run it (`docker run --network host IMAGE serve`, the model
//! at `/opt/ml/model`, `source_dir` at `/opt/ml/code`, the SDK's environment).
//!
//! The static binary comes from `SAGEBRUSH_STATIC_BINARY` (`./scripts/test` builds it with
//! `scripts/image --profile dev` before cargo runs, since a test cannot run cargo on the target
//! dir the test run holds). Where docker cannot run, or the static binary was not built, each
//! test prints why and runs the same checks on the binary with `SAGEMAKER_BASE_DIR` pointing at
//! a folder laid out as `/opt/ml`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::guests::guest;
use crate::support::{Server, copy_dir, fixture, repo_root};

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
                "container tests: {STATIC_BINARY} is not set (./scripts/test builds the static binary); checking the SageMaker layout on the test binary instead of an image"
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
        eprintln!("container tests: {}", String::from_utf8_lossy(&out.stdout).trim());
        Runtime::Docker { image }
    })
}

/// A folder laid out like `/opt/ml`: `model/` (a copy of a fixture) and `code/`.
struct OptMl {
    dir: tempfile::TempDir,
}

impl OptMl {
    fn with_model(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&fixture(name), &dir.path().join("model"));
        std::fs::create_dir_all(dir.path().join("code")).expect("mkdir code");
        Self { dir }
    }

    fn code_file(&self, name: &str, contents: &[u8]) {
        std::fs::write(self.dir.path().join("code").join(name), contents).expect("write code");
    }

    /// The image runs as a non-root user: the mounted files must be readable by others, as
    /// SageMaker's unpacked model is.
    fn readable_by_all(&self) {
        let status = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(self.dir.path())
            .status()
            .expect("chmod");
        assert!(status.success());
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
    /// Sends SIGTERM the way the platform does (`docker stop` with SageMaker's grace period
    /// cut to 10 s: a container still running then is killed, and exits 137).
    fn stop(&self) -> std::thread::JoinHandle<()> {
        match &self.container {
            Some(name) => {
                let name = name.clone();
                std::thread::spawn(move || {
                    let status = Command::new("docker")
                        .args(["stop", "--time", "10", &name])
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

/// Starts `serve` (the argument SageMaker passes) on `layout` with SageMaker's environment.
/// Paths under `/opt/ml` in `env` are translated when running the bare binary.
fn serve(layout: &OptMl, env: &[(&str, &str)]) -> Running {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let base = layout.dir.path();
    let (cmd, container) = match runtime() {
        Runtime::Docker { image } => {
            layout.readable_by_all();
            let name = format!(
                "sagebrush-e2e-{}-{}",
                std::process::id(),
                STARTED.fetch_add(1, Ordering::Relaxed)
            );
            let mut cmd = Command::new("docker");
            cmd.args(["run", "--rm", "--name", &name, "--network", "host"])
                .arg("-v")
                .arg(format!("{}:/opt/ml/model:ro", base.join("model").display()))
                .arg("-v")
                .arg(format!("{}:/opt/ml/code:ro", base.join("code").display()))
                .args(["-e", "SAGEMAKER_BIND_TO_PORT=0"])
                .args(["-e", "SAGEBRUSH_HOST=127.0.0.1"]);
            for (k, v) in env {
                cmd.arg("-e").arg(format!("{k}={v}"));
            }
            cmd.args([image.as_str(), "serve"]);
            (cmd, Some(name))
        }
        Runtime::Binary { path } => {
            let mut cmd = Command::new(path);
            cmd.env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("HOME", base.join("home"))
                .env("SAGEMAKER_BASE_DIR", base)
                .env("SAGEMAKER_BIND_TO_PORT", "0")
                .env("SAGEBRUSH_HOST", "127.0.0.1");
            for (k, v) in env {
                let v = match v.strip_prefix("/opt/ml") {
                    Some(rest) => format!("{}{rest}", base.display()),
                    None => (*v).to_owned(),
                };
                cmd.env(k, v);
            }
            cmd.arg("serve");
            (cmd, None)
        }
    };
    let server = Server::from_command(cmd)
        .unwrap_or_else(|logs| panic!("the server did not start; logs:\n{logs}"));
    Running { server, container }
}

/// What the SageMaker SDK's local mode passes for a model deployed with `entry_point` and
/// `source_dir` (the directory is mounted at `/opt/ml/code`).
const SDK_ENV: [(&str, &str); 4] = [
    ("SAGEMAKER_SUBMIT_DIRECTORY", "/opt/ml/code"),
    ("SAGEMAKER_REGION", "us-west-2"),
    ("SAGEMAKER_ENABLE_CLOUDWATCH_METRICS", "false"),
    ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "3600"),
];

/// Polls `/ping` like the SDK's local mode (it gives a container 120 s).
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

#[test]
fn static_binary_is_statically_linked() {
    let Some(binary) = static_binary() else {
        eprintln!("skipped: {STATIC_BINARY} is not set (./scripts/test builds the static binary)");
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
        eprintln!("skipped: no image (see the reason above)");
        return;
    };
    let config = docker_json(&["image", "inspect", image.as_str()])[0]["Config"].clone();
    assert_eq!(config["Labels"][BIND_TO_PORT_LABEL], "true", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/sagebrush"]));
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    let user = config["User"].as_str().unwrap_or_default();
    assert!(
        !user.is_empty() && !user.starts_with('0') && !user.starts_with("root"),
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
            "sagebrush" | "etc/" | "etc/ssl/" | "etc/ssl/certs/" | "tmp/"
        ) || e == "etc/ssl/certs/ca-certificates.crt"
            || e.starts_with("licenses/")
    };
    let extra: Vec<_> = entries.iter().filter(|e| !allowed(e)).collect();
    assert!(extra.is_empty(), "unexpected files in the image: {extra:?}");
    assert!(
        entries
            .iter()
            .any(|e| e.starts_with("licenses/crates/tokio-")),
        "third-party licences missing"
    );
}

fn docker_json(args: &[&str]) -> serde_json::Value {
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
    let mut manifest = serde_json::Value::Null;
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
    layout.code_file(
        "inference.wasm",
        &std::fs::read(guest("postprocess")).expect("guest"),
    );
    layout.code_file("requirements.txt", b"transformers==4.51.3\n");
    let mut env = SDK_ENV.to_vec();
    env.push(("SAGEMAKER_PROGRAM", "inference.wasm"));
    env.push(("SAGEMAKER_CONTAINER_LOG_LEVEL", "10"));
    let running = serve(&layout, &env);
    let server = &running.server;
    wait_healthy(server);
    let a = server.invoke(&serde_json::json!({"inputs": "I love this movie"}));
    assert_eq!(a.status, 200, "{}", a.body);
    // The guest from /opt/ml/code answered (the postprocess example reshapes the answer).
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
    layout.code_file(
        "inference.py",
        b"def model_fn(model_dir):\n    return None\n",
    );
    let mut env = SDK_ENV.to_vec();
    env.push(("SAGEMAKER_PROGRAM", "inference.py"));
    let running = serve(&layout, &env);
    let server = &running.server;
    let ping = server.wait_settled();
    assert_eq!(ping.status, 503, "{}", ping.body);
    server.wait_for_log(&[
        "model failed to load",
        "Python user code",
        "code/inference.wasm",
    ]);
    // SAGEMAKER_CONTAINER_LOG_LEVEL unset: info, so the health checks are not logged.
    assert!(!server.logs().contains("DEBUG"), "{}", server.logs());
}

#[test]
fn another_argument_list_runs_as_a_subcommand() {
    let mut cmd = match runtime() {
        Runtime::Docker { image } => {
            let mut cmd = Command::new("docker");
            cmd.args(["run", "--rm", image.as_str()]);
            cmd
        }
        Runtime::Binary { path } => Command::new(path),
    };
    let out = cmd.args(["package", "--help"]).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("model.tar.gz"), "{stdout}");
}

/// `docker stop` while a request is in flight (its body still arriving): the request completes,
/// new connections are refused, and the process exits 0 before the 10 s grace period ends.
#[test]
fn stop_drains_the_in_flight_request_and_exits_zero() {
    let layout = OptMl::with_model("bert-seqcls");
    let mut running = serve(&layout, &SDK_ENV);
    wait_healthy(&running.server);
    let addr = running.server.addr;
    let body = r#"{"inputs": "in flight during shutdown"}"#;
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopping = running.stop();
    running
        .server
        .wait_for_log(&["shutting down: finishing in-flight requests"]);
    assert!(
        TcpStream::connect(addr).is_err(),
        "new connections must be refused after SIGTERM"
    );
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    stopping.join().expect("stop finished");
    let status = running
        .server
        .wait_exit(Duration::from_secs(30))
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", running.server.logs());
}

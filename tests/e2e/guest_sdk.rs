//! Guest crates as a user gets them (contract §6): an example copied out of this repository
//! builds on its own and is packed by `sagebrush package --guest DIR`, and
//! `#[guest_sdk::handler]` refuses `transform_fn` mixed with another hook with the exact message
//! of contract §6 (the SDK's `compile_fail` doc test only shows that it fails to compile; this
//! pins why), which `sagebrush package --guest` shows as cargo printed it.
//!
//! Both build a crate in a temporary directory outside the workspace against this repository's
//! `guest-sdk` by path, with the repository's `Cargo.lock` (same dependency versions, no network:
//! `CARGO_NET_OFFLINE`), through `sagebrush package --guest`. `CARGO_TARGET_DIR` points the
//! build at `<target>/guests-standalone`, which persists between runs so only the copied crate
//! itself is compiled again (and shows that the component is found where cargo metadata says
//! it is, not at a guessed `DIR/target`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use crate::support::guest_build::guest_target_dir;
use crate::support::{Server, copy_dir, fixture, repo_root};

const TRANSFORM_CONFLICT: &str = "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation";

/// Copies `examples/<example>` into a fresh directory outside the repository as package
/// `package`, with its `guest-sdk` path pointing at this repository's SDK.
fn copy_out(example: &str, package: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = repo_root().canonicalize().expect("repository root");
    assert!(
        !tmp.path().starts_with(&root),
        "the copy must be outside the repository"
    );
    let dir = tmp.path().join(package);
    copy_dir(&repo_root().join("examples").join(example), &dir);
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    assert!(
        text.contains("path = \"../../guest-sdk\""),
        "examples/{example}/Cargo.toml must name guest-sdk by path:\n{text}"
    );
    let sdk = root.join("guest-sdk");
    let text = text
        .replace(
            "path = \"../../guest-sdk\"",
            &format!("path = {:?}", sdk.display().to_string()),
        )
        .replace(
            &format!("name = \"{example}\""),
            &format!("name = \"{package}\""),
        );
    std::fs::write(&manifest, text).expect("write manifest");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
    (tmp, dir)
}

/// `sagebrush package --model-dir <model_dir> --guest <dir> -o <archive>`, building offline into
/// `<target>/guests-standalone`.
fn package_guest(dir: &Path, model_dir: &Path, archive: &Path) -> Output {
    package_command(dir, model_dir, archive)
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("sagebrush package runs")
}

fn package_command(dir: &Path, model_dir: &Path, archive: &Path) -> Command {
    let target = guest_target_dir().with_file_name("guests-standalone");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagebrush"));
    cmd.args(["package", "--model-dir"])
        .arg(model_dir)
        .arg("--guest")
        .arg(dir)
        .arg("-o")
        .arg(archive)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS");
    cmd
}

#[test]
fn an_example_copied_out_of_the_repository_is_packed_with_guest_and_serves() {
    let (tmp, dir) = copy_out("transform", "copied-transform");
    let archive = tmp.path().join("model.tar.gz");
    let output = package_guest(&dir, &fixture("bert-seqcls"), &archive);
    assert!(
        output.status.success(),
        "the copied example does not build and pack on its own:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        archive.display().to_string(),
        "stdout carries only the archive's path"
    );
    let server = Server::start(&archive).wait_ready();
    server.wait_for_log(&["user code hooks found", "transform_fn"]);
    // transformers' label for this text on bert-seqcls (case `bert-seqcls/single_inferred`),
    // in the example's `label<TAB>score` text answer.
    let answer = server.post(
        "/invocations",
        &[("content-type", "text/plain"), ("accept", "text/plain")],
        "The movie was wonderful and the actors were great. I loved it.",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with("NEGATIVE\t"), "{}", answer.body);
    // The JSON answer, and the example's own 406 naming the refused type: its Accept handling
    // is `guest_sdk::media_type`'s (first type, parameters dropped, lower-cased).
    let answer = server.invoke(&json!({ "inputs": "The movie was wonderful." }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["inputs"],
        "The movie was wonderful.",
        "{}",
        answer.body
    );
    let refused = server.post(
        "/invocations",
        &[
            ("content-type", "text/plain"),
            ("accept", "Image/PNG;q=1, text/plain;q=0.5"),
        ],
        "hello",
    );
    let message = refused.expect_error(406, "not_acceptable");
    assert!(message.contains("not `image/png`"), "{message}");
}

/// The README's other way to name the SDK: `guest-sdk = { git = ... }`. The repository itself
/// (a `file://` URL, at its `HEAD` commit) stands for the published one; cargo fetches it locally
/// (no `CARGO_NET_OFFLINE`: cargo refuses git sources offline), and the copied `Cargo.lock` keeps
/// every crates.io dependency at its locked version, so nothing goes to the network. Without a
/// git checkout (a source tarball) there is no commit to name, and the test says so and stops.
#[test]
fn an_example_depending_on_guest_sdk_by_git_is_packed_with_guest_and_serves() {
    let root = repo_root().canonicalize().expect("repository root");
    let head = Command::new("git")
        .current_dir(&root)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success() && root.join(".git").exists());
    let Some(head) = head else {
        eprintln!("not a git checkout: the git dependency cannot be exercised here");
        return;
    };
    let rev = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let (tmp, dir) = copy_out("transform", "git-transform");
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    let sdk_path = format!(
        "guest-sdk = {{ path = {:?} }}",
        root.join("guest-sdk").display().to_string()
    );
    assert!(text.contains(&sdk_path), "{text}");
    let text = text.replace(
        &sdk_path,
        &format!(
            "guest-sdk = {{ git = \"file://{}\", rev = \"{rev}\" }}",
            root.display()
        ),
    );
    std::fs::write(&manifest, text).expect("write manifest");
    let archive = tmp.path().join("model.tar.gz");
    let output = package_command(&dir, &fixture("bert-seqcls"), &archive)
        .output()
        .expect("sagebrush package runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "a guest naming guest-sdk by git does not build and pack:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("guest-sdk v0.1.0 (file://{}", root.display())),
        "guest-sdk did not come from the git source:\n{stderr}"
    );
    let server = Server::start(&archive).wait_ready();
    let answer = server.post(
        "/invocations",
        &[("content-type", "text/plain"), ("accept", "text/plain")],
        "The movie was wonderful and the actors were great. I loved it.",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with("NEGATIVE\t"), "{}", answer.body);
}

#[test]
fn transform_fn_with_input_fn_fails_to_compile_with_the_exact_message() {
    let (_tmp, dir) = copy_out("transform", "conflicting-hooks");
    std::fs::write(
        dir.join("src/lib.rs"),
        r#"
use guest_sdk::{Context, Error, Handler, Payload, Response};

struct Mixed;

#[guest_sdk::handler]
impl Handler for Mixed {
    fn input_fn(body: Vec<u8>, _ct: &str, _ctx: &Context) -> Result<Payload, Error> {
        Ok(Payload::Bytes(body))
    }
    fn transform_fn(_m: Option<&()>, body: Vec<u8>, ct: &str, _accept: &str, _ctx: &Context)
        -> Result<Response, Error> {
        Ok(Response::new(body, ct))
    }
}
"#,
    )
    .expect("write lib.rs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("model.tar.gz");
    let output = package_guest(&dir, &fixture("bert-seqcls"), &archive);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "mixed hooks compiled:\n{stderr}");
    assert!(
        stderr.contains(&format!("error: {TRANSFORM_CONFLICT}")),
        "the compile error is not the contract's message, or cargo's output is not shown:\n{stderr}"
    );
    assert!(
        stderr.contains("error: `cargo build --target wasm32-wasip2 --release` failed in"),
        "sagebrush does not say the build failed:\n{stderr}"
    );
    assert!(
        !archive.exists(),
        "no archive is written for a guest that does not build"
    );
}

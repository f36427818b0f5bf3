//! Guest crates as a user gets them (contract §6): an example copied out of this repository
//! builds on its own, and `#[guest_sdk::handler]` refuses `transform_fn` mixed with another
//! hook with the exact message of contract §6 (the SDK's `compile_fail` doc test only shows that
//! it fails to compile; this pins why).
//!
//! Both build a crate in a temporary directory outside the workspace against this repository's
//! `guest-sdk` by path, with the repository's `Cargo.lock` (same dependency versions, no network:
//! `--offline`), into `<target>/guests-standalone`, which persists between runs so only the
//! copied crate itself is compiled again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::guest_build::guest_target_dir;
use crate::support::{Server, base_dir_with, copy_dir, fixture, repo_root};

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

/// `cargo build --release --target wasm32-wasip2 --offline` in `dir`.
fn build(dir: &Path) -> (Output, PathBuf) {
    let target = guest_target_dir().with_file_name("guests-standalone");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    (output, target.join("wasm32-wasip2/release"))
}

#[test]
fn an_example_copied_out_of_the_repository_builds_and_serves() {
    let (_tmp, dir) = copy_out("transform", "copied-transform");
    let (output, out_dir) = build(&dir);
    assert!(
        output.status.success(),
        "the copied example does not build on its own:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wasm = out_dir.join("copied_transform.wasm");
    let base = base_dir_with(&fixture("bert-seqcls"));
    let code = base.path().join("model/code");
    std::fs::create_dir_all(&code).expect("mkdir code");
    std::fs::copy(&wasm, code.join("inference.wasm")).expect("copy the built guest");
    let server = Server::builder()
        .model(base.path().join("model"))
        .start()
        .wait_ready();
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
    let (output, _) = build(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "mixed hooks compiled:\n{stderr}");
    assert!(
        stderr.contains(&format!("error: {TRANSFORM_CONFLICT}")),
        "the compile error is not the contract's message:\n{stderr}"
    );
}

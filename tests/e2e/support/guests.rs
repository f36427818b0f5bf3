//! Guest components for the e2e tests: every crate in `examples/` and `tests/guests/`, built
//! once per run with `cargo build --target wasm32-wasip2 --release` in its own target dir (so
//! it never waits on the lock of the build that runs these tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::repo_root;

/// The guest crates: directory under the repository root → package name.
pub const GUEST_DIRS: [&str; 2] = ["examples", "tests/guests"];

fn packages() -> Vec<String> {
    let mut names = Vec::new();
    for dir in GUEST_DIRS {
        for entry in std::fs::read_dir(repo_root().join(dir)).expect("guest dir") {
            let path = entry.expect("entry").path();
            if path.join("Cargo.toml").is_file() {
                names.push(
                    path.file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    names.sort();
    names
}

/// The names of the example guests (`examples/*`).
pub fn examples() -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(repo_root().join("examples"))
        .expect("examples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The component built from `examples/<name>` or `tests/guests/<name>`.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo_root().join("target"), PathBuf::from)
            .join("guests");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root())
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", &target_dir);
        for package in packages() {
            cmd.args(["-p", &package]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the guests failed (is the wasm32-wasip2 target installed? see .ci/wasm-setup.sh)");
        target_dir.join("wasm32-wasip2/release")
    });
    let path = out.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A temporary SageMaker base dir whose `model` is a copy of `fixture_dir` with `guest` as
/// `code/inference.wasm`.
pub fn model_with_guest(fixture_dir: &Path, guest_name: &str) -> tempfile::TempDir {
    let base = super::base_dir_with(fixture_dir);
    let code = base.path().join("model/code");
    std::fs::create_dir_all(&code).expect("mkdir code");
    std::fs::copy(guest(guest_name), code.join("inference.wasm")).expect("copy guest");
    base
}

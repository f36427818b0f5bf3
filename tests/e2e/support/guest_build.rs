//! Guest components built for the tests, shared by the end-to-end tests (`support::guests`) and
//! the unit tests of the WebAssembly host (`runtime/src/wasm/tests.rs` includes this file), so
//! there is one list of guests: every crate in `examples/` and `tests/guests/`, found by reading
//! those directories. They are built once per test binary with
//! `cargo build --target wasm32-wasip2 --release`, in their own target dir (`<target>/guests`),
//! so the build never waits on the lock of the build that runs the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directories under the repository root whose sub-directories are guest crates.
pub(crate) const GUEST_DIRS: [&str; 2] = ["examples", "tests/guests"];

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The target directory of the guest builds: `<CARGO_TARGET_DIR or target>/guests`.
pub(crate) fn guest_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from)
        .join("guests")
}

/// The names of the crates (their directory names, which are also their package names) in
/// `dir`, sorted.
pub(crate) fn crates_in(dir: &str) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The example guests (`examples/*`).
pub(crate) fn examples() -> Vec<String> {
    crates_in("examples")
}

/// Every guest crate: the examples and the test guests.
pub(crate) fn all_guests() -> Vec<String> {
    GUEST_DIRS.iter().flat_map(|dir| crates_in(dir)).collect()
}

/// The component built from `examples/<name>` or `tests/guests/<name>`; the first call builds
/// them all.
pub(crate) fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let target_dir = guest_target_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root())
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", &target_dir);
        for package in all_guests() {
            cmd.args(["-p", &package]);
        }
        let status = cmd.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the guests failed (is the wasm32-wasip2 target installed? see .ci/wasm-setup.sh)"
        );
        target_dir.join("wasm32-wasip2/release")
    });
    let path = out.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

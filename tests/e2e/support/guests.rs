//! Guest components for the e2e tests: the shared builder (`guest_build`, one list of guests
//! for the unit and the end-to-end tests) and models that ship a guest.

use std::path::Path;

pub(crate) use super::guest_build::{examples, guest};

/// A temporary SageMaker base dir whose `model` is a copy of `fixture_dir` with `guest` as
/// `code/inference.wasm`.
pub fn model_with_guest(fixture_dir: &Path, guest_name: &str) -> tempfile::TempDir {
    let base = super::base_dir_with(fixture_dir);
    let code = base.path().join("model/code");
    std::fs::create_dir_all(&code).expect("mkdir code");
    std::fs::copy(guest(guest_name), code.join("inference.wasm")).expect("copy guest");
    base
}

/// The component compiled from the Python hooks in `tests/fixtures/python/<name>` by the compiler
/// of `sagebrush package --python-dir` (componentize-py from its venv in the default cache dir,
/// installed by `.ci/python-setup.sh` or on first use). Compiled once per run, one at a time
/// (a compile takes the machine's CPU for seconds), and cached on disk by content in
/// `<target>/python-guests`, so a later run compiles only what changed.
pub fn python_guest(name: &str) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use sagebrush::package::{PythonSource, PythonTools, python};

    static BUILT: Mutex<Option<HashMap<String, std::path::PathBuf>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let tools = PythonTools::ensure(&sagebrush_cache_dir(), std::ffi::OsStr::new("python3"))
        .unwrap_or_else(|e| panic!("componentize-py (see .ci/python-setup.sh): {e}"));
    let source = PythonSource::dir(python_fixture(name));
    let path = python::compile(&source, &tools, &python_cache_dir())
        .unwrap_or_else(|e| panic!("compiling tests/fixtures/python/{name}: {e}"));
    built.insert(name.to_owned(), path.clone());
    path
}

/// `tests/fixtures/python/<name>`.
pub fn python_fixture(name: &str) -> std::path::PathBuf {
    super::repo_root().join("tests/fixtures/python").join(name)
}

/// Where the tests cache compiled Python hooks: `<target>/python-guests`.
pub fn python_cache_dir() -> std::path::PathBuf {
    super::guest_build::guest_target_dir()
        .parent()
        .expect("the guests dir is inside the target dir")
        .join("python-guests")
}

/// A temporary SageMaker base dir whose `model` is a copy of `fixture_dir` with the Python
/// hooks `name` compiled as `code/inference.wasm`.
pub fn model_with_python_guest(fixture_dir: &Path, name: &str) -> tempfile::TempDir {
    let base = super::base_dir_with(fixture_dir);
    let code = base.path().join("model/code");
    std::fs::create_dir_all(&code).expect("mkdir code");
    std::fs::copy(python_guest(name), code.join("inference.wasm")).expect("copy guest");
    base
}

/// sagebrush's cache dir as the package command finds it (`SAGEBRUSH_CACHE_DIR`, else the
/// default), where componentize-py's venv is.
pub fn sagebrush_cache_dir() -> std::path::PathBuf {
    std::env::var_os("SAGEBRUSH_CACHE_DIR").map_or_else(
        sagebrush::config::default_cache_dir,
        std::path::PathBuf::from,
    )
}

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

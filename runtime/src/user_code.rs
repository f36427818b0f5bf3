//! Where user code is found in SageMaker's layout (contract §6): the directory named by
//! `SAGEMAKER_SUBMIT_DIRECTORY` (the SDK's local mode mounts `source_dir` at `/opt/ml/code` and
//! says so there), the model's `code/` (where the SDK repacks `entry_point` and `source_dir`
//! into `model.tar.gz`), and `<base-dir>/code`. The first directory holding the program
//! (`SAGEMAKER_PROGRAM`, default `inference.wasm`) wins. This module only finds files; loading
//! the component is `wasm`'s job.

use std::path::{Path, PathBuf};

use crate::config::CodeDir;

/// Python's dependency list, which has no meaning for a WebAssembly component.
const REQUIREMENTS: &str = "requirements.txt";
/// The Python toolkit's entry point, refused rather than ignored.
const PYTHON_PROGRAM: &str = "inference.py";

/// What the code directories hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// A WebAssembly component to load.
    Wasm(PathBuf),
    /// Python user code (a `.py` program, or `inference.py` and no component).
    Python(PathBuf),
    /// No user code: the native hooks serve.
    Nothing,
}

/// Looks for `program` in `dirs` (in order) for the model in `model_dir`. Logs once when a
/// `requirements.txt` is found, since it is not used.
pub fn locate(model_dir: &Path, dirs: &[CodeDir], program: &str) -> Located {
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(|dir| match dir {
            CodeDir::Model => model_dir.join("code"),
            CodeDir::Path(path) => path.clone(),
        })
        .collect();
    if let Some(requirements) = dirs
        .iter()
        .map(|dir| dir.join(REQUIREMENTS))
        .find(|file| file.is_file())
    {
        tracing::warn!(
            file = %requirements.display(),
            "code/requirements.txt is not used: sagebrush installs no Python packages; user code is a WebAssembly component with its dependencies compiled in"
        );
    }
    for dir in &dirs {
        let file = dir.join(program);
        if file.is_file() {
            return if file.extension().is_some_and(|ext| ext == "py") {
                Located::Python(file)
            } else {
                Located::Wasm(file)
            };
        }
    }
    dirs.iter()
        .map(|dir| dir.join(PYTHON_PROGRAM))
        .find(|file| file.is_file())
        .map_or(Located::Nothing, Located::Python)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, b"x").expect("write");
    }

    #[test]
    fn the_first_directory_holding_the_program_wins() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (model, submit) = (tmp.path().join("model"), tmp.path().join("submit"));
        let dirs = [CodeDir::Path(submit.clone()), CodeDir::Model];
        touch(&model.join("code/inference.wasm"));
        assert_eq!(
            locate(&model, &dirs, "inference.wasm"),
            Located::Wasm(model.join("code/inference.wasm"))
        );
        touch(&submit.join("inference.wasm"));
        assert_eq!(
            locate(&model, &dirs, "inference.wasm"),
            Located::Wasm(submit.join("inference.wasm"))
        );
        assert_eq!(locate(&model, &dirs, "other.wasm"), Located::Nothing);
    }

    #[test]
    fn python_code_is_reported_not_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let model = tmp.path().join("model");
        let base_code = tmp.path().join("code");
        let dirs = [CodeDir::Model, CodeDir::Path(base_code.clone())];
        touch(&base_code.join("inference.py"));
        assert_eq!(
            locate(&model, &dirs, "inference.wasm"),
            Located::Python(base_code.join("inference.py"))
        );
        touch(&base_code.join("handler.py"));
        assert_eq!(
            locate(&model, &dirs, "handler.py"),
            Located::Python(base_code.join("handler.py"))
        );
    }
}

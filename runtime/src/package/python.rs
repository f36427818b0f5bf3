//! `sagebrush package --python FILE.py | --python-dir DIR`: compiles the SageMaker toolkit's
//! Python hooks into a component of the `handler` world with componentize-py (issue #16 item 2).
//!
//! The user's modules are copied into a staging folder next to two modules that ship inside
//! this binary: `sagebrush` (the API user code imports: codecs, `pipeline()`, exceptions,
//! logging) and `sagebrush_app` (the `hooks` export on top of the user's functions), plus the
//! WIT file. The transform_fn rule is checked on the source first (Python's `ast`, nothing
//! runs), with the runtime's exact message. componentize-py is pinned
//! ([`COMPONENTIZE_PY_VERSION`]) and installed from PyPI on first use into a venv under the
//! cache dir; after that, packaging works offline. Compiled components are cached by the
//! sha256 of everything that went in, so repeating a package is instant.
//!
//! Does not own: the archive (`package.rs`), loading or calling the component (`wasm/`).

use std::ffi::{OsStr, OsString};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest as _, Sha256};

use crate::handler::{Hook, HookSet, TRANSFORM_CONFLICT};

use super::{PackageError, Result};

/// The componentize-py release sagebrush compiles Python with (PyPI).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The module user code imports (`from sagebrush import pipeline, BadRequest`).
const SAGEBRUSH_PY: &str = include_str!("python/sagebrush.py");
/// The component's `hooks` export over the user's functions.
const APP_PY: &str = include_str!("python/sagebrush_app.py");
/// Lists the hooks a module defines, from its syntax tree.
const CHECK_HOOKS_PY: &str = include_str!("python/check_hooks.py");
/// The world the component implements: `sagebrush:handler@0.2.0` (`pipeline` and `tokenizer`
/// resources for `sagebrush.pipeline(task, subfolder)` and `sagebrush.tokenizer()`). The glue
/// is written against its bindings: a new WIT version needs the glue checked again.
const WIT: &str = include_str!("../../../wit/sagebrush.wit");
/// The module componentize-py compiles (it imports the user's entry module).
const APP_MODULE: &str = "sagebrush_app";
/// Module names the staging folder reserves.
const RESERVED: [&str; 6] = [
    "sagebrush",
    "sagebrush_app",
    "sagebrush_entry",
    "wit_world",
    "componentize_py_types",
    "componentize_py_runtime",
];

/// The Python user code to compile.
#[derive(Debug, Clone)]
pub struct PythonSource {
    /// The module holding the hooks (`inference.py`).
    pub entry: PathBuf,
    /// A folder of modules shipped with it (the entry's folder for `--python-dir`).
    pub dir: Option<PathBuf>,
}

impl PythonSource {
    /// `--python FILE.py`: one module.
    pub fn file(entry: impl Into<PathBuf>) -> Self {
        Self {
            entry: entry.into(),
            dir: None,
        }
    }

    /// `--python-dir DIR`: every module of `DIR` (packages included), `DIR/inference.py` first.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            entry: dir.join("inference.py"),
            dir: Some(dir),
        }
    }

    fn module_name(&self) -> Result<String> {
        let stem = self
            .entry
            .file_stem()
            .and_then(OsStr::to_str)
            .unwrap_or_default();
        let valid = self.entry.extension() == Some(OsStr::new("py"))
            && stem
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid || RESERVED.contains(&stem) {
            return Err(PackageError::PythonModuleName {
                path: self.entry.clone(),
            });
        }
        Ok(stem.to_owned())
    }
}

/// Where componentize-py comes from.
#[derive(Debug, Clone)]
pub struct PythonTools {
    /// The componentize-py program.
    pub componentize_py: PathBuf,
    /// A Python 3 interpreter for the package-time hook check.
    pub python: OsString,
}

impl PythonTools {
    /// The venv holding the pinned componentize-py under `cache_dir`.
    pub fn venv_dir(cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("componentize-py-{COMPONENTIZE_PY_VERSION}"))
    }

    /// The pinned componentize-py in its venv under `cache_dir`, installed from PyPI with
    /// `host_python -m venv` and pip when it is not there yet (once; offline afterwards).
    pub fn ensure(cache_dir: &Path, host_python: &OsStr) -> Result<Self> {
        let venv = Self::venv_dir(cache_dir);
        let tools = Self {
            componentize_py: venv.join("bin/componentize-py"),
            python: venv.join("bin/python").into_os_string(),
        };
        let marker = venv.join(".sagebrush-installed");
        if marker.is_file() && tools.componentize_py.is_file() {
            return Ok(tools);
        }
        let install_failed = |step: &str| PackageError::ComponentizePyInstall {
            step: step.to_owned(),
            venv: venv.clone(),
        };
        eprintln!(
            "sagebrush: installing componentize-py {COMPONENTIZE_PY_VERSION} from PyPI into {} (once)",
            venv.display()
        );
        let _ = std::fs::remove_dir_all(&venv);
        let status = Command::new(host_python)
            .args(["-m", "venv"])
            .arg(&venv)
            .stdout(stderr_stdio())
            .status()
            .map_err(|_| install_failed("python3 -m venv"))?;
        if !status.success() {
            return Err(install_failed("python3 -m venv"));
        }
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))
            .stdout(stderr_stdio())
            .status()
            .map_err(|_| install_failed("pip install"))?;
        if !status.success() || !tools.componentize_py.is_file() {
            return Err(install_failed("pip install"));
        }
        std::fs::write(&marker, COMPONENTIZE_PY_VERSION).map_err(|source| PackageError::Write {
            path: marker,
            source,
        })?;
        Ok(tools)
    }
}

/// Compiles `source` into a component and returns its path: `<cache_dir>/python/<sha256>.wasm`,
/// reused when the same sources were compiled before.
pub fn compile(source: &PythonSource, tools: &PythonTools, cache_dir: &Path) -> Result<PathBuf> {
    let module = source.module_name()?;
    if !source.entry.is_file() {
        return Err(PackageError::PythonEntryMissing {
            path: source.entry.clone(),
        });
    }
    let stage = tempfile::tempdir().map_err(|source| PackageError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let root = stage.path();
    stage_sources(source, &module, root)?;

    let hooks = defined_hooks(&tools.python, &root.join(format!("{module}.py")))?;
    if let Some(hooks) = hooks {
        tracing::info!(hooks = %hooks, "python hooks found");
        if hooks.check().is_err() {
            return Err(PackageError::TransformConflict);
        }
    }

    let digest = digest_dir(root)?;
    let out_dir = cache_dir.join("python");
    let out = out_dir.join(format!("{digest}.wasm"));
    if out.is_file() {
        tracing::info!(component = %out.display(), "python hooks compiled before; reusing the component");
        return Ok(out);
    }
    std::fs::create_dir_all(&out_dir).map_err(|source| PackageError::Write {
        path: out_dir.clone(),
        source,
    })?;
    let partial = out_dir.join(format!("{digest}.wasm.partial-{}", std::process::id()));
    tracing::info!(module = %module, "compiling python hooks with componentize-py {COMPONENTIZE_PY_VERSION}");
    let output = Command::new(&tools.componentize_py)
        .current_dir(root)
        .env_remove("VIRTUAL_ENV")
        .args([
            "-d",
            "wit",
            "-w",
            "handler",
            "componentize",
            APP_MODULE,
            "-p",
            ".",
        ])
        .arg("-o")
        .arg(&partial)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| PackageError::ComponentizePyMissing {
            program: tools.componentize_py.clone(),
            error,
        })?;
    let mut err = io::stderr();
    let _ = err.write_all(&output.stdout);
    let _ = err.write_all(&output.stderr);
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        let text = String::from_utf8_lossy(&output.stderr);
        if text.contains(TRANSFORM_CONFLICT) {
            return Err(PackageError::TransformConflict);
        }
        return Err(PackageError::ComponentizeFailed {
            entry: source.entry.clone(),
            status: output.status,
        });
    }
    std::fs::rename(&partial, &out).map_err(|source| PackageError::Write {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// Copies the user's modules and writes sagebrush's into `root`.
fn stage_sources(source: &PythonSource, module: &str, root: &Path) -> Result<()> {
    if let Some(dir) = &source.dir {
        copy_python_tree(dir, root)?;
    } else {
        copy_file(&source.entry, &root.join(format!("{module}.py")))?;
    }
    for name in RESERVED {
        if root.join(format!("{name}.py")).exists() || root.join(name).is_dir() {
            return Err(PackageError::PythonModuleName {
                path: root.join(format!("{name}.py")),
            });
        }
    }
    let entry = format!(
        "# Written by `sagebrush package --python`.\nENTRY_MODULE = {module:?}\nTRANSFORM_CONFLICT = {TRANSFORM_CONFLICT:?}\n"
    );
    let wit_dir = root.join("wit");
    let files = [
        (root.join("sagebrush.py"), SAGEBRUSH_PY),
        (root.join("sagebrush_app.py"), APP_PY),
        (root.join("sagebrush_entry.py"), entry.as_str()),
        (wit_dir.join("sagebrush.wit"), WIT),
    ];
    std::fs::create_dir_all(&wit_dir).map_err(|source| PackageError::Write {
        path: wit_dir.clone(),
        source,
    })?;
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|source| PackageError::Write { path, source })?;
    }
    Ok(())
}

/// Copies the `.py` files and package folders of `from` (no `__pycache__`, no hidden folders).
fn copy_python_tree(from: &Path, to: &Path) -> Result<()> {
    let read_err = |source| PackageError::Read {
        path: from.to_path_buf(),
        source,
    };
    for item in std::fs::read_dir(from).map_err(read_err)? {
        let item = item.map_err(read_err)?;
        let name = item.file_name();
        let path = item.path();
        let name_str = name.to_string_lossy();
        if name_str.starts_with('.') || name_str == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            let sub = to.join(&name);
            std::fs::create_dir_all(&sub).map_err(|source| PackageError::Write {
                path: sub.clone(),
                source,
            })?;
            copy_python_tree(&path, &sub)?;
        } else if path.extension() == Some(OsStr::new("py")) {
            copy_file(&path, &to.join(&name))?;
        } else if name_str == "requirements.txt" {
            tracing::warn!(file = %path.display(), "requirements.txt is not installed: copy pure-Python packages into the folder instead (C extensions such as numpy cannot run)");
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|source| PackageError::Read {
            path: from.to_path_buf(),
            source,
        })
}

/// The hooks `module` defines at its top level, read from its syntax tree by `python`; `None`
/// when no Python can be run (the in-component check then refuses a conflict while compiling).
fn defined_hooks(python: &OsStr, module: &Path) -> Result<Option<HookSet>> {
    let output = Command::new(python)
        .args(["-I", "-c", CHECK_HOOKS_PY])
        .arg(module)
        .stdin(Stdio::null())
        .output();
    let Ok(output) = output else {
        tracing::warn!(python = %python.to_string_lossy(), "no Python to check the hooks before compiling");
        return Ok(None);
    };
    if output.status.code() == Some(2) {
        return Err(PackageError::PythonSyntax {
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    if !output.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(Some(
        Hook::ALL
            .into_iter()
            .filter(|h| text.lines().any(|l| l.trim() == h.as_str()))
            .collect(),
    ))
}

/// sha256 over the componentize-py version and every staged file (path and contents, sorted).
fn digest_dir(root: &Path) -> Result<String> {
    let mut files = Vec::new();
    list_files(root, root, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    hasher.update(COMPONENTIZE_PY_VERSION.as_bytes());
    for rel in files {
        let bytes = std::fs::read(root.join(&rel)).map_err(|source| PackageError::Read {
            path: root.join(&rel),
            source,
        })?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let read_err = |source| PackageError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for item in std::fs::read_dir(dir).map_err(read_err)? {
        let path = item.map_err(read_err)?.path();
        if path.is_dir() {
            list_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// Our stderr as a child's stdout, so that stdout only carries the archive's path.
fn stderr_stdio() -> Stdio {
    use std::os::fd::AsFd as _;
    io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::inherit(), Stdio::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_name_must_be_a_python_identifier_and_not_reserved() {
        assert!(
            PythonSource::file("code/inference.py")
                .module_name()
                .is_ok()
        );
        for bad in [
            "code/my-hooks.py",
            "code/1st.py",
            "code/inference.txt",
            "code/sagebrush.py",
        ] {
            assert!(
                matches!(
                    PythonSource::file(bad).module_name(),
                    Err(PackageError::PythonModuleName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn hooks_are_read_from_the_syntax_tree_without_running_the_module() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let module = tmp.path().join("inference.py");
        std::fs::write(
            &module,
            "import sys\nsys.exit(7)\nfrom helpers import input_fn\n\ndef transform_fn(m, b, c, a):\n    pass\n\nasync def model_fn(d):\n    pass\n\ndef helper():\n    def predict_fn(): pass\n",
        )
        .expect("write");
        let hooks = defined_hooks(OsStr::new("python3"), &module)
            .expect("parses")
            .expect("python3 is installed");
        let expected: HookSet = [Hook::ModelFn, Hook::InputFn, Hook::TransformFn]
            .into_iter()
            .collect();
        assert_eq!(hooks, expected);
        assert!(hooks.check().is_err());
    }

    #[test]
    fn a_syntax_error_is_reported_with_its_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let module = tmp.path().join("inference.py");
        std::fs::write(&module, "def input_fn(:\n").expect("write");
        let err = defined_hooks(OsStr::new("python3"), &module).expect_err("syntax error");
        assert!(err.to_string().contains("inference.py:1"), "{err}");
    }

    #[test]
    fn the_digest_changes_with_any_staged_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("a.py"), "x = 1\n").expect("write");
        let first = digest_dir(tmp.path()).expect("digest");
        assert_eq!(first, digest_dir(tmp.path()).expect("digest"));
        std::fs::write(tmp.path().join("a.py"), "x = 2\n").expect("write");
        assert_ne!(first, digest_dir(tmp.path()).expect("digest"));
    }

    #[test]
    fn a_python_dir_stages_modules_and_packages_but_not_other_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let code = tmp.path().join("code");
        std::fs::create_dir_all(code.join("helpers/__pycache__")).expect("mkdir");
        std::fs::write(code.join("inference.py"), "").expect("write");
        std::fs::write(code.join("helpers/__init__.py"), "").expect("write");
        std::fs::write(code.join("helpers/__pycache__/x.pyc"), "").expect("write");
        std::fs::write(code.join("inference.wasm"), "").expect("write");
        let stage = tmp.path().join("stage");
        std::fs::create_dir_all(&stage).expect("mkdir");
        stage_sources(&PythonSource::dir(&code), "inference", &stage).expect("stages");
        let mut files = Vec::new();
        list_files(&stage, &stage, &mut files).expect("list");
        files.sort();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "helpers/__init__.py",
                "inference.py",
                "sagebrush.py",
                "sagebrush_app.py",
                "sagebrush_entry.py",
                "wit/sagebrush.wit"
            ]
        );
    }
}

//! `sagebrush package --model-dir DIR [--code FILE.wasm | --guest CRATE_DIR] -o model.tar.gz`:
//! writes a SageMaker `model.tar.gz` with the model files at the archive root and the guest
//! component at `code/inference.wasm` (contract §3, §6). `--guest` builds the guest crate first
//! (`cargo build --target wasm32-wasip2 --release` in its directory, with its own target dir)
//! and packs the component it produced, found through `cargo metadata`. `--python FILE.py` or
//! `--python-dir DIR` compiles the SageMaker toolkit's Python hooks with componentize-py
//! (`package/python.rs`) and packs that component.
//!
//! The archive is reproducible: entries sorted by path, owner 0, mtime 0, modes 0644/0755.
//! Symbolic links are followed (a Hugging Face cache snapshot is made of links), so the archive
//! holds only regular files and directories, which is what the safe unpacker accepts.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::PackageArgs;

pub mod python;

pub use python::{PythonSource, PythonTools};

/// Where the guest goes inside the archive.
pub const GUEST_ENTRY: &str = "code/inference.wasm";

/// The Rust target guests are built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// The first 8 bytes of a WebAssembly component (magic, then version 0x0d and layer 1).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The first 8 bytes of a core WebAssembly module.
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Packaging failed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// `--model-dir` is not a directory.
    #[error("`--model-dir` must be a directory, got `{}`", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// `--code` is not a WebAssembly component.
    #[error("`--code` must be a WebAssembly component (build it with `cargo build --target wasm32-wasip2 --release`); `{}` {reason}", path.display())]
    NotAComponent {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: &'static str,
    },
    /// More than one of `--code`, `--guest`, `--python` and `--python-dir` was given.
    #[error(
        "give one of `--code FILE.wasm`, `--guest DIR`, `--python FILE.py` or `--python-dir DIR`, not several"
    )]
    CodeAndGuest,
    /// The Python module's name cannot be imported, or is one sagebrush reserves.
    #[error("`{}` cannot be the hooks module: its name must be a Python identifier ending in `.py`, and not one of sagebrush, sagebrush_app, sagebrush_entry, wit_world, componentize_py_types, componentize_py_runtime", path.display())]
    PythonModuleName {
        /// The file.
        path: PathBuf,
    },
    /// The hooks module does not exist (`--python-dir` needs `inference.py`).
    #[error("`{}` does not exist; `--python-dir` needs the hooks in `inference.py`", path.display())]
    PythonEntryMissing {
        /// The module expected.
        path: PathBuf,
    },
    /// The hooks module does not parse.
    #[error("the Python hooks do not parse: {message}")]
    PythonSyntax {
        /// Python's message with file and line.
        message: String,
    },
    /// transform_fn together with input_fn, predict_fn or output_fn (the runtime's message).
    #[error("{}", crate::handler::TRANSFORM_CONFLICT)]
    TransformConflict,
    /// componentize-py could not be installed.
    #[error("cannot install componentize-py {} into `{}` ({step} failed; its output is above). It needs python3 with venv and pip, and PyPI reachable once; or install it yourself (`pip install componentize-py=={}`) and pass `--componentize-py PATH`", python::COMPONENTIZE_PY_VERSION, venv.display(), python::COMPONENTIZE_PY_VERSION)]
    ComponentizePyInstall {
        /// The step that failed.
        step: String,
        /// The venv.
        venv: PathBuf,
    },
    /// componentize-py could not be started.
    #[error("cannot run componentize-py `{}` ({error}); install it with `pip install componentize-py=={}`, or leave out `--componentize-py` to let sagebrush install it", program.display(), python::COMPONENTIZE_PY_VERSION)]
    ComponentizePyMissing {
        /// The program.
        program: PathBuf,
        /// Why it did not start.
        error: io::Error,
    },
    /// componentize-py failed; its output went to standard error.
    #[error("componentize-py could not compile `{}` ({status}); its output is above (C extensions such as numpy cannot be compiled in)", entry.display())]
    ComponentizeFailed {
        /// The hooks module.
        entry: PathBuf,
        /// componentize-py's exit status.
        status: std::process::ExitStatus,
    },
    /// `--guest` is not a directory with a `Cargo.toml`.
    #[error("`--guest` must be the directory of a guest crate (with a `Cargo.toml`); `{}` has none", dir.display())]
    NotACrate {
        /// The directory given.
        dir: PathBuf,
    },
    /// cargo could not be started.
    #[error("`--guest` builds the crate with cargo, and `{}` cannot be run ({error}); install Rust with rustup (https://rustup.rs), then `rustup target add {GUEST_TARGET}`", program.to_string_lossy())]
    CargoMissing {
        /// The program tried (`$CARGO` or `cargo`).
        program: OsString,
        /// Why it did not start (in the message: a missing program is the usual case, and the
        /// advice must come last).
        error: io::Error,
    },
    /// The Rust standard library for `wasm32-wasip2` is not installed.
    #[error("the Rust target `{GUEST_TARGET}` is not installed for the toolchain that builds `{}` (no `{}`); install it with `rustup target add {GUEST_TARGET}`", dir.display(), libdir.display())]
    TargetMissing {
        /// The guest crate.
        dir: PathBuf,
        /// Where its standard library would be.
        libdir: PathBuf,
    },
    /// `cargo metadata` failed or did not describe the crate.
    #[error("cannot read the guest crate `{}` with `cargo metadata`: {reason}", dir.display())]
    Metadata {
        /// The guest crate.
        dir: PathBuf,
        /// What went wrong (cargo's message when it failed).
        reason: String,
    },
    /// The crate builds no `cdylib`, so no component.
    #[error("the guest crate `{}` has no `cdylib` library, so it builds no component; add `[lib] crate-type = [\"cdylib\"]` to its Cargo.toml", dir.display())]
    NoCdylib {
        /// The guest crate.
        dir: PathBuf,
    },
    /// `cargo build` failed; its output went to standard error.
    #[error("`cargo build --target {GUEST_TARGET} --release` failed in `{}` ({status}); cargo's output is above", dir.display())]
    BuildFailed {
        /// The guest crate.
        dir: PathBuf,
        /// cargo's exit status.
        status: std::process::ExitStatus,
    },
    /// The build succeeded but the component is not where cargo metadata says.
    #[error("`cargo build` succeeded but `{}` was not written", path.display())]
    NotBuilt {
        /// Where the component should be.
        path: PathBuf,
    },
    /// A file is neither a regular file nor a directory (socket, device, dangling link).
    #[error("`{}` is not a regular file or directory; remove it from the model directory", path.display())]
    Special {
        /// The entry.
        path: PathBuf,
    },
    /// Reading an input failed.
    #[error("cannot read `{}`", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing the archive failed.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The archive.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Shorthand for packaging results.
pub type Result<T, E = PackageError> = std::result::Result<T, E>;

/// Writes the archive `args.output` and returns its path.
pub fn run(args: &PackageArgs) -> Result<PathBuf> {
    if !args.model_dir.is_dir() {
        return Err(PackageError::NotADirectory {
            path: args.model_dir.clone(),
        });
    }
    let python_source = match (&args.python, &args.python_dir) {
        (Some(file), None) => Some(PythonSource::file(file)),
        (None, Some(dir)) => Some(PythonSource::dir(dir)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(PackageError::CodeAndGuest),
    };
    let code = match (&args.code, &args.guest, python_source) {
        (Some(code), None, None) => {
            check_component(code)?;
            Some(code.clone())
        }
        (None, Some(dir), None) => {
            let component = build_guest(dir, &Toolchain::from_env())?;
            check_component(&component)?;
            Some(component)
        }
        (None, None, Some(source)) => {
            let cache_dir = args
                .cache_dir
                .clone()
                .unwrap_or_else(crate::config::default_cache_dir);
            let tools = match &args.componentize_py {
                Some(program) => PythonTools {
                    componentize_py: program.clone(),
                    python: "python3".into(),
                },
                None => PythonTools::ensure(&cache_dir, OsStr::new("python3"))?,
            };
            let component = python::compile(&source, &tools, &cache_dir)?;
            check_component(&component)?;
            Some(component)
        }
        (None, None, None) => None,
        _ => return Err(PackageError::CodeAndGuest),
    };
    let output_abs = std::path::absolute(&args.output).unwrap_or_else(|_| args.output.clone());
    let mut entries = Vec::new();
    collect(&args.model_dir, Path::new(""), &mut entries)?;
    // The guest given with --code or --guest replaces one already in the directory; the archive
    // being written never packs itself.
    entries.retain(|entry| {
        let replaced = code.is_some() && entry.relative == Path::new(GUEST_ENTRY);
        let itself = std::path::absolute(&entry.source).is_ok_and(|p| p == output_abs);
        !replaced && !itself
    });
    if let Some(code) = &code {
        if !entries.iter().any(|e| e.relative == Path::new("code")) {
            entries.push(Entry {
                relative: PathBuf::from("code"),
                source: code.clone(),
                dir: true,
            });
        }
        entries.push(Entry {
            relative: PathBuf::from(GUEST_ENTRY),
            source: code.clone(),
            dir: false,
        });
    }
    entries.sort_by(|a, b| a.relative.cmp(&b.relative));

    let tmp = args.output.with_extension("tmp");
    let write_err = |source| PackageError::Write {
        path: args.output.clone(),
        source,
    };
    let file = File::create(&tmp).map_err(write_err)?;
    let mut builder =
        tar::Builder::new(GzEncoder::new(BufWriter::new(file), Compression::default()));
    for entry in &entries {
        append(&mut builder, entry).map_err(|e| match e {
            AppendError::Read(source) => PackageError::Read {
                path: entry.source.clone(),
                source,
            },
            AppendError::Write(source) => write_err(source),
        })?;
    }
    let finished = builder
        .into_inner()
        .and_then(GzEncoder::finish)
        .and_then(|mut w| w.flush().map(|()| w))
        .and_then(|w| w.into_inner().map_err(io::IntoInnerError::into_error))
        .and_then(|f| f.sync_all());
    finished.map_err(write_err)?;
    std::fs::rename(&tmp, &args.output).map_err(write_err)?;
    tracing::info!(output = %args.output.display(), files = entries.iter().filter(|e| !e.dir).count(), guest = code.is_some(), "model archive written");
    Ok(args.output.clone())
}

/// The programs that build a guest crate.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// cargo: `$CARGO`, else `cargo` from `PATH`.
    pub cargo: OsString,
    /// rustc, asked where the target's standard library is: `$RUSTC`, else `rustc`.
    pub rustc: OsString,
}

impl Toolchain {
    /// The toolchain named by the environment, as cargo itself would pick it.
    pub fn from_env() -> Self {
        Self {
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            rustc: std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()),
        }
    }
}

/// Builds the guest crate at `dir` for `wasm32-wasip2` in release mode, in `dir` (so its own
/// `rust-toolchain.toml`, `.cargo/config.toml` and target dir apply), and returns the path of
/// the component. cargo's output goes to standard error as it builds.
pub fn build_guest(dir: &Path, tools: &Toolchain) -> Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(PackageError::NotACrate {
            dir: dir.to_path_buf(),
        });
    }
    let cargo_missing = |error| PackageError::CargoMissing {
        program: tools.cargo.clone(),
        error,
    };
    // cargo first: without it, the target question is moot.
    Command::new(&tools.cargo)
        .arg("--version")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(cargo_missing)?;
    check_target(dir, &tools.rustc)?;
    let component = component_path(dir, &tools.cargo)?;
    tracing::info!(guest = %dir.display(), component = %component.display(), "building the guest crate with `cargo build --target {GUEST_TARGET} --release`");
    // cargo writes its progress and errors to stderr; anything on its stdout goes to ours
    // too, so that stdout only carries the archive's path.
    let stdout = {
        use std::os::fd::AsFd as _;
        io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_or_else(|_| Stdio::inherit(), Stdio::from)
    };
    let status = Command::new(&tools.cargo)
        .current_dir(dir)
        .args(["build", "--target", GUEST_TARGET, "--release"])
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .status()
        .map_err(cargo_missing)?;
    if !status.success() {
        return Err(PackageError::BuildFailed {
            dir: dir.to_path_buf(),
            status,
        });
    }
    if !component.is_file() {
        return Err(PackageError::NotBuilt { path: component });
    }
    Ok(component)
}

/// Fails with [`PackageError::TargetMissing`] when the toolchain that builds `dir` has no
/// standard library for `wasm32-wasip2`. A rustc that cannot be asked is not an error here:
/// cargo then reports what is wrong itself.
fn check_target(dir: &Path, rustc: &OsStr) -> Result<()> {
    let output = Command::new(rustc)
        .current_dir(dir)
        .args(["--print", "target-libdir", "--target", GUEST_TARGET])
        .stderr(Stdio::null())
        .output();
    let Ok(output) = output else { return Ok(()) };
    if !output.status.success() {
        return Ok(());
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if libdir.as_os_str().is_empty() || libdir.is_dir() {
        return Ok(());
    }
    Err(PackageError::TargetMissing {
        dir: dir.to_path_buf(),
        libdir,
    })
}

/// Where `cargo build --target wasm32-wasip2 --release` in `dir` writes the crate's component:
/// `<target_directory>/wasm32-wasip2/release/<lib name>.wasm`, both from `cargo metadata`.
fn component_path(dir: &Path, cargo: &OsStr) -> Result<PathBuf> {
    let metadata_err = |reason: String| PackageError::Metadata {
        dir: dir.to_path_buf(),
        reason,
    };
    let output = Command::new(cargo)
        .current_dir(dir)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .stderr(Stdio::piped())
        .output()
        .map_err(|error| PackageError::CargoMissing {
            program: cargo.to_os_string(),
            error,
        })?;
    if !output.status.success() {
        return Err(metadata_err(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| metadata_err(format!("unreadable output: {e}")))?;
    let manifest = dir
        .join("Cargo.toml")
        .canonicalize()
        .map_err(|source| PackageError::Read {
            path: dir.join("Cargo.toml"),
            source,
        })?;
    let package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).canonicalize().ok())
                .is_some_and(|m| m == manifest)
        })
        .ok_or_else(|| {
            metadata_err(
                "it describes no package with this Cargo.toml (a workspace root? give the guest \
                 crate's own directory)"
                    .to_owned(),
            )
        })?;
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .ok_or_else(|| PackageError::NoCdylib {
            dir: dir.to_path_buf(),
        })?;
    let target_dir = metadata["target_directory"]
        .as_str()
        .ok_or_else(|| metadata_err("no `target_directory`".to_owned()))?;
    Ok(Path::new(target_dir)
        .join(GUEST_TARGET)
        .join("release")
        .join(format!("{}.wasm", lib.replace('-', "_"))))
}

struct Entry {
    /// Path inside the archive.
    relative: PathBuf,
    /// Path on disk.
    source: PathBuf,
    dir: bool,
}

fn check_component(path: &Path) -> Result<()> {
    let mut header = [0u8; 8];
    let read = File::open(path).and_then(|mut f| io::Read::read_exact(&mut f, &mut header));
    match read {
        Ok(()) if header == COMPONENT_HEADER => Ok(()),
        Ok(()) if header == MODULE_HEADER => Err(PackageError::NotAComponent {
            path: path.to_path_buf(),
            reason: "is a core module, not a component (target wasm32-wasip2 builds components)",
        }),
        Ok(()) => Err(PackageError::NotAComponent {
            path: path.to_path_buf(),
            reason: "is not WebAssembly",
        }),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PackageError::NotAComponent {
            path: path.to_path_buf(),
            reason: "is too short to be WebAssembly",
        }),
        Err(source) => Err(PackageError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn collect(dir: &Path, relative: &Path, out: &mut Vec<Entry>) -> Result<()> {
    let read_err = |source| PackageError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for item in std::fs::read_dir(dir).map_err(read_err)? {
        let item = item.map_err(read_err)?;
        let source = item.path();
        let rel = relative.join(item.file_name());
        // `metadata` follows links: a link to a file packs the file.
        let meta = std::fs::metadata(&source).map_err(|_| PackageError::Special {
            path: source.clone(),
        })?;
        if meta.is_dir() {
            out.push(Entry {
                relative: rel.clone(),
                source: source.clone(),
                dir: true,
            });
            collect(&source, &rel, out)?;
        } else if meta.is_file() {
            out.push(Entry {
                relative: rel,
                source,
                dir: false,
            });
        } else {
            return Err(PackageError::Special { path: source });
        }
    }
    Ok(())
}

enum AppendError {
    Read(io::Error),
    Write(io::Error),
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &Entry,
) -> std::result::Result<(), AppendError> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    if entry.dir {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        builder
            .append_data(&mut header, &entry.relative, io::empty())
            .map_err(AppendError::Write)
    } else {
        let file = File::open(&entry.source).map_err(AppendError::Read)?;
        let len = file.metadata().map_err(AppendError::Read)?.len();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(len);
        builder
            .append_data(&mut header, &entry.relative, file)
            .map_err(AppendError::Write)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn list(archive: &Path) -> Vec<(String, Vec<u8>)> {
        let file = File::open(archive).expect("archive exists");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut out = Vec::new();
        for entry in tar.entries().expect("readable") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            out.push((name, data));
        }
        out
    }

    fn component_file(dir: &Path) -> PathBuf {
        let path = dir.join("guest.wasm");
        let mut bytes = COMPONENT_HEADER.to_vec();
        bytes.extend_from_slice(b"rest of the component");
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn model_files_go_to_the_root_and_the_guest_to_code_inference_wasm() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let model = tmp.path().join("model");
        std::fs::create_dir_all(model.join("sub")).expect("mkdir");
        std::fs::write(model.join("config.json"), b"{}").expect("write");
        std::fs::write(model.join("sub/vocab.txt"), b"a\nb\n").expect("write");
        std::os::unix::fs::symlink(model.join("config.json"), model.join("linked.json"))
            .expect("symlink");
        let guest = component_file(tmp.path());
        let output = tmp.path().join("model.tar.gz");
        let args = PackageArgs {
            model_dir: model,
            code: Some(guest),
            guest: None,
            output: output.clone(),
            ..PackageArgs::default()
        };
        assert_eq!(run(&args).expect("packs"), output);
        let names: Vec<_> = list(&output).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "code",
                GUEST_ENTRY,
                "config.json",
                "linked.json",
                "sub",
                "sub/vocab.txt"
            ]
        );
        let entries = list(&output);
        let linked = entries
            .iter()
            .find(|(n, _)| n == "linked.json")
            .expect("link packed as a file");
        assert_eq!(linked.1, b"{}");
    }

    /// Every entry's header: path, mtime, uid, gid, mode.
    fn headers(archive: &Path) -> Vec<(String, u64, u64, u64, u32)> {
        let file = File::open(archive).expect("archive exists");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        tar.entries()
            .expect("readable")
            .map(|entry| {
                let entry = entry.expect("entry");
                let h = entry.header();
                (
                    entry.path().expect("path").to_string_lossy().into_owned(),
                    h.mtime().expect("mtime"),
                    h.uid().expect("uid"),
                    h.gid().expect("gid"),
                    h.mode().expect("mode"),
                )
            })
            .collect()
    }

    #[test]
    fn archive_is_reproducible() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tempdir");
        let model = tmp.path().join("model");
        // Created out of order, with private modes and a recent mtime: none of it may show.
        std::fs::create_dir_all(model.join("sub")).expect("mkdir");
        std::fs::write(model.join("z.json"), b"{}").expect("write");
        std::fs::write(model.join("sub/vocab.txt"), b"a\n").expect("write");
        std::fs::write(model.join("a.json"), b"[]").expect("write");
        std::fs::set_permissions(model.join("a.json"), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        std::fs::set_permissions(model.join("sub"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let pack = |name: &str| {
            let output = tmp.path().join(name);
            run(&PackageArgs {
                model_dir: model.clone(),
                code: None,
                guest: None,
                output: output.clone(),
                ..PackageArgs::default()
            })
            .expect("packs");
            output
        };
        let a = pack("a.tar.gz");
        assert_eq!(
            headers(&a),
            [
                ("a.json".to_owned(), 0, 0, 0, 0o644),
                ("sub".to_owned(), 0, 0, 0, 0o755),
                ("sub/vocab.txt".to_owned(), 0, 0, 0, 0o644),
                ("z.json".to_owned(), 0, 0, 0, 0o644),
            ]
        );
        // Touching a file (a new mtime) changes nothing in the archive.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(model.join("z.json"))
            .and_then(|f| f.set_modified(later))
            .expect("set mtime");
        let b = pack("b.tar.gz");
        assert_eq!(std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
    }

    #[test]
    fn output_inside_the_model_dir_is_not_packed_into_itself() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("config.json"), b"{}").expect("write");
        let output = tmp.path().join("model.tar.gz");
        std::fs::write(&output, b"old archive").expect("write");
        run(&PackageArgs {
            model_dir: tmp.path().to_path_buf(),
            code: None,
            guest: None,
            output: output.clone(),
            ..PackageArgs::default()
        })
        .expect("packs");
        let names: Vec<_> = list(&output).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["config.json"]);
    }

    #[test]
    fn a_core_module_is_refused_as_code() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let module = tmp.path().join("core.wasm");
        std::fs::write(&module, MODULE_HEADER).expect("write");
        let args = PackageArgs {
            model_dir: tmp.path().to_path_buf(),
            code: Some(module),
            guest: None,
            output: tmp.path().join("m.tar.gz"),
            ..PackageArgs::default()
        };
        assert!(matches!(
            run(&args),
            Err(PackageError::NotAComponent { .. })
        ));
    }

    #[test]
    fn a_missing_model_dir_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = PackageArgs {
            model_dir: tmp.path().join("nope"),
            code: None,
            guest: None,
            output: tmp.path().join("m.tar.gz"),
            ..PackageArgs::default()
        };
        assert!(matches!(
            run(&args),
            Err(PackageError::NotADirectory { .. })
        ));
    }

    /// A crate with no dependencies whose library is a `cdylib` named unlike its package:
    /// builds in a second for `wasm32-wasip2`, offline.
    fn tiny_guest(dir: &Path, lib_section: &str, body: &str) {
        std::fs::create_dir_all(dir.join("src")).expect("mkdir");
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"tiny-guest\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n{lib_section}\n[workspace]\n"
            ),
        )
        .expect("write manifest");
        std::fs::write(dir.join("src/lib.rs"), body).expect("write lib.rs");
    }

    const EXPORT: &str = "#[unsafe(no_mangle)]\npub extern \"C\" fn answer() -> i32 { 42 }\n";

    fn tools() -> Toolchain {
        Toolchain {
            cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
            rustc: "rustc".into(),
        }
    }

    #[test]
    fn a_guest_crate_is_built_and_its_component_found_by_its_lib_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let crate_dir = tmp.path().join("tiny-guest");
        tiny_guest(
            &crate_dir,
            "[lib]\nname = \"renamed_lib\"\ncrate-type = [\"cdylib\"]\n",
            EXPORT,
        );
        let component = build_guest(&crate_dir, &tools()).expect("builds");
        assert_eq!(
            component,
            crate_dir
                .canonicalize()
                .expect("canonical")
                .join("target/wasm32-wasip2/release/renamed_lib.wasm")
        );
        let bytes = std::fs::read(&component).expect("component written");
        assert_eq!(bytes[..8], COMPONENT_HEADER);
    }

    #[test]
    fn a_guest_that_fails_to_build_is_reported_with_cargos_status() {
        let tmp = tempfile::tempdir().expect("tempdir");
        tiny_guest(
            tmp.path(),
            "[lib]\ncrate-type = [\"cdylib\"]\n",
            "pub fn broken( {}\n",
        );
        let err = build_guest(tmp.path(), &tools()).expect_err("does not build");
        assert!(matches!(err, PackageError::BuildFailed { .. }), "{err:?}");
        assert!(err.to_string().contains("cargo's output is above"), "{err}");
    }

    #[test]
    fn a_guest_without_a_cdylib_is_refused_before_building() {
        let tmp = tempfile::tempdir().expect("tempdir");
        tiny_guest(tmp.path(), "", EXPORT);
        let err = build_guest(tmp.path(), &tools()).expect_err("no cdylib");
        assert!(matches!(err, PackageError::NoCdylib { .. }), "{err:?}");
        assert!(
            !tmp.path().join("target").exists(),
            "nothing may be built for a crate that yields no component"
        );
    }

    #[test]
    fn a_directory_without_cargo_toml_is_not_a_guest_crate() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = build_guest(tmp.path(), &tools()).expect_err("no crate");
        assert!(matches!(err, PackageError::NotACrate { .. }), "{err:?}");
    }

    #[test]
    fn missing_cargo_is_named_with_how_to_install_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        tiny_guest(tmp.path(), "[lib]\ncrate-type = [\"cdylib\"]\n", EXPORT);
        let cargo = tmp.path().join("no-such-cargo");
        let err = build_guest(
            tmp.path(),
            &Toolchain {
                cargo: cargo.clone().into_os_string(),
                rustc: "rustc".into(),
            },
        )
        .expect_err("no cargo");
        assert!(matches!(err, PackageError::CargoMissing { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&cargo.display().to_string()), "{message}");
        assert!(message.contains("rustup"), "{message}");
    }

    #[test]
    fn a_missing_wasm32_wasip2_target_is_named_with_the_rustup_command() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().expect("tempdir");
        tiny_guest(tmp.path(), "[lib]\ncrate-type = [\"cdylib\"]\n", EXPORT);
        // A rustc whose sysroot has no wasm32-wasip2 standard library, as rustc answers
        // `--print target-libdir` when the target is not installed.
        let rustc = tmp.path().join("rustc-without-wasm");
        let libdir = tmp.path().join("sysroot/lib/rustlib/wasm32-wasip2/lib");
        std::fs::write(&rustc, format!("#!/bin/sh\necho {}\n", libdir.display()))
            .expect("write fake rustc");
        std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = build_guest(
            tmp.path(),
            &Toolchain {
                cargo: tools().cargo,
                rustc: rustc.into_os_string(),
            },
        )
        .expect_err("no target");
        assert!(matches!(err, PackageError::TargetMissing { .. }), "{err:?}");
        assert!(
            err.to_string().contains("rustup target add wasm32-wasip2"),
            "{err}"
        );
    }

    #[test]
    fn code_and_guest_together_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = run(&PackageArgs {
            model_dir: tmp.path().to_path_buf(),
            code: Some(component_file(tmp.path())),
            guest: Some(tmp.path().to_path_buf()),
            output: tmp.path().join("m.tar.gz"),
            ..PackageArgs::default()
        })
        .expect_err("exclusive");
        assert!(matches!(err, PackageError::CodeAndGuest), "{err:?}");
    }

    #[test]
    fn code_and_guest_are_exclusive_on_the_command_line() {
        use clap::Parser as _;
        let err = crate::config::Cli::try_parse_from([
            "sagebrush",
            "package",
            "--model-dir",
            "m",
            "--code",
            "g.wasm",
            "--guest",
            "g",
        ])
        .expect_err("clap refuses both");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}

//! `sagebrush package --model-dir DIR [--code FILE.wasm] -o model.tar.gz`: writes a SageMaker
//! `model.tar.gz` with the model files at the archive root and the guest component at
//! `code/inference.wasm` (contract §3, §6).
//!
//! The archive is reproducible: entries sorted by path, owner 0, mtime 0, modes 0644/0755.
//! Symbolic links are followed (a Hugging Face cache snapshot is made of links), so the archive
//! holds only regular files and directories, which is what the safe unpacker accepts.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::config::PackageArgs;

/// Where the guest goes inside the archive.
pub const GUEST_ENTRY: &str = "code/inference.wasm";

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
    if let Some(code) = &args.code {
        check_component(code)?;
    }
    let output_abs = std::path::absolute(&args.output).unwrap_or_else(|_| args.output.clone());
    let mut entries = Vec::new();
    collect(&args.model_dir, Path::new(""), &mut entries)?;
    // The guest given with --code replaces one already in the directory; the archive being
    // written never packs itself.
    entries.retain(|entry| {
        let replaced = args.code.is_some() && entry.relative == Path::new(GUEST_ENTRY);
        let itself = std::path::absolute(&entry.source).is_ok_and(|p| p == output_abs);
        !replaced && !itself
    });
    if let Some(code) = &args.code {
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
    tracing::info!(output = %args.output.display(), files = entries.iter().filter(|e| !e.dir).count(), guest = args.code.is_some(), "model archive written");
    Ok(args.output.clone())
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
            output: output.clone(),
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
                output: output.clone(),
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
            output: output.clone(),
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
            output: tmp.path().join("m.tar.gz"),
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
            output: tmp.path().join("m.tar.gz"),
        };
        assert!(matches!(
            run(&args),
            Err(PackageError::NotADirectory { .. })
        ));
    }
}

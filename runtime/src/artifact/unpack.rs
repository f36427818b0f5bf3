//! Safe unpacking of `model.tar.gz` (tar + flate2).
//!
//! Refused, each with an error naming the entry: absolute paths, `..` components, symbolic
//! or hard links whose target leaves the destination, device files and FIFOs, and archives
//! whose unpacked size passes the bound. Nothing is written outside `dest`: every entry's
//! parent directories are checked not to be symbolic links before it is written.

use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Why an archive was refused or could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry has an absolute path.
    #[error("entry {entry:?} has an absolute path")]
    AbsolutePath {
        /// The entry path.
        entry: PathBuf,
    },
    /// An entry path has a `..` component.
    #[error("entry {entry:?} escapes the model directory with `..`")]
    PathEscapes {
        /// The entry path.
        entry: PathBuf,
    },
    /// A link points outside the destination.
    #[error("entry {entry:?} is a {kind} link to {target:?}, outside the model directory")]
    LinkEscapes {
        /// The entry path.
        entry: PathBuf,
        /// `symbolic` or `hard`.
        kind: &'static str,
        /// The link target.
        target: PathBuf,
    },
    /// A device file, FIFO or other special entry.
    #[error("entry {entry:?} is a {kind}, which a model archive may not hold")]
    SpecialFile {
        /// The entry path.
        entry: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The unpacked size passes the bound.
    #[error("entry {entry:?} takes the unpacked size past the limit of {limit} bytes")]
    TooLarge {
        /// The entry that passed the bound.
        entry: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// An entry would be written through a symbolic link.
    #[error("entry {entry:?} would be written through the symbolic link {link:?}")]
    ThroughLink {
        /// The entry path.
        entry: PathBuf,
        /// The link on its way.
        link: PathBuf,
    },
    /// Reading the archive or writing a file failed.
    #[error("i/o error at entry {entry:?}")]
    Io {
        /// The entry (empty when reading the archive itself failed).
        entry: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_at(entry: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io {
        entry: entry.to_owned(),
        source,
    }
}

/// Unpacks the gzip tar `archive` into `dest` (created, private), refusing unsafe entries.
pub fn unpack(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), UnpackError> {
    let file = fs::File::open(archive).map_err(io_at(Path::new("")))?;
    unpack_reader(io::BufReader::new(file), dest, max_bytes)
}

/// Unpacks a gzip tar stream into `dest` (created, private), refusing unsafe entries.
pub fn unpack_reader(reader: impl Read, dest: &Path, max_bytes: u64) -> Result<(), UnpackError> {
    let none = PathBuf::new();
    create_private_dir(dest).map_err(io_at(&none))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut total: u64 = 0;
    for entry in tar.entries().map_err(io_at(&none))? {
        let mut entry = entry.map_err(io_at(&none))?;
        let raw = entry.path().map_err(io_at(&none))?.into_owned();
        let Some(rel) = relative_path(&raw)? else {
            continue;
        };
        let target = dest.join(&rel);
        check_parents(dest, &rel, &raw)?;
        match entry.header().entry_type() {
            EntryType::Directory => fs::create_dir_all(&target).map_err(io_at(&raw))?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let declared = entry.header().size().map_err(io_at(&raw))?;
                if total.saturating_add(declared) > max_bytes {
                    return Err(UnpackError::TooLarge {
                        entry: raw,
                        limit: max_bytes,
                    });
                }
                write_file(&mut entry, &target, max_bytes - total, &raw, &mut total)?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io_at(&raw))?
                    .unwrap_or_default()
                    .into_owned();
                let parent = rel.parent().unwrap_or(Path::new(""));
                if link.is_absolute()
                    || !climbs_first(&link)
                    || normalize(&parent.join(&link)).is_none()
                {
                    return Err(UnpackError::LinkEscapes {
                        entry: raw,
                        kind: "symbolic",
                        target: link,
                    });
                }
                make_parent(&target, &raw)?;
                symlink(&link, &target).map_err(io_at(&raw))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(io_at(&raw))?
                    .unwrap_or_default()
                    .into_owned();
                let inside = if link.is_absolute() {
                    None
                } else {
                    normalize(&link)
                };
                let Some(source_rel) = inside else {
                    return Err(UnpackError::LinkEscapes {
                        entry: raw,
                        kind: "hard",
                        target: link,
                    });
                };
                check_parents(dest, &source_rel, &raw)?;
                let source = dest.join(&source_rel);
                // `fs::copy` follows a symbolic link: count what it will write.
                let size = fs::metadata(&source).map_err(io_at(&raw))?.len();
                if total.saturating_add(size) > max_bytes {
                    return Err(UnpackError::TooLarge {
                        entry: raw,
                        limit: max_bytes,
                    });
                }
                total += size;
                make_parent(&target, &raw)?;
                // A copy, not a link: the unpacked tree then holds only regular files.
                fs::copy(&source, &target).map_err(io_at(&raw))?;
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {}
            other => {
                let kind = match other {
                    EntryType::Char => "character device",
                    EntryType::Block => "block device",
                    EntryType::Fifo => "FIFO",
                    _ => "special file",
                };
                return Err(UnpackError::SpecialFile { entry: raw, kind });
            }
        }
    }
    Ok(())
}

/// The entry path relative to the destination; `None` for the root itself (`./`).
fn relative_path(raw: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut rel = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::PathEscapes {
                    entry: raw.to_owned(),
                });
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::AbsolutePath {
                    entry: raw.to_owned(),
                });
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Lexically resolves `..` in a relative path; `None` when it climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.iter().collect())
}

/// Whether every `..` of a symbolic link's target comes before its first name. `..` only climbs
/// the link's own parent directories then, which are real directories (see [`check_parents`]);
/// a `..` after a name could climb out of a directory that is itself a link (`d/b -> ..`, then
/// `e -> d/b/../f` names a file next to the model directory, which `normalize` cannot see).
fn climbs_first(link: &Path) -> bool {
    let mut named = false;
    for component in link.components() {
        match component {
            Component::Normal(_) => named = true,
            Component::ParentDir if named => return false,
            _ => {}
        }
    }
    true
}

/// Refuses an entry whose existing parent directories include a symbolic link.
fn check_parents(dest: &Path, rel: &Path, raw: &Path) -> Result<(), UnpackError> {
    let mut current = dest.to_owned();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(UnpackError::ThroughLink {
                    entry: raw.to_owned(),
                    link: current,
                });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn make_parent(target: &Path, raw: &Path) -> Result<(), UnpackError> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_at(raw))?;
    }
    Ok(())
}

fn write_file(
    entry: &mut impl Read,
    target: &Path,
    budget: u64,
    raw: &Path,
    total: &mut u64,
) -> Result<(), UnpackError> {
    make_parent(target, raw)?;
    if fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(UnpackError::ThroughLink {
            entry: raw.to_owned(),
            link: target.to_owned(),
        });
    }
    let mut out = fs::File::create(target).map_err(io_at(raw))?;
    // Read one byte past the budget to notice an entry larger than its header said.
    let written = io::copy(&mut entry.take(budget + 1), &mut out).map_err(io_at(raw))?;
    if written > budget {
        return Err(UnpackError::TooLarge {
            entry: raw.to_owned(),
            limit: *total + budget,
        });
    }
    *total += written;
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(link: &Path, target: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(link, target)
}

#[cfg(not(unix))]
fn symlink(_link: &Path, _target: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links are not supported here",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a .tar.gz whose entries are written with raw header names, so that unsafe paths
    /// (which `tar::Builder` refuses) can be made.
    fn archive(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(link) = link {
                let l = link.as_bytes();
                header.as_old_mut().linkname[..l.len()].copy_from_slice(l);
            }
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();
        file
    }

    fn unpack_into(
        entries: &[(&str, EntryType, &[u8], Option<&str>)],
        max: u64,
    ) -> (tempfile::TempDir, Result<(), UnpackError>) {
        let a = archive(entries);
        let dir = tempfile::tempdir().unwrap();
        let result = unpack(a.path(), &dir.path().join("model"), max);
        (dir, result)
    }

    #[test]
    fn safe_archive_unpacks_with_links_inside() {
        let (dir, result) = unpack_into(
            &[
                ("./", EntryType::Directory, b"", None),
                ("./config.json", EntryType::Regular, b"{}", None),
                ("code/", EntryType::Directory, b"", None),
                ("code/inference.wasm", EntryType::Regular, b"\0asm", None),
                ("alias.json", EntryType::Symlink, b"", Some("config.json")),
                ("copy.json", EntryType::Link, b"", Some("config.json")),
            ],
            1 << 20,
        );
        result.unwrap();
        let root = dir.path().join("model");
        assert_eq!(fs::read(root.join("config.json")).unwrap(), b"{}");
        assert_eq!(
            fs::read(root.join("code/inference.wasm")).unwrap(),
            b"\0asm"
        );
        assert_eq!(fs::read(root.join("alias.json")).unwrap(), b"{}");
        assert_eq!(fs::read(root.join("copy.json")).unwrap(), b"{}");
    }

    #[test]
    fn absolute_path_is_refused() {
        let (_d, r) = unpack_into(&[("/etc/evil", EntryType::Regular, b"x", None)], 1 << 20);
        assert!(
            matches!(r, Err(UnpackError::AbsolutePath { entry }) if entry == Path::new("/etc/evil"))
        );
    }

    #[test]
    fn dot_dot_is_refused() {
        let (d, r) = unpack_into(&[("../evil", EntryType::Regular, b"x", None)], 1 << 20);
        assert!(matches!(r, Err(UnpackError::PathEscapes { .. })), "{r:?}");
        assert!(!d.path().join("evil").exists());
    }

    #[test]
    fn symlink_outside_is_refused() {
        let (_d, r) = unpack_into(
            &[("link", EntryType::Symlink, b"", Some("../../etc/passwd"))],
            1 << 20,
        );
        assert!(
            matches!(
                r,
                Err(UnpackError::LinkEscapes {
                    kind: "symbolic",
                    ..
                })
            ),
            "{r:?}"
        );
        let (_d, r) = unpack_into(
            &[("link", EntryType::Symlink, b"", Some("/etc/passwd"))],
            1 << 20,
        );
        assert!(
            matches!(
                r,
                Err(UnpackError::LinkEscapes {
                    kind: "symbolic",
                    ..
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn hard_link_outside_is_refused() {
        let (_d, r) = unpack_into(
            &[("link", EntryType::Link, b"", Some("/etc/passwd"))],
            1 << 20,
        );
        assert!(
            matches!(r, Err(UnpackError::LinkEscapes { kind: "hard", .. })),
            "{r:?}"
        );
        let (_d, r) = unpack_into(
            &[("link", EntryType::Link, b"", Some("../outside"))],
            1 << 20,
        );
        assert!(
            matches!(r, Err(UnpackError::LinkEscapes { kind: "hard", .. })),
            "{r:?}"
        );
    }

    #[test]
    fn device_files_are_refused() {
        let (_d, r) = unpack_into(&[("dev", EntryType::Char, b"", None)], 1 << 20);
        assert!(
            matches!(
                r,
                Err(UnpackError::SpecialFile {
                    kind: "character device",
                    ..
                })
            ),
            "{r:?}"
        );
        let (_d, r) = unpack_into(&[("fifo", EntryType::Fifo, b"", None)], 1 << 20);
        assert!(
            matches!(r, Err(UnpackError::SpecialFile { kind: "FIFO", .. })),
            "{r:?}"
        );
    }

    #[test]
    fn size_bound_is_enforced() {
        let big = vec![7u8; 600];
        let (_d, r) = unpack_into(
            &[
                ("a.bin", EntryType::Regular, &big, None),
                ("b.bin", EntryType::Regular, &big, None),
            ],
            1000,
        );
        assert!(
            matches!(r, Err(UnpackError::TooLarge { ref entry, .. }) if entry == Path::new("b.bin")),
            "{r:?}"
        );
    }

    #[test]
    fn symlink_climbing_out_through_another_link_is_refused() {
        // `d/b` -> `..` is the model directory itself (allowed); `e` -> `d/b/../secret` looks
        // inside by its letters but names `secret` next to the model directory.
        let (d, r) = unpack_into(
            &[
                ("d/", EntryType::Directory, b"", None),
                ("d/b", EntryType::Symlink, b"", Some("..")),
                ("e", EntryType::Symlink, b"", Some("d/b/../secret")),
            ],
            1 << 20,
        );
        assert!(
            matches!(r, Err(UnpackError::LinkEscapes { ref entry, .. }) if entry == Path::new("e")),
            "{r:?}"
        );
        assert!(!d.path().join("model/e").exists());
        // Leading `..` (the Hugging Face cache's `../../blobs/…`) stays allowed.
        let (d, r) = unpack_into(
            &[
                ("blobs/", EntryType::Directory, b"", None),
                ("blobs/x", EntryType::Regular, b"{}", None),
                ("snap/r/", EntryType::Directory, b"", None),
                (
                    "snap/r/config.json",
                    EntryType::Symlink,
                    b"",
                    Some("../../blobs/x"),
                ),
            ],
            1 << 20,
        );
        r.unwrap();
        assert_eq!(
            fs::read(d.path().join("model/snap/r/config.json")).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn hard_links_to_a_symlink_count_the_bytes_they_copy() {
        // Each hard link to `s` copies all of `big.bin`: the bound counts those bytes, not the
        // length of the link.
        let big = vec![7u8; 600];
        let (_d, r) = unpack_into(
            &[
                ("big.bin", EntryType::Regular, &big, None),
                ("s", EntryType::Symlink, b"", Some("big.bin")),
                ("c1", EntryType::Link, b"", Some("s")),
                ("c2", EntryType::Link, b"", Some("s")),
            ],
            1000,
        );
        assert!(
            matches!(r, Err(UnpackError::TooLarge { ref entry, .. }) if entry == Path::new("c1")),
            "{r:?}"
        );
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let (_d, r) = unpack_into(
            &[
                ("sub", EntryType::Symlink, b"", Some(".")),
                ("sub/x", EntryType::Regular, b"x", None),
            ],
            1 << 20,
        );
        assert!(matches!(r, Err(UnpackError::ThroughLink { .. })), "{r:?}");
    }
}

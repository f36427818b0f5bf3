//! Model artifacts: a local directory, or a `model.tar.gz` unpacked safely into a private
//! directory (contract §3).

pub(crate) mod download;
pub mod fetch;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use fetch::{FetchError, fetch_archive};
pub use unpack::{UnpackError, unpack, unpack_reader};

/// A model artifact that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The path does not exist.
    #[error("the model path {path} does not exist")]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// The path is a file but not a gzip archive.
    #[error("the model path {path} is a file but not a model.tar.gz (gzip) archive")]
    NotAnArchive {
        /// The path.
        path: PathBuf,
    },
    /// Unpacking failed.
    #[error("cannot unpack {archive}")]
    Unpack {
        /// The archive.
        archive: PathBuf,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// Reading failed.
    #[error("cannot read {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Returns the model directory for `path`: the directory itself, or `work_dir/model` after
/// unpacking a `model.tar.gz` file there.
pub fn resolve_local(
    path: &Path,
    work_dir: &Path,
    max_unpacked_bytes: u64,
) -> Result<PathBuf, ArtifactError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ArtifactError::Missing {
            path: path.to_owned(),
        },
        _ => ArtifactError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    if meta.is_dir() {
        return Ok(path.to_owned());
    }
    // Opened once and read as a stream, so a pipe or a file still being written works too.
    let io_err = |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(io_err)?);
    let magic = std::io::BufRead::fill_buf(&mut reader).map_err(io_err)?;
    if !magic.starts_with(&[0x1f, 0x8b]) {
        return Err(ArtifactError::NotAnArchive {
            path: path.to_owned(),
        });
    }
    let dest = work_dir.join("model");
    if let Err(source) = unpack_reader(reader, &dest, max_unpacked_bytes) {
        // A half-unpacked tree is never served; removing it gives the disk back (the usual
        // failure here is a full disk).
        if let Err(err) = std::fs::remove_dir_all(&dest) {
            tracing::warn!(dir = %dest.display(), error = %err, "cannot remove the partly unpacked model");
        }
        return Err(ArtifactError::Unpack {
            archive: path.to_owned(),
            source,
        });
    }
    Ok(dest)
}

//! The on-disk cache, laid out exactly like Python `huggingface_hub`'s so that either fills it for
//! the other (contract §3):
//!
//! ```text
//! <cache>/models--{org}--{name}/
//!     blobs/{etag}                     file contents, named by sha256 (LFS) or git blob sha1
//!     blobs/{etag}.incomplete          a download in progress (resumed with a Range request)
//!     refs/{revision}                  the commit a branch or tag pointed to (no newline)
//!     snapshots/{commit}/{file}        relative symlinks to ../../blobs/{etag}
//!     .sagebrush/{commit}.json         ours: which files a finished download brought (see below)
//! <cache>/.locks/models--{org}--{name}/{etag}.lock   flock, shared with Python's filelock
//! ```
//!
//! The manifest tells a snapshot that sagebrush finished from one it was interrupted in (the Python
//! layout has no such mark). Python ignores the extra folder.

use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{HubError, Result, files};

/// Paths of one repository inside the cache.
#[derive(Debug, Clone)]
pub(crate) struct RepoCache {
    repo_dir: PathBuf,
    locks_dir: PathBuf,
}

/// What a download wrote into `.sagebrush/{commit}.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// The download finished and every file below is in the snapshot.
    complete: bool,
    /// Files of the snapshot, relative to it.
    files: Vec<String>,
}

/// `true` when `rev` is a full commit hash (40 lowercase hex digits).
pub(crate) fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40
        && rev
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks that a repository-relative name stays inside the folder it is joined to.
pub(crate) fn safe_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('\\')
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_owned(),
        source,
    }
}

impl RepoCache {
    /// The cache folder of `model_id` under `cache_dir`.
    pub(crate) fn new(cache_dir: &Path, model_id: &str) -> Self {
        let folder = format!("models--{}", model_id.replace('/', "--"));
        Self {
            repo_dir: cache_dir.join(&folder),
            locks_dir: cache_dir.join(".locks").join(folder),
        }
    }

    /// `snapshots/{commit}`.
    pub(crate) fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.repo_dir.join("snapshots").join(commit)
    }

    /// `blobs/{etag}`.
    pub(crate) fn blob_path(&self, etag: &str) -> PathBuf {
        self.repo_dir.join("blobs").join(etag)
    }

    /// `blobs/{etag}.incomplete`.
    pub(crate) fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.repo_dir
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    /// `<cache>/.locks/models--…/{etag}.lock`.
    pub(crate) fn lock_path(&self, etag: &str) -> PathBuf {
        self.locks_dir.join(format!("{etag}.lock"))
    }

    fn ref_path(&self, revision: &str) -> Option<PathBuf> {
        safe_relative(revision).then(|| self.repo_dir.join("refs").join(revision))
    }

    fn manifest_path(&self, commit: &str) -> PathBuf {
        self.repo_dir
            .join(".sagebrush")
            .join(format!("{commit}.json"))
    }

    /// The commit `revision` stands for without asking the Hub: itself for a commit hash, else
    /// the content of `refs/{revision}`.
    pub(crate) fn local_commit(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_owned());
        }
        let text = std::fs::read_to_string(self.ref_path(revision)?).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_owned())
    }

    /// Records that `revision` points to `commit` (not for commit hashes, as Python does).
    pub(crate) fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let Some(path) = self.ref_path(revision) else {
            return Err(HubError::InvalidRevision {
                revision: revision.to_owned(),
            });
        };
        write_atomic(&path, commit.as_bytes())
    }

    /// Whether the snapshot of `commit` holds everything a model needs, decided without the
    /// network. With our manifest: the download finished and all its files are there. Without
    /// one (a cache filled by Python, or `only_manifest == false`): `config.json` and a complete
    /// set of weights are there.
    pub(crate) fn snapshot_complete(&self, commit: &str, allow_heuristic: bool) -> bool {
        let dir = self.snapshot_dir(commit);
        match std::fs::read(self.manifest_path(commit)) {
            Ok(bytes) => match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) => {
                    m.complete
                        && m.files
                            .iter()
                            .all(|f| safe_relative(f) && dir.join(f).is_file())
                }
                Err(_) => false,
            },
            Err(_) if allow_heuristic => {
                dir.join("config.json").is_file() && files::local_weights_complete(&dir)
            }
            Err(_) => false,
        }
    }

    /// Writes the manifest of `commit`.
    pub(crate) fn write_manifest(
        &self,
        commit: &str,
        files: &[String],
        complete: bool,
    ) -> Result<()> {
        let manifest = Manifest {
            complete,
            files: files.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| HubError::Io {
            path: self.manifest_path(commit),
            source: io::Error::other(e),
        })?;
        write_atomic(&self.manifest_path(commit), &bytes)
    }

    /// Points `snapshots/{commit}/{file}` at `blobs/{etag}` with a relative symlink.
    pub(crate) fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let pointer = self.snapshot_dir(commit).join(file);
        let parent = pointer.parent().unwrap_or(&pointer).to_owned();
        std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
        // From snapshots/{commit}/{a/b/file}: one `..` per folder of the file, then ../../blobs.
        let depth = file.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth + 2 {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let tmp = parent.join(format!(".{}.sagebrush-link", uuid::Uuid::new_v4()));
        symlink(&target, &tmp).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &pointer).map_err(io_err(&pointer))?;
        Ok(pointer)
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    // Without symlinks (Windows without developer mode) Python copies too.
    let parent = link.parent().unwrap_or(link);
    std::fs::copy(parent.join(target), link).map(drop)
}

/// Writes `bytes` to `path` through a temporary file and a rename, creating the folder.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(path);
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_hash_is_forty_lowercase_hex() {
        assert!(is_commit_hash(&"a1".repeat(20)));
        assert!(!is_commit_hash("main"));
        assert!(!is_commit_hash(&"A1".repeat(20)));
        assert!(!is_commit_hash(&"a".repeat(39)));
    }

    #[test]
    fn relative_names_cannot_escape() {
        assert!(safe_relative("code/inference.wasm"));
        assert!(safe_relative("refs/pr/1"));
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a\\b", "./x"] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }

    #[test]
    fn layout_matches_huggingface_hub() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = RepoCache::new(dir.path(), "org/name");
        let commit = "c".repeat(40);
        std::fs::create_dir_all(repo.blob_path("x").parent().expect("parent")).expect("mkdir");
        std::fs::write(repo.blob_path("e1"), b"one").expect("blob");
        std::fs::write(repo.blob_path("e2"), b"two").expect("blob");
        let p1 = repo.link(&commit, "config.json", "e1").expect("link");
        let p2 = repo.link(&commit, "code/a.wasm", "e2").expect("link");
        assert_eq!(
            p1,
            dir.path()
                .join(format!("models--org--name/snapshots/{commit}/config.json"))
        );
        assert_eq!(
            std::fs::read_link(&p1).expect("symlink"),
            Path::new("../../blobs/e1")
        );
        assert_eq!(
            std::fs::read_link(&p2).expect("symlink"),
            Path::new("../../../blobs/e2")
        );
        assert_eq!(std::fs::read(&p2).expect("read through link"), b"two");
        repo.write_ref("main", &commit).expect("ref");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("models--org--name/refs/main")).expect("ref"),
            commit
        );
        assert_eq!(repo.local_commit("main"), Some(commit.clone()));
        assert_eq!(repo.local_commit("v2"), None);
        assert!(
            repo.lock_path("e1")
                .ends_with(".locks/models--org--name/e1.lock")
        );
    }
}

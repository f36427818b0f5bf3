//! One blob: stream it into `blobs/{etag}.incomplete` with the shared resumable downloader
//! (`artifact::download`), verify its size and hash against the Hub's etag, move it into place;
//! under the `flock` Python takes too.

use std::path::{Path, PathBuf};

use reqwest::Method;
use sha1::Digest as _;

use super::cache::RepoCache;
use super::client::{FileMeta, HubClient, Subject};
use super::progress::Progress;
use super::{HubError, Result};
use crate::artifact::download::{self, Received};

/// Streams the blob into `{etag}.incomplete`, resuming what is there, verifies it, and
/// moves it into place.
pub(super) async fn fetch_blob(
    progress: &Progress,
    client: &HubClient<'_>,
    repo: &RepoCache,
    name: &str,
    meta: &FileMeta,
) -> Result<()> {
    let part = repo.incomplete_path(&meta.etag);
    if let Some(parent) = part.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| HubError::Io {
                path: parent.to_owned(),
                source,
            })?;
    }
    let start = download::file_len(&part).await;
    let progress = &progress.file(name, meta.size, start);
    let part_ref = &part;
    let io = |source| HubError::Io {
        path: part_ref.to_owned(),
        source,
    };
    client
        .retrying(&meta.location, move || async move {
            let part = part_ref;
            let offset = download::file_len(part).await;
            if meta.size.is_some_and(|s| offset == s) {
                return Ok(());
            }
            let resp = client
                .send(Method::GET, &meta.location, offset, true)
                .await?;
            let received = download::receive(resp, part, offset, &|n| progress.set(n))
                .await
                .map_err(|f| f.map_fatal(io))?;
            match received {
                Received::Complete => Ok(()),
                Received::Refused(resp) => Err(client.status_failure(
                    resp.status(),
                    resp.headers(),
                    &meta.location,
                    Subject::File(name),
                )),
            }
        })
        .await?;
    verify(&part, name, meta).await?;
    let blob = repo.blob_path(&meta.etag);
    tokio::fs::rename(&part, &blob)
        .await
        .map_err(|source| HubError::Io { path: blob, source })?;
    progress.finish();
    Ok(())
}

/// Checks the size and the hash the etag stands for: sha256 for LFS files (64 hex digits), the
/// git blob sha1 for others (40). A file that fails is deleted so the next try starts clean.
async fn verify(part: &Path, name: &str, meta: &FileMeta) -> Result<()> {
    let path = part.to_owned();
    let etag = meta.etag.clone();
    let (len, actual, algorithm) = tokio::task::spawn_blocking(move || hash_file(&path, &etag))
        .await
        .map_err(|e| HubError::Io {
            path: part.to_owned(),
            source: std::io::Error::other(e),
        })??;
    let failure = if let Some(expected) = meta.size.filter(|s| *s != len) {
        Some(HubError::SizeMismatch {
            file: name.to_owned(),
            expected,
            actual: len,
        })
    } else {
        actual
            .filter(|a| *a != meta.etag)
            .map(|actual| HubError::ChecksumMismatch {
                file: name.to_owned(),
                algorithm,
                expected: meta.etag.clone(),
                actual,
            })
    };
    match failure {
        Some(err) => {
            let _ = tokio::fs::remove_file(part).await;
            Err(err)
        }
        None => Ok(()),
    }
}

/// Length and, when the etag is a hash we know, the matching digest of the file.
fn hash_file(path: &Path, etag: &str) -> Result<(u64, Option<String>, &'static str)> {
    use std::io::Read as _;
    let io = |source| HubError::Io {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    let is_hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut feed = |update: &mut dyn FnMut(&[u8])| -> Result<()> {
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            update(&buf[..n]);
        }
    };
    match etag.len() {
        64 if is_hex => {
            let mut h = sha2::Sha256::new();
            feed(&mut |b| h.update(b))?;
            Ok((len, Some(hex(&h.finalize())), "sha256"))
        }
        40 if is_hex => {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            feed(&mut |b| h.update(b))?;
            Ok((len, Some(hex(&h.finalize())), "git-sha1"))
        }
        _ => Ok((len, None, "none")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes the exclusive `flock` Python's `filelock` also takes, off the async workers.
pub(super) async fn lock_file(path: PathBuf) -> Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        let io = |source| HubError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    })
    .await
    .map_err(|e| HubError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })?
}

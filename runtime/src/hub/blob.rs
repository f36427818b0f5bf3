//! One blob: stream it into `blobs/{etag}.incomplete` (resuming with a Range request), verify
//! its size and hash against the Hub's etag, move it into place; under the `flock` Python takes
//! too.

use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use sha1::Digest as _;
use tokio::io::AsyncWriteExt as _;

use super::cache::RepoCache;
use super::client::{self, Failure, FileMeta, HubClient, Subject, Transient};
use super::progress::{FileProgress, Progress};
use super::{HubError, Result};

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
    let start = file_len(&part).await;
    let progress = &progress.file(name, meta.size, start);
    let part_ref = &part;
    client
        .retrying(&meta.location, move || async move {
            let part = part_ref;
            let offset = file_len(part).await;
            if meta.size.is_some_and(|s| offset == s) {
                return Ok(());
            }
            progress.reset_to(offset);
            let resp = client
                .send(Method::GET, &meta.location, offset, true)
                .await?;
            let status = resp.status();
            let append = match status {
                StatusCode::PARTIAL_CONTENT
                    if client::range_start(resp.headers()) == Some(offset) =>
                {
                    true
                }
                StatusCode::PARTIAL_CONTENT => {
                    // Not the range asked for: start over rather than splice wrong bytes.
                    remove(part).await?;
                    return Err(Failure::Transient(Transient::Short));
                }
                StatusCode::OK => false,
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // The partial file is longer than the blob: start over.
                    remove(part).await?;
                    return Err(Failure::Transient(Transient::Short));
                }
                _ => {
                    return Err(client.status_failure(
                        status,
                        resp.headers(),
                        &meta.location,
                        Subject::File(name),
                    ));
                }
            };
            if !append {
                progress.reset_to(0);
            }
            write_body(resp, part, append, progress).await
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

/// Appends (or writes from the start) the response body to `part`.
async fn write_body(
    resp: reqwest::Response,
    part: &Path,
    append: bool,
    progress: &FileProgress,
) -> std::result::Result<(), Failure> {
    let io = |source| {
        Failure::Fatal(HubError::Io {
            path: part.to_owned(),
            source,
        })
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await
        .map_err(io)?;
    let mut body = resp.bytes_stream();
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                file.write_all(&bytes).await.map_err(io)?;
                progress.advance(bytes.len() as u64);
            }
            Err(e) => {
                failure = Some(Failure::Transient(Transient::Network(e)));
                break;
            }
        }
    }
    // What arrived stays on disk for the next try's Range request.
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    failure.map_or(Ok(()), Err)
}

async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

async fn remove(path: &Path) -> std::result::Result<(), Failure> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Failure::Fatal(HubError::Io {
            path: path.to_owned(),
            source: e,
        })),
        _ => Ok(()),
    }
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

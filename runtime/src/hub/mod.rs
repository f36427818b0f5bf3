//! `HF_MODEL_ID`: download a model from the Hugging Face Hub into a cache that survives restarts
//! (contract §2, §3, issue 6). Owns file choice, revision resolution, the cache layout, offline mode
//! and the token; does not load or unpack anything (that is `load` and `artifact`).
//!
//! A hand-written client on `reqwest` rather than the `hf-hub` crate: hf-hub 1.0 shares the cache
//! layout and lock files, but it restarts an interrupted file from zero (no Range request on the
//! `.incomplete` file), does not check sha256, retries the request but not a body cut midway,
//! cannot tell a missing token from a wrong one, and depends on `hf-xet`.
//!
//! When the cache answers without the network ("warm"): the revision is a commit hash, or
//! `refs/{revision}` names a commit, and that commit's snapshot is complete (a manifest written by
//! a finished sagebrush download, or in offline mode `config.json` plus a full set of weights for
//! a cache Python filled). So, unlike Python, a branch (`main`) is not re-resolved online once it is
//! cached: restarts are reproducible and do not depend on the Hub; pin a commit or clear
//! `refs/{branch}` to move on. Otherwise the revision is listed (one request) and only the missing
//! files are fetched; files already in the snapshot cost no request.

mod blob;
mod cache;
mod client;
mod files;
mod progress;

#[cfg(test)]
#[path = "../../../tests/e2e/support/hub_stub.rs"]
pub(crate) mod hub_stub;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use futures_util::{StreamExt as _, TryStreamExt as _};

use crate::config::HubConfig;
use cache::RepoCache;
use client::{HubClient, RetryPolicy};
use progress::Progress;

/// Files fetched at the same time.
const CONCURRENT_FILES: usize = 4;

/// Result of this module.
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// Why a model could not be fetched from the Hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// 401/403 and no token was sent (the Hub answers so for private, gated and missing repos).
    #[error(
        "the Hub refused access to `{model_id}` (HTTP {status}) and no token was given: the repository is private, gated or does not exist; set `HF_TOKEN` to a token that can read it"
    )]
    TokenRequired {
        /// Repository.
        model_id: String,
        /// 401 or 403.
        status: u16,
    },
    /// 401/403 although a token was sent.
    #[error(
        "the Hub rejected the token for `{model_id}` (HTTP {status}): `HF_TOKEN` is wrong, expired, or has no access to this repository"
    )]
    TokenRejected {
        /// Repository.
        model_id: String,
        /// 401 or 403.
        status: u16,
    },
    /// The token cannot be sent in an HTTP header.
    #[error("`HF_TOKEN` is not a valid HTTP header value (control characters or non-ASCII)")]
    MalformedToken,
    /// 404 for the repository.
    #[error("repository `{model_id}` not found on {endpoint}: check `HF_MODEL_ID`")]
    RepoNotFound {
        /// Repository.
        model_id: String,
        /// Hub base URL.
        endpoint: String,
    },
    /// 404 for the revision.
    #[error("revision `{revision}` not found in `{model_id}`: check `HF_MODEL_REVISION`")]
    RevisionNotFound {
        /// Repository.
        model_id: String,
        /// Branch, tag or commit asked for.
        revision: String,
    },
    /// 404 for one file.
    #[error("file `{file}` not found in `{model_id}` at revision `{revision}`")]
    FileNotFound {
        /// Repository.
        model_id: String,
        /// Revision asked for.
        revision: String,
        /// File.
        file: String,
    },
    /// No weight file in the repository.
    #[error(
        "`{model_id}` at revision `{revision}` has no weights (model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json); its files: {files:?}"
    )]
    NoWeights {
        /// Repository.
        model_id: String,
        /// Revision asked for.
        revision: String,
        /// What the repository holds.
        files: Vec<String>,
    },
    /// Connection or read failure on every try.
    #[error("could not reach {url} after {attempts} attempts")]
    Network {
        /// Request URL.
        url: String,
        /// Tries made.
        attempts: u32,
        /// Last failure.
        #[source]
        source: reqwest::Error,
    },
    /// 429 or 5xx on every try.
    #[error("{url} answered HTTP {status} after {attempts} attempts")]
    ServerError {
        /// Request URL.
        url: String,
        /// Last status.
        status: u16,
        /// Tries made.
        attempts: u32,
    },
    /// Responses kept ending before their announced length.
    #[error("{url} ended early on each of {attempts} attempts")]
    Truncated {
        /// Request URL.
        url: String,
        /// Tries made.
        attempts: u32,
    },
    /// Any other status.
    #[error("{url} answered HTTP {status}")]
    UnexpectedStatus {
        /// Request URL.
        url: String,
        /// Status.
        status: u16,
    },
    /// The bytes do not hash to the Hub's etag.
    #[error(
        "`{file}` failed verification: expected {algorithm} {expected}, got {actual}; the partial download was deleted"
    )]
    ChecksumMismatch {
        /// File.
        file: String,
        /// `sha256` (LFS) or `git-sha1`.
        algorithm: &'static str,
        /// From the etag.
        expected: String,
        /// Of the bytes received.
        actual: String,
    },
    /// The bytes are not as many as announced.
    #[error("`{file}` has {actual} bytes, the Hub announced {expected}")]
    SizeMismatch {
        /// File.
        file: String,
        /// Announced.
        expected: u64,
        /// Received.
        actual: u64,
    },
    /// Offline and the cache cannot answer.
    #[error(
        "offline mode (`HF_HUB_OFFLINE`) and `{model_id}` at revision `{revision}` is not completely in the cache {cache_dir}: download it once online, or unset `HF_HUB_OFFLINE`"
    )]
    OfflineNotCached {
        /// Repository.
        model_id: String,
        /// Revision asked for.
        revision: String,
        /// Cache root.
        cache_dir: PathBuf,
    },
    /// An answer the Hub would not give.
    #[error("{url}: unexpected answer: {reason}")]
    BadResponse {
        /// Request URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// `HF_ENDPOINT` is not a base URL.
    #[error("`HF_ENDPOINT` {endpoint:?} is not a usable URL: {reason}")]
    BadEndpoint {
        /// Given endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A weight index that is not JSON with a `weight_map`.
    #[error("weight index {path} is not valid: {reason}")]
    BadIndex {
        /// Index file.
        path: PathBuf,
        /// Parser message.
        reason: String,
    },
    /// A file name that would leave the snapshot folder.
    #[error("unsafe file name {file:?} in the repository")]
    UnsafeFileName {
        /// The name.
        file: String,
    },
    /// A revision name that cannot be a ref file.
    #[error("`HF_MODEL_REVISION` {revision:?} is not a usable revision name")]
    InvalidRevision {
        /// The name.
        revision: String,
    },
    /// Reading or writing the cache.
    #[error("cache i/o on {path}")]
    Io {
        /// File or folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client")]
    Client {
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
}

/// Downloads (or finds in the cache) the files a model needs at the pinned revision and returns
/// the local snapshot directory (`<cache>/models--{org}--{name}/snapshots/{commit}`), laid out
/// exactly like Python huggingface_hub's cache (blobs/ by etag/sha256, refs/{revision},
/// snapshots/{commit}/{file} symlinks to ../../blobs/..), so a cache filled by either is reused by
/// the other. See the module documentation for when no request is made.
pub async fn download(cfg: &HubConfig) -> Result<PathBuf> {
    Download {
        cfg,
        retry: RetryPolicy::default(),
        progress: Progress::auto(),
    }
    .run()
    .await
}

/// One download run.
struct Download<'a> {
    cfg: &'a HubConfig,
    retry: RetryPolicy,
    progress: Progress,
}

impl Download<'_> {
    async fn run(&self) -> Result<PathBuf> {
        let cfg = self.cfg;
        let repo = RepoCache::new(&cfg.cache_dir, &cfg.model_id);
        let warm = {
            let (repo, revision, offline) = (repo.clone(), cfg.revision.clone(), cfg.offline);
            blocking(move || {
                Ok(repo
                    .local_commit(&revision)
                    .filter(|commit| repo.snapshot_complete(commit, offline)))
            })
            .await?
        };
        if let Some(commit) = warm {
            tracing::info!(model_id = %cfg.model_id, revision = %cfg.revision, commit = %commit, "model found in the Hub cache");
            return Ok(repo.snapshot_dir(&commit));
        }
        if cfg.offline {
            return Err(HubError::OfflineNotCached {
                model_id: cfg.model_id.clone(),
                revision: cfg.revision.clone(),
                cache_dir: cfg.cache_dir.clone(),
            });
        }
        let client = HubClient::new(cfg, self.retry)?;
        let info = client.revision_info().await?;
        let commit = info.sha;
        tracing::info!(model_id = %cfg.model_id, revision = %cfg.revision, commit = %commit, "downloading model from the Hub");
        repo.write_ref(&cfg.revision, &commit)?;
        let selection = files::select(&cfg.model_id, &cfg.revision, &info.siblings)?;
        let mut all = selection.files.clone();
        if let Some(index) = &selection.index {
            self.fetch_files(&client, &repo, &commit, std::slice::from_ref(index))
                .await?;
            let shards = files::shards(&repo.snapshot_dir(&commit).join(index))?;
            if let Some(missing) = shards.iter().find(|s| !info.siblings.contains(s)) {
                return Err(HubError::FileNotFound {
                    model_id: cfg.model_id.clone(),
                    revision: cfg.revision.clone(),
                    file: missing.clone(),
                });
            }
            all.push(index.clone());
            all.extend(shards);
        }
        repo.write_manifest(&commit, &all, false)?;
        self.fetch_files(&client, &repo, &commit, &all).await?;
        repo.write_manifest(&commit, &all, true)?;
        tracing::info!(model_id = %cfg.model_id, commit = %commit, files = all.len(), "model downloaded");
        Ok(repo.snapshot_dir(&commit))
    }

    /// Fetches the files missing from the snapshot, [`CONCURRENT_FILES`] at a time.
    async fn fetch_files(
        &self,
        client: &HubClient<'_>,
        repo: &RepoCache,
        commit: &str,
        names: &[String],
    ) -> Result<()> {
        let snapshot = repo.snapshot_dir(commit);
        // Owned names, and a closure that moves each into its future: a closure taking `&str`
        // makes the future's lifetime higher-ranked, and then it is not `Send` for `tokio::spawn`.
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !snapshot.join(n).is_file())
            .cloned()
            .collect();
        futures_util::stream::iter(missing)
            .map(|name: String| async move { self.fetch_file(client, repo, commit, &name).await })
            .buffer_unordered(CONCURRENT_FILES)
            .try_collect::<()>()
            .await
    }

    async fn fetch_file(
        &self,
        client: &HubClient<'_>,
        repo: &RepoCache,
        commit: &str,
        name: &str,
    ) -> Result<()> {
        let meta = client.file_meta(commit, name).await?;
        if meta.commit != commit {
            return Err(HubError::BadResponse {
                url: client.resolve_url(commit, name)?.to_string(),
                reason: format!(
                    "X-Repo-Commit {} differs from the listed commit {commit}",
                    meta.commit
                ),
            });
        }
        let blob = repo.blob_path(&meta.etag);
        if !blob.is_file() {
            // Other tasks of this run and other processes (Python too) may want the same blob.
            let _lock = blob::lock_file(repo.lock_path(&meta.etag)).await?;
            if !blob.is_file() {
                blob::fetch_blob(&self.progress, client, repo, name, &meta).await?;
            }
        }
        let (repo, commit, name, etag) = (
            repo.clone(),
            commit.to_owned(),
            name.to_owned(),
            meta.etag.clone(),
        );
        blocking(move || repo.link(&commit, &name, &etag)).await?;
        Ok(())
    }
}

/// Runs cache file-system work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HubError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?
}

//! Where a job reads and writes (contract §8): a local file or directory, or an `s3://` prefix.
//!
//! Inputs are listed in name order, folders kept as relative paths. An S3 input is downloaded to
//! a private work file first. Outputs are never visible half-written: a local output is written
//! to a hidden partial file beside its final name and renamed; an S3 output is written to a work
//! file and sent with a multipart upload, which S3 makes visible only once complete. So an output
//! that exists is finished, which is what resumption relies on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::BatchError;

/// The suffix SageMaker gives each output: `<input name>.out`.
pub const OUT_SUFFIX: &str = ".out";

/// A parsed `--input` or `--output`.
#[derive(Clone)]
pub enum Location {
    /// A local file or directory.
    Local(PathBuf),
    /// An S3 prefix.
    S3 {
        /// The bucket's client.
        store: Arc<AmazonS3>,
        /// `s3://bucket/prefix` as given, for messages.
        url: String,
        /// The key prefix (no leading `/`).
        prefix: String,
    },
}

/// One input file.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Path relative to the input location, `/`-separated; the output is this plus `.out`.
    pub rel: String,
    /// Size in bytes as stored (compressed size for gzip files).
    pub size: u64,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Local(PathBuf),
    S3(ObjectPath),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Location {
    /// Parses a path or `s3://bucket/prefix`; S3 settings come from the `AWS_*` environment
    /// (`AWS_ENDPOINT_URL` for S3-compatible servers).
    pub fn parse(flag: &'static str, text: &str) -> Result<Self, BatchError> {
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(Self::Local(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BatchError::BadLocation {
                flag,
                value: text.to_owned(),
                reason: "expected s3://bucket/prefix",
            });
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let plain_http = [AmazonS3ConfigKey::Endpoint, AmazonS3ConfigKey::S3Endpoint]
            .iter()
            .filter_map(|k| builder.get_config_value(k))
            .any(|e| e.starts_with("http://"));
        if plain_http {
            builder = builder.with_allow_http(true);
        }
        let store = builder.build().map_err(|source| BatchError::S3 {
            url: text.to_owned(),
            source,
        })?;
        Ok(Self::S3 {
            store: Arc::new(store),
            url: text.to_owned(),
            prefix: prefix.trim_start_matches('/').to_owned(),
        })
    }

    /// The location as given.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(path) => path.display().to_string(),
            Self::S3 { url, .. } => url.clone(),
        }
    }

    fn s3_err(&self, source: object_store::Error) -> BatchError {
        BatchError::S3 {
            url: self.describe(),
            source,
        }
    }

    /// The input files, sorted by relative path. Hidden files (a leading `.`) are skipped.
    pub async fn list_inputs(&self) -> Result<Vec<InputFile>, BatchError> {
        let mut files = match self {
            Self::Local(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || list_local(&root))
                    .await
                    .map_err(|e| BatchError::Crashed(e.to_string()))??
            }
            Self::S3 { store, prefix, .. } => {
                // S3 prefixes are literal (`data/part-` matches `data/part-0001`); object_store
                // lists by folder, so list the folder holding the prefix and filter.
                let folder = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
                let folder = (!folder.is_empty()).then(|| ObjectPath::from(folder));
                let mut listing = store.list(folder.as_ref());
                let mut files = Vec::new();
                while let Some(meta) = listing.next().await {
                    let meta = meta.map_err(|e| self.s3_err(e))?;
                    let key = meta.location.to_string();
                    if !key.starts_with(prefix.as_str()) {
                        continue;
                    }
                    // Paths are kept relative to the folder the prefix names (`data` or
                    // `data/`), else to the folder holding it (`data/part-`, or one object).
                    let as_folder = format!("{}/", prefix.trim_end_matches('/'));
                    let base = if prefix.is_empty() {
                        String::new()
                    } else if key.starts_with(&as_folder) {
                        as_folder
                    } else {
                        prefix
                            .rsplit_once('/')
                            .map_or_else(String::new, |(dir, _)| format!("{dir}/"))
                    };
                    let rel = key.strip_prefix(&base).unwrap_or(&key);
                    let rel = rel.trim_start_matches('/').to_owned();
                    if rel.is_empty() || rel.split('/').any(|part| part.starts_with('.')) {
                        continue;
                    }
                    files.push(InputFile {
                        rel,
                        size: meta.size,
                        source: Source::S3(meta.location),
                    });
                }
                files
            }
        };
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(files)
    }

    /// Where the output of `rel` goes, for messages.
    pub fn output_name(&self, rel: &str) -> String {
        match self {
            Self::Local(root) => root
                .join(format!("{rel}{OUT_SUFFIX}"))
                .display()
                .to_string(),
            Self::S3 { url, .. } => {
                format!("{}/{rel}{OUT_SUFFIX}", url.trim_end_matches('/'))
            }
        }
    }

    fn output_key(prefix: &str, rel: &str) -> ObjectPath {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            ObjectPath::from(format!("{rel}{OUT_SUFFIX}"))
        } else {
            ObjectPath::from(format!("{prefix}/{rel}{OUT_SUFFIX}"))
        }
    }

    /// Whether the output of `rel` exists (then an earlier run finished it).
    pub async fn output_exists(&self, rel: &str) -> Result<bool, BatchError> {
        match self {
            Self::Local(root) => Ok(
                tokio::fs::try_exists(root.join(format!("{rel}{OUT_SUFFIX}")))
                    .await
                    .unwrap_or(false),
            ),
            Self::S3 { store, prefix, .. } => {
                match store.head(&Self::output_key(prefix, rel)).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(self.s3_err(e)),
                }
            }
        }
    }

    /// The partial file the output of `rel` is written to before [`Location::commit`].
    pub async fn partial_path(&self, rel: &str, work_dir: &Path) -> Result<PathBuf, BatchError> {
        let path = match self {
            Self::Local(root) => {
                let final_path = root.join(format!("{rel}{OUT_SUFFIX}"));
                let name = final_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                final_path.with_file_name(format!(".{name}.partial"))
            }
            Self::S3 { .. } => work_dir.join(format!("{}.partial", uuid::Uuid::new_v4())),
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| BatchError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        Ok(path)
    }

    /// Makes the finished partial file the output of `rel`: a rename, or a multipart upload.
    pub async fn commit(&self, rel: &str, partial: &Path) -> Result<(), BatchError> {
        let io = |source| BatchError::Io {
            path: partial.to_owned(),
            source,
        };
        match self {
            Self::Local(root) => {
                let final_path = root.join(format!("{rel}{OUT_SUFFIX}"));
                tokio::fs::rename(partial, &final_path).await.map_err(io)
            }
            Self::S3 { store, prefix, .. } => {
                let key = Self::output_key(prefix, rel);
                let upload = store
                    .put_multipart(&key)
                    .await
                    .map_err(|e| self.s3_err(e))?;
                let mut writer = WriteMultipart::new(upload);
                let mut file = tokio::fs::File::open(partial).await.map_err(io)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf).await.map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    writer
                        .wait_for_capacity(4)
                        .await
                        .map_err(|e| self.s3_err(e))?;
                    writer.write(&buf[..n]);
                }
                writer.finish().await.map_err(|e| self.s3_err(e))?;
                let _ = tokio::fs::remove_file(partial).await;
                Ok(())
            }
        }
    }

    /// A local path to read `file` from: the file itself, or a work copy of the S3 object
    /// (`true` when it is a copy to remove afterwards).
    pub async fn fetch(
        &self,
        file: &InputFile,
        work_dir: &Path,
    ) -> Result<(PathBuf, bool), BatchError> {
        match (&file.source, self) {
            (Source::Local(path), _) => Ok((path.clone(), false)),
            (Source::S3(key), Self::S3 { store, .. }) => {
                let dest = work_dir.join(format!("{}.input", uuid::Uuid::new_v4()));
                let io = |source| BatchError::Io {
                    path: dest.clone(),
                    source,
                };
                let result = store.get(key).await.map_err(|e| self.s3_err(e))?;
                let mut out = tokio::fs::File::create(&dest).await.map_err(io)?;
                let mut stream = result.into_stream();
                while let Some(chunk) = stream.next().await {
                    out.write_all(&chunk.map_err(|e| self.s3_err(e))?)
                        .await
                        .map_err(io)?;
                }
                out.flush().await.map_err(io)?;
                Ok((dest, true))
            }
            (Source::S3(_), Self::Local(_)) => Err(BatchError::Crashed(
                "an S3 input file listed from a local location".to_owned(),
            )),
        }
    }
}

fn list_local(root: &Path) -> Result<Vec<InputFile>, BatchError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BatchError::Io { path, source }
    };
    let meta = std::fs::metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        let rel = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![InputFile {
            rel,
            size: meta.len(),
            source: Source::Local(root.to_owned()),
        }]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // Follows links, and a FIFO counts as a file (its reader blocks until data comes).
            let meta = std::fs::metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            files.push(InputFile {
                rel,
                size: meta.len(),
                source: Source::Local(path),
            });
        }
    }
    Ok(files)
}

//! Fetch a `model.tar.gz` from `s3://bucket/key` or `https://…` into a local folder (contract §3).
//! Unpacking is `artifact::unpack`'s job.
//!
//! S3 goes through `object_store` (SigV4, the AWS credential chain: environment variables, web
//! identity, ECS/SageMaker container credentials, instance metadata; not `~/.aws` profile files),
//! configured from the `AWS_*` environment (`AWS_REGION`/`AWS_DEFAULT_REGION`, and
//! `AWS_ENDPOINT_URL` for S3-compatible servers, over plain `http://` too). HTTPS (and `http://`)
//! is streamed by the shared resumable downloader (`artifact::download`: one retry policy with
//! exponential backoff, Range requests to resume).
//! The bytes land in a `.part` file that is renamed when complete, so a half-fetched archive is
//! never mistaken for a whole one. URLs are logged and reported without their query string
//! (pre-signed URLs carry credentials there).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use reqwest::{StatusCode, header};
use tokio::io::AsyncWriteExt as _;

use super::download::{self, Failure, Received, RetryError, RetryPolicy, Transient};

/// Result of this module.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

/// Why an archive could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Neither `s3://`, `https://` nor `http://`.
    #[error("unsupported model URL {url:?}: use s3://bucket/key or https://…")]
    UnsupportedScheme {
        /// The URL.
        url: String,
    },
    /// Unparsable URL, or `s3://` without bucket or key.
    #[error("invalid model URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// 404 / no such key.
    #[error("{url} does not exist")]
    NotFound {
        /// The URL (no query string).
        url: String,
    },
    /// 401/403 / access denied.
    #[error(
        "access to {url} denied (HTTP {status}): check the credentials (AWS_* for s3://) or the pre-signed URL"
    )]
    AccessDenied {
        /// The URL (no query string).
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// Another final status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL (no query string).
        url: String,
        /// Status.
        status: u16,
    },
    /// Connection failures, 429/5xx or cut bodies on every try.
    #[error("could not fetch {url} after {attempts} attempts: {reason}")]
    Network {
        /// The URL (no query string).
        url: String,
        /// Tries made.
        attempts: u32,
        /// Last failure.
        reason: String,
        /// Last network error, when there was one.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The S3 client failed.
    #[error("fetching {url} from S3 failed")]
    S3 {
        /// The `s3://` URL.
        url: String,
        /// Cause.
        #[source]
        source: object_store::Error,
    },
    /// A PEM certificate that cannot be read.
    #[error("cannot read the PEM certificates given as extra trust roots")]
    BadCertificate {
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// Writing the archive.
    #[error("i/o on {path}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Streams an `s3://bucket/key` or `https://...` model.tar.gz into `dest_dir` and returns the file
/// path (the lead unpacks it). `default_region` (SageMaker's `SAGEMAKER_REGION`) is the S3
/// region when the AWS environment names none.
pub async fn fetch_archive(
    url: &str,
    dest_dir: &Path,
    default_region: Option<&str>,
) -> Result<PathBuf> {
    Fetcher::from_env()
        .with_default_region(default_region)
        .fetch(url, dest_dir)
        .await
}

/// Fetches archives; [`fetch_archive`] uses one configured from the environment.
#[derive(Debug, Clone)]
pub struct Fetcher {
    s3: AmazonS3Builder,
    roots: Vec<reqwest::Certificate>,
    retry: RetryPolicy,
}

impl Fetcher {
    /// S3 settings and credentials from the `AWS_*` environment; HTTP downloads retried with the
    /// shared default policy (5 tries).
    pub fn from_env() -> Self {
        Self::with_s3(AmazonS3Builder::from_env())
    }

    /// Uses the given S3 settings (endpoint, region, credentials) instead of the environment.
    pub fn with_s3(s3: AmazonS3Builder) -> Self {
        Self {
            s3,
            roots: Vec::new(),
            retry: RetryPolicy::default(),
        }
    }

    /// Uses `region` for S3 unless the S3 settings already name one.
    #[must_use]
    pub fn with_default_region(mut self, region: Option<&str>) -> Self {
        if let Some(region) = region
            && self
                .s3
                .get_config_value(&AmazonS3ConfigKey::Region)
                .is_none()
        {
            self.s3 = self.s3.with_region(region);
        }
        self
    }

    /// Sets the tries per HTTP download and the first wait between them (doubled each time).
    #[must_use]
    pub fn with_retries(mut self, attempts: u32, base_delay: Duration) -> Self {
        self.retry = RetryPolicy {
            attempts: attempts.max(1),
            base_delay,
            ..RetryPolicy::default()
        };
        self
    }

    /// Also trusts the certificates of `pem` for `https://` (a private CA); the system's roots
    /// stay trusted.
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self> {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|source| FetchError::BadCertificate { source })?;
        self.roots.extend(certs);
        Ok(self)
    }

    /// Fetches `url` into `dest_dir`; returns the archive's path.
    pub async fn fetch(&self, url: &str, dest_dir: &Path) -> Result<PathBuf> {
        tokio::fs::create_dir_all(dest_dir)
            .await
            .map_err(|source| FetchError::Io {
                path: dest_dir.to_owned(),
                source,
            })?;
        let dest = dest_dir.join(file_name(url));
        let part = dest_dir.join(format!("{}.part", file_name(url)));
        if let Some(rest) = url.strip_prefix("s3://") {
            self.fetch_s3(url, rest, &part).await?;
        } else if url.starts_with("https://") || url.starts_with("http://") {
            self.fetch_http(url, &part).await?;
        } else {
            return Err(FetchError::UnsupportedScheme {
                url: url.to_owned(),
            });
        }
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|source| FetchError::Io {
                path: dest.clone(),
                source,
            })?;
        tracing::info!(url = %redact(url), path = %dest.display(), "model archive fetched");
        Ok(dest)
    }

    async fn fetch_s3(&self, url: &str, rest: &str, part: &Path) -> Result<()> {
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(b, k)| !b.is_empty() && !k.is_empty())
            .ok_or_else(|| FetchError::InvalidUrl {
                url: url.to_owned(),
                reason: "expected s3://bucket/key".to_owned(),
            })?;
        let mut builder = self.s3.clone().with_bucket_name(bucket);
        let plain_http = [AmazonS3ConfigKey::Endpoint, AmazonS3ConfigKey::S3Endpoint]
            .iter()
            .filter_map(|k| builder.get_config_value(k))
            .any(|e| e.starts_with("http://"));
        if plain_http {
            builder = builder.with_allow_http(true);
        }
        let s3_err = |source: object_store::Error| match source {
            object_store::Error::NotFound { .. } => FetchError::NotFound {
                url: url.to_owned(),
            },
            object_store::Error::PermissionDenied { .. } => FetchError::AccessDenied {
                url: url.to_owned(),
                status: 403,
            },
            object_store::Error::Unauthenticated { .. } => FetchError::AccessDenied {
                url: url.to_owned(),
                status: 401,
            },
            source => FetchError::S3 {
                url: url.to_owned(),
                source,
            },
        };
        let store = builder.build().map_err(s3_err)?;
        tracing::info!(url = %url, "fetching model archive from S3");
        let result = store
            .get(&object_store::path::Path::from(key))
            .await
            .map_err(s3_err)?;
        let io = |source| FetchError::Io {
            path: part.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::create(part).await.map_err(io)?;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.map_err(s3_err)?).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)
    }

    async fn fetch_http(&self, url: &str, part: &Path) -> Result<()> {
        let shown = &redact(url);
        let parsed = &reqwest::Url::parse(url).map_err(|e| FetchError::InvalidUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut builder = download::client_builder();
        for cert in &self.roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        let client = &builder.build().map_err(|e| FetchError::Network {
            url: shown.clone(),
            attempts: 0,
            reason: "client setup".to_owned(),
            source: Some(e),
        })?;
        tracing::info!(url = %shown, "fetching model archive");
        let io = |source| FetchError::Io {
            path: part.to_owned(),
            source,
        };
        download::remove(part).await.map_err(io)?;
        self.retry
            .run(shown, move || async move {
                let offset = download::file_len(part).await;
                let mut req = client
                    .get(parsed.clone())
                    .header(header::ACCEPT_ENCODING, "identity");
                if let Some(range) = download::range_from(offset) {
                    req = req.header(header::RANGE, range);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| Failure::Transient(Transient::Network(e)))?;
                match download::receive(resp, part, offset, &|_| {})
                    .await
                    .map_err(|f| f.map_fatal(io))?
                {
                    Received::Complete => Ok(()),
                    Received::Refused(resp) => Err(refused(resp.status(), shown)),
                }
            })
            .await
            .map_err(|e| match e {
                RetryError::Fatal(e) => e,
                RetryError::Exhausted { attempts, cause } => FetchError::Network {
                    url: shown.clone(),
                    attempts,
                    reason: cause.to_string(),
                    source: match cause {
                        Transient::Network(e) => Some(e),
                        Transient::Status(_) | Transient::Short => None,
                    },
                },
            })
    }
}

/// The failure an answer without a body stands for: 429/5xx are worth another try.
fn refused(status: StatusCode, shown: &str) -> Failure<FetchError> {
    if let Some(transient) = download::transient_status(status) {
        return Failure::Transient(transient);
    }
    let url = shown.to_owned();
    Failure::Fatal(match status {
        StatusCode::NOT_FOUND => FetchError::NotFound { url },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FetchError::AccessDenied {
            url,
            status: status.as_u16(),
        },
        s => FetchError::Status {
            url,
            status: s.as_u16(),
        },
    })
}

/// The archive's local name: the URL's last path segment when it is a plain file name.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or("");
    let ok = !last.is_empty()
        && last != "."
        && last != ".."
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        last.to_owned()
    } else {
        "model.tar.gz".to_owned()
    }
}

/// The URL without its query string and fragment.
fn redact(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::hub::hub_stub::{HubStub, Moto, sha256_hex};

    fn archive() -> Bytes {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/conformance/models/bert-seqcls-targz/model.tar.gz");
        Bytes::from(std::fs::read(path).expect("fixture archive"))
    }

    fn fast() -> Fetcher {
        Fetcher::from_env().with_retries(2, Duration::from_millis(1))
    }

    /// Serves the archive from the stub Hub's CDN path (Range support, breakable).
    async fn serve_archive() -> (HubStub, String, Bytes) {
        let stub = HubStub::start().await;
        let bytes = archive();
        let mut files = BTreeMap::new();
        files.insert("model.tar.gz".to_owned(), bytes.clone());
        stub.add_commit("org/archive", "main", files);
        let sha = sha256_hex(&bytes);
        (stub, sha, bytes)
    }

    /// An https server on 127.0.0.1 (name `localhost`) with a fresh self-signed certificate
    /// that answers every request with `body`. Returns the URL and the certificate (PEM).
    async fn serve_tls(body: Bytes) -> (String, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(vec![key.cert.der().clone()], der)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, body) = (acceptor.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let status = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(status.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (
            format!("https://localhost:{port}/model.tar.gz"),
            key.cert.pem(),
        )
    }

    #[tokio::test]
    async fn https_archive_is_fetched_over_tls_from_a_trusted_server_only() {
        let bytes = archive();
        let (url, ca) = serve_tls(bytes.clone()).await;
        let dest = tempfile::tempdir().expect("tempdir");

        let err = fast().fetch(&url, dest.path()).await.unwrap_err();
        assert!(matches!(err, FetchError::Network { .. }), "{err:?}");
        let trusting = fast()
            .with_root_certificates_pem(ca.as_bytes())
            .expect("pem");
        let path = trusting.fetch(&url, dest.path()).await.expect("fetches");

        assert_eq!(path, dest.path().join("model.tar.gz"));
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
    }

    #[tokio::test]
    async fn http_archive_is_streamed_to_disk() {
        let (stub, sha, bytes) = serve_archive().await;
        let dest = tempfile::tempdir().expect("tempdir");
        let url = format!("{}/cdn/{sha}?X-Amz-Signature=s3cr3t", stub.endpoint());

        let path = fast().fetch(&url, dest.path()).await.expect("fetches");

        assert_eq!(path, dest.path().join(&sha));
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        assert!(!dest.path().join(format!("{sha}.part")).exists());
    }

    #[tokio::test]
    async fn broken_http_download_resumes_with_range() {
        let (stub, sha, bytes) = serve_archive().await;
        stub.break_downloads(&sha, 300_000, 1);
        let dest = tempfile::tempdir().expect("tempdir");

        let path = fast()
            .fetch(&format!("{}/cdn/{sha}", stub.endpoint()), dest.path())
            .await
            .expect("resumes");

        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        let ranges: Vec<_> = stub.requests().into_iter().map(|r| r.range).collect();
        assert_eq!(ranges, [None, Some("bytes=300000-".to_owned())]);
    }

    #[tokio::test]
    async fn http_errors_are_typed() {
        let (stub, _, _) = serve_archive().await;
        let dest = tempfile::tempdir().expect("tempdir");
        stub.set_private("org/archive", "hf_token");
        let private = format!("{}/org/archive/resolve/main/model.tar.gz", stub.endpoint());
        let err = fast().fetch(&private, dest.path()).await.unwrap_err();
        assert!(
            matches!(err, FetchError::AccessDenied { status: 401, .. }),
            "{err:?}"
        );
        let err = fast()
            .fetch(
                &format!("{}/cdn/0000?sig=s3cr3t", stub.endpoint()),
                dest.path(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::NotFound { ref url } if !url.contains("s3cr3t")),
            "{err:?}"
        );
        stub.fail_next(5);
        let err = fast()
            .fetch(&format!("{}/cdn/0000", stub.endpoint()), dest.path())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::Network { attempts: 2, .. }),
            "{err:?}"
        );
        let err = fast()
            .fetch("ftp://example.invalid/model.tar.gz", dest.path())
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::UnsupportedScheme { .. }),
            "{err:?}"
        );
        let err = fast()
            .fetch("s3://bucket-only", dest.path())
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::InvalidUrl { .. }), "{err:?}");
    }

    #[test]
    fn local_name_comes_from_a_plain_last_segment() {
        assert_eq!(file_name("s3://b/models/m1/model.tar.gz"), "model.tar.gz");
        assert_eq!(file_name("https://h/x/weights.tgz?sig=1"), "weights.tgz");
        assert_eq!(file_name("https://h/x/"), "model.tar.gz");
        assert_eq!(file_name("https://h/x/a%2F..%2Fb"), "model.tar.gz");
        assert_eq!(
            redact("https://h/m.tar.gz?X-Amz-Signature=1#f"),
            "https://h/m.tar.gz"
        );
    }

    #[test]
    fn sagemaker_region_applies_only_when_none_is_set() {
        let region = |f: &Fetcher| f.s3.get_config_value(&AmazonS3ConfigKey::Region);
        let unset = Fetcher::with_s3(AmazonS3Builder::new()).with_default_region(Some("eu-west-3"));
        assert_eq!(region(&unset).as_deref(), Some("eu-west-3"));
        let set = Fetcher::with_s3(AmazonS3Builder::new().with_region("us-west-2"))
            .with_default_region(Some("eu-west-3"));
        assert_eq!(region(&set).as_deref(), Some("us-west-2"));
    }

    fn s3_fetcher(moto: &Moto) -> Fetcher {
        Fetcher::with_s3(
            AmazonS3Builder::new()
                .with_endpoint(&moto.endpoint)
                .with_region("us-east-1")
                .with_access_key_id("testing")
                .with_secret_access_key("testing"),
        )
    }

    #[tokio::test]
    async fn s3_archive_is_fetched_from_an_s3_compatible_endpoint() {
        let moto = Moto::start().await;
        let bytes = archive();
        moto.put("models", "prod/model.tar.gz", bytes.clone()).await;
        let dest = tempfile::tempdir().expect("tempdir");

        let path = s3_fetcher(&moto)
            .fetch("s3://models/prod/model.tar.gz", dest.path())
            .await
            .expect("fetches");

        assert_eq!(path, dest.path().join("model.tar.gz"));
        assert_eq!(std::fs::read(&path).expect("read"), bytes);
        let err = s3_fetcher(&moto)
            .fetch("s3://models/prod/missing.tar.gz", dest.path())
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    }
}

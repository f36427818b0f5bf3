//! The Hub's HTTP API as the download needs it: list a revision, read a file's metadata, stream a
//! file's bytes (from an offset). Redirects are followed by hand so that the bearer token goes to
//! the Hub endpoint only, never to a CDN on another host. Failures that may pass (connection
//! errors, 429, 5xx) are retried with exponential backoff.

use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::{HubError, Result};
use crate::config::HubConfig;

/// How often and how patiently failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Tries in all, the first included.
    pub(crate) attempts: u32,
    /// Wait before the second try; doubled for each further one.
    pub(crate) base_delay: Duration,
    /// Longest wait between tries.
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// A revision as `GET /api/models/{id}/revision/{rev}` describes it.
#[derive(Debug, Clone)]
pub(crate) struct RevisionInfo {
    /// The commit hash the revision points to.
    pub(crate) sha: String,
    /// Every file of the repository at that commit.
    pub(crate) siblings: Vec<String>,
}

/// What `HEAD /{id}/resolve/{commit}/{file}` tells about a file.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    /// `X-Repo-Commit`.
    pub(crate) commit: String,
    /// `X-Linked-Etag` or `ETag`, without quotes: sha256 (LFS) or git blob sha1.
    pub(crate) etag: String,
    /// `X-Linked-Size` or `Content-Length`.
    pub(crate) size: Option<u64>,
    /// Where the bytes are (the CDN for LFS files).
    pub(crate) location: Url,
}

/// Which request an error status answers, to name the missing thing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    /// The revision listing.
    Listing,
    /// One file.
    File(&'a str),
}

/// A failed attempt, before retries are decided.
pub(crate) enum Failure {
    /// Worth another try.
    Transient(Transient),
    /// Final.
    Fatal(HubError),
}

/// The cause of a transient failure, kept for the error after the last try.
pub(crate) enum Transient {
    /// Connection, timeout or body error.
    Network(reqwest::Error),
    /// 429 or 5xx.
    Status(StatusCode),
    /// A response that promised more bytes than it sent.
    Short,
}

/// The Hub client of one download.
pub(crate) struct HubClient<'a> {
    http: reqwest::Client,
    cfg: &'a HubConfig,
    endpoint: Url,
    auth: Option<HeaderValue>,
    /// Retry policy of every request.
    pub(crate) retry: RetryPolicy,
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Python `huggingface_hub`'s etag normalisation: no weak marker, no quotes.
fn normalize_etag(raw: &str) -> String {
    raw.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

/// The first byte of a 206 answer, from `Content-Range: bytes START-END/TOTAL`.
pub(crate) fn range_start(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "content-range")?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl<'a> HubClient<'a> {
    /// A client for `cfg.endpoint` with `cfg.token`.
    pub(crate) fn new(cfg: &'a HubConfig, retry: RetryPolicy) -> Result<Self> {
        let endpoint =
            Url::parse(&format!("{}/", cfg.endpoint)).map_err(|e| HubError::BadEndpoint {
                endpoint: cfg.endpoint.clone(),
                reason: e.to_string(),
            })?;
        let auth = match &cfg.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| HubError::MalformedToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sagebrush/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| HubError::Client { source })?;
        Ok(Self {
            http,
            cfg,
            endpoint,
            auth,
            retry,
        })
    }

    /// `{endpoint}/{id}/resolve/{commit}/{file}`.
    pub(crate) fn resolve_url(&self, commit: &str, file: &str) -> Result<Url> {
        let mut url = self.endpoint.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|()| HubError::BadEndpoint {
                    endpoint: self.cfg.endpoint.clone(),
                    reason: "cannot be a base URL".to_owned(),
                })?;
            segs.pop_if_empty();
            segs.extend(self.cfg.model_id.split('/'));
            segs.push("resolve");
            segs.push(commit);
            segs.extend(file.split('/'));
        }
        Ok(url)
    }

    fn revision_url(&self) -> Result<Url> {
        let mut url = self.endpoint.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|()| HubError::BadEndpoint {
                    endpoint: self.cfg.endpoint.clone(),
                    reason: "cannot be a base URL".to_owned(),
                })?;
            segs.pop_if_empty();
            segs.extend(["api", "models"]);
            segs.extend(self.cfg.model_id.split('/'));
            segs.push("revision");
            // One segment: `refs/pr/1` becomes `refs%2Fpr%2F1`, as Python quotes it.
            segs.push(&self.cfg.revision);
        }
        Ok(url)
    }

    /// One request; the token only when `url` is on the Hub endpoint's origin.
    async fn send_once(
        &self,
        method: Method,
        url: &Url,
        offset: u64,
    ) -> std::result::Result<reqwest::Response, reqwest::Error> {
        let mut req = self
            .http
            .request(method, url.clone())
            .header(header::ACCEPT_ENCODING, "identity");
        if let Some(auth) = self
            .auth
            .as_ref()
            .filter(|_| same_origin(url, &self.endpoint))
        {
            req = req.header(header::AUTHORIZATION, auth.clone());
        }
        if offset > 0 {
            req = req.header(header::RANGE, format!("bytes={offset}-"));
        }
        req.send().await
    }

    /// Sends `method url`, following redirects: all of them when `follow_all`, else only
    /// relative ones (a renamed repository), as Python does for metadata.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        offset: u64,
        follow_all: bool,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let mut url = url.clone();
        for _ in 0..10 {
            let resp = self
                .send_once(method.clone(), &url, offset)
                .await
                .map_err(|e| Failure::Transient(Transient::Network(e)))?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let Some(location) = header_str(resp.headers(), "location") else {
                return Ok(resp);
            };
            let relative = !location.contains("://");
            if !follow_all && !relative {
                return Ok(resp);
            }
            url = url.join(location).map_err(|e| {
                Failure::Fatal(HubError::BadResponse {
                    url: url.to_string(),
                    reason: format!("bad Location {location:?}: {e}"),
                })
            })?;
        }
        Err(Failure::Fatal(HubError::BadResponse {
            url: url.to_string(),
            reason: "too many redirects".to_owned(),
        }))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the tries run out.
    pub(crate) async fn retrying<T, F, Fut>(&self, url: &Url, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Transient(cause)) if tries >= self.retry.attempts => {
                    let url = url.to_string();
                    return Err(match cause {
                        Transient::Network(source) => HubError::Network {
                            url,
                            attempts: tries,
                            source,
                        },
                        Transient::Status(status) => HubError::ServerError {
                            url,
                            status: status.as_u16(),
                            attempts: tries,
                        },
                        Transient::Short => HubError::Truncated {
                            url,
                            attempts: tries,
                        },
                    });
                }
                Err(Failure::Transient(cause)) => {
                    let delay = self.retry.delay(tries);
                    let reason = match &cause {
                        Transient::Network(e) => e.to_string(),
                        Transient::Status(s) => format!("HTTP {s}"),
                        Transient::Short => "response ended early".to_owned(),
                    };
                    tracing::warn!(url = %url, attempt = tries, error = %reason, retry_in = ?delay, "hub request failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The error for a final non-success `status`.
    pub(crate) fn status_failure(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        url: &Url,
        subject: Subject<'_>,
    ) -> Failure {
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Failure::Transient(Transient::Status(status));
        }
        let model_id = self.cfg.model_id.clone();
        let error = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if self.auth.is_none() => {
                HubError::TokenRequired {
                    model_id,
                    status: status.as_u16(),
                }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => HubError::TokenRejected {
                model_id,
                status: status.as_u16(),
            },
            StatusCode::NOT_FOUND => match (header_str(headers, "x-error-code"), subject) {
                (Some("RepoNotFound"), _) | (None, Subject::Listing) => HubError::RepoNotFound {
                    model_id,
                    endpoint: self.cfg.endpoint.clone(),
                },
                (Some("RevisionNotFound"), _) => HubError::RevisionNotFound {
                    model_id,
                    revision: self.cfg.revision.clone(),
                },
                (_, Subject::File(file)) => HubError::FileNotFound {
                    model_id,
                    revision: self.cfg.revision.clone(),
                    file: file.to_owned(),
                },
                (Some(_), Subject::Listing) => HubError::RepoNotFound {
                    model_id,
                    endpoint: self.cfg.endpoint.clone(),
                },
            },
            _ => HubError::UnexpectedStatus {
                url: url.to_string(),
                status: status.as_u16(),
            },
        };
        Failure::Fatal(error)
    }

    /// Lists the repository at the configured revision.
    pub(crate) async fn revision_info(&self) -> Result<RevisionInfo> {
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: String,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let url = &self.revision_url()?;
        let info: Info = self
            .retrying(url, move || async move {
                let resp = self.send(Method::GET, url, 0, false).await?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(self.status_failure(status, resp.headers(), url, Subject::Listing));
                }
                let body = resp
                    .bytes()
                    .await
                    .map_err(|e| Failure::Transient(Transient::Network(e)))?;
                serde_json::from_slice(&body).map_err(|e| {
                    Failure::Fatal(HubError::BadResponse {
                        url: url.to_string(),
                        reason: e.to_string(),
                    })
                })
            })
            .await?;
        if !super::cache::is_commit_hash(&info.sha) {
            return Err(HubError::BadResponse {
                url: url.to_string(),
                reason: format!("`sha` {:?} is not a commit hash", info.sha),
            });
        }
        Ok(RevisionInfo {
            sha: info.sha,
            siblings: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// Reads a file's metadata with `HEAD` (no body).
    pub(crate) async fn file_meta(&self, commit: &str, file: &str) -> Result<FileMeta> {
        let url = &self.resolve_url(commit, file)?;
        self.retrying(url, move || async move {
            let resp = self.send(Method::HEAD, url, 0, false).await?;
            let status = resp.status();
            if !(status.is_success() || status.is_redirection()) {
                return Err(self.status_failure(status, resp.headers(), url, Subject::File(file)));
            }
            let h = resp.headers();
            let bad = |reason: &str| {
                Failure::Fatal(HubError::BadResponse {
                    url: url.to_string(),
                    reason: reason.to_owned(),
                })
            };
            let commit = header_str(h, "x-repo-commit")
                .ok_or_else(|| bad("no X-Repo-Commit header"))?
                .to_owned();
            let etag = header_str(h, "x-linked-etag")
                .or_else(|| header_str(h, "etag"))
                .map(normalize_etag)
                .filter(|e| !e.is_empty() && super::cache::safe_relative(e) && !e.contains('/'))
                .ok_or_else(|| bad("no usable ETag header"))?;
            let size = header_str(h, "x-linked-size")
                .or_else(|| header_str(h, "content-length"))
                .and_then(|s| s.parse().ok());
            let location = match header_str(h, "location") {
                Some(loc) if status.is_redirection() => {
                    url.join(loc).map_err(|_| bad("bad Location header"))?
                }
                _ => resp.url().clone(),
            };
            Ok(FileMeta {
                commit,
                etag,
                size,
                location,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 9,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (1..=5).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn content_range_start_is_parsed() {
        let mut h = HeaderMap::new();
        assert_eq!(range_start(&h), None);
        h.insert(
            "content-range",
            HeaderValue::from_static("bytes 100-199/200"),
        );
        assert_eq!(range_start(&h), Some(100));
        h.insert("content-range", HeaderValue::from_static("bytes */200"));
        assert_eq!(range_start(&h), None);
    }

    #[test]
    fn etags_are_normalized_like_python() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    #[test]
    fn origin_compares_scheme_host_and_port() {
        let hub = Url::parse("https://huggingface.co/").expect("url");
        assert!(same_origin(
            &hub,
            &Url::parse("https://huggingface.co:443/x").expect("url")
        ));
        assert!(!same_origin(
            &hub,
            &Url::parse("https://cdn-lfs.hf.co/x").expect("url")
        ));
        assert!(!same_origin(
            &hub,
            &Url::parse("http://huggingface.co/x").expect("url")
        ));
    }
}

//! The Hub's HTTP API as the download needs it: list a revision, read a file's metadata, stream a
//! file's bytes (from an offset). Redirects are followed by hand so that the bearer token goes to
//! the Hub endpoint only, never to a CDN on another host. Failures that may pass (connection
//! errors, 429, 5xx) are retried with the policy of the shared downloader (`artifact::download`).

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::{HubError, Result};
use crate::artifact::download::{self, RetryError};
use crate::config::HubConfig;

pub(crate) use crate::artifact::download::{RetryPolicy, Transient};

/// A failed attempt of a Hub request, before retries are decided.
pub(crate) type Failure = download::Failure<HubError>;

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
        let http = download::client_builder()
            .redirect(reqwest::redirect::Policy::none())
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

    /// The Hub endpoint followed by `segments`, each percent-encoded as one path segment.
    fn endpoint_url<'s>(&self, segments: impl IntoIterator<Item = &'s str>) -> Result<Url> {
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|()| HubError::BadEndpoint {
                endpoint: self.cfg.endpoint.clone(),
                reason: "cannot be a base URL".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// `{endpoint}/{id}/resolve/{commit}/{file}`.
    pub(crate) fn resolve_url(&self, commit: &str, file: &str) -> Result<Url> {
        let id = self.cfg.model_id.split('/');
        self.endpoint_url(id.chain(["resolve", commit]).chain(file.split('/')))
    }

    /// `{endpoint}/api/models/{id}/revision/{revision}`; the revision is one segment, so
    /// `refs/pr/1` becomes `refs%2Fpr%2F1`, as Python quotes it.
    fn revision_url(&self) -> Result<Url> {
        let id = self.cfg.model_id.split('/');
        let revision = ["revision", self.cfg.revision.as_str()];
        self.endpoint_url(["api", "models"].into_iter().chain(id).chain(revision))
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
        if let Some(range) = download::range_from(offset) {
            req = req.header(header::RANGE, range);
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

    /// Runs `attempt` with the shared retry policy until it succeeds, fails for good, or the
    /// tries run out.
    pub(crate) async fn retrying<T, F, Fut>(&self, url: &Url, attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        self.retry
            .run(url.as_str(), attempt)
            .await
            .map_err(|e| match e {
                RetryError::Fatal(e) => e,
                RetryError::Exhausted { attempts, cause } => {
                    let url = url.to_string();
                    match cause {
                        Transient::Network(source) => HubError::Network {
                            url,
                            attempts,
                            source,
                        },
                        Transient::Status(status) => HubError::ServerError {
                            url,
                            status: status.as_u16(),
                            attempts,
                        },
                        Transient::Short => HubError::Truncated { url, attempts },
                    }
                }
            })
    }

    /// The error for a final non-success `status`.
    pub(crate) fn status_failure(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        url: &Url,
        subject: Subject<'_>,
    ) -> Failure {
        if let Some(transient) = download::transient_status(status) {
            return Failure::Transient(transient);
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

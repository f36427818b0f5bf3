//! The one resumable HTTP downloader, shared by the archive fetch (`artifact::fetch`, contract §3
//! `https://` model archives) and the Hub download (`hub::blob`, contract §3 `HF_MODEL_ID`).
//!
//! It owns what both need: the HTTP client settings, the retry policy (exponential backoff), the
//! meaning of an answer to a ranged `GET` (206 from the asked offset appends, 200 starts over, a
//! 206 from elsewhere or a 416 throws the part file away and tries again), and the loop that
//! streams a body into the part file. What arrived before a cut stays in the part file, so the
//! next try asks for the rest with `Range: bytes=N-`. It does not own the error types of its
//! callers (each maps [`Failure`] and [`RetryError`] into its own), redirects and tokens (the Hub's
//! concern), hashing, or renaming the finished file into place.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use tokio::io::AsyncWriteExt as _;

/// How often and how patiently failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Tries in all, the first included.
    pub(crate) attempts: u32,
    /// Wait before the second try; doubled for each further one.
    pub(crate) base_delay: Duration,
    /// Longest wait between tries.
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five tries, waiting 0.5 s, 1 s, 2 s, 4 s between them (at most 8 s).
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

    /// Runs `attempt` until it succeeds, fails for good, or the tries run out. Each retry is
    /// logged as a warning naming `url` (which must not carry credentials) and the cause.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        url: &str,
        mut attempt: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure<E>>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Fatal(e)) => return Err(RetryError::Fatal(e)),
                Err(Failure::Transient(cause)) if tries >= self.attempts.max(1) => {
                    return Err(RetryError::Exhausted {
                        attempts: tries,
                        cause,
                    });
                }
                Err(Failure::Transient(cause)) => {
                    let delay = self.delay(tries);
                    tracing::warn!(url = %url, attempt = tries, error = %cause, retry_in = ?delay, "download request failed, retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// A failed try, before retries are decided.
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// Worth another try.
    Transient(Transient),
    /// Final.
    Fatal(E),
}

impl<E> Failure<E> {
    /// The same failure with the final error converted.
    pub(crate) fn map_fatal<F>(self, f: impl FnOnce(E) -> F) -> Failure<F> {
        match self {
            Self::Transient(t) => Failure::Transient(t),
            Self::Fatal(e) => Failure::Fatal(f(e)),
        }
    }
}

/// The cause of a transient failure, kept for the error after the last try.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Transient {
    /// Connection, timeout or body error.
    #[error("{0}")]
    Network(#[source] reqwest::Error),
    /// 429 or 5xx.
    #[error("HTTP {0}")]
    Status(StatusCode),
    /// A body shorter than announced, or a part file that had to be thrown away (a 416, or a 206
    /// for another range than the one asked for).
    #[error("response ended early or did not continue the partial file")]
    Short,
}

/// How [`RetryPolicy::run`] ended without a value.
#[derive(Debug)]
pub(crate) enum RetryError<E> {
    /// A try failed for good.
    Fatal(E),
    /// Every try failed transiently; `cause` is the last one.
    Exhausted {
        /// Tries made.
        attempts: u32,
        /// The last failure.
        cause: Transient,
    },
}

/// What [`receive`] did with a response.
#[derive(Debug)]
pub(crate) enum Received {
    /// The body is in the part file.
    Complete,
    /// The status is not one of a body (not 200 or 206, nor 416): the caller decides what it
    /// means (not found, denied, …).
    Refused(reqwest::Response),
}

/// A client builder with the settings every download shares: sagebrush's user agent, a 10 s
/// connect timeout and a 60 s read timeout (a stalled body fails and is resumed).
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("sagebrush/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
}

/// `Some` for the statuses worth another try: 429 and every 5xx.
pub(crate) fn transient_status(status: StatusCode) -> Option<Transient> {
    (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
        .then_some(Transient::Status(status))
}

/// The `Range` header value that asks for the bytes from `offset` on, or `None` from the start.
pub(crate) fn range_from(offset: u64) -> Option<String> {
    (offset > 0).then(|| format!("bytes={offset}-"))
}

/// The first byte of a 206 answer, from `Content-Range: bytes START-END/TOTAL`.
pub(crate) fn range_start(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_RANGE)?
        .to_str()
        .ok()?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The length of the file at `path`; 0 when there is none.
pub(crate) async fn file_len(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

/// Deletes `path`; a file that is already gone is fine.
pub(crate) async fn remove(path: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes the body of `resp`, the answer to a `GET` sent with [`range_from`]`(offset)`, into
/// `part`: appended for a 206 that starts at `offset`, from the start for a 200. A 206 from
/// another offset or a 416 deletes `part` and is [`Transient::Short`], so the next try starts
/// over. `progress` is told the number of bytes in `part` when writing starts and after each
/// chunk. A body cut short (a network error, or fewer bytes than `Content-Length`) keeps what
/// arrived and is transient. Fatal failures are the I/O errors on `part`.
pub(crate) async fn receive(
    resp: reqwest::Response,
    part: &Path,
    offset: u64,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Received, Failure<std::io::Error>> {
    let append = match resp.status() {
        StatusCode::PARTIAL_CONTENT if range_start(resp.headers()) == Some(offset) => true,
        StatusCode::OK => false,
        StatusCode::PARTIAL_CONTENT | StatusCode::RANGE_NOT_SATISFIABLE => {
            // Not the range asked for, or a part file longer than the file: start over rather
            // than splice wrong bytes.
            remove(part).await.map_err(Failure::Fatal)?;
            return Err(Failure::Transient(Transient::Short));
        }
        _ => return Ok(Received::Refused(resp)),
    };
    let start = if append { offset } else { 0 };
    let expected = resp.content_length().map(|n| n + start);
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .await
        .map_err(Failure::Fatal)?;
    progress(start);
    let mut written = start;
    let mut body = resp.bytes_stream();
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                file.write_all(&bytes).await.map_err(Failure::Fatal)?;
                written += bytes.len() as u64;
                progress(written);
            }
            Err(e) => {
                failure = Some(Transient::Network(e));
                break;
            }
        }
    }
    // What arrived stays on disk for the next try's Range request.
    file.flush().await.map_err(Failure::Fatal)?;
    file.sync_all().await.map_err(Failure::Fatal)?;
    if failure.is_none() && expected.is_some_and(|e| e != written) {
        failure = Some(Transient::Short);
    }
    failure.map_or(Ok(Received::Complete), |t| Err(Failure::Transient(t)))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

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
        assert_eq!(range_from(0), None);
        assert_eq!(range_from(7).as_deref(), Some("bytes=7-"));
    }

    #[test]
    fn only_429_and_5xx_are_transient() {
        assert!(transient_status(StatusCode::TOO_MANY_REQUESTS).is_some());
        assert!(transient_status(StatusCode::BAD_GATEWAY).is_some());
        assert!(transient_status(StatusCode::NOT_FOUND).is_none());
        assert!(transient_status(StatusCode::FORBIDDEN).is_none());
    }

    #[tokio::test]
    async fn retries_stop_at_the_first_fatal_failure_or_after_the_last_try() {
        let policy = RetryPolicy {
            attempts: 3,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        };
        let tries = std::sync::atomic::AtomicU32::new(0);
        let out: Result<(), RetryError<&str>> = policy
            .run("http://x", || async {
                tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(Failure::Transient(Transient::Short))
            })
            .await;
        assert!(matches!(
            out,
            Err(RetryError::Exhausted {
                attempts: 3,
                cause: Transient::Short
            })
        ));
        assert_eq!(tries.load(std::sync::atomic::Ordering::Relaxed), 3);
        let out: Result<(), RetryError<&str>> = policy
            .run("http://x", || async { Err(Failure::Fatal("no")) })
            .await;
        assert!(matches!(out, Err(RetryError::Fatal("no"))));
    }
}

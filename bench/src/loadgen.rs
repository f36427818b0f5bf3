//! The load generator: a closed loop of `concurrency` clients sending the same `/invocations`
//! body, after a warm-up, timing each request from send to the last byte of the response.
//!
//! It also holds the cold-start probe (`ready`): send the single-input body until one answer is
//! 200 and report the time since the server process was started.
//!
//! The client runs on a current-thread runtime: the machine has 2 cores and the server needs
//! them, so the client uses as little CPU as it can (responses are read, not parsed, except the
//! first, which is checked for shape).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde::Serialize;

use crate::workload::{Task, Workload};

/// A benchmark run that failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The request could not be sent or its body read.
    #[error("request to `{url}` failed")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        err: reqwest::Error,
    },
    /// The server answered with a status other than 200.
    #[error("`{url}` answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// The answer is not what the workload's pipeline returns.
    #[error("answer of `{url}` is not a JSON list of {want} results: {detail}")]
    Shape {
        /// The URL.
        url: String,
        /// Results expected.
        want: usize,
        /// What was wrong.
        detail: String,
    },
    /// The server never answered 200 within the time limit.
    #[error("no successful invocation of `{url}` within {secs} s (last: {last})")]
    NeverReady {
        /// The URL.
        url: String,
        /// The limit.
        secs: u64,
        /// The last failure.
        last: String,
    },
    /// The server answered that its model failed to load.
    #[error("`{url}` answered {status}, the model will not load: {body}")]
    LoadFailed {
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// The server process exited before it answered 200.
    #[error("the server behind `{url}` exited before a successful invocation (last: {last})")]
    ServerExited {
        /// The URL.
        url: String,
        /// The last failure.
        last: String,
    },
    /// A client task panicked or was cancelled.
    #[error("a client task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Result of this module.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

/// What to send and how hard.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `/invocations` URL.
    pub url: String,
    /// The workload (for the record and the answer check).
    pub workload: Workload,
    /// The request body.
    pub body: Vec<u8>,
    /// Timed requests.
    pub requests: usize,
    /// Clients sending at once.
    pub concurrency: usize,
    /// Untimed requests first (sent by `concurrency` clients).
    pub warmup: usize,
}

/// Figures of one run; times in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    /// Timed requests (all succeeded).
    pub requests: usize,
    /// Clients.
    pub concurrency: usize,
    /// Requests per second over the timed phase.
    pub req_per_s: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile (nearest rank: with fewer than 100 requests, the slowest).
    pub p99_ms: f64,
    /// Mean latency.
    pub mean_ms: f64,
    /// Fastest request.
    pub min_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Bytes of one response.
    pub response_bytes: usize,
    /// Inputs answered per second (req/s × inputs per request): sentences/s for embeddings.
    pub items_per_s: f64,
    /// Generated tokens per second (req/s × inputs × new tokens); generation workloads only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        // Only fails when the TLS backend cannot start; this client is built without TLS.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sends one request and reads the whole answer; the body is returned on 200.
async fn invoke(client: &reqwest::Client, url: &str, body: &[u8]) -> Result<bytes::Bytes> {
    let http = |err| LoadError::Http {
        url: url.to_owned(),
        err,
    };
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(http)?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(http)?;
    if status != StatusCode::OK {
        return Err(LoadError::Status {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        });
    }
    Ok(bytes)
}

/// Checks that the answer has one result per input: a JSON list, or for sentence embeddings
/// `{"embeddings": [...]}` (a list of vectors, or one vector for one input).
fn check_shape(url: &str, workload: Workload, body: &[u8]) -> Result<()> {
    let shape = |detail: String| LoadError::Shape {
        url: url.to_owned(),
        want: workload.inputs,
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| shape(format!("not JSON: {e}")))?;
    let list = if workload.task == Task::SentenceEmbeddings {
        let embeddings = value
            .get("embeddings")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| shape("no `embeddings` list".to_owned()))?;
        if workload.inputs == 1 {
            return if embeddings.iter().all(serde_json::Value::is_number) {
                Ok(())
            } else {
                Err(shape("`embeddings` is not one vector".to_owned()))
            };
        }
        embeddings
    } else {
        value
            .as_array()
            .ok_or_else(|| shape("not a list".to_owned()))?
    };
    // One text to classify: the toolkit answers its top label, TEI (a peer) every label, best
    // first: a non-empty list of labels either way.
    let one_classification = workload.task == Task::TextClassification
        && workload.inputs == 1
        && !list.is_empty()
        && list.iter().all(|v| v.get("label").is_some());
    if list.len() != workload.inputs && !one_classification {
        return Err(shape(format!("{} results", list.len())));
    }
    Ok(())
}

/// Runs the warm-up, then the timed phase, and returns its figures.
pub async fn run(spec: RunSpec) -> Result<RunStats> {
    let client = client();
    let first = invoke(&client, &spec.url, &spec.body).await?;
    check_shape(&spec.url, spec.workload, &first)?;
    let response_bytes = first.len();
    let spec = Arc::new(spec);
    phase(&client, &spec, spec.warmup.saturating_sub(1)).await?;
    let started = Instant::now();
    let mut latencies = phase(&client, &spec, spec.requests).await?;
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let mut stats = stats(&latencies, wall, spec.concurrency, response_bytes);
    stats.items_per_s = stats.req_per_s * spec.workload.items() as f64;
    if spec.workload.task.generates() {
        stats.tokens_per_s = Some(stats.req_per_s * spec.workload.generated_tokens() as f64);
    }
    Ok(stats)
}

/// `count` requests over `concurrency` clients; returns each request's milliseconds.
async fn phase(client: &reqwest::Client, spec: &Arc<RunSpec>, count: usize) -> Result<Vec<f64>> {
    let (client, spec) = (client.clone(), spec.clone());
    spread(spec.concurrency, count, move || {
        let (client, spec) = (client.clone(), spec.clone());
        async move {
            let t = Instant::now();
            invoke(&client, &spec.url, &spec.body).await?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        }
    })
    .await
}

/// `count` calls of `one` over `concurrency` clients: each client makes one call after the
/// other until `count` have been made in all. Returns every call's result (each client's in
/// its order), or the first error.
pub async fn spread<T, F, Fut>(concurrency: usize, count: usize, one: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (one, next) = (one.clone(), next.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    results.push(one().await?);
                }
                Ok::<_, LoadError>(results)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stats(sorted: &[f64], wall_s: f64, concurrency: usize, response_bytes: usize) -> RunStats {
    let n = sorted.len();
    RunStats {
        requests: n,
        concurrency,
        req_per_s: n as f64 / wall_s,
        p50_ms: percentile(sorted, 50.0),
        p90_ms: percentile(sorted, 90.0),
        p99_ms: percentile(sorted, 99.0),
        mean_ms: sorted.iter().sum::<f64>() / n.max(1) as f64,
        min_ms: sorted.first().copied().unwrap_or(f64::NAN),
        max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        response_bytes,
        items_per_s: n as f64 / wall_s,
        tokens_per_s: None,
    }
}

/// Result of the cold-start probe.
#[derive(Debug, Clone, Serialize)]
pub struct ColdStart {
    /// Seconds from process start to the end of the first 200 answer.
    pub cold_start_s: f64,
    /// Seconds the first successful request itself took.
    pub first_request_s: f64,
    /// Failed probes before it.
    pub failed_probes: usize,
}

/// When the cold-start probe stops waiting before its timeout.
#[derive(Debug, Clone, Default)]
pub struct ReadyStop {
    /// Stop when this process (the server) has exited.
    pub server_pid: Option<u32>,
    /// Stop when an error answer's body contains one of these (a load that failed for good).
    pub fail_on: Vec<String>,
}

/// Sends `body` every `interval` until a 200, and times it from `started_at` (Unix seconds).
pub async fn ready(
    url: &str,
    body: &[u8],
    started_at: f64,
    timeout: Duration,
    interval: Duration,
    stop: &ReadyStop,
) -> Result<ColdStart> {
    let client = client();
    let deadline = Instant::now() + timeout;
    let mut failed = 0;
    loop {
        let t = Instant::now();
        match invoke(&client, url, body).await {
            Ok(_) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(f64::NAN);
                return Ok(ColdStart {
                    cold_start_s: now - started_at,
                    first_request_s: t.elapsed().as_secs_f64(),
                    failed_probes: failed,
                });
            }
            Err(LoadError::Status { status, body, .. })
                if stop.fail_on.iter().any(|s| body.contains(s.as_str())) =>
            {
                return Err(LoadError::LoadFailed {
                    url: url.to_owned(),
                    status,
                    body,
                });
            }
            Err(err) if stop.server_pid.is_some_and(|p| !alive(p)) => {
                return Err(LoadError::ServerExited {
                    url: url.to_owned(),
                    last: err.to_string(),
                });
            }
            Err(err) if Instant::now() >= deadline => {
                return Err(LoadError::NeverReady {
                    url: url.to_owned(),
                    secs: timeout.as_secs(),
                    last: err.to_string(),
                });
            }
            Err(_) => {
                failed += 1;
                tokio::time::sleep(interval).await;
            }
        }
    }
}

/// Whether a process exists and has not exited (a zombie counts as exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v[..10], 99.0), 10.0);
        assert_eq!(percentile(&v[..1], 50.0), 1.0);
        let s = stats(&v[..4], 2.0, 1, 10);
        assert_eq!(s.req_per_s, 2.0);
        assert_eq!(s.mean_ms, 2.5);
    }

    #[test]
    fn answer_shape_is_one_result_per_input() {
        let w: Workload = "tc-2x16".parse().unwrap();
        assert!(check_shape("u", w, br#"[{"label":"a"},{"label":"b"}]"#).is_ok());
        assert!(matches!(
            check_shape("u", w, br#"[{"label":"a"}]"#),
            Err(LoadError::Shape { .. })
        ));
        assert!(matches!(
            check_shape("u", w, b"{}"),
            Err(LoadError::Shape { .. })
        ));
    }
}

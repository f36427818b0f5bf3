//! Streamed generation: time to first token and the gaps between tokens, as a client of
//! `"stream": true` sees them (server-sent events, one record per token).
//!
//! Each request reads the event stream as it arrives; a record with a `token` marks a token's
//! arrival, `data: [DONE]` the end. The reference has no streaming: its comparable figure is the
//! whole answer's latency from `run` on the same workload.

use std::sync::Arc;
use std::time::Instant;

use reqwest::StatusCode;
use serde::Serialize;

use crate::loadgen::{LoadError, percentile, spread};

/// What to stream and how hard.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// `/invocations` URL.
    pub url: String,
    /// The request body (with `"stream": true`).
    pub body: Vec<u8>,
    /// Timed requests.
    pub requests: usize,
    /// Clients at once.
    pub concurrency: usize,
    /// Untimed requests first.
    pub warmup: usize,
}

/// Figures of a streamed run; times in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStats {
    /// Timed requests.
    pub requests: usize,
    /// Clients.
    pub concurrency: usize,
    /// Time to first token, median.
    pub ttft_p50_ms: f64,
    /// Time to first token, 99th percentile (nearest rank).
    pub ttft_p99_ms: f64,
    /// Gap between consecutive tokens of one answer, median over all gaps.
    pub itl_p50_ms: f64,
    /// The same, 99th percentile.
    pub itl_p99_ms: f64,
    /// Whole streamed answer, median.
    pub total_p50_ms: f64,
    /// Tokens received per answer (mean).
    pub tokens_per_answer: f64,
    /// Tokens received per second over the timed phase, all clients.
    pub tokens_per_s: f64,
}

/// One streamed answer: when each token arrived, in milliseconds since the request was sent.
struct Answer {
    token_ms: Vec<f64>,
    total_ms: f64,
}

async fn stream_once(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
) -> Result<Answer, LoadError> {
    let http = |err| LoadError::Http {
        url: url.to_owned(),
        err,
    };
    let t = Instant::now();
    let mut resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(body.to_vec())
        .send()
        .await
        .map_err(http)?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http)?;
        return Err(LoadError::Status {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned(),
        });
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut token_ms = Vec::new();
    let mut done = false;
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        let at = t.elapsed().as_secs_f64() * 1e3;
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let record: Vec<u8> = buf.drain(..end + 2).collect();
            let line = String::from_utf8_lossy(&record);
            let data = line
                .trim()
                .strip_prefix("data:")
                .map(str::trim)
                .unwrap_or("");
            if data == "[DONE]" {
                done = true;
            } else if data.contains("\"error\"") && !data.contains("\"token\"") {
                return Err(LoadError::Status {
                    url: url.to_owned(),
                    status: StatusCode::OK,
                    body: format!("in-band error: {data}"),
                });
            } else if data.contains("\"token\"") {
                token_ms.push(at);
            }
        }
    }
    if !done {
        return Err(LoadError::Status {
            url: url.to_owned(),
            status: StatusCode::OK,
            body: "the stream ended without `data: [DONE]`".to_owned(),
        });
    }
    Ok(Answer {
        token_ms,
        total_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

/// `count` streamed requests over `spec.concurrency` clients.
async fn phase(
    client: &reqwest::Client,
    spec: &Arc<StreamSpec>,
    count: usize,
) -> Result<Vec<Answer>, LoadError> {
    let (client, spec) = (client.clone(), spec.clone());
    spread(spec.concurrency, count, move || {
        let (client, spec) = (client.clone(), spec.clone());
        async move { stream_once(&client, &spec.url, &spec.body).await }
    })
    .await
}

/// Runs the warm-up, then the timed phase of streamed requests.
pub async fn run(spec: StreamSpec) -> Result<StreamStats, LoadError> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let spec = Arc::new(spec);
    phase(&client, &spec, spec.warmup).await?;
    let started = Instant::now();
    let answers = phase(&client, &spec, spec.requests).await?;
    let wall = started.elapsed().as_secs_f64();
    Ok(summarize(&answers, wall, spec.concurrency))
}

fn summarize(answers: &[Answer], wall_s: f64, concurrency: usize) -> StreamStats {
    let mut ttft: Vec<f64> = answers
        .iter()
        .filter_map(|a| a.token_ms.first().copied())
        .collect();
    let mut gaps: Vec<f64> = answers
        .iter()
        .flat_map(|a| a.token_ms.windows(2).map(|w| w[1] - w[0]))
        .collect();
    let mut total: Vec<f64> = answers.iter().map(|a| a.total_ms).collect();
    for v in [&mut ttft, &mut gaps, &mut total] {
        v.sort_by(f64::total_cmp);
    }
    let tokens: usize = answers.iter().map(|a| a.token_ms.len()).sum();
    StreamStats {
        requests: answers.len(),
        concurrency,
        ttft_p50_ms: percentile(&ttft, 50.0),
        ttft_p99_ms: percentile(&ttft, 99.0),
        itl_p50_ms: percentile(&gaps, 50.0),
        itl_p99_ms: percentile(&gaps, 99.0),
        total_p50_ms: percentile(&total, 50.0),
        tokens_per_answer: tokens as f64 / answers.len().max(1) as f64,
        tokens_per_s: tokens as f64 / wall_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_token_and_gaps_come_from_the_arrival_times() {
        let answers = vec![
            Answer {
                token_ms: vec![10.0, 12.0, 15.0],
                total_ms: 16.0,
            },
            Answer {
                token_ms: vec![20.0, 21.0],
                total_ms: 22.0,
            },
        ];
        let s = summarize(&answers, 1.0, 2);
        assert_eq!((s.ttft_p50_ms, s.ttft_p99_ms), (10.0, 20.0));
        // gaps 2, 3, 1 -> sorted 1, 2, 3
        assert_eq!((s.itl_p50_ms, s.itl_p99_ms), (2.0, 3.0));
        assert_eq!(s.tokens_per_answer, 2.5);
        assert_eq!(s.tokens_per_s, 5.0);
    }
}

//! Streamed answers (issue #12): `"stream": true` in a JSON body on `/invocations` answers with
//! chunked HTTP/1.1, one record per generated token, flushed as soon as it is decoded:
//! server-sent events by default (`data: {...}\n\n`, a final `data: [DONE]\n\n`), JSON Lines
//! when `Accept: application/jsonlines` (one object a line). Every record ends with `\n`, since
//! SageMaker's InvokeEndpointWithResponseStream splits the bytes anywhere.
//!
//! A request the pipeline refuses is a 4xx before the first byte. An error after it is an
//! in-band `{"error", "error_type"}` record, and the stream then ends cleanly. The body owns the
//! invocation's admission permit and the generation's receiver: a client that disconnects drops
//! the body, which frees its place and stops its generation at the worker's next step. The
//! hook chain's `output_fn` never runs on a stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::infer::{CancelFlag, Scope};
use crate::load::LoadedModel;
use crate::pipelines::stream::StreamItem;

use super::error::{ApiError, ErrorType};
use super::state::Admission;

/// The SSE media type.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";
/// The JSON Lines media type a client asks for with `Accept`.
pub(crate) const JSON_LINES: &str = "application/jsonlines";
/// The last SSE event of a stream, as TGI and OpenAI send it.
const DONE: &[u8] = b"data: [DONE]\n\n";

/// How records are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `data: {...}\n\n`, then `data: [DONE]\n\n`.
    Sse,
    /// `{...}\n`.
    JsonLines,
}

impl Framing {
    /// JSON Lines when `Accept` names it, server-sent events otherwise.
    pub(crate) fn from_accept(accept: Option<&str>) -> Self {
        let jsonl = accept.is_some_and(|a| {
            a.split(',').any(|m| {
                let m = m.split(';').next().unwrap_or_default().trim();
                m.eq_ignore_ascii_case(JSON_LINES)
                    || m.eq_ignore_ascii_case("application/x-jsonlines")
            })
        });
        if jsonl { Self::JsonLines } else { Self::Sse }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Sse => EVENT_STREAM,
            Self::JsonLines => JSON_LINES,
        }
    }

    fn frame(self, record: &Value) -> Bytes {
        match self {
            Self::Sse => Bytes::from(format!("data: {record}\n\n")),
            Self::JsonLines => Bytes::from(format!("{record}\n")),
        }
    }
}

/// The body of a streaming request, when it is one: a JSON object with `"stream": true`.
pub(crate) fn streaming_request(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    (value.get("stream") == Some(&Value::Bool(true))).then_some(value)
}

/// Starts the generation off the async runtime (a refusal is the 4xx answer) and answers with
/// a body that yields its records as they come.
pub(crate) async fn respond(
    model: Arc<LoadedModel>,
    admission: Admission,
    accept: Option<&str>,
    request: Value,
    timeout: Duration,
) -> Result<Response, ApiError> {
    let framing = Framing::from_accept(accept);
    let span = tracing::Span::current();
    // The stream's own deadline: the worker stops a generation that outlives the time limit,
    // and the client reads an in-band timeout record. Cancellation is the receiver's drop.
    let scope = Scope {
        deadline: Some(Instant::now() + timeout),
        cancel: CancelFlag::default(),
        timings: None,
    };
    let records = tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        scope.run(|| model.chain.stream(request))
    })
    .await
    .map_err(|join| ApiError::new(ErrorType::Internal, "internal error").with_cause(&join))??;
    let records = futures_util::stream::unfold(records, |mut records| async move {
        let item = records.next().await?;
        Some((item, records))
    });
    Ok(respond_records(records, framing, admission))
}

/// Answers with a body that frames `records` as they come: an error record ends the stream
/// (after it, `[DONE]` in SSE). The body holds `admission` until it is finished or dropped.
pub(crate) fn respond_records<S>(records: S, framing: Framing, admission: Admission) -> Response
where
    S: futures_util::Stream<Item = StreamItem> + Send + 'static,
{
    struct Streaming<S> {
        records: std::pin::Pin<Box<S>>,
        framing: Framing,
        done: bool,
        /// Held until the body is finished or dropped.
        _admission: Admission,
    }
    let state = Streaming {
        records: Box::pin(records),
        framing,
        done: false,
        _admission: admission,
    };
    let chunks = futures_util::stream::unfold(state, |mut st| async move {
        use futures_util::StreamExt as _;
        if st.done {
            return None;
        }
        let chunk = match st.records.next().await {
            Some(Ok(record)) => st.framing.frame(&record),
            Some(Err(err)) => {
                st.done = true;
                let err = ApiError::from(err);
                tracing::warn!(error = %err.message, "stream ended by an error");
                let record = json!({"error": err.message, "error_type": err.error_type.as_str()});
                let mut bytes = st.framing.frame(&record).to_vec();
                if st.framing == Framing::Sse {
                    bytes.extend_from_slice(DONE);
                }
                Bytes::from(bytes)
            }
            None => {
                st.done = true;
                if st.framing == Framing::JsonLines {
                    return None;
                }
                Bytes::from_static(DONE)
            }
        };
        Some((Ok::<_, Infallible>(chunk), st))
    });
    let mut response = (StatusCode::OK, Body::from_stream(chunks)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies (nginx) must not buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonlines_only_when_asked() {
        assert_eq!(Framing::from_accept(None), Framing::Sse);
        assert_eq!(Framing::from_accept(Some("*/*")), Framing::Sse);
        assert_eq!(
            Framing::from_accept(Some("text/event-stream")),
            Framing::Sse
        );
        assert_eq!(
            Framing::from_accept(Some("application/jsonlines; q=1")),
            Framing::JsonLines
        );
    }

    #[test]
    fn only_objects_with_stream_true_stream() {
        assert!(streaming_request(br#" {"inputs": "a", "stream": true}"#).is_some());
        assert!(streaming_request(br#"{"inputs": "a", "stream": false}"#).is_none());
        assert!(streaming_request(br#"{"inputs": "a"}"#).is_none());
        assert!(streaming_request(br#"["stream"]"#).is_none());
        assert!(streaming_request(b"stream").is_none());
    }
}

//! `POST /invocations`: admit (429 when `--queue-size` invocations are in flight, before the
//! body is read), negotiate, read the body within the limit, run the hook chain off the async
//! runtime inside the request's inference scope (deadline, and cancellation when the client
//! leaves or the time limit answers first), answer with the produced content type
//! (contract §1, §5).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::handler::{Invocation, RequestContext};
use crate::infer::{CancelFlag, CancelOnDrop, Scope};
use crate::metrics::{RequestTimings, Stage};

use super::error::{ApiError, ErrorType};
use super::middleware::REQUEST_ID;
use super::state::AppState;

/// The custom-attributes header SageMaker passes through (contract §1).
pub const CUSTOM_ATTRIBUTES: &str = "x-amzn-sagemaker-custom-attributes";

/// The figures of an answered invocation, handed to the middleware for the log line.
#[derive(Clone)]
pub(crate) struct Timed(pub(crate) std::sync::Arc<RequestTimings>);

/// Response headers user code may not set: the server owns the request id, the framing and the
/// content type (which user code sets through its response's `content_type`).
const RESERVED_RESPONSE_HEADERS: [&str; 10] = [
    "x-request-id",
    "x-compute-time",
    "x-queue-time",
    "x-inference-time",
    "x-compute-tokens",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
];

/// Headers never shown to user code.
const PRIVATE_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

pub(crate) async fn invocations(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let model = state.ready_model()?;
    let permit = state.admit()?;
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = text(header::CONTENT_TYPE);
    let accept = text(header::ACCEPT);
    let body = read_body(&headers, body, state.config.max_payload_bytes).await?;
    // The Messages API and text completions, unless user code owns the request (contract:
    // its hooks see every body).
    if !model.chain.has_user_code()
        && let Some((api, request)) = super::openai::openai_request(&body)
    {
        let call = super::openai::Call {
            model,
            api,
            admission: permit,
            accept,
            timeout: state.config.timeout,
        };
        return super::openai::respond(call, request).await;
    }
    if let Some(request) = super::stream::streaming_request(&body) {
        return super::stream::respond(
            model,
            permit,
            accept.as_deref(),
            request,
            state.config.timeout,
        )
        .await;
    }
    // Content negotiation for the hook chain, after the streamed and OpenAI-shaped requests have
    // been answered: those choose their own framing (`Accept: text/event-stream` is theirs).
    let plan = model.chain.negotiate(
        content_type.as_deref(),
        accept.as_deref(),
        state.config.default_accept,
    )?;
    let ctx = RequestContext {
        request_id: headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        headers: headers
            .iter()
            .filter(|(name, _)| !PRIVATE_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
        custom_attributes: headers
            .get(CUSTOM_ATTRIBUTES)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let invocation = Invocation {
        body,
        content_type,
        accept,
        plan,
        ctx,
    };
    let span = tracing::Span::current();
    // Dropping this future (client gone, or the time limit answered 504) sets the flag, and the
    // model requests of this invocation are then dropped before their forward pass.
    let cancel = CancelFlag::default();
    let guard = CancelOnDrop::new(cancel.clone());
    let started = std::time::Instant::now();
    let timings = std::sync::Arc::new(RequestTimings::default());
    let scope = Scope {
        deadline: Some(started + state.config.timeout),
        cancel,
        timings: Some(std::sync::Arc::clone(&timings)),
    };
    let answer = tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        scope.run(|| model.chain.invoke(&invocation))
    })
    .await;
    guard.disarm();
    let answer = answer
        .map_err(|join| ApiError::new(ErrorType::Internal, "internal error").with_cause(&join))??;

    let mut response = (StatusCode::OK, answer.body).into_response();
    let compute = started.elapsed();
    let headers = response.headers_mut();
    // TEI's timing headers, in milliseconds (contract §1).
    for (name, value) in [
        ("x-compute-time", compute.as_millis()),
        ("x-queue-time", timings.get(Stage::Queue).as_millis()),
        (
            "x-inference-time",
            timings.get(Stage::Inference).as_millis(),
        ),
        ("x-compute-tokens", u128::from(timings.tokens())),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from(value as u64),
        );
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&answer.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    if let Some(attrs) = answer
        .custom_attributes
        .and_then(|a| HeaderValue::from_str(&a).ok())
    {
        headers.insert(HeaderName::from_static(CUSTOM_ATTRIBUTES), attrs);
    }
    response.extensions_mut().insert(Timed(timings));
    drop(permit);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(&value))
        else {
            continue;
        };
        if RESERVED_RESPONSE_HEADERS.contains(&name.as_str()) {
            tracing::warn!(header = %name, "user code may not set this response header; ignored");
            continue;
        }
        headers.insert(name, value);
    }
    Ok(response)
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorType::PayloadTooLarge,
            format!(
                "the request body is larger than the limit of {} MiB (SAGEMAKER_MAX_PAYLOAD_IN_MB)",
                limit / (1024 * 1024)
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let over = std::error::Error::source(&err)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            ApiError::new(ErrorType::Validation, "the request body could not be read")
                .with_cause(&err)
        }
    })
}

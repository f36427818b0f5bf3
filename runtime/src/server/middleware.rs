//! Request id, timeout, error bodies and the one log line per request.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::{ApiError, ErrorReport, ErrorType};
use super::invocations::Timed;
use super::state::AppState;

/// The request id header, set by `SetRequestIdLayer` before this middleware runs.
pub const REQUEST_ID: &str = "x-request-id";

/// The inference id SageMaker passes when the caller set `InferenceId`; logged with the request.
pub const INFERENCE_ID: &str = "x-amzn-sagemaker-inference-id";

/// Wraps every request: opens its span, applies the invocation timeout, writes error bodies
/// with the request id, and logs one line (request id, route, status, latency).
pub(crate) async fn observe(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let method = request.method().clone();
    // Known routes only, so that the metric's label set stays bounded.
    let route_label = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, route = %route, inference_id = tracing::field::Empty);
    if let Some(id) = request
        .headers()
        .get(INFERENCE_ID)
        .and_then(|v| v.to_str().ok())
    {
        span.record("inference_id", id);
    }
    let start = Instant::now();
    let timed = route == "/invocations";
    let timeout = state.config.timeout;
    let mut response = async move {
        if timed {
            match tokio::time::timeout(timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => ApiError::new(
                    ErrorType::Timeout,
                    format!("the invocation took longer than {} s", timeout.as_secs()),
                )
                .into_response(),
            }
        } else {
            next.run(request).await
        }
    }
    .instrument(span.clone())
    .await;
    let _enter = span.enter();
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Some(ErrorReport(err)) = response.extensions_mut().remove::<ErrorReport>() {
        let status = err.error_type.status();
        let cause = err.cause.as_deref().unwrap_or(&err.message);
        if err.error_type == ErrorType::ModelNotReady {
            // Health checks poll while loading; the load failure itself is logged once.
            tracing::debug!(
                status = status.as_u16(),
                error_type = err.error_type.as_str(),
                cause,
                "request rejected"
            );
        } else if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                error_type = err.error_type.as_str(),
                cause,
                "request failed"
            );
        } else {
            tracing::warn!(
                status = status.as_u16(),
                error_type = err.error_type.as_str(),
                cause,
                "request rejected"
            );
        }
        let body = serde_json::to_vec(&err.body(&request_id)).unwrap_or_default();
        *response.body_mut() = Body::from(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.headers_mut().remove(header::CONTENT_LENGTH);
    }
    let status = response.status().as_u16();
    let task = match state.model() {
        super::ModelState::Ready(model) => model
            .task
            .as_ref()
            .map_or_else(String::new, ToString::to_string),
        _ => String::new(),
    };
    let metrics = crate::metrics::get();
    metrics
        .requests
        .with_label_values(&[
            route_label.as_str(),
            method.as_str(),
            &status.to_string(),
            &task,
        ])
        .inc();
    metrics
        .request_seconds
        .with_label_values(&[route_label.as_str()])
        .observe(latency_ms / 1000.0);
    if let Some(Timed(t)) = response.extensions_mut().remove::<Timed>() {
        let stages = t
            .stages_ms()
            .iter()
            .map(|(stage, ms)| format!("{stage}={ms:.3}"))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(status, latency_ms, tokens = t.tokens(), stages_ms = %stages, "request");
    } else if route == "/ping" || route == "/metrics" {
        tracing::debug!(status, latency_ms, "request");
    } else {
        tracing::info!(status, latency_ms, "request");
    }
    response
}

/// 404 for unknown routes.
pub(crate) async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ErrorType::NotFound,
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

/// 405 for a known route with another method.
pub(crate) async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorType::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Turns a handler panic into a 500 JSON error (the middleware writes its body).
pub(crate) fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(ErrorType::Internal, "internal error").into_response()
}

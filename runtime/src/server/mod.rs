//! The HTTP server: routes, layers, graceful shutdown (contract §1).

pub mod error;
mod invocations;
pub mod middleware;
mod openai;
mod ping;
pub mod shutdown;
pub mod state;
mod stream;

use std::future::Future;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::pipelines::chat::Api;

pub use invocations::CUSTOM_ATTRIBUTES;
pub use state::{AppState, ModelState};

/// All routes with their layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ping", get(ping::ping))
        .route("/execution-parameters", get(ping::execution_parameters))
        .route("/invocations", post(invocations::invocations))
        .route("/metrics", get(metrics))
        .route("/v1/chat/completions", openai::post_route(Api::Chat, None))
        .route("/v1/completions", openai::post_route(Api::Completion, None))
        .route(
            "/",
            openai::post_route(Api::Generate { listed: true }, None),
        )
        .route(
            "/generate",
            openai::post_route(Api::Generate { listed: false }, Some(false)),
        )
        .route(
            "/generate_stream",
            openai::post_route(Api::Generate { listed: false }, Some(true)),
        )
        .route("/v1/models", get(openai::models))
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// `GET /metrics`: every metric in the Prometheus text format (contract §1).
async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::get().render(),
    )
}

/// Serves only `GET /metrics` on a listener of its own (`--metrics-port`), until the process
/// ends.
pub async fn serve_metrics(listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, Router::new().route("/metrics", get(metrics))).await
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and returns.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

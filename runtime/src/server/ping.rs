//! `GET /ping` (200 only when the model is ready, contract §1) and `GET /execution-parameters`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::AppState;

/// 200 with an empty body when serving; 503 JSON while loading, after a failed load, or when
/// the model worker stopped or is wedged.
pub(crate) async fn ping(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.healthy_model().map(|_| StatusCode::OK)
}

/// What Batch Transform asks before it sends work (contract §1, §8).
pub(crate) async fn execution_parameters(State(state): State<AppState>) -> Json<Value> {
    let cfg = &state.config;
    Json(json!({
        "MaxConcurrentTransforms": cfg.max_concurrent_transforms,
        "BatchStrategy": cfg.batch_strategy.as_str(),
        "MaxPayloadInMB": cfg.max_payload_bytes / (1024 * 1024),
    }))
}

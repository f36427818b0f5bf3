//! OpenAI-compatible routes (issue #12): `POST /v1/chat/completions`, `GET /v1/models`, and the
//! Messages API on `/invocations` (a JSON body with `messages` and no `inputs`, when the model
//! has no user code). The pipeline builds the `chat.completion` body; this module adds `id`,
//! `created` and `model`, and runs the pipeline off the async runtime.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::infer::{CancelFlag, CancelOnDrop, Scope};
use crate::load::LoadedModel;

use super::error::{ApiError, ErrorType};
use super::invocations::read_body;
use super::state::AppState;

/// A Messages API body on `/invocations`: a JSON object with `messages` and no `inputs`.
pub(crate) fn chat_request(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object()?;
    (obj.contains_key("messages") && !obj.contains_key("inputs")).then_some(value)
}

/// The served model's name: its directory's name.
fn model_name(model: &LoadedModel) -> String {
    model
        .model_dir
        .file_name()
        .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a chat completion and answers with the `chat.completion` JSON.
pub(crate) async fn respond_chat(
    model: Arc<LoadedModel>,
    body: Value,
    timeout: std::time::Duration,
) -> Result<Response, ApiError> {
    let span = tracing::Span::current();
    let cancel = CancelFlag::default();
    let guard = CancelOnDrop::new(cancel.clone());
    let scope = Scope {
        deadline: Some(Instant::now() + timeout),
        cancel,
        timings: None,
    };
    let name = model_name(&model);
    let answer = tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        scope.run(|| model.chain.chat(body))
    })
    .await;
    guard.disarm();
    let mut answer = answer
        .map_err(|join| ApiError::new(ErrorType::Internal, "internal error").with_cause(&join))??;
    if let Some(obj) = answer.as_object_mut() {
        obj.insert(
            "id".into(),
            json!(format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())),
        );
        obj.insert("created".into(), json!(now_secs()));
        obj.insert("model".into(), json!(name));
    }
    Ok(Json(answer).into_response())
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let model = state.ready_model()?;
    let _permit = state.admit()?;
    let body = read_body(&headers, body, state.config.max_payload_bytes).await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorType::Validation,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    respond_chat(model, value, state.config.timeout).await
}

/// `GET /v1/models`: the one model served.
pub(crate) async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let model = state.ready_model()?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": model_name(&model),
            "object": "model",
            "created": 0,
            "owned_by": "sagebrush",
        }],
    }))
    .into_response())
}

//! OpenAI- and TGI-compatible routes (issue #12): `POST /v1/chat/completions`,
//! `POST /v1/completions`, `GET /v1/models`, TGI's `POST /`, `/generate` and
//! `/generate_stream`, and on `/invocations` a JSON body with `messages` (chat) or `prompt`
//! (completion) and no `inputs`, when the model has no user code. The pipeline builds the
//! answers (whole or streamed); this module adds `id`, `created` and `model`, runs the
//! pipeline off the async runtime and hands streams to `stream.rs`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde_json::{Value, json};

use crate::infer::{CancelFlag, CancelOnDrop, Scope};
use crate::load::LoadedModel;
use crate::pipelines::chat::Api;
use crate::pipelines::completion::Completed;

use super::error::{ApiError, ErrorType};
use super::invocations::read_body;
use super::state::{Admission, AppState};
use super::stream::{self, Framing};

/// An OpenAI-shaped body on `/invocations`: a JSON object with `messages` (chat) or `prompt`
/// (completion) and no `inputs`.
pub(crate) fn openai_request(body: &[u8]) -> Option<(Api, Value)> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object()?;
    if obj.contains_key("inputs") {
        return None;
    }
    if obj.contains_key("messages") {
        Some((Api::Chat, value))
    } else if obj.contains_key("prompt") {
        Some((Api::Completion, value))
    } else {
        None
    }
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

/// What [`respond`] needs besides the body.
pub(crate) struct Call {
    /// The model.
    pub(crate) model: Arc<LoadedModel>,
    /// The API the body came through.
    pub(crate) api: Api,
    /// The invocation's admission, held until the answer (or its stream) is finished.
    pub(crate) admission: Admission,
    /// The `Accept` header (JSON Lines or SSE for streams).
    pub(crate) accept: Option<String>,
    /// The time limit.
    pub(crate) timeout: std::time::Duration,
}

/// Runs an OpenAI-compatible or TGI request off the async runtime and answers with its JSON
/// or its stream (issue #12). A refusal is a 4xx before the first byte.
pub(crate) async fn respond(call: Call, body: Value) -> Result<Response, ApiError> {
    let Call {
        model,
        api,
        admission,
        accept,
        timeout,
    } = call;
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
        scope.run(|| model.chain.complete(api, body))
    })
    .await;
    // A stream is cancelled by dropping its receiver (the body), not by this flag.
    guard.disarm();
    let answer = answer
        .map_err(|join| ApiError::new(ErrorType::Internal, "internal error").with_cause(&join))??;
    let stamp = Stamp::new(api, name);
    match answer {
        Completed::Whole(mut value) => {
            stamp.apply(&mut value);
            drop(admission);
            Ok(Json(value).into_response())
        }
        Completed::Stream(records) => {
            let records =
                futures_util::stream::unfold((records, stamp), |(mut records, stamp)| async move {
                    let item = records.next().await?.map(|mut record| {
                        stamp.apply(&mut record);
                        record
                    });
                    Some((item, (records, stamp)))
                });
            Ok(stream::respond_records(
                records,
                Framing::from_accept(accept.as_deref()),
                admission,
            ))
        }
    }
}

/// The `id`, `created` and `model` every OpenAI answer and chunk of one request carries.
struct Stamp {
    fields: Option<(String, u64, String)>,
}

impl Stamp {
    fn new(api: Api, model: String) -> Self {
        let prefix = match api {
            Api::Chat => "chatcmpl",
            Api::Completion => "cmpl",
            Api::Generate { .. } => return Self { fields: None },
        };
        Self {
            fields: Some((
                format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
                now_secs(),
                model,
            )),
        }
    }

    fn apply(&self, record: &mut Value) {
        if let (Some((id, created, model)), Some(obj)) = (&self.fields, record.as_object_mut())
            && obj.contains_key("object")
        {
            obj.insert("id".into(), json!(id));
            obj.insert("created".into(), json!(created));
            obj.insert("model".into(), json!(model));
            obj.insert("system_fingerprint".into(), Value::Null);
        }
    }
}

/// Reads a JSON body for one of the OpenAI-compatible or TGI routes and answers it.
async fn route(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    api: Api,
    force_stream: Option<bool>,
) -> Result<Response, ApiError> {
    let model = state.ready_model()?;
    let admission = state.admit()?;
    let body = read_body(headers, body, state.config.max_payload_bytes).await?;
    let mut value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorType::Validation,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if let (Some(stream), Some(obj)) = (force_stream, value.as_object_mut()) {
        obj.insert("stream".into(), json!(stream));
    }
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let call = Call {
        model,
        api,
        admission,
        accept,
        timeout: state.config.timeout,
    };
    respond(call, value).await
}

/// The `POST` route that answers `api`: `POST /v1/chat/completions` (`Api::Chat`),
/// `POST /v1/completions` (`Api::Completion`), and TGI's routes: `POST /` (what
/// `huggingface_hub.InferenceClient(base_url=...).text_generation` posts to, whose whole answer
/// is a list of one `{"generated_text"}`), `POST /generate` (the whole answer,
/// `{"generated_text"}`) and `POST /generate_stream` (token records). `force_stream` sets the
/// body's `stream` field (TGI's `/generate` and `/generate_stream` decide it by the route).
pub(crate) fn post_route(api: Api, force_stream: Option<bool>) -> MethodRouter<AppState> {
    axum::routing::post(
        move |State(state): State<AppState>, headers: HeaderMap, body: Body| async move {
            route(&state, &headers, body, api, force_stream).await
        },
    )
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

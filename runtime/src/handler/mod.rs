//! The hook chain (contract §6): `transform_fn`, or `input_fn` → `predict_fn` → `output_fn`, each
//! stage user code when the guest implements it and the native default otherwise.
//!
//! The chain does not know wasm: user code is any [`UserCode`]; the native defaults live in
//! `defaults.rs` and predict with the task's [`Pipeline`]. The server calls [`HookChain::negotiate`] before reading the body (406/415
//! before any model work), then [`HookChain::invoke`] off the async runtime.

mod defaults;
mod types;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::codec::{self, Decoding, Encoding};
use crate::infer::Scope;
use crate::metrics::Stage;
use crate::pipelines::stream::TokenStream;
use crate::pipelines::{Envelope, Pipeline, PipelineError, Task};

/// The 400 of a chat-completion request to a model with user code (issue #12).
pub const CHAT_WITH_USER_CODE: &str = "chat completions are not available with user code: this model has a guest (code/*.wasm), whose hooks own the request; send `{\"inputs\": ...}` to /invocations";

/// The 400 of a text-completion or TGI generate request to a model with user code (issue #12).
pub const COMPLETIONS_WITH_USER_CODE: &str = "text completions are not available with user code: this model has a guest (code/*.wasm), whose hooks own the request; send `{\"inputs\": ...}` to /invocations";

/// The 400 of a streaming request to a model with user code (issue #12).
pub const STREAM_WITH_USER_CODE: &str = "streaming is not available with user code: this model has a guest (code/*.wasm) whose hooks take and return whole bodies; send the request without `\"stream\": true`";

pub use types::*;

/// The media types chosen for the default stages; `None` where user code decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// How the default `input_fn` decodes the body.
    pub decoding: Option<Decoding>,
    /// How the default `output_fn` encodes the answer.
    pub encoding: Option<Encoding>,
}

/// One request as the chain sees it.
#[derive(Debug)]
pub struct Invocation {
    /// The body.
    pub body: Bytes,
    /// `Content-Type` as sent.
    pub content_type: Option<String>,
    /// `Accept` as sent.
    pub accept: Option<String>,
    /// From [`HookChain::negotiate`].
    pub plan: Plan,
    /// Request id, headers, custom attributes.
    pub ctx: RequestContext,
}

/// The pipeline the native `predict_fn` falls back on: ready, or the model directory's, built
/// on first use (issue #16).
enum Native {
    Ready(Arc<dyn Pipeline>),
    Lazy(Arc<crate::native::LazyNative>),
}

/// The handler of one model: native pipeline plus optional user code.
pub struct HookChain {
    native: Native,
    /// The task the default `input_fn` decodes for; `None` when nothing names one.
    task: Option<Task>,
    user: Option<Arc<dyn UserCode>>,
    /// Records of one multi-record body predicted at once by the native `predict_fn`.
    record_parallelism: usize,
}

impl HookChain {
    /// A chain over the native pipeline and, when given, user code. Refuses a hook set that
    /// mixes transform_fn with the others (contract §6).
    pub fn new(
        native: Arc<dyn Pipeline>,
        user: Option<Arc<dyn UserCode>>,
    ) -> Result<Self, HookRuleError> {
        if let Some(user) = &user {
            user.hooks().check()?;
        }
        Ok(Self {
            task: Some(native.task()),
            native: Native::Ready(native),
            user,
            record_parallelism: 1,
        })
    }

    /// A chain whose native pipeline is the model directory's, built on first use: a guest
    /// that predicts by itself never needs it. `task` is what `HF_TASK` or `config.json` names.
    pub fn lazy(
        native: Arc<crate::native::LazyNative>,
        task: Option<Task>,
        user: Option<Arc<dyn UserCode>>,
    ) -> Result<Self, HookRuleError> {
        if let Some(user) = &user {
            user.hooks().check()?;
        }
        Ok(Self {
            native: Native::Lazy(native),
            task,
            user,
            record_parallelism: 1,
        })
    }

    /// What the native `predict_fn` calls: the pipeline user code's `model_fn` returned, else
    /// the model directory's (built now if it was not).
    fn predictor(&self) -> Result<Arc<dyn Pipeline>, HookError> {
        if let Some(predictor) = self.user.as_ref().and_then(|u| u.predictor()) {
            return Ok(predictor);
        }
        match &self.native {
            Native::Ready(native) => Ok(Arc::clone(native)),
            Native::Lazy(lazy) => lazy.get().map_err(|message| HookError::User {
                hook: Hook::PredictFn,
                kind: UserErrorKind::Internal,
                message,
                detail: None,
            }),
        }
    }

    /// Lets the native `predict_fn` run up to `n` records of one multi-record body (JSON
    /// Lines, CSV rows) at once, so that the inference core merges them into shared forward
    /// passes instead of running them one after another. Answers are unchanged: padding never
    /// changes an answer, and records are answered (and fail) in their order.
    #[must_use]
    pub fn with_record_parallelism(mut self, n: usize) -> Self {
        self.record_parallelism = n.max(1);
        self
    }

    /// The task the default stages serve: that of the pipeline user code's `model_fn`
    /// returned, else the model directory's; `None` when nothing names one.
    pub fn task(&self) -> Option<Task> {
        match self.user.as_ref().and_then(|u| u.predictor()) {
            Some(predictor) => Some(predictor.task()),
            None => self.task.clone(),
        }
    }

    /// Whether user code (a guest) is loaded.
    pub fn has_user_code(&self) -> bool {
        self.user.is_some()
    }

    /// The hooks user code implements.
    pub fn user_hooks(&self) -> HookSet {
        self.user.as_ref().map_or(HookSet::EMPTY, |u| u.hooks())
    }

    fn has(&self, hook: Hook) -> bool {
        self.user_hooks().contains(hook)
    }

    /// Chooses the default stages' media types: 415 for a body the default `input_fn` cannot
    /// decode, 406 for an `Accept` the default `output_fn` cannot produce; user hooks that
    /// replace a default stage decide for themselves.
    pub fn negotiate(
        &self,
        content_type: Option<&str>,
        accept: Option<&str>,
        default_accept: Encoding,
    ) -> Result<Plan, HookError> {
        if self.has(Hook::TransformFn) {
            return Ok(Plan {
                decoding: None,
                encoding: None,
            });
        }
        let encoding = if self.has(Hook::OutputFn) {
            None
        } else {
            Some(codec::choose_encoding(accept, default_accept)?)
        };
        let decoding = if self.has(Hook::InputFn) {
            None
        } else {
            Some(Decoding::from_content_type(content_type)?)
        };
        Ok(Plan { decoding, encoding })
    }

    /// Runs the chain for one request. Blocks. Each stage's time is added to the current
    /// inference scope's figures and to the stage histogram.
    pub fn invoke(&self, inv: &Invocation) -> Result<HookResponse, HookError> {
        let timings = Scope::current().timings.unwrap_or_default();
        let content_type = inv.content_type.as_deref().unwrap_or("application/json");
        let accept = accept_for_user_code(inv.accept.as_deref(), inv.plan.encoding);
        if let Some(user) = self.user.as_ref().filter(|_| self.has(Hook::TransformFn)) {
            return timings.time(Stage::TransformFn, || {
                user.transform_fn(&inv.ctx, &inv.body, content_type, &accept)
            });
        }
        // input_fn
        let (inputs, multi) = match (&self.user, inv.plan.decoding) {
            (Some(user), _) if self.has(Hook::InputFn) => (
                vec![timings.time(Stage::InputFn, || {
                    user.input_fn(&inv.ctx, &inv.body, content_type)
                })?],
                false,
            ),
            (_, Some(decoding)) => timings.time(Stage::Decode, || {
                defaults::input_fn(self.task().as_ref(), decoding, &inv.body)
            })?,
            (_, None) => unreachable_plan()?,
        };
        // predict_fn, once per record (JSON Lines and CSV bodies hold several)
        let predictions = timings.time(Stage::Predict, || match &self.user {
            Some(user) if self.has(Hook::PredictFn) => inputs
                .into_iter()
                .map(|data| user.predict_fn(&inv.ctx, data))
                .collect::<Result<Vec<_>, _>>(),
            _ if inputs.len() > 1 && self.record_parallelism > 1 => {
                self.predict_records_at_once(inputs)
            }
            _ => {
                let native = self.predictor()?;
                inputs
                    .into_iter()
                    .map(|data| defaults::predict_fn(native.as_ref(), data, Hook::InputFn))
                    .collect::<Result<Vec<_>, _>>()
            }
        })?;
        // output_fn
        match (&self.user, inv.plan.encoding) {
            (Some(user), _) if self.has(Hook::OutputFn) => timings.time(Stage::OutputFn, || {
                let prediction = if multi {
                    Payload::Json(serde_json::Value::Array(
                        predictions
                            .into_iter()
                            .map(defaults::payload_to_json)
                            .collect::<Result<_, _>>()?,
                    ))
                } else {
                    predictions
                        .into_iter()
                        .next()
                        .unwrap_or(Payload::Json(serde_json::Value::Null))
                };
                user.output_fn(&inv.ctx, prediction, &accept)
            }),
            (_, Some(encoding)) => timings.time(Stage::Encode, || {
                defaults::output_fn(predictions, encoding, multi)
            }),
            (_, None) => unreachable_plan(),
        }
    }
}

impl HookChain {
    /// Answers an OpenAI-compatible or TGI body (issue #12: chat, completions, generate;
    /// whole or streamed) with the native pipeline; refused with a 400 when user code is loaded
    /// (its hooks own the requests). Blocks: call it off the async runtime.
    pub fn complete(
        &self,
        api: crate::pipelines::chat::Api,
        body: serde_json::Value,
    ) -> Result<crate::pipelines::completion::Completed, HookError> {
        if self.user.is_some() {
            let message = match api {
                crate::pipelines::chat::Api::Chat => CHAT_WITH_USER_CODE,
                _ => COMPLETIONS_WITH_USER_CODE,
            };
            return Err(PipelineError::validation(message).into());
        }
        let job = crate::pipelines::chat::Job::from_value(api, body)?;
        Ok(self.predictor()?.complete(job)?)
    }

    /// Starts a streamed answer (`"stream": true`, issue #12) from a JSON body: the native
    /// pipeline's token stream, which never passes through `output_fn`. Refused with a 400 when
    /// user code is loaded: a guest's hooks see whole bodies and whole answers, never a stream.
    /// Blocks (tokenization and queueing): call it off the async runtime.
    pub fn stream(&self, body: serde_json::Value) -> Result<TokenStream, HookError> {
        if self.user.is_some() {
            return Err(PipelineError::validation(STREAM_WITH_USER_CODE).into());
        }
        let mut body = body;
        if let Some(map) = body.as_object_mut() {
            map.remove("stream");
        }
        Ok(self.predictor()?.stream(Envelope::from_value(body)?)?)
    }

    /// The native `predict_fn` over several records on up to `record_parallelism` threads,
    /// each in the caller's [`Scope`] (deadline, cancellation) and span. Each record is one
    /// request to the inference core; submitted together, they share forward passes. The
    /// answer is what running them in order gives: the predictions in record order, or the
    /// error of the first bad record (records after a failed one are not started).
    fn predict_records_at_once(&self, inputs: Vec<Payload>) -> Result<Vec<Payload>, HookError> {
        let native = self.predictor()?;
        let n = inputs.len();
        let width = self.record_parallelism.min(n);
        let scope = Scope::current();
        let span = tracing::Span::current();
        let slots: Vec<Mutex<Option<Payload>>> =
            inputs.into_iter().map(|p| Mutex::new(Some(p))).collect();
        let results: Vec<Mutex<Option<Result<Payload, HookError>>>> =
            (0..n).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let first_failed = AtomicUsize::new(usize::MAX);
        std::thread::scope(|threads| {
            for _ in 0..width {
                let (scope, span) = (scope.clone(), span.clone());
                let (slots, results, next, first_failed) = (&slots, &results, &next, &first_failed);
                let native = &native;
                threads.spawn(move || {
                    let _enter = span.enter();
                    scope.run(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n || i > first_failed.load(Ordering::Relaxed) {
                                break;
                            }
                            let Some(data) = lock(&slots[i]).take() else {
                                continue;
                            };
                            let result = defaults::predict_fn(native.as_ref(), data, Hook::InputFn);
                            if result.is_err() {
                                first_failed.fetch_min(i, Ordering::Relaxed);
                            }
                            *lock(&results[i]) = Some(result);
                        }
                    });
                });
            }
        });
        // Every record before the first failed one ran, so this is the sequential answer.
        let mut predictions = Vec::with_capacity(n);
        for result in results {
            match result.into_inner().unwrap_or_else(PoisonError::into_inner) {
                Some(Ok(p)) => predictions.push(p),
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        if predictions.len() == n {
            Ok(predictions)
        } else {
            Err(HookError::User {
                hook: Hook::PredictFn,
                kind: UserErrorKind::Internal,
                message: "a record of the request was not predicted".to_owned(),
                detail: None,
            })
        }
    }
}

/// Each slot is written once by one thread; a panic elsewhere cannot leave it half-written.
fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `negotiate` leaves a stage's media type unset only when user code owns that stage, so the
/// default stage never sees `None`; answer with an internal error rather than panic.
fn unreachable_plan<T>() -> Result<T, HookError> {
    Err(HookError::User {
        hook: Hook::InputFn,
        kind: UserErrorKind::Internal,
        message: "the hook chain was invoked without negotiated media types".to_owned(),
        detail: None,
    })
}

/// What user code sees as `accept`: the negotiated media type, or the header as sent.
fn accept_for_user_code(accept: Option<&str>, encoding: Option<Encoding>) -> String {
    match (encoding, accept) {
        (Some(e), _) => e.content_type().to_owned(),
        (None, Some(a)) if !a.trim().is_empty() => a.to_owned(),
        (None, _) => "application/json".to_owned(),
    }
}

#[cfg(test)]
mod tests;

//! The hook chain (contract §6): `transform_fn`, or `input_fn` → `predict_fn` → `output_fn`, each
//! stage user code when the guest implements it and the native default otherwise.
//!
//! The chain does not know wasm: user code is any [`UserCode`]; the native defaults live in
//! `defaults.rs` and predict with the task's [`Pipeline`]. The server calls [`HookChain::negotiate`] before reading the body (406/415
//! before any model work), then [`HookChain::invoke`] off the async runtime.

mod defaults;
mod types;

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{self, Decoding, Encoding};
use crate::metrics::Stage;
use crate::pipelines::{Pipeline, Task};

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

/// The handler of one model: native pipeline plus optional user code.
pub struct HookChain {
    native: Arc<dyn Pipeline>,
    user: Option<Arc<dyn UserCode>>,
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
        Ok(Self { native, user })
    }

    /// The task of the native pipeline.
    pub fn task(&self) -> Task {
        self.native.task()
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
        let timings = crate::infer::Scope::current().timings.unwrap_or_default();
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
                defaults::input_fn(&self.task(), decoding, &inv.body)
            })?,
            (_, None) => unreachable_plan()?,
        };
        // predict_fn, once per record (JSON Lines bodies hold several)
        let predictions = timings.time(Stage::Predict, || {
            let mut predictions = Vec::with_capacity(inputs.len());
            for data in inputs {
                let prediction = match &self.user {
                    Some(user) if self.has(Hook::PredictFn) => user.predict_fn(&inv.ctx, data)?,
                    _ => defaults::predict_fn(self.native.as_ref(), data, Hook::InputFn)?,
                };
                predictions.push(prediction);
            }
            Ok::<_, HookError>(predictions)
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

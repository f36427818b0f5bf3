//! Types shared by the hook chain and its implementations (native defaults, guests): hooks,
//! hook sets, the payload handed between stages, the request context and the hook response.

use std::fmt;
use std::sync::Arc;

use crate::pipelines::PipelineError;

/// Contract §6: the exact message when transform_fn is mixed with the other hooks.
pub const TRANSFORM_CONFLICT: &str = "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation";

/// A set of user hooks the toolkit's rules refuse (contract §6); the model then fails to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HookRuleError {
    /// transform_fn together with input_fn, predict_fn or output_fn.
    #[error("{}", TRANSFORM_CONFLICT)]
    TransformWithOthers,
}

/// One of the five SageMaker hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `model_fn(model_dir)`.
    ModelFn,
    /// `input_fn(body, content_type)`.
    InputFn,
    /// `predict_fn(data, model)`.
    PredictFn,
    /// `output_fn(prediction, accept)`.
    OutputFn,
    /// `transform_fn(model, body, content_type, accept)`.
    TransformFn,
}

impl Hook {
    /// All hooks in call order.
    pub const ALL: [Self; 5] = [
        Self::ModelFn,
        Self::InputFn,
        Self::PredictFn,
        Self::OutputFn,
        Self::TransformFn,
    ];

    /// The SageMaker name, e.g. `input_fn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelFn => "model_fn",
            Self::InputFn => "input_fn",
            Self::PredictFn => "predict_fn",
            Self::OutputFn => "output_fn",
            Self::TransformFn => "transform_fn",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Self::ModelFn => 1,
            Self::InputFn => 2,
            Self::PredictFn => 4,
            Self::OutputFn => 8,
            Self::TransformFn => 16,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of hooks, e.g. the ones a guest implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HookSet(u8);

impl HookSet {
    /// No hooks.
    pub const EMPTY: Self = Self(0);

    /// Adds a hook.
    #[must_use]
    pub const fn with(self, hook: Hook) -> Self {
        Self(self.0 | hook.bit())
    }

    /// Whether the set holds `hook`.
    pub const fn contains(self, hook: Hook) -> bool {
        self.0 & hook.bit() != 0
    }

    /// The hooks in the set, in call order.
    pub fn iter(self) -> impl Iterator<Item = Hook> {
        Hook::ALL.into_iter().filter(move |h| self.contains(*h))
    }

    /// Contract §6: transform_fn excludes input_fn, predict_fn and output_fn.
    pub fn check(self) -> Result<(), HookRuleError> {
        let mixed = self.contains(Hook::InputFn)
            || self.contains(Hook::PredictFn)
            || self.contains(Hook::OutputFn);
        if self.contains(Hook::TransformFn) && mixed {
            Err(HookRuleError::TransformWithOthers)
        } else {
            Ok(())
        }
    }
}

impl FromIterator<Hook> for HookSet {
    fn from_iter<I: IntoIterator<Item = Hook>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

impl fmt::Display for HookSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Hook::as_str).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

/// What one stage hands to the next: decoded JSON (what the toolkit's default `input_fn`
/// returns), or raw bytes a guest chose to produce.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON value.
    Json(serde_json::Value),
    /// Opaque bytes.
    Bytes(Vec<u8>),
}

/// The request as user code sees it.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The `x-request-id` of this request.
    pub request_id: String,
    /// Request headers (lower-case names), secrets excluded.
    pub headers: Vec<(String, String)>,
    /// `X-Amzn-SageMaker-Custom-Attributes`, when sent.
    pub custom_attributes: Option<String>,
}

/// The encoded answer of `output_fn` or `transform_fn`.
#[derive(Debug, Clone, PartialEq)]
pub struct HookResponse {
    /// Response body.
    pub body: Vec<u8>,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// `X-Amzn-SageMaker-Custom-Attributes` to echo, when user code set it.
    pub custom_attributes: Option<String>,
    /// Extra response headers user code set.
    pub headers: Vec<(String, String)>,
}

/// Why a user-code hook failed; decides the status (contract §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserErrorKind {
    /// The hook rejected the request (400).
    BadRequest,
    /// The hook does not take this `Content-Type` (415).
    UnsupportedMedia,
    /// The hook cannot produce this `Accept` (406).
    NotAcceptable,
    /// The hook reported an internal failure (500).
    Internal,
    /// The guest trapped (panic, bad memory access) (500).
    Trap,
    /// The hook ran past its time limit (500).
    Timeout,
    /// The guest ran out of its memory limit (500).
    OutOfMemory,
}

/// A failed hook chain.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// Decoding the body or encoding the answer failed (default input_fn / output_fn).
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The native pipeline failed (default predict_fn).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A stage produced bytes where the next, native, stage needs JSON.
    #[error(
        "`{hook}` returned bytes that are not JSON, but the next stage is the native default, which needs JSON"
    )]
    NotJson {
        /// The hook that produced the bytes.
        hook: Hook,
    },
    /// User code failed.
    #[error("`{hook}` failed: {message}")]
    User {
        /// The hook.
        hook: Hook,
        /// Why.
        kind: UserErrorKind,
        /// What the client is told.
        message: String,
        /// Extra detail for the log only (e.g. captured guest stderr).
        detail: Option<String>,
    },
}

/// User code: the hooks a guest implements. Absent hooks are never called; the chain runs the
/// native default instead. Calls block: run them off the async runtime.
pub trait UserCode: Send + Sync {
    /// The hooks implemented.
    fn hooks(&self) -> HookSet;
    /// `input_fn(body, content_type)`.
    fn input_fn(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        content_type: &str,
    ) -> Result<Payload, HookError>;
    /// `predict_fn(data, model)`.
    fn predict_fn(&self, ctx: &RequestContext, data: Payload) -> Result<Payload, HookError>;
    /// `output_fn(prediction, accept)`.
    fn output_fn(
        &self,
        ctx: &RequestContext,
        prediction: Payload,
        accept: &str,
    ) -> Result<HookResponse, HookError>;
    /// `transform_fn(model, body, content_type, accept)`.
    fn transform_fn(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        content_type: &str,
        accept: &str,
    ) -> Result<HookResponse, HookError>;
    /// The native pipeline user code's `model_fn` returned, which the default `predict_fn`
    /// calls instead of the model directory's (the toolkit's default calls `model(inputs)`).
    fn predictor(&self) -> Option<Arc<dyn crate::pipelines::Pipeline>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_with_input_is_refused_with_the_spec_message() {
        let set: HookSet = [Hook::TransformFn, Hook::InputFn].into_iter().collect();
        assert_eq!(set.check(), Err(HookRuleError::TransformWithOthers));
        assert_eq!(
            HookRuleError::TransformWithOthers.to_string(),
            TRANSFORM_CONFLICT
        );
        assert_eq!(
            TRANSFORM_CONFLICT,
            "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation"
        );
        let ok: HookSet = [Hook::TransformFn, Hook::ModelFn].into_iter().collect();
        assert!(ok.check().is_ok());
        assert_eq!(ok.to_string(), "model_fn, transform_fn");
    }
}

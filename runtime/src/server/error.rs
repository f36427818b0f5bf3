//! `ApiError`: the only place that picks a status and the error JSON (contract §7).
//!
//! `IntoResponse` does not log and does not write the body: it stores an [`ErrorReport`] in
//! the response extensions, and `middleware::observe` writes the JSON (with the request id)
//! and logs the error once, inside the request span.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::codec::CodecError;
use crate::handler::{HookError, UserErrorKind};
use crate::infer::InferError;
use crate::pipelines::PipelineError;
pub use crate::telemetry::error_chain;

/// Contract §7: the `type` clients parse for prediction errors.
pub const PREDICTION_ERROR_TYPE: &str = "InternalServerException";

/// What kind of failure; decides the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Bad input (400).
    Validation,
    /// A user-code hook failed on purpose, e.g. it rejected the input (400).
    UserCode,
    /// No acceptable response encoding (406).
    NotAcceptable,
    /// Unsupported request Content-Type (415).
    UnsupportedMedia,
    /// Body over the limit (413).
    PayloadTooLarge,
    /// Queue full (429).
    Overloaded,
    /// Model loading or failed (503).
    ModelNotReady,
    /// Over the time limit (504).
    Timeout,
    /// Out of memory (507).
    OutOfMemory,
    /// A guest trapped, ran out of time or memory (500).
    GuestTrap,
    /// Anything else on our side (500).
    Internal,
    /// Unknown route (404).
    NotFound,
    /// Known route, wrong method (405).
    MethodNotAllowed,
}

impl ErrorType {
    /// The status for this kind.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Validation | Self::UserCode => StatusCode::BAD_REQUEST,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::ModelNotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::OutOfMemory => StatusCode::INSUFFICIENT_STORAGE,
            Self::GuestTrap | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The `error_type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validation => "validation",
            Self::UserCode => "user_code",
            Self::NotAcceptable => "not_acceptable",
            Self::UnsupportedMedia => "unsupported_media",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Overloaded => "overloaded",
            Self::ModelNotReady => "model_not_ready",
            Self::Timeout => "timeout",
            Self::OutOfMemory => "out_of_memory",
            Self::GuestTrap => "guest_trap",
            Self::Internal => "internal",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The `type` field: the toolkit's name for 400 and 500, a descriptive one otherwise.
    fn type_name(self) -> &'static str {
        match self {
            Self::NotFound => "ResourceNotFoundException",
            Self::MethodNotAllowed => "MethodNotAllowedException",
            Self::NotAcceptable => "NotAcceptableException",
            Self::UnsupportedMedia => "UnsupportedMediaTypeException",
            Self::PayloadTooLarge => "RequestEntityTooLargeException",
            Self::Overloaded | Self::ModelNotReady => "ServiceUnavailableException",
            Self::Timeout => "ModelTimeoutException",
            Self::OutOfMemory => "InsufficientStorageException",
            _ => PREDICTION_ERROR_TYPE,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The kind.
    pub error_type: ErrorType,
    /// What the client reads: for 4xx, what to fix; for 5xx, short.
    pub message: String,
    /// The full cause chain, for the log only.
    pub cause: Option<String>,
}

/// Stored in the response extensions for the middleware to write and log.
#[derive(Debug, Clone)]
pub struct ErrorReport(pub ApiError);

impl ApiError {
    /// An error with a message.
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        Self {
            error_type,
            message: message.into(),
            cause: None,
        }
    }

    /// Adds the cause chain of `err` for the log.
    #[must_use]
    pub fn with_cause(mut self, err: &(dyn std::error::Error + 'static)) -> Self {
        self.cause = Some(error_chain(err));
        self
    }

    /// The JSON body (contract §7 shape).
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        json!({
            "code": self.error_type.status().as_u16(),
            "type": self.error_type.type_name(),
            "message": self.message,
            "error_type": self.error_type.as_str(),
            "request_id": request_id,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.error_type.status().into_response();
        response.extensions_mut().insert(ErrorReport(self));
        response
    }
}

impl From<CodecError> for ApiError {
    fn from(err: CodecError) -> Self {
        let error_type = match &err {
            CodecError::UnsupportedMediaType { .. } => ErrorType::UnsupportedMedia,
            CodecError::NotAcceptable { .. } | CodecError::NotCsv { .. } => {
                ErrorType::NotAcceptable
            }
            CodecError::NonFinite => ErrorType::Internal,
            _ => ErrorType::Validation,
        };
        let message = error_chain(&err);
        Self::new(error_type, message).with_cause(&err)
    }
}

impl From<PipelineError> for ApiError {
    fn from(err: PipelineError) -> Self {
        let error_type = match &err {
            PipelineError::Validation { .. }
            | PipelineError::UnknownParameters { .. }
            | PipelineError::Tokenizer { .. } => ErrorType::Validation,
            PipelineError::Infer(infer) => return Self::from(infer.clone()),
            PipelineError::Output(_) | PipelineError::NonFinite => ErrorType::Internal,
        };
        Self::new(error_type, err.to_string()).with_cause(&err)
    }
}

impl From<InferError> for ApiError {
    fn from(err: InferError) -> Self {
        let error_type = match &err {
            InferError::Overloaded { .. } => ErrorType::Overloaded,
            // The caller left or its time limit passed: only the log reads this answer.
            InferError::Cancelled | InferError::DeadlineExceeded => ErrorType::Timeout,
            InferError::WorkerStopped { .. } => ErrorType::ModelNotReady,
            InferError::WorkerPanicked { .. }
            | InferError::Model(_)
            | InferError::BadRequest { .. } => ErrorType::Internal,
        };
        Self::new(error_type, err.to_string()).with_cause(&err)
    }
}

impl From<HookError> for ApiError {
    fn from(err: HookError) -> Self {
        match err {
            HookError::Codec(e) => e.into(),
            HookError::Pipeline(e) => e.into(),
            HookError::NotJson { .. } => {
                let message = err.to_string();
                Self::new(ErrorType::UserCode, message).with_cause(&err)
            }
            HookError::User {
                kind, ref detail, ..
            } => {
                let error_type = match kind {
                    UserErrorKind::BadRequest => ErrorType::UserCode,
                    UserErrorKind::UnsupportedMedia => ErrorType::UnsupportedMedia,
                    UserErrorKind::NotAcceptable => ErrorType::NotAcceptable,
                    UserErrorKind::Internal => ErrorType::Internal,
                    UserErrorKind::Trap | UserErrorKind::Timeout | UserErrorKind::OutOfMemory => {
                        ErrorType::GuestTrap
                    }
                };
                let mut api = Self::new(error_type, err.to_string());
                api.cause = Some(match detail {
                    Some(detail) => format!("{err}; guest output: {detail}"),
                    None => err.to_string(),
                });
                api
            }
        }
    }
}

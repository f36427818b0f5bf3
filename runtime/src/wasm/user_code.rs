//! `GuestProgram` as the hook chain's [`UserCode`]: the chain calls the guest for the hooks it
//! implements, and each `GuestError` becomes a `HookError::User` whose kind picks the status.

use crate::handler::{
    HookError, HookResponse, HookSet, Payload, RequestContext, UserCode, UserErrorKind,
};

use super::error::panic_message;
use super::{GuestError, GuestProgram};

impl UserCode for GuestProgram {
    fn hooks(&self) -> HookSet {
        Self::hooks(self)
    }

    fn input_fn(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        content_type: &str,
    ) -> Result<Payload, HookError> {
        Self::input_fn(self, ctx, body, content_type).map_err(hook_error)
    }

    fn predict_fn(&self, ctx: &RequestContext, data: Payload) -> Result<Payload, HookError> {
        Self::predict_fn(self, ctx, data).map_err(hook_error)
    }

    fn output_fn(
        &self,
        ctx: &RequestContext,
        prediction: Payload,
        accept: &str,
    ) -> Result<HookResponse, HookError> {
        Self::output_fn(self, ctx, prediction, accept).map_err(hook_error)
    }

    fn transform_fn(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        content_type: &str,
        accept: &str,
    ) -> Result<HookResponse, HookError> {
        Self::transform_fn(self, ctx, body, content_type, accept).map_err(hook_error)
    }

    fn predictor(&self) -> Option<std::sync::Arc<dyn crate::pipelines::Pipeline>> {
        Self::predictor(self)
    }
}

/// The client sees what the guest said for its own errors, and a short cause (with the panic
/// message, which the model's author needs) for faults; the full stderr goes to the log.
fn hook_error(error: GuestError) -> HookError {
    let hook = error.hook().unwrap_or(crate::handler::Hook::InputFn);
    let (kind, message, detail) = match error {
        GuestError::BadRequest { message, .. } => (UserErrorKind::BadRequest, message, None),
        GuestError::UnsupportedMedia { message, .. } => {
            (UserErrorKind::UnsupportedMedia, message, None)
        }
        GuestError::NotAcceptable { message, .. } => (UserErrorKind::NotAcceptable, message, None),
        GuestError::Internal { message, .. } => (UserErrorKind::Internal, message, None),
        GuestError::Trap {
            ref detail,
            ref stderr,
            ..
        } => {
            let message = match panic_message(stderr) {
                Some(panic) => format!("user code trapped: {panic}"),
                None => format!("user code trapped: {detail}"),
            };
            (
                UserErrorKind::Trap,
                message,
                Some(format!("{detail}; stderr: {}", stderr.trim())),
            )
        }
        GuestError::Timeout { limit, .. } => (
            UserErrorKind::Timeout,
            format!(
                "user code did not finish within {} ms and was interrupted",
                limit.as_millis()
            ),
            None,
        ),
        GuestError::OutOfMemory { limit_bytes, .. } => (
            UserErrorKind::OutOfMemory,
            format!(
                "user code exceeded its memory limit of {} MiB",
                limit_bytes / (1024 * 1024)
            ),
            None,
        ),
        other => (UserErrorKind::Internal, other.to_string(), None),
    };
    HookError::User {
        hook,
        kind,
        message,
        detail,
    }
}

//! The imports guests call: `host-log` (into `tracing`, tagged with the request id and hook)
//! and `pipeline` (the native pipeline, blocking). Both run on the guest's blocking thread.

use crate::pipelines::PipelineError;

use super::bindings::sagebrush::handler::{host_log, pipeline, types};
use super::sandbox::HostState;

/// Log target of guest output, so operators can filter it (`RUST_LOG=sagebrush::guest=debug`).
pub(crate) const GUEST_LOG_TARGET: &str = "sagebrush::guest";

impl types::Host for HostState {}

impl host_log::Host for HostState {
    fn log(&mut self, level: host_log::Level, message: String) {
        let request_id = self.request_id.as_str();
        let hook = self.hook.map_or("load", |h| h.as_str());
        match level {
            host_log::Level::Trace => {
                tracing::trace!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            host_log::Level::Debug => {
                tracing::debug!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            host_log::Level::Info => {
                tracing::info!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            host_log::Level::Warn => {
                tracing::warn!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            host_log::Level::Error => {
                tracing::error!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
        }
    }
}

impl pipeline::Host for HostState {
    fn task(&mut self) -> String {
        self.native.task().to_string()
    }

    fn predict(&mut self, request_json: String) -> Result<String, types::Error> {
        let request: serde_json::Value = serde_json::from_str(&request_json).map_err(|e| {
            types::Error::BadRequest(format!(
                "the request given to `pipeline.predict` is not JSON: {e}"
            ))
        })?;
        let answer = self.native.predict(request).map_err(|err| match err {
            PipelineError::Validation { .. } | PipelineError::UnknownParameters { .. } => {
                types::Error::BadRequest(err.to_string())
            }
            other => {
                tracing::warn!(request_id = %self.request_id, error = %other, "native pipeline failed for a guest");
                types::Error::Internal(other.to_string())
            }
        })?;
        serde_json::to_string(&answer).map_err(|e| {
            types::Error::Internal(format!("cannot encode the pipeline's answer: {e}"))
        })
    }
}

/// Logs what a call wrote to stdout and stderr, one event per stream, with the request id.
pub(crate) fn log_output(state: &HostState, stream: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    let hook = state.hook.map_or("load", |h| h.as_str());
    tracing::info!(target: GUEST_LOG_TARGET, request_id = %state.request_id, hook, stream, "{text}");
}

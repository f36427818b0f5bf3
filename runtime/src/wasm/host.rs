//! The imports guests call, for both WIT versions: `host-log` (into `tracing`, tagged with the
//! request id and hook), `pipeline` (the model directory's native pipeline; in 0.2.0 also
//! pipelines a guest loads by task and subfolder, as resources) and, in 0.2.0, `tokenizer`.
//! All run on the guest's blocking thread. Time spent loading a model or a tokenizer is given
//! back to the call's time budget (`HostState::credit`): loading is host work.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::Resource;

use crate::pipelines::{Pipeline, PipelineError};

use super::bindings::{WitError, v1, v2};
use super::sandbox::HostState;
use super::{GuestHost, HostError};

/// Log target of guest output, so operators can filter it (`RUST_LOG=sagebrush::guest=debug`).
pub(crate) const GUEST_LOG_TARGET: &str = "sagebrush::guest";

/// A native pipeline a guest holds (0.2.0 `pipeline` resource): shared with every other
/// handle to the same load.
pub struct GuestPipeline(Arc<dyn Pipeline>);

impl GuestPipeline {
    /// The pipeline behind the handle.
    pub(crate) fn pipeline(&self) -> &Arc<dyn Pipeline> {
        &self.0
    }
}

/// A tokenizer a guest holds (0.2.0 `tokenizer` resource).
pub struct GuestTokenizer(Arc<tokenizers::Tokenizer>);

impl HostState {
    fn log(&self, level: v1::sagebrush::handler::host_log::Level, message: &str) {
        use v1::sagebrush::handler::host_log::Level;
        let request_id = self.request_id.as_str();
        let hook = self.hook.map_or("load", |h| h.as_str());
        match level {
            Level::Trace => {
                tracing::trace!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            Level::Info => {
                tracing::info!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
            Level::Error => {
                tracing::error!(target: GUEST_LOG_TARGET, request_id, hook, "{message}")
            }
        }
    }

    /// Runs `f` (host work that may load a model) and gives its time back to the call.
    fn loading<T>(&mut self, f: impl FnOnce(&dyn GuestHost) -> T) -> T {
        let started = Instant::now();
        let out = f(self.host.as_ref());
        self.credit(started.elapsed());
        out
    }

    fn default_task(&self) -> String {
        self.host
            .default_task()
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    fn default_predict(&mut self, request_json: &str) -> Result<String, WitError> {
        let native = self
            .loading(|host| host.default_pipeline())
            .map_err(host_error)?;
        predict(native.as_ref(), request_json, &self.request_id)
    }
}

/// A host refusal as the guest sees it.
fn host_error(err: HostError) -> WitError {
    match err {
        HostError::Refused(m) => WitError::BadRequest(m),
        HostError::Failed(m) => WitError::Internal(m),
    }
}

/// One request through `native`, JSON text in and out.
fn predict(
    native: &dyn Pipeline,
    request_json: &str,
    request_id: &str,
) -> Result<String, WitError> {
    let request: serde_json::Value = serde_json::from_str(request_json).map_err(|e| {
        WitError::BadRequest(format!(
            "the request given to `pipeline.predict` is not JSON: {e}"
        ))
    })?;
    let answer = native.predict(request).map_err(|err| match err {
        PipelineError::Validation { .. } | PipelineError::UnknownParameters { .. } => {
            WitError::BadRequest(err.to_string())
        }
        other => {
            tracing::warn!(request_id, error = %other, "native pipeline failed for a guest");
            WitError::Internal(other.to_string())
        }
    })?;
    serde_json::to_string(&answer)
        .map_err(|e| WitError::Internal(format!("cannot encode the pipeline's answer: {e}")))
}

// ---- 0.1.0 ----

impl v1::sagebrush::handler::types::Host for HostState {}

impl v1::sagebrush::handler::host_log::Host for HostState {
    fn log(&mut self, level: v1::sagebrush::handler::host_log::Level, message: String) {
        Self::log(self, level, &message);
    }
}

impl v1::sagebrush::handler::pipeline::Host for HostState {
    fn task(&mut self) -> String {
        self.default_task()
    }

    fn predict(&mut self, request_json: String) -> Result<String, WitError> {
        self.default_predict(&request_json)
    }
}

// ---- 0.2.0 ----

use v2::sagebrush::handler::{
    host_log as log2, pipeline as pipeline2, tokenizer as tokenizer2, types as types2,
};

impl types2::Host for HostState {}

impl log2::Host for HostState {
    fn log(&mut self, level: log2::Level, message: String) {
        use v1::sagebrush::handler::host_log::Level;
        let level = match level {
            log2::Level::Trace => Level::Trace,
            log2::Level::Debug => Level::Debug,
            log2::Level::Info => Level::Info,
            log2::Level::Warn => Level::Warn,
            log2::Level::Error => Level::Error,
        };
        Self::log(self, level, &message);
    }
}

impl pipeline2::Host for HostState {
    fn task(&mut self) -> String {
        self.default_task()
    }

    fn predict(&mut self, request_json: String) -> Result<String, types2::Error> {
        self.default_predict(&request_json).map_err(Into::into)
    }
}

impl pipeline2::HostPipeline for HostState {
    fn load(
        &mut self,
        task: String,
        subfolder: Option<String>,
        options_json: Option<String>,
    ) -> Result<Resource<GuestPipeline>, types2::Error> {
        let pipeline = self
            .loading(|host| {
                host.load_pipeline(&task, subfolder.as_deref(), options_json.as_deref())
            })
            .map_err(|e| types2::Error::from(host_error(e)))?;
        self.table
            .push(GuestPipeline(pipeline))
            .map_err(|e| types2::Error::Internal(format!("cannot hand the pipeline over: {e}")))
    }

    fn task(&mut self, handle: Resource<GuestPipeline>) -> String {
        self.table
            .get(&handle)
            .map(|p| p.0.task().to_string())
            .unwrap_or_default()
    }

    fn predict(
        &mut self,
        handle: Resource<GuestPipeline>,
        request_json: String,
    ) -> Result<String, types2::Error> {
        let pipeline = self
            .table
            .get(&handle)
            .map(|p| Arc::clone(&p.0))
            .map_err(|e| types2::Error::Internal(format!("bad pipeline handle: {e}")))?;
        predict(pipeline.as_ref(), &request_json, &self.request_id).map_err(Into::into)
    }

    fn clone(
        &mut self,
        handle: Resource<GuestPipeline>,
    ) -> Result<Resource<GuestPipeline>, types2::Error> {
        let pipeline = self
            .table
            .get(&handle)
            .map(|p| Arc::clone(&p.0))
            .map_err(|e| types2::Error::Internal(format!("bad pipeline handle: {e}")))?;
        self.table
            .push(GuestPipeline(pipeline))
            .map_err(|e| types2::Error::Internal(format!("cannot hand the pipeline over: {e}")))
    }

    fn drop(&mut self, handle: Resource<GuestPipeline>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl tokenizer2::Host for HostState {}

impl tokenizer2::HostTokenizer for HostState {
    fn load(
        &mut self,
        subfolder: Option<String>,
    ) -> Result<Resource<GuestTokenizer>, types2::Error> {
        let tokenizer = self
            .loading(|host| host.load_tokenizer(subfolder.as_deref()))
            .map_err(|e| types2::Error::from(host_error(e)))?;
        self.table
            .push(GuestTokenizer(tokenizer))
            .map_err(|e| types2::Error::Internal(format!("cannot hand the tokenizer over: {e}")))
    }

    fn tokenize(
        &mut self,
        handle: Resource<GuestTokenizer>,
        text: String,
        add_special_tokens: bool,
    ) -> Result<tokenizer2::Encoding, types2::Error> {
        let tokenizer = self.tokenizer(&handle)?;
        let encoding = tokenizer
            .encode(text.as_str(), add_special_tokens)
            .map_err(|e| types2::Error::BadRequest(format!("tokenization failed: {e}")))?;
        let offset = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(tokenizer2::Encoding {
            ids: encoding.get_ids().to_vec(),
            offsets: encoding
                .get_offsets()
                .iter()
                .map(|&(s, e)| (offset(s), offset(e)))
                .collect(),
            tokens: encoding.get_tokens().to_vec(),
        })
    }

    fn decode(
        &mut self,
        handle: Resource<GuestTokenizer>,
        ids: Vec<u32>,
        skip_special_tokens: bool,
    ) -> Result<String, types2::Error> {
        let tokenizer = self.tokenizer(&handle)?;
        tokenizer
            .decode(&ids, skip_special_tokens)
            .map_err(|e| types2::Error::BadRequest(format!("cannot decode the ids: {e}")))
    }

    fn drop(&mut self, handle: Resource<GuestTokenizer>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl HostState {
    fn tokenizer(
        &self,
        handle: &Resource<GuestTokenizer>,
    ) -> Result<Arc<tokenizers::Tokenizer>, types2::Error> {
        self.table
            .get(handle)
            .map(|t| Arc::clone(&t.0))
            .map_err(|e| types2::Error::Internal(format!("bad tokenizer handle: {e}")))
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

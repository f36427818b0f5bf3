//! User code as WebAssembly (contract §6): `code/inference.wasm` is a component of the
//! `sagebrush:handler@0.2.0` world (`wit/sagebrush.wit`) or of the frozen 0.1.0 one
//! (`wit/0.1.0/`). [`GuestProgram`] compiles it (with an on-disk cache), checks which hooks it
//! implements, runs `model_fn` in each pooled instance, and calls the hooks with a memory cap
//! per instance and a time limit per call. Guests reach the model's native pipelines through a
//! [`GuestHost`] (issue #16).
//!
//! Owns: the engine (`engine.rs`), the generated bindings (`bindings.rs`), the imports guests
//! call (`host.rs`), the sandbox (`sandbox.rs`) and the instance pool (`pool.rs`). Does not own:
//! the choice between guest and native hooks (`handler`), HTTP statuses (`server/error.rs`).
//! Nothing outside this module names a wasmtime type. All calls block; run them in
//! `spawn_blocking`.

mod bindings;
mod engine;
mod error;
mod host;
#[cfg(test)]
mod measure;
mod pool;
mod sandbox;
#[cfg(test)]
mod tests;
mod user_code;
mod versions;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};

use crate::config::WasmLimits;
use crate::handler::{Hook, HookResponse, HookSet, Payload, RequestContext};
use crate::pipelines::Pipeline;
use crate::task::Task;

use bindings::{WitContext, WitHookSet, WitPayload, WitResponse, v1, v2};
pub use error::{BoxError, GuestError};
pub use host::{GuestPipeline, GuestTokenizer};
use pool::{Bindings, Factory, LOAD_REQUEST_ID, Pool, Pre};
use sandbox::HostState;

/// What the host offers guests: the model directory's own pipeline, and the pipelines and
/// tokenizers a guest loads by task and subfolder. Calls block (they may load a model).
pub trait GuestHost: Send + Sync {
    /// The task of the model directory's pipeline, when known.
    fn default_task(&self) -> Option<Task>;
    /// The model directory's pipeline (built on the first call).
    fn default_pipeline(&self) -> std::result::Result<Arc<dyn Pipeline>, HostError>;
    /// A pipeline for `task` over the model directory or `subfolder` of it.
    fn load_pipeline(
        &self,
        task: &str,
        subfolder: Option<&str>,
        options_json: Option<&str>,
    ) -> std::result::Result<Arc<dyn Pipeline>, HostError>;
    /// The tokenizer of the model directory or `subfolder` of it.
    fn load_tokenizer(
        &self,
        subfolder: Option<&str>,
    ) -> std::result::Result<Arc<tokenizers::Tokenizer>, HostError>;
}

/// Why the host refused a guest's request for a pipeline or tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// The guest asked for something wrong (unknown task, bad subfolder, no model there):
    /// `bad-request` with this message.
    Refused(String),
    /// The host failed: `internal`.
    Failed(String),
}

/// A [`GuestHost`] with one ready pipeline and nothing to load (tests, tools).
pub struct FixedPipeline(pub Arc<dyn Pipeline>);

impl GuestHost for FixedPipeline {
    fn default_task(&self) -> Option<Task> {
        Some(self.0.task())
    }

    fn default_pipeline(&self) -> std::result::Result<Arc<dyn Pipeline>, HostError> {
        Ok(Arc::clone(&self.0))
    }

    fn load_pipeline(
        &self,
        task: &str,
        _subfolder: Option<&str>,
        _options_json: Option<&str>,
    ) -> std::result::Result<Arc<dyn Pipeline>, HostError> {
        Err(HostError::Refused(format!(
            "no pipeline can be loaded here (asked for {task})"
        )))
    }

    fn load_tokenizer(
        &self,
        _subfolder: Option<&str>,
    ) -> std::result::Result<Arc<tokenizers::Tokenizer>, HostError> {
        Err(HostError::Refused(
            "no tokenizer can be loaded here".to_owned(),
        ))
    }
}

/// Shorthand for guest results.
pub type Result<T, E = GuestError> = std::result::Result<T, E>;

/// A loaded guest component: its compiled code, its hooks, and a pool of warm instances.
pub struct GuestProgram {
    hooks: HookSet,
    compile: CompileInfo,
    pool: Pool,
    predictor: Option<Arc<dyn Pipeline>>,
    version: &'static str,
}

/// How the guest's code was obtained at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileInfo {
    /// sha256 of the `.wasm` file, lower-case hex.
    pub sha256: String,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time spent compiling or loading from the cache.
    pub duration: Duration,
}

impl GuestProgram {
    /// Compiles `wasm_path` (through the compile cache in `limits.cache_dir`), instantiates it,
    /// asks `implemented()`, logs the hooks found, refuses `transform_fn` mixed with
    /// `input_fn`/`predict_fn`/`output_fn` ([`GuestError::TransformConflict`]), then fills the
    /// pool of `limits.instances` instances, running `model_fn("/opt/ml/model")` in each when
    /// the guest has it. `model_dir` is what the guest sees at `/opt/ml/model`, read-only.
    pub fn load(
        wasm_path: &Path,
        model_dir: &Path,
        limits: &WasmLimits,
        host: Arc<dyn GuestHost>,
    ) -> Result<Self> {
        let wasm = std::fs::read(wasm_path).map_err(|source| GuestError::Read {
            path: wasm_path.to_path_buf(),
            source,
        })?;
        let sha256 = hex(&Sha256::digest(&wasm));
        let engine::GuestEngine { engine, cache } =
            engine::build(limits).map_err(|e| GuestError::Engine {
                source: error::boxed(e),
            })?;

        let started = Instant::now();
        let hits_before = cache.as_ref().map_or(0, wasmtime::Cache::cache_hits);
        let component = Component::new(&engine, &wasm).map_err(|e| GuestError::Compile {
            path: wasm_path.to_path_buf(),
            source: error::boxed(e),
        })?;
        let compile = CompileInfo {
            sha256,
            from_cache: cache.as_ref().is_some_and(|c| c.cache_hits() > hits_before),
            duration: started.elapsed(),
        };
        tracing::info!(
            wasm = %wasm_path.display(),
            sha256 = %compile.sha256,
            bytes = wasm.len(),
            compile_ms = compile.duration.as_secs_f64() * 1e3,
            from_cache = compile.from_cache,
            "guest component compiled"
        );

        let pre = link(&engine, &component)?;
        let version = pre.version();
        tracing::info!(wit = %version, "guest component linked (sagebrush:handler@{version})");
        let mut factory = Factory {
            pre,
            model_dir: model_dir.to_path_buf(),
            memory_bytes: limits.memory_bytes,
            call_timeout: limits.call_timeout,
            deadline_ticks: engine::deadline_ticks(limits.call_timeout),
            host,
            model_fn: false,
        };

        // The first instance answers `implemented()` before anything else runs.
        let mut first = factory.create()?;
        let hooks = factory
            .call(&mut first, Hook::ModelFn, LOAD_REQUEST_ID, |i| {
                match &i.handler {
                    Bindings::V1(h) => h.sagebrush_handler_hooks().call_implemented(&mut i.store),
                    Bindings::V2(h) => h
                        .sagebrush_handler_hooks()
                        .call_implemented(&mut i.store)
                        .map(WitHookSet::from),
                }
                .map(Ok)
            })
            .map(hook_set)
            .map_err(GuestError::from)?;
        tracing::info!(hooks = %hooks, "user code hooks found; native defaults serve the others");
        hooks.check().map_err(|_| GuestError::TransformConflict)?;
        factory.model_fn = hooks.contains(Hook::ModelFn);
        if factory.model_fn {
            factory.model_fn(&mut first)?;
            let model = first.model;
            let name = factory
                .call(&mut first, Hook::ModelFn, LOAD_REQUEST_ID, |i| {
                    let Some(model) = model else {
                        return Ok(Ok(String::new()));
                    };
                    match &i.handler {
                        Bindings::V1(h) => h
                            .sagebrush_handler_hooks()
                            .model()
                            .call_name(&mut i.store, model),
                        Bindings::V2(h) => h
                            .sagebrush_handler_hooks()
                            .model()
                            .call_name(&mut i.store, model),
                    }
                    .map(Ok)
                })
                .map_err(GuestError::from)?;
            tracing::info!(model = %name, predictor = first.predictor.as_ref().map(|p| p.task().to_string()), "user code model_fn loaded its model");
        }
        let predictor = first.predictor.clone();
        if hooks.contains(Hook::ModelFn)
            && !hooks.contains(Hook::PredictFn)
            && !hooks.contains(Hook::TransformFn)
            && predictor.is_none()
        {
            tracing::warn!(
                "user code has model_fn but neither predict_fn nor transform_fn, and its model_fn handed over no pipeline: its model is never used, the native pipeline predicts"
            );
        }

        let pool = Pool::new(factory, limits.instances, vec![first]);
        pool.fill()?;
        Ok(Self {
            hooks,
            compile,
            pool,
            predictor,
            version,
        })
    }

    /// The native pipeline the guest's `model_fn` handed over as the default predictor
    /// (0.2.0 `loaded.predictor`), from the first instance: loads are shared, so every
    /// instance's is the same pipeline.
    pub fn predictor(&self) -> Option<Arc<dyn Pipeline>> {
        self.predictor.clone()
    }

    /// The WIT version the component was built against (`0.1.0` or `0.2.0`).
    pub fn wit_version(&self) -> &'static str {
        self.version
    }

    /// The hooks the guest implements.
    pub fn hooks(&self) -> HookSet {
        self.hooks
    }

    /// How the code was compiled at load (hash, cache hit, time).
    pub fn compile_info(&self) -> &CompileInfo {
        &self.compile
    }

    /// `input_fn(body, content_type)`: the guest decodes the request body.
    pub fn input_fn(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        content_type: &str,
    ) -> Result<Payload> {
        let wit_ctx = context(ctx);
        let payload = self
            .pool
            .call(Hook::InputFn, &ctx.request_id, |i| match &i.handler {
                Bindings::V1(h) => h.sagebrush_handler_hooks().call_input_fn(
                    &mut i.store,
                    body,
                    content_type,
                    &wit_ctx,
                ),
                Bindings::V2(h) => h
                    .sagebrush_handler_hooks()
                    .call_input_fn(&mut i.store, body, content_type, &(&wit_ctx).into())
                    .map(|r| r.map(Into::into).map_err(Into::into)),
            })?;
        payload_from_wit(Hook::InputFn, payload)
    }

    /// `predict_fn(data, model)`: the guest predicts, with its own model (from `model_fn`) or
    /// none.
    pub fn predict_fn(&self, ctx: &RequestContext, data: Payload) -> Result<Payload> {
        let wit_ctx = context(ctx);
        let data = payload_to_wit(data);
        let payload = self.pool.call(Hook::PredictFn, &ctx.request_id, |i| {
            let model = i.model;
            match &i.handler {
                Bindings::V1(h) => h.sagebrush_handler_hooks().call_predict_fn(
                    &mut i.store,
                    &data,
                    model,
                    &wit_ctx,
                ),
                Bindings::V2(h) => h
                    .sagebrush_handler_hooks()
                    .call_predict_fn(&mut i.store, &data.into(), model, &(&wit_ctx).into())
                    .map(|r| r.map(Into::into).map_err(Into::into)),
            }
        })?;
        payload_from_wit(Hook::PredictFn, payload)
    }

    /// `output_fn(prediction, accept)`: the guest encodes the prediction.
    pub fn output_fn(
        &self,
        ctx: &RequestContext,
        prediction: Payload,
        accept: &str,
    ) -> Result<HookResponse> {
        let wit_ctx = context(ctx);
        let prediction = payload_to_wit(prediction);
        let response = self
            .pool
            .call(Hook::OutputFn, &ctx.request_id, |i| match &i.handler {
                Bindings::V1(h) => h.sagebrush_handler_hooks().call_output_fn(
                    &mut i.store,
                    &prediction,
                    accept,
                    &wit_ctx,
                ),
                Bindings::V2(h) => h
                    .sagebrush_handler_hooks()
                    .call_output_fn(&mut i.store, &prediction.into(), accept, &(&wit_ctx).into())
                    .map(|r| r.map(Into::into).map_err(Into::into)),
            })?;
        Ok(response_from_wit(response))
    }

    /// `transform_fn(model, body, content_type, accept)`: the guest answers the whole request.
    pub fn transform_fn(
        &self,
        ctx: &RequestContext,
        body: &[u8],
        content_type: &str,
        accept: &str,
    ) -> Result<HookResponse> {
        let wit_ctx = context(ctx);
        let response = self.pool.call(Hook::TransformFn, &ctx.request_id, |i| {
            let model = i.model;
            match &i.handler {
                Bindings::V1(h) => h.sagebrush_handler_hooks().call_transform_fn(
                    &mut i.store,
                    model,
                    body,
                    content_type,
                    accept,
                    &wit_ctx,
                ),
                Bindings::V2(h) => h
                    .sagebrush_handler_hooks()
                    .call_transform_fn(
                        &mut i.store,
                        model,
                        body,
                        content_type,
                        accept,
                        &(&wit_ctx).into(),
                    )
                    .map(|r| r.map(Into::into).map_err(Into::into)),
            }
        })?;
        Ok(response_from_wit(response))
    }
}

impl std::fmt::Debug for GuestProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestProgram")
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// One linker for both worlds: WASI p2 (sync) plus the `host-log`, `pipeline` and (0.2.0)
/// `tokenizer` imports of each version. The component's exports pick the version: 0.2.0's
/// `hooks` first, then 0.1.0's.
fn link(engine: &wasmtime::Engine, component: &Component) -> Result<Pre> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
        .and_then(|()| {
            v1::Handler::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
        })
        .and_then(|()| {
            v2::Handler::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
        })
        .map_err(|e| GuestError::Engine {
            source: error::boxed(e),
        })?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| GuestError::Link {
            source: error::boxed(e),
        })?;
    match v2::HandlerPre::new(pre.clone()) {
        Ok(pre) => Ok(Pre::V2(pre)),
        Err(v2_err) => v1::HandlerPre::new(pre).map(Pre::V1).map_err(|v1_err| {
            GuestError::Link {
                source: error::boxed(v2_err.context(format!(
                    "the component exports neither sagebrush:handler/hooks@0.2.0 nor @0.1.0 (0.1.0: {v1_err})"
                ))),
            }
        }),
    }
}

fn hook_set(set: WitHookSet) -> HookSet {
    [
        (WitHookSet::MODEL_FN, Hook::ModelFn),
        (WitHookSet::INPUT_FN, Hook::InputFn),
        (WitHookSet::PREDICT_FN, Hook::PredictFn),
        (WitHookSet::OUTPUT_FN, Hook::OutputFn),
        (WitHookSet::TRANSFORM_FN, Hook::TransformFn),
    ]
    .into_iter()
    .filter(|(flag, _)| set.contains(*flag))
    .map(|(_, hook)| hook)
    .collect()
}

fn context(ctx: &RequestContext) -> WitContext {
    WitContext {
        request_id: ctx.request_id.clone(),
        headers: ctx.headers.clone(),
        custom_attributes: ctx.custom_attributes.clone(),
    }
}

fn payload_to_wit(payload: Payload) -> WitPayload {
    match payload {
        Payload::Json(value) => WitPayload::Json(value.to_string()),
        Payload::Bytes(bytes) => WitPayload::Bytes(bytes),
    }
}

fn payload_from_wit(hook: Hook, payload: WitPayload) -> Result<Payload> {
    match payload {
        WitPayload::Json(text) => {
            serde_json::from_str(&text)
                .map(Payload::Json)
                .map_err(|e| GuestError::InvalidJson {
                    hook,
                    detail: e.to_string(),
                })
        }
        WitPayload::Bytes(bytes) => Ok(Payload::Bytes(bytes)),
    }
}

fn response_from_wit(response: WitResponse) -> HookResponse {
    HookResponse {
        body: response.body,
        content_type: response.content_type,
        custom_attributes: response.custom_attributes,
        headers: response.headers,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

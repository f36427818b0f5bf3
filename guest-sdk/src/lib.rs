//! Write sagebrush user code in Rust.
//!
//! sagebrush serves Hugging Face models with native pipelines and lets a model ship its own
//! hooks, the SageMaker Hugging Face Inference Toolkit's `model_fn`, `input_fn`, `predict_fn`,
//! `output_fn` and `transform_fn`, as a WebAssembly component in `code/inference.wasm`. This
//! crate is all a guest needs: implement [`Handler`] for a type, writing only the hooks you
//! want, and put [`handler`] on the impl block. The runtime uses its native default for every
//! hook you leave out, so a guest can do only pre- or post-processing around the native
//! pipeline (reach it yourself with [`pipeline::predict`]). `model_fn` can load native
//! pipelines of its own ([`pipeline::Pipeline::load`]: another task, a subfolder, several
//! models), and use the host's tokenizers ([`tokenizer::Tokenizer`]). The crate builds against
//! the WIT world `sagebrush:handler@0.2.0`.
//!
//! # Example
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "clean-text"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! guest-sdk = { path = "../sagebrush/guest-sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use guest_sdk::serde_json::{Value, json};
//! use guest_sdk::{Context, Error, Handler, Payload, Response};
//!
//! struct CleanText;
//!
//! #[guest_sdk::handler]
//! impl Handler for CleanText {
//!     // input_fn: collapse the whitespace of the text, then let the native pipeline predict.
//!     fn input_fn(body: Vec<u8>, content_type: &str, ctx: &Context) -> Result<Payload, Error> {
//!         if !content_type.starts_with("application/json") {
//!             return Err(Error::unsupported_media_type(format!("cannot read {content_type}")));
//!         }
//!         let mut request: Value = guest_sdk::json::from_slice(&body)?;
//!         let Some(text) = request["inputs"].as_str() else {
//!             return Err(Error::bad_request("`inputs` must be a string"));
//!         };
//!         let cleaned = text.split_whitespace().collect::<Vec<_>>().join(" ");
//!         guest_sdk::info!("request {}: cleaned {} bytes", ctx.request_id, text.len());
//!         request["inputs"] = Value::String(cleaned);
//!         Payload::from_json(&request)
//!     }
//!
//!     // output_fn: wrap the native answer.
//!     fn output_fn(prediction: Payload, _accept: &str, _ctx: &Context) -> Result<Response, Error> {
//!         let answer: Value = prediction.to_json()?;
//!         Response::json(&json!({ "task": guest_sdk::pipeline::task(), "answer": answer }))
//!     }
//! }
//! ```
//!
//! Build and pack it with `sagebrush package --model-dir DIR --guest .` (install the target once
//! with `rustup target add wasm32-wasip2`), or build it with
//! `cargo build --target wasm32-wasip2 --release` and ship
//! `target/wasm32-wasip2/release/clean_text.wasm` as `code/inference.wasm` in `model.tar.gz`
//! (`sagebrush package --model-dir DIR --code FILE.wasm`).
//!
//! # What a guest may do
//!
//! Read the model directory (read-only, at the path `model_fn` receives), load and call native
//! pipelines and tokenizers (the host runs them), log. It has no network, no environment variables and no other files. Each instance
//! has a memory limit and each hook call a time limit; a panic fails only the current request
//! (the panic message is logged) and the runtime replaces the instance.
//!
//! # `transform_fn`
//!
//! `transform_fn` owns the whole request, so it cannot be combined with `input_fn`,
//! `predict_fn` or `output_fn` (`model_fn` is fine). [`handler`] refuses that at compile time
//! with the runtime's own message, `Cannot use transform_fn implementation in conjunction with
//! input_fn, predict_fn, and/or output_fn implementation` (the repository's end-to-end test
//! `transform_fn_with_input_fn_fails_to_compile_with_the_exact_message` builds this very code and
//! checks the compiler prints that message):
//!
//! ```compile_fail
//! use guest_sdk::{Context, Error, Handler, Payload, Response};
//!
//! struct Mixed;
//!
//! #[guest_sdk::handler]
//! impl Handler for Mixed {
//!     fn input_fn(body: Vec<u8>, _ct: &str, _ctx: &Context) -> Result<Payload, Error> {
//!         Ok(Payload::Bytes(body))
//!     }
//!     fn transform_fn(_m: Option<&()>, body: Vec<u8>, ct: &str, _accept: &str, _ctx: &Context)
//!         -> Result<Response, Error> {
//!         Ok(Response::new(body, ct))
//!     }
//! }
//! ```

#![deny(missing_docs)]

// Lets the generated bindings name this crate `::guest_sdk` from inside it as well.
extern crate self as guest_sdk;

mod adapter;
#[doc(hidden)]
pub mod bindings;
pub mod json;
pub mod log;
pub mod pipeline;
pub mod tokenizer;
mod types;

#[doc(hidden)]
pub use adapter::{Adapter, ModelBox};
pub use guest_sdk_macros::handler;
pub use serde_json;
pub use types::{Context, Error, HookSet, Payload, Response};

/// wit-bindgen's runtime, for the generated bindings only.
#[doc(hidden)]
pub use wit_bindgen as __rt;

/// The first media type of a `Content-Type` or `Accept` value, without its parameters (`q=`,
/// `charset=`, ...), trimmed and lower-cased; `""` for an empty value. Match the result against
/// the types your `output_fn` can write, and answer [`Error::not_acceptable`] for the others.
///
/// ```
/// assert_eq!(guest_sdk::media_type("Text/CSV; charset=utf-8"), "text/csv");
/// assert_eq!(guest_sdk::media_type("text/plain;q=0.9, application/json"), "text/plain");
/// assert_eq!(guest_sdk::media_type(" application/json "), "application/json");
/// assert_eq!(guest_sdk::media_type("*/*"), "*/*");
/// assert_eq!(guest_sdk::media_type(""), "");
/// ```
///
/// Only the first entry counts: an `Accept` listing several types by preference (`q=` values)
/// is not ranked here.
///
/// ```
/// assert_eq!(guest_sdk::media_type("text/csv;q=0.1, application/json;q=1"), "text/csv");
/// ```
pub fn media_type(value: &str) -> String {
    let first = value.split(',').next().unwrap_or("");
    first
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// User code: one method per SageMaker hook. Write only the hooks you need inside an impl
/// block marked [`handler`]; the defaults return [`Error::NotImplemented`] and the runtime runs
/// its native default instead.
///
/// Python toolkit hooks and their methods:
///
/// | toolkit (`inference.py`) | `Handler` |
/// |---|---|
/// | `model_fn(model_dir)` | [`Handler::model_fn`] → `Self::Model` |
/// | `input_fn(input_data, content_type)` | [`Handler::input_fn`] |
/// | `predict_fn(data, model)` | [`Handler::predict_fn`] |
/// | `output_fn(prediction, accept)` | [`Handler::output_fn`] |
/// | `transform_fn(model, input_data, content_type, accept)` | [`Handler::transform_fn`] |
pub trait Handler: 'static {
    /// What `model_fn` loads; `()` when there is no `model_fn` ([`handler`] writes that).
    type Model: 'static;

    /// The hooks this impl writes; [`handler`] fills it in from the methods in the block.
    const HOOKS: HookSet;

    /// `model_fn(model_dir)`: load the model from `model_dir` (read-only), once per instance.
    fn model_fn(model_dir: &str) -> Result<Self::Model, Error> {
        let _ = model_dir;
        Err(Error::NotImplemented)
    }

    /// The native pipeline the runtime's default `predict_fn` should call for this model (the
    /// toolkit's default calls `model(inputs)`); `None`: the model directory's own pipeline.
    /// [`handler`] writes `Some(model)` when `type Model = Pipeline`; write it yourself when
    /// your model holds one. Called once per instance, after `model_fn`.
    fn model_pipeline(model: &Self::Model) -> Option<&pipeline::Pipeline> {
        let _ = model;
        None
    }

    /// A short description of a loaded model, for the runtime's log.
    fn model_name(model: &Self::Model) -> String {
        let _ = model;
        std::any::type_name::<Self::Model>().to_owned()
    }

    /// `input_fn(input_data, content_type)`: decode the request body. Return
    /// [`Payload::Json`] of `{"inputs": .., "parameters": {..}}` when the native `predict_fn`
    /// follows.
    fn input_fn(body: Vec<u8>, content_type: &str, ctx: &Context) -> Result<Payload, Error> {
        let _ = (body, content_type, ctx);
        Err(Error::NotImplemented)
    }

    /// `predict_fn(data, model)`: run the model. `model` is `None` without a `model_fn`; call
    /// [`pipeline::predict`] to use the model directory's native pipeline, or the
    /// [`pipeline::Pipeline`]s your `model_fn` loaded.
    fn predict_fn(
        data: Payload,
        model: Option<&Self::Model>,
        ctx: &Context,
    ) -> Result<Payload, Error> {
        let _ = (data, model, ctx);
        Err(Error::NotImplemented)
    }

    /// `output_fn(prediction, accept)`: encode the prediction. Return
    /// [`Error::NotAcceptable`] for an `accept` you cannot produce.
    fn output_fn(prediction: Payload, accept: &str, ctx: &Context) -> Result<Response, Error> {
        let _ = (prediction, accept, ctx);
        Err(Error::NotImplemented)
    }

    /// `transform_fn(model, input_data, content_type, accept)`: the whole request at once.
    /// Excludes `input_fn`, `predict_fn` and `output_fn`.
    fn transform_fn(
        model: Option<&Self::Model>,
        body: Vec<u8>,
        content_type: &str,
        accept: &str,
        ctx: &Context,
    ) -> Result<Response, Error> {
        let _ = (model, body, content_type, accept, ctx);
        Err(Error::NotImplemented)
    }
}

/// Exports `$handler` (a type implementing [`Handler`]) as the component's hooks. Written by
/// [`handler`]; call it yourself only when you write `HOOKS` by hand.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        const _: () = {
            type __GuestSdkAdapter = $crate::Adapter<$handler>;
            $crate::bindings::__export_sagebrush_handler!(__GuestSdkAdapter with_types_in $crate::bindings);
        };
    };
}

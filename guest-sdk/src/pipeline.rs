//! Native (candle) pipelines, run by the host on its own threads. Calls block until the
//! pipeline answers.
//!
//! - [`predict`] and [`task`]: the model directory's own pipeline (`/opt/ml/model`, `HF_TASK`),
//!   the one that answers when a hook is not implemented. The runtime builds it on the first
//!   call that needs it.
//! - [`Pipeline::load`]: another pipeline, for any task, over the model directory or a
//!   subfolder of it (e.g. two models in one archive). Each (task, subfolder, options) is
//!   loaded once per model and shared by every instance of the guest; loading is host work and
//!   does not count against a hook's time limit.
//!
//! A [`Handler::Model`](crate::Handler::Model) that is a [`Pipeline`] (or that says which one
//! it holds with [`Handler::model_pipeline`](crate::Handler::model_pipeline)) is what the
//! runtime's default `predict_fn` calls, as the toolkit's default calls `model(inputs)`:
//!
//! ```no_run
//! use guest_sdk::pipeline::Pipeline;
//! use guest_sdk::{Error, Handler};
//!
//! struct Ner;
//!
//! #[guest_sdk::handler]
//! impl Handler for Ner {
//!     type Model = Pipeline;
//!
//!     // model_fn: serve the `ner` subfolder as token-classification, whatever HF_TASK says.
//!     fn model_fn(_model_dir: &str) -> Result<Pipeline, Error> {
//!         Pipeline::load("token-classification", Some("ner"), None)
//!     }
//! }
//! ```

use serde::Serialize;

use crate::Error;
use crate::bindings::sagebrush::handler::pipeline as wit;

/// The task of the model directory's own pipeline, e.g. `text-classification` (`HF_TASK`, or
/// the one `config.json` names); empty when neither names one.
pub fn task() -> String {
    wit::task()
}

/// Runs `request` (`{"inputs": .., "parameters": {..}}`, or a bare input) through the model
/// directory's own pipeline and returns its JSON answer. A request the pipeline refuses is
/// [`Error::BadRequest`] with the pipeline's message.
pub fn predict<T: Serialize + ?Sized>(request: &T) -> Result<serde_json::Value, Error> {
    let text = crate::json::to_string(request)?;
    parse_answer(&predict_json(&text)?)
}

/// Like [`predict`], with the request and the answer as JSON text.
pub fn predict_json(request_json: &str) -> Result<String, Error> {
    wit::predict(request_json).map_err(crate::adapter::error_from_wit)
}

fn parse_answer(answer: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str(answer)
        .map_err(|e| Error::Internal(format!("the native pipeline answered invalid JSON: {e}")))
}

/// A native pipeline loaded by the guest: one task over the model directory or a subfolder.
#[derive(Debug)]
pub struct Pipeline(wit::Pipeline);

impl Pipeline {
    /// Loads the pipeline of `task` (`text-classification`, `token-classification`, `ner`,
    /// `fill-mask`, ..., the `HF_TASK` names) over the model directory, or over `subfolder`
    /// of it (relative, inside the model directory: `..` and absolute paths are refused).
    /// An empty `task` is the one the folder names (its `config.json` `architectures[0]`, or
    /// sentence-embeddings for a sentence-transformers folder). `options` is reserved: no
    /// option is defined yet, pass `None`.
    ///
    /// An unknown task, a bad subfolder, or a folder without a model the task can run is
    /// [`Error::BadRequest`] naming the cause (a `model_fn` failing with it fails the load).
    pub fn load(
        task: &str,
        subfolder: Option<&str>,
        options: Option<&serde_json::Value>,
    ) -> Result<Self, Error> {
        let options = options.map(crate::json::to_string).transpose()?;
        wit::Pipeline::load(task, subfolder, options.as_deref())
            .map(Self)
            .map_err(crate::adapter::error_from_wit)
    }

    /// The task served.
    pub fn task(&self) -> String {
        self.0.task()
    }

    /// Runs `request` (`{"inputs": .., "parameters": {..}}`, or a bare input) and returns the
    /// JSON answer; a request the pipeline refuses is [`Error::BadRequest`].
    pub fn predict<T: Serialize + ?Sized>(&self, request: &T) -> Result<serde_json::Value, Error> {
        let text = crate::json::to_string(request)?;
        parse_answer(&self.predict_json(&text)?)
    }

    /// Like [`Pipeline::predict`], with the request and the answer as JSON text.
    pub fn predict_json(&self, request_json: &str) -> Result<String, Error> {
        self.0
            .predict(request_json)
            .map_err(crate::adapter::error_from_wit)
    }

    /// Another handle to the same host pipeline; nothing is loaded again.
    pub fn try_clone(&self) -> Result<Self, Error> {
        self.0
            .clone()
            .map(Self)
            .map_err(crate::adapter::error_from_wit)
    }

    pub(crate) fn into_wit(self) -> wit::Pipeline {
        self.0
    }
}

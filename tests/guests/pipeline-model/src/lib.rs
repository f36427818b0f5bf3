//! Test guest: `model_fn` returns `Pipeline::load("token-classification", Some("ner"), None)`
//! and nothing else. The runtime's default `predict_fn` calls that pipeline, as the toolkit's
//! default calls `model(inputs)`; the model directory's own pipeline is never built.

use guest_sdk::pipeline::Pipeline;
use guest_sdk::{Error, Handler};

/// The handler.
pub struct PipelineModel;

#[guest_sdk::handler]
impl Handler for PipelineModel {
    type Model = Pipeline;

    fn model_fn(_model_dir: &str) -> Result<Pipeline, Error> {
        Pipeline::load("token-classification", Some("ner"), None)
    }
}

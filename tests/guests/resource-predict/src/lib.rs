//! Test guest: `model_fn` loads the native pipeline of `ner/` (an empty task: the one its
//! `config.json` names) and `predict_fn` forwards each request to it through the `pipeline`
//! resource, unchanged. The same work as `pipeline-model`, whose pipeline the host calls
//! directly, but through a guest call: `scripts/measure-guest-pipelines.py` compares the two.

use guest_sdk::pipeline::Pipeline;
use guest_sdk::serde_json::Value;
use guest_sdk::{Context, Error, Handler, Payload};

/// The handler.
pub struct ResourcePredict;

/// `model_fn`'s pipeline, held in a type of our own so that the runtime's default
/// `predict_fn` is not handed it: `predict_fn` below is what calls it.
pub struct Held(Pipeline);

#[guest_sdk::handler]
impl Handler for ResourcePredict {
    type Model = Held;

    fn model_fn(_model_dir: &str) -> Result<Held, Error> {
        Pipeline::load("", Some("ner"), None).map(Held)
    }

    fn predict_fn(data: Payload, model: Option<&Held>, _ctx: &Context) -> Result<Payload, Error> {
        let Held(pipeline) = model.ok_or_else(|| Error::internal("model_fn did not run"))?;
        let request: Value = data.to_json()?;
        Payload::from_json(&pipeline.predict(&request)?)
    }
}

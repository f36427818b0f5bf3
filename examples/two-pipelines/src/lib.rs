//! Example guest: two native pipelines from one archive. `model_fn` loads a
//! text-classification model from `classifier/` and a token-classification model from `ner/`
//! (the host loads them once, on its own threads, and shares them across instances);
//! `predict_fn` runs both on the same inputs and answers
//! `{"sentiment": <classifier's answer>, "entities": <ner's answer>}`. The archive needs no
//! model at its top level.

use guest_sdk::pipeline::Pipeline;
use guest_sdk::serde_json::{Value, json};
use guest_sdk::{Context, Error, Handler, Payload};

/// The handler.
pub struct TwoPipelines;

/// What `model_fn` loads: the two pipelines.
pub struct Models {
    classifier: Pipeline,
    ner: Pipeline,
}

#[guest_sdk::handler]
impl Handler for TwoPipelines {
    type Model = Models;

    fn model_fn(_model_dir: &str) -> Result<Models, Error> {
        let classifier = Pipeline::load("text-classification", Some("classifier"), None)?;
        let ner = Pipeline::load("token-classification", Some("ner"), None)?;
        guest_sdk::info!("loaded {} and {}", classifier.task(), ner.task());
        Ok(Models { classifier, ner })
    }

    fn model_name(models: &Models) -> String {
        format!(
            "classifier/ ({}) + ner/ ({})",
            models.classifier.task(),
            models.ner.task()
        )
    }

    fn predict_fn(data: Payload, model: Option<&Models>, _ctx: &Context) -> Result<Payload, Error> {
        let models = model.ok_or_else(|| Error::internal("predict_fn needs model_fn's models"))?;
        let request: Value = data.to_json()?;
        let Some(inputs) = request.get("inputs") else {
            return Err(Error::bad_request("the request needs `inputs`"));
        };
        let sentiment = models.classifier.predict(&json!({ "inputs": inputs }))?;
        let entities = models.ner.predict(&json!({ "inputs": inputs }))?;
        Payload::from_json(&json!({ "sentiment": sentiment, "entities": entities }))
    }
}

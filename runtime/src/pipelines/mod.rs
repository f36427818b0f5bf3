//! Pipelines: the `{"inputs", "parameters"}` envelope, the [`Pipeline`] trait the hook chain
//! and guests call, and one module per task with its `Params`, pre- and post-processing
//! (contract §3, §4). What the tasks share is split by concern: `encode` (text to encodings,
//! truncation), `inputs` (reading `inputs`), `params` (reading `parameters`) and `answer`
//! (output rows to JSON). Pipelines submit encodings to `infer` and read its replies; they never
//! pad, batch or touch the model.

pub mod answer;
pub mod chat;
pub mod completion;
pub mod encode;
pub mod feature_extraction;
pub mod fill_mask;
pub mod inputs;
pub mod params;
pub mod question_answering;
pub mod sentence_embeddings;
pub mod sentence_ranking;
pub mod sentence_similarity;
pub mod stream;
pub mod table_question_answering;
pub mod text2text;
pub mod text_classification;
pub mod text_generation;
pub mod token_classification;
pub mod zero_shot_classification;

use std::sync::Arc;

use candle_core::Tensor;
use serde_json::Value;

use crate::infer::{Infer, InferError};
use crate::models::{Head, ModelConfig};
use crate::tokenizer::TextTokenizer;

pub use crate::task::Task;
pub use inputs::json_kind;

/// A pipeline failure. `Validation` is the caller's fault (400); the rest are server faults.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The request does not fit the task (bad shape, unknown or bad parameter).
    #[error("{message}")]
    Validation {
        /// What to fix, e.g. "`top_k` must be >= 1, got 0".
        message: String,
    },
    /// Unknown keys in `parameters`.
    #[error("unknown parameter{} {} for {task}; accepted: {}", if names.len() > 1 { "s" } else { "" }, quote_all(names), quote_all(accepted))]
    UnknownParameters {
        /// The unknown names.
        names: Vec<String>,
        /// The task.
        task: Task,
        /// The names the task accepts.
        accepted: Vec<String>,
    },
    /// The inference core refused or failed the request (overloaded, cancelled, past its
    /// deadline, the forward pass failed or panicked).
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The tokenizer failed on an input.
    #[error("tokenization failed")]
    Tokenizer {
        /// The error from `tokenizers`.
        #[source]
        source: tokenizers::Error,
    },
    /// A model output does not have the shape the task reads.
    #[error("the model output cannot be read")]
    Output(#[source] candle_core::Error),
    /// The result has NaN or infinite numbers.
    #[error("the model produced a non-finite number (NaN or infinity)")]
    NonFinite,
}

impl PipelineError {
    /// A validation error with a message that says what to fix.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
        }
    }
}

fn quote_all(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shorthand for pipeline results.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// The request envelope: `{"inputs": X, "parameters": {...}}`; without `inputs` the whole
/// object is the input (contract §4).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The inputs.
    pub inputs: Value,
    /// The parameters (an empty object when absent or null).
    pub parameters: serde_json::Map<String, Value>,
}

impl Envelope {
    /// Splits a decoded request into inputs and parameters.
    pub fn from_value(value: Value) -> Result<Self> {
        match value {
            Value::Object(mut map) if map.contains_key("inputs") => {
                let inputs = map.remove("inputs").unwrap_or(Value::Null);
                let parameters = match map.remove("parameters") {
                    None | Some(Value::Null) => serde_json::Map::new(),
                    Some(Value::Object(p)) => p,
                    Some(other) => {
                        return Err(PipelineError::validation(format!(
                            "`parameters` must be an object, got {}",
                            json_kind(&other)
                        )));
                    }
                };
                Ok(Self { inputs, parameters })
            }
            other => Ok(Self {
                inputs: other,
                parameters: serde_json::Map::new(),
            }),
        }
    }
}

/// What a pipeline runs on: tokenizer, model config, and the inference core that owns the
/// model.
#[derive(Clone)]
pub struct Resources {
    /// The tokenizer.
    pub tokenizer: Arc<TextTokenizer>,
    /// `config.json`.
    pub config: Arc<ModelConfig>,
    /// The handle of the model worker.
    pub infer: Infer,
}

/// A task pipeline: what the default `predict_fn` and a guest's `pipeline.predict` call. `run`
/// blocks (tokenization and waiting for the model): call it off the async runtime.
pub trait Pipeline: Send + Sync {
    /// The task served.
    fn task(&self) -> Task;
    /// Answers one request.
    fn run(&self, request: Envelope) -> Result<Value>;
    /// Answers one decoded request: `{"inputs", "parameters"}` or a bare input.
    fn predict(&self, request: Value) -> Result<Value> {
        self.run(Envelope::from_value(request)?)
    }
    /// Answers an OpenAI-compatible or TGI request (issue #12: chat, completions, generate),
    /// whole or streamed; only text-generation models serve them.
    fn complete(&self, job: chat::Job) -> Result<completion::Completed> {
        let what = match job.api {
            chat::Api::Chat => "chat completions (`messages`)",
            chat::Api::Completion => "text completions (`prompt`)",
            chat::Api::Generate { .. } => "TGI generate requests",
        };
        Err(PipelineError::validation(format!(
            "{what} need a text-generation model; this one serves {}",
            self.task()
        )))
    }
    /// Starts a streamed answer (issue #12); only generation tasks stream, the others refuse
    /// with a 400.
    fn stream(&self, request: Envelope) -> Result<stream::TokenStream> {
        let _ = request;
        Err(PipelineError::validation(format!(
            "`stream` is not available for the {} task; only text-generation, text2text-generation, summarization and translation stream",
            self.task()
        )))
    }
}

/// The model head a task needs, or `None` when the task is not served natively yet.
pub fn head_for(task: &Task) -> Option<Head> {
    match task {
        Task::TextClassification | Task::ZeroShotClassification | Task::SentenceRanking => {
            Some(Head::SequenceClassification)
        }
        Task::TokenClassification => Some(Head::TokenClassification),
        Task::FeatureExtraction | Task::SentenceEmbeddings | Task::SentenceSimilarity => {
            Some(Head::Base)
        }
        Task::FillMask => Some(Head::MaskedLm),
        Task::QuestionAnswering => Some(Head::QuestionAnswering),
        _ => None,
    }
}

/// Builds the pipeline of `task`, or `None` when the task is not served natively yet.
pub fn build(task: &Task, resources: Resources) -> Option<Arc<dyn Pipeline>> {
    match task {
        Task::TextClassification => Some(Arc::new(text_classification::TextClassification::new(
            resources,
        ))),
        Task::TokenClassification => Some(Arc::new(
            token_classification::TokenClassification::new(resources),
        )),
        Task::FeatureExtraction => Some(Arc::new(feature_extraction::FeatureExtraction::new(
            resources,
        ))),
        Task::FillMask => Some(Arc::new(fill_mask::FillMask::new(resources))),
        Task::QuestionAnswering => Some(Arc::new(question_answering::QuestionAnswering::new(
            resources,
        ))),
        Task::ZeroShotClassification => Some(Arc::new(
            zero_shot_classification::ZeroShotClassification::new(resources),
        )),
        _ => None,
    }
}

/// Runs encodings through the model and returns one output per encoding, in input order:
/// `[labels]` for sequence heads, `[tokens, ...]` for per-token heads with exactly the
/// encoding's tokens (no padding). Batching and padding are the inference core's business.
pub fn forward_encodings(
    res: &Resources,
    encodings: &[tokenizers::Encoding],
) -> Result<Vec<Tensor>> {
    Ok(res.infer.forward(encodings)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_without_inputs_is_the_whole_object() {
        let e = Envelope::from_value(serde_json::json!({"question": "q", "context": "c"})).unwrap();
        assert_eq!(e.inputs["question"], "q");
        assert!(e.parameters.is_empty());
        let e =
            Envelope::from_value(serde_json::json!({"inputs": "x", "parameters": null})).unwrap();
        assert_eq!(e.inputs, "x");
    }
}

//! Pipelines: the `Task` (names, aliases, inference from `config.json`), the
//! `{"inputs", "parameters"}` envelope, and one module per task with its `Params`, pre- and
//! post-processing (contract §3, §4).

pub mod encode;
pub mod feature_extraction;
pub mod fill_mask;
pub mod question_answering;
pub mod text_classification;
pub mod token_classification;
pub mod zero_shot_classification;

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;
use serde_json::Value;

use crate::handler::NativePipeline;
use crate::infer::ModelWorker;
use crate::models::{Encoder, Head, ModelConfig};
use crate::tokenizer::TextTokenizer;

/// A pipeline task (contract §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Task {
    /// `text-classification` (alias `sentiment-analysis`).
    TextClassification,
    /// `token-classification` (alias `ner`).
    TokenClassification,
    /// `feature-extraction`.
    FeatureExtraction,
    /// `fill-mask`.
    FillMask,
    /// `question-answering`.
    QuestionAnswering,
    /// `zero-shot-classification`.
    ZeroShotClassification,
    /// `table-question-answering`.
    TableQuestionAnswering,
    /// `text-generation`.
    TextGeneration,
    /// `text2text-generation`.
    Text2TextGeneration,
    /// `summarization`.
    Summarization,
    /// `translation`, or `translation_xx_to_yy` with the two languages.
    Translation {
        /// Source language, e.g. `en`.
        src: Option<String>,
        /// Target language, e.g. `de`.
        tgt: Option<String>,
    },
}

impl Task {
    /// Task names accepted by `HF_TASK`, for error messages.
    pub const ACCEPTED: &'static [&'static str] = &[
        "text-classification",
        "sentiment-analysis",
        "token-classification",
        "ner",
        "feature-extraction",
        "fill-mask",
        "question-answering",
        "zero-shot-classification",
        "table-question-answering",
        "text-generation",
        "text2text-generation",
        "summarization",
        "translation",
        "translation_xx_to_yy",
    ];

    /// Parses a task name or alias (contract §2).
    pub fn parse(name: &str) -> Option<Self> {
        let task = match name.trim() {
            "text-classification" | "sentiment-analysis" => Self::TextClassification,
            "token-classification" | "ner" => Self::TokenClassification,
            "feature-extraction" => Self::FeatureExtraction,
            "fill-mask" => Self::FillMask,
            "question-answering" => Self::QuestionAnswering,
            "zero-shot-classification" => Self::ZeroShotClassification,
            "table-question-answering" => Self::TableQuestionAnswering,
            "text-generation" => Self::TextGeneration,
            "text2text-generation" => Self::Text2TextGeneration,
            "summarization" => Self::Summarization,
            "translation" => Self::Translation {
                src: None,
                tgt: None,
            },
            other => {
                let rest = other.strip_prefix("translation_")?;
                let (src, tgt) = rest.split_once("_to_")?;
                let valid = |s: &str| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                };
                if !valid(src) || !valid(tgt) {
                    return None;
                }
                Self::Translation {
                    src: Some(src.to_owned()),
                    tgt: Some(tgt.to_owned()),
                }
            }
        };
        Some(task)
    }

    /// Infers the task from `config.json` `architectures[0]` by suffix (contract §3).
    pub fn from_architecture(arch: &str) -> Option<Self> {
        // TAPAS first: its QA head is table question answering, not extractive QA.
        if arch == "TapasForQuestionAnswering" {
            return Some(Self::TableQuestionAnswering);
        }
        let table: [(&str, Self); 8] = [
            ("ForQuestionAnswering", Self::QuestionAnswering),
            ("ForTokenClassification", Self::TokenClassification),
            ("ForSequenceClassification", Self::TextClassification),
            ("ForMaskedLM", Self::FillMask),
            ("ForCausalLM", Self::TextGeneration),
            ("LMHeadModel", Self::TextGeneration),
            ("ForConditionalGeneration", Self::Text2TextGeneration),
            ("MTModel", Self::Text2TextGeneration),
        ];
        table
            .into_iter()
            .find(|(suffix, _)| arch.ends_with(suffix))
            .map(|(_, task)| task)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::TextClassification => "text-classification",
            Self::TokenClassification => "token-classification",
            Self::FeatureExtraction => "feature-extraction",
            Self::FillMask => "fill-mask",
            Self::QuestionAnswering => "question-answering",
            Self::ZeroShotClassification => "zero-shot-classification",
            Self::TableQuestionAnswering => "table-question-answering",
            Self::TextGeneration => "text-generation",
            Self::Text2TextGeneration => "text2text-generation",
            Self::Summarization => "summarization",
            Self::Translation {
                src: Some(s),
                tgt: Some(t),
            } => return write!(f, "translation_{s}_to_{t}"),
            Self::Translation { .. } => "translation",
        };
        f.write_str(name)
    }
}

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
    /// The model worker queue is full.
    #[error("the model worker queue is full")]
    Overloaded,
    /// The model worker stopped.
    #[error("the model worker is not running")]
    WorkerGone,
    /// Tokenization failed.
    #[error("tokenization failed: {0}")]
    Tokenizer(String),
    /// The forward pass failed.
    #[error("inference failed")]
    Model(#[source] crate::models::ModelError),
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

/// What a pipeline runs on: tokenizer, model config, and the worker that owns the model.
#[derive(Clone)]
pub struct Resources {
    /// The tokenizer.
    pub tokenizer: Arc<TextTokenizer>,
    /// `config.json`.
    pub config: Arc<ModelConfig>,
    /// The thread that owns the encoder.
    pub worker: Arc<ModelWorker<Encoder>>,
    /// Most inputs per forward pass.
    pub max_batch_size: usize,
}

/// A task pipeline. `run` blocks (tokenization and the forward pass): call it off the async
/// runtime.
pub trait Pipeline: Send + Sync {
    /// The task served.
    fn task(&self) -> Task;
    /// Answers one request.
    fn run(&self, request: Envelope) -> Result<Value>;
    /// Answers several independent requests (the records of a MultiRecord body), each as
    /// `run` would. A task that can share forward passes between them overrides this.
    fn run_many(&self, requests: Vec<Envelope>) -> Vec<Result<Value>> {
        requests.into_iter().map(|r| self.run(r)).collect()
    }
}

/// The model head a task needs, or `None` when the task is not served natively yet.
pub fn head_for(task: &Task) -> Option<Head> {
    match task {
        Task::TextClassification | Task::ZeroShotClassification => {
            Some(Head::SequenceClassification)
        }
        Task::TokenClassification => Some(Head::TokenClassification),
        Task::FeatureExtraction => Some(Head::Base),
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

/// A pipeline as the hook chain's native stage.
pub struct Native(pub Arc<dyn Pipeline>);

impl NativePipeline for Native {
    fn task(&self) -> Task {
        self.0.task()
    }

    fn predict(&self, request: Value) -> Result<Value> {
        self.0.run(Envelope::from_value(request)?)
    }

    fn predict_many(&self, requests: Vec<Value>) -> Vec<Result<Value>> {
        let envelopes: Vec<Result<Envelope>> =
            requests.into_iter().map(Envelope::from_value).collect();
        let good: Vec<Envelope> = envelopes.iter().flatten().cloned().collect();
        let mut answers = self.0.run_many(good).into_iter();
        envelopes
            .into_iter()
            .map(|e| e.and_then(|_| answers.next().unwrap_or(Ok(Value::Null))))
            .collect()
    }
}

/// Runs encodings through the model in padded batches of at most `max_batch_size` (sorted by
/// length so that each batch pads little) and returns one output row per encoding, in input
/// order: `[labels]` for sequence heads, `[tokens, ...]` for token heads (padded positions
/// included; use the encoding's length).
pub fn forward_encodings(
    res: &Resources,
    encodings: &[tokenizers::Encoding],
) -> Result<Vec<Tensor>> {
    let mut order: Vec<usize> = (0..encodings.len()).collect();
    order.sort_by_key(|&i| encodings[i].len());
    let mut rows: Vec<Option<Tensor>> = vec![None; encodings.len()];
    for chunk in order.chunks(res.max_batch_size.max(1)) {
        let batch_encodings: Vec<tokenizers::Encoding> =
            chunk.iter().map(|&i| encodings[i].clone()).collect();
        let batch = res.tokenizer.pad_batch(&batch_encodings);
        let output = res
            .worker
            .run(move |encoder| encoder.forward(&batch))?
            .map_err(PipelineError::Model)?;
        for (row, &i) in chunk.iter().enumerate() {
            rows[i] = Some(
                output
                    .get(row)
                    .map_err(|e| PipelineError::Model(e.into()))?,
            );
        }
    }
    Ok(rows.into_iter().flatten().collect())
}

/// Checks `params` against the names a task accepts (unknown → 400 naming them) and
/// deserializes them.
pub fn parse_params<P: serde::de::DeserializeOwned>(
    task: &Task,
    accepted: &[&str],
    params: serde_json::Map<String, Value>,
) -> Result<P> {
    check_names(task, accepted, &params)?;
    serde_json::from_value(Value::Object(params))
        .map_err(|e| PipelineError::validation(format!("bad parameters: {e}")))
}

/// Refuses parameter names a task does not accept (400 naming them).
pub fn check_names(
    task: &Task,
    accepted: &[&str],
    params: &serde_json::Map<String, Value>,
) -> Result<()> {
    let unknown: Vec<String> = params
        .keys()
        .filter(|k| !accepted.contains(&k.as_str()))
        .cloned()
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(PipelineError::UnknownParameters {
        names: unknown,
        task: task.clone(),
        accepted: accepted.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// A JSON number from a float; NaN and infinity are errors, never `null`.
pub fn finite(x: f32) -> Result<Value> {
    serde_json::Number::from_f64(f64::from(x))
        .map(Value::Number)
        .ok_or(PipelineError::NonFinite)
}

/// A short name of a JSON value's kind, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_translation_names() {
        assert_eq!(
            Task::parse("sentiment-analysis"),
            Some(Task::TextClassification)
        );
        assert_eq!(Task::parse("ner"), Some(Task::TokenClassification));
        assert_eq!(
            Task::parse("translation_en_to_de"),
            Some(Task::Translation {
                src: Some("en".into()),
                tgt: Some("de".into())
            })
        );
        assert_eq!(Task::parse("translation_en_de"), None);
        assert_eq!(Task::parse("sentiment"), None);
    }

    #[test]
    fn architecture_suffixes() {
        assert_eq!(
            Task::from_architecture("TapasForQuestionAnswering"),
            Some(Task::TableQuestionAnswering)
        );
        assert_eq!(
            Task::from_architecture("BertForQuestionAnswering"),
            Some(Task::QuestionAnswering)
        );
        assert_eq!(
            Task::from_architecture("GPT2LMHeadModel"),
            Some(Task::TextGeneration)
        );
        assert_eq!(
            Task::from_architecture("MarianMTModel"),
            Some(Task::Text2TextGeneration)
        );
        assert_eq!(Task::from_architecture("BertModel"), None);
    }

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

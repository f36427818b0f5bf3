//! sentence-embeddings (contract §4): one vector per sentence from a sentence-transformers
//! model, with the request and answer shapes of Hugging Face's inference toolkit
//! (`sentence_transformers_utils.SentenceEmbeddingPipeline`): `{"inputs": "text"}` gives
//! `{"embeddings": [f32, ...]}` and `{"inputs": ["a", "b"]}` gives `{"embeddings": [[...], [...]]}`.
//!
//! Also owns [`SentenceEncoder`], the embedding core that sentence-similarity shares: texts are
//! stripped (and lowercased with `do_lower_case`), prefixed with the prompt, truncated to
//! `max_seq_length`, run through the encoder, then pooled and passed through the Dense and
//! Normalize modules ([`SentenceModules`]) as sentence-transformers 4.1.0's
//! `SentenceTransformer.encode` does.
//!
//! Parameters (the toolkit takes none; these are TEI's names): `normalize` (L2-normalize the
//! result, default false: a model with a `Normalize` module is normalized anyway), `truncate`
//! (default true, as sentence-transformers always truncates; false makes an over-long text a
//! 400) and `prompt_name` (a key of `config_sentence_transformers.json` `prompts`).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::answer::{finite, matrix, one_or_list};
use super::encode::{Truncation, encode_single};
use super::inputs::texts;
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task, forward_encodings};
use crate::models::ModelError;
use crate::models::sentence_transformers::{SentenceModules, is_sentence_transformers, normalize};

/// Parameter names sentence-embeddings accepts.
pub const ACCEPTED: &[&str] = &["normalize", "truncate", "prompt_name"];

/// The parameters of sentence-embeddings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// L2-normalize each embedding.
    #[serde(default)]
    pub normalize: bool,
    /// Truncate long texts to `max_seq_length` (default); false: an over-long text is a 400.
    #[serde(default = "yes")]
    pub truncate: bool,
    /// A prompt name from `config_sentence_transformers.json`.
    #[serde(default)]
    pub prompt_name: Option<String>,
}

fn yes() -> bool {
    true
}

/// How to embed a batch of texts: also sentence-similarity's parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedOptions {
    /// Truncate long texts to `max_seq_length` (default); false: an over-long text is a 400.
    #[serde(default = "yes")]
    pub truncate: bool,
    /// A prompt name from `config_sentence_transformers.json` (else the model's default
    /// prompt).
    #[serde(default)]
    pub prompt_name: Option<String>,
}

/// The embedding core: a base encoder plus the sentence-transformers modules after it.
pub struct SentenceEncoder {
    res: Resources,
    modules: Arc<SentenceModules>,
    max_len: usize,
}

impl SentenceEncoder {
    /// Reads the module chain of `dir`. A folder without `modules.json` gets what
    /// sentence-transformers gives a plain transformers model: mean pooling, nothing after.
    pub fn load(dir: &Path, res: Resources) -> Result<Self, ModelError> {
        let modules = if is_sentence_transformers(dir) {
            SentenceModules::load(dir)?
        } else {
            tracing::warn!(dir = %dir.display(), "no modules.json: embedding with mean pooling, as sentence-transformers does for a plain model");
            SentenceModules::mean_pooling()
        };
        if let Some(hidden) = res
            .config
            .raw
            .get("hidden_size")
            .and_then(serde_json::Value::as_u64)
        {
            modules.check_width(hidden as usize, dir)?;
        }
        let max_len = modules
            .max_seq_length
            .map_or(res.tokenizer.max_len(), |m| m.min(res.tokenizer.max_len()));
        Ok(Self {
            res,
            modules: Arc::new(modules),
            max_len,
        })
    }

    /// The prompt text for a request: `prompt_name` looked up in the model's prompts, else the
    /// default prompt, else none.
    fn prompt(&self, name: Option<&str>) -> Result<Option<&str>> {
        let prompts = &self.modules.prompts;
        match name {
            Some(name) => prompts.get(name).map(|p| Some(p.as_str())).ok_or_else(|| {
                let known: Vec<String> = prompts.keys().map(|k| format!("`{k}`")).collect();
                PipelineError::validation(if known.is_empty() {
                    format!("`prompt_name` is {name:?}, but this model defines no prompts")
                } else {
                    format!(
                        "`prompt_name` must be one of {}, got {name:?}",
                        known.join(", ")
                    )
                })
            }),
            None => Ok(self
                .modules
                .default_prompt_name
                .as_deref()
                .and_then(|n| prompts.get(n))
                .map(String::as_str)),
        }
    }

    /// Embeds `texts` (one vector each, in order).
    pub fn embed(&self, texts: &[String], options: &EmbedOptions) -> Result<Vec<Vec<f32>>> {
        let tokenizer = self.res.tokenizer.inner();
        let prompt = self.prompt(options.prompt_name.as_deref())?;
        // SentenceTransformer.encode: the prompt's length is its own tokenization minus the
        // final special token; pooling skips it when `include_prompt` is false.
        let prompt_tokens = match prompt {
            Some(p) if !self.modules.pooling().include_prompt => {
                let e = encode_single(tokenizer, &self.modules.prepare(p), None)?;
                e.first().map_or(0, |e| e.len().saturating_sub(1))
            }
            _ => 0,
        };
        let truncation = options
            .truncate
            .then(|| Truncation::longest_first(self.max_len));
        let mut encodings = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let text = match prompt {
                Some(p) => format!("{p}{text}"),
                None => text.clone(),
            };
            let encoding = encode_single(tokenizer, &self.modules.prepare(&text), truncation)?
                .into_iter()
                .next()
                .expect("encode_single returns at least the main encoding");
            if encoding.len() > self.max_len {
                return Err(PipelineError::validation(format!(
                    "input {i} is {} tokens long, more than the model maximum of {}; \
                     shorten it or leave `truncate` on",
                    encoding.len(),
                    self.max_len
                )));
            }
            encodings.push(encoding);
        }
        let outputs = forward_encodings(&self.res, &encodings)?;
        encodings
            .iter()
            .zip(&outputs)
            .map(|(encoding, output)| {
                let tokens = matrix(output, encoding.len())?;
                Ok(self.modules.embed(&tokens, prompt_tokens))
            })
            .collect()
    }
}

/// A vector as JSON numbers; NaN or infinity is an error.
pub fn vector_json(v: &[f32]) -> Result<Value> {
    v.iter()
        .map(|&x| finite(x))
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

/// The sentence-embeddings pipeline.
pub struct SentenceEmbeddings {
    encoder: SentenceEncoder,
}

impl SentenceEmbeddings {
    /// A pipeline over an embedding core.
    pub fn new(encoder: SentenceEncoder) -> Self {
        Self { encoder }
    }
}

impl Pipeline for SentenceEmbeddings {
    fn task(&self) -> Task {
        Task::SentenceEmbeddings
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let task = Task::SentenceEmbeddings;
        let params: Params = super::params::params(&task, ACCEPTED, request.parameters)?;
        let (texts, listed) = texts(&task, &request.inputs)?;
        let options = EmbedOptions {
            truncate: params.truncate,
            prompt_name: params.prompt_name,
        };
        let mut vectors = self.encoder.embed(&texts, &options)?;
        if params.normalize {
            vectors.iter_mut().for_each(|v| normalize(v));
        }
        let answers = vectors
            .iter()
            .map(|v| vector_json(v))
            .collect::<Result<Vec<_>>>()?;
        Ok(json!({ "embeddings": one_or_list(answers, listed) }))
    }
}

/// Builds the pipeline of a sentence task over the model folder `dir`, or `None` for the other
/// tasks.
pub fn build(
    task: &Task,
    dir: &Path,
    res: Resources,
) -> Result<Option<Arc<dyn Pipeline>>, ModelError> {
    Ok(match task {
        Task::SentenceEmbeddings => Some(Arc::new(SentenceEmbeddings::new(SentenceEncoder::load(
            dir, res,
        )?))),
        Task::SentenceSimilarity => Some(Arc::new(
            super::sentence_similarity::SentenceSimilarity::new(SentenceEncoder::load(dir, res)?),
        )),
        Task::SentenceRanking => Some(Arc::new(super::sentence_ranking::SentenceRanking::new(res))),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_defaults_and_refusals() {
        let p: Params = serde_json::from_value(json!({})).unwrap();
        assert!(!p.normalize && p.truncate && p.prompt_name.is_none());
        let p: Params =
            serde_json::from_value(json!({"normalize": true, "prompt_name": "query"})).unwrap();
        assert!(p.normalize);
        assert_eq!(p.prompt_name.as_deref(), Some("query"));
        assert!(serde_json::from_value::<Params>(json!({"normalize": "yes"})).is_err());
        assert!(serde_json::from_value::<Params>(json!({"truncation": false})).is_err());
    }

    #[test]
    fn vectors_refuse_non_finite_numbers() {
        assert_eq!(vector_json(&[0.5, -1.0]).unwrap(), json!([0.5, -1.0]));
        assert!(matches!(
            vector_json(&[f32::NAN]),
            Err(PipelineError::NonFinite)
        ));
    }
}

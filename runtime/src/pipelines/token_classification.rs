//! token-classification (alias `ner`, contract §4): per-token labels, optionally grouped into
//! entities. A port of transformers 4.51.3 `pipelines/token_classification.py`
//! (<https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/token_classification.py>):
//! parameters, the tokenizer facts the rules need, windows of a long text (`stride`), and the
//! pipeline. The rules themselves (`gather_pre_entities`, `aggregate`, `group_entities`, ...,
//! with the `is_subword` heuristics and `word` as the decoder's join of the group's tokens) are
//! in `token_classification/aggregate.rs`.
//!
//! Not here: tokenization and truncation (`encode`), running the model (`forward_encodings`).

use std::str::FromStr;

use serde::Deserialize;
use tokenizers::models::ModelWrapper;
use tokenizers::{Encoding, Tokenizer};

use serde_json::Value;
use tokenizers::utils::truncation::TruncationStrategy;

mod aggregate;

pub use aggregate::{
    Chunk, Entity, Labels, PreEntity, aggregate, aggregate_overlapping_entities,
    gather_pre_entities, postprocess, softmax_rows,
};

use super::answer::{matrix, one_or_list};
use super::encode::{Truncation, check_length, encode_single};
use super::inputs::texts;
use super::params::{deserialize_truncation, params, truncation_default};
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task, forward_encodings};

/// Parameter names this task accepts (contract §4, plus transformers' `stride` and our `truncation`).
pub const ACCEPTED: &[&str] = &[
    "aggregation_strategy",
    "ignore_labels",
    "stride",
    "truncation",
];

/// How tokens are fused into entities (transformers' `AggregationStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AggregationStrategy {
    /// One entity per token, with its `index`.
    #[default]
    None,
    /// Adjacent tokens with the same tag are grouped (B- starts a new group).
    Simple,
    /// Words take the label of their first token, then grouped.
    First,
    /// Words take the label of their averaged token scores, then grouped.
    Average,
    /// Words take the label of their most confident token, then grouped.
    Max,
}

impl FromStr for AggregationStrategy {
    type Err = PipelineError;

    /// Case-insensitive, as transformers (`AggregationStrategy[name.upper()]`).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "simple" => Ok(Self::Simple),
            "first" => Ok(Self::First),
            "average" => Ok(Self::Average),
            "max" => Ok(Self::Max),
            _ => Err(PipelineError::validation(format!(
                "`aggregation_strategy` must be one of \"none\", \"simple\", \"first\", \"average\", \"max\", got \"{s}\""
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for AggregationStrategy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = Option::<String>::deserialize(d)?;
        name.map_or(Ok(Self::None), |n| {
            n.parse().map_err(serde::de::Error::custom)
        })
    }
}

/// The parameters of token-classification.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// `none` (default), `simple`, `first`, `average` or `max`.
    pub aggregation_strategy: AggregationStrategy,
    /// Labels (or entity groups) left out of the answer; `["O"]` when absent or null.
    pub ignore_labels: Option<Vec<String>>,
    /// Overlap of the windows a long text is cut into; without it a long text is truncated.
    pub stride: Option<usize>,
    /// Truncate a long text to the model maximum (default); `false` makes it a 400.
    #[serde(deserialize_with = "deserialize_truncation")]
    pub truncation: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            aggregation_strategy: AggregationStrategy::None,
            ignore_labels: None,
            stride: None,
            truncation: truncation_default(),
        }
    }
}

impl Params {
    /// The labels to drop.
    pub fn ignore_labels(&self) -> Vec<String> {
        self.ignore_labels
            .clone()
            .unwrap_or_else(|| vec!["O".to_owned()])
    }

    /// Checks `stride` against the model maximum and the strategy, as transformers'
    /// `_sanitize_parameters` does.
    pub fn validate(&self, model_max_length: usize) -> Result<()> {
        let Some(stride) = self.stride else {
            return Ok(());
        };
        if stride >= model_max_length {
            return Err(PipelineError::validation(format!(
                "`stride` must be less than the model maximum length {model_max_length}, got {stride}"
            )));
        }
        if self.aggregation_strategy == AggregationStrategy::None {
            return Err(PipelineError::validation(
                "`stride` was given to process all the text but `aggregation_strategy` is \"none\"; \
                 choose \"simple\", \"first\", \"average\" or \"max\"",
            ));
        }
        Ok(())
    }
}

/// What the post-processing needs from the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerFacts {
    /// The model has a `continuing_subword_prefix` (WordPiece `##`, some BPEs): a token is a
    /// subword when its text length differs from the source span's.
    pub word_aware: bool,
    /// The unknown token's id: its `word` is taken from the sentence and it starts a word.
    pub unk_id: Option<u32>,
}

impl TokenizerFacts {
    /// Reads the facts off a tokenizer (`getattr(model, "continuing_subword_prefix", None)`).
    /// `unk_token` is the tokenizer config's unknown token when known; otherwise the model's.
    pub fn of(tokenizer: &Tokenizer, unk_token: Option<&str>) -> Self {
        let (word_aware, model_unk) = match tokenizer.get_model() {
            ModelWrapper::WordPiece(wp) => (
                !wp.continuing_subword_prefix.is_empty(),
                Some(wp.unk_token.clone()),
            ),
            ModelWrapper::BPE(bpe) => (
                bpe.continuing_subword_prefix
                    .as_deref()
                    .is_some_and(|p| !p.is_empty()),
                bpe.unk_token.clone(),
            ),
            ModelWrapper::WordLevel(wl) => (false, Some(wl.unk_token.clone())),
            ModelWrapper::Unigram(_) => (false, None),
        };
        let unk = unk_token.map(str::to_owned).or(model_unk);
        Self {
            word_aware,
            unk_id: unk.and_then(|t| tokenizer.token_to_id(&t)),
        }
    }
}

/// One token of an encoding, as post-processing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenView {
    /// Vocabulary id.
    pub id: u32,
    /// The vocabulary token (`convert_ids_to_tokens`).
    pub token: String,
    /// Start character in the sentence.
    pub start: usize,
    /// End character (exclusive).
    pub end: usize,
    /// A special token ([CLS], [SEP], padding): skipped.
    pub special: bool,
}

/// The tokens of one encoding (char offsets expected, see `encode`).
pub fn token_views(encoding: &Encoding, tokenizer: &Tokenizer) -> Vec<TokenView> {
    (0..encoding.len())
        .map(|i| {
            let id = encoding.get_ids()[i];
            let (start, end) = encoding.get_offsets()[i];
            TokenView {
                id,
                token: tokenizer
                    .id_to_token(id)
                    .unwrap_or_else(|| encoding.get_tokens()[i].clone()),
                start,
                end,
                special: encoding.get_special_tokens_mask()[i] != 0,
            }
        })
        .collect()
}

/// `convert_tokens_to_string` of a fast tokenizer: its decoder's join, else a space join.
pub fn tokens_to_string(tokenizer: &Tokenizer, tokens: &[String]) -> String {
    use tokenizers::Decoder;
    match tokenizer.get_decoder() {
        Some(decoder) => decoder
            .decode(tokens.to_vec())
            .unwrap_or_else(|_| tokens.join(" ")),
        None => tokens.join(" "),
    }
}

/// The token-classification pipeline.
pub struct TokenClassification {
    res: Resources,
    facts: TokenizerFacts,
}

impl TokenClassification {
    /// A pipeline over a token-classification model.
    pub fn new(res: Resources) -> Self {
        let facts = TokenizerFacts::of(
            res.tokenizer.inner(),
            res.tokenizer.special_token("unk_token"),
        );
        Self { res, facts }
    }

    /// The windows of one text: one (truncated or checked) encoding, or every window with `stride`.
    fn windows(&self, text: &str, input: usize, params: &Params) -> Result<Vec<Encoding>> {
        let tokenizer = self.res.tokenizer.inner();
        let max_length = self.res.tokenizer.max_len();
        if let Some(stride) = params.stride {
            let t = Truncation {
                max_length,
                stride,
                strategy: TruncationStrategy::LongestFirst,
            };
            return encode_single(tokenizer, text, Some(t));
        }
        let truncation = params
            .truncation
            .then(|| Truncation::longest_first(max_length));
        let mut encodings = encode_single(tokenizer, text, truncation)?;
        encodings.truncate(1);
        if !params.truncation {
            check_length(&encodings[0], input, max_length)?;
        }
        Ok(encodings)
    }
}

impl Pipeline for TokenClassification {
    fn task(&self) -> Task {
        Task::TokenClassification
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let task = Task::TokenClassification;
        let params: Params = params(&task, ACCEPTED, request.parameters)?;
        params.validate(self.res.tokenizer.max_len())?;
        let (texts, listed) = texts(&task, &request.inputs)?;
        let mut encodings = Vec::new();
        let mut owner = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            for encoding in self.windows(text, i, &params)? {
                encodings.push(encoding);
                owner.push(i);
            }
        }
        // Every window of every text in padded batches, not one forward pass per text.
        let outputs = forward_encodings(&self.res, &encodings)?;
        let mut chunks: Vec<Vec<Chunk>> = texts.iter().map(|_| Vec::new()).collect();
        for ((encoding, output), i) in encodings.iter().zip(&outputs).zip(owner) {
            let logits = matrix(output, encoding.len())?;
            chunks[i].push(Chunk {
                tokens: token_views(encoding, self.res.tokenizer.inner()),
                logits,
            });
        }
        let tokenizer = self.res.tokenizer.inner();
        let join = |tokens: &[String]| tokens_to_string(tokenizer, tokens);
        let labels = Labels {
            id2label: &self.res.config.id2label,
            join: &join,
        };
        let answers = texts
            .iter()
            .zip(&chunks)
            .map(|(text, chunks)| {
                let entities = postprocess(text, chunks, &params, self.facts, &labels);
                serde_json::to_value(entities).map_err(|_| PipelineError::NonFinite)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(one_or_list(answers, listed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_are_case_insensitive_and_checked() {
        let p: Params =
            serde_json::from_value(serde_json::json!({"aggregation_strategy": "MAX"})).unwrap();
        assert_eq!(p.aggregation_strategy, AggregationStrategy::Max);
        assert!(
            serde_json::from_value::<Params>(serde_json::json!({"aggregation_strategy": "mean"}))
                .is_err()
        );
        assert!(serde_json::from_value::<Params>(serde_json::json!({"ignore_label": []})).is_err());
        let p: Params = serde_json::from_value(serde_json::json!({"ignore_labels": null})).unwrap();
        assert_eq!(p.ignore_labels(), ["O"]);
        let p = Params {
            stride: Some(8),
            ..Params::default()
        };
        assert!(matches!(
            p.validate(128),
            Err(PipelineError::Validation { .. })
        ));
        let p = Params {
            stride: Some(128),
            aggregation_strategy: AggregationStrategy::First,
            ..Params::default()
        };
        assert!(p.validate(128).is_err());
    }
}

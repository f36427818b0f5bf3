//! sentence-ranking (alias `text-ranking`, contract §4): a cross-encoder (a sequence
//! classification model) scores (query, text) pairs, with the shapes of Hugging Face's inference
//! toolkit (`sentence_transformers_utils.SentenceRankingPipeline`, over sentence-transformers
//! 4.1.0's `CrossEncoder.predict` and `rank`):
//!
//! - `{"inputs": [["q", "t1"], ["q", "t2"]]}` → `{"scores": [s1, s2]}`; a single pair
//!   `{"inputs": ["q", "t"]}` → `{"scores": s}`. With more than one label each score is a list.
//! - `{"inputs": {"query": "q", "texts": ["t1", "t2"], "return_documents": false}}` →
//!   `[{"index": i, "score": s, "text"?: "..."}]`, best first (ties keep input order).
//!
//! Scores are the logits through the model's cross-encoder activation (sigmoid for one label
//! unless `config.json` names another; see [`cross_encoder_activation`]). Pairs are truncated
//! longest-first to the model maximum, as `CrossEncoder` does; parameter `truncate: false`
//! makes an over-long pair a 400 instead.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::answer::{finite, vector};
use super::encode::{Truncation, encode_pair};
use super::inputs::{FieldProblem, only_keys, string_field, string_list_field};
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task, json_kind};
use crate::models::sentence_transformers::{Activation, cross_encoder_activation};

/// Parameter names sentence-ranking accepts.
pub const ACCEPTED: &[&str] = &["truncate"];

/// The shapes this task expects, for error messages.
const EXPECTED: &str = r#"a list of [query, text] pairs, one [query, text] pair, or {"query": string, "texts": [string, ...], "return_documents": bool}"#;

/// The parameters of sentence-ranking.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Truncate long pairs (default); false: an over-long pair is a 400.
    #[serde(default = "yes")]
    pub truncate: bool,
}

fn yes() -> bool {
    true
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    /// Pairs to score; `single` when one bare pair was sent (the answer is then one score).
    Pairs {
        /// (query, text) pairs.
        pairs: Vec<(String, String)>,
        /// One bare pair was sent.
        single: bool,
    },
    /// A query and texts to rank.
    Rank {
        /// `query`.
        query: String,
        /// `texts`.
        texts: Vec<String>,
        /// `return_documents`: put each text in its result.
        return_documents: bool,
    },
}

fn wrong(what: &str) -> PipelineError {
    PipelineError::validation(format!(
        "sentence-ranking expects `inputs` as {EXPECTED}; {what}"
    ))
}

/// Reads `inputs`; anything else is a 400 showing the expected shapes.
pub fn parse_inputs(inputs: &Value) -> Result<Inputs> {
    match inputs {
        Value::Array(items) if items.is_empty() => Err(wrong("got an empty list")),
        Value::Array(items) if items[0].is_string() => {
            let pair = pair(inputs).ok_or_else(|| {
                wrong("a list that starts with a string must be one pair of two strings")
            })?;
            Ok(Inputs::Pairs {
                pairs: vec![pair],
                single: true,
            })
        }
        Value::Array(items) => {
            let pairs = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    pair(item).ok_or_else(|| {
                        wrong(&format!(
                            "`inputs[{i}]` is {}, not a pair of two strings",
                            json_kind(item)
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Inputs::Pairs {
                pairs,
                single: false,
            })
        }
        Value::Object(map) => parse_rank(map),
        other => Err(wrong(&format!("got {}", json_kind(other)))),
    }
}

fn pair(value: &Value) -> Option<(String, String)> {
    match value.as_array()?.as_slice() {
        [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
        _ => None,
    }
}

fn parse_rank(map: &Map<String, Value>) -> Result<Inputs> {
    let field = |problem: FieldProblem| wrong(&problem.0);
    only_keys(map, &["query", "texts", "return_documents"]).map_err(field)?;
    let query = string_field(map, "query").map_err(field)?;
    let texts = string_list_field(map, "texts", false).map_err(field)?;
    let return_documents = match map.get("return_documents") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(wrong(&format!(
                "`return_documents` is {}, not a boolean",
                json_kind(other)
            )));
        }
    };
    Ok(Inputs::Rank {
        query,
        texts,
        return_documents,
    })
}

/// Indices of `scores`, best first; equal scores keep their order (Python's stable `sorted`).
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
}

/// The sentence-ranking pipeline.
pub struct SentenceRanking {
    res: Resources,
    activation: Activation,
}

impl SentenceRanking {
    /// A pipeline over a sequence-classification model used as a cross-encoder.
    pub fn new(res: Resources) -> Self {
        let activation = cross_encoder_activation(&res.config.raw, res.config.num_labels());
        Self { res, activation }
    }

    /// The activated scores of each pair (one per label).
    fn score(&self, pairs: &[(String, String)], truncate: bool) -> Result<Vec<Vec<f32>>> {
        let max_len = self.res.tokenizer.max_len();
        let truncation = truncate.then(|| Truncation::longest_first(max_len));
        let tokenizer = self.res.tokenizer.inner();
        let mut encodings = Vec::with_capacity(pairs.len());
        for (i, (query, text)) in pairs.iter().enumerate() {
            let encoding = encode_pair(tokenizer, query, text, truncation)?
                .into_iter()
                .next()
                .expect("encode_pair returns at least the main encoding");
            if encoding.len() > max_len {
                return Err(PipelineError::validation(format!(
                    "pair {i} is {} tokens long, more than the model maximum of {max_len}; \
                     shorten it or leave `truncate` on",
                    encoding.len()
                )));
            }
            encodings.push(encoding);
        }
        let rows = super::forward_encodings(&self.res, &encodings)?;
        rows.iter()
            .map(|row| {
                let logits = vector(row)?;
                Ok(logits
                    .into_iter()
                    .map(|x| self.activation.apply(x))
                    .collect())
            })
            .collect()
    }
}

fn score_json(scores: &[f32]) -> Result<Value> {
    match scores {
        [one] => finite(*one),
        many => many
            .iter()
            .map(|&s| finite(s))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array),
    }
}

impl Pipeline for SentenceRanking {
    fn task(&self) -> Task {
        Task::SentenceRanking
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let task = Task::SentenceRanking;
        let params: Params = super::params::params(&task, ACCEPTED, request.parameters)?;
        match parse_inputs(&request.inputs)? {
            Inputs::Pairs { pairs, single } => {
                let scores = self
                    .score(&pairs, params.truncate)?
                    .iter()
                    .map(|s| score_json(s))
                    .collect::<Result<Vec<_>>>()?;
                let scores = if single {
                    scores.into_iter().next().unwrap_or(Value::Null)
                } else {
                    Value::Array(scores)
                };
                Ok(json!({ "scores": scores }))
            }
            Inputs::Rank {
                query,
                texts,
                return_documents,
            } => {
                let labels = self.res.config.num_labels();
                if labels != 1 {
                    return Err(PipelineError::validation(format!(
                        "ranking a `query` against `texts` needs a model with one label, this one has {labels}; send [query, text] pairs to get every label's score"
                    )));
                }
                let pairs: Vec<(String, String)> =
                    texts.iter().map(|t| (query.clone(), t.clone())).collect();
                let scores: Vec<f32> = self
                    .score(&pairs, params.truncate)?
                    .into_iter()
                    .map(|s| s[0])
                    .collect();
                ranking(&scores)
                    .into_iter()
                    .map(|i| {
                        let mut entry = json!({ "index": i, "score": finite(scores[i])? });
                        if return_documents {
                            entry["text"] = Value::String(texts[i].clone());
                        }
                        Ok(entry)
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Value::Array)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_single_pair_and_rank_requests() {
        assert_eq!(
            parse_inputs(&json!([["q", "a"], ["q", "b"]])).unwrap(),
            Inputs::Pairs {
                pairs: vec![("q".into(), "a".into()), ("q".into(), "b".into())],
                single: false
            }
        );
        assert_eq!(
            parse_inputs(&json!(["q", "a"])).unwrap(),
            Inputs::Pairs {
                pairs: vec![("q".into(), "a".into())],
                single: true
            }
        );
        assert_eq!(
            parse_inputs(&json!({"query": "q", "texts": ["a"], "return_documents": true})).unwrap(),
            Inputs::Rank {
                query: "q".into(),
                texts: vec!["a".into()],
                return_documents: true
            }
        );
    }

    #[test]
    fn bad_shapes_name_the_expected_ones() {
        for bad in [
            json!("q"),
            json!([]),
            json!(["q", "a", "b"]),
            json!([["q", "a"], ["q"]]),
            json!([["q", 1]]),
            json!({"query": "q"}),
            json!({"texts": ["a"]}),
            json!({"query": "q", "texts": []}),
            json!({"query": "q", "texts": "a"}),
            json!({"query": "q", "texts": ["a"], "return_documents": "yes"}),
            json!({"query": "q", "texts": ["a"], "top_k": 1}),
        ] {
            let err = parse_inputs(&bad).unwrap_err().to_string();
            assert!(err.contains(EXPECTED), "{bad}: {err}");
        }
    }

    #[test]
    fn ranking_is_best_first_and_stable() {
        assert_eq!(ranking(&[0.1, 0.9, 0.5, 0.9]), vec![1, 3, 2, 0]);
    }

    #[test]
    fn one_label_is_a_number_more_are_a_list() {
        assert_eq!(score_json(&[0.5]).unwrap(), json!(0.5));
        assert_eq!(score_json(&[0.5, 0.25]).unwrap(), json!([0.5, 0.25]));
    }
}

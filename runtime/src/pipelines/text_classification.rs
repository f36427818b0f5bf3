//! text-classification (contract §4), as transformers 4.51.3 `TextClassificationPipeline` answers:
//! <https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/text_classification.py>
//!
//! Output shapes follow the pipeline's legacy rule: without `top_k`, a string input gives
//! `[{"label","score"}]` (the best label, wrapped in a list), a list gives one best label per
//! input and a `{text, text_pair}` object gives the bare best label; with `top_k` (an integer or
//! `null` for all labels) each input gives a list sorted by score.

use serde_json::{Map, Value, json};

use super::answer::finite;
use super::encode::{Truncation, check_length, encode_pair, encode_single, single_truncation};
use super::params::{check_names, deserialize_truncation, truncation_default};
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task, json_kind};
use crate::tokenizer::EncodeInput;

const ACCEPTED: &[&str] = &["top_k", "function_to_apply", "truncation"];

/// Which function turns logits into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Independent probabilities (multi-label, or a single logit).
    Sigmoid,
    /// A distribution over labels.
    Softmax,
    /// The raw logits.
    None,
}

impl Function {
    fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sigmoid" => Ok(Self::Sigmoid),
            "softmax" => Ok(Self::Softmax),
            "none" => Ok(Self::None),
            _ => Err(PipelineError::validation(format!(
                "`function_to_apply` must be one of sigmoid, softmax, none, got {name:?}"
            ))),
        }
    }

    /// transformers' default: sigmoid for multi-label problems or a single label, else softmax.
    pub fn default_for(problem_type: Option<&str>, num_labels: usize) -> Self {
        if problem_type == Some("multi_label_classification") || num_labels == 1 {
            Self::Sigmoid
        } else {
            Self::Softmax
        }
    }

    /// Applies the function to one row of logits.
    pub fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Self::Sigmoid => logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect(),
            Self::Softmax => softmax(logits),
            Self::None => logits.to_vec(),
        }
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// How many labels to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopK {
    /// `top_k` absent: the best label, legacy shapes.
    Legacy,
    /// `top_k: n`.
    N(usize),
    /// `top_k: null`: every label.
    All,
}

#[derive(Debug)]
struct Params {
    top_k: TopK,
    function: Option<Function>,
    truncation: bool,
}

impl Params {
    fn parse(task: &Task, params: &Map<String, Value>) -> Result<Self> {
        // Names first, so an unknown one is reported even next to a bad value.
        check_names(task, ACCEPTED, params)?;
        let top_k = match params.get("top_k") {
            None => TopK::Legacy,
            Some(Value::Null) => TopK::All,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => TopK::N(usize::try_from(n).unwrap_or(usize::MAX)),
                _ => {
                    return Err(PipelineError::validation(format!(
                        "`top_k` must be an integer >= 1 or null, got {v}"
                    )));
                }
            },
        };
        let function = match params.get("function_to_apply") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Function::parse(s)?),
            Some(v) => {
                return Err(PipelineError::validation(format!(
                    "`function_to_apply` must be a string, got {v}"
                )));
            }
        };
        let truncation = match params.get("truncation") {
            None | Some(Value::Null) => truncation_default(),
            Some(v) => deserialize_truncation(v.clone())
                .map_err(|e| PipelineError::validation(e.to_string()))?,
        };
        Ok(Self {
            top_k,
            function,
            truncation,
        })
    }
}

/// The shape of the request's inputs, which decides the shape of the answer.
enum Inputs {
    One(EncodeInput),
    Pair(EncodeInput),
    Many(Vec<EncodeInput>),
}

fn parse_pair(map: &Map<String, Value>) -> Result<EncodeInput> {
    let text = map.get("text").and_then(Value::as_str).ok_or_else(|| {
        PipelineError::validation(
            "a text-classification object input needs a string `text` (and optionally `text_pair`)",
        )
    })?;
    if let Some(extra) = map.keys().find(|k| *k != "text" && *k != "text_pair") {
        return Err(PipelineError::validation(format!(
            "unknown key `{extra}` in a text-classification input; use {{\"text\": ..., \"text_pair\": ...}}"
        )));
    }
    match map.get("text_pair") {
        None | Some(Value::Null) => Ok(EncodeInput::Single(text.to_owned())),
        Some(Value::String(pair)) => Ok(EncodeInput::Pair(text.to_owned(), pair.clone())),
        Some(v) => Err(PipelineError::validation(format!(
            "`text_pair` must be a string, got {v}"
        ))),
    }
}

fn parse_inputs(inputs: &Value) -> Result<Inputs> {
    const EXPECTED: &str = "text-classification expects `inputs` to be a string, a list of strings, or {\"text\": ..., \"text_pair\": ...}";
    match inputs {
        Value::String(s) => Ok(Inputs::One(EncodeInput::Single(s.clone()))),
        Value::Object(map) => Ok(Inputs::Pair(parse_pair(map)?)),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(EncodeInput::Single(s.clone())),
                Value::Object(map) => parse_pair(map),
                other => Err(PipelineError::validation(format!(
                    "{EXPECTED}; got a list holding {}",
                    json_kind(other)
                ))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Inputs::Many),
        other => Err(PipelineError::validation(format!(
            "{EXPECTED}; got {}",
            json_kind(other)
        ))),
    }
}

/// The text-classification pipeline.
pub struct TextClassification {
    res: Resources,
}

impl TextClassification {
    /// A pipeline over a sequence-classification model.
    pub fn new(res: Resources) -> Self {
        Self { res }
    }

    fn label(&self, i: usize) -> String {
        self.res
            .config
            .id2label
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("LABEL_{i}"))
    }

    /// One encoding per input, as `tokenizer(text, text_pair, truncation=...)`: cut longest
    /// first to the model maximum with `truncation` on, else refused when too long.
    fn encode(&self, items: &[EncodeInput], truncation: bool) -> Result<Vec<tokenizers::Encoding>> {
        let tokenizer = self.res.tokenizer.inner();
        let max_length = self.res.tokenizer.max_len();
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let windows = match item {
                    EncodeInput::Single(text) => {
                        encode_single(tokenizer, text, single_truncation(truncation, max_length))?
                    }
                    EncodeInput::Pair(text, pair) => encode_pair(
                        tokenizer,
                        text,
                        pair,
                        truncation.then(|| Truncation::longest_first(max_length)),
                    )?,
                };
                let first = windows
                    .into_iter()
                    .next()
                    .expect("encoding returns at least the main encoding");
                if !truncation {
                    check_length(&first, i, max_length)?;
                }
                Ok(first)
            })
            .collect()
    }

    /// Scores for one row of logits, shaped by `top_k`.
    fn postprocess(&self, logits: &[f32], params: &Params) -> Result<Value> {
        let function = params.function.unwrap_or_else(|| {
            Function::default_for(self.res.config.problem_type.as_deref(), logits.len())
        });
        let scores = function.apply(logits);
        if params.top_k == TopK::Legacy {
            let best = argmax(&scores);
            return Ok(json!({ "label": self.label(best), "score": finite(scores[best])? }));
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        // Stable sort, highest first, as Python's `sorted(..., reverse=True)`.
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        if let TopK::N(n) = params.top_k {
            order.truncate(n);
        }
        order
            .into_iter()
            .map(|i| Ok(json!({ "label": self.label(i), "score": finite(scores[i])? })))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array)
    }
}

fn argmax(scores: &[f32]) -> usize {
    // First index of the maximum, as numpy's argmax.
    scores
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

impl Pipeline for TextClassification {
    fn task(&self) -> Task {
        Task::TextClassification
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let params = Params::parse(&Task::TextClassification, &request.parameters)?;
        let inputs = parse_inputs(&request.inputs)?;
        let items = match &inputs {
            Inputs::One(i) | Inputs::Pair(i) => vec![i.clone()],
            Inputs::Many(items) => items.clone(),
        };
        if items.is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        let encodings = self.encode(&items, params.truncation)?;
        let rows = super::forward_encodings(&self.res, &encodings)?;
        let mut answers = Vec::with_capacity(rows.len());
        for row in rows {
            let logits: Vec<f32> = row.to_vec1().map_err(PipelineError::Output)?;
            answers.push(self.postprocess(&logits, &params)?);
        }
        Ok(match inputs {
            // transformers wraps a single string's best label in a list when `top_k` is absent.
            Inputs::One(_) if params.top_k == TopK::Legacy => Value::Array(answers),
            Inputs::One(_) | Inputs::Pair(_) => answers.into_iter().next().unwrap_or(Value::Null),
            Inputs::Many(_) => Value::Array(answers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_sigmoid_match_numpy() {
        let s = softmax(&[0.3020002, 0.0795625]);
        assert!((s[0] - 0.555_381_24).abs() < 1e-6, "{s:?}");
        let g = Function::Sigmoid.apply(&[0.3020002, 0.0795625]);
        assert!(
            (g[0] - 0.574_931_4).abs() < 1e-6 && (g[1] - 0.519_880_1).abs() < 1e-6,
            "{g:?}"
        );
    }

    #[test]
    fn default_function_follows_problem_type() {
        assert_eq!(
            Function::default_for(Some("multi_label_classification"), 3),
            Function::Sigmoid
        );
        assert_eq!(Function::default_for(None, 1), Function::Sigmoid);
        assert_eq!(Function::default_for(None, 2), Function::Softmax);
        assert_eq!(Function::parse("SOFTMAX").unwrap(), Function::Softmax);
        assert!(Function::parse("relu").is_err());
    }

    #[test]
    fn params_top_k_absent_int_null() {
        let task = Task::TextClassification;
        let p = |v: Value| Params::parse(&task, v.as_object().unwrap());
        assert_eq!(p(json!({})).unwrap().top_k, TopK::Legacy);
        assert_eq!(p(json!({"top_k": null})).unwrap().top_k, TopK::All);
        assert_eq!(p(json!({"top_k": 2})).unwrap().top_k, TopK::N(2));
        assert!(matches!(
            p(json!({"top_k": 0})),
            Err(PipelineError::Validation { .. })
        ));
        match p(json!({"top_k": 1, "temperature": 2})) {
            Err(PipelineError::UnknownParameters { names, .. }) => {
                assert_eq!(names, vec!["temperature"])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn input_shapes() {
        assert!(matches!(parse_inputs(&json!("x")).unwrap(), Inputs::One(_)));
        assert!(matches!(
            parse_inputs(&json!({"text": "a", "text_pair": "b"})).unwrap(),
            Inputs::Pair(EncodeInput::Pair(..))
        ));
        assert!(
            matches!(parse_inputs(&json!(["a", {"text": "b"}])).unwrap(), Inputs::Many(v) if v.len() == 2)
        );
        assert!(matches!(
            parse_inputs(&json!(3)),
            Err(PipelineError::Validation { .. })
        ));
        assert!(matches!(
            parse_inputs(&json!({"question": "q"})),
            Err(PipelineError::Validation { .. })
        ));
    }
}

//! feature-extraction (contract §4): the base model's last hidden state, token by token, for each
//! input (`1 × tokens × hidden`, as transformers' `pipelines/feature_extraction.py` returns
//! `model_outputs[0].tolist()` for a batch of one). Long inputs are truncated to the model
//! maximum unless `truncation` is false (the reference does not truncate by default and fails).

use serde::Deserialize;
use serde_json::Value;

use super::answer::{matrix, one_or_list};
use super::encode::encode_texts;
use super::inputs::texts;
use super::params::{deserialize_truncation, params, truncation_default};
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task, forward_encodings};

/// Parameter names this task accepts (contract §4).
pub const ACCEPTED: &[&str] = &["truncation"];

/// The parameters of feature-extraction.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Truncate a long text to the model maximum (default); `false` makes it a 400.
    #[serde(deserialize_with = "deserialize_truncation")]
    pub truncation: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            truncation: truncation_default(),
        }
    }
}

/// One input's features as JSON `[[[f32; hidden]; tokens]]`; non-finite values are an error
/// (they cannot be written as JSON).
pub fn features_json(rows: Vec<Vec<f32>>) -> Result<Value> {
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        return Err(PipelineError::NonFinite);
    }
    let tokens: Vec<Value> = rows
        .into_iter()
        .map(|row| Value::Array(row.into_iter().map(|v| Value::from(f64::from(v))).collect()))
        .collect();
    Ok(Value::Array(vec![Value::Array(tokens)]))
}

/// The feature-extraction pipeline.
pub struct FeatureExtraction {
    res: Resources,
}

impl FeatureExtraction {
    /// A pipeline over a base encoder (no head).
    pub fn new(res: Resources) -> Self {
        Self { res }
    }
}

impl Pipeline for FeatureExtraction {
    fn task(&self) -> Task {
        Task::FeatureExtraction
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let task = Task::FeatureExtraction;
        let params: Params = params(&task, ACCEPTED, request.parameters)?;
        let (texts, listed) = texts(&task, &request.inputs)?;
        let tokenizer = self.res.tokenizer.inner();
        let encodings = encode_texts(
            tokenizer,
            &texts,
            params.truncation,
            self.res.tokenizer.max_len(),
        )?;
        let outputs = forward_encodings(&self.res, &encodings)?;
        let answers = encodings
            .iter()
            .zip(&outputs)
            .map(|(encoding, output)| features_json(matrix(output, encoding.len())?))
            .collect::<Result<Vec<_>>>()?;
        Ok(one_or_list(answers, listed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_by_tokens_by_hidden() {
        let v = features_json(vec![vec![0.5, -1.0], vec![2.0, 0.25]]).unwrap();
        assert_eq!(v, json!([[[0.5, -1.0], [2.0, 0.25]]]));
        assert!(matches!(
            features_json(vec![vec![f32::NAN]]),
            Err(PipelineError::NonFinite)
        ));
    }

    #[test]
    fn truncation_accepts_booleans_and_strategy_names() {
        let p: Params = serde_json::from_value(json!({})).unwrap();
        assert!(p.truncation);
        let p: Params = serde_json::from_value(json!({"truncation": false})).unwrap();
        assert!(!p.truncation);
        let p: Params = serde_json::from_value(json!({"truncation": "do_not_truncate"})).unwrap();
        assert!(!p.truncation);
        let p: Params = serde_json::from_value(json!({"truncation": "longest_first"})).unwrap();
        assert!(p.truncation);
        assert!(serde_json::from_value::<Params>(json!({"truncation": "sometimes"})).is_err());
        assert!(serde_json::from_value::<Params>(json!({"return_tensors": true})).is_err());
    }
}

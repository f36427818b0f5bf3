//! Conformance of the encoders against transformers: the fixtures in
//! `tests/fixtures/conformance/models` run on the inputs of `cases/*.jsonl`, and the numbers
//! derived from our logits must match the recorded ones within 1e-4.

use std::path::PathBuf;

use candle_core::{D, Tensor};
use serde_json::Value;

use super::*;
use crate::tokenizer::{EncodeInput, TextTokenizer};

const TOL: f32 = 1e-4;

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/conformance/models")
        .join(name)
}

/// The cases of one fixture model, as parsed JSON lines.
pub(crate) fn cases(name: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/conformance/cases")
        .join(format!("{name}.jsonl"));
    std::fs::read_to_string(&path)
        .expect("cases file")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("case line"))
        .collect()
}

/// A loaded fixture: config, tokenizer, encoder.
pub(crate) struct Loaded {
    pub(crate) config: ModelConfig,
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) encoder: Encoder,
}

pub(crate) fn load(name: &str, head: Head) -> Loaded {
    let dir = fixture(name);
    let config = ModelConfig::from_dir(&dir).expect("config");
    let tokenizer = TextTokenizer::from_dir(&dir, &config).expect("tokenizer");
    let encoder = Encoder::load(&dir, &config, head).expect("encoder");
    Loaded {
        config,
        tokenizer,
        encoder,
    }
}

impl Loaded {
    /// Tokenizes, pads and runs a batch; returns the output tensor.
    pub(crate) fn run(&self, inputs: Vec<EncodeInput>, truncate: bool) -> Tensor {
        let encodings = self
            .tokenizer
            .encode_batch(inputs, truncate)
            .expect("encode");
        let batch = self.tokenizer.pad_batch(&encodings);
        self.encoder.forward(&batch).expect("forward")
    }
}

pub(crate) fn assert_close(actual: f32, expected: f64, tol: f32, what: &str) {
    assert!(
        (actual as f64 - expected).abs() <= tol as f64,
        "{what}: got {actual}, expected {expected}"
    );
}

/// The request body of a case, when it is JSON.
fn body(case: &Value) -> Option<Value> {
    serde_json::from_str(case["request"]["body"].as_str()?).ok()
}

fn task(case: &Value) -> Option<&str> {
    case["env"]["HF_TASK"].as_str()
}

/// `inputs` of a text-classification body: one input per element.
fn classification_inputs(inputs: &Value) -> Vec<EncodeInput> {
    match inputs {
        Value::String(s) => vec![EncodeInput::Single(s.clone())],
        Value::Array(items) => items
            .iter()
            .map(|v| EncodeInput::Single(v.as_str().expect("string input").to_owned()))
            .collect(),
        Value::Object(map) => vec![EncodeInput::Pair(
            map["text"].as_str().expect("text").to_owned(),
            map["text_pair"].as_str().expect("text_pair").to_owned(),
        )],
        other => panic!("unexpected inputs {other}"),
    }
}

/// The expected `{label, score}` entries of each input.
fn expected_per_input(
    expect: &Value,
    n_inputs: usize,
    list_input: bool,
) -> Vec<Vec<(String, f64)>> {
    let entry = |v: &Value| {
        (
            v["label"].as_str().expect("label").to_owned(),
            v["score"].as_f64().expect("score"),
        )
    };
    let out: Vec<Vec<(String, f64)>> = match expect {
        Value::Object(_) => vec![vec![entry(expect)]],
        Value::Array(items) if !list_input => vec![items.iter().map(entry).collect()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(inner) => inner.iter().map(entry).collect(),
                one => vec![entry(one)],
            })
            .collect(),
        other => panic!("unexpected expectation {other}"),
    };
    assert_eq!(out.len(), n_inputs);
    out
}

fn apply(function: &str, logits: &Tensor) -> Vec<f32> {
    let t = match function {
        "softmax" => candle_nn::ops::softmax(logits, D::Minus1).expect("softmax"),
        "sigmoid" => candle_nn::ops::sigmoid(logits).expect("sigmoid"),
        "none" => logits.clone(),
        other => panic!("function {other}"),
    };
    t.to_vec1().expect("scores")
}

/// Runs every JSON text-classification case of `model` and compares each reported score.
fn check_text_classification(model: &str) -> usize {
    let loaded = load(model, Head::SequenceClassification);
    let default_fn = if loaded.config.problem_type.as_deref() == Some("multi_label_classification")
        || loaded.config.num_labels() == 1
    {
        "sigmoid"
    } else {
        "softmax"
    };
    let mut checked = 0;
    for case in cases(model) {
        if !matches!(
            task(&case),
            None | Some("text-classification" | "sentiment-analysis")
        ) {
            continue;
        }
        let (Some(body), Some(expect)) = (body(&case), case["expect"].get("json")) else {
            continue;
        };
        let id = case["id"].as_str().expect("id");
        let params = body.get("parameters").cloned().unwrap_or(Value::Null);
        let function = params
            .get("function_to_apply")
            .and_then(Value::as_str)
            .unwrap_or(default_fn);
        let truncate = params.get("truncation").and_then(Value::as_bool) == Some(true);
        let inputs = classification_inputs(&body["inputs"]);
        let n = inputs.len();
        let expected = expected_per_input(expect, n, body["inputs"].is_array());
        let logits = loaded.run(inputs, truncate);
        assert_eq!(logits.dims(), &[n, loaded.config.num_labels()], "{id}");
        for (i, entries) in expected.iter().enumerate() {
            let scores = apply(function, &logits.get(i).expect("row"));
            for (label, score) in entries {
                let index = loaded.config.label2id[label];
                assert_close(
                    scores[index],
                    *score,
                    TOL,
                    &format!("{id} input {i} {label}"),
                );
            }
        }
        checked += 1;
    }
    checked
}

#[test]
fn bert_seqcls_scores_match_transformers() {
    assert!(check_text_classification("bert-seqcls") >= 15);
}

#[test]
fn distilbert_seqcls_scores_match_transformers() {
    assert!(check_text_classification("distilbert-seqcls") >= 9);
}

#[test]
fn roberta_seqcls_multilabel_sigmoid_scores_match_transformers() {
    assert!(check_text_classification("roberta-seqcls") >= 6);
}

#[test]
fn bert_seqcls_known_scores() {
    let loaded = load("bert-seqcls", Head::SequenceClassification);
    let logits = loaded.run(
        vec![EncodeInput::Single(
            "The food was terrible and the service was slow.".into(),
        )],
        false,
    );
    let scores = apply("softmax", &logits.get(0).expect("row"));
    assert_eq!(loaded.config.id2label, ["NEGATIVE", "POSITIVE"]);
    assert_close(scores[0], 0.5553812384605408, TOL, "NEGATIVE");
    assert_close(scores[1], 0.44461873173713684, TOL, "POSITIVE");
}

/// Zero-shot on DistilBERT NLI: premise/hypothesis pairs, entailment logits (pairs exercise
/// type-id-less DistilBERT with `[SEP]`-joined inputs).
#[test]
fn distilbert_zero_shot_entailment_scores_match_transformers() {
    let loaded = load("distilbert-seqcls", Head::SequenceClassification);
    let entail = loaded.config.label2id["entailment"];
    let contra = loaded.config.label2id["contradiction"];
    let mut checked = 0;
    for case in cases("distilbert-seqcls") {
        if task(&case) != Some("zero-shot-classification") {
            continue;
        }
        let (Some(body), Some(expect)) = (body(&case), case["expect"].get("json")) else {
            continue;
        };
        let Value::String(sequence) = &body["inputs"] else {
            continue;
        };
        let params = &body["parameters"];
        let labels: Vec<String> = match &params["candidate_labels"] {
            Value::Array(v) => v
                .iter()
                .map(|l| l.as_str().expect("label").to_owned())
                .collect(),
            Value::String(s) => s
                .split(',')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
            _ => continue,
        };
        let template = params["hypothesis_template"]
            .as_str()
            .unwrap_or("This example is {}.");
        let multi = params["multi_label"].as_bool() == Some(true) || labels.len() == 1;
        let inputs = labels
            .iter()
            .map(|l| EncodeInput::Pair(sequence.clone(), template.replace("{}", l)))
            .collect();
        let logits: Vec<Vec<f32>> = loaded.run(inputs, true).to_vec2().expect("logits");
        let scores: Vec<f32> = if multi {
            logits
                .iter()
                .map(|row| {
                    let (e, c) = (row[entail], row[contra]);
                    e.exp() / (e.exp() + c.exp())
                })
                .collect()
        } else {
            let e: Vec<f32> = logits.iter().map(|row| row[entail].exp()).collect();
            let sum: f32 = e.iter().sum();
            e.iter().map(|x| x / sum).collect()
        };
        let exp_labels = expect["labels"].as_array().expect("labels");
        let exp_scores = expect["scores"].as_array().expect("scores");
        for (label, score) in exp_labels.iter().zip(exp_scores) {
            let i = labels
                .iter()
                .position(|l| l == label.as_str().expect("label"))
                .expect("known label");
            assert_close(
                scores[i],
                score.as_f64().expect("score"),
                TOL,
                case["id"].as_str().expect("id"),
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "checked {checked}");
}

/// Feature extraction: the Base head's last hidden state equals transformers' token by token.
fn check_feature_extraction(model: &str) -> usize {
    let loaded = load(model, Head::Base);
    let mut checked = 0;
    for case in cases(model) {
        if task(&case) != Some("feature-extraction") {
            continue;
        }
        let (Some(body), Some(expect)) = (body(&case), case["expect"].get("json")) else {
            continue;
        };
        let id = case["id"].as_str().expect("id");
        let truncate = body["parameters"]["truncation"].as_bool() == Some(true);
        let inputs = classification_inputs(&body["inputs"]);
        // One expectation per input, each `1 × T × H`.
        let per_input: Vec<&Value> = if body["inputs"].is_array() {
            expect.as_array().expect("list").iter().collect()
        } else {
            vec![expect]
        };
        for (input, want) in inputs.into_iter().zip(per_input) {
            let hidden: Vec<Vec<f32>> = loaded
                .run(vec![input], truncate)
                .get(0)
                .expect("row")
                .to_vec2()
                .expect("hidden");
            let want = want[0].as_array().expect("tokens");
            assert_eq!(hidden.len(), want.len(), "{id}: token count");
            for (t, (row, want_row)) in hidden.iter().zip(want).enumerate() {
                let want_row = want_row.as_array().expect("hidden row");
                assert_eq!(row.len(), want_row.len(), "{id}: hidden size");
                for (h, (a, e)) in row.iter().zip(want_row).enumerate() {
                    assert_close(*a, e.as_f64().expect("f"), TOL, &format!("{id} [{t}][{h}]"));
                }
            }
        }
        checked += 1;
    }
    checked
}

#[test]
fn bert_feature_extraction_matches_transformers() {
    assert_eq!(check_feature_extraction("bert-seqcls"), 3);
}

#[test]
fn roberta_feature_extraction_matches_transformers() {
    assert_eq!(check_feature_extraction("roberta-seqcls"), 1);
}

/// A padded batch gives each row the same numbers as running it alone.
fn check_batch_equals_single(model: &str, head: Head) {
    let loaded = load(model, head);
    let texts = [
        "Hello world",
        "The movie was wonderful and the actors were great. I loved it.",
    ];
    let batch = loaded.run(
        texts
            .iter()
            .map(|t| EncodeInput::Single((*t).into()))
            .collect(),
        false,
    );
    for (i, text) in texts.iter().enumerate() {
        let single = loaded.run(vec![EncodeInput::Single((*text).into())], false);
        let single = single.get(0).expect("row");
        let row = batch.get(i).expect("row");
        // Token-level outputs: compare the real (unpadded) tokens only.
        let row = if head == Head::SequenceClassification {
            row
        } else {
            row.narrow(0, 0, single.dim(0).expect("len"))
                .expect("narrow")
        };
        let diff: f32 = (row - &single)
            .expect("sub")
            .abs()
            .expect("abs")
            .flatten_all()
            .expect("flat")
            .max(0)
            .expect("max")
            .to_scalar()
            .expect("scalar");
        assert!(diff <= 1e-5, "{model} {head:?} row {i}: max diff {diff}");
    }
}

#[test]
fn batched_forward_equals_single_forward() {
    for model in ["bert-seqcls", "distilbert-seqcls", "roberta-seqcls"] {
        check_batch_equals_single(model, Head::SequenceClassification);
        check_batch_equals_single(model, Head::Base);
    }
}

#[test]
fn config_defaults_labels_from_num_labels() {
    let c = ModelConfig::from_value(serde_json::json!({"model_type": "bert", "num_labels": 3}))
        .expect("config");
    assert_eq!(c.id2label, ["LABEL_0", "LABEL_1", "LABEL_2"]);
    assert_eq!(c.label2id["LABEL_2"], 2);
    let c = ModelConfig::from_value(serde_json::json!({"model_type": "bert"})).expect("config");
    assert_eq!(c.id2label, ["LABEL_0", "LABEL_1"]);
}

#[test]
fn config_id2label_wins_over_num_labels() {
    let c = ModelConfig::from_value(serde_json::json!({
        "model_type": "bert", "num_labels": 5, "id2label": {"1": "B", "0": "A"}
    }))
    .expect("config");
    assert_eq!(c.id2label, ["A", "B"]);
    assert_eq!(c.label2id["B"], 1);
}

#[test]
fn unknown_model_type_is_unsupported_architecture() {
    let config =
        ModelConfig::from_value(serde_json::json!({"model_type": "gpt2"})).expect("config");
    let err = Encoder::load(&fixture("gpt2-gen"), &config, Head::Base).err();
    assert!(
        matches!(err, Some(ModelError::UnsupportedArchitecture { model_type }) if model_type == "gpt2")
    );
}

#[test]
fn directory_without_weights_is_missing_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ModelConfig::from_dir(&fixture("bert-seqcls")).expect("config");
    let err = Encoder::load(dir.path(), &config, Head::Base).err();
    assert!(matches!(err, Some(ModelError::MissingWeights { .. })));
}

#[test]
fn ragged_batch_is_rejected() {
    let loaded = load("bert-seqcls", Head::Base);
    let batch = EncoderBatch {
        input_ids: vec![vec![2, 3], vec![2]],
        type_ids: vec![vec![0, 0], vec![0]],
        attention_mask: vec![vec![1, 1], vec![1]],
    };
    assert!(matches!(
        loaded.encoder.forward(&batch),
        Err(ModelError::BadBatch { .. })
    ));
}

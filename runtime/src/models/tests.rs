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
    let encoder = Encoder::load(&dir, &config, head, WeightDtype::F32).expect("encoder");
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

/// Two logit vectors equal within 1e-4 (batched rows against the same rows alone).
pub(crate) fn assert_logits_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "logits differ by {worst}");
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
    let err = Encoder::load(&fixture("gpt2-gen"), &config, Head::Base, WeightDtype::F32).err();
    assert!(
        matches!(err, Some(ModelError::UnsupportedArchitecture { model_type }) if model_type == "gpt2")
    );
}

#[test]
fn directory_without_weights_is_missing_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ModelConfig::from_dir(&fixture("bert-seqcls")).expect("config");
    let err = Encoder::load(dir.path(), &config, Head::Base, WeightDtype::F32).err();
    assert!(matches!(err, Some(ModelError::MissingWeights { .. })));
}

#[test]
fn ragged_batch_is_rejected() {
    let loaded = load("bert-seqcls", Head::Base);
    let batch = EncoderBatch {
        input_ids: vec![vec![2, 3], vec![2]],
        type_ids: vec![vec![0, 0], vec![0]],
        attention_mask: vec![vec![1, 1], vec![1]],
        extra_type_ids: Vec::new(),
    };
    assert!(matches!(
        loaded.encoder.forward(&batch),
        Err(ModelError::BadBatch { .. })
    ));
}

#[test]
fn pytorch_bin_weights_give_the_same_scores() {
    assert!(matches!(
        WeightFiles::find(&fixture("bert-seqcls-bin")),
        Ok(WeightFiles::Pth(_))
    ));
    assert_eq!(check_text_classification("bert-seqcls-bin"), 2);
}

#[test]
fn safetensors_is_preferred_over_pytorch_bin() {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in ["model.safetensors", "config.json"] {
        std::fs::copy(fixture("bert-seqcls").join(file), dir.path().join(file)).expect("copy");
    }
    std::fs::copy(
        fixture("bert-seqcls-bin").join("pytorch_model.bin"),
        dir.path().join("pytorch_model.bin"),
    )
    .expect("copy");
    assert_eq!(
        WeightFiles::find(dir.path()).expect("weights"),
        WeightFiles::Safetensors(vec![dir.path().join("model.safetensors")])
    );
}

/// Splits the bert-seqcls safetensors into two shards with an index, as `save_pretrained` with
/// a small `max_shard_size` does, and checks the sharded model gives the same logits.
#[test]
fn sharded_safetensors_load_like_one_file() {
    let src = fixture("bert-seqcls");
    let all =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).expect("load");
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let tensors: std::collections::HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), all[*n].clone()))
            .collect();
        candle_core::safetensors::save(&tensors, dir.path().join(file)).expect("save");
        for n in part.iter() {
            weight_map.insert((*n).clone(), Value::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write");
    let config = ModelConfig::from_dir(&src).expect("config");
    let sharded = Encoder::load(
        dir.path(),
        &config,
        Head::SequenceClassification,
        WeightDtype::F32,
    )
    .expect("load");
    let whole = Encoder::load(
        &src,
        &config,
        Head::SequenceClassification,
        WeightDtype::F32,
    )
    .expect("load");
    let batch = EncoderBatch {
        input_ids: vec![vec![2, 100, 200, 3]],
        type_ids: vec![vec![0; 4]],
        attention_mask: vec![vec![1; 4]],
        extra_type_ids: Vec::new(),
    };
    let a: Vec<Vec<f32>> = sharded.forward(&batch).expect("fwd").to_vec2().expect("v");
    let b: Vec<Vec<f32>> = whole.forward(&batch).expect("fwd").to_vec2().expect("v");
    assert_eq!(a, b);
}

#[test]
fn shard_outside_the_model_dir_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"weight_map": {"a": "../evil.safetensors"}}"#,
    )
    .expect("write");
    assert!(matches!(
        WeightFiles::find(dir.path()),
        Err(ModelError::WeightIndex { .. })
    ));
}

/// Token classification (aggregation `none` cases): each reported entity's label is the argmax
/// and its score the softmax at that token; offsets and words come from the tokenizer.
fn check_token_classification(model: &str) -> usize {
    let loaded = load(model, Head::TokenClassification);
    let mut checked = 0;
    for case in cases(model) {
        let (Some(body), Some(expect)) = (body(&case), case["expect"].get("json")) else {
            continue;
        };
        let aggregation = body["parameters"]["aggregation_strategy"].as_str();
        if !matches!(aggregation, None | Some("none")) {
            continue;
        }
        let id = case["id"].as_str().expect("id");
        let inputs = classification_inputs(&body["inputs"]);
        let texts: Vec<String> = inputs
            .iter()
            .map(|i| match i {
                EncodeInput::Single(t) => t.clone(),
                EncodeInput::Pair(..) => panic!("pair"),
            })
            .collect();
        let n = inputs.len();
        let per_input: Vec<&Value> = if body["inputs"].is_array() {
            expect.as_array().expect("list").iter().collect()
        } else {
            vec![expect]
        };
        // The token-classification pipeline always truncates to `model_max_length`.
        let encodings = loaded.tokenizer.encode_batch(inputs, true).expect("encode");
        let logits = loaded
            .encoder
            .forward(&loaded.tokenizer.pad_batch(&encodings))
            .expect("forward");
        assert_eq!(logits.dims()[0], n);
        assert_eq!(logits.dims()[2], loaded.config.num_labels());
        for (i, want) in per_input.iter().enumerate() {
            let probs: Vec<Vec<f32>> =
                candle_nn::ops::softmax(&logits.get(i).expect("row"), D::Minus1)
                    .expect("softmax")
                    .to_vec2()
                    .expect("probs");
            for entity in want.as_array().expect("entities") {
                let index = entity["index"].as_u64().expect("index") as usize;
                let row = &probs[index];
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(j, _)| j)
                    .expect("labels");
                let what = format!("{id} input {i} token {index}");
                assert_eq!(
                    loaded.config.id2label[best],
                    entity["entity"].as_str().expect("entity"),
                    "{what}"
                );
                assert_close(
                    row[best],
                    entity["score"].as_f64().expect("score"),
                    TOL,
                    &what,
                );
                let (start, end) = encodings[i].get_offsets()[index];
                assert_eq!(
                    start as u64,
                    entity["start"].as_u64().expect("start"),
                    "{what}"
                );
                assert_eq!(end as u64, entity["end"].as_u64().expect("end"), "{what}");
                // The pipeline reports the input text for unknown tokens.
                let token = &encodings[i].get_tokens()[index];
                let word = if token == "[UNK]" {
                    texts[i].chars().skip(start).take(end - start).collect()
                } else {
                    token.clone()
                };
                assert_eq!(word, entity["word"].as_str().expect("word"), "{what}");
            }
        }
        checked += 1;
    }
    checked
}

#[test]
fn bert_token_classification_matches_transformers() {
    assert!(check_token_classification("bert-tokcls") >= 6);
}

/// Fill-mask: every reported token's score is the softmax over the vocabulary at its `[MASK]`.
#[test]
fn bert_masked_lm_matches_transformers() {
    let loaded = load("bert-mlm", Head::MaskedLm);
    let mask_id = loaded
        .tokenizer
        .inner()
        .token_to_id(loaded.tokenizer.mask_token().expect("mask token"))
        .expect("mask id");
    let mut checked = 0;
    for case in cases("bert-mlm") {
        let (Some(body), Some(expect)) = (body(&case), case["expect"].get("json")) else {
            continue;
        };
        let id = case["id"].as_str().expect("id");
        let inputs = classification_inputs(&body["inputs"]);
        let encodings = loaded
            .tokenizer
            .encode_batch(inputs.clone(), true)
            .expect("encode");
        let logits = loaded
            .encoder
            .forward(&loaded.tokenizer.pad_batch(&encodings))
            .expect("forward");
        assert_eq!(logits.dims()[2], 2000);
        // Expectation per (input, mask): a list of {token, score}.
        let mut groups: Vec<(usize, usize, &Value)> = Vec::new();
        let masks = |i: usize| -> Vec<usize> {
            encodings[i]
                .get_ids()
                .iter()
                .enumerate()
                .filter(|(_, t)| **t == mask_id)
                .map(|(p, _)| p)
                .collect()
        };
        if body["inputs"].is_array() {
            for (i, want) in expect.as_array().expect("list").iter().enumerate() {
                groups.push((i, masks(i)[0], want));
            }
        } else if masks(0).len() > 1 {
            for (m, want) in masks(0).into_iter().zip(expect.as_array().expect("list")) {
                groups.push((0, m, want));
            }
        } else {
            groups.push((0, masks(0)[0], expect));
        }
        for (i, pos, want) in groups {
            let probs: Vec<f32> = candle_nn::ops::softmax(
                &logits.get(i).expect("row").get(pos).expect("pos"),
                D::Minus1,
            )
            .expect("softmax")
            .to_vec1()
            .expect("probs");
            for item in want.as_array().expect("items") {
                let token = item["token"].as_u64().expect("token") as usize;
                assert_close(
                    probs[token],
                    item["score"].as_f64().expect("score"),
                    TOL,
                    &format!("{id} token {token}"),
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "checked {checked}");
}

/// The candidate spans of extractive QA as transformers' `QuestionAnsweringPipeline` scores
/// them (`select_starts_ends` + `decode_spans`), best first: (score, start token, end token).
fn qa_spans(
    logits: &[Vec<f32>],
    sequence_ids: &[Option<usize>],
    top_k: usize,
    max_answer_len: usize,
) -> Vec<(f32, usize, usize)> {
    let len = logits.len();
    // Undesired: question tokens and specials, except [CLS] (index 0), which is then zeroed.
    let desired: Vec<bool> = (0..len)
        .map(|t| t == 0 || sequence_ids[t] == Some(1))
        .collect();
    let probs = |col: usize| -> Vec<f32> {
        let masked: Vec<f32> = (0..len)
            .map(|t| if desired[t] { logits[t][col] } else { -10000.0 })
            .collect();
        let max = masked.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = masked.iter().map(|x| (x - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.iter().map(|x| x / sum).collect()
    };
    let mut start = probs(0);
    let mut end = probs(1);
    start[0] = 0.0;
    end[0] = 0.0;
    let mut spans = Vec::new();
    for (s, p_start) in start.iter().enumerate() {
        for (e, p_end) in end.iter().enumerate().skip(s).take(max_answer_len) {
            spans.push((p_start * p_end, s, e));
        }
    }
    spans.sort_by(|a, b| b.0.total_cmp(&a.0));
    spans.truncate(top_k);
    spans.retain(|&(_, s, e)| desired[s] && desired[e] && s != 0 && e != 0);
    spans
}

#[test]
fn bert_question_answering_matches_transformers() {
    let loaded = load("bert-qa", Head::QuestionAnswering);
    let mut checked = 0;
    for case in cases("bert-qa") {
        let (Some(body), Some(expect)) = (body(&case), case["expect"].get("json")) else {
            continue;
        };
        let id = case["id"].as_str().expect("id");
        let params = &body["parameters"];
        let Some(input) = body.get("inputs").filter(|i| i.is_object()) else {
            continue;
        };
        let question = input["question"].as_str().expect("question");
        let context = input["context"].as_str().expect("context");
        // `QuestionAnsweringPipeline.preprocess` (fast tokenizer; `max_question_len` is only
        // used by slow ones): only_second truncation to `max_seq_len` with `doc_stride` overlap.
        let max_seq_len = params["max_seq_len"]
            .as_u64()
            .map_or(loaded.tokenizer.max_len().min(384), |m| m as usize);
        let doc_stride = params["doc_stride"]
            .as_u64()
            .map_or((max_seq_len / 2).min(128), |d| d as usize);
        let truncation = crate::pipelines::encode::Truncation {
            max_length: max_seq_len,
            stride: doc_stride,
            strategy: tokenizers::TruncationStrategy::OnlySecond,
        };
        let windows = crate::pipelines::encode::encode_pair(
            loaded.tokenizer.inner(),
            question,
            context,
            Some(truncation),
        )
        .expect("encode");
        let logits = loaded
            .encoder
            .forward(&loaded.tokenizer.pad_batch(&windows))
            .expect("forward");
        assert_eq!(logits.dims()[2], 2);
        let top_k = params["top_k"].as_u64().unwrap_or(1) as usize;
        let max_answer_len = params["max_answer_len"].as_u64().unwrap_or(15) as usize;
        // Candidates of every window, then the best `top_k` overall.
        let mut spans: Vec<(f32, usize, usize, usize)> = Vec::new();
        for (w, window) in windows.iter().enumerate() {
            let rows: Vec<Vec<f32>> = logits
                .get(w)
                .expect("row")
                .narrow(0, 0, window.len())
                .expect("narrow")
                .to_vec2()
                .expect("logits");
            let found = qa_spans(&rows, &window.get_sequence_ids(), top_k, max_answer_len);
            spans.extend(found.into_iter().map(|(p, s, e)| (p, w, s, e)));
        }
        spans.sort_by(|a, b| b.0.total_cmp(&a.0));
        spans.truncate(top_k);
        let want: Vec<&Value> = match expect {
            Value::Array(v) => v.iter().collect(),
            one => vec![one],
        };
        assert_eq!(spans.len(), want.len(), "{id}");
        for ((score, w, s, e), want) in spans.iter().zip(&want) {
            assert_close(*score, want["score"].as_f64().expect("score"), TOL, id);
            let offsets = windows[*w].get_offsets();
            let (start, end) = (offsets[*s].0 as u64, offsets[*e].1 as u64);
            if params["align_to_words"].as_bool() == Some(false) {
                assert_eq!(start, want["start"].as_u64().expect("start"), "{id}");
                assert_eq!(end, want["end"].as_u64().expect("end"), "{id}");
            } else {
                // Word alignment only widens the span to whole words.
                assert!(start >= want["start"].as_u64().expect("start"), "{id}");
                assert!(end <= want["end"].as_u64().expect("end"), "{id}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "checked {checked}");
}

#[test]
fn every_head_loads_and_has_its_shape_for_every_family() {
    let batch = EncoderBatch {
        input_ids: vec![vec![2, 100, 200, 3], vec![2, 100, 3, 0]],
        type_ids: vec![vec![0; 4]; 2],
        attention_mask: vec![vec![1, 1, 1, 1], vec![1, 1, 1, 0]],
        extra_type_ids: Vec::new(),
    };
    // bert-mlm has the MLM head; other heads need their own checkpoints.
    let cases = [
        ("bert-seqcls", Head::Base, vec![2, 4, 64]),
        ("bert-seqcls", Head::SequenceClassification, vec![2, 2]),
        ("bert-tokcls", Head::TokenClassification, vec![2, 4, 7]),
        ("bert-qa", Head::QuestionAnswering, vec![2, 4, 2]),
        ("bert-mlm", Head::MaskedLm, vec![2, 4, 2000]),
        ("distilbert-seqcls", Head::Base, vec![2, 4, 64]),
        (
            "distilbert-seqcls",
            Head::SequenceClassification,
            vec![2, 3],
        ),
        ("roberta-seqcls", Head::SequenceClassification, vec![2, 4]),
    ];
    for (model, head, dims) in cases {
        let dir = fixture(model);
        let config = ModelConfig::from_dir(&dir).expect("config");
        let encoder = Encoder::load(&dir, &config, head, WeightDtype::F32).expect("load");
        assert_eq!(encoder.head(), head);
        let out = encoder.forward(&batch).expect("forward");
        assert_eq!(out.dims(), dims.as_slice(), "{model} {head:?}");
    }
}

#[test]
fn missing_head_weights_name_the_tensor() {
    let dir = fixture("bert-seqcls");
    let config = ModelConfig::from_dir(&dir).expect("config");
    let err = Encoder::load(&dir, &config, Head::QuestionAnswering, WeightDtype::F32).err();
    let Some(ModelError::Candle(e)) = err else {
        panic!("expected a candle error, got {err:?}");
    };
    assert!(e.to_string().contains("qa_outputs"), "{e}");
}

#[test]
fn slow_tokenizer_fixture_token_classification_matches_transformers() {
    assert_eq!(check_token_classification("bert-tokcls-slowtok"), 1);
}

#[test]
fn encoder_and_tokenizer_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Encoder>();
    check::<TextTokenizer>();
}

/// Copies `model`'s files into a temp dir, rewriting `config.json` with `edit`.
fn copy_fixture(model: &str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture(model)).expect("dir") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let path = dir.path().join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write");
    dir
}

/// XLM-RoBERTa's modeling code is RoBERTa's: the roberta-seqcls checkpoint declared as
/// `xlm-roberta` must give the same logits.
#[test]
fn xlm_roberta_runs_the_roberta_encoder() {
    let dir = copy_fixture("roberta-seqcls", |c| {
        c["model_type"] = "xlm-roberta".into();
        c["architectures"] = serde_json::json!(["XLMRobertaForSequenceClassification"]);
    });
    let config = ModelConfig::from_dir(dir.path()).expect("config");
    assert_eq!(config.position_offset(), 2);
    let tokenizer = TextTokenizer::from_dir(dir.path(), &config).expect("tokenizer");
    let xlmr = Encoder::load(
        dir.path(),
        &config,
        Head::SequenceClassification,
        WeightDtype::F32,
    )
    .expect("load");
    let roberta = load("roberta-seqcls", Head::SequenceClassification);
    let enc = tokenizer
        .encode_batch(
            vec![EncodeInput::Single("Hello world, this is RoBERTa.".into())],
            true,
        )
        .expect("encode");
    let batch = tokenizer.pad_batch(&enc);
    let a: Vec<Vec<f32>> = xlmr.forward(&batch).expect("fwd").to_vec2().expect("v");
    let b: Vec<Vec<f32>> = roberta
        .encoder
        .forward(&batch)
        .expect("fwd")
        .to_vec2()
        .expect("v");
    assert_eq!(a, b);
}

/// Old checkpoints name LayerNorm parameters `gamma`/`beta`; they load as `weight`/`bias`.
#[test]
fn legacy_gamma_beta_names_load() {
    let src = fixture("bert-seqcls");
    let all =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).expect("load");
    let renamed: std::collections::HashMap<String, Tensor> = all
        .into_iter()
        .map(|(name, t)| {
            let name = if name.contains("LayerNorm") {
                name.replace(".weight", ".gamma").replace(".bias", ".beta")
            } else {
                name
            };
            (name, t)
        })
        .collect();
    assert!(renamed.contains_key("bert.embeddings.LayerNorm.gamma"));
    let dir = tempfile::tempdir().expect("tempdir");
    candle_core::safetensors::save(&renamed, dir.path().join("model.safetensors")).expect("save");
    let config = ModelConfig::from_dir(&src).expect("config");
    let old = Encoder::load(
        dir.path(),
        &config,
        Head::SequenceClassification,
        WeightDtype::F32,
    )
    .expect("load");
    let new = Encoder::load(
        &src,
        &config,
        Head::SequenceClassification,
        WeightDtype::F32,
    )
    .expect("load");
    let batch = EncoderBatch {
        input_ids: vec![vec![2, 100, 200, 3]],
        type_ids: vec![vec![0; 4]],
        attention_mask: vec![vec![1; 4]],
        extra_type_ids: Vec::new(),
    };
    let a: Vec<Vec<f32>> = old.forward(&batch).expect("fwd").to_vec2().expect("v");
    let b: Vec<Vec<f32>> = new.forward(&batch).expect("fwd").to_vec2().expect("v");
    assert_eq!(a, b);
}

/// Tiny random XLM-RoBERTa, ELECTRA, ALBERT and DeBERTa-v2 models with every head, made by
/// `testdata/make_fixtures.py` with transformers 4.51.3: our outputs on its padded batch equal
/// transformers' on every real token.
#[test]
fn extra_families_match_transformers_on_every_head() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/models/testdata");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("expected.json")).expect("expected.json"),
    )
    .expect("json");
    let lengths: Vec<usize> = expected["lengths"]
        .as_array()
        .expect("lengths")
        .iter()
        .map(|l| l.as_u64().expect("len") as usize)
        .collect();
    let models = expected["models"].as_object().expect("models");
    assert_eq!(models.len(), 20);
    for (name, want) in models {
        let head = match want["head"].as_str().expect("head") {
            "base" => Head::Base,
            "seqcls" => Head::SequenceClassification,
            "tokcls" => Head::TokenClassification,
            "qa" => Head::QuestionAnswering,
            "mlm" => Head::MaskedLm,
            other => panic!("head {other}"),
        };
        let rows = |key: &str| -> Vec<Vec<u32>> {
            want[key]
                .as_array()
                .expect("rows")
                .iter()
                .map(|r| {
                    r.as_array()
                        .expect("row")
                        .iter()
                        .map(|v| v.as_u64().expect("id") as u32)
                        .collect()
                })
                .collect()
        };
        let input_ids = rows("input_ids");
        let batch = EncoderBatch {
            type_ids: input_ids.iter().map(|r| vec![0; r.len()]).collect(),
            attention_mask: rows("attention_mask"),
            extra_type_ids: Vec::new(),
            input_ids,
        };
        let dir = root.join(name);
        let config = ModelConfig::from_dir(&dir).expect("config");
        let encoder = Encoder::load(&dir, &config, head, WeightDtype::F32)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let out = encoder
            .forward(&batch)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim") as usize)
            .collect();
        assert_eq!(out.dims(), shape.as_slice(), "{name}");
        let got: Vec<f32> = out.flatten_all().expect("flat").to_vec1().expect("values");
        let values = want["output"].as_array().expect("output");
        let per_row = got.len() / shape[0];
        let per_token = if shape.len() == 3 { shape[2] } else { per_row };
        let mut compared = 0;
        for (i, (a, e)) in got.iter().zip(values).enumerate() {
            let (row, token) = (i / per_row, (i % per_row) / per_token);
            if shape.len() == 3 && token >= lengths[row] {
                continue;
            }
            assert_close(*a, e.as_f64().expect("f"), TOL, &format!("{name} [{i}]"));
            compared += 1;
        }
        assert!(compared > 0, "{name}");
    }
}

/// Forward time of a BERT-base-sized encoder (random weights) at 1 × 128 and 8 × 128. Run with
/// `cargo test --release -p sagebrush --lib bench_bert_base -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: prints timings"]
fn bench_bert_base_forward() {
    let config = ModelConfig::from_value(serde_json::json!({
        "model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
        "type_vocab_size": 2, "hidden_act": "gelu", "num_labels": 2
    }))
    .expect("config");
    let mut tensors = std::collections::HashMap::new();
    let mut add = |name: String, shape: &[usize]| {
        let t = Tensor::randn(0f32, 0.02, shape, &Device::Cpu).expect("randn");
        tensors.insert(name, t);
    };
    let h = 768;
    add("bert.embeddings.word_embeddings.weight".into(), &[30522, h]);
    add(
        "bert.embeddings.position_embeddings.weight".into(),
        &[512, h],
    );
    add(
        "bert.embeddings.token_type_embeddings.weight".into(),
        &[2, h],
    );
    add("bert.embeddings.LayerNorm.weight".into(), &[h]);
    add("bert.embeddings.LayerNorm.bias".into(), &[h]);
    for i in 0..12 {
        let p = format!("bert.encoder.layer.{i}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", 3072, h),
            ("output.dense", h, 3072),
        ] {
            add(format!("{p}.{name}.weight"), &[out, inp]);
            add(format!("{p}.{name}.bias"), &[out]);
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}.{name}.weight"), &[h]);
            add(format!("{p}.{name}.bias"), &[h]);
        }
    }
    add("bert.pooler.dense.weight".into(), &[h, h]);
    add("bert.pooler.dense.bias".into(), &[h]);
    add("classifier.weight".into(), &[2, h]);
    add("classifier.bias".into(), &[2]);
    let vb = candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu);
    let encoder =
        Encoder::from_var_builder(&vb, &config, Head::SequenceClassification).expect("load");
    // candle-transformers' BERT on the same weights, timed interleaved with ours (the machine
    // may be busy: compare the two, not the absolute numbers).
    let cfg: candle_transformers::models::bert::Config =
        serde_json::from_value(serde_json::json!({
            "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
            "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "classifier_dropout": null, "model_type": "bert"
        }))
        .expect("cfg");
    let reference =
        candle_transformers::models::bert::BertModel::load(vb.pp("bert"), &cfg).expect("load");
    let ids = Tensor::new(
        vec![(0..128u32).map(|i| 1000 + i).collect::<Vec<_>>()],
        &Device::Cpu,
    )
    .expect("ids");
    let types = ids.zeros_like().expect("types");
    let batch = EncoderBatch {
        input_ids: vec![(0..128).map(|i| 1000 + i).collect()],
        type_ids: vec![vec![0; 128]],
        attention_mask: vec![vec![1; 128]],
        extra_type_ids: Vec::new(),
    };
    let base = Encoder::from_var_builder(&vb, &config, Head::Base).expect("load");
    let ours = base.forward(&batch).expect("fwd");
    let theirs = reference.forward(&ids, &types, None).expect("fwd");
    let diff: f32 = (ours - &theirs)
        .expect("sub")
        .abs()
        .expect("abs")
        .flatten_all()
        .expect("flat")
        .max(0)
        .expect("max")
        .to_scalar()
        .expect("scalar");
    eprintln!("max |ours - candle-transformers| = {diff:e}");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let start = std::time::Instant::now();
        base.forward(&batch).expect("forward");
        a.push(start.elapsed().as_secs_f64() * 1000.0);
        let start = std::time::Instant::now();
        reference.forward(&ids, &types, None).expect("forward");
        b.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    eprintln!(
        "1 x 128 median: ours {:.1} ms, candle-transformers {:.1} ms",
        a[2], b[2]
    );
    for rows in [1usize, 8] {
        let batch = EncoderBatch {
            input_ids: vec![(0..128).map(|i| 1000 + i).collect(); rows],
            type_ids: vec![vec![0; 128]; rows],
            attention_mask: vec![vec![1; 128]; rows],
            extra_type_ids: Vec::new(),
        };
        encoder.forward(&batch).expect("warm-up");
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                encoder.forward(&batch).expect("forward");
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        eprintln!(
            "bert-base {rows} x 128: median {:.1} ms, min {:.1} ms",
            times[2], times[0]
        );
    }
}

#[test]
fn forward_positions_equals_forward_at_those_positions() {
    let loaded = load("bert-mlm", Head::MaskedLm);
    let enc = loaded
        .tokenizer
        .encode_batch(
            vec![
                EncodeInput::Single("The [MASK] of the [MASK].".into()),
                EncodeInput::Single("Open the [MASK].".into()),
            ],
            false,
        )
        .expect("encode");
    let batch = loaded.tokenizer.pad_batch(&enc);
    let full = loaded.encoder.forward(&batch).expect("forward");
    let positions = [(0, 2), (1, 3), (0, 5)];
    let picked = loaded
        .encoder
        .forward_positions(&batch, &positions)
        .expect("positions");
    assert_eq!(picked.dims(), &[3, 2000]);
    for (i, &(row, pos)) in positions.iter().enumerate() {
        let a: Vec<f32> = picked.get(i).expect("row").to_vec1().expect("v");
        let b: Vec<f32> = full
            .get(row)
            .expect("row")
            .get(pos)
            .expect("pos")
            .to_vec1()
            .expect("v");
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-5, "({row}, {pos}): {diff}");
    }
    assert!(matches!(
        loaded.encoder.forward_positions(&batch, &[(2, 0)]),
        Err(ModelError::BadBatch { .. })
    ));
}

/// `n` pseudo-random floats in `[-scale, scale)` from `seed` (a 64-bit LCG): test inputs for the
/// kernels, the same on every run.
pub(crate) fn lcg(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

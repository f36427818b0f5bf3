//! Native pipelines and tokenizers as host resources for guests (issue #16, WIT 0.2.0), over
//! real HTTP: a pipeline a guest's `model_fn` returns is the default predictor; a model
//! directory without weights is served by a guest alone (the model directory's own pipeline is
//! built only when something needs it); pipelines loaded per request, with the host's refusals
//! (bad subfolder, unknown task) named; the host tokenizer against transformers' answer; a
//! component of the frozen 0.1.0 world still served. The two-pipelines example is served in
//! `hooks.rs` (every example is).

use std::path::Path;

use serde_json::{Value, json};

use crate::support::compare::json_close;
use crate::support::guests::{guest, model_with_guest};
use crate::support::{Server, cases_file, copy_dir, fixture, repo_root};

/// The `expect.json` of conformance case `id` (transformers' answer) and its request's
/// `inputs`.
pub(crate) fn case(model: &str, id: &str) -> (Value, Value) {
    let text = std::fs::read_to_string(cases_file(model)).expect("cases file");
    let case: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("case JSON"))
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no case {id}"));
    let body: Value =
        serde_json::from_str(case["request"]["body"].as_str().expect("body")).expect("body JSON");
    (body["inputs"].clone(), case["expect"]["json"].clone())
}

/// A SageMaker base dir whose `model` holds only `guest` as `code/inference.wasm` and `files`
/// (name, contents), and the fixture models in `subfolders` (subfolder, fixture name).
fn model_dir(
    guest_name: &str,
    files: &[(&str, &str)],
    subfolders: &[(&str, &str)],
) -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("tempdir");
    let model = base.path().join("model");
    std::fs::create_dir_all(model.join("code")).expect("mkdir");
    std::fs::copy(guest(guest_name), model.join("code/inference.wasm")).expect("copy guest");
    for (name, contents) in files {
        std::fs::write(model.join(name), contents).expect("write");
    }
    for (sub, name) in subfolders {
        copy_dir(&fixture(name), &model.join(sub));
    }
    base
}

fn serve(base: &Path, extra: &[&str]) -> Server {
    let mut builder = Server::builder().model(base.join("model"));
    for arg in extra {
        builder = builder.arg(*arg);
    }
    builder.start()
}

#[test]
fn a_pipeline_returned_by_model_fn_is_the_default_predictor() {
    // No model at the top level: only `ner/`, which model_fn loads as token-classification.
    let base = model_dir("pipeline-model", &[], &[("ner", "bert-tokcls")]);
    let server = serve(base.path(), &["--workers", "2"]).wait_ready();
    let (inputs, expected) = case("bert-tokcls", "bert-tokcls/single_inferred");
    let answer = server.invoke(&json!({ "inputs": inputs }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    json_close(&answer.json(), &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    // Two instances ran model_fn; the pipeline was loaded once and shared.
    let logs = server.logs();
    assert_eq!(
        logs.matches("native pipeline loaded for user code").count(),
        1,
        "{logs}"
    );
    assert!(
        logs.contains("user code predicts by itself"),
        "the model directory's pipeline is not built: {logs}"
    );
}

#[test]
fn a_model_directory_without_weights_is_served_by_a_guest_alone() {
    let base = model_dir(
        "host-resources",
        &[("greeting.txt", "hello from a data file\n")],
        &[],
    );
    let server = serve(base.path(), &[]).wait_ready();
    let answer = server.invoke(&json!({ "op": "greeting" }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        json!({ "greeting": "hello from a data file" })
    );
    // The model directory's own pipeline is built on first use, and there is none to build:
    // a 500 that names the cause.
    let answer = server.invoke(&json!({ "op": "default", "inputs": "x" }));
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("the model directory's native pipeline cannot be loaded")
            && answer.body.contains("config.json"),
        "{}",
        answer.body
    );
    // /ping stays healthy: the guest serves.
    assert_eq!(server.get("/ping").status, 200);
}

#[test]
fn pipelines_loaded_per_request_are_shared_and_refusals_name_their_cause() {
    let base = model_dir(
        "host-resources",
        &[("greeting.txt", "hi")],
        &[("cls", "bert-seqcls")],
    );
    std::fs::create_dir_all(base.path().join("model/tok-only")).expect("mkdir");
    std::fs::copy(
        fixture("bert-seqcls").join("tokenizer.json"),
        base.path().join("model/tok-only/tokenizer.json"),
    )
    .expect("copy tokenizer");
    let server = serve(base.path(), &["--workers", "2"]).wait_ready();
    let (inputs, expected) = case("bert-seqcls", "bert-seqcls/single_inferred");
    for _ in 0..3 {
        let answer = server.invoke(&json!({
            "op": "predict", "task": "sentiment-analysis", "subfolder": "cls", "inputs": inputs
        }));
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["task"], "text-classification");
        json_close(&answer.json()["answer"], &expected, 1e-4)
            .unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    }
    let logs = server.logs();
    assert_eq!(
        logs.matches("native pipeline loaded for user code").count(),
        1,
        "loaded once, shared by every call and instance: {logs}"
    );
    for (request, says) in [
        (
            json!({ "op": "predict", "task": "text-classification", "subfolder": "../cls", "inputs": "x" }),
            "subfolder `../cls` must be a relative path inside the model directory (no `..`, not absolute)",
        ),
        (
            json!({ "op": "predict", "task": "text-classification", "subfolder": "/etc", "inputs": "x" }),
            "not absolute",
        ),
        (
            json!({ "op": "predict", "task": "text-classification", "subfolder": "nowhere", "inputs": "x" }),
            "subfolder `nowhere` does not exist in the model directory",
        ),
        (
            json!({ "op": "predict", "task": "sentiment-analyzer", "subfolder": "cls", "inputs": "x" }),
            "unknown task `sentiment-analyzer` for pipeline.load",
        ),
        (
            json!({ "op": "predict", "task": "text-classification", "subfolder": "tok-only", "inputs": "x" }),
            "cannot load a text-classification pipeline from subfolder `tok-only`",
        ),
        (
            json!({ "op": "tokenize", "subfolder": "nowhere", "text": "x" }),
            "subfolder `nowhere` does not exist",
        ),
    ] {
        let answer = server.invoke(&request);
        assert_eq!(answer.status, 400, "{request}: {}", answer.body);
        assert!(answer.body.contains(says), "{request}: {}", answer.body);
    }
}

#[test]
fn the_host_tokenizer_answers_as_transformers_does() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("tests/fixtures/guest-resources/tokenizer_expected.json"),
        )
        .expect("expected answer"),
    )
    .expect("JSON");
    let base = model_dir("host-resources", &[("greeting.txt", "hi")], &[]);
    std::fs::create_dir_all(base.path().join("model/tok")).expect("mkdir");
    std::fs::copy(
        fixture("bert-seqcls").join("tokenizer.json"),
        base.path().join("model/tok/tokenizer.json"),
    )
    .expect("copy tokenizer");
    let server = serve(base.path(), &[]).wait_ready();
    let answer =
        server.invoke(&json!({ "op": "tokenize", "subfolder": "tok", "text": expected["text"] }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let got = answer.json();
    for key in ["ids", "offsets", "tokens", "decoded"] {
        assert_eq!(got[key], expected[key], "{key}: {}", answer.body);
    }
    // The model directory's own tokenizer: there is none here.
    let answer = server.invoke(&json!({ "op": "tokenize", "text": "x" }));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("cannot load the tokenizer of the model directory"),
        "{}",
        answer.body
    );
}

#[test]
fn a_component_of_the_0_1_0_world_is_still_served() {
    let base = model_with_guest(&fixture("bert-seqcls"), "wit-0-1-0");
    let server = Server::start(base.path().join("model")).wait_ready();
    server.wait_for_log(&["sagebrush:handler@0.1.0"]);
    let (inputs, expected) = case("bert-seqcls", "bert-seqcls/single_inferred");
    let answer = server.invoke(&json!({ "inputs": inputs }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["wit"], "0.1.0", "{body}");
    assert_eq!(body["task"], "text-classification", "{body}");
    json_close(&body["answer"], &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {body}"));
    json_close(&body["again"], &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {body}"));
    server.wait_for_log(&["0.1.0 input_fn for"]);
}

#[test]
fn loading_the_model_directorys_own_task_is_its_own_lazy_pipeline_not_a_second_copy() {
    let base = model_dir("host-resources", &[("greeting.txt", "hi")], &[]);
    copy_dir(&fixture("bert-seqcls"), &base.path().join("model"));
    let server = serve(base.path(), &[]).wait_ready();
    // transform_fn serves alone: the model directory's pipeline waits for first use.
    server.wait_for_log(&["user code predicts by itself"]);
    let (inputs, expected) = case("bert-seqcls", "bert-seqcls/single_inferred");
    // An alias of the model's task, over the model directory itself, then the default pipeline.
    for request in [
        json!({ "op": "predict", "task": "sentiment-analysis", "inputs": inputs }),
        json!({ "op": "default", "inputs": inputs }),
    ] {
        let answer = server.invoke(&request);
        assert_eq!(answer.status, 200, "{request}: {}", answer.body);
        assert_eq!(answer.json()["task"], "text-classification");
        json_close(&answer.json()["answer"], &expected, 1e-4)
            .unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    }
    let logs = server.logs();
    assert_eq!(
        logs.matches("building the model directory's native pipeline on first use")
            .count(),
        1,
        "{logs}"
    );
    assert!(
        !logs.contains("native pipeline loaded for user code"),
        "no second copy: {logs}"
    );
}

//! User code in WebAssembly over HTTP (contract §6): each example guest and each test guest in a
//! real server with the `bert-seqcls` fixture, its guest as `code/inference.wasm`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::compare::json_close;
use crate::support::guests::{examples, guest, model_with_guest};
use crate::support::{Server, fixture, repo_root};

/// transformers' answer for this text on bert-seqcls (case `bert-seqcls/single_inferred`).
const TEXT: &str = "The movie was wonderful and the actors were great. I loved it.";
const TEXT_LABEL: &str = "NEGATIVE";
const TEXT_SCORE: f64 = 0.5804130434989929;

const TRANSFORM_CONFLICT: &str = "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation";

fn serve(guest_name: &str, extra: &[&str]) -> (Server, tempfile::TempDir) {
    let base = model_with_guest(&fixture("bert-seqcls"), guest_name);
    let mut builder = Server::builder().model(base.path().join("model"));
    for arg in extra {
        builder = builder.arg(*arg);
    }
    (builder.start().wait_ready(), base)
}

/// Every `examples/*` crate is served by a test of this file: its name is the guest argument of
/// a `serve(..)` or `model_with_guest(..)` call in a `#[test]` function. Both sides are read
/// from the tree (the `examples/` directory and this file's source), so a new example without
/// a test, or a test removed, fails here.
#[test]
fn every_example_guest_is_served_by_a_test() {
    let source = std::fs::read_to_string(repo_root().join("tests/e2e/hooks.rs")).expect("source");
    let served = guests_served_by_tests(&source);
    let examples = examples();
    assert!(!examples.is_empty(), "no examples found");
    for example in examples {
        assert!(
            served.contains(&example),
            "examples/{example} is not served by any test in tests/e2e/hooks.rs (served: {served:?})"
        );
    }
}

/// The guest names passed to `serve("name"` or `model_with_guest(.., "name")` inside the
/// `#[test]` functions of `source` (the helpers' own definitions are not calls).
fn guests_served_by_tests(source: &str) -> Vec<String> {
    let mut served = Vec::new();
    for test in source.split("#[test]").skip(1) {
        for call in ["serve(\"", "model_with_guest("] {
            for (at, _) in test.match_indices(call) {
                let rest = &test[at + call.len()..];
                let rest = match call {
                    "model_with_guest(" => rest
                        .split_once(')')
                        .and_then(|(args, _)| args.split_once(", \""))
                        .map_or("", |(_, name)| name),
                    _ => rest,
                };
                if let Some((name, _)) = rest.split_once('"') {
                    served.push(name.to_owned());
                }
            }
        }
    }
    served
}

#[test]
fn hooks_found_are_logged_at_load() {
    let (server, _base) = serve("postprocess", &[]);
    server.wait_for_log(&["user code hooks found", "output_fn"]);
    server.wait_for_log(&["guest component compiled", "sha256"]);
}

#[test]
fn preprocess_only_guest_cleans_html_then_the_native_pipeline_answers() {
    let (server, _base) = serve("preprocess-only", &[]);
    let messy = format!("<div>\n  <p>{}</p>&nbsp;</div>", TEXT.replace(' ', "   "));
    let answer = server.invoke(&json!({ "inputs": messy }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let expected = json!([{ "label": TEXT_LABEL, "score": TEXT_SCORE }]);
    json_close(&answer.json(), &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", answer.body));

    let plain = server.post(
        "/invocations",
        &[("content-type", "text/plain")],
        format!("<b>{TEXT}</b>"),
    );
    assert_eq!(plain.status, 200, "{}", plain.body);
    json_close(&plain.json(), &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", plain.body));

    let refused = server.post(
        "/invocations",
        &[("content-type", "application/x-npy")],
        "xx",
    );
    let message = refused.expect_error(415, "unsupported_media");
    assert!(message.contains("preprocess-only reads"), "{message}");
}

#[test]
fn postprocess_guest_reshapes_the_answer_and_honours_accept() {
    let (server, _base) = serve("postprocess", &[]);
    let body = json!({ "inputs": TEXT }).to_string();
    let answer = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("x-amzn-sagemaker-custom-attributes", "trace=42"),
        ],
        body.clone(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let expected = json!({
        "task": "text-classification",
        "predictions": [{ "label": "bad", "score": TEXT_SCORE, "confident": false }],
    });
    json_close(&answer.json(), &expected, 1e-4).unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    assert_eq!(
        answer.header("x-amzn-sagemaker-custom-attributes"),
        Some("trace=42")
    );
    assert_eq!(answer.header("x-sagebrush-guest"), Some("postprocess"));

    let csv = server.post(
        "/invocations",
        &[("content-type", "application/json"), ("accept", "text/csv")],
        body.clone(),
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.header("content-type"), Some("text/csv"));
    let rows: Vec<&str> = csv.body.lines().collect();
    assert_eq!(rows[0], "label,score,confident");
    let cells: Vec<&str> = rows[1].split(',').collect();
    assert_eq!((cells[0], cells[2]), ("bad", "false"), "{}", csv.body);
    let score: f64 = cells[1].parse().expect("a number");
    assert!((score - TEXT_SCORE).abs() <= 1e-4, "{score}");

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

/// The tokenizer example's answer, recomputed from the fixture's vocab.txt and config.json.
fn tokenizer_answer(model_dir: &Path, text: &str) -> Value {
    let vocab = std::fs::read_to_string(model_dir.join("vocab.txt")).expect("vocab");
    let ids: HashMap<&str, u64> = vocab.lines().zip(0u64..).collect();
    let config: Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("config.json")).expect("config"))
            .expect("json");
    let labels = config["id2label"].as_object().expect("id2label");
    let mut pieces: Vec<String> = Vec::new();
    for word in text.to_lowercase().split_whitespace() {
        let mut current = String::new();
        for c in word.chars() {
            if c.is_alphanumeric() {
                current.push(c);
            } else {
                if !current.is_empty() {
                    pieces.push(std::mem::take(&mut current));
                }
                pieces.push(c.to_string());
            }
        }
        if !current.is_empty() {
            pieces.push(current);
        }
    }
    let unk = ids["[UNK]"];
    let token_ids: Vec<u64> = pieces
        .iter()
        .map(|p| ids.get(p.as_str()).copied().unwrap_or(unk))
        .collect();
    let known = token_ids.iter().filter(|&&i| i != unk).count();
    let label = &labels[&(token_ids.iter().sum::<u64>() % labels.len() as u64).to_string()];
    json!({ "label": label, "score": known as f64 / token_ids.len() as f64, "tokens": pieces, "ids": token_ids })
}

#[test]
fn tokenizer_model_fn_guest_predicts_with_its_own_model() {
    let (server, base) = serve("tokenizer-model-fn", &[]);
    server.wait_for_log(&["user code model_fn loaded its model", "vocab of"]);
    let text = "Great actors, qwxz plot!";
    let answer = server.invoke(&json!({ "inputs": text }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        tokenizer_answer(&base.path().join("model"), text)
    );

    let bad = server.invoke(&json!({ "inputs": 7 }));
    let message = bad.expect_error(400, "user_code");
    assert!(message.contains("`inputs` must be a string"), "{message}");
}

#[test]
fn transform_guest_owns_the_request() {
    let (server, _base) = serve("transform", &[]);
    let answer = server.post(
        "/invocations",
        &[
            ("content-type", "text/plain"),
            ("accept", "text/plain"),
            ("x-amzn-sagemaker-custom-attributes", "a=1"),
        ],
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
    assert_eq!(
        answer.header("x-amzn-sagemaker-custom-attributes"),
        Some("a=1;transformed=1")
    );

    let json_answer = server.invoke(&json!({ "inputs": TEXT }));
    assert_eq!(json_answer.status, 200, "{}", json_answer.body);
    let body = json_answer.json();
    assert_eq!(
        body["request_id"],
        json_answer.header("x-request-id").expect("request id")
    );
    json_close(
        &body["prediction"],
        &json!([{ "label": TEXT_LABEL, "score": TEXT_SCORE }]),
        1e-4,
    )
    .unwrap_or_else(|e| panic!("{e}: {}", json_answer.body));

    let unknown = server.invoke(&json!({ "inputs": TEXT, "parameters": { "nonsense": 1 } }));
    let message = unknown.expect_error(400, "user_code");
    assert!(message.contains("nonsense"), "{message}");
}

#[test]
fn transform_fn_mixed_with_input_fn_fails_the_load_with_the_spec_message() {
    let base = model_with_guest(&fixture("bert-seqcls"), "transform-conflict");
    let server = Server::builder().model(base.path().join("model")).start();
    let ping = server.wait_settled();
    assert_eq!(ping.status, 503, "{}", ping.body);
    assert!(ping.body.contains(TRANSFORM_CONFLICT), "{}", ping.body);
    server.wait_for_log(&["model failed to load", TRANSFORM_CONFLICT]);
}

#[test]
fn a_panicking_guest_fails_only_its_request() {
    let (server, _base) = serve("misbehave", &["--workers", "1"]);
    let panic = server.post("/invocations", &[("content-type", "text/plain")], "panic");
    let message = panic.expect_error(500, "guest_trap");
    assert!(
        message.contains("guest panic: asked to by request"),
        "{message}"
    );
    server.wait_for_log(&["guest panic: asked to by request", "input_fn"]);
    // input_fn wraps the text, the native pipeline classifies it, output_fn echoes the answer.
    let next = server.post(
        "/invocations",
        &[("content-type", "text/plain")],
        "still alive",
    );
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(next.json()[0]["label"].is_string(), "{}", next.body);
}

#[test]
fn a_guest_cannot_overwrite_server_owned_response_headers() {
    let (server, _base) = serve("misbehave", &["--workers", "1"]);
    let answer = server.post(
        "/invocations",
        &[
            ("content-type", "text/plain"),
            ("x-test-forge-headers", "1"),
            ("x-request-id", "real-id"),
        ],
        "hello",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-request-id"), Some("real-id"));
    assert_eq!(answer.header("x-guest-extra"), Some("kept"));
    assert!(answer.json()[0]["label"].is_string(), "{}", answer.body);
    server.wait_for_log(&["may not set this response header", "x-request-id"]);
}

#[test]
fn a_runaway_guest_is_interrupted_and_the_next_request_works() {
    let (server, _base) = serve(
        "misbehave",
        &["--workers", "1", "--guest-timeout-ms", "300"],
    );
    let runaway = server.post("/invocations", &[("content-type", "text/plain")], "loop");
    let message = runaway.expect_error(500, "guest_trap");
    assert!(
        message.contains("did not finish within 300 ms"),
        "{message}"
    );
    let next = server.post("/invocations", &[("content-type", "text/plain")], "after");
    assert_eq!(next.status, 200, "{}", next.body);
}

#[test]
fn a_memory_hog_guest_hits_its_limit_and_the_next_request_works() {
    let (server, _base) = serve("misbehave", &["--workers", "1", "--guest-memory-mb", "32"]);
    let hog = server.post("/invocations", &[("content-type", "text/plain")], "oom");
    let message = hog.expect_error(500, "guest_trap");
    assert!(message.contains("memory limit of 32 MiB"), "{message}");
    let next = server.post("/invocations", &[("content-type", "text/plain")], "after");
    assert_eq!(next.status, 200, "{}", next.body);
}

#[test]
fn a_guest_sees_no_token_no_files_and_no_network() {
    let base = model_with_guest(&fixture("bert-seqcls"), "sandbox-probe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let server = Server::builder()
        .model(base.path().join("model"))
        .env("HF_TOKEN", "hf_secret_e2e_token")
        .start()
        .wait_ready();
    let answer =
        server.invoke(&json!({ "connect": listener.local_addr().expect("addr").to_string() }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let report = answer.json();
    assert_eq!(report["hf_token"], Value::Null, "{report}");
    assert_eq!(report["env_vars"], json!([]), "{report}");
    assert!(report["etc_passwd"]["err"].is_string(), "{report}");
    assert!(report["model_config"]["ok"].is_string(), "{report}");
    assert!(report["model_write"]["err"].is_string(), "{report}");
    assert!(report["tcp_connect"]["err"].is_string(), "{report}");
    assert!(matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    assert!(!answer.body.contains("hf_secret_e2e_token"));
    assert!(!server.logs().contains("hf_secret_e2e_token"));
}

#[test]
fn package_writes_an_archive_that_serves_with_its_guest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("model.tar.gz");
    let status = Command::new(env!("CARGO_BIN_EXE_sagebrush"))
        .args(["package", "--model-dir"])
        .arg(fixture("bert-seqcls"))
        .arg("--code")
        .arg(guest("postprocess"))
        .arg("-o")
        .arg(&archive)
        .status()
        .expect("sagebrush package runs");
    assert!(status.success());
    let server = Server::start(&archive).wait_ready();
    let answer = server.invoke(&json!({ "inputs": TEXT }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["predictions"][0]["label"],
        "bad",
        "{}",
        answer.body
    );
}

/// A folder holding `bert-seqcls` as `classifier/` and `bert-tokcls` as `ner/` (nothing at the
/// top level), when `with_ner`; only `classifier/` otherwise.
fn two_models(with_ner: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::support::copy_dir(&fixture("bert-seqcls"), &dir.path().join("classifier"));
    if with_ner {
        crate::support::copy_dir(&fixture("bert-tokcls"), &dir.path().join("ner"));
    }
    dir
}

#[test]
fn two_pipelines_guest_combines_two_native_models_from_subfolders() {
    let models = two_models(true);
    let models_dir = models.path().to_path_buf();
    let base = model_with_guest(&models_dir, "two-pipelines");
    let server = Server::builder()
        .model(base.path().join("model"))
        .arg("--workers")
        .arg("2")
        .start()
        .wait_ready();
    server.wait_for_log(&[
        "user code model_fn loaded its model",
        "classifier/ (text-classification) + ner/ (token-classification)",
    ]);
    let (text, sentiment) =
        crate::guest_resources::case("bert-seqcls", "bert-seqcls/single_inferred");
    let (ner_text, entities) =
        crate::guest_resources::case("bert-tokcls", "bert-tokcls/single_inferred");
    let answer = server.invoke(&json!({ "inputs": text }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    json_close(&answer.json()["sentiment"], &sentiment, 1e-4)
        .unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    let answer = server.invoke(&json!({ "inputs": ner_text }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    json_close(&answer.json()["entities"], &entities, 1e-4)
        .unwrap_or_else(|e| panic!("{e}: {}", answer.body));
    // Two instances each ran model_fn; each pipeline was loaded once.
    let logs = server.logs();
    assert_eq!(
        logs.matches("native pipeline loaded for user code").count(),
        2,
        "{logs}"
    );
    let answer = server.invoke(&json!({ "text": "no inputs" }));
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.body.contains("the request needs `inputs`"),
        "{}",
        answer.body
    );
}

#[test]
fn a_model_fn_loading_a_missing_subfolder_fails_the_load_naming_it() {
    let models = two_models(false);
    let models_dir = models.path().to_path_buf();
    let base = model_with_guest(&models_dir, "two-pipelines");
    let server = Server::start(base.path().join("model"));
    let ping = server.wait_settled();
    assert_eq!(ping.status, 503, "{}", ping.body);
    assert!(
        ping.body
            .contains("subfolder `ner` does not exist in the model directory"),
        "{}",
        ping.body
    );
}

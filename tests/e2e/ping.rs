//! `/ping` lifecycle and `/execution-parameters` (contract §1).

use std::io::Write;

use crate::support::{Server, fixture};

/// A FIFO as the model archive: the server blocks reading it until the test writes the
/// archive, so "still loading" is observed deterministically.
#[test]
fn ping_is_503_until_model_loaded_then_200() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.tar.gz");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start(&fifo);
    let loading = server.get("/ping");
    let message = loading.expect_error(503, "model_not_ready");
    assert!(message.contains("loading"), "{message}");
    let inv = server.invoke(&serde_json::json!({"inputs": "hello"}));
    inv.expect_error(503, "model_not_ready");

    let archive = std::fs::read(fixture("bert-seqcls-targz").join("model.tar.gz")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(&archive)
        .unwrap();
    let server = server.wait_ready();
    let ready = server.get("/ping");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body, "");
    assert!(ready.header("x-request-id").is_some());
}

#[test]
fn ping_is_503_after_a_failed_load_and_the_cause_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["FancyNewModel"], "model_type": "fancy"}"#,
    )
    .unwrap();
    let server = Server::start(dir.path());
    let answer = server.wait_settled();
    let message = answer.expect_error(503, "model_not_ready");
    assert!(
        message.contains("FancyNewModel") && message.contains("HF_TASK"),
        "{message}"
    );
    for _ in 0..3 {
        assert_eq!(server.get("/ping").status, 503);
    }
    let logs = server.logs();
    assert_eq!(logs.matches("model failed to load").count(), 1, "{logs}");
    assert!(logs.contains("FancyNewModel"), "{logs}");
}

#[test]
fn ping_is_503_when_the_model_directory_is_missing() {
    let server = Server::start("/nonexistent/model");
    let message = server.wait_settled().expect_error(503, "model_not_ready");
    assert!(message.contains("/nonexistent/model"), "{message}");
}

#[test]
fn execution_parameters_report_capacity() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .env("SAGEMAKER_MAX_PAYLOAD_IN_MB", "12")
        .env("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
        .start();
    let answer = server.get("/execution-parameters");
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.json(),
        serde_json::json!({"MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 12})
    );
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .env("SAGEMAKER_BATCH_STRATEGY", "SINGLE_RECORD")
        .env("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "5")
        .start();
    let answer = server.get("/execution-parameters").json();
    assert_eq!(answer["BatchStrategy"], "SINGLE_RECORD");
    assert_eq!(answer["MaxConcurrentTransforms"], 5);
}

#[test]
fn a_load_past_the_startup_timeout_fails() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.tar.gz");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let server = Server::builder()
        .model(&fifo)
        .env("SAGEMAKER_STARTUP_TIMEOUT", "1")
        .start();
    let message = server.wait_settled().expect_error(503, "model_not_ready");
    assert!(message.contains("SAGEMAKER_STARTUP_TIMEOUT"), "{message}");
}

#[test]
fn python_user_code_is_refused_at_load_with_advice() {
    let base = crate::support::base_dir_with(&fixture("bert-seqcls"));
    let model = base.path().join("model");
    std::fs::create_dir_all(model.join("code")).unwrap();
    std::fs::write(
        model.join("code/inference.py"),
        "def model_fn(model_dir):\n    return None\n",
    )
    .unwrap();
    let server = Server::start(&model);
    let message = server.wait_settled().expect_error(503, "model_not_ready");
    assert!(
        message.contains("inference.py")
            && message.contains("inference.wasm")
            && message
                .contains("sagebrush package --model-dir MODEL_DIR --python-dir MODEL_DIR/code"),
        "{message}"
    );
}

//! Process behaviour: the bare `serve` argument, configuration errors, SIGTERM drain, JSON logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{Server, base_dir_with, fixture};

#[test]
fn bare_serve_reads_everything_from_the_environment() {
    let base = base_dir_with(&fixture("bert-seqcls"));
    let server = Server::builder()
        .bare()
        .env("SAGEMAKER_BIND_TO_PORT", "0")
        .env("SAGEBRUSH_HOST", "127.0.0.1")
        .env("SAGEMAKER_BASE_DIR", base.path().to_str().unwrap())
        .env("HF_TASK", "sentiment-analysis")
        .start()
        .wait_ready();
    let a = server.invoke(&serde_json::json!({"inputs": "hello"}));
    assert_eq!(a.status, 200, "{}", a.body);
}

fn start_fails(env: &[(&str, &str)], must_mention: &[&str]) {
    let mut builder = Server::builder().model(fixture("bert-seqcls"));
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let (status, logs) = builder.run_to_exit();
    assert!(!status.success(), "{logs}");
    for word in must_mention {
        assert!(logs.contains(word), "missing {word:?} in:\n{logs}");
    }
}

#[test]
fn bad_values_fail_start_up_naming_the_variable_and_accepted_values() {
    start_fails(
        &[("HF_TRUST_REMOTE_CODE", "maybe")],
        &["HF_TRUST_REMOTE_CODE", "yes", "off", "maybe"],
    );
    start_fails(
        &[("HF_TASK", "sentiment")],
        &["HF_TASK", "text-classification", "sentiment"],
    );
    start_fails(
        &[("SAGEMAKER_MAX_PAYLOAD_IN_MB", "lots")],
        &["SAGEMAKER_MAX_PAYLOAD_IN_MB", "lots"],
    );
    start_fails(
        &[("SAGEMAKER_MODEL_SERVER_TIMEOUT", "-3")],
        &["SAGEMAKER_MODEL_SERVER_TIMEOUT", "seconds"],
    );
    start_fails(
        &[("SAGEMAKER_MODEL_SERVER_WORKERS", "0")],
        &["SAGEMAKER_MODEL_SERVER_WORKERS"],
    );
    start_fails(
        &[("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/html")],
        &["SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv"],
    );
    start_fails(
        &[("SAGEMAKER_BATCH_STRATEGY", "ALL")],
        &["SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD"],
    );
    start_fails(
        &[("SAGEMAKER_MULTI_MODEL", "true")],
        &["SAGEMAKER_MULTI_MODEL"],
    );
}

#[test]
fn trust_remote_code_accepts_the_truth_table() {
    for value in [
        "y", "YES", "t", "True", "on", "1", "n", "No", "f", "FALSE", "off", "0",
    ] {
        let server = Server::builder()
            .model(fixture("bert-seqcls"))
            .env("HF_TRUST_REMOTE_CODE", value)
            .start();
        assert_eq!(server.get("/execution-parameters").status, 200, "{value}");
    }
}

/// SIGTERM while a request is in flight (its body still arriving): the request completes,
/// new connections are refused, the process exits 0.
#[test]
fn sigterm_finishes_the_in_flight_request_and_exits_zero() {
    let mut server = Server::start(fixture("bert-seqcls")).wait_ready();
    let body = r#"{"inputs": "in flight during shutdown"}"#;
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "new connections must be refused after SIGTERM"
    );
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"label\""), "{response}");
    let status = server.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.logs());
}

#[test]
fn json_logs_carry_the_request_id() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .arg("--log-format")
        .arg("json")
        .start()
        .wait_ready();
    let a = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "json-log-id"),
        ],
        r#"{"inputs":"x"}"#,
    );
    assert_eq!(a.status, 200);
    let line = server.wait_for_log(&["json-log-id", "latency_ms", "\"status\":200"]);
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert!(line["latency_ms"].is_number(), "{line}");
}

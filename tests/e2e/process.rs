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
        &[("SAGEBRUSH_DTYPE", "float16")],
        &["SAGEBRUSH_DTYPE", "bfloat16", "float16"],
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
/// new connections are refused, the process exits 0. Synchronised without sleeps: the request
/// asks `Expect: 100-continue`, and the server's `100 Continue` (sent when the handler starts
/// reading the body) proves the request is in flight before the signal; the "shutting down" log
/// line proves the signal was taken.
#[test]
fn sigterm_finishes_the_in_flight_request_and_exits_zero() {
    let mut server = Server::start(fixture("bert-seqcls")).wait_ready();
    let body = r#"{"inputs": "in flight during shutdown"}"#;
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len(),
    )
    .unwrap();
    stream.flush().unwrap();
    let interim = read_head(&mut stream);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream.write_all(&body.as_bytes()[..10]).unwrap();
    stream.flush().unwrap();

    server.sigterm();
    server.wait_for_log(&["shutting down", "SIGTERM"]);
    let refused_by = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.addr).is_ok() {
        assert!(
            std::time::Instant::now() < refused_by,
            "new connections must be refused after SIGTERM"
        );
        std::thread::yield_now();
    }

    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"label\""), "{response}");
    let status = server.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.logs());
}

/// Reads one response head (through the blank line) byte by byte, so nothing after it is
/// consumed.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("read");
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
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

//! `/invocations` errors and headers (contract §1, §4, §7): each status with its JSON body.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::support::{Server, fixture};

fn ready() -> Server {
    Server::start(fixture("bert-seqcls")).wait_ready()
}

#[test]
fn unknown_route_is_404_and_wrong_method_is_405() {
    let server = ready();
    server.get("/nope").expect_error(404, "not_found");
    server
        .get("/invocations")
        .expect_error(405, "method_not_allowed");
    server
        .post("/ping", &[], "")
        .expect_error(405, "method_not_allowed");
}

#[test]
fn every_response_has_a_request_id_and_a_given_one_is_kept() {
    let server = ready();
    let a = server.invoke(&json!({"inputs": "hello"}));
    assert_eq!(a.status, 200);
    let id = a.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let b = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "my-id-1"),
        ],
        r#"{"inputs":"x"}"#,
    );
    assert_eq!(b.header("x-request-id"), Some("my-id-1"));
    server.wait_for_log(&["my-id-1", "/invocations", "latency_ms", "status=200"]);
}

#[test]
fn unknown_parameter_is_400_naming_it() {
    let server = ready();
    let a =
        server.invoke(&json!({"inputs": "hello", "parameters": {"top_k": 1, "temprature": 0.5}}));
    let message = a.expect_error(400, "validation");
    assert!(message.contains("`temprature`"), "{message}");
    assert_eq!(a.json()["type"], "InternalServerException");
    // The server keeps serving.
    assert_eq!(server.invoke(&json!({"inputs": "hello"})).status, 200);
}

#[test]
fn bad_json_and_bad_input_shapes_are_400() {
    let server = ready();
    let m = server
        .post(
            "/invocations",
            &[("content-type", "application/json")],
            "{\"inputs\": ",
        )
        .expect_error(400, "validation");
    assert!(m.contains("not valid JSON"), "{m}");
    let m = server
        .invoke(&json!({"inputs": 42}))
        .expect_error(400, "validation");
    assert!(m.contains("text-classification expects"), "{m}");
    let m = server
        .invoke(&json!({"inputs": "x", "parameters": {"top_k": 0}}))
        .expect_error(400, "validation");
    assert!(m.contains("`top_k`"), "{m}");
    let m = server
        .invoke(&json!({"inputs": "x", "parameters": {"function_to_apply": "relu"}}))
        .expect_error(400, "validation");
    assert!(m.contains("`function_to_apply`"), "{m}");
    server
        .post("/invocations", &[("content-type", "application/json")], "")
        .expect_error(400, "validation");
}

#[test]
fn body_over_the_limit_is_413_json() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .arg("--max-payload-mb")
        .arg("1")
        .start()
        .wait_ready();
    // The declared length alone is refused: the body is never sent, so the answer cannot race a
    // client still writing (a client that keeps writing after the 413 may see a broken pipe).
    let m = server
        .post_head_only(
            "/invocations",
            &[("content-type", "application/json")],
            1_400_000,
        )
        .expect_error(413, "payload_too_large");
    assert!(m.contains("1 MiB"), "{m}");
    assert_eq!(
        server.invoke(&json!({"inputs": "still serving"})).status,
        200
    );
}

#[test]
fn over_long_input_with_truncation_off_is_400_naming_its_length() {
    let server = ready();
    let long = "word ".repeat(400);
    let m = server
        .invoke(&json!({"inputs": long, "parameters": {"truncation": false}}))
        .expect_error(400, "validation");
    assert!(m.contains("tokens long") && m.contains("128"), "{m}");
    // Truncated by default.
    assert_eq!(server.invoke(&json!({"inputs": long})).status, 200);
}

/// A request whose body stalls past the timeout gets 504 JSON.
#[test]
fn request_over_the_timeout_is_504_json() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .arg("--timeout-seconds")
        .arg("1")
        .start()
        .wait_ready();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let body = r#"{"inputs": "slow"}"#;
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut response = String::new();
    let mut buf = [0u8; 4096];
    while !response.contains("\r\n\r\n{") || !response.trim_end().ends_with('}') {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed: {response}");
        response.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(response.starts_with("HTTP/1.1 504"), "{response}");
    assert!(
        response.contains("\"error_type\":\"timeout\""),
        "{response}"
    );
    assert_eq!(server.invoke(&json!({"inputs": "fast"})).status, 200);
}

#[test]
fn custom_attributes_are_not_echoed_without_user_code() {
    let server = ready();
    let a = server.post(
        "/invocations",
        &[
            ("content-type", "application/json"),
            ("X-Amzn-SageMaker-Custom-Attributes", "trace=1"),
        ],
        r#"{"inputs": "x"}"#,
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amzn-sagemaker-custom-attributes"), None);
}

#[test]
fn a_list_runs_as_one_batch_and_equals_single_answers() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .arg("--max-batch-size")
        .arg("2")
        .start()
        .wait_ready();
    let texts = [
        "a short one",
        "a much longer sentence with many more words in it",
        "mid length text",
        "x",
    ];
    let batched = server
        .invoke(&json!({"inputs": texts, "parameters": {"top_k": null}}))
        .json();
    for (i, t) in texts.iter().enumerate() {
        let single = server
            .invoke(&json!({"inputs": t, "parameters": {"top_k": null}}))
            .json();
        crate::support::compare::json_close(&batched[i], &single, 1e-5).unwrap();
    }
}

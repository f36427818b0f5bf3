//! Content negotiation over HTTP (contract §5).

use serde_json::json;

use crate::support::{Server, compare, fixture};

fn ready() -> Server {
    Server::start(fixture("bert-seqcls")).wait_ready()
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn unsupported_content_type_is_415_and_accept_is_406() {
    let server = ready();
    let m = server
        .post(
            "/invocations",
            &[("content-type", "application/xml")],
            "<x/>",
        )
        .expect_error(415, "unsupported_media");
    assert!(m.contains("application/xml"), "{m}");
    let m = server
        .post(
            "/invocations",
            &[JSON, ("accept", "image/png")],
            r#"{"inputs":"x"}"#,
        )
        .expect_error(406, "not_acceptable");
    assert!(m.contains("image/png"), "{m}");
    // 406 is decided before the body is even parsed.
    server
        .post("/invocations", &[JSON, ("accept", "image/png")], "not json")
        .expect_error(406, "not_acceptable");
}

#[test]
fn mime_parameters_and_case_are_ignored() {
    let server = ready();
    let a = server.post(
        "/invocations",
        &[
            ("content-type", "Application/JSON; charset=UTF-8"),
            ("accept", "APPLICATION/JSON; q=1"),
        ],
        r#"{"inputs":"x"}"#,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/json"));
}

#[test]
fn accept_lists_with_q_values_pick_the_best_supported() {
    let server = ready();
    let a = server.post(
        "/invocations",
        &[
            JSON,
            (
                "accept",
                "image/png, application/json;q=0.5, text/csv;q=0.8",
            ),
        ],
        r#"{"inputs":["a","b"]}"#,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("text/csv"));
    assert!(a.body.starts_with("label,score\r\n"), "{}", a.body);
    assert_eq!(a.body.lines().count(), 3);
}

#[test]
fn default_accept_comes_from_the_environment() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .env(
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
            "application/jsonlines",
        )
        .start()
        .wait_ready();
    for accept in [None, Some("*/*")] {
        let mut headers = vec![JSON];
        if let Some(a) = accept {
            headers.push(("accept", a));
        }
        let a = server.post("/invocations", &headers, r#"{"inputs":["a","b"]}"#);
        assert_eq!(a.header("content-type"), Some("application/jsonlines"));
        assert_eq!(a.body.lines().count(), 2, "{}", a.body);
    }
}

#[test]
fn jsonlines_in_gives_one_line_per_record_in_order() {
    let server = ready();
    let body = "{\"inputs\":\"first\"}\n{\"inputs\":[\"second\",\"third\"]}\n{\"inputs\":\"fourth\",\"parameters\":{\"top_k\":2}}\n";
    let a = server.post(
        "/invocations",
        &[
            ("content-type", "application/jsonlines"),
            ("accept", "application/jsonlines"),
        ],
        body,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let lines: Vec<serde_json::Value> = a
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert!(line[0]["label"].is_string(), "{line}");
    }
    assert_eq!(lines[1].as_array().unwrap().len(), 2);
    assert_eq!(lines[2].as_array().unwrap().len(), 2);
    let single = server.invoke(&json!({"inputs": "first"})).json();
    // The records of one body may share a forward pass with other rows: the same answer as
    // alone, within the conformance tolerance (summation order may differ in the last bits).
    compare::json_close(&lines[0], &single, 1e-4).unwrap_or_else(|e| panic!("{e}"));
    // A bad line is a 400 naming the line.
    let m = server
        .post(
            "/invocations",
            &[("content-type", "application/jsonlines")],
            "{\"inputs\":\"a\"}\n{oops}\n",
        )
        .expect_error(400, "validation");
    assert!(m.contains("line 2"), "{m}");
}

#[test]
fn text_plain_body_is_the_input() {
    let server = ready();
    let a = server.post(
        "/invocations",
        &[("content-type", "text/plain; charset=utf-8")],
        "The food was terrible and the service was slow.",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let expected = server
        .invoke(&json!({"inputs": "The food was terrible and the service was slow."}))
        .json();
    assert_eq!(a.json(), expected);
}

#[test]
fn csv_of_nested_results_is_406_with_advice() {
    let server = ready();
    let m = server
        .post(
            "/invocations",
            &[JSON, ("accept", "text/csv")],
            r#"{"inputs":["a","b"],"parameters":{"top_k":null}}"#,
        )
        .expect_error(406, "not_acceptable");
    assert!(m.contains("application/json"), "{m}");
}

#[test]
fn csv_without_a_known_header_is_400() {
    let server = ready();
    let m = server
        .post(
            "/invocations",
            &[("content-type", "text/csv")],
            "hello there\nsecond\n",
        )
        .expect_error(400, "validation");
    assert!(m.contains("`inputs`"), "{m}");
}

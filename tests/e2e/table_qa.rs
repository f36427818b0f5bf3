//! table-question-answering over HTTP beyond the conformance cases (contract §4): the task is
//! inferred from `TapasForQuestionAnswering`, `question` is an alias of `query`, a list of
//! `{query, table}` objects answers each, numbers are cells, a table too long for the model
//! drops rows (or is a 400 with `truncation: false`), and bad inputs are 400s that say what is
//! wrong (the server keeps serving and logs the request id).

use serde_json::{Value, json};

use crate::support::{Server, compare, fixture};

fn repos() -> Value {
    json!({
        "Repository": ["transformers", "datasets", "tokenizers"],
        "Stars": ["36542", "4512", "3934"],
        "Contributors": ["651", "77", "34"],
        "Language": ["Python", "Python", "Rust, Python and NodeJS"]
    })
}

/// A server on the TAPAS fixture without `HF_TASK`: the task is inferred.
fn server() -> Server {
    Server::builder()
        .model(fixture("tapas-tqa"))
        .env("SAGEBRUSH_MAX_BATCH_SIZE", "2")
        .start()
        .wait_ready()
}

fn ok(server: &Server, body: &Value) -> Value {
    let a = server.invoke(body);
    assert_eq!(a.status, 200, "{body} -> {}", a.body);
    a.json()
}

fn assert_400_mentioning(server: &Server, body: &Value, needle: &str) {
    let message = server.invoke(body).expect_error(400, "validation");
    assert!(
        message.contains(needle),
        "{body}: {message:?} lacks {needle:?}"
    );
}

#[test]
fn table_questions_answer_in_every_input_shape() {
    let server = server();
    let single = ok(
        &server,
        &json!({"inputs": {"query": "How many stars?", "table": repos()}}),
    );
    // As the reference answers the same request with HF_TASK set (reference_quirks.jsonl).
    let expected = json!({"answer": "COUNT > 36542, 4512", "coordinates": [[0, 1], [1, 1]],
                          "cells": ["36542", "4512"], "aggregator": "COUNT"});
    compare::json_close(&single, &expected, 0.0).unwrap();
    let alias = ok(
        &server,
        &json!({"inputs": {"question": "How many stars?", "table": repos()}}),
    );
    assert_eq!(alias, single);
    // A list of one query answers with one object, as transformers does.
    let one = ok(
        &server,
        &json!({"inputs": {"query": ["How many stars?"], "table": repos()}}),
    );
    assert_eq!(one, single);
    // A list of objects: one answer each; three queries split into batches of 2.
    let queries = [
        "How many stars?",
        "Which language?",
        "How many contributors?",
    ];
    let listed = ok(
        &server,
        &json!({"inputs": [
            {"query": "How many stars?", "table": repos()},
            {"query": queries, "table": repos()}
        ]}),
    );
    assert_eq!(listed[0], single);
    let answers = listed[1].as_array().expect("a list for three queries");
    assert_eq!(answers.len(), 3);
    for (q, a) in queries.iter().zip(answers) {
        let alone = ok(&server, &json!({"inputs": {"query": q, "table": repos()}}));
        assert_eq!(&alone, a, "{q}");
    }
    // Padding does not change answers.
    let padded = ok(
        &server,
        &json!({"inputs": {"query": "How many stars?", "table": repos()},
                "parameters": {"padding": "max_length", "truncation": true, "sequential": false}}),
    );
    assert_eq!(padded, single);
}

#[test]
fn numbers_are_cells_and_long_tables_drop_rows() {
    let server = server();
    let texts = ok(
        &server,
        &json!({"inputs": {"query": "How many stars?", "table": repos()}}),
    );
    let mut numeric = repos();
    numeric["Stars"] = json!([36542, 4512, 3934]);
    let numbers = ok(
        &server,
        &json!({"inputs": {"query": "How many stars?", "table": numeric}}),
    );
    assert_eq!(numbers, texts);

    // 60 rows are far more than the model's 128 tokens: rows are dropped by default...
    let big = json!({
        "City": (0..60).map(|i| format!("city {i}")).collect::<Vec<_>>(),
        "Population": (0..60).map(|i| 1000 + 37 * i).collect::<Vec<_>>(),
    });
    let answer = ok(
        &server,
        &json!({"inputs": {"query": "Which city?", "table": big}}),
    );
    for coord in answer["coordinates"].as_array().unwrap() {
        assert!(coord[0].as_u64().unwrap() < 60, "{answer}");
    }
    // ...and are a 400 naming the length with truncation off.
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "Which city?", "table": big},
                "parameters": {"truncation": false}}),
        "more than this model's maximum of 128",
    );
}

#[test]
fn bad_tables_queries_and_parameters_are_400s() {
    let server = server();
    let mut uneven = repos();
    uneven["Stars"] = json!(["1", "2"]);
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "q", "table": uneven}}),
        "`table` columns must all have the same length: `Repository` has 3 cells, `Stars` has 2",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"table": repos()}}),
        "`query` is missing",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "", "table": repos()}}),
        "`query` is empty",
    );
    let mut nested = repos();
    nested["Stars"] = json!(["1", {"a": 1}, "3"]);
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "q", "table": nested}}),
        "`table` column `Stars` row 1: a cell must be a string or a number, got an object",
    );
    let mut with_null = repos();
    with_null["Language"] = json!(["Python", null, "Rust"]);
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "q", "table": with_null}}),
        "got null",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "q"}}),
        "`table` is missing",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "q", "table": {}}}),
        "`table` is empty",
    );
    assert_400_mentioning(&server, &json!({"inputs": "just text"}), "`inputs` must be");
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "q", "table": repos()}, "parameters": {"top_k": 1}}),
        "`top_k`",
    );
    assert_400_mentioning(
        &server,
        &json!({"inputs": {"query": "q", "table": repos()}, "parameters": {"sequential": "yes"}}),
        "`sequential` must be a boolean",
    );
    // CSV rows cannot carry a table and a query.
    let csv = server.post(
        "/invocations",
        &[("content-type", "text/csv")],
        "inputs\nHow many stars?\n",
    );
    let message = csv.expect_error(400, "validation");
    assert!(message.contains("send application/json"), "{message}");
    // Each failure is logged with its request id, and the server keeps serving.
    let rid = csv.header("x-request-id").unwrap().to_owned();
    server.wait_for_log(&[&rid]);
    ok(
        &server,
        &json!({"inputs": {"query": "How many stars?", "table": repos()}}),
    );
}

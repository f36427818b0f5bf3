//! Encoder-decoder generation over HTTP (T5, BART, Marian fixtures): request errors are 400s
//! that say why, load-time errors are reported by `/ping`, concurrent generations answer what
//! the same requests answer one at a time, a client that disconnects stops its generation, and
//! the shapes of `num_return_sequences` and `return_tensors` answers.

use std::io::Write;
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::support::{Server, fixture};

fn serve(model: &str, task: Option<&str>) -> Server {
    let mut builder = Server::builder().model(fixture(model));
    if let Some(task) = task {
        builder = builder.env("HF_TASK", task);
    }
    builder.start().wait_ready()
}

#[test]
fn bad_generation_requests_are_400s_that_say_why() {
    let server = serve("bart-sum", Some("summarization"));
    let cases: [(Value, &str); 7] = [
        (
            json!({"inputs": "x", "parameters": {"num_beams": 2, "num_return_sequences": 3}}),
            "num_return_sequences",
        ),
        (
            json!({"inputs": "x", "parameters": {"num_beams": 1, "num_return_sequences": 2}}),
            "greedy",
        ),
        (
            json!({"inputs": "x", "parameters": {"do_sample": true, "temperature": 0}}),
            "temperature",
        ),
        (
            json!({"inputs": "x", "parameters": {"max_length": 500}}),
            "decoder positions",
        ),
        (json!({"inputs": "x", "parameters": {"top_n": 3}}), "top_n"),
        (json!({"inputs": 7}), "string"),
        (
            json!({"inputs": "word ".repeat(300), "parameters": {"truncation": false}}),
            "positions",
        ),
    ];
    for (body, needle) in cases {
        let answer = server.invoke(&body);
        let message = answer.expect_error(400, "validation");
        assert!(message.contains(needle), "{body}: {message}");
    }
    // The server goes on.
    assert_eq!(server.invoke(&json!({"inputs": "fine"})).status, 200);
}

#[test]
fn a_generation_task_on_a_model_that_is_not_encoder_decoder_fails_to_load_with_the_cause() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .env("HF_TASK", "summarization")
        .start();
    let ping = server.wait_settled();
    let message = ping.expect_error(503, "model_not_ready");
    assert!(
        message.contains("encoder-decoder") && message.contains("bert"),
        "{message}"
    );
}

#[test]
fn beams_return_a_list_per_input_and_tensors_give_ids() {
    let server = serve("t5-t2t", None);
    let answer = server.invoke(&json!({
        "inputs": ["Open the file.", "Close the socket."],
        "parameters": {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 4}
    }));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    let lists = body.as_array().expect("list");
    assert_eq!(lists.len(), 2, "{body}");
    for list in lists {
        let hyps = list.as_array().expect("a list per input");
        assert_eq!(hyps.len(), 2, "{body}");
        assert!(hyps[0]["generated_text"].is_string(), "{body}");
    }
    let answer = server.invoke(&json!({
        "inputs": "Open the file.",
        "parameters": {"max_new_tokens": 3, "return_tensors": true}
    }));
    let body = answer.json();
    let ids = body[0]["generated_token_ids"].as_array().expect("ids");
    // The decoder start token, then at most 3 new tokens.
    assert_eq!(ids[0], 0, "{body}");
    assert!(ids.len() <= 4, "{body}");
}

#[test]
fn concurrent_generations_answer_as_the_same_requests_one_at_a_time() {
    let server = serve("marian-mt", Some("translation_en_to_de"));
    let bodies: Vec<Value> = [
        json!({"inputs": "The house is wonderful."}),
        json!({"inputs": "Open the file.", "parameters": {"num_beams": 1, "max_new_tokens": 6}}),
        json!({"inputs": ["I loved it.", "Close the socket."], "parameters": {"num_beams": 3}}),
        json!({"inputs": "The movie was great.", "parameters": {"no_repeat_ngram_size": 2}}),
    ]
    .into();
    let single: Vec<Value> = bodies.iter().map(|b| server.invoke(b).json()).collect();
    let concurrent: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| {
                let server = &server;
                scope.spawn(move || server.invoke(b).json())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(single, concurrent);
}

#[test]
fn a_client_that_disconnects_stops_its_generation() {
    let server = serve("t5-t2t", None);
    // T5 has relative positions: nothing bounds this generation but the client.
    let body = json!({
        "inputs": "The logging module defines functions.",
        "parameters": {"num_beams": 2, "max_new_tokens": 1000000, "min_new_tokens": 1000000}
    })
    .to_string();
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-request-id: gone-generation-1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    stream.flush().expect("flush");
    server.wait_for_log(&["gone-generation-1", "generation started"]);
    drop(stream);
    server.wait_for_log(&["gone-generation-1", "generation stopped before its end"]);
    let ok = server.invoke(&json!({"inputs": "next", "parameters": {"max_new_tokens": 2}}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

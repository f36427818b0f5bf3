//! Encoder-decoder generation over HTTP (T5, BART, Marian fixtures): request errors are 400s
//! that say why, load-time errors are reported by `/ping`, concurrent generations answer what
//! the same requests answer one at a time (and share decoder steps: continuous batching), a
//! client that disconnects stops its generation, and the shapes of `num_return_sequences` and
//! `return_tensors` answers.

use std::io::Write;
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::generation::{Gated, HELD, QUEUED, post};
use crate::support::{Server, fixture};

fn serve(model: &str, task: Option<&str>) -> Server {
    let mut builder = Server::builder()
        .model(fixture(model))
        .env("RUST_LOG", "info,sagebrush::infer=debug");
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
    // Admitted into the running generation (not merely queued: a request that leaves while
    // queued is dropped before any pass, a different path), then the client leaves.
    server.wait_for_log(&["gone-generation-1", "generation admitted"]);
    drop(stream);
    server.wait_for_log(&["gone-generation-1", "generation cancelled by its caller"]);
    let ok = server.invoke(&json!({"inputs": "next", "parameters": {"max_new_tokens": 2}}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// Answers `bodies` one at a time, then together: the first is held by the test gate in the
/// middle of its generation while the others queue, so all of them join its decoder steps.
/// The answers must be the same, and one decoder step must have run rows of every request.
fn shared_steps_answer_as_alone(model: &str, task: Option<&str>, bodies: &[Value]) {
    let gated = Gated::with_task(model, task);
    let url = gated.server.url("/invocations");
    let alone: Vec<Value> = bodies
        .iter()
        .map(|b| {
            let (status, answer) = post(&url, b);
            assert_eq!(status, 200, "{answer}");
            answer
        })
        .collect();
    let held_before = gated.count(HELD);
    let queued_before = gated.count(QUEUED);
    std::fs::write(gated.file("hold"), b"").expect("hold");
    let spawn = |b: &Value| {
        let (url, body) = (url.clone(), b.clone());
        std::thread::spawn(move || post(&url, &body))
    };
    let first = spawn(&bodies[0]);
    gated.wait_count(HELD, held_before + 1);
    let rest: Vec<_> = bodies[1..].iter().map(spawn).collect();
    gated.wait_count(QUEUED, queued_before + bodies.len());
    std::fs::remove_file(gated.file("hold")).expect("release");
    let together: Vec<Value> = std::iter::once(first)
        .chain(rest)
        .map(|h| {
            let (status, answer) = h.join().expect("client");
            assert_eq!(status, 200, "{answer}");
            answer
        })
        .collect();
    assert_eq!(together, alone, "{model}");
    let logs = gated.server.logs();
    let all = format!("requests={}", bodies.len());
    assert!(
        logs.lines()
            .any(|l| l.contains("decode step") && l.contains(&all)),
        "no decoder step shared by the {} requests:\n{logs}",
        bodies.len()
    );
}

/// Greedy, beams (several returned), a list input, sampling with a seed, and processors;
/// `min_new_tokens` keeps every request running long enough to share steps.
fn mixed_bodies(inputs: [&str; 4]) -> Vec<Value> {
    vec![
        json!({"inputs": inputs[0], "parameters": {"max_new_tokens": 12, "min_new_tokens": 8}}),
        json!({"inputs": inputs[1], "parameters": {"num_beams": 3, "num_return_sequences": 2, "max_new_tokens": 7, "min_new_tokens": 3}}),
        json!({"inputs": [inputs[2], inputs[3]], "parameters": {"max_new_tokens": 6, "min_new_tokens": 3, "no_repeat_ngram_size": 2}}),
        json!({"inputs": inputs[3], "parameters": {"do_sample": true, "seed": 5, "top_k": 20, "max_new_tokens": 8, "min_new_tokens": 3}}),
        json!({"inputs": inputs[0], "parameters": {"num_beams": 2, "max_new_tokens": 5, "min_new_tokens": 3, "repetition_penalty": 1.5}}),
    ]
}

#[test]
fn t5_concurrent_generations_share_decoder_steps_and_answer_as_alone() {
    shared_steps_answer_as_alone(
        "t5-t2t",
        None,
        &mixed_bodies([
            "translate English to German: The house is wonderful.",
            "summarize: The logging module defines functions and classes.",
            "Open the file.",
            "Close the socket, then return.",
        ]),
    );
}

#[test]
fn bart_concurrent_summaries_share_decoder_steps_and_answer_as_alone() {
    shared_steps_answer_as_alone(
        "bart-sum",
        Some("summarization"),
        &mixed_bodies([
            "The Eiffel Tower is a wrought-iron lattice tower in Paris.",
            "Handlers send the log records to the appropriate destination.",
            "Open the file.",
            "A very long sentence about nothing in particular that goes on and on.",
        ]),
    );
}

#[test]
fn marian_concurrent_translations_share_decoder_steps_and_answer_as_alone() {
    shared_steps_answer_as_alone(
        "marian-mt",
        Some("translation_en_to_de"),
        &mixed_bodies([
            "The house is wonderful.",
            "I loved it.",
            "Open the file.",
            "Close the socket.",
        ]),
    );
}

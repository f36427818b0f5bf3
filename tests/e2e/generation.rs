//! Generation over HTTP (issue 11): concurrent generations join the running decode steps and
//! answer exactly as alone; seeded sampling repeats itself; impossible parameters are 400s that
//! say why; an over-long prompt keeps its last tokens (or is refused when `truncation` is
//! false); a client that disconnects stops its generation at the next step; a panicking step is
//! a 500 and the next request is served.
//!
//! The server runs with the test gate (see `inference.rs`): the generation worker checks it
//! after choosing each step's tokens and before running the step, so a test can hold a
//! generation in the middle.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Server, fixture};

pub(crate) const HELD: &str = "forward pass held by the test gate";
pub(crate) const QUEUED: &str = "queued for the model";

pub(crate) struct Gated {
    pub(crate) server: Server,
    dir: tempfile::TempDir,
}

impl Gated {
    pub(crate) fn start(model: &str) -> Self {
        Self::with_task(model, None)
    }

    /// [`start`](Self::start) with `HF_TASK` set to `task`.
    pub(crate) fn with_task(model: &str, task: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("gate dir");
        let mut builder = Server::builder()
            .model(fixture(model))
            .env("SAGEBRUSH_TEST_GATE_DIR", &dir.path().display().to_string())
            .env("RUST_LOG", "info,sagebrush::infer=debug");
        if let Some(task) = task {
            builder = builder.env("HF_TASK", task);
        }
        let server = builder.start().wait_ready();
        Self { server, dir }
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn count(&self, needle: &str) -> usize {
        self.server
            .logs()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub(crate) fn wait_count(&self, needle: &str, n: usize) {
        let start = Instant::now();
        while self.count(needle) < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{needle:?} logged fewer than {n} times:\n{}",
                self.server.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub(crate) fn post(url: &str, body: &Value) -> (u16, Value) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON body"))
}

#[test]
fn concurrent_generations_join_the_running_steps_and_answer_as_alone() {
    concurrent_answers_equal_answers_alone(
        "gpt2-gen",
        &[
            json!({"inputs": "The logging module", "parameters": {"max_new_tokens": 16}}),
            json!({"inputs": "Return a new list", "parameters": {"max_new_tokens": 12, "repetition_penalty": 1.8}}),
            json!({"inputs": ["Handlers send the log records", "x"], "parameters": {"max_new_tokens": 9}}),
            json!({"inputs": "The logging module", "parameters": {"max_new_tokens": 8, "num_beams": 3, "num_return_sequences": 2}}),
            json!({"inputs": "Filters provide", "parameters": {"max_new_tokens": 10, "do_sample": true, "seed": 11, "top_k": 20}}),
        ],
    );
}

/// Phi-3 (longrope, 32 original positions): rows that cross position 32 while decoding (their
/// cache is recomputed with the long factors, alone), rows that never reach it and rows past it
/// from the start share decode steps and answer as alone.
#[test]
fn phi3_rows_crossing_the_longrope_switch_beside_others_answer_as_alone() {
    let p20 = "Handlers send the log records created by loggers to the appropriate destination and filters";
    concurrent_answers_equal_answers_alone(
        "phi3-gen",
        &[
            json!({"inputs": p20, "parameters": {"max_new_tokens": 24}}),
            json!({"inputs": "The logging module", "parameters": {"max_new_tokens": 16}}),
            json!({"inputs": p20, "parameters": {"max_new_tokens": 14, "num_beams": 2}}),
            json!({"inputs": [p20, "Return a new list"], "parameters": {"max_new_tokens": 20}}),
            json!({"inputs": format!("{p20} {p20}"), "parameters": {"max_new_tokens": 8}}),
        ],
    );
}

/// Each body's answer, posted one at a time (each must be a 200).
fn answers_alone(url: &str, bodies: &[Value]) -> Vec<Value> {
    bodies
        .iter()
        .map(|b| {
            let (status, answer) = post(url, b);
            assert_eq!(status, 200, "{answer}");
            answer
        })
        .collect()
}

/// Answers `bodies` one at a time, then all together (the first held by the test gate in the
/// middle of its generation while the others queue): the answers are the same, and one decode
/// step ran rows of every request.
fn concurrent_answers_equal_answers_alone(model: &str, bodies: &[Value]) {
    let gated = Gated::start(model);
    let url = gated.server.url("/invocations");
    let alone = answers_alone(&url, bodies);
    // Hold the worker in the middle of the first generation; the others queue, then join
    // its decode steps when it is released.
    let held_before = gated.count(HELD);
    let queued_before = gated.count(QUEUED);
    std::fs::write(gated.file("hold"), b"").expect("hold");
    let first = {
        let (url, body) = (url.clone(), bodies[0].clone());
        std::thread::spawn(move || post(&url, &body))
    };
    gated.wait_count(HELD, held_before + 1);
    let rest: Vec<_> = bodies[1..]
        .iter()
        .map(|b| {
            let (url, body) = (url.clone(), b.clone());
            std::thread::spawn(move || post(&url, &body))
        })
        .collect();
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
    assert_eq!(together, alone);
    // The decode steps were shared: one step ran rows of every request.
    let logs = gated.server.logs();
    let shared = format!("requests={}", bodies.len());
    assert!(
        logs.lines()
            .any(|l| l.contains("decode step") && l.contains(&shared)),
        "no decode step shared by the {} requests:\n{logs}",
        bodies.len()
    );
}

/// A request admitted while another is in the middle of its generation (held by the test gate
/// after 6 rounds) has its prompt run in the same forward pass as the running row's next token,
/// and both answer exactly as alone.
#[test]
fn a_request_admitted_mid_generation_shares_a_pass_with_the_running_rows_and_answers_as_alone() {
    for model in ["gpt2-gen", "llama-gen"] {
        let gated = Gated::start(model);
        let url = gated.server.url("/invocations");
        let long = json!({"inputs": "The logging module", "parameters": {"max_new_tokens": 40}});
        let late = json!({"inputs": ["Handlers send the log records", "Return"],
                          "parameters": {"max_new_tokens": 12}});
        let alone = answers_alone(&url, &[long.clone(), late.clone()]);
        let held_before = gated.count(HELD);
        let queued_before = gated.count(QUEUED);
        std::fs::write(gated.file("hold"), b"").expect("hold");
        let first = {
            let (url, body) = (url.clone(), long.clone());
            std::thread::spawn(move || post(&url, &body))
        };
        gated.wait_count(HELD, held_before + 1);
        // Six more rounds after this one (the prompt, then decode steps), then held again in
        // the middle of the generation.
        std::fs::write(gated.file("rounds"), b"6").expect("rounds");
        std::fs::remove_file(gated.file("hold")).expect("release");
        gated.wait_count(HELD, held_before + 2);
        let second = {
            let (url, body) = (url.clone(), late.clone());
            std::thread::spawn(move || post(&url, &body))
        };
        gated.wait_count(QUEUED, queued_before + 2);
        std::fs::remove_file(gated.file("hold")).expect("release");
        let together: Vec<Value> = [first, second]
            .into_iter()
            .map(|h| {
                let (status, answer) = h.join().expect("client");
                assert_eq!(status, 200, "{answer}");
                answer
            })
            .collect();
        assert_eq!(together, alone, "{model}");
        let logs = gated.server.logs();
        assert!(
            logs.lines().any(|l| l.contains("decode step")
                && l.contains("requests=2")
                && l.contains("rows=1")
                && l.contains("prompts=2")),
            "{model}: no pass ran the new prompts with the running row:\n{logs}"
        );
    }
}

#[test]
fn seeded_sampling_gives_the_same_text_for_the_same_seed() {
    let server = Server::start(fixture("llama-gen")).wait_ready();
    let body = |seed: u64| {
        json!({"inputs": "Return a new list", "parameters": {
            "do_sample": true, "seed": seed, "max_new_tokens": 12, "temperature": 0.9,
            "top_p": 0.95, "num_return_sequences": 3}})
    };
    let a = server.invoke(&body(7));
    assert_eq!(a.status, 200, "{}", a.body);
    let b = server.invoke(&body(7));
    assert_eq!(a.json(), b.json());
    assert_eq!(a.json().as_array().map(Vec::len), Some(3));
    let c = server.invoke(&body(8));
    assert_ne!(a.json(), c.json());
}

#[test]
fn impossible_generation_parameters_are_400_saying_why() {
    let server = Server::start(fixture("gpt2-gen")).wait_ready();
    let cases = [
        (
            json!({"do_sample": true, "temperature": 0}),
            "`temperature` must be > 0",
        ),
        (
            json!({"num_return_sequences": 2}),
            "greedy decoding returns one sequence",
        ),
        (
            json!({"num_beams": 2, "num_return_sequences": 3}),
            "must be <= `num_beams`",
        ),
        (
            json!({"do_sample": true, "top_p": 1.5}),
            "`top_p` must be between 0 and 1",
        ),
        (
            json!({"max_new_tokens": 0}),
            "`max_new_tokens` must be greater than 0",
        ),
        (
            json!({"min_new_tokens": 9, "max_new_tokens": 3}),
            "`min_new_tokens` (9) is greater",
        ),
        (
            json!({"top_k": "many"}),
            "`top_k` must be a non-negative integer",
        ),
        (
            json!({"max_new_tokens": 500}),
            "do not fit the model's maximum length of 128",
        ),
        (json!({"typo_param": 1}), "`typo_param`"),
    ];
    for (parameters, needle) in cases {
        let answer =
            server.invoke(&json!({"inputs": "The logging module", "parameters": parameters}));
        let message = answer.expect_error(400, "validation");
        assert!(message.contains(needle), "{parameters}: {message}");
    }
}

#[test]
fn an_overlong_prompt_keeps_its_last_tokens_unless_truncation_is_false() {
    let server = Server::start(fixture("gpt2-gen")).wait_ready();
    let prompt =
        "Handlers send the log records created by loggers to the appropriate destination. "
            .repeat(20);
    let answer = server.invoke(&json!({"inputs": prompt, "parameters": {"max_new_tokens": 4}}));
    assert_eq!(answer.status, 200, "{}", answer.body);
    let text = answer.json()[0]["generated_text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert!(
        text.starts_with(&prompt) && text.len() > prompt.len(),
        "{text}"
    );
    let refused = server.invoke(
        &json!({"inputs": prompt, "parameters": {"max_new_tokens": 4, "truncation": false}}),
    );
    let message = refused.expect_error(400, "validation");
    assert!(
        message.contains("the prompt has") && message.contains("maximum length of 128 tokens"),
        "{message}"
    );
}

#[test]
fn a_client_that_disconnects_stops_its_generation_at_the_next_step() {
    let gated = Gated::start("gpt2-gen");
    let held_before = gated.count(HELD);
    std::fs::write(gated.file("hold"), b"").expect("hold");
    let body =
        json!({"inputs": "The logging module", "parameters": {"max_new_tokens": 100}}).to_string();
    let mut stream = TcpStream::connect(gated.server.addr).expect("connect");
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-request-id: gone-generation-1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    stream.flush().expect("flush");
    // Held after its first token.
    gated.wait_count(HELD, held_before + 1);
    drop(stream);
    gated
        .server
        .wait_for_log(&["gone-generation-1", "invocation abandoned"]);
    std::fs::remove_file(gated.file("hold")).expect("release");
    gated
        .server
        .wait_for_log(&["gone-generation-1", "generation cancelled by its caller"]);
    // It ran no more than the one step it was held at.
    let steps = gated.count("decode step");
    assert!(steps <= 1, "{}", gated.server.logs());
    let ok = gated
        .server
        .invoke(&json!({"inputs": "next", "parameters": {"max_new_tokens": 3}}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn a_panicking_generation_step_is_500_and_the_next_request_is_served() {
    let gated = Gated::start("llama-gen");
    std::fs::write(gated.file("panic"), b"").expect("panic file");
    let failed = gated
        .server
        .invoke(&json!({"inputs": "boom", "parameters": {"max_new_tokens": 5}}));
    let message = failed.expect_error(500, "internal");
    assert!(message.contains("forced by the test gate"), "{message}");
    assert_eq!(gated.server.get("/ping").status, 200);
    let ok = gated
        .server
        .invoke(&json!({"inputs": "fine", "parameters": {"max_new_tokens": 5}}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

//! The inference core over HTTP: admission (429 before the body is read), dynamic batching
//! (concurrent requests merged into one forward pass answer as alone, within the conformance
//! tolerance, for every encoder task), cancellation (a client that leaves is never computed),
//! and recovery (a panicking forward pass is a 500 and the next request is served; a stopped
//! worker makes `/ping` 503).
//!
//! The server is built with the `test-gate` feature: a file `hold` in its gate directory holds
//! the model worker before its next round and the worker logs when it is held, so each test
//! knows the model is busy without sleeping or guessing at timing.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::metrics::{scrape, value};
use crate::support::{Server, compare, fixture};

const HELD: &str = "forward pass held by the test gate";
const QUEUED: &str = "queued for the model";
const ROUND: &str = "batch formed";

/// A gate directory and a server on `model` that watches it.
struct Gated {
    server: Server,
    dir: tempfile::TempDir,
}

impl Gated {
    fn start(model: &str, task: Option<&str>, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("gate dir");
        let mut builder = Server::builder()
            .model(fixture(model))
            .env("SAGEBRUSH_TEST_GATE_DIR", &dir.path().display().to_string())
            .env("RUST_LOG", "info,sagebrush::infer=debug");
        if let Some(task) = task {
            builder = builder.env("HF_TASK", task);
        }
        for (k, v) in extra {
            builder = builder.env(k, v);
        }
        let server = builder.start().wait_ready();
        Self { server, dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Holds the worker before its next round.
    fn hold(&self) {
        std::fs::write(self.file("hold"), b"").expect("hold");
    }

    fn release(&self) {
        std::fs::remove_file(self.file("hold")).expect("release");
    }

    /// Starts `body` in a thread and waits until the worker is held on it.
    fn busy_with(&self, body: Value) -> std::thread::JoinHandle<(u16, String)> {
        let held_before = self.count(HELD);
        self.hold();
        let url = self.server.url("/invocations");
        let handle = std::thread::spawn(move || post(&url, &body, None));
        self.wait_count(HELD, held_before + 1);
        handle
    }

    fn count(&self, needle: &str) -> usize {
        self.server
            .logs()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `needle` has been logged `n` times (fails after 30 s with the logs).
    fn wait_count(&self, needle: &str, n: usize) {
        let start = Instant::now();
        while self.count(needle) < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{needle:?} logged fewer than {n} times:\n{}",
                self.server.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn post(url: &str, body: &Value, request_id: Option<&str>) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    let r = req.send().expect("POST");
    (r.status().as_u16(), r.text().expect("body"))
}

#[test]
fn a_full_queue_is_429_before_the_body_is_read() {
    let gated = Gated::start("bert-seqcls", None, &[("SAGEBRUSH_QUEUE_SIZE", "1")]);
    let busy = gated.busy_with(json!({"inputs": "the one being served"}));
    // Not JSON at all: were the body read, this would be a 400.
    let refused = gated.server.post(
        "/invocations",
        &[("content-type", "application/json")],
        "{not json",
    );
    let message = refused.expect_error(429, "overloaded");
    assert!(message.contains("SAGEBRUSH_QUEUE_SIZE"), "{message}");
    gated.release();
    let (status, body) = busy.join().expect("busy");
    assert_eq!(status, 200, "{body}");
    // The slot is free again.
    let ok = gated.server.invoke(&json!({"inputs": "after"}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn a_client_that_disconnects_is_never_computed() {
    let gated = Gated::start("bert-seqcls", None, &[]);
    let busy = gated.busy_with(json!({"inputs": "the one being served"}));
    let queued_before = gated.count(QUEUED);
    let body = json!({"inputs": "nobody waits for this"}).to_string();
    let mut stream = TcpStream::connect(gated.server.addr).expect("connect");
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-request-id: gone-client-1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    stream.flush().expect("flush");
    gated.wait_count(QUEUED, queued_before + 1);
    let rounds_before = gated.count(ROUND);
    drop(stream);
    gated
        .server
        .wait_for_log(&["gone-client-1", "invocation abandoned"]);
    gated.release();
    let (status, _) = busy.join().expect("busy");
    assert_eq!(status, 200);
    gated
        .server
        .wait_for_log(&["gone-client-1", "cancelled before its forward pass"]);
    // Only the held request's round ran: the abandoned one was taken out before forming one.
    assert_eq!(
        gated.count(ROUND),
        rounds_before + 1,
        "{}",
        gated.server.logs()
    );
    // Its slot is free and the server goes on.
    let ok = gated.server.invoke(&json!({"inputs": "next"}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn a_panicking_forward_pass_is_500_and_the_next_request_is_served() {
    let gated = Gated::start("bert-seqcls", None, &[]);
    std::fs::write(gated.file("panic"), b"").expect("panic file");
    let failed = gated.server.invoke(&json!({"inputs": "boom"}));
    let message = failed.expect_error(500, "internal");
    assert!(
        message.contains("panicked") && message.contains("forced by the test gate"),
        "{message}"
    );
    assert_eq!(gated.server.get("/ping").status, 200);
    let ok = gated.server.invoke(&json!({"inputs": "fine"}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn a_stopped_worker_makes_ping_503_with_the_cause() {
    let gated = Gated::start("bert-seqcls", None, &[]);
    std::fs::write(gated.file("stop"), b"").expect("stop file");
    let failed = gated.server.invoke(&json!({"inputs": "last"}));
    failed.expect_error(503, "model_not_ready");
    let ping = gated.server.get("/ping");
    let message = ping.expect_error(503, "model_not_ready");
    assert!(message.contains("stopped by the test gate"), "{message}");
    let again = gated.server.invoke(&json!({"inputs": "after"}));
    again.expect_error(503, "model_not_ready");
}

/// Whether `model`'s answers must not change at all when merged with others: the BERT-family
/// layers run on sagebrush's own matmul where the CPU has AVX-512 (README "The inference
/// core"), whose sums do not depend on the batch. Elsewhere (the `gemm` crate; DeBERTa-v2 on
/// candle-transformers) merged answers stay within 1e-4 of single ones.
fn batch_invariant(model: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    avx512 && !model.starts_with("deberta")
}

/// Answers each body alone, then all at once while the worker is held, so that they are
/// merged into one round; the merged answers must equal the single ones. The merged pass is cut
/// into two parts run at once (`--forward-parts 2`, the default on two cores), whatever the
/// CPU count here.
fn assert_merged_equals_single(model: &str, task: Option<&str>, bodies: &[Value]) {
    let gated = Gated::start(model, task, &[("SAGEBRUSH_FORWARD_PARTS", "2")]);
    let url = gated.server.url("/invocations");
    let singles: Vec<Value> = bodies
        .iter()
        .map(|b| {
            let (status, text) = post(&url, b, None);
            assert_eq!(status, 200, "{b} -> {text}");
            serde_json::from_str(&text).expect("json")
        })
        .collect();
    let busy = gated.busy_with(bodies[0].clone());
    let queued_before = gated.count(QUEUED);
    let handles: Vec<_> = bodies
        .iter()
        .map(|b| {
            let (url, b) = (url.clone(), b.clone());
            std::thread::spawn(move || post(&url, &b, None))
        })
        .collect();
    gated.wait_count(QUEUED, queued_before + bodies.len());
    gated.release();
    assert_eq!(busy.join().expect("busy").0, 200);
    for ((handle, single), body) in handles.into_iter().zip(&singles).zip(bodies) {
        let (status, text) = handle.join().expect("client");
        assert_eq!(status, 200, "{body} -> {text}");
        let merged: Value = serde_json::from_str(&text).expect("json");
        if batch_invariant(model) {
            assert_eq!(
                &merged, single,
                "{model}: {body}: merged differs from single"
            );
        } else {
            compare::json_close(&merged, single, 1e-4)
                .unwrap_or_else(|e| panic!("{model}: {body}: merged differs from single: {e}"));
        }
    }
    let merged_round = format!("requests={}", bodies.len());
    assert!(
        gated
            .server
            .logs()
            .lines()
            .any(|l| l.contains("batch formed") && l.contains(&merged_round)),
        "no round merged the {} requests:\n{}",
        bodies.len(),
        gated.server.logs()
    );
}

#[test]
fn concurrent_text_classification_merges_and_equals_single() {
    assert_merged_equals_single(
        "bert-seqcls",
        None,
        &[
            json!({"inputs": "I love this movie"}),
            json!({"inputs": "a much longer sentence that pads the others in its forward pass"}),
            json!({"inputs": ["short", "two inputs in one request"], "parameters": {"top_k": null}}),
            json!({"inputs": {"text": "a pair", "text_pair": "with its second text"}}),
        ],
    );
}

#[test]
fn concurrent_token_classification_merges_and_equals_single() {
    assert_merged_equals_single(
        "bert-tokcls",
        None,
        &[
            json!({"inputs": "John Smith lives in Paris."}),
            json!({"inputs": "Mary moved from London to Berlin to join Siemens last year.", "parameters": {"aggregation_strategy": "simple"}}),
            json!({"inputs": "Kraków"}),
        ],
    );
}

#[test]
fn concurrent_question_answering_merges_and_equals_single() {
    let context = "The Eiffel Tower is located in Paris, the capital of France. It was built in \
                   1889 by the engineer Gustave Eiffel and is about 330 metres tall.";
    assert_merged_equals_single(
        "bert-qa",
        None,
        &[
            json!({"inputs": {"question": "Where is the tower?", "context": context}}),
            json!({"inputs": {"question": "Who built it?", "context": context.repeat(4)}, "parameters": {"max_seq_len": 48, "doc_stride": 16}}),
            json!({"inputs": {"question": "How tall?", "context": "It is 330 metres tall."}}),
        ],
    );
}

#[test]
fn concurrent_fill_mask_merges_and_equals_single() {
    assert_merged_equals_single(
        "bert-mlm",
        None,
        &[
            json!({"inputs": "The capital of France is [MASK]."}),
            json!({"inputs": "The [MASK] of the [MASK] is long enough to pad the others."}),
            json!({"inputs": ["Open the [MASK].", "A [MASK] day."], "parameters": {"top_k": 2}}),
        ],
    );
}

#[test]
fn concurrent_feature_extraction_merges_and_equals_single() {
    assert_merged_equals_single(
        "bert-seqcls",
        Some("feature-extraction"),
        &[
            json!({"inputs": "short"}),
            json!({"inputs": "a longer text whose rows pad the short one"}),
            json!({"inputs": ["one", "and two"]}),
        ],
    );
}

#[test]
fn concurrent_zero_shot_classification_merges_and_equals_single() {
    assert_merged_equals_single(
        "deberta-v2-nli",
        Some("zero-shot-classification"),
        &[
            json!({"inputs": "I loved the film", "parameters": {"candidate_labels": ["cinema", "cooking"]}}),
            json!({"inputs": "The recipe needs two eggs and a long list of other things", "parameters": {"candidate_labels": "food, sport, politics", "multi_label": true}}),
        ],
    );
}

/// Sends the head of a POST whose body never follows; returns the stream (dropping it
/// disconnects the client).
fn headers_only(server: &Server, request_id: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).expect("connect");
    write!(
        stream,
        "POST /invocations HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         x-request-id: {request_id}\r\ncontent-length: 100\r\n\r\n"
    )
    .expect("send");
    stream.flush().expect("flush");
    stream
}

/// Reads an HTTP/1.1 status line from `stream`.
fn status_of(stream: &mut TcpStream) -> u16 {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        let n = stream.read(&mut byte).expect("read");
        assert!(n > 0, "connection closed before a status line");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code")
}

/// Waits until the in-flight gauge reads `n` (fails after 30 s).
fn wait_in_flight(server: &Server, n: f64) {
    let start = Instant::now();
    loop {
        let now = value(&scrape(server), "sagebrush_invocations_in_flight", &[]);
        if now == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "in flight stayed {now}, expected {n}:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn queue_accounting_exactly_n_wait_the_rest_are_refused_and_a_leaver_frees_its_slot() {
    const N: usize = 3;
    let gated = Gated::start(
        "bert-seqcls",
        None,
        &[("SAGEBRUSH_QUEUE_SIZE", &N.to_string())],
    );
    let server = &gated.server;
    let refused_before = value(
        &scrape(server),
        "sagebrush_requests_total",
        &[("route", "/invocations"), ("status", "429")],
    );
    // One in the worker (held), then N-1 more admitted: one waits in the model queue, the
    // last one (headers only) holds its slot while its body never comes.
    let busy = gated.busy_with(json!({"inputs": "in the worker"}));
    let queued = {
        let url = server.url("/invocations");
        let before = gated.count(QUEUED);
        let handle = std::thread::spawn(move || post(&url, &json!({"inputs": "waits"}), None));
        gated.wait_count(QUEUED, before + 1);
        handle
    };
    let leaver = headers_only(server, "leaver-1");
    wait_in_flight(server, N as f64);
    // Every further request is refused at once, before its body is read (none is sent).
    for i in 0..5 {
        let mut extra = headers_only(server, &format!("extra-{i}"));
        assert_eq!(status_of(&mut extra), 429);
    }
    // The leaver disconnects: its slot is free again, and one more request is admitted.
    drop(leaver);
    wait_in_flight(server, (N - 1) as f64);
    let mut admitted = headers_only(server, "admitted-1");
    wait_in_flight(server, N as f64);
    let mut extra = headers_only(server, "extra-last");
    assert_eq!(status_of(&mut extra), 429);
    drop(admitted.write_all(b"x"));
    drop(admitted);
    gated.release();
    assert_eq!(busy.join().expect("busy").0, 200);
    assert_eq!(queued.join().expect("queued").0, 200);
    wait_in_flight(server, 0.0);
    let metrics = scrape(server);
    assert_eq!(
        value(
            &metrics,
            "sagebrush_requests_total",
            &[("route", "/invocations"), ("status", "429")]
        ) - refused_before,
        6.0
    );
    assert_eq!(value(&metrics, "sagebrush_queue_depth", &[]), 0.0);
}

/// TAPAS rows carry six extra token-type channels; merged with other requests' rows (other
/// tables, other lengths) they are padded with zeros and answer as alone. The sequential body
/// submits its first question into the merged round and the next one after it.
#[test]
fn concurrent_table_question_answering_merges_and_equals_single() {
    let repos = json!({
        "Repository": ["transformers", "datasets", "tokenizers"],
        "Stars": ["36542", "4512", "3934"],
        "Contributors": ["651", "77", "34"],
        "Language": ["Python", "Python", "Rust, Python and NodeJS"]
    });
    let cities = json!({
        "City": ["Paris", "Berlin", "Madrid", "Rome", "Lisbon"],
        "Founded": ["3rd century BC", "1237", "9th century", "753 BC", "1147"],
        "Population": [2161000, 3645000, 3223000, 2873000, 545000]
    });
    assert_merged_equals_single(
        "tapas-tqa",
        None,
        &[
            json!({"inputs": {"query": "How many stars?", "table": repos}}),
            json!({"inputs": {"query": ["Which city has the largest population?", "When was Rome founded?"], "table": cities}}),
            json!({"inputs": {"query": ["How many stars?", "And contributors?"], "table": repos},
                   "parameters": {"sequential": true}}),
            json!({"inputs": [{"query": "Total population?", "table": cities},
                              {"question": "Which language?", "table": repos}]}),
        ],
    );
}

#[test]
fn the_records_of_one_json_lines_body_share_a_forward_pass() {
    let gated = Gated::start("bert-seqcls", None, &[]);
    let url = gated.server.url("/invocations");
    let texts = [
        "I love this movie",
        "a much longer sentence that pads the others in its forward pass",
        "short",
        "the fourth record",
        "and a fifth one",
    ];
    let body: String = texts
        .iter()
        .map(|t| format!("{}\n", json!({ "inputs": t })))
        .collect();
    let singles: Vec<Value> = texts
        .iter()
        .map(|t| {
            let (status, text) = post(&url, &json!({ "inputs": t }), None);
            assert_eq!(status, 200, "{text}");
            serde_json::from_str(&text).expect("json")
        })
        .collect();
    // The worker is held on another request; the body's records all queue behind it.
    let busy = gated.busy_with(json!({"inputs": "the one being served"}));
    let queued_before = gated.count(QUEUED);
    let handle = std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new()
            .post(&url)
            .header("content-type", "application/jsonlines")
            .header("accept", "application/jsonlines")
            .body(body)
            .send()
            .expect("POST");
        (r.status().as_u16(), r.text().expect("body"))
    });
    gated.wait_count(QUEUED, queued_before + texts.len());
    gated.release();
    assert_eq!(busy.join().expect("busy").0, 200);
    let (status, text) = handle.join().expect("client");
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), texts.len(), "{text}");
    for (i, (line, single)) in lines.iter().zip(&singles).enumerate() {
        compare::json_close(line, single, 1e-4)
            .unwrap_or_else(|e| panic!("record {i}: merged differs from single: {e}"));
    }
    let merged_round = format!("requests={}", texts.len());
    assert!(
        gated
            .server
            .logs()
            .lines()
            .any(|l| l.contains("batch formed") && l.contains(&merged_round)),
        "the body's records did not share a round:\n{}",
        gated.server.logs()
    );
}

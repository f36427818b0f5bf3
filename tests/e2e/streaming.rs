//! Token streaming over HTTP (issue #12): `"stream": true` answers with chunked HTTP/1.1, one
//! record per token, as server-sent events or JSON Lines. A raw client reads the bytes 7 at a
//! time and reassembles every record; the streamed answer equals the unstreamed one for the
//! same greedy request; a refused request is a 4xx before the first byte; an error after it is
//! an in-band record; a client that leaves mid-stream stops its generation and frees its slot;
//! a model with user code refuses to stream. The encoder-decoder tasks (text2text-generation,
//! summarization, translation) stream the same records.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};

use crate::generation::{Gated, HELD};
use crate::metrics::{scrape, value};
use crate::support::guests::model_with_guest;
use crate::support::{Server, fixture};

/// A raw streamed answer: status, head, and the records in order.
pub(crate) struct Streamed {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) records: Vec<Value>,
    /// SSE only: whether the last event was `data: [DONE]`.
    pub(crate) done: bool,
}

fn send(addr: std::net::SocketAddr, body: &Value, accept: Option<&str>, id: &str) -> TcpStream {
    send_to(addr, "/invocations", body, accept, id)
}

fn send_to(
    addr: std::net::SocketAddr,
    path: &str,
    body: &Value,
    accept: Option<&str>,
    id: &str,
) -> TcpStream {
    let body = body.to_string();
    let accept = accept
        .map(|a| format!("accept: {a}\r\n"))
        .unwrap_or_default();
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{accept}\
         x-request-id: {id}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    stream.flush().expect("flush");
    stream
}

/// Reads the whole response 7 bytes at a time.
fn read_in_sevens(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut piece = [0u8; 7];
    loop {
        let n = stream.read(&mut piece).expect("read");
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&piece[..n]);
    }
}

fn split_head(raw: &[u8]) -> (String, &[u8]) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    (
        String::from_utf8_lossy(&raw[..at]).into_owned(),
        &raw[at + 4..],
    )
}

/// Undoes chunked transfer encoding.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[..line_end])
                .expect("ascii")
                .trim(),
            16,
        )
        .expect("hex chunk size");
        body = &body[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Splits a record stream fed in pieces of any size: SSE events end with `\n\n`, JSON Lines
/// records with `\n`. Returns the records and whether SSE ended with `[DONE]`; fails on bytes
/// left after the last separator (every record must end with `\n`).
fn reassemble(bytes: &[u8], sse: bool, piece: usize) -> (Vec<Value>, bool) {
    let sep: &[u8] = if sse { b"\n\n" } else { b"\n" };
    let mut buffer: Vec<u8> = Vec::new();
    let mut records = Vec::new();
    let mut done = false;
    for chunk in bytes.chunks(piece) {
        buffer.extend_from_slice(chunk);
        while let Some(at) = buffer.windows(sep.len()).position(|w| w == sep) {
            let record: Vec<u8> = buffer.drain(..at + sep.len()).collect();
            let text = std::str::from_utf8(&record[..at]).expect("a record is whole UTF-8");
            let payload = if sse {
                text.strip_prefix("data: ")
                    .expect("an SSE event is `data: ...`")
            } else {
                text
            };
            assert!(!done, "a record after [DONE]: {payload}");
            if payload == "[DONE]" {
                done = true;
            } else {
                records.push(serde_json::from_str(payload).expect("a record is JSON"));
            }
        }
    }
    assert!(
        buffer.is_empty(),
        "bytes after the last record: {:?}",
        String::from_utf8_lossy(&buffer)
    );
    (records, done)
}

fn stream_request(server: &Server, body: &Value, accept: Option<&str>) -> Streamed {
    stream_post(server, "/invocations", body, accept)
}

/// Posts `body` to `path` over a raw socket, reads the answer 7 bytes at a time and
/// reassembles its records (SSE or JSON Lines, from the content type).
pub(crate) fn stream_post(
    server: &Server,
    path: &str,
    body: &Value,
    accept: Option<&str>,
) -> Streamed {
    let mut stream = send_to(server.addr, path, body, accept, "streamed-1");
    let raw = read_in_sevens(&mut stream);
    let (head, rest) = split_head(&raw);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    if status != 200 {
        return Streamed {
            status,
            head,
            records: vec![serde_json::from_slice(rest).unwrap_or(Value::Null)],
            done: false,
        };
    }
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    let sse = lower.contains("content-type: text/event-stream");
    let (records, done) = reassemble(&dechunk(rest), sse, 7);
    Streamed {
        status,
        head,
        records,
        done,
    }
}

/// The concatenated non-special token texts, checking each record's shape on the way; the last
/// record's `generated_text`.
fn text_of(records: &[Value]) -> (String, Value) {
    assert!(!records.is_empty(), "no records");
    let mut text = String::new();
    for (i, r) in records.iter().enumerate() {
        let token = &r["token"];
        assert!(token["id"].is_u64(), "{r}");
        assert!(token["logprob"].as_f64().is_some_and(|l| l <= 0.0), "{r}");
        assert!(r["details"].is_null(), "{r}");
        let last = i + 1 == records.len();
        assert_eq!(r["generated_text"].is_null(), !last, "{r}");
        if token["special"] == json!(false) {
            text.push_str(token["text"].as_str().expect("text"));
        }
    }
    (text, records[records.len() - 1]["generated_text"].clone())
}

fn greedy(inputs: &Value, return_full_text: bool) -> Value {
    json!({"inputs": inputs, "parameters": {
        "max_new_tokens": 12, "do_sample": false, "return_full_text": return_full_text}})
}

fn check_streamed_equals_unstreamed(model: &str, inputs: &Value) {
    let server = Server::start(fixture(model)).wait_ready();
    let whole = server.invoke(&greedy(inputs, true));
    assert_eq!(whole.status, 200, "{}", whole.body);
    let new_only = server.invoke(&greedy(inputs, false));
    assert_eq!(new_only.status, 200, "{}", new_only.body);
    // `Accept: text/event-stream` is what SSE clients send: it must not be refused by the
    // content negotiation meant for whole answers.
    for accept in [
        None,
        Some("application/jsonlines"),
        Some("text/event-stream"),
    ] {
        let mut body = greedy(inputs, true);
        body["stream"] = json!(true);
        let streamed = stream_request(&server, &body, accept);
        assert_eq!(streamed.status, 200, "{accept:?} {:?}", streamed.records);
        let (text, generated) = text_of(&streamed.records);
        assert_eq!(
            generated,
            whole.json()[0]["generated_text"],
            "{model} {accept:?}"
        );
        assert_eq!(
            json!(text),
            new_only.json()[0]["generated_text"],
            "{model} {accept:?}"
        );
        let jsonl = accept == Some("application/jsonlines");
        assert_eq!(streamed.done, !jsonl, "[DONE] only ends SSE");
        let expected = if jsonl {
            "content-type: application/jsonlines"
        } else {
            "content-type: text/event-stream"
        };
        assert!(
            streamed.head.to_ascii_lowercase().contains(expected),
            "{}",
            streamed.head
        );
    }
}

#[test]
fn gpt2_stream_reassembled_from_7_byte_pieces_equals_the_unstreamed_answer() {
    check_streamed_equals_unstreamed("gpt2-gen", &json!("The logging module"));
}

#[test]
fn llama_chat_stream_reassembled_from_7_byte_pieces_equals_the_unstreamed_answer() {
    check_streamed_equals_unstreamed("llama-gen", &json!("Open the file"));
    check_streamed_equals_unstreamed(
        "llama-gen",
        &json!([{"role": "user", "content": "Open the file, please."}]),
    );
}

#[test]
fn a_refused_stream_is_a_4xx_before_the_first_byte() {
    let server = Server::start(fixture("gpt2-gen")).wait_ready();
    let cases = [
        (
            json!({"inputs": "x", "stream": true, "parameters": {"bogus": 1}}),
            "bogus",
        ),
        (
            json!({"inputs": "x", "stream": true, "parameters": {"num_return_sequences": 2, "do_sample": true}}),
            "num_return_sequences",
        ),
        (json!({"inputs": ["a", "b"], "stream": true}), "list"),
    ];
    for (body, needle) in cases {
        let answer = stream_request(&server, &body, None);
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.records);
        assert!(
            answer
                .head
                .to_ascii_lowercase()
                .contains("application/json"),
            "{}",
            answer.head
        );
        let message = answer.records[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }
}

#[test]
fn an_error_after_the_first_byte_is_an_in_band_record_and_the_stream_ends() {
    let gated = Gated::start("gpt2-gen");
    std::fs::write(gated.file("panic"), b"").expect("panic file");
    let body = json!({"inputs": "boom", "stream": true, "parameters": {"max_new_tokens": 5}});
    let streamed = stream_request(&gated.server, &body, None);
    assert_eq!(streamed.status, 200);
    let last = streamed.records.last().expect("a record");
    assert_eq!(last["error_type"], "internal", "{last}");
    assert!(last["error"].is_string(), "{last}");
    assert!(streamed.done, "the stream still ends with [DONE]");
    // The next stream is whole.
    let body = json!({"inputs": "fine", "stream": true, "parameters": {"max_new_tokens": 3}});
    let next = stream_request(&gated.server, &body, Some("application/jsonlines"));
    assert_eq!(next.status, 200);
    let (_, generated) = text_of(&next.records);
    assert!(generated.is_string(), "{:?}", next.records);
}

#[test]
fn a_client_that_leaves_mid_stream_stops_its_generation_and_frees_its_slot() {
    let gated = Gated::start("gpt2-gen");
    let held_before = gated.count(HELD);
    // One round (the prompt's pass), then held: after the first token.
    std::fs::write(gated.file("rounds"), b"1").expect("rounds");
    let body = json!({"inputs": "The logging module", "stream": true,
                      "parameters": {"max_new_tokens": 100}});
    let mut stream = send(gated.server.addr, &body, None, "gone-stream-1");
    // The first token's record arrives before the held step.
    let mut got = Vec::new();
    let mut piece = [0u8; 7];
    while !got.windows(7).any(|w| w == b"\"token\"") {
        let n = stream.read(&mut piece).expect("read");
        assert!(n > 0, "closed before the first record");
        got.extend_from_slice(&piece[..n]);
    }
    gated.wait_count(HELD, held_before + 1);
    drop(stream);
    std::fs::remove_file(gated.file("hold")).expect("release");
    gated
        .server
        .wait_for_log(&["gone-stream-1", "generation cancelled by its caller"]);
    // Its slot is free: the in-flight gauge returns to 0.
    let start = std::time::Instant::now();
    while value(
        &scrape(&gated.server),
        "sagebrush_invocations_in_flight",
        &[],
    ) != 0.0
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{}",
            gated.server.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // It ran far fewer than its 100 steps.
    let steps = gated.count("decode step");
    assert!(steps < 50, "{}", gated.server.logs());
    let next = stream_request(
        &gated.server,
        &json!({"inputs": "next", "stream": true, "parameters": {"max_new_tokens": 3}}),
        None,
    );
    assert_eq!(next.status, 200);
    assert!(next.done);
    let ok = gated
        .server
        .invoke(&json!({"inputs": "next", "parameters": {"max_new_tokens": 3}}));
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn streaming_with_user_code_is_a_400_saying_so() {
    let base = model_with_guest(&fixture("gpt2-gen"), "passthrough");
    let server = Server::builder()
        .model(base.path().join("model"))
        .start()
        .wait_ready();
    let body = json!({"inputs": "x", "stream": true, "parameters": {"max_new_tokens": 2}});
    let answer = stream_request(&server, &body, None);
    assert_eq!(answer.status, 400, "{:?}", answer.records);
    assert_eq!(
        answer.records[0]["message"],
        sagebrush::handler::STREAM_WITH_USER_CODE
    );
    // Chat completions are refused too (the guest owns the requests).
    let chat = server.post(
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        json!({"messages": [{"role": "user", "content": "x"}]}).to_string(),
    );
    assert_eq!(chat.status, 400, "{}", chat.body);
    assert_eq!(
        chat.json()["message"],
        sagebrush::handler::CHAT_WITH_USER_CODE
    );
    // Without `stream` the guest answers as usual.
    let whole = server.invoke(&json!({"inputs": "x", "parameters": {"max_new_tokens": 2}}));
    assert_eq!(whole.status, 200, "{}", whole.body);
}

/// An encoder-decoder model served for `task`: a greedy and a seeded sampling request, streamed
/// (SSE and JSON Lines) and not, give the same text, and the token texts add up to it.
fn check_seq2seq_streamed_equals_unstreamed(model: &str, task: &str, key: &str, input: &str) {
    let server = Server::builder()
        .model(fixture(model))
        .env("HF_TASK", task)
        .start()
        .wait_ready();
    for parameters in [
        // `num_beams` 1: BART's and Marian's generation configs default to beam search.
        json!({"max_new_tokens": 12, "num_beams": 1}),
        json!({"max_new_tokens": 10, "num_beams": 1, "do_sample": true, "seed": 3, "top_k": 30}),
    ] {
        let body = json!({"inputs": input, "parameters": parameters});
        let whole = server.invoke(&body);
        assert_eq!(whole.status, 200, "{}", whole.body);
        let expected = whole.json()[0][key].clone();
        assert!(expected.is_string(), "{}", whole.body);
        for accept in [None, Some("application/jsonlines")] {
            let mut streamed_body = body.clone();
            streamed_body["stream"] = json!(true);
            let streamed = stream_request(&server, &streamed_body, accept);
            assert_eq!(streamed.status, 200, "{:?}", streamed.records);
            let (text, generated) = text_of(&streamed.records);
            assert_eq!(generated, expected, "{model} {parameters} {accept:?}");
            assert_eq!(json!(text), expected, "{model} {parameters} {accept:?}");
            assert_eq!(streamed.done, accept.is_none(), "[DONE] only ends SSE");
        }
    }
}

#[test]
fn t5_text2text_stream_reassembled_from_7_byte_pieces_equals_the_unstreamed_answer() {
    check_seq2seq_streamed_equals_unstreamed(
        "t5-t2t",
        "text2text-generation",
        "generated_text",
        "translate English to German: The house is wonderful.",
    );
}

#[test]
fn bart_summary_stream_reassembled_from_7_byte_pieces_equals_the_unstreamed_answer() {
    check_seq2seq_streamed_equals_unstreamed(
        "bart-sum",
        "summarization",
        "summary_text",
        "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was built in 1889.",
    );
}

#[test]
fn marian_translation_stream_reassembled_from_7_byte_pieces_equals_the_unstreamed_answer() {
    check_seq2seq_streamed_equals_unstreamed(
        "marian-mt",
        "translation_en_to_de",
        "translation_text",
        "The house is wonderful.",
    );
}

#[test]
fn an_encoder_decoder_stream_with_beams_or_a_list_is_a_400_saying_why() {
    let server = Server::builder()
        .model(fixture("t5-t2t"))
        .start()
        .wait_ready();
    let cases = [
        (
            json!({"inputs": "x", "stream": true, "parameters": {"num_beams": 2}}),
            "beam search",
        ),
        (json!({"inputs": ["a", "b"], "stream": true}), "list"),
        (
            json!({"inputs": "x", "stream": true, "parameters": {"return_tensors": true}}),
            "return_tensors",
        ),
    ];
    for (body, needle) in cases {
        let answer = stream_request(&server, &body, None);
        assert_eq!(answer.status, 400, "{body}: {:?}", answer.records);
        let message = answer.records[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }
}

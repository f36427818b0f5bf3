//! The OpenAI- and TGI-compatible APIs over HTTP (issue #12), past the non-streamed chat of
//! `chat.rs`: streamed chat (`chat.completion.chunk`, the role first, `finish_reason` last,
//! `[DONE]`, `stream_options.include_usage`, JSON Lines, `n` > 1), stop strings that end the
//! generation (and never show in a stream), text completions (`/v1/completions`, `prompt` on
//! `/invocations`, `echo`, streamed), `logprobs` / `top_logprobs` and the frequency penalty
//! checked against the unpenalized distribution, and TGI's `/generate`, `/generate_stream`
//! and `/`. Every stream is read from a raw socket 7 bytes at a time.

use serde_json::{Value, json};

use crate::streaming::stream_post;
use crate::support::{Server, fixture};

fn post(server: &Server, path: &str, body: &Value) -> Value {
    let a = server.post(
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    );
    assert_eq!(a.status, 200, "{path} {body}: {}", a.body);
    a.json()
}

fn messages() -> Value {
    json!([{"role": "user", "content": "Open the file, please."}])
}

/// A streamed chat's records: the text of each choice, its finish reasons, and the usage
/// record, checking the chunk shape on the way.
struct ChatStream {
    texts: Vec<String>,
    finish: Vec<Option<String>>,
    usage: Option<Value>,
    records: Vec<Value>,
}

fn read_chat_stream(records: &[Value], n: usize) -> ChatStream {
    let mut texts = vec![String::new(); n];
    let mut finish: Vec<Option<String>> = vec![None; n];
    let mut roles = vec![false; n];
    let mut usage = None;
    let id = records[0]["id"].clone();
    for r in records {
        assert_eq!(r["object"], "chat.completion.chunk", "{r}");
        assert_eq!(r["id"], id, "one id for every chunk: {r}");
        assert!(r["created"].as_u64().is_some_and(|c| c > 0), "{r}");
        assert!(r["model"].is_string(), "{r}");
        let choices = r["choices"].as_array().expect("choices");
        if choices.is_empty() {
            assert!(usage.is_none(), "one usage record");
            usage = Some(r["usage"].clone());
            continue;
        }
        assert!(usage.is_none(), "the usage record is the last: {r}");
        for c in choices {
            let i = c["index"].as_u64().expect("index") as usize;
            assert!(finish[i].is_none(), "a chunk after the finish: {r}");
            if c["delta"]["role"] == "assistant" {
                assert!(
                    !roles[i] && texts[i].is_empty(),
                    "the role comes first: {r}"
                );
                roles[i] = true;
            } else {
                assert!(roles[i], "a chunk before the role: {r}");
            }
            if let Some(t) = c["delta"]["content"].as_str() {
                texts[i].push_str(t);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                assert!(["stop", "length"].contains(&f), "{r}");
                finish[i] = Some(f.to_owned());
            }
        }
    }
    assert!(finish.iter().all(Option::is_some), "every choice finished");
    ChatStream {
        texts,
        finish,
        usage,
        records: records.to_vec(),
    }
}

#[test]
fn streamed_chat_equals_the_whole_answer_over_sse_and_json_lines_with_usage_last() {
    let server = Server::start(fixture("llama-gen")).wait_ready();
    let body = json!({"messages": messages(), "max_tokens": 10, "temperature": 0});
    let whole = post(&server, "/v1/chat/completions", &body);
    let content = whole["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned();
    for (path, accept) in [
        ("/v1/chat/completions", None),
        ("/invocations", None),
        ("/v1/chat/completions", Some("application/jsonlines")),
    ] {
        let mut streamed_body = body.clone();
        streamed_body["stream"] = json!(true);
        streamed_body["stream_options"] = json!({"include_usage": true});
        let streamed = stream_post(&server, path, &streamed_body, accept);
        assert_eq!(streamed.status, 200, "{path}: {:?}", streamed.records);
        assert_eq!(streamed.done, accept.is_none(), "[DONE] ends SSE only");
        let chat = read_chat_stream(&streamed.records, 1);
        assert_eq!(chat.texts[0], content, "{path} {accept:?}");
        assert_eq!(
            chat.finish[0].as_deref(),
            whole["choices"][0]["finish_reason"].as_str()
        );
        assert_eq!(chat.usage.as_ref(), Some(&whole["usage"]), "{path}");
        // Without include_usage, no usage record and no `usage` key.
        streamed_body["stream_options"] = Value::Null;
        let plain = stream_post(&server, path, &streamed_body, accept);
        let chat = read_chat_stream(&plain.records, 1);
        assert!(chat.usage.is_none());
        assert!(chat.records.iter().all(|r| r.get("usage").is_none()));
        assert_eq!(chat.texts[0], content);
    }
}

#[test]
fn streamed_chat_with_n_2_streams_both_choices_as_the_whole_answer_gives_them() {
    let server = Server::start(fixture("llama-gen")).wait_ready();
    let body = json!({"messages": messages(), "max_tokens": 6, "temperature": 0.9,
                      "seed": 11, "n": 2});
    let whole = post(&server, "/v1/chat/completions", &body);
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let streamed = stream_post(&server, "/v1/chat/completions", &streamed_body, None);
    assert_eq!(streamed.status, 200, "{:?}", streamed.records);
    let chat = read_chat_stream(&streamed.records, 2);
    for (i, text) in chat.texts.iter().enumerate() {
        assert_eq!(
            json!(text),
            whole["choices"][i]["message"]["content"],
            "choice {i}"
        );
    }
}

/// `len` characters of `text` from a third of the way in, preferring a window of letters and
/// digits only.
fn middle_window(text: &str, len: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let from = chars.len() / 3;
    let window = |i: usize| chars[i..i + len].iter().collect::<String>();
    (from..chars.len().saturating_sub(len))
        .map(window)
        .find(|w| w.chars().all(char::is_alphanumeric))
        .unwrap_or_else(|| window(from))
}

#[test]
fn a_stop_string_ends_the_generation_early_and_never_shows_in_a_stream() {
    let server = Server::start(fixture("gpt2-gen")).wait_ready();
    let prompt = "The logging module";
    let free = post(
        &server,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 16, "temperature": 0}),
    );
    let text = free["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    assert_eq!(free["usage"]["completion_tokens"], 16, "{free}");
    // A stop string from the middle of the free answer: three characters from a third of the
    // way in (letters and digits, which the final clean-up of spaces never changes).
    let stop = middle_window(&text, 3);
    let at = text.find(&stop).expect("stop in text");
    let body = json!({"prompt": prompt, "max_tokens": 16, "temperature": 0, "stop": [stop]});
    let stopped = post(&server, "/v1/completions", &body);
    assert_eq!(stopped["choices"][0]["text"], &text[..at], "{stopped}");
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    let used = stopped["usage"]["completion_tokens"]
        .as_u64()
        .expect("tokens");
    assert!(
        used < 16,
        "the generation went on past the stop string: {stopped}"
    );
    // Streamed: the same text, the stop string in no chunk.
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let streamed = stream_post(&server, "/v1/completions", &streamed_body, None);
    assert_eq!(streamed.status, 200, "{:?}", streamed.records);
    let mut joined = String::new();
    for r in &streamed.records {
        assert_eq!(r["object"], "text_completion", "{r}");
        let piece = r["choices"][0]["text"].as_str().expect("text");
        assert!(!piece.contains(&stop), "{r}");
        joined.push_str(piece);
    }
    assert_eq!(joined, &text[..at]);
    let last = streamed.records.last().expect("records");
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
    // In a chat too.
    let chat = Server::start(fixture("llama-gen")).wait_ready();
    let whole = post(
        &chat,
        "/v1/chat/completions",
        &json!({"messages": messages(), "max_tokens": 12, "temperature": 0}),
    );
    let content = whole["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned();
    if content.chars().count() >= 6 {
        let stop = middle_window(&content, 2);
        let at = content.find(&stop).expect("stop");
        let body = json!({"messages": messages(), "max_tokens": 12, "temperature": 0,
                          "stop": stop, "stream": true});
        let streamed = stream_post(&chat, "/v1/chat/completions", &body, None);
        let read = read_chat_stream(&streamed.records, 1);
        assert_eq!(read.texts[0], &content[..at]);
        assert_eq!(read.finish[0].as_deref(), Some("stop"));
    }
}

#[test]
fn text_completions_answer_the_pipeline_text_whole_streamed_and_echoed() {
    let server = Server::start(fixture("gpt2-gen")).wait_ready();
    let prompt = "The logging module";
    let pipeline = server.invoke(&json!({"inputs": prompt, "parameters":
        {"max_new_tokens": 8, "do_sample": false, "return_full_text": false}}));
    assert_eq!(pipeline.status, 200, "{}", pipeline.body);
    let expected = pipeline.json()[0]["generated_text"].clone();
    let body = json!({"prompt": prompt, "max_tokens": 8, "temperature": 0});
    for path in ["/v1/completions", "/invocations"] {
        let v = post(&server, path, &body);
        assert_eq!(v["object"], "text_completion", "{v}");
        assert!(
            v["id"].as_str().is_some_and(|id| id.starts_with("cmpl-")),
            "{v}"
        );
        assert_eq!(v["choices"][0]["text"], expected, "{path}");
        assert_eq!(v["choices"][0]["index"], 0);
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert!(v["choices"][0]["logprobs"].is_null());
        assert_eq!(v["usage"]["completion_tokens"], 8);
    }
    // echo puts the prompt first, whole and streamed.
    let mut echo = body.clone();
    echo["echo"] = json!(true);
    let v = post(&server, "/v1/completions", &echo);
    let echoed = format!("{prompt}{}", expected.as_str().expect("text"));
    assert_eq!(v["choices"][0]["text"], echoed.as_str());
    echo["stream"] = json!(true);
    echo["stream_options"] = json!({"include_usage": true});
    let streamed = stream_post(&server, "/v1/completions", &echo, None);
    let mut joined = String::new();
    let mut usage = None;
    for r in &streamed.records {
        match r["choices"].as_array().map(Vec::len) {
            Some(0) => usage = Some(r["usage"].clone()),
            _ => joined.push_str(r["choices"][0]["text"].as_str().expect("text")),
        }
    }
    assert_eq!(joined, echoed);
    assert_eq!(usage.as_ref(), Some(&v["usage"]));
    // A list of prompts: n choices each, in order.
    let v = post(
        &server,
        "/v1/completions",
        &json!({"prompt": [prompt, "Open the"], "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(v["choices"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["choices"][1]["index"], 1);
    // Unknown fields are refused by name; token-id prompts are refused.
    for (bad, needle) in [
        (json!({"prompt": "x", "frobnicate": 1}), "frobnicate"),
        (json!({"prompt": [1, 2]}), "prompt"),
        (json!({"prompt": "x", "suffix": "y"}), "suffix"),
    ] {
        let a = server.post(
            "/v1/completions",
            &[("content-type", "application/json")],
            bad.to_string(),
        );
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.json()["message"].as_str().unwrap_or("").contains(needle));
    }
}

/// One token's entry: (token, logprob, top [(token, logprob)]).
type TokenLogprobs = (String, f64, Vec<(String, f64)>);

/// `logprobs.content` of a chat answer.
fn chat_logprobs(v: &Value) -> Vec<TokenLogprobs> {
    v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs.content")
        .iter()
        .map(|e| {
            let token = e["token"].as_str().expect("token").to_owned();
            let bytes: Vec<u8> = e["bytes"]
                .as_array()
                .expect("bytes")
                .iter()
                .map(|b| b.as_u64().expect("byte") as u8)
                .collect();
            assert_eq!(bytes, token.as_bytes(), "{e}");
            let top = e["top_logprobs"]
                .as_array()
                .expect("top_logprobs")
                .iter()
                .map(|t| {
                    (
                        t["token"].as_str().expect("token").to_owned(),
                        t["logprob"].as_f64().expect("logprob"),
                    )
                })
                .collect();
            (token, e["logprob"].as_f64().expect("logprob"), top)
        })
        .collect()
}

#[test]
fn logprobs_and_the_frequency_penalty_follow_openai() {
    let server = Server::start(fixture("llama-gen")).wait_ready();
    let body = json!({"messages": messages(), "max_tokens": 2, "temperature": 0,
                      "logprobs": true, "top_logprobs": 20});
    let plain = post(&server, "/v1/chat/completions", &body);
    let lp = chat_logprobs(&plain);
    assert_eq!(lp.len(), 2, "{plain}");
    for (token, logprob, top) in &lp {
        assert_eq!(top.len(), 20);
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        // Greedy: the chosen token is the best one.
        assert_eq!(&top[0].0, token);
        assert!((top[0].1 - logprob).abs() < 1e-6);
        assert!(*logprob <= 0.0);
    }
    // frequency_penalty f lowers the first token's logit by f at the second step, so every
    // other token's log-probability rises by -ln(1 - p + p e^-f), p the first token's
    // unpenalized probability there (OpenAI: logit -= count * frequency_penalty).
    let f = 1.5f64;
    let mut penalized_body = body.clone();
    penalized_body["frequency_penalty"] = json!(f);
    let penalized = post(&server, "/v1/chat/completions", &penalized_body);
    let pen = chat_logprobs(&penalized);
    assert_eq!(pen[0].0, lp[0].0, "the first step has nothing to penalize");
    assert!((pen[0].1 - lp[0].1).abs() < 1e-5);
    let first = &lp[0].0;
    // Tokens are matched by text: texts two tokens share (byte pieces) are left out.
    let unique =
        |list: &[(String, f64)], token: &str| list.iter().filter(|(t, _)| t == token).count() == 1;
    let p = lp[1]
        .2
        .iter()
        .find(|(t, _)| t == first)
        .map(|(_, l)| l.exp());
    let shift = match p {
        Some(p) => -(1.0 - p + p * (-f).exp()).ln(),
        None => {
            // The first token is not in the top 20 of the second step: its probability there
            // is at most the 20th's, so the shift is known only within a bound; take it from
            // one other token, check the bound, and the loop below checks that every other
            // token moved by the same amount.
            let p_max = lp[1].2.last().map_or(1.0, |(_, l)| l.exp());
            let (token, l) = pen[1]
                .2
                .iter()
                .find(|(t, _)| t != first && unique(&pen[1].2, t) && unique(&lp[1].2, t))
                .expect("a token in both top-20 lists");
            let before = lp[1].2.iter().find(|(t, _)| t == token).expect("in both").1;
            let shift = l - before;
            let bound = -(1.0 - p_max + p_max * (-f).exp()).ln();
            assert!(
                (-1e-4..=bound + 1e-4).contains(&shift),
                "shift {shift} outside [0, {bound}]"
            );
            shift
        }
    };
    let p = p.unwrap_or(0.0);
    let mut compared = 0;
    for (token, l) in &pen[1].2 {
        if !unique(&pen[1].2, token) || !unique(&lp[1].2, token) {
            continue;
        }
        let Some((_, before)) = lp[1].2.iter().find(|(t, _)| t == token) else {
            continue;
        };
        let expected = if token == first {
            before - f + shift
        } else {
            before + shift
        };
        assert!(
            (l - expected).abs() < 1e-3,
            "{token}: {l} != {expected} (p = {p})"
        );
        compared += 1;
    }
    assert!(compared >= 10, "{compared} tokens in both top-20 lists");
    // Streamed logprobs: one entry per token, the same values.
    let mut streamed_body = body.clone();
    streamed_body["stream"] = json!(true);
    let streamed = stream_post(&server, "/v1/chat/completions", &streamed_body, None);
    let entries: Vec<&Value> = streamed
        .records
        .iter()
        .filter_map(|r| r["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .collect();
    assert_eq!(entries.len(), 2, "{:?}", streamed.records);
    for (e, (token, logprob, _)) in entries.iter().zip(&lp) {
        assert_eq!(e["token"].as_str(), Some(token.as_str()));
        assert!((e["logprob"].as_f64().expect("logprob") - logprob).abs() < 1e-6);
    }
    // Completions: `logprobs` as an integer.
    let v = post(
        &server,
        "/v1/completions",
        &json!({"prompt": "Open the", "max_tokens": 4, "temperature": 0, "logprobs": 3}),
    );
    let l = &v["choices"][0]["logprobs"];
    let tokens = l["tokens"].as_array().expect("tokens");
    let generated = v["usage"]["completion_tokens"].as_u64().expect("tokens") as usize;
    assert_eq!(tokens.len(), generated, "{v}");
    assert_eq!(
        l["token_logprobs"].as_array().map(Vec::len),
        Some(generated)
    );
    let offsets: Vec<u64> = l["text_offset"]
        .as_array()
        .expect("text_offset")
        .iter()
        .map(|o| o.as_u64().expect("offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    for top in l["top_logprobs"].as_array().expect("top_logprobs") {
        assert!(
            top.as_object()
                .is_some_and(|o| !o.is_empty() && o.len() <= 3)
        );
    }
}

#[test]
fn tgi_routes_answer_generate_and_generate_stream() {
    let server = Server::start(fixture("gpt2-gen")).wait_ready();
    let prompt = "The logging module";
    let body = json!({"inputs": prompt, "parameters": {"max_new_tokens": 6, "details": true}});
    let whole = post(&server, "/generate", &body);
    let text = whole["generated_text"].as_str().expect("text").to_owned();
    assert_eq!(whole["details"]["finish_reason"], "length", "{whole}");
    assert_eq!(whole["details"]["generated_tokens"], 6);
    assert_eq!(whole["details"]["tokens"].as_array().map(Vec::len), Some(6));
    // `/` answers a list of one; `return_full_text` puts the prompt first.
    let mut full = body.clone();
    full["parameters"]["return_full_text"] = json!(true);
    let listed = post(&server, "/", &full);
    assert_eq!(listed[0]["generated_text"], format!("{prompt}{text}"));
    for (path, mut streamed_body) in [
        ("/generate_stream", body.clone()),
        (
            "/",
            json!({"inputs": prompt, "stream": true, "parameters": {"max_new_tokens": 6}}),
        ),
    ] {
        streamed_body["stream"] = json!(true);
        let streamed = stream_post(&server, path, &streamed_body, None);
        assert_eq!(streamed.status, 200, "{path}: {:?}", streamed.records);
        assert_eq!(streamed.records.len(), 6, "{path}");
        let mut joined = String::new();
        for (i, r) in streamed.records.iter().enumerate() {
            assert_eq!(r["index"], i, "{r}");
            joined.push_str(r["token"]["text"].as_str().expect("text"));
            assert_eq!(r["generated_text"].is_null(), i + 1 < 6, "{r}");
        }
        assert_eq!(joined, text, "{path}");
        assert_eq!(streamed.records[5]["generated_text"], text.as_str());
    }
}

//! The Messages API over HTTP (issue #12): `{"messages": [...]}` on `/invocations` and
//! `POST /v1/chat/completions` answer OpenAI's `chat.completion` shape with the text the
//! text-generation pipeline gives the same chat; `stop` cuts the answer; unknown fields are a
//! 400 naming them; `null` optional fields are accepted; `GET /v1/models` lists the model.

use serde_json::{Value, json};

use crate::support::{Server, fixture};

fn chat_post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let a = server.post(
        path,
        &[("content-type", "application/json")],
        body.to_string(),
    );
    (a.status, a.json())
}

fn check_shape(v: &Value) {
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert!(v["created"].as_u64().is_some_and(|c| c > 0), "{v}");
    assert!(v["model"].is_string(), "{v}");
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        ),
        "{v}"
    );
    for (i, c) in v["choices"].as_array().expect("choices").iter().enumerate() {
        assert_eq!(c["index"], i, "{v}");
        assert_eq!(c["message"]["role"], "assistant", "{v}");
        assert!(c["message"]["content"].is_string(), "{v}");
        assert!(
            ["stop", "length"].contains(&c["finish_reason"].as_str().unwrap_or("")),
            "{v}"
        );
        assert!(c["logprobs"].is_null(), "{v}");
    }
}

#[test]
fn chat_completions_have_the_openai_shape_and_the_pipeline_text() {
    let server = Server::start(fixture("llama-gen")).wait_ready();
    let messages = json!([{"role": "user", "content": "Open the file, please."}]);
    let pipeline = server.invoke(&json!({"inputs": messages, "parameters":
        {"max_new_tokens": 8, "do_sample": false, "return_full_text": false}}));
    assert_eq!(pipeline.status, 200, "{}", pipeline.body);
    let expected = pipeline.json()[0]["generated_text"].clone();
    let body = json!({"messages": messages, "max_tokens": 8, "temperature": 0});
    for path in ["/invocations", "/v1/chat/completions"] {
        let (status, v) = chat_post(&server, path, &body);
        assert_eq!(status, 200, "{path}: {v}");
        check_shape(&v);
        assert_eq!(v["choices"][0]["message"]["content"], expected, "{path}");
        assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    }
    // `max_completion_tokens` wins; every optional field may be null.
    let (status, v) = chat_post(
        &server,
        "/v1/chat/completions",
        &json!({
        "messages": messages, "model": null, "max_tokens": 3, "max_completion_tokens": 2,
        "temperature": 0, "top_p": null, "seed": null, "stop": null, "n": null,
        "stream": null, "user": null}),
    );
    assert_eq!(status, 200, "{v}");
    check_shape(&v);
    assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    // A stop string taken from the answer cuts it there.
    let text = expected.as_str().expect("text");
    let stop: String = text.chars().skip(2).take(2).collect();
    if !stop.trim().is_empty() {
        let at = text.find(&stop).expect("stop in text");
        let (status, v) = chat_post(
            &server,
            "/v1/chat/completions",
            &json!({"messages": messages, "max_tokens": 8, "temperature": 0, "stop": [stop]}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["message"]["content"], &text[..at], "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    }
    // `n` sampled answers with a seed.
    let (status, v) = chat_post(
        &server,
        "/v1/chat/completions",
        &json!({
        "messages": messages, "max_tokens": 4, "temperature": 0.8, "top_p": 0.9,
        "seed": 7, "n": 2}),
    );
    assert_eq!(status, 200, "{v}");
    check_shape(&v);
    assert_eq!(v["choices"].as_array().map(Vec::len), Some(2), "{v}");
    // Unknown fields are refused by name.
    let (status, v) = chat_post(
        &server,
        "/v1/chat/completions",
        &json!({"messages": messages, "frobnicate": true}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("frobnicate"),
        "{v}"
    );
    let models = server.get("/v1/models");
    assert_eq!(models.status, 200);
    let m = models.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["object"], "model");
    assert!(m["data"][0]["id"].is_string(), "{m}");
}

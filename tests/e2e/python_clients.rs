//! The Python clients people use, as test drivers (issue #12): `tests/clients/drive.py` runs
//! the `openai` client (chat and completions, streamed and not, logprobs, a refused field) and
//! `huggingface_hub.InferenceClient(base_url=...)` (`chat_completion`, `text_generation`,
//! streamed and not, with details) against a server on the llama-gen fixture, checks that each
//! streamed answer equals the unstreamed one, and prints every answer; this test compares them
//! with what raw HTTP gives. The clients live in a venv under `target/py-clients`, installed
//! with pinned versions by `.ci/py-clients-setup.sh` (which `scripts/test` runs).

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Server, fixture};

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/py-clients/bin/python");
    assert!(
        python.is_file(),
        "the Python clients are not installed: run .ci/py-clients-setup.sh (scripts/test does) to create {}",
        python.display()
    );
    python
}

#[test]
fn openai_and_huggingface_hub_clients_get_the_raw_http_answers() {
    let python = python();
    let server = Server::start(fixture("llama-gen")).wait_ready();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/drive.py");
    let run = Command::new(python)
        .arg(script)
        .arg(server.url("/"))
        .env_remove("HF_TOKEN")
        // huggingface_hub refuses every request in offline mode, a local base URL included.
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .output()
        .expect("run the Python clients");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the clients failed:\n{stdout}\n{}\nserver logs:\n{}",
        String::from_utf8_lossy(&run.stderr),
        server.logs()
    );
    let got: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    let raw = |path: &str, body: Value| {
        let a = server.post(
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        a.json()
    };
    let messages = json!([{"role": "user", "content": "Open the file, please."}]);
    let chat = raw(
        "/v1/chat/completions",
        json!({"messages": messages, "max_tokens": 8, "temperature": 0}),
    );
    let content = &chat["choices"][0]["message"]["content"];
    assert_eq!(&got["openai_chat"], content, "{got}");
    assert_eq!(&got["hub_chat"], content, "{got}");
    assert_eq!(&got["hub_chat_stream"], content, "{got}");
    let completion = raw(
        "/v1/completions",
        json!({"prompt": "Open the", "max_tokens": 8, "temperature": 0}),
    );
    let text = &completion["choices"][0]["text"];
    assert_eq!(&got["openai_completion"], text, "{got}");
    let generate = raw(
        "/generate",
        json!({"inputs": "Open the", "parameters": {"max_new_tokens": 8, "details": true}}),
    );
    let details = &generate["details"];
    assert_eq!(&got["hub_generate"], &generate["generated_text"], "{got}");
    assert_eq!(
        &got["hub_generate_details"],
        &json!([details["finish_reason"], details["generated_tokens"]]),
        "{got}"
    );
    assert_eq!(
        &got["hub_generate_stream_details"],
        &json!([
            generate["generated_text"],
            details["finish_reason"],
            details["generated_tokens"]
        ]),
        "{got}"
    );
    assert_eq!(
        got["openai_chat_logprobs"].as_array().map(Vec::len),
        Some(3),
        "{got}"
    );
    assert!(
        got["openai_refused"]
            .as_str()
            .is_some_and(|m| m.contains("frobnicate")),
        "{got}"
    );
    if let Some([stop, stopped]) = got["hub_generate_stop"].as_array().map(Vec::as_slice) {
        let full = got["hub_generate"].as_str().expect("text");
        let stop = stop.as_str().expect("stop");
        let at = full
            .find(stop)
            .expect("the stop string is in the free answer");
        assert_eq!(stopped.as_str(), Some(&full[..at]), "{got}");
    }
}

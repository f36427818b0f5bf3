//! Tests of `GuestProgram` against real guest components: the examples in `examples/` and the
//! test guests in `tests/guests/`, built once per run for wasm32-wasip2 in their own target dir.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::handler::TRANSFORM_CONFLICT;
use crate::pipelines::{Envelope, PipelineError, Task};

// The guest list and builder shared with the end-to-end tests: every crate in `examples/` and
// `tests/guests/`, found by reading the directories.
#[path = "../../../tests/e2e/support/guest_build.rs"]
#[allow(dead_code)]
mod guest_build;

pub(super) use guest_build::guest;

pub(super) fn fixture(name: &str) -> PathBuf {
    guest_build::repo_root()
        .join("tests/fixtures/conformance/models")
        .join(name)
}

/// THE TEST PIPELINE: a real `Pipeline` standing in for candle, so these tests need no
/// model. It labels each input by its word count (even: POSITIVE, odd: NEGATIVE, score
/// words/(words+1)), refuses unknown parameters like the real pipelines, and records what it
/// was asked.
#[derive(Default)]
pub(super) struct WordCountPipeline {
    requests: Mutex<Vec<Value>>,
}

impl WordCountPipeline {
    fn answer(text: &str) -> Value {
        let words = text.split_whitespace().count();
        let label = if words.is_multiple_of(2) {
            "POSITIVE"
        } else {
            "NEGATIVE"
        };
        json!({ "label": label, "score": words as f64 / (words as f64 + 1.0) })
    }
}

impl Pipeline for WordCountPipeline {
    fn task(&self) -> Task {
        Task::TextClassification
    }

    fn run(&self, request: Envelope) -> std::result::Result<Value, PipelineError> {
        let mut value = json!({ "inputs": request.inputs });
        if !request.parameters.is_empty() {
            value["parameters"] = Value::Object(request.parameters);
        }
        self.predict(value)
    }

    /// Overridden to record the request exactly as the hook chain or the guest sent it.
    fn predict(&self, request: Value) -> std::result::Result<Value, PipelineError> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.clone());
        if let Some(params) = request.get("parameters").and_then(Value::as_object)
            && let Some(name) = params.keys().next()
        {
            return Err(PipelineError::UnknownParameters {
                names: vec![name.clone()],
                task: Task::TextClassification,
                accepted: Vec::new(),
            });
        }
        match request.get("inputs").unwrap_or(&request) {
            Value::String(text) => Ok(json!([Self::answer(text)])),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(Self::answer)
                        .ok_or_else(|| PipelineError::validation("inputs must be strings"))
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Value::Array),
            _ => Err(PipelineError::validation(
                "`inputs` must be a string or a list of strings",
            )),
        }
    }
}

fn limits(dir: &Path) -> WasmLimits {
    WasmLimits {
        memory_bytes: 64 * 1024 * 1024,
        call_timeout: Duration::from_secs(10),
        instances: 2,
        cache_dir: dir.join("cache"),
    }
}

fn load(
    name: &str,
    model_dir: &Path,
    limits: &WasmLimits,
) -> (GuestProgram, Arc<WordCountPipeline>) {
    let native = Arc::new(WordCountPipeline::default());
    let program = GuestProgram::load(
        &guest(name),
        model_dir,
        limits,
        Arc::new(FixedPipeline(Arc::clone(&native) as Arc<dyn Pipeline>)),
    )
    .unwrap_or_else(|e| panic!("{name} loads: {e:?}"));
    (program, native)
}

fn ctx(request_id: &str) -> RequestContext {
    RequestContext {
        request_id: request_id.to_owned(),
        headers: vec![("accept".into(), "*/*".into())],
        custom_attributes: None,
    }
}

fn set(hooks: &[Hook]) -> HookSet {
    hooks.iter().copied().collect()
}

fn json_body(response: &HookResponse) -> Value {
    serde_json::from_slice(&response.body).expect("the body is JSON")
}

/// Runs `f` with a subscriber that records every log line, and returns them.
fn capture_logs(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let shared = Shared::default();
    let writer = shared.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = shared
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    String::from_utf8(bytes).expect("logs are UTF-8")
}

#[test]
fn preprocess_only_cleans_text_and_leaves_predict_to_the_native_pipeline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (program, native) = load(
        "preprocess-only",
        &fixture("bert-seqcls"),
        &limits(tmp.path()),
    );
    assert_eq!(program.hooks(), set(&[Hook::InputFn]));

    let body = br#"{"inputs": "  <p>Hello&nbsp;&amp;   <b>big</b>\n\tworld</p> ", "parameters": {"top_k": 1}}"#;
    let payload = program
        .input_fn(&ctx("r1"), body, "application/json; charset=utf-8")
        .expect("input_fn");
    assert_eq!(
        payload,
        Payload::Json(json!({"inputs": "Hello & big world", "parameters": {"top_k": 1}}))
    );

    let list = program
        .input_fn(
            &ctx("r2"),
            br#"{"inputs": ["a<br>b", " c  d "]}"#,
            "application/json",
        )
        .expect("input_fn on a list");
    assert_eq!(list, Payload::Json(json!({"inputs": ["a b", "c d"]})));

    let text = program
        .input_fn(&ctx("r3"), b"<i>plain</i>   text", "text/plain")
        .expect("text/plain");
    assert_eq!(text, Payload::Json(json!({"inputs": "plain text"})));
    // The guest's payload is exactly what the native predict_fn accepts.
    let Payload::Json(request) = text else {
        unreachable!()
    };
    assert_eq!(
        native.predict(request).expect("native predict"),
        json!([{"label": "POSITIVE", "score": 2.0 / 3.0}])
    );

    let err = program
        .input_fn(&ctx("r4"), b"x", "application/octet-stream")
        .expect_err("415");
    assert!(
        matches!(
            err,
            GuestError::UnsupportedMedia {
                hook: Hook::InputFn,
                ..
            }
        ),
        "{err:?}"
    );
    let err = program
        .input_fn(&ctx("r5"), b"{not json", "application/json")
        .expect_err("400");
    assert!(
        matches!(err, GuestError::BadRequest { hook: Hook::InputFn, ref message } if message.contains("invalid JSON")),
        "{err:?}"
    );
    assert!(err.is_client_error());
}

#[test]
fn postprocess_reshapes_the_native_answer_and_honours_accept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (program, native) = load("postprocess", &fixture("bert-seqcls"), &limits(tmp.path()));
    assert_eq!(program.hooks(), set(&[Hook::OutputFn]));

    let prediction = native
        .predict(json!({"inputs": ["one two", "one two three"]}))
        .expect("native");
    let mut context = ctx("r1");
    context.custom_attributes = Some("trace=abc".to_owned());
    let response = program
        .output_fn(
            &context,
            Payload::Json(prediction.clone()),
            "application/json",
        )
        .expect("json");
    assert_eq!(response.content_type, "application/json");
    assert_eq!(
        json_body(&response),
        json!({
            "task": "text-classification",
            "predictions": [
                {"label": "good", "score": 2.0 / 3.0, "confident": false},
                {"label": "bad", "score": 0.75, "confident": false},
            ],
        })
    );
    assert_eq!(response.custom_attributes.as_deref(), Some("trace=abc"));
    assert_eq!(
        response.headers,
        vec![("x-sagebrush-guest".to_owned(), "postprocess".to_owned())]
    );

    let csv = program
        .output_fn(&ctx("r2"), Payload::Json(prediction.clone()), "text/csv")
        .expect("csv");
    assert_eq!(csv.content_type, "text/csv");
    assert_eq!(
        String::from_utf8(csv.body).expect("utf-8"),
        format!(
            "label,score,confident\ngood,{},false\nbad,0.75,false\n",
            2.0 / 3.0
        )
    );
    assert_eq!(
        csv.custom_attributes, None,
        "nothing to echo when the client sent none"
    );

    let err = program
        .output_fn(&ctx("r3"), Payload::Json(prediction), "application/xml")
        .expect_err("406");
    assert!(
        matches!(
            err,
            GuestError::NotAcceptable {
                hook: Hook::OutputFn,
                ..
            }
        ),
        "{err:?}"
    );
}

/// The tokenizer example's algorithm, recomputed from the fixture files.
fn expected_tokenizer_answer(model_dir: &Path, text: &str) -> Value {
    let vocab = std::fs::read_to_string(model_dir.join("vocab.txt")).expect("vocab");
    let ids: std::collections::HashMap<&str, u64> = vocab.lines().zip(0u64..).collect();
    let config: Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("config.json")).expect("config"))
            .expect("json");
    let labels = config["id2label"].as_object().expect("id2label");
    let mut pieces = Vec::new();
    let mut word = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            if !word.is_empty() {
                pieces.push(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                pieces.push(c.to_string());
            }
        }
    }
    if !word.is_empty() {
        pieces.push(word);
    }
    let unk = ids["[UNK]"];
    let token_ids: Vec<u64> = pieces
        .iter()
        .map(|p| ids.get(p.as_str()).copied().unwrap_or(unk))
        .collect();
    let known = token_ids.iter().filter(|&&i| i != unk).count();
    let sum: u64 = token_ids.iter().sum();
    let label = &labels[&(sum % labels.len() as u64).to_string()];
    json!({"label": label, "score": known as f64 / token_ids.len() as f64, "tokens": pieces, "ids": token_ids})
}

#[test]
fn tokenizer_model_fn_predicts_from_the_model_directory_in_every_instance() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model_dir = fixture("bert-seqcls");
    let (program, native) = load("tokenizer-model-fn", &model_dir, &limits(tmp.path()));
    assert_eq!(program.hooks(), set(&[Hook::ModelFn, Hook::PredictFn]));

    let text = "Hello, wonderful world! zzqx";
    let expected = expected_tokenizer_answer(&model_dir, text);
    assert!(
        expected["score"].as_f64().expect("score") < 1.0,
        "the case has an unknown word"
    );
    // Two instances, two threads at once: both have their own model from model_fn.
    let program = Arc::new(program);
    let answers: Vec<_> = (0..2)
        .map(|i| {
            let program = Arc::clone(&program);
            std::thread::spawn(move || {
                program.predict_fn(
                    &ctx(&format!("r{i}")),
                    Payload::Json(json!({"inputs": text})),
                )
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    for answer in answers {
        assert_eq!(answer.expect("predict_fn"), Payload::Json(expected.clone()));
    }
    assert_eq!(program.pool.live(), 2);
    assert!(
        native.requests.lock().expect("lock").is_empty(),
        "no native pipeline involved"
    );

    let err = program
        .predict_fn(&ctx("r3"), Payload::Json(json!({"inputs": 3})))
        .expect_err("400");
    assert!(
        matches!(
            err,
            GuestError::BadRequest {
                hook: Hook::PredictFn,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_failing_model_fn_fails_the_load_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty_model = tmp.path().join("model");
    std::fs::create_dir_all(&empty_model).expect("mkdir");
    let native: Arc<dyn Pipeline> = Arc::new(WordCountPipeline::default());
    let err = GuestProgram::load(
        &guest("tokenizer-model-fn"),
        &empty_model,
        &limits(tmp.path()),
        Arc::new(FixedPipeline(native)),
    )
    .expect_err("no vocab.txt");
    assert!(
        matches!(err, GuestError::Internal { hook: Hook::ModelFn, ref message } if message.contains("vocab.txt")),
        "{err:?}"
    );
    assert_eq!(err.hook(), Some(Hook::ModelFn));
}

#[test]
fn transform_answers_the_whole_request_around_the_native_pipeline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (program, native) = load("transform", &fixture("bert-seqcls"), &limits(tmp.path()));
    assert_eq!(program.hooks(), set(&[Hook::TransformFn]));

    let mut context = ctx("req-7");
    context.custom_attributes = Some("a=1".to_owned());
    let response = program
        .transform_fn(
            &context,
            br#"{"inputs": "three little words"}"#,
            "application/json",
            "application/json",
        )
        .expect("transform_fn");
    assert_eq!(
        json_body(&response),
        json!({
            "request_id": "req-7",
            "inputs": "three little words",
            "prediction": [{"label": "NEGATIVE", "score": 0.75}],
        })
    );
    assert_eq!(
        response.custom_attributes.as_deref(),
        Some("a=1;transformed=1")
    );
    assert_eq!(
        native.requests.lock().expect("lock").as_slice(),
        [json!({"inputs": "three little words"})]
    );

    let text = program
        .transform_fn(&ctx("r2"), b"two words", "text/plain", "text/plain")
        .expect("text");
    assert_eq!(
        (text.content_type.as_str(), text.body.as_slice()),
        ("text/plain", b"POSITIVE\t0.6666666666666666\n".as_slice())
    );

    let err = program
        .transform_fn(&ctx("r3"), b"a,b", "text/csv", "application/json")
        .expect_err("415");
    assert!(
        matches!(
            err,
            GuestError::UnsupportedMedia {
                hook: Hook::TransformFn,
                ..
            }
        ),
        "{err:?}"
    );
    // The native pipeline's client errors reach the caller as a bad request.
    let err = program
        .transform_fn(
            &ctx("r4"),
            br#"{"inputs": "x"}"#,
            "application/json",
            "application/xml",
        )
        .expect_err("406");
    assert!(
        matches!(
            err,
            GuestError::NotAcceptable {
                hook: Hook::TransformFn,
                ..
            }
        ),
        "{err:?}"
    );
    let err = program
        .transform_fn(
            &ctx("r5"),
            br#"{"inputs": {"nested": true}}"#,
            "application/json",
            "application/json",
        )
        .expect_err("400");
    assert!(
        matches!(err, GuestError::BadRequest { hook: Hook::TransformFn, ref message } if message.contains("inputs")),
        "{err:?}"
    );
    let err = program
        .transform_fn(
            &ctx("r6"),
            br#"{"inputs": "x", "parameters": {"nonsense": 1}}"#,
            "application/json",
            "application/json",
        )
        .expect_err("400");
    assert!(
        matches!(err, GuestError::BadRequest { hook: Hook::TransformFn, ref message } if message.contains("nonsense")),
        "{err:?}"
    );
}

#[test]
fn transform_fn_with_input_fn_is_refused_at_load_with_the_spec_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let native: Arc<dyn Pipeline> = Arc::new(WordCountPipeline::default());
    let err = GuestProgram::load(
        &guest("transform-conflict"),
        &fixture("bert-seqcls"),
        &limits(tmp.path()),
        Arc::new(FixedPipeline(native)),
    )
    .expect_err("conflict");
    assert!(matches!(err, GuestError::TransformConflict), "{err:?}");
    assert_eq!(err.to_string(), TRANSFORM_CONFLICT);
    assert_eq!(
        err.to_string(),
        "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation"
    );
}

fn fault_limits(dir: &Path) -> WasmLimits {
    WasmLimits {
        memory_bytes: 32 * 1024 * 1024,
        call_timeout: Duration::from_millis(300),
        instances: 1,
        cache_dir: dir.join("cache"),
    }
}

fn assert_next_call_works(program: &GuestProgram, request_id: &str) {
    let payload = program
        .input_fn(&ctx(request_id), b"hello", "text/plain")
        .expect("the next call works");
    assert_eq!(payload, Payload::Json(json!({"inputs": "hello"})));
    assert_eq!(
        program.pool.live(),
        1,
        "the poisoned instance was replaced, not added to"
    );
}

#[test]
fn a_guest_panic_fails_only_its_call_with_the_panic_text() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (program, _) = load(
        "misbehave",
        &fixture("bert-seqcls"),
        &fault_limits(tmp.path()),
    );
    assert_eq!(program.hooks(), set(&[Hook::InputFn, Hook::OutputFn]));

    let err = program
        .input_fn(&ctx("req-panic"), b"panic", "text/plain")
        .expect_err("trap");
    let GuestError::Trap {
        hook,
        ref detail,
        ref stderr,
    } = err
    else {
        panic!("expected a trap, got {err:?}")
    };
    assert_eq!(hook, Hook::InputFn);
    assert!(detail.contains("unreachable"), "{detail}");
    assert!(
        stderr.contains("guest panic: asked to by request req-panic"),
        "{stderr}"
    );
    let message = err.to_string();
    assert!(
        message.contains("`input_fn`") && message.contains("guest panic: asked to"),
        "{message}"
    );
    assert_next_call_works(&program, "after-panic");

    let err = program
        .output_fn(
            &ctx("req-out"),
            Payload::Json(json!("panic-in-output")),
            "*/*",
        )
        .expect_err("trap");
    assert!(
        matches!(err, GuestError::Trap { hook: Hook::OutputFn, ref stderr, .. } if stderr.contains("guest panic in output_fn")),
        "{err:?}"
    );
    let ok = program
        .output_fn(
            &ctx("req-out2"),
            Payload::Json(json!({"fine": true})),
            "*/*",
        )
        .expect("next output_fn");
    assert_eq!(json_body(&ok), json!({"fine": true}));
}

#[test]
fn a_runaway_guest_is_interrupted_and_the_next_call_works() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let limits = fault_limits(tmp.path());
    let (program, _) = load("misbehave", &fixture("bert-seqcls"), &limits);
    let err = program
        .input_fn(&ctx("req-loop"), b"loop", "text/plain")
        .expect_err("timeout");
    assert!(
        matches!(err, GuestError::Timeout { hook: Hook::InputFn, limit } if limit == limits.call_timeout),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("`input_fn` did not finish within 300 ms"),
        "{err}"
    );
    assert_next_call_works(&program, "after-loop");
}

#[test]
fn a_memory_hog_hits_the_cap_and_the_next_call_works() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let limits = fault_limits(tmp.path());
    let (program, _) = load("misbehave", &fixture("bert-seqcls"), &limits);
    let err = program
        .input_fn(&ctx("req-oom"), b"oom", "text/plain")
        .expect_err("oom");
    assert!(
        matches!(err, GuestError::OutOfMemory { hook: Hook::InputFn, limit_bytes } if limit_bytes == limits.memory_bytes),
        "{err:?}"
    );
    assert!(err.to_string().contains("memory limit of 32 MiB"), "{err}");
    assert_next_call_works(&program, "after-oom");
}

#[test]
fn guest_stdout_and_stderr_are_logged_with_the_request_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (program, _) = load(
        "misbehave",
        &fixture("bert-seqcls"),
        &fault_limits(tmp.path()),
    );
    let logs = capture_logs(|| {
        program
            .input_fn(&ctx("req-logs"), b"hi", "text/plain")
            .expect("input_fn");
    });
    assert!(
        logs.contains("misbehave input_fn req-logs stdout"),
        "{logs}"
    );
    assert!(
        logs.contains("misbehave input_fn req-logs stderr"),
        "{logs}"
    );
    assert!(logs.contains("request_id=req-logs"), "{logs}");
    assert!(
        logs.contains("hook=\"input_fn\"") || logs.contains("hook=input_fn"),
        "{logs}"
    );
}

#[test]
fn one_instance_serves_concurrent_callers_one_at_a_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (program, _) = load(
        "misbehave",
        &fixture("bert-seqcls"),
        &fault_limits(tmp.path()),
    );
    let program = Arc::new(program);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let program = Arc::clone(&program);
            std::thread::spawn(move || {
                program.input_fn(
                    &ctx(&format!("c{i}")),
                    format!("w{i}").as_bytes(),
                    "text/plain",
                )
            })
        })
        .collect();
    for (i, handle) in handles.into_iter().enumerate() {
        assert_eq!(
            handle.join().expect("thread").expect("call"),
            Payload::Json(json!({"inputs": format!("w{i}")}))
        );
    }
    assert_eq!(program.pool.live(), 1);
}

#[test]
fn the_sandbox_gives_a_guest_the_model_directory_read_only_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model_dir = tmp.path().join("model");
    std::fs::create_dir_all(&model_dir).expect("mkdir");
    std::fs::write(
        model_dir.join("config.json"),
        br#"{"id2label": {"0": "A"}}"#,
    )
    .expect("write");
    std::fs::write(tmp.path().join("secret.txt"), b"outside the model dir").expect("write");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");

    let (program, _) = load("sandbox-probe", &model_dir, &limits(tmp.path()));
    let body = json!({"connect": addr.to_string()}).to_string();
    let report = json_body(
        &program
            .transform_fn(
                &ctx("probe"),
                body.as_bytes(),
                "application/json",
                "application/json",
            )
            .expect("probe"),
    );

    assert!(report["etc_passwd"]["err"].is_string(), "{report}");
    assert!(report["root_dir"]["err"].is_string(), "{report}");
    assert!(report["model_parent"]["err"].is_string(), "{report}");
    assert_eq!(report["model_config"]["ok"], json!("24"), "{report}");
    assert!(report["model_write"]["err"].is_string(), "{report}");
    assert!(!model_dir.join("written-by-guest.txt").exists());
    assert_eq!(report["env_vars"], json!([]), "{report}");
    assert_eq!(report["hf_token"], Value::Null);
    assert_eq!(report["args"], json!([]), "{report}");
    assert!(report["tcp_connect"]["err"].is_string(), "{report}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection arrived"
    );
    assert!(report["dns_lookup"]["err"].is_string(), "{report}");
    assert!(report["udp_bind"]["err"].is_string(), "{report}");
}

#[test]
fn the_second_load_of_a_guest_comes_from_the_compile_cache() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let limits = limits(tmp.path());
    let (first, _) = load("preprocess-only", &fixture("bert-seqcls"), &limits);
    assert!(
        !first.compile_info().from_cache,
        "a fresh cache directory cannot hit"
    );
    drop(first);
    let (second, _) = load("preprocess-only", &fixture("bert-seqcls"), &limits);
    assert!(
        second.compile_info().from_cache,
        "same bytes, same engine: a cache hit"
    );
    let wasm = std::fs::read(guest("preprocess-only")).expect("read");
    assert_eq!(
        second.compile_info().sha256,
        super::hex(&Sha256::digest(&wasm))
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bogus = tmp.path().join("inference.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0 not really").expect("write");
    let native: Arc<dyn Pipeline> = Arc::new(WordCountPipeline::default());
    let host: Arc<dyn GuestHost> = Arc::new(FixedPipeline(native));
    let err = GuestProgram::load(&bogus, tmp.path(), &limits(tmp.path()), Arc::clone(&host))
        .expect_err("refused");
    assert!(matches!(err, GuestError::Compile { .. }), "{err:?}");
    let err = GuestProgram::load(
        &tmp.path().join("missing.wasm"),
        tmp.path(),
        &limits(tmp.path()),
        host,
    )
    .expect_err("refused");
    assert!(matches!(err, GuestError::Read { .. }), "{err:?}");
}

#[test]
fn passthrough_hooks_decode_and_encode_like_the_native_defaults() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (program, _) = load("passthrough", &fixture("bert-seqcls"), &limits(tmp.path()));
    assert_eq!(program.hooks(), set(&[Hook::InputFn, Hook::OutputFn]));
    let body = br#"{"inputs": ["a", "b"], "parameters": {"top_k": null}}"#;
    let decoded = program
        .input_fn(&ctx("r1"), body, "application/json")
        .expect("input_fn");
    assert_eq!(
        decoded,
        Payload::Json(serde_json::from_slice(body).expect("json"))
    );
    let response = program
        .output_fn(&ctx("r2"), decoded, "application/json")
        .expect("output_fn");
    assert_eq!(
        json_body(&response),
        serde_json::from_slice::<Value>(body).expect("json")
    );
    assert!(
        program
            .pool
            .peak_memory()
            .iter()
            .all(|&peak| peak > 0 && peak < 64 * 1024 * 1024)
    );
}

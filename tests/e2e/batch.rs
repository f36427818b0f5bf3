//! `sagebrush batch` end to end (contract §8, issue 13): the real binary over local folders and
//! moto's S3, both strategies, gzip, nested folders, order at concurrency 8, both error modes, a
//! job killed mid-file and resumed, a guest from `code/`, the DataProcessing filters; and the
//! container side: MultiRecord bodies over HTTP.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::compare::json_close;
use crate::support::guests::model_with_guest;
use crate::support::hub_stub::{HubStub, Moto};
use crate::support::{Server, cases_file, fixture};

/// The bert-seqcls conformance cases that are one JSON request answered 200: (body, answer).
fn json_cases() -> Vec<(Value, Value)> {
    let text = std::fs::read_to_string(cases_file("bert-seqcls")).expect("cases");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("case"))
        .filter(|c| {
            c["expect"]["status"] == 200
                && c["env"].as_object().is_none_or(|e| e.is_empty())
                && c["request"]["headers"]["Content-Type"] == "application/json"
                && !c["expect"]["json"].is_null()
        })
        .map(|c| {
            let body: Value =
                serde_json::from_str(c["request"]["body"].as_str().expect("body")).expect("json");
            (body, c["expect"]["json"].clone())
        })
        .collect()
}

/// A finished `sagebrush batch` run.
struct Run {
    status: ExitStatus,
    logs: String,
}

/// Spawns `sagebrush batch ARGS` with a clean environment plus `env`.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, Arc<Mutex<String>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagebrush"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir().join("sagebrush-e2e-home"))
        .env("RUST_LOG", "info")
        .arg("batch")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sagebrush batch");
    let logs = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (child, logs)
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let (mut child, logs) = spawn(args, env);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("batch job did not finish; logs:\n{}", logs.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The log thread drains the pipe after the exit.
    std::thread::sleep(Duration::from_millis(100));
    let logs = logs.lock().unwrap().clone();
    Run { status, logs }
}

fn model_arg() -> String {
    fixture("bert-seqcls").display().to_string()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn jsonl(values: &[Value]) -> Vec<u8> {
    values
        .iter()
        .map(|v| format!("{v}\n"))
        .collect::<String>()
        .into_bytes()
}

fn output_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn assert_answers(path: &Path, expected: &[Value]) {
    let got = output_lines(path);
    assert_eq!(got.len(), expected.len(), "{}", path.display());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        json_close(g, e, 1e-4).unwrap_or_else(|err| panic!("{} record {i}: {err}", path.display()));
    }
}

/// A job's arguments: `--model`, `--input`, `--output`, then `more`.
fn job_args(model: &str, input: &Path, output: &Path, more: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--model".to_owned(),
        model.to_owned(),
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
    ];
    args.extend(more.iter().map(|a| (*a).to_owned()));
    args
}

fn str_args(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn both_strategies_answer_every_record_in_order_with_gzip_and_nested_folders() {
    let cases = json_cases();
    assert!(cases.len() >= 10, "{}", cases.len());
    // Three copies in a shifted order, so requests mix parameters and shapes.
    let mut records = Vec::new();
    for k in 0..3 {
        for i in 0..cases.len() {
            records.push(cases[(i + k * 5) % cases.len()].clone());
        }
    }
    let bodies: Vec<Value> = records.iter().map(|(b, _)| b.clone()).collect();
    let expected: Vec<Value> = records.iter().map(|(_, e)| e.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write(&input.join("top.jsonl"), &jsonl(&bodies));
    write(
        &input.join("nested/deeper/part.jsonl.gz"),
        &gzip(&jsonl(&bodies[..7])),
    );
    for strategy in ["MultiRecord", "SingleRecord"] {
        let out = dir.path().join(format!("out-{strategy}"));
        let args = job_args(
            &model_arg(),
            &input,
            &out,
            &[
                "--strategy",
                strategy,
                "--concurrency",
                "8",
                "--max-records",
                "4",
                // Each pass cut into three parts run at once, whatever the machine's CPU count.
                "--forward-parts",
                "3",
            ],
        );
        let r = run(&str_args(&args), &[]);
        assert!(r.status.success(), "{strategy}: {}", r.logs);
        assert!(r.logs.contains("forward_parts=3"), "{}", r.logs);
        assert_answers(&out.join("top.jsonl.out"), &expected);
        assert_answers(&out.join("nested/deeper/part.jsonl.gz.out"), &expected[..7]);
        assert!(r.logs.contains("batch job finished"), "{}", r.logs);
        let names: Vec<_> = walk(&out);
        assert_eq!(names.len(), 2, "no partial files left: {names:?}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

const TEXTS: [&str; 3] = [
    "The movie was wonderful and the actors were great. I loved it.",
    "The food was terrible and the service was slow.",
    "I am not sure how I feel about this new phone.",
];
const SCORES: [f64; 3] = [0.5804130434989929, 0.5553812384605408, 0.7413342595100403];

#[test]
fn csv_records_keep_their_header_and_answer_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.csv");
    write(
        &input,
        format!("inputs\n{}\n\"{}\"\n{}\n", TEXTS[0], TEXTS[1], TEXTS[2]).as_bytes(),
    );
    let out = dir.path().join("out");
    // The same model as a directory and as a local `model.tar.gz`.
    let archive = fixture("bert-seqcls-targz").join("model.tar.gz");
    for (strategy, model) in [
        ("MultiRecord", model_arg()),
        ("SingleRecord", archive.display().to_string()),
    ] {
        let _ = std::fs::remove_dir_all(&out);
        let args = job_args(
            &model,
            &input,
            &out,
            &[
                "--content-type",
                "text/csv",
                "--accept",
                "text/csv",
                "--strategy",
                strategy,
            ],
        );
        let r = run(&str_args(&args), &[]);
        assert!(r.status.success(), "{}", r.logs);
        let text = std::fs::read_to_string(out.join("rows.csv.out")).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 4, "{text}");
        assert_eq!(rows[0], "label,score");
        for (row, score) in rows[1..].iter().zip(SCORES) {
            let (label, got) = row.split_once(',').expect("two cells");
            assert_eq!(label, "NEGATIVE");
            assert!((got.parse::<f64>().unwrap() - score).abs() < 1e-4, "{row}");
        }
    }
}

/// `--model` as a Hub model id (`HF_MODEL_ID`, or `--model-id`), fetched from the Hub-shaped
/// stub as `serve` fetches it; a second job finds the model in `HF_HOME` and asks the Hub for
/// nothing but the revision (or nothing at all when offline).
#[test]
fn a_hub_model_id_is_downloaded_and_runs_the_job() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stub = rt.block_on(HubStub::start());
    let commit = stub.add_model_dir("org/bert-batch", &fixture("bert-seqcls"));
    let dir = tempfile::tempdir().unwrap();
    let hf_home = dir.path().join("hf");
    let input = dir.path().join("in");
    let records: Vec<Value> = (0..6).map(|i| json!({ "inputs": TEXTS[i % 3] })).collect();
    write(&input.join("a.jsonl"), &jsonl(&records));
    let expected: Vec<Value> = (0..6)
        .map(|i| json!([{"label": "NEGATIVE", "score": SCORES[i % 3]}]))
        .collect();
    let endpoint = stub.endpoint();
    let hf_home_s = hf_home.display().to_string();
    let out = dir.path().join("out-env");
    let args = [
        "--input",
        &input.display().to_string(),
        "--output",
        &out.display().to_string(),
    ]
    .map(str::to_owned);
    let env = [
        ("HF_MODEL_ID", "org/bert-batch"),
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", hf_home_s.as_str()),
    ];
    let r = run(&str_args(&args), &env);
    assert!(r.status.success(), "{}", r.logs);
    assert_answers(&out.join("a.jsonl.out"), &expected);
    let fetched: Vec<String> = stub.requests().into_iter().map(|r| r.path).collect();
    assert!(
        fetched
            .iter()
            .any(|p| p.contains("/cdn/") || p.contains("model.safetensors")),
        "the weights came from the stub Hub: {fetched:?}"
    );
    assert!(
        hf_home
            .join("hub/models--org--bert-batch/snapshots")
            .join(&commit)
            .join("model.safetensors")
            .is_file(),
        "{}",
        r.logs
    );

    // `--model-id` as a flag, offline: the cached snapshot serves, the Hub is not asked.
    stub.reset_requests();
    let out = dir.path().join("out-flag");
    let mut args = job_args("unused", &input, &out, &["--model-id", "org/bert-batch"]);
    args.drain(..2);
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", hf_home_s.as_str()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let r = run(&str_args(&args), &env);
    assert!(r.status.success(), "{}", r.logs);
    assert_answers(&out.join("a.jsonl.out"), &expected);
    assert_eq!(stub.requests(), [], "offline: nothing asked of the Hub");

    // A model id the Hub does not have fails the job before any output, naming it.
    let out = dir.path().join("out-missing");
    let mut args = job_args("unused", &input, &out, &["--model-id", "org/nope"]);
    args.drain(..2);
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HOME", hf_home_s.as_str()),
    ];
    let r = run(&str_args(&args), &env);
    assert!(!r.status.success(), "{}", r.logs);
    assert!(r.logs.contains("org/nope"), "{}", r.logs);
    assert!(!out.join("a.jsonl.out").exists());
}

#[test]
fn a_bad_record_fails_its_file_or_becomes_a_placeholder() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let good: Vec<Value> = TEXTS.iter().map(|t| json!({ "inputs": t })).collect();
    write(&input.join("a-good.jsonl"), &jsonl(&good));
    let mut mixed = good.clone();
    mixed.insert(2, json!({"inputs": TEXTS[0], "parameters": {"tok_k": 1}}));
    mixed.push(json!({"inputs": 5}));
    write(&input.join("b-bad.jsonl"), &jsonl(&mixed));

    let out = dir.path().join("out-fail");
    let base = |out: &Path| job_args(&model_arg(), &input, out, &["--concurrency", "8"]);
    let r = run(&str_args(&base(&out)), &[]);
    assert!(!r.status.success(), "{}", r.logs);
    assert!(out.join("a-good.jsonl.out").is_file(), "{}", r.logs);
    assert!(!out.join("b-bad.jsonl.out").exists());
    assert_eq!(walk(&out).len(), 1, "no partial file left");
    let summary = r
        .logs
        .lines()
        .find(|l| l.contains("b-bad.jsonl line 3"))
        .unwrap_or_else(|| {
            panic!(
                "the failed file and its first bad record are listed:\n{}",
                r.logs
            )
        });
    assert!(summary.contains("`tok_k`"), "{summary}");

    let out = dir.path().join("out-placeholder");
    let mut args = base(&out);
    args.extend(["--on-error".into(), "placeholder".into()]);
    let r = run(&str_args(&args), &[]);
    assert!(r.status.success(), "{}", r.logs);
    let lines = output_lines(&out.join("b-bad.jsonl.out"));
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[2]["error"]["line"], 3, "{}", lines[2]);
    assert_eq!(lines[2]["error"]["code"], 400);
    assert!(
        lines[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`tok_k`")
    );
    assert_eq!(lines[4]["error"]["line"], 5);
    for (i, score) in [(0, SCORES[0]), (1, SCORES[1]), (3, SCORES[2])] {
        json_close(
            &lines[i],
            &json!([{"label": "NEGATIVE", "score": score}]),
            1e-4,
        )
        .unwrap_or_else(|e| panic!("line {i}: {e}"));
    }
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(ok.success());
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool, logs: &Mutex<String>) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; logs:\n{}",
            logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_job_killed_mid_file_resumes_without_redoing_or_half_writing() {
    stopped_mid_file_then_resumed("KILL");
}

/// SIGTERM (what SageMaker and `docker stop` send) ends a job as SIGKILL does: the files done
/// stay, the file in progress has no output, and the next run redoes only that file.
#[test]
fn a_job_sent_sigterm_mid_file_resumes_without_redoing_or_half_writing() {
    stopped_mid_file_then_resumed("TERM");
}

/// Runs a job whose second file blocks mid-file, stops it with `signal`, and checks the resume.
fn stopped_mid_file_then_resumed(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let out = dir.path().join("out");
    let records: Vec<Value> = (0..6).map(|i| json!({ "inputs": TEXTS[i % 3] })).collect();
    write(&input.join("a.jsonl"), &jsonl(&records[..4]));
    // `b.jsonl` is a FIFO: the job reads what the test writes and then blocks, mid-file.
    let fifo = input.join("b.jsonl");
    mkfifo(&fifo);
    let args = job_args(&model_arg(), &input, &out, &["--strategy", "SingleRecord"]);
    let (mut child, logs) = spawn(&str_args(&args), &[]);
    let done_a = out.join("a.jsonl.out");
    wait_until(
        "a.jsonl.out",
        Duration::from_secs(120),
        || done_a.is_file(),
        &logs,
    );
    let a_before = std::fs::metadata(&done_a).unwrap().modified().unwrap();
    let a_text = std::fs::read_to_string(&done_a).unwrap();
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(&jsonl(&records[..3])).unwrap();
    writer.flush().unwrap();
    let partial = out.join(".b.jsonl.out.partial");
    wait_until(
        "three records in the partial output",
        Duration::from_secs(60),
        || std::fs::read_to_string(&partial).is_ok_and(|t| t.lines().count() == 3),
        &logs,
    );
    let sent = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "a stopped job does not report success");
    drop(writer);
    assert!(!out.join("b.jsonl.out").exists(), "no half-written output");

    std::fs::remove_file(&fifo).unwrap();
    write(&fifo, &jsonl(&records));
    let r = run(&str_args(&args), &[]);
    assert!(r.status.success(), "{}", r.logs);
    assert!(
        r.logs.contains("skipping a.jsonl: its output exists"),
        "{}",
        r.logs
    );
    assert!(r.logs.contains("1 of 2 files already done"), "{}", r.logs);
    assert_eq!(
        std::fs::metadata(&done_a).unwrap().modified().unwrap(),
        a_before
    );
    assert_eq!(std::fs::read_to_string(&done_a).unwrap(), a_text);
    let expected: Vec<Value> = (0..6)
        .map(|i| json!([{"label": "NEGATIVE", "score": SCORES[i % 3]}]))
        .collect();
    assert_answers(&out.join("b.jsonl.out"), &expected);
    assert_eq!(walk(&out).len(), 2, "{:?}", walk(&out));

    let again = run(&str_args(&args), &[]);
    assert!(again.status.success(), "{}", again.logs);
    assert!(again.logs.contains("nothing to do"), "{}", again.logs);
}

#[test]
fn user_code_from_the_model_runs_in_batch_as_in_serve() {
    let base = model_with_guest(&fixture("bert-seqcls"), "postprocess");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.jsonl");
    write(
        &input,
        &jsonl(
            &TEXTS
                .iter()
                .map(|t| json!({ "inputs": t }))
                .collect::<Vec<_>>(),
        ),
    );
    let out = dir.path().join("out");
    let args = job_args(
        &base.path().join("model").display().to_string(),
        &input,
        &out,
        &[
            "--content-type",
            "application/json",
            "--accept",
            "application/json",
            "--strategy",
            "SingleRecord",
        ],
    );
    let r = run(&str_args(&args), &[]);
    assert!(r.status.success(), "{}", r.logs);
    assert!(r.logs.contains("user code hooks found"), "{}", r.logs);
    let expected: Vec<Value> = SCORES
        .iter()
        .map(|s| {
            json!({"task": "text-classification", "predictions": [{"label": "bad", "score": s, "confident": false}]})
        })
        .collect();
    assert_answers(&out.join("texts.jsonl.out"), &expected);
}

#[test]
fn input_filter_join_and_output_filter_follow_sagemaker() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let records: Vec<Value> = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "meta": "x", "features": {"inputs": t}}))
        .collect();
    write(&input.join("r.jsonl"), &jsonl(&records));
    let out = dir.path().join("out-json");
    let args = job_args(
        &model_arg(),
        &input,
        &out,
        &[
            "--input-filter",
            "$.features",
            "--join-source",
            "Input",
            "--output-filter",
            "$['id','SageMakerOutput']",
        ],
    );
    let r = run(&str_args(&args), &[]);
    assert!(r.status.success(), "{}", r.logs);
    let expected: Vec<Value> = SCORES
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": i, "SageMakerOutput": [{"label": "NEGATIVE", "score": s}]}))
        .collect();
    assert_answers(&out.join("r.jsonl.out"), &expected);

    let csv_in = dir.path().join("csv");
    write(
        &csv_in.join("rows.csv"),
        format!("id,inputs\n7,{}\n8,\"{}\"\n", TEXTS[0], TEXTS[1]).as_bytes(),
    );
    let out = dir.path().join("out-csv");
    let args = job_args(
        &model_arg(),
        &csv_in,
        &out,
        &[
            "--content-type",
            "text/csv",
            "--accept",
            "text/csv",
            "--input-filter",
            "$[1:]",
            "--join-source",
            "Input",
            "--output-filter",
            "$[0,2]",
        ],
    );
    let r = run(&str_args(&args), &[]);
    assert!(r.status.success(), "{}", r.logs);
    let text = std::fs::read_to_string(out.join("rows.csv.out")).unwrap();
    assert_eq!(text, "7,NEGATIVE\n8,NEGATIVE\n");

    let bad = run(
        &[
            "--model",
            &model_arg(),
            "--input",
            &input.display().to_string(),
            "--output",
            &dir.path().join("never").display().to_string(),
            "--input-filter",
            "features",
        ],
        &[],
    );
    assert!(!bad.status.success());
    assert!(bad.logs.contains("`--input-filter`"), "{}", bad.logs);
}

#[test]
fn s3_inputs_and_outputs_through_an_s3_compatible_server() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let moto = rt.block_on(Moto::start());
    let records: Vec<Value> = TEXTS.iter().map(|t| json!({ "inputs": t })).collect();
    rt.block_on(moto.put("jobs", "in/data/a.jsonl", jsonl(&records).into()));
    rt.block_on(moto.put(
        "jobs",
        "in/data/sub/b.jsonl.gz",
        gzip(&jsonl(&records[1..])).into(),
    ));
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let model = model_arg();
    let args = [
        "--model",
        model.as_str(),
        "--input",
        "s3://jobs/in/data",
        "--output",
        "s3://jobs/out/run1/",
        "--concurrency",
        "8",
    ];
    let r = run(&args, &env);
    assert!(r.status.success(), "{}", r.logs);
    let get = |key: &str| -> Vec<Value> {
        let body = reqwest::blocking::get(format!("{}/jobs/{key}", moto.endpoint))
            .expect("GET")
            .error_for_status()
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .text()
            .expect("text");
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let expected: Vec<Value> = SCORES
        .iter()
        .map(|s| json!([{"label": "NEGATIVE", "score": s}]))
        .collect();
    for (key, want) in [
        ("out/run1/a.jsonl.out", &expected[..]),
        ("out/run1/sub/b.jsonl.gz.out", &expected[1..]),
    ] {
        let got = get(key);
        assert_eq!(got.len(), want.len(), "{key}");
        for (g, e) in got.iter().zip(want) {
            json_close(g, e, 1e-4).unwrap_or_else(|err| panic!("{key}: {err}"));
        }
    }
    let again = run(&args, &env);
    assert!(again.status.success(), "{}", again.logs);
    assert!(
        again.logs.contains("2 of 2 files already done"),
        "{}",
        again.logs
    );

    // CSV records, SingleRecord, with a file whose bad record fails it: no output object for
    // it, the other file done, a non-zero exit naming the file and its first bad record.
    rt.block_on(
        moto.put(
            "jobs",
            "csv/in/rows.csv",
            format!("inputs\n{}\n\"{}\"\n{}\n", TEXTS[0], TEXTS[1], TEXTS[2])
                .into_bytes()
                .into(),
        ),
    );
    rt.block_on(
        moto.put(
            "jobs",
            "csv/in/nested/bad.csv",
            [
                format!("inputs\n{}\n", TEXTS[0]).as_bytes(),
                b"not \xff UTF-8\n",
                format!("{}\n", TEXTS[1]).as_bytes(),
            ]
            .concat()
            .into(),
        ),
    );
    // The model this time is a `model.tar.gz` on S3, as `serve` takes it.
    let archive =
        std::fs::read(fixture("bert-seqcls-targz").join("model.tar.gz")).expect("archive");
    rt.block_on(moto.put("jobs", "model/model.tar.gz", archive.into()));
    let csv_args = [
        "--model",
        "s3://jobs/model/model.tar.gz",
        "--input",
        "s3://jobs/csv/in/",
        "--output",
        "s3://jobs/csv/out",
        "--content-type",
        "text/csv",
        "--accept",
        "text/csv",
        "--strategy",
        "SingleRecord",
        "--concurrency",
        "8",
    ];
    let r = run(&csv_args, &env);
    assert!(!r.status.success(), "{}", r.logs);
    assert!(
        r.logs.lines().any(|l| l.contains("nested/bad.csv line 3")),
        "{}",
        r.logs
    );
    let text = |key: &str| {
        let r = reqwest::blocking::get(format!("{}/jobs/{key}", moto.endpoint)).expect("GET");
        (r.status().as_u16(), r.text().expect("text"))
    };
    let (status, csv) = text("csv/out/rows.csv.out");
    assert_eq!(status, 200, "{csv}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert_eq!(rows[0], "label,score");
    for (row, score) in rows[1..].iter().zip(SCORES) {
        let (_, got) = row.split_once(',').expect("two cells");
        assert!((got.parse::<f64>().unwrap() - score).abs() < 1e-4, "{row}");
    }
    assert_eq!(
        text("csv/out/nested/bad.csv.out").0,
        404,
        "no output for a failed file"
    );
}

#[test]
fn multi_record_bodies_over_http_answer_one_line_per_record_in_order() {
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .env("SAGEMAKER_BATCH", "true")
        .env("SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD")
        .env("SAGEMAKER_MAX_PAYLOAD_IN_MB", "1")
        .env("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "3")
        .start()
        .wait_ready();
    let params = server.get("/execution-parameters").json();
    assert_eq!(
        params,
        json!({"MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1})
    );
    let cases = json_cases();
    let body: String = cases.iter().map(|(b, _)| format!("{b}\n")).collect();
    let answer = server.post(
        "/invocations",
        &[
            ("content-type", "application/jsonlines"),
            ("accept", "application/jsonlines"),
        ],
        body,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let lines: Vec<Value> = answer
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), cases.len());
    for (i, (line, (_, expected))) in lines.iter().zip(&cases).enumerate() {
        json_close(line, expected, 1e-4).unwrap_or_else(|e| panic!("record {i}: {e}"));
    }
    // A body declared over the limit is refused before it is read (sent as a head only, so the
    // answer does not race a client still writing).
    let m = server
        .post_head_only(
            "/invocations",
            &[("content-type", "application/jsonlines")],
            1_300_000,
        )
        .expect_error(413, "payload_too_large");
    assert!(
        m.contains("1 MiB") && m.contains("SAGEMAKER_MAX_PAYLOAD_IN_MB"),
        "{m}"
    );
}

/// The "batch formed" lines of the model worker (logged at debug by `sagebrush::infer`): the
/// `requests` and `rows` of each round.
fn rounds(logs: &str) -> Vec<(usize, usize)> {
    let field = |line: &str, name: &str| -> usize {
        let start = line.find(&format!("{name}=")).expect("field") + name.len() + 1;
        line[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("number")
    };
    logs.lines()
        .filter(|l| l.contains("batch formed"))
        .map(|l| (field(l, "requests"), field(l, "rows")))
        .collect()
}

/// Runs 8 records with one request in flight (`--concurrency 1`) while the test gate holds the
/// model worker until every request the job will submit at once is queued.
fn gated_run(strategy: &str) -> (Run, Vec<(usize, usize)>, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let out = dir.path().join("out");
    let gate = dir.path().join("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let records: Vec<Value> = (0..8).map(|i| json!({ "inputs": TEXTS[i % 3] })).collect();
    write(&input.join("a.jsonl"), &jsonl(&records));
    std::fs::write(gate.join("hold"), b"").unwrap();
    let args = job_args(
        &model_arg(),
        &input,
        &out,
        &["--strategy", strategy, "--concurrency", "1"],
    );
    let gate_dir = gate.display().to_string();
    let env = [
        ("SAGEBRUSH_TEST_GATE_DIR", gate_dir.as_str()),
        ("RUST_LOG", "info,sagebrush::infer=debug"),
    ];
    let (mut child, logs) = spawn(&str_args(&args), &env);
    let count = |needle: &str| logs.lock().unwrap().matches(needle).count();
    wait_until(
        "the model worker to be held",
        Duration::from_secs(120),
        || count("forward pass held by the test gate") >= 1,
        &logs,
    );
    // MultiRecord submits the 8 records of its one request together; SingleRecord has one
    // record in the model at a time, so only one is ever queued while the worker is held.
    let queued = if strategy == "MultiRecord" { 8 } else { 1 };
    wait_until(
        "the records to be queued",
        Duration::from_secs(60),
        || count("queued for the model") >= queued,
        &logs,
    );
    std::fs::remove_file(gate.join("hold")).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            logs.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(100));
    let logs = logs.lock().unwrap().clone();
    let rounds = rounds(&logs);
    let expected: Vec<Value> = (0..8)
        .map(|i| json!([{"label": "NEGATIVE", "score": SCORES[i % 3]}]))
        .collect();
    assert!(status.success(), "{logs}");
    assert_answers(&out.join("a.jsonl.out"), &expected);
    (Run { status, logs }, rounds, out, dir)
}

#[test]
fn multi_record_requests_share_forward_passes_single_records_do_not() {
    // MultiRecord: the 8 records of one request meet in at most two rounds (the worker may
    // have taken the first before the others were queued), so they share forward passes.
    let (multi, multi_rounds, _, _dir) = gated_run("MultiRecord");
    assert_eq!(
        multi_rounds.iter().map(|r| r.1).sum::<usize>(),
        8,
        "{}",
        multi.logs
    );
    assert!(multi_rounds.len() <= 2, "{multi_rounds:?}\n{}", multi.logs);
    assert!(
        multi_rounds.iter().any(|&(requests, _)| requests >= 4),
        "{multi_rounds:?}"
    );
    // SingleRecord at concurrency 1: one record per round, 8 rounds.
    let (single, single_rounds, _, _dir) = gated_run("SingleRecord");
    assert_eq!(single_rounds, vec![(1, 1); 8], "{}", single.logs);
}

//! `GET /metrics` over HTTP, read with a real Prometheus text parser (`prometheus-parse`):
//! counters and histograms seen to move as requests are made, the TEI timing headers, the
//! request log line with its stages, guest faults counted, a second metrics port, and secrets
//! kept out of logs and metrics.

use serde_json::json;

use crate::support::guests::model_with_guest;
use crate::support::{Server, fixture};

/// One scrape of `/metrics` at `url`, parsed.
pub(crate) fn scrape_url(url: &str) -> prometheus_parse::Scrape {
    let response = reqwest::blocking::get(url).expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().expect("body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse")
}

/// One scrape of the server's `/metrics`.
pub(crate) fn scrape(server: &Server) -> prometheus_parse::Scrape {
    scrape_url(&server.url("/metrics"))
}

/// The value of `metric` summed over the samples whose labels include `labels`: a counter's or
/// gauge's value, a histogram's total count; 0 when there is no such sample yet.
pub(crate) fn value(
    scrape: &prometheus_parse::Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[test]
fn metrics_move_with_requests_and_invocations_carry_timing_headers() {
    let server = Server::start(fixture("bert-seqcls")).wait_ready();
    let before = scrape(&server);
    let ok = [("route", "/invocations"), ("status", "200")];
    let bad = [("route", "/invocations"), ("status", "400")];
    assert_eq!(value(&before, "sagebrush_model_ready", &[]), 1.0);
    assert!(value(&before, "sagebrush_model_load_seconds", &[]) > 0.0);
    assert!(value(&before, "sagebrush_resident_memory_bytes", &[]) > 1e6);

    let mut tokens = Vec::new();
    for text in [
        "a short one",
        "a somewhat longer sentence to classify",
        "three",
    ] {
        let answer = server.post(
            "/invocations",
            &[
                ("content-type", "application/json"),
                ("x-amzn-sagemaker-inference-id", "inference-id-42"),
            ],
            json!({ "inputs": text }).to_string(),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        for name in [
            "x-compute-time",
            "x-queue-time",
            "x-inference-time",
            "x-compute-tokens",
        ] {
            let v = answer
                .header(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            v.parse::<u64>()
                .unwrap_or_else(|e| panic!("{name}: {v:?}: {e}"));
        }
        tokens.push(
            answer
                .header("x-compute-tokens")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    // [CLS] + word pieces + [SEP]: six words take more tokens than one.
    assert!(tokens.iter().all(|&t| t >= 3), "{tokens:?}");
    assert!(tokens[1] > tokens[2], "{tokens:?}");
    // Fails while decoding: counted as a decode stage, never predicted.
    let refused = server.post(
        "/invocations",
        &[("content-type", "application/json")],
        "{broken",
    );
    assert_eq!(refused.status, 400, "{}", refused.body);

    let after = scrape(&server);
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(moved("sagebrush_requests_total", &ok), 3.0);
    assert_eq!(moved("sagebrush_requests_total", &bad), 1.0);
    assert_eq!(
        value(
            &after,
            "sagebrush_requests_total",
            &[("route", "/invocations"), ("task", "text-classification")]
        ),
        4.0
    );
    assert_eq!(
        moved(
            "sagebrush_request_duration_seconds",
            &[("route", "/invocations")]
        ),
        4.0
    );
    assert_eq!(
        moved("sagebrush_stage_duration_seconds", &[("stage", "predict")]),
        3.0
    );
    assert_eq!(
        moved("sagebrush_stage_duration_seconds", &[("stage", "encode")]),
        3.0
    );
    assert_eq!(
        moved("sagebrush_stage_duration_seconds", &[("stage", "decode")]),
        4.0
    );
    assert_eq!(
        moved("sagebrush_stage_duration_seconds", &[("stage", "queue")]),
        3.0
    );
    assert_eq!(moved("sagebrush_forward_passes_total", &[]), 3.0);
    assert_eq!(moved("sagebrush_batch_rows", &[]), 3.0);
    assert_eq!(value(&after, "sagebrush_invocations_in_flight", &[]), 0.0);
    assert_eq!(value(&after, "sagebrush_queue_depth", &[]), 0.0);

    // The log line of each invocation: its request id, SageMaker's inference id, its stages.
    let line = server.wait_for_log(&["inference-id-42", "stages_ms", "predict="]);
    assert!(line.contains("request_id"), "{line}");
    assert!(line.contains("queue="), "{line}");
}

#[test]
fn a_separate_metrics_port_serves_metrics_only() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .arg("--metrics-port")
        .arg(port.to_string())
        .start()
        .wait_ready();
    let ok = server.invoke(&json!({"inputs": "counted"}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let metrics = scrape_url(&format!("http://127.0.0.1:{port}/metrics"));
    assert!(
        value(
            &metrics,
            "sagebrush_requests_total",
            &[("route", "/invocations"), ("status", "200")]
        ) >= 1.0
    );
    let ping = reqwest::blocking::get(format!("http://127.0.0.1:{port}/ping")).expect("GET");
    assert_eq!(ping.status(), 404);
}

#[test]
fn guest_faults_and_replacements_are_counted() {
    let base = model_with_guest(&fixture("bert-seqcls"), "misbehave");
    let server = Server::builder()
        .model(base.path().join("model"))
        .arg("--workers")
        .arg("1")
        .arg("--guest-timeout-ms")
        .arg("300")
        .start()
        .wait_ready();
    let before = scrape(&server);
    let panic = server.post("/invocations", &[("content-type", "text/plain")], "panic");
    panic.expect_error(500, "guest_trap");
    let runaway = server.post("/invocations", &[("content-type", "text/plain")], "loop");
    runaway.expect_error(500, "guest_trap");
    let next = server.post("/invocations", &[("content-type", "text/plain")], "after");
    assert_eq!(next.status, 200, "{}", next.body);
    let after = scrape(&server);
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(
        moved("sagebrush_guest_faults_total", &[("kind", "trap")]),
        1.0
    );
    assert_eq!(
        moved("sagebrush_guest_faults_total", &[("kind", "timeout")]),
        1.0
    );
    assert_eq!(
        moved("sagebrush_guest_instance_replacements_total", &[]),
        2.0
    );
    assert_eq!(
        moved("sagebrush_stage_duration_seconds", &[("stage", "input_fn")]),
        3.0
    );
    assert_eq!(
        moved(
            "sagebrush_requests_total",
            &[("route", "/invocations"), ("status", "500")]
        ),
        2.0
    );
}

#[test]
fn secrets_never_reach_logs_metrics_or_error_bodies() {
    const HF: &str = "hf_secretTOKENvalue123456";
    const AWS_KEY: &str = "AKIASECRETKEYID12345";
    const AWS_SECRET: &str = "aws/secret+ACCESS/key0987654321";
    let server = Server::builder()
        .model(fixture("bert-seqcls"))
        .env("HF_TOKEN", HF)
        .env("HF_API_TOKEN", HF)
        .env("AWS_ACCESS_KEY_ID", AWS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("RUST_LOG", "debug")
        .start()
        .wait_ready();
    let mut bodies = Vec::new();
    for answer in [
        server.invoke(&json!({"inputs": "fine"})),
        server.invoke(&json!({"nope": 1})),
        server.post(
            "/invocations",
            &[("content-type", "application/json")],
            "{broken",
        ),
        server.post("/invocations", &[("content-type", "image/png")], "x"),
        server.get("/no-such-route"),
        server.get("/metrics"),
        server.get("/ping"),
        server.get("/execution-parameters"),
    ] {
        bodies.push(format!("{:?}\n{}", answer.headers, answer.body));
    }
    let everything = format!("{}\n{}", server.logs(), bodies.join("\n"));
    for secret in [HF, AWS_KEY, AWS_SECRET] {
        assert!(
            !everything.contains(secret),
            "{secret} leaked:\n{everything}"
        );
    }
}

#[test]
fn the_grafana_dashboard_reads_only_metrics_the_server_exports() {
    let root = crate::support::repo_root();
    let dashboard =
        std::fs::read_to_string(root.join("deploy/grafana-dashboard.json")).expect("dashboard");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let source = std::fs::read_to_string(root.join("runtime/src/metrics.rs")).expect("metrics.rs");
    let mut names: Vec<&str> = dashboard
        .match_indices("sagebrush_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            source.contains(&format!("\"{name}\"")),
            "the dashboard reads {name}, which is not exported"
        );
    }
}

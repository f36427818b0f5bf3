//! The sustained-load run of the reliability suite: a command, not a test (`#[ignore]`; run by
//! `scripts/reliability load`). Many clients send requests to one server for minutes; it prints
//! the figures (requests/s, p50/p90/p99, statuses, resident memory at the start and the end from
//! `/metrics`) and fails on any error other than 429 or on unbounded memory growth.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::metrics::{scrape, value};
use crate::support::{Server, fixture};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[test]
#[ignore = "a long-running command: scripts/reliability load"]
fn load_many_clients_for_minutes() {
    let secs = env_or("SAGEBRUSH_LOAD_SECS", 600);
    let clients = env_or("SAGEBRUSH_LOAD_CLIENTS", 64) as usize;
    let model = std::env::var("SAGEBRUSH_LOAD_MODEL")
        .map_or_else(|_| fixture("bert-seqcls"), std::path::PathBuf::from);
    let server = Server::builder()
        .model(&model)
        .env(
            "RUST_LOG",
            "warn,sagebrush=info,sagebrush::server::middleware=warn",
        )
        .start()
        .wait_ready();
    // Warm up, then read the starting memory.
    for _ in 0..20 {
        assert_eq!(server.invoke(&json!({"inputs": "warm up"})).status, 200);
    }
    let rss_start = value(&scrape(&server), "sagebrush_resident_memory_bytes", &[]);
    let url = server.url("/invocations");
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let (url, stop, latencies, statuses) = (
                url.clone(),
                Arc::clone(&stop),
                Arc::clone(&latencies),
                Arc::clone(&statuses),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .expect("client");
                let mut mine = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({"inputs": format!("client {c} request {n}: a short sentence to classify")});
                    let t = Instant::now();
                    let outcome = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .and_then(|r| {
                            let status = r.status().as_u16();
                            r.bytes().map(|_| status)
                        });
                    let key = match outcome {
                        Ok(200) => {
                            mine.push(t.elapsed());
                            "200".to_owned()
                        }
                        Ok(status) => status.to_string(),
                        Err(err) => format!("client error: {err}"),
                    };
                    *statuses.lock().unwrap().entry(key).or_default() += 1;
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("client thread");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let metrics = scrape(&server);
    let rss_end = value(&metrics, "sagebrush_resident_memory_bytes", &[]);
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    let statuses = statuses.lock().unwrap().clone();
    let ok = latencies.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "load: {clients} clients for {elapsed:.0} s on {}",
        model.display()
    );
    println!(
        "load: {ok} answered 200 ({:.1} req/s); statuses {statuses:?}",
        ok as f64 / elapsed
    );
    println!(
        "load: latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    println!(
        "load: resident memory {:.1} MiB at the start, {:.1} MiB at the end",
        rss_start / 1048576.0,
        rss_end / 1048576.0
    );
    let errors: u64 = statuses
        .iter()
        .filter(|(k, _)| k.as_str() != "200" && k.as_str() != "429")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(errors, 0, "errors other than 429: {statuses:?}");
    assert!(ok > 0, "nothing was answered");
    let allowed = (rss_start * 0.25).max(64.0 * 1048576.0);
    assert!(
        rss_end <= rss_start + allowed,
        "resident memory grew from {rss_start} to {rss_end} bytes"
    );
    assert_eq!(server.get("/ping").status, 200);
}

//! Measurements behind the numbers in the README ("Custom code in WebAssembly", measured cost): a measurement, not a test (no
//! thresholds; ignored by default). Run it alone, so nothing else shares the process:
//! `cargo test -p sagebrush --lib wasm::measure -- --ignored --nocapture --test-threads 1`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::tests::{WordCountPipeline, fixture, guest};
use super::*;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time_each(iterations: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f(); // warm-up
    }
    let samples = (0..iterations)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    median(samples)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn limits(cache_dir: &Path, instances: usize) -> WasmLimits {
    WasmLimits {
        memory_bytes: 512 * 1024 * 1024,
        call_timeout: Duration::from_secs(30),
        instances,
        cache_dir: cache_dir.to_path_buf(),
    }
}

fn load(name: &str, cache_dir: &Path, instances: usize) -> (GuestProgram, Duration) {
    let native: Arc<dyn Pipeline> = Arc::new(WordCountPipeline::default());
    let start = Instant::now();
    let program = GuestProgram::load(
        &guest(name),
        &fixture("bert-seqcls"),
        &limits(cache_dir, instances),
        Arc::new(super::FixedPipeline(native)),
    )
    .expect("loads");
    (program, start.elapsed())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
#[ignore = "measurement for the README (Custom code in WebAssembly); prints numbers, asserts nothing"]
fn measure_guest_overhead() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = RequestContext {
        request_id: "measure".into(),
        ..RequestContext::default()
    };

    println!("## per call: pass-through guest hook vs native (median of 5000)");
    println!("| body | native decode | guest input_fn | native encode | guest output_fn |");
    let (program, _) = load("passthrough", &tmp.path().join("c0"), 1);
    let text = "The movie was wonderful and the actors were great. I loved it.";
    let bodies = [
        ("small", json!({ "inputs": text })),
        ("1000 sentences", json!({ "inputs": vec![text; 1000] })),
    ];
    for (name, request) in bodies {
        let bytes = serde_json::to_vec(&request).expect("json");
        let native_in = time_each(5000, || {
            let v: Value = serde_json::from_slice(&bytes).expect("json");
            std::hint::black_box(Payload::Json(v));
        });
        let guest_in = time_each(5000, || {
            std::hint::black_box(
                program
                    .input_fn(&ctx, &bytes, "application/json")
                    .expect("input_fn"),
            );
        });
        let native_out = time_each(5000, || {
            std::hint::black_box(serde_json::to_vec(&request).expect("json"));
        });
        let guest_out = time_each(5000, || {
            std::hint::black_box(
                program
                    .output_fn(&ctx, Payload::Json(request.clone()), "application/json")
                    .expect("output_fn"),
            );
        });
        println!(
            "| {name} ({} B) | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
            bytes.len(),
            us(native_in),
            us(guest_in),
            us(native_out),
            us(guest_out)
        );
    }
    drop(program);

    println!("\n## load: compile cache cold vs warm (1 instance)");
    println!("| guest | .wasm | cold: compile / whole load | warm: from cache / whole load |");
    for name in [
        "passthrough",
        "preprocess-only",
        "postprocess",
        "tokenizer-model-fn",
        "transform",
    ] {
        let cache = tmp.path().join(format!("cache-{name}"));
        let size = std::fs::metadata(guest(name)).expect("wasm").len();
        let (cold, cold_load) = load(name, &cache, 1);
        assert!(!cold.compile_info().from_cache);
        let cold_compile = cold.compile_info().duration;
        drop(cold);
        let (warm, warm_load) = load(name, &cache, 1);
        assert!(warm.compile_info().from_cache);
        println!(
            "| {name} | {} KB | {:.1} ms / {:.1} ms | {:.2} ms / {:.2} ms |",
            size / 1000,
            ms(cold_compile),
            ms(cold_load),
            ms(warm.compile_info().duration),
            ms(warm_load)
        );
    }

    println!("\n## memory per pooled instance (8 instances, after load + 100 calls each guest)");
    println!("| guest | linear memory per instance | RSS growth per instance |");
    for name in ["passthrough", "tokenizer-model-fn"] {
        let cache = tmp.path().join(format!("cache-{name}"));
        let (warm_one, _) = load(name, &cache, 1); // compile cache filled, code resident
        let before = rss_kib();
        let (program, _) = load(name, &cache, 8);
        let body = serde_json::to_vec(&json!({ "inputs": text })).expect("json");
        for _ in 0..100 {
            if program.hooks().contains(Hook::InputFn) {
                program
                    .input_fn(&ctx, &body, "application/json")
                    .expect("input_fn");
            } else {
                program
                    .predict_fn(&ctx, Payload::Json(json!({ "inputs": text })))
                    .expect("predict_fn");
            }
        }
        let after = rss_kib();
        let peaks = program.pool.peak_memory();
        let max_peak = peaks.iter().copied().max().unwrap_or(0);
        println!(
            "| {name} | {} KiB (max over {} instances) | {} KiB |",
            max_peak / 1024,
            peaks.len(),
            after.saturating_sub(before) / 8
        );
        drop(warm_one);
    }
}

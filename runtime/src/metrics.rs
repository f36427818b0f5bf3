//! Prometheus metrics (`GET /metrics`, contract §1) and the per-request timings behind the
//! `x-*-time` response headers and the request log line.
//!
//! One process-wide registry: the server, the inference core, the hook chain and the guest pool
//! record into it through [`get`]; nothing is passed along. Per-request figures travel with the
//! request instead, in a [`RequestTimings`] that the inference scope carries (as it carries the
//! deadline), so that model work done for a request, including the work a guest asks for, is
//! added to that request's figures.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric sagebrush exports.
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by route, method, status and task.
    pub requests: IntCounterVec,
    /// Whole-request latency by route.
    pub request_seconds: HistogramVec,
    /// Time per stage of an invocation (decode, input_fn, predict, output_fn, encode,
    /// transform_fn, and queue / inference inside the model core).
    pub stage_seconds: HistogramVec,
    /// Invocations admitted and not answered yet.
    pub in_flight: IntGauge,
    /// Model requests waiting in the inference core's queue.
    pub queue_depth: IntGauge,
    /// Rows per forward pass.
    pub batch_rows: Histogram,
    /// Padded tokens per forward pass.
    pub batch_tokens: Histogram,
    /// Forward passes run.
    pub forward_passes: IntCounter,
    /// Model requests dropped before their forward pass, by reason (cancelled, expired).
    pub dropped: IntCounterVec,
    /// Tokens generated (generation tasks).
    pub generated_tokens: IntCounter,
    /// Tokens per second of each finished generation.
    pub generation_tokens_per_second: Histogram,
    /// Guest calls that failed the instance, by kind (trap, timeout, out_of_memory).
    pub guest_faults: IntCounterVec,
    /// Guest instances started to replace one dropped after a fault.
    pub guest_replacements: IntCounter,
    /// How long the model took to load, in seconds (0 until loaded).
    pub model_load_seconds: Gauge,
    /// 1 once the model serves.
    pub model_ready: IntGauge,
    /// Resident memory of the process, read at each scrape.
    pub resident_memory: IntGauge,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        60.0,
    ]
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("sagebrush_requests_total", "HTTP requests answered"),
            &["route", "method", "status", "task"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sagebrush_request_duration_seconds",
                "HTTP request latency, from the first byte read to the answer",
            )
            .buckets(latency_buckets()),
            &["route"],
        )?;
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sagebrush_stage_duration_seconds",
                "Time per stage of an invocation: decode, input_fn, predict, output_fn, encode, transform_fn (hook chain); queue, inference (model core)",
            )
            .buckets(latency_buckets()),
            &["stage"],
        )?;
        let in_flight = IntGauge::new(
            "sagebrush_invocations_in_flight",
            "Invocations admitted and not answered yet (bounded by the queue size)",
        )?;
        let queue_depth = IntGauge::new(
            "sagebrush_queue_depth",
            "Model requests waiting for the model worker",
        )?;
        let batch_rows = Histogram::with_opts(
            HistogramOpts::new("sagebrush_batch_rows", "Rows (sequences) per forward pass")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )?;
        let batch_tokens = Histogram::with_opts(
            HistogramOpts::new(
                "sagebrush_batch_tokens",
                "Padded tokens (rows x longest row) per forward pass",
            )
            .buckets(prometheus::exponential_buckets(8.0, 2.0, 12)?),
        )?;
        let forward_passes = IntCounter::new(
            "sagebrush_forward_passes_total",
            "Forward passes run by the model worker",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "sagebrush_model_requests_dropped_total",
                "Model requests dropped before their forward pass (never computed)",
            ),
            &["reason"],
        )?;
        let generated_tokens = IntCounter::new(
            "sagebrush_generated_tokens_total",
            "Tokens produced by generation tasks",
        )?;
        let generation_tokens_per_second = Histogram::with_opts(
            HistogramOpts::new(
                "sagebrush_generation_tokens_per_second",
                "Decoding speed of each finished generation",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 12)?),
        )?;
        let guest_faults = IntCounterVec::new(
            Opts::new(
                "sagebrush_guest_faults_total",
                "User-code calls that broke their instance, by kind",
            ),
            &["kind"],
        )?;
        let guest_replacements = IntCounter::new(
            "sagebrush_guest_instance_replacements_total",
            "Guest instances started to replace one dropped after a fault",
        )?;
        let model_load_seconds = Gauge::new(
            "sagebrush_model_load_seconds",
            "Time the model took to load (fetch, unpack, weights, user code)",
        )?;
        let model_ready = IntGauge::new("sagebrush_model_ready", "1 once the model serves")?;
        let resident_memory = IntGauge::new(
            "sagebrush_resident_memory_bytes",
            "Resident memory of the process",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(stage_seconds.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(batch_rows.clone()))?;
        registry.register(Box::new(batch_tokens.clone()))?;
        registry.register(Box::new(forward_passes.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(generated_tokens.clone()))?;
        registry.register(Box::new(generation_tokens_per_second.clone()))?;
        registry.register(Box::new(guest_faults.clone()))?;
        registry.register(Box::new(guest_replacements.clone()))?;
        registry.register(Box::new(model_load_seconds.clone()))?;
        registry.register(Box::new(model_ready.clone()))?;
        registry.register(Box::new(resident_memory.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_seconds,
            stage_seconds,
            in_flight,
            queue_depth,
            batch_rows,
            batch_tokens,
            forward_passes,
            dropped,
            generated_tokens,
            generation_tokens_per_second,
            guest_faults,
            guest_replacements,
            model_load_seconds,
            model_ready,
            resident_memory,
        })
    }

    /// Every metric in the Prometheus text format, resident memory read now.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_bytes() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a malformed metric family, which `new` rules out.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Records one stage's duration in the histogram.
    pub fn observe_stage(&self, stage: Stage, took: Duration) {
        self.stage_seconds
            .with_label_values(&[stage.as_str()])
            .observe(took.as_secs_f64());
    }
}

/// The metrics of this process.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> =
        LazyLock::new(|| Metrics::new().expect("the metric definitions are valid"));
    &METRICS
}

/// Resident set size from `/proc/self/statm` (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A stage of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The default `input_fn`: decoding the body.
    Decode,
    /// A guest's `input_fn`.
    InputFn,
    /// `predict_fn` (native pipeline or guest).
    Predict,
    /// A guest's `output_fn`.
    OutputFn,
    /// The default `output_fn`: encoding the answer.
    Encode,
    /// A guest's `transform_fn`.
    TransformFn,
    /// Waiting in the model queue.
    Queue,
    /// Forward passes.
    Inference,
}

impl Stage {
    const ALL: [Self; 8] = [
        Self::Decode,
        Self::InputFn,
        Self::Predict,
        Self::OutputFn,
        Self::Encode,
        Self::TransformFn,
        Self::Queue,
        Self::Inference,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::InputFn => "input_fn",
            Self::Predict => "predict",
            Self::OutputFn => "output_fn",
            Self::Encode => "encode",
            Self::TransformFn => "transform_fn",
            Self::Queue => "queue",
            Self::Inference => "inference",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The figures of one invocation: time per stage and tokens computed. Shared by the server
/// (which reads it for the headers and the log line), the hook chain and the model worker
/// (which add to it). Queue and inference times add up over the model requests of the
/// invocation; a forward pass shared by several invocations counts whole for each.
#[derive(Debug, Default)]
pub struct RequestTimings {
    micros: [AtomicU64; 8],
    tokens: AtomicU64,
}

impl RequestTimings {
    /// Adds `took` to `stage`.
    pub fn add(&self, stage: Stage, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros[stage.index()].fetch_add(micros, Ordering::Relaxed);
    }

    /// Adds computed tokens (the unpadded tokens of the rows run for this invocation).
    pub fn add_tokens(&self, tokens: usize) {
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    }

    /// The time spent in `stage`.
    pub fn get(&self, stage: Stage) -> Duration {
        Duration::from_micros(self.micros[stage.index()].load(Ordering::Relaxed))
    }

    /// Tokens computed.
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    /// The stages with time spent, as `(name, milliseconds)`.
    pub fn stages_ms(&self) -> Vec<(&'static str, f64)> {
        Stage::ALL
            .iter()
            .map(|&s| (s.as_str(), self.get(s).as_secs_f64() * 1000.0))
            .filter(|(_, ms)| *ms > 0.0)
            .collect()
    }

    /// Times `f` as `stage`: added to these figures and to the stage histogram.
    pub fn time<R>(&self, stage: Stage, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        self.add(stage, took);
        get().observe_stage(stage, took);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_add_up_per_stage_and_skip_empty_stages() {
        let t = RequestTimings::default();
        t.add(Stage::Queue, Duration::from_millis(3));
        t.add(Stage::Queue, Duration::from_millis(2));
        t.add(Stage::Inference, Duration::from_micros(1500));
        t.add_tokens(7);
        t.add_tokens(5);
        assert_eq!(t.get(Stage::Queue), Duration::from_millis(5));
        assert_eq!(t.tokens(), 12);
        assert_eq!(t.stages_ms(), vec![("queue", 5.0), ("inference", 1.5)]);
    }

    #[test]
    fn the_registry_renders_every_family_in_text_format() {
        let m = get();
        m.requests
            .with_label_values(&["/ping", "GET", "200", ""])
            .inc();
        m.observe_stage(Stage::Decode, Duration::from_millis(1));
        let text = m.render();
        for name in [
            "sagebrush_requests_total",
            "sagebrush_stage_duration_seconds_bucket",
            "sagebrush_resident_memory_bytes",
            "sagebrush_queue_depth",
            "sagebrush_guest_instance_replacements_total",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}

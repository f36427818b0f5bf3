//! Job progress (contract §8): a bar with records/s and ETA on a terminal, plain log lines every
//! few seconds otherwise. The ETA is from input bytes read (known for every file before any is
//! read, also for S3 and gzip inputs), the rate from records written.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Shared counters of a running job.
pub struct Progress {
    bar: Option<ProgressBar>,
    total_bytes: u64,
    bytes: AtomicU64,
    records: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl Progress {
    /// Progress over `total_bytes` of input; a bar only when stderr is a terminal.
    pub fn new(total_bytes: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total_bytes),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            let style = ProgressStyle::with_template(
                "{bar:30} {percent:>3}% {binary_bytes}/{binary_total_bytes} {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            total_bytes,
            bytes: AtomicU64::new(0),
            records: AtomicU64::new(0),
            started: now,
            last_log: Mutex::new(now),
        }
    }

    /// Input bytes read (compressed bytes for gzip files).
    pub fn read_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.tick();
    }

    /// Records written.
    pub fn wrote_records(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
        self.tick();
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Records per second since the start.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.records() as f64 / secs
    }

    fn tick(&self) {
        let bytes = self.bytes.load(Ordering::Relaxed);
        let rate = self.rate();
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(format!("{} records, {rate:.1} records/s", self.records()));
            return;
        }
        let Ok(mut last) = self.last_log.try_lock() else {
            return;
        };
        if last.elapsed() < LOG_EVERY {
            return;
        }
        *last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta_s = (bytes > 0)
            .then(|| elapsed * (self.total_bytes.saturating_sub(bytes)) as f64 / bytes as f64)
            .map_or_else(|| "unknown".to_owned(), |s| format!("{s:.0}"));
        tracing::info!(
            records = self.records(),
            records_per_s = format!("{rate:.1}"),
            bytes_read = bytes,
            total_bytes = self.total_bytes,
            eta_s = %eta_s,
            "batch progress"
        );
    }

    /// Runs `f` with the bar hidden, so a log line does not tear it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A reader that counts the bytes read into [`Progress`].
pub struct CountingReader<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<'a, R> CountingReader<'a, R> {
    /// Counts what `inner` yields.
    pub fn new(inner: R, progress: &'a Progress) -> Self {
        Self { inner, progress }
    }
}

impl<R: std::io::Read> std::io::Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.read_bytes(n as u64);
        Ok(n)
    }
}

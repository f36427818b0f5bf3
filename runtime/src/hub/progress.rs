//! Download progress: bars on a terminal (indicatif), log lines otherwise (container logs).

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Files below this size get only a start and an end line in the log.
const LOG_STEP_MIN_BYTES: u64 = 8 * 1024 * 1024;

/// Progress of one download run.
pub(crate) struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal, log lines otherwise.
    pub(crate) fn auto() -> Self {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { bars }
    }

    /// Log lines only, terminal or not.
    #[cfg(test)]
    pub(crate) fn lines() -> Self {
        Self { bars: None }
    }

    /// Starts reporting one file of `size` bytes (when known), `resumed_from` already on disk.
    pub(crate) fn file(&self, name: &str, size: Option<u64>, resumed_from: u64) -> FileProgress {
        match &self.bars {
            Some(multi) => {
                let bar = multi.add(size.map_or_else(ProgressBar::no_length, ProgressBar::new));
                let style = ProgressStyle::with_template(
                    "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_message(name.to_owned());
                bar.set_position(resumed_from);
                FileProgress {
                    name: name.to_owned(),
                    size,
                    done: AtomicU64::new(resumed_from),
                    logged_step: AtomicU64::new(0),
                    bar: Some(bar),
                }
            }
            None => {
                tracing::info!(file = %name, bytes = ?size, resumed_from, "downloading");
                FileProgress {
                    name: name.to_owned(),
                    size,
                    done: AtomicU64::new(resumed_from),
                    logged_step: AtomicU64::new(0),
                    bar: None,
                }
            }
        }
    }
}

/// Progress of one file.
pub(crate) struct FileProgress {
    name: String,
    size: Option<u64>,
    done: AtomicU64,
    /// Last quarter logged (log-line mode).
    logged_step: AtomicU64,
    bar: Option<ProgressBar>,
}

impl FileProgress {
    /// `done` bytes of the file are on disk: where a try starts (resumed or from 0), and after
    /// each chunk.
    pub(crate) fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if let Some(size) = self.size.filter(|s| *s >= LOG_STEP_MIN_BYTES) {
            let quarter = done.saturating_mul(4) / size;
            if quarter > self.logged_step.fetch_max(quarter, Ordering::Relaxed) && quarter < 4 {
                tracing::info!(file = %self.name, percent = quarter * 25, "downloading");
            }
        }
    }

    /// The file is complete.
    pub(crate) fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => {
                tracing::info!(file = %self.name, bytes = self.done.load(Ordering::Relaxed), "downloaded")
            }
        }
    }
}

//! A test-only control of the worker, compiled only with the `test-gate` feature (which the
//! end-to-end tests enable): before each round the worker looks into a directory the test
//! owns. A file `hold` holds the round until the test removes it (the worker logs "held by the
//! test gate" once, so the test knows the model is busy), `panic` (removed when seen) makes the
//! next forward pass panic, `stop` (removed when seen) stops the worker as a model that
//! cannot serve any more would, and `rounds` holding a number `n` lets `n` more rounds run,
//! then creates `hold` itself (to hold a generation in its middle). This makes queue-full, cancellation, batching and panic
//! behaviour testable over HTTP without sleeps or timing guesses.

use std::path::PathBuf;
use std::time::Duration;

/// What the round does.
pub(super) enum Action {
    /// Run as usual.
    Go,
    /// Panic in the first forward pass.
    Panic,
    /// Stop the worker.
    Stop,
}

/// The control directory.
pub(super) struct Gate {
    dir: PathBuf,
}

impl Gate {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Waits while `hold` exists, then reads `stop` and `panic`.
    pub(super) fn before_round(&self) -> Action {
        let hold = self.dir.join("hold");
        let rounds = self.dir.join("rounds");
        if let Ok(text) = std::fs::read_to_string(&rounds) {
            match text.trim().parse::<u64>() {
                Ok(n) if n > 0 => {
                    let _ = std::fs::write(&rounds, (n - 1).to_string());
                }
                _ => {
                    let _ = std::fs::write(&hold, b"");
                    let _ = std::fs::remove_file(&rounds);
                }
            }
        }
        if hold.exists() {
            tracing::info!("forward pass held by the test gate");
            while hold.exists() {
                std::thread::sleep(Duration::from_millis(2));
            }
            tracing::info!("forward pass released by the test gate");
        }
        if std::fs::remove_file(self.dir.join("stop")).is_ok() {
            return Action::Stop;
        }
        if std::fs::remove_file(self.dir.join("panic")).is_ok() {
            return Action::Panic;
        }
        Action::Go
    }
}

//! The generation worker of an encoder-decoder model: a thread that owns the model and its
//! decoder caches and runs one generation request at a time (a source sequence and its resolved
//! search settings), a step per decoder token. Before every step it checks the request: a
//! caller that went away (the reply receiver dropped or the request's cancellation flag set) or
//! a passed deadline ends the generation there, and the worker takes the next request. A panic
//! fails that request only ([`InferError::WorkerPanicked`]).
//!
//! Not done yet: continuous batching (requests to the same model sharing decode steps) — each
//! request here is generated alone, its beams as the decoder batch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{CancelFlag, Health, InferError, Result, Scope};
use crate::models::seq2seq::Seq2SeqModel;
use crate::search::{self, SearchConfig, SearchError};

/// One generation request.
struct Job {
    source: Vec<u32>,
    config: SearchConfig,
    deadline: Option<Instant>,
    cancel: CancelFlag,
    span: tracing::Span,
    reply: oneshot::Sender<Result<Vec<Vec<u32>>>>,
}

struct Shared {
    stopped: Mutex<Option<String>>,
    busy_since: Mutex<Option<Instant>>,
    wedged_after: std::time::Duration,
    steps: AtomicU64,
}

/// The handle of a generation worker. Cheap to clone; the worker stops with the last handle.
#[derive(Clone)]
pub struct Seq2SeqWorker {
    tx: SyncSender<Job>,
    capacity: usize,
    shared: Arc<Shared>,
}

impl Seq2SeqWorker {
    /// Starts the worker thread owning `model`, with room for `queue_size` waiting requests.
    pub fn spawn(
        model: Box<dyn Seq2SeqModel>,
        queue_size: usize,
        wedged_after: std::time::Duration,
        name: &str,
    ) -> std::io::Result<Self> {
        let capacity = queue_size.max(1);
        let (tx, rx) = sync_channel(capacity);
        let shared = Arc::new(Shared {
            stopped: Mutex::new(None),
            busy_since: Mutex::new(None),
            wedged_after,
            steps: AtomicU64::new(0),
        });
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || serve(model.as_ref(), &rx, &worker))?;
        Ok(Self {
            tx,
            capacity,
            shared,
        })
    }

    /// Generates for `source` and waits for the hypotheses (decoder ids, start token first).
    /// Blocks: call it off the async runtime. Inherits the current [`Scope`] (deadline,
    /// cancellation) and span.
    pub fn generate(&self, source: Vec<u32>, config: SearchConfig) -> Result<Vec<Vec<u32>>> {
        if source.is_empty() {
            return Err(InferError::BadRequest {
                reason: "empty source sequence".into(),
            });
        }
        if let Some(cause) = self.stopped_cause() {
            return Err(InferError::WorkerStopped { cause });
        }
        let scope = Scope::current();
        let (reply, rx) = oneshot::channel();
        let job = Job {
            source,
            config,
            deadline: scope.deadline,
            cancel: scope.cancel,
            span: tracing::Span::current(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(InferError::Overloaded {
                    capacity: self.capacity,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(InferError::WorkerStopped {
                    cause: self
                        .stopped_cause()
                        .unwrap_or_else(|| "the generation worker is gone".into()),
                });
            }
        }
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(self.stopped_cause().map_or(InferError::Cancelled, |cause| {
                InferError::WorkerStopped { cause }
            }))
        })
    }

    /// Decoder steps run since start.
    pub fn steps(&self) -> u64 {
        self.shared.steps.load(Ordering::Relaxed)
    }

    /// Whether the worker can serve: `/ping`'s health command.
    pub fn health(&self) -> Health {
        if let Some(cause) = self.stopped_cause() {
            return Health::Stopped { cause };
        }
        let busy = *self
            .shared
            .busy_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match busy.map(|t| t.elapsed()) {
            Some(busy_for) if busy_for > self.shared.wedged_after => Health::Wedged { busy_for },
            _ => Health::Ready,
        }
    }

    fn stopped_cause(&self) -> Option<String> {
        self.shared
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn serve(model: &dyn Seq2SeqModel, rx: &Receiver<Job>, shared: &Shared) {
    while let Ok(job) = rx.recv() {
        let _enter = job.span.enter();
        if job.cancel.is_set() || job.reply.is_closed() {
            tracing::info!("generation request cancelled before it started; it is not computed");
            let _ = job.reply.send(Err(InferError::Cancelled));
            continue;
        }
        let started = Instant::now();
        let mut steps = 0u64;
        tracing::info!(
            source_tokens = job.source.len(),
            num_beams = job.config.params.num_beams,
            max_length = job.config.max_length(),
            "generation started"
        );
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut check = || -> Result<()> {
                // Each step is a short forward pass; the wedge clock restarts with each.
                *shared
                    .busy_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                if job.cancel.is_set() || job.reply.is_closed() {
                    return Err(InferError::Cancelled);
                }
                if job.deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(InferError::DeadlineExceeded);
                }
                steps += 1;
                Ok(())
            };
            search::generate(model, &job.source, &job.config, &mut check)
        }));
        *shared
            .busy_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        shared.steps.fetch_add(steps, Ordering::Relaxed);
        let answer = match outcome {
            Ok(Ok(Ok(hypotheses))) => {
                tracing::debug!(
                    steps,
                    ms = started.elapsed().as_millis() as u64,
                    "generation done"
                );
                Ok(hypotheses)
            }
            Ok(Ok(Err(stop))) => {
                match stop {
                    InferError::DeadlineExceeded => tracing::info!(
                        steps,
                        "generation stopped before its end: the request's time limit passed"
                    ),
                    _ => tracing::info!(
                        steps,
                        "generation stopped before its end: the caller went away"
                    ),
                }
                Err(stop)
            }
            Ok(Err(SearchError::Model(e))) => Err(InferError::Model(Arc::new(e))),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                tracing::error!(message = %message, "the generation panicked; the worker goes on");
                Err(InferError::WorkerPanicked { message })
            }
        };
        let _ = job.reply.send(answer);
    }
}

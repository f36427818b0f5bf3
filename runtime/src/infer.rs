//! The model worker: one thread owns the model and runs jobs from a bounded queue, replying on
//! a oneshot channel. Pipelines (and later a batching scheduler) send it work; the queue bound
//! is what turns overload into 429 instead of unbounded memory.
//!
//! One forward pass at a time using all cores gives the best latency on CPU, and batching
//! gives the best throughput (see `docs/candle-cpu.md`), so there is one thread per
//! model, not one per request.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread;

use crate::pipelines::PipelineError;

type Job<M> = Box<dyn FnOnce(&M) + Send>;

/// A thread that owns a model of type `M` and runs jobs on it in arrival order.
pub struct ModelWorker<M> {
    tx: SyncSender<Job<M>>,
}

impl<M: Send + 'static> ModelWorker<M> {
    /// Starts the thread; at most `queue` jobs wait before [`ModelWorker::run`] answers
    /// `Overloaded`.
    pub fn spawn(model: M, queue: usize, name: &str) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Job<M>>(queue);
        thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&model);
                }
            })?;
        Ok(Self { tx })
    }

    /// Runs `job` on the worker thread and waits for its result. Blocks: call it off the
    /// async runtime. The caller's tracing span is entered on the worker while the job runs.
    pub fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, PipelineError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let span = tracing::Span::current();
        let boxed: Job<M> = Box::new(move |model| {
            let _enter = span.enter();
            // The receiver is gone only when the caller gave up (timeout); nothing to do then.
            let _ = reply_tx.send(job(model));
        });
        self.tx.try_send(boxed).map_err(|err| match err {
            TrySendError::Full(_) => PipelineError::Overloaded,
            TrySendError::Disconnected(_) => PipelineError::WorkerGone,
        })?;
        reply_rx.recv().map_err(|_| PipelineError::WorkerGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_the_worker_in_order() {
        let worker = ModelWorker::spawn(vec![1, 2, 3], 4, "test-worker").unwrap();
        let sum = worker.run(|v: &Vec<i32>| v.iter().sum::<i32>()).unwrap();
        assert_eq!(sum, 6);
        let name = worker
            .run(|_| thread::current().name().map(str::to_owned))
            .unwrap();
        assert_eq!(name.as_deref(), Some("test-worker"));
    }

    #[test]
    fn a_full_queue_is_overloaded() {
        let worker = std::sync::Arc::new(ModelWorker::spawn((), 1, "busy").unwrap());
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let w = worker.clone();
        let first = thread::spawn(move || {
            w.run(move |()| {
                started_tx.send(()).unwrap();
                hold_rx.recv().unwrap();
                1
            })
        });
        started_rx.recv().unwrap();
        // The worker is busy and the queue holds one job: of two more, one waits in the queue
        // and the other is refused at once.
        let (done_tx, done_rx) = mpsc::channel();
        let others: Vec<_> = (0..2)
            .map(|_| {
                let (w, done) = (worker.clone(), done_tx.clone());
                thread::spawn(move || done.send(w.run(|()| 2)).unwrap())
            })
            .collect();
        let refused = done_rx.recv().unwrap();
        assert!(
            matches!(refused, Err(PipelineError::Overloaded)),
            "{refused:?}"
        );
        hold_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap(), 1);
        assert_eq!(done_rx.recv().unwrap().unwrap(), 2);
        others.into_iter().for_each(|t| t.join().unwrap());
    }
}

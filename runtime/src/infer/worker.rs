//! The worker thread: owns the model mutably, takes a batch of requests from the queue, pads
//! each forward pass, runs it under `catch_unwind`, and scatters the rows back to their
//! requests. A panic fails the requests of that pass only; a panic anywhere else, or the end of
//! the thread, marks the worker stopped with its cause (seen by `/ping`), and every waiting
//! request is answered with that cause.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::metrics::Stage;
use crate::models::EncoderBatch;

use super::queue::{self, RowRef, Unserved};
use super::{InferError, Model, Outputs, Reply, Request, Shared};

/// Starts the worker thread.
pub(super) fn spawn<M: Model>(model: M, shared: Arc<Shared>, name: &str) -> std::io::Result<()> {
    spawn_thread(shared, name, "model worker", move |shared| {
        serve(model, shared)
    })
}

/// Runs `serve` on a thread named `name`. When it returns a cause, or panics, the worker is
/// marked stopped with it (seen by `/ping`) and every waiting request is answered with it;
/// `None` (the last handle is gone) ends the thread quietly. `what` names the worker in the log.
pub(super) fn spawn_thread(
    shared: Arc<Shared>,
    name: &str,
    what: &'static str,
    serve: impl FnOnce(&Shared) -> Option<String> + Send + 'static,
) -> std::io::Result<()> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| serve(&shared)));
            let cause = match outcome {
                Ok(None) => return,
                Ok(Some(cause)) => cause,
                Err(panic) => format!(
                    "it panicked outside a forward pass: {}",
                    panic_message(panic.as_ref())
                ),
            };
            tracing::error!(cause = %cause, "the {what} stopped; /ping now answers 503");
            stop(&shared, &cause);
        })?;
    Ok(())
}

/// Marks the worker stopped with `cause` and answers every waiting request with it.
pub(super) fn stop(shared: &Shared, cause: &str) {
    *shared
        .stopped
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(cause.to_owned());
    let waiting: Vec<Request> = {
        let mut queue = shared.lock_queue();
        queue.close();
        queue.next_batch(usize::MAX, usize::MAX)
    };
    for request in waiting {
        fail(
            request,
            &InferError::WorkerStopped {
                cause: cause.to_owned(),
            },
        );
    }
}

/// The worker loop. Returns `None` when the last handle is gone, or the cause when the worker
/// cannot go on.
fn serve<M: Model>(mut model: M, shared: &Shared) -> Option<String> {
    #[cfg(feature = "test-gate")]
    let gate = shared.config.gate_dir.clone().map(super::gate::Gate::new);
    loop {
        let batch = take_batch(shared)?;
        #[allow(unused_mut)]
        let mut round = Round::new(batch);
        #[cfg(feature = "test-gate")]
        if let Some(gate) = &gate {
            match gate.before_round() {
                super::gate::Action::Go => {}
                super::gate::Action::Panic => round.panic_next = true,
                super::gate::Action::Stop => {
                    let cause = "stopped by the test gate".to_owned();
                    for request in round.requests() {
                        fail(
                            request,
                            &InferError::WorkerStopped {
                                cause: cause.clone(),
                            },
                        );
                    }
                    return Some(cause);
                }
            }
        }
        round.run(&mut model, shared);
    }
}

/// Waits for requests, then (with a maximum wait) for the batch to fill, and takes one batch.
/// `None` once the queue is closed and empty.
pub(super) fn take_batch(shared: &Shared) -> Option<Vec<Request>> {
    let cfg = &shared.config;
    let mut queue = shared.lock_queue();
    loop {
        let gone = queue.prune(Instant::now());
        unserved(shared, gone);
        if !queue.is_empty() {
            if !cfg.max_wait.is_zero() {
                let until = Instant::now() + cfg.max_wait;
                loop {
                    let (rows, tokens) = queue.load();
                    let now = Instant::now();
                    if rows >= cfg.max_batch_rows || tokens >= cfg.max_batch_tokens || now >= until
                    {
                        break;
                    }
                    queue = shared
                        .wake
                        .wait_timeout(queue, until - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                let gone = queue.prune(Instant::now());
                unserved(shared, gone);
            }
            let batch = queue.next_batch(cfg.max_batch_rows, cfg.max_batch_tokens);
            crate::metrics::get().queue_depth.set(queue.len() as i64);
            if !batch.is_empty() {
                return Some(batch);
            }
        }
        if queue.is_closed() {
            return None;
        }
        queue = shared
            .wake
            .wait(queue)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Answers requests that leave the queue without being computed, logging each in its own span.
pub(super) fn unserved(shared: &Shared, gone: Vec<(Request, Unserved)>) {
    for (request, why) in gone {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        let reason = match why {
            Unserved::Cancelled => "cancelled",
            Unserved::Expired => "expired",
        };
        crate::metrics::get()
            .dropped
            .with_label_values(&[reason])
            .inc();
        let error = {
            let _enter = request.span.enter();
            match why {
                Unserved::Cancelled => {
                    tracing::info!("request cancelled before its forward pass; it is not computed");
                    InferError::Cancelled
                }
                Unserved::Expired => {
                    tracing::info!(
                        "request past its deadline before its forward pass; it is not computed"
                    );
                    InferError::DeadlineExceeded
                }
            }
        };
        fail(request, &error);
    }
}

/// Answers a request with an error.
pub(super) fn fail(request: Request, error: &InferError) {
    match request.reply {
        Reply::Once(tx) => {
            let _ = tx.send(Err(error.clone()));
        }
        Reply::Stream(tx) => {
            let _ = tx.send(Err(error.clone()));
        }
        Reply::Tokens(tx) => {
            let _ = tx.send(Err(error.clone()));
        }
    }
}

/// The `(row in pass, position)` pairs of a pass, and how many belong to each row.
type Picks = (Vec<(usize, usize)>, Vec<usize>);

/// One request inside a round.
struct Pending {
    request: Request,
    /// Outputs kept for a `Once` reply.
    outputs: Vec<Option<Tensor>>,
    /// Rows computed.
    done: Vec<bool>,
    error: Option<InferError>,
}

/// The requests taken together, and their rows cut into forward passes.
struct Round {
    pending: Vec<Pending>,
    /// Test gate: make the next forward pass panic.
    panic_next: bool,
}

impl Round {
    fn new(batch: Vec<Request>) -> Self {
        let now = Instant::now();
        for request in &batch {
            request.record_queue_wait(now);
        }
        let pending = batch
            .into_iter()
            .map(|request| Pending {
                outputs: vec![None; request.rows.len()],
                done: vec![false; request.rows.len()],
                request,
                error: None,
            })
            .collect();
        Self {
            pending,
            panic_next: false,
        }
    }

    #[cfg(feature = "test-gate")]
    fn requests(self) -> impl Iterator<Item = Request> {
        self.pending.into_iter().map(|p| p.request)
    }

    fn run<M: Model>(mut self, model: &mut M, shared: &Shared) {
        let cfg = &shared.config;
        // Requests wanting all outputs and those wanting positions never share a pass.
        let (mut all, mut positions) = (Vec::new(), Vec::new());
        for (i, p) in self.pending.iter_mut().enumerate() {
            let target = match p.request.outputs {
                Outputs::All => &mut all,
                Outputs::Positions(_) => &mut positions,
                Outputs::Generate(_) => {
                    p.error = Some(InferError::BadRequest {
                        reason: "this model does not generate".into(),
                    });
                    continue;
                }
            };
            target.extend(p.request.rows.iter().enumerate().map(|(row, r)| RowRef {
                request: i,
                row,
                len: r.len(),
            }));
        }
        let rows = all.len() + positions.len();
        let mut passes = queue::plan(all, cfg.max_batch_rows, cfg.max_batch_tokens);
        passes.extend(queue::plan(
            positions,
            cfg.max_batch_rows,
            cfg.max_batch_tokens,
        ));
        tracing::debug!(
            requests = self.pending.len(),
            rows,
            passes = passes.len(),
            "batch formed"
        );
        for pass in passes {
            // Rows of requests whose caller left (or that already failed) are not computed.
            let pass: Vec<RowRef> = pass
                .into_iter()
                .filter(|r| {
                    let p = &self.pending[r.request];
                    p.error.is_none() && !p.request.is_cancelled()
                })
                .collect();
            if !pass.is_empty() {
                self.forward(model, shared, &pass);
            }
        }
        self.finish(shared);
    }

    /// Pads one pass, runs it, and scatters its rows.
    fn forward<M: Model>(&mut self, model: &mut M, shared: &Shared, pass: &[RowRef]) {
        let batch = pad(pass, &self.pending, shared.config.pad_id);
        let picks = self.positions(pass);
        let panic_now = std::mem::take(&mut self.panic_next);
        let started = Instant::now();
        *shared
            .busy_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(started);
        let result = catch_unwind(AssertUnwindSafe(|| {
            if panic_now {
                panic!("forced by the test gate");
            }
            match &picks {
                None => model.forward(&batch),
                Some((flat, _)) => model.forward_positions(&batch, flat),
            }
        }));
        *shared
            .busy_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        shared.forward_passes.fetch_add(1, Ordering::Relaxed);
        self.record_pass(pass, &batch, started.elapsed());
        let output = match result {
            Ok(Ok(output)) => output,
            Ok(Err(err)) => {
                let err = InferError::Model(Arc::new(err));
                tracing::error!(error = %crate::telemetry::error_chain(&err), "forward pass failed");
                return self.fail_pass(pass, &err);
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(panic = %message, rows = pass.len(), "forward pass panicked; the worker goes on");
                return self.fail_pass(pass, &InferError::WorkerPanicked { message });
            }
        };
        let mut offset = 0;
        for (i, r) in pass.iter().enumerate() {
            let row = match &picks {
                None if output.rank() >= 3 => output.get(i).and_then(|t| t.narrow(0, 0, r.len)),
                None => output.get(i),
                Some((_, counts)) => {
                    let n = counts[i];
                    offset += n;
                    output.narrow(0, offset - n, n)
                }
            };
            match row {
                Ok(t) => self.deliver(*r, t),
                Err(err) => self.fail_pass(
                    std::slice::from_ref(r),
                    &InferError::Model(Arc::new(err.into())),
                ),
            }
        }
    }

    /// Adds a pass to the metrics and to the figures of each invocation it served: the whole
    /// pass time, and the unpadded tokens of its rows.
    fn record_pass(&self, pass: &[RowRef], batch: &EncoderBatch, took: Duration) {
        let metrics = crate::metrics::get();
        metrics.forward_passes.inc();
        metrics.batch_rows.observe(pass.len() as f64);
        let padded = batch.input_ids.first().map_or(0, Vec::len) * pass.len();
        metrics.batch_tokens.observe(padded as f64);
        metrics.observe_stage(Stage::Inference, took);
        let mut seen = Vec::new();
        for r in pass {
            if let Some(t) = &self.pending[r.request].request.timings {
                t.add_tokens(r.len);
                if !seen.contains(&r.request) {
                    seen.push(r.request);
                    t.add(Stage::Inference, took);
                }
            }
        }
    }

    /// For a pass of position requests: the flat `(row in pass, position)` list and how many
    /// positions each row has.
    fn positions(&self, pass: &[RowRef]) -> Option<Picks> {
        let mut flat = Vec::new();
        let mut counts = Vec::with_capacity(pass.len());
        for (i, r) in pass.iter().enumerate() {
            let Outputs::Positions(per_row) = &self.pending[r.request].request.outputs else {
                return None;
            };
            let wanted = &per_row[r.row];
            flat.extend(wanted.iter().map(|&p| (i, p)));
            counts.push(wanted.len());
        }
        Some((flat, counts))
    }

    fn deliver(&mut self, r: RowRef, output: Tensor) {
        let p = &mut self.pending[r.request];
        p.done[r.row] = true;
        match &p.request.reply {
            Reply::Stream(tx) => {
                let _ = tx.send(Ok((r.row, output)));
            }
            Reply::Once(_) => p.outputs[r.row] = Some(output),
            Reply::Tokens(_) => {}
        }
    }

    fn fail_pass(&mut self, pass: &[RowRef], error: &InferError) {
        for r in pass {
            self.pending[r.request]
                .error
                .get_or_insert_with(|| error.clone());
        }
    }

    /// Sends every request its answer.
    fn finish(self, shared: &Shared) {
        for p in self.pending {
            if let Some(error) = p.error {
                fail(p.request, &error);
                continue;
            }
            if !p.done.iter().all(|d| *d) {
                // Skipped mid-round: its caller left.
                unserved(shared, vec![(p.request, Unserved::Cancelled)]);
                continue;
            }
            shared.computed.fetch_add(1, Ordering::Relaxed);
            if let Reply::Once(tx) = p.request.reply {
                let _ = tx.send(Ok(p.outputs.into_iter().flatten().collect()));
            }
        }
    }
}

/// Right-pads the rows of a pass to the longest with `pad_id`, type id 0 (in every type channel)
/// and attention mask 0. `extra_type_ids` stays empty unless a row has extra channels; then
/// every row gets as many, a row without them all zeros.
fn pad(pass: &[RowRef], pending: &[Pending], pad_id: u32) -> EncoderBatch {
    let len = pass.iter().map(|r| r.len).max().unwrap_or(0);
    let channels = pass
        .iter()
        .map(|r| pending[r.request].request.rows[r.row].extra_type_ids.len())
        .max()
        .unwrap_or(0);
    let mut batch = EncoderBatch {
        input_ids: Vec::with_capacity(pass.len()),
        type_ids: Vec::with_capacity(pass.len()),
        attention_mask: Vec::with_capacity(pass.len()),
        extra_type_ids: Vec::new(),
    };
    for r in pass {
        let row = &pending[r.request].request.rows[r.row];
        let padded = |v: &[u32], fill: u32| {
            let mut out = Vec::with_capacity(len);
            out.extend_from_slice(v);
            out.resize(len, fill);
            out
        };
        batch.input_ids.push(padded(&row.ids, pad_id));
        batch.type_ids.push(padded(&row.type_ids, 0));
        let mut mask = vec![1u32; row.len()];
        mask.resize(len, 0);
        batch.attention_mask.push(mask);
        if channels > 0 {
            let mut extra: Vec<Vec<u32>> =
                row.extra_type_ids.iter().map(|c| padded(c, 0)).collect();
            extra.resize(channels, vec![0; len]);
            batch.extra_type_ids.push(extra);
        }
    }
    batch
}

/// The message of a panic payload.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

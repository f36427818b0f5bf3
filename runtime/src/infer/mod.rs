//! The inference core: the one place where requests meet the model. A request is data (token
//! rows, the outputs wanted, a deadline, a cancellation flag, the caller's tracing span) with a
//! reply channel; [`Infer::submit`] queues it (a full queue is [`InferError::Overloaded`]) and a
//! worker thread that owns the model takes batches from the queue, pads them, runs the forward
//! passes and scatters the rows back (`queue.rs`, `worker.rs`).
//!
//! Requests that arrive together are merged into one forward pass (dynamic batching), bounded by
//! a number of padded tokens and of rows per pass and by a maximum wait; rows are ordered by
//! length so that each pass pads little. Padding never changes an answer: padded keys are masked
//! out of attention, and every row is cut back to its own length before it is returned.
//!
//! A request whose caller went away (the reply receiver dropped, or the request's cancellation
//! flag set when its HTTP client disconnected) or whose deadline passed is dropped before its
//! forward pass and never computed. A panic inside a forward pass fails only the requests of
//! that pass ([`InferError::WorkerPanicked`]) and the worker goes on. [`Infer::health`] tells
//! `/ping` whether the worker can serve (it stopped, or one forward pass has run for longer than
//! the wedge limit).
//!
//! `infer` knows tokens and tensors only: no task, HTTP or user code. Generation requests go
//! through the same queue to a generation worker (`generate.rs`) that owns the per-request
//! decode state (KV caches, processors, stopping rules) and streams tokens as they are made.

mod generate;
mod queue;
pub mod seq2seq;
mod worker;

pub use generate::{GenerateSpec, Generator, Next, Start};

#[cfg(feature = "test-gate")]
mod gate;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::RequestTimings;
use crate::models::{EncoderBatch, ModelError};

/// Why the core did not answer a request with model outputs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferError {
    /// The queue holds `capacity` requests already.
    #[error("the model queue is full ({capacity} requests waiting)")]
    Overloaded {
        /// The queue bound.
        capacity: usize,
    },
    /// The caller went away before the forward pass; the request was not computed.
    #[error("the request was cancelled before the model ran it")]
    Cancelled,
    /// The request's deadline passed while it waited; it was not computed.
    #[error("the request's time limit passed before the model ran it")]
    DeadlineExceeded,
    /// The forward pass panicked; the worker goes on with the next batch.
    #[error("the model worker panicked during the forward pass: {message}")]
    WorkerPanicked {
        /// The panic message.
        message: String,
    },
    /// The worker has stopped and serves nothing any more.
    #[error("the model worker has stopped: {cause}")]
    WorkerStopped {
        /// Why it stopped.
        cause: String,
    },
    /// The forward pass returned an error.
    #[error("the forward pass failed")]
    Model(#[source] Arc<ModelError>),
    /// A request that cannot be run (no rows, an empty row, positions outside a row).
    #[error("bad inference request: {reason}")]
    BadRequest {
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with [`InferError`].
pub type Result<T, E = InferError> = std::result::Result<T, E>;

/// The model the worker runs: a padded batch in, one output tensor with a leading batch
/// dimension out. Implemented by [`crate::models::Encoder`].
pub trait Model: Send + 'static {
    /// All outputs: `[B, X]` for sequence heads, `[B, T, X]` for per-token outputs.
    fn forward(&mut self, batch: &EncoderBatch) -> Result<Tensor, ModelError>;
    /// Per-token outputs at the given `(row, position)` pairs only: `[N, X]` in their order.
    fn forward_positions(
        &mut self,
        batch: &EncoderBatch,
        positions: &[(usize, usize)],
    ) -> Result<Tensor, ModelError>;
}

impl Model for crate::models::Encoder {
    fn forward(&mut self, batch: &EncoderBatch) -> Result<Tensor, ModelError> {
        Self::forward(self, batch)
    }

    fn forward_positions(
        &mut self,
        batch: &EncoderBatch,
        positions: &[(usize, usize)],
    ) -> Result<Tensor, ModelError> {
        Self::forward_positions(self, batch, positions)
    }
}

/// One input sequence: token ids and segment ids, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment (token type) ids, as long as `ids`.
    pub type_ids: Vec<u32>,
    /// More per-token type channels, each as long as `ids` (`[channel][token]`); empty for
    /// every model but TAPAS, whose six other token types travel here. The worker pads them with
    /// 0, like `type_ids`.
    pub extra_type_ids: Vec<Vec<u32>>,
}

impl Row {
    /// The row of an encoding.
    pub fn from_encoding(encoding: &tokenizers::Encoding) -> Self {
        Self::new(
            encoding.get_ids().to_vec(),
            encoding.get_type_ids().to_vec(),
        )
    }

    /// A row of token ids and segment ids, with no extra type channels.
    pub fn new(ids: Vec<u32>, type_ids: Vec<u32>) -> Self {
        Self {
            ids,
            type_ids,
            extra_type_ids: Vec::new(),
        }
    }

    /// Tokens in the row.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the row has no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Which outputs a request wants for its rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Outputs {
    /// Each row's whole output: `[X]` for sequence heads, `[len, X]` for per-token outputs
    /// (exactly the row's tokens, never padding).
    All,
    /// For each row, the per-token outputs at these positions only: `[n, X]`. Fill-mask asks
    /// for its mask positions, so only those go through the vocabulary projection.
    Positions(Vec<Vec<usize>>),
    /// Generate after each row (a prompt), answered through [`Reply::Tokens`]; only a
    /// generation worker ([`Infer::spawn_generator`]) serves it.
    Generate(Box<GenerateSpec>),
}

/// One event of a generation stream. Sequence `r × num_return_sequences + k` is the `k`-th
/// answer to row `r`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    /// A token of a sequence, as soon as it is chosen (greedy decoding and sampling; beam
    /// search only knows its sequences when it ends).
    Token {
        /// The sequence.
        sequence: usize,
        /// The token.
        token: u32,
        /// Its log-probability under the processed scores it was chosen from (temperature,
        /// top-k/top-p and penalties applied), as TGI reports it.
        logprob: f32,
        /// Whether the token ends its sequence: its [`GenEvent::Finished`] follows at once, so
        /// a stream can put the whole answer on this token's record.
        last: bool,
    },
    /// The log-probability of the token about to be sent for `sequence` and the `top` best
    /// alternatives, under the distribution after the penalties and the temperature and before
    /// top-k/top-p (sent just before its [`GenEvent::Token`], only when the request asks for
    /// them: [`GenerateSpec::top_logprobs`]).
    Logprobs {
        /// The sequence.
        sequence: usize,
        /// The chosen token's log-probability.
        logprob: f32,
        /// The best tokens and their log-probabilities, best first.
        top: Vec<(u32, f32)>,
    },
    /// A sequence is finished: all its generated tokens (the prompt excluded).
    Finished {
        /// The sequence.
        sequence: usize,
        /// The generated tokens.
        tokens: Vec<u32>,
    },
}

/// Where the answer goes.
#[derive(Debug)]
pub enum Reply {
    /// All rows at once, in request order.
    Once(oneshot::Sender<Result<Vec<Tensor>>>),
    /// Each row as soon as its forward pass is done, as `(row index, output)`; an error ends
    /// the stream. For long requests whose consumer can start early (and generation later).
    Stream(mpsc::UnboundedSender<Result<(usize, Tensor)>>),
    /// Generation: tokens and finished sequences as they are made; an error ends the stream,
    /// and so does the end of the request (the sender is dropped).
    Tokens(mpsc::UnboundedSender<Result<GenEvent>>),
}

impl Reply {
    fn is_closed(&self) -> bool {
        match self {
            Self::Once(tx) => tx.is_closed(),
            Self::Stream(tx) => tx.is_closed(),
            Self::Tokens(tx) => tx.is_closed(),
        }
    }
}

/// A request to the model: data, not a closure.
#[derive(Debug)]
pub struct Request {
    /// The input sequences.
    pub rows: Vec<Row>,
    /// The outputs wanted.
    pub outputs: Outputs,
    /// Not computed after this instant ([`InferError::DeadlineExceeded`]).
    pub deadline: Option<Instant>,
    /// Set when the caller gave up; the request is then dropped before its forward pass.
    pub cancel: CancelFlag,
    /// The caller's span, entered while the worker handles the request.
    pub span: tracing::Span,
    /// Where the outputs go.
    pub reply: Reply,
    /// The invocation's figures (queue and inference time, tokens), when it keeps them.
    pub timings: Option<Arc<RequestTimings>>,
    /// When the request was made: its queue time runs from here to its first forward pass.
    pub queued_at: Instant,
}

impl Request {
    /// A request for `rows` that inherits the current [`Scope`] (deadline, cancellation) and
    /// tracing span, answered once; returns it with the receiver of its answer.
    pub fn once(
        rows: Vec<Row>,
        outputs: Outputs,
    ) -> (Self, oneshot::Receiver<Result<Vec<Tensor>>>) {
        let (tx, rx) = oneshot::channel();
        let scope = Scope::current();
        let request = Self {
            rows,
            outputs,
            deadline: scope.deadline,
            cancel: scope.cancel,
            span: tracing::Span::current(),
            reply: Reply::Once(tx),
            timings: scope.timings,
            queued_at: Instant::now(),
        };
        (request, rx)
    }

    /// Records the time since the request was made, up to `now`, as its queue time: in its
    /// invocation's figures and in the queue-stage histogram.
    pub(crate) fn record_queue_wait(&self, now: Instant) {
        let waited = now.saturating_duration_since(self.queued_at);
        if let Some(t) = &self.timings {
            t.add(crate::metrics::Stage::Queue, waited);
        }
        crate::metrics::get().observe_stage(crate::metrics::Stage::Queue, waited);
    }

    /// Whether the caller is gone: the receiver dropped or the cancellation flag set.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_set() || self.reply.is_closed()
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(InferError::BadRequest { reason });
        if self.rows.is_empty() {
            return bad("no rows".into());
        }
        if let Some(i) = self.rows.iter().position(|r| {
            r.is_empty()
                || r.ids.len() != r.type_ids.len()
                || r.extra_type_ids.iter().any(|c| c.len() != r.ids.len())
        }) {
            return bad(format!(
                "row {i} is empty or its ids and type ids differ in length"
            ));
        }
        if let Outputs::Generate(spec) = &self.outputs {
            if !matches!(self.reply, Reply::Tokens(_)) {
                return bad("a generation request is answered through a token stream".into());
            }
            if spec.params.num_return_sequences == 0 || spec.params.num_beams == 0 {
                return bad("no sequences to generate".into());
            }
        }
        if let Outputs::Positions(positions) = &self.outputs {
            if positions.len() != self.rows.len() {
                return bad(format!(
                    "{} position lists for {} rows",
                    positions.len(),
                    self.rows.len()
                ));
            }
            for (i, (row, p)) in self.rows.iter().zip(positions).enumerate() {
                if let Some(pos) = p.iter().find(|&&pos| pos >= row.len()) {
                    return bad(format!(
                        "position {pos} is outside row {i} of {} tokens",
                        row.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A request's cancellation flag: shared by the caller, who sets it, and the queue, which
/// drops the request when it is set. [`CancelOnDrop`] sets it when the caller's future is
/// dropped (its client disconnected, or the time limit answered first).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Marks the request cancelled.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether it was cancelled.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Sets a [`CancelFlag`] when dropped, unless [`disarm`](Self::disarm)ed, and logs it in the
/// span that was current when the guard was made.
#[derive(Debug)]
pub struct CancelOnDrop {
    flag: Option<CancelFlag>,
    span: tracing::Span,
}

impl CancelOnDrop {
    /// Guards `flag`.
    pub fn new(flag: CancelFlag) -> Self {
        Self {
            flag: Some(flag),
            span: tracing::Span::current(),
        }
    }

    /// The request finished: dropping the guard no longer cancels anything.
    pub fn disarm(mut self) {
        self.flag = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = self.flag.take() {
            let _enter = self.span.enter();
            tracing::info!(
                "invocation abandoned before its answer (client gone or time limit); its model work is cancelled"
            );
            flag.set();
        }
    }
}

/// The deadline and cancellation flag of the request being handled on this thread. The server
/// sets it around the hook chain ([`Scope::run`]); every model request submitted inside
/// inherits it, including those a guest makes through `pipeline.predict`, so pipelines need
/// not pass it along (as the tracing span is not passed along either).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The request's time limit.
    pub deadline: Option<Instant>,
    /// The request's cancellation flag.
    pub cancel: CancelFlag,
    /// The invocation's figures, added to by the model worker and the hook chain.
    pub timings: Option<Arc<RequestTimings>>,
}

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

impl Scope {
    /// Runs `f` with this scope as the current one on this thread.
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Scope>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                SCOPE.with(|s| *s.borrow_mut() = previous);
            }
        }
        let previous = SCOPE.with(|s| s.borrow_mut().replace(self));
        let _restore = Restore(previous);
        f()
    }

    /// The current scope, or none (no deadline, never cancelled).
    pub fn current() -> Self {
        SCOPE.with(|s| s.borrow().clone()).unwrap_or_default()
    }
}

/// The worker behind a loaded model: the inference core of its model (an encoder, or a
/// generation worker of a decoder-only or encoder-decoder model).
#[derive(Clone)]
pub enum Worker {
    /// [`Infer`].
    Encoder(Infer),
}

impl Worker {
    /// Whether the worker can serve: `/ping`'s health command.
    pub fn health(&self) -> Health {
        match self {
            Self::Encoder(infer) => infer.health(),
        }
    }
}

/// Limits of the queue and of each forward pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferConfig {
    /// Requests that may wait for the model; one more is [`InferError::Overloaded`].
    pub queue_size: usize,
    /// Most rows in one forward pass.
    pub max_batch_rows: usize,
    /// Most padded tokens (rows × longest row) in one forward pass; a longer single row still
    /// runs, alone.
    pub max_batch_tokens: usize,
    /// How long the worker waits for more requests to fill a batch once one is queued. Zero:
    /// take what is queued (requests that arrive during a forward pass still merge into the next).
    pub max_wait: Duration,
    /// Token id used for padding.
    pub pad_id: u32,
    /// One forward pass running longer than this makes [`Infer::health`] report the worker
    /// wedged.
    pub wedged_after: Duration,
    /// Test-only control directory (see `gate.rs`).
    #[cfg(feature = "test-gate")]
    pub gate_dir: Option<std::path::PathBuf>,
}

/// Whether the worker can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Ready,
    /// One forward pass has been running for `busy_for`, past the wedge limit.
    Wedged {
        /// How long the current forward pass has run.
        busy_for: Duration,
    },
    /// The worker stopped.
    Stopped {
        /// Why.
        cause: String,
    },
}

/// Counters since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Requests answered with outputs.
    pub computed: u64,
    /// Requests dropped before their forward pass (cancelled or past their deadline).
    pub dropped: u64,
    /// Forward passes run.
    pub forward_passes: u64,
}

/// State shared by the handles and the worker.
struct Shared {
    queue: Mutex<queue::Queue>,
    /// Signalled when a request is queued or the last handle is dropped.
    wake: Condvar,
    config: InferConfig,
    /// When the current forward pass started; `None` between passes.
    busy_since: Mutex<Option<Instant>>,
    stopped: Mutex<Option<String>>,
    computed: AtomicU64,
    dropped: AtomicU64,
    forward_passes: AtomicU64,
    /// Whether the worker generates (it takes only [`Outputs::Generate`] requests).
    generates: bool,
}

impl Shared {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, queue::Queue> {
        // The queue holds plain data; a panic while it was locked cannot leave it half-updated
        // in a way later calls misread, so keep serving.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Stops the worker when the last handle is dropped.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock_queue().close();
        self.0.wake.notify_all();
    }
}

/// The handle pipelines (and `/ping`) use to reach the model worker. Cheap to clone.
#[derive(Clone)]
pub struct Infer {
    owner: Arc<Owner>,
}

impl Infer {
    /// Starts the worker thread that owns `model`.
    pub fn spawn<M: Model>(model: M, config: InferConfig, name: &str) -> std::io::Result<Self> {
        let shared = Self::shared_state(config, false);
        worker::spawn(model, Arc::clone(&shared), name)?;
        Ok(Self {
            owner: Arc::new(Owner(shared)),
        })
    }

    /// Starts the generation worker thread that owns `model` (see `generate.rs`).
    pub fn spawn_generator<G: Generator>(
        model: G,
        config: InferConfig,
        name: &str,
    ) -> std::io::Result<Self> {
        let shared = Self::shared_state(config, true);
        generate::spawn(model, Arc::clone(&shared), name)?;
        Ok(Self {
            owner: Arc::new(Owner(shared)),
        })
    }

    fn shared_state(config: InferConfig, generates: bool) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(queue::Queue::new(config.queue_size)),
            wake: Condvar::new(),
            config,
            busy_since: Mutex::new(None),
            stopped: Mutex::new(None),
            computed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            forward_passes: AtomicU64::new(0),
            generates,
        })
    }

    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    /// Queues a request. Never blocks; a full queue is [`InferError::Overloaded`], a stopped
    /// worker [`InferError::WorkerStopped`].
    pub fn submit(&self, request: Request) -> Result<()> {
        request.validate()?;
        if matches!(request.outputs, Outputs::Generate(_)) != self.shared().generates {
            return Err(InferError::BadRequest {
                reason: if self.shared().generates {
                    "this model only generates".into()
                } else {
                    "this model does not generate".into()
                },
            });
        }
        let span = request.span.clone();
        let _enter = span.enter();
        if let Some(cause) = self.stopped_cause() {
            return Err(InferError::WorkerStopped { cause });
        }
        let shared = self.shared();
        let (pushed, gone) = {
            let mut queue = shared.lock_queue();
            let gone = queue.prune(Instant::now());
            let pushed = queue.push(request);
            crate::metrics::get().queue_depth.set(queue.len() as i64);
            (pushed, gone)
        };
        worker::unserved(shared, gone);
        pushed?;
        tracing::debug!("queued for the model");
        shared.wake.notify_one();
        Ok(())
    }

    /// Runs `rows` through the model and waits for all their outputs (see [`Outputs`]).
    /// Blocks: call it off the async runtime. Inherits the current [`Scope`] and span.
    pub fn run(&self, rows: Vec<Row>, outputs: Outputs) -> Result<Vec<Tensor>> {
        let (request, rx) = Request::once(rows, outputs);
        self.submit(request)?;
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(self.stopped_cause().map_or(InferError::Cancelled, |cause| {
                InferError::WorkerStopped { cause }
            }))
        })
    }

    /// [`run`](Self::run) on encodings, every output wanted.
    pub fn forward(&self, encodings: &[tokenizers::Encoding]) -> Result<Vec<Tensor>> {
        self.run(
            encodings.iter().map(Row::from_encoding).collect(),
            Outputs::All,
        )
    }

    /// Queues a generation request for `prompts` and returns its event stream. Inherits the
    /// current [`Scope`] and span; dropping the receiver stops the generation at the next step.
    pub fn generate(
        &self,
        prompts: Vec<Vec<u32>>,
        spec: GenerateSpec,
    ) -> Result<mpsc::UnboundedReceiver<Result<GenEvent>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let scope = Scope::current();
        let rows = prompts
            .into_iter()
            .map(|ids| {
                let type_ids = vec![0; ids.len()];
                Row::new(ids, type_ids)
            })
            .collect();
        self.submit(Request {
            rows,
            outputs: Outputs::Generate(Box::new(spec)),
            deadline: scope.deadline,
            cancel: scope.cancel,
            span: tracing::Span::current(),
            reply: Reply::Tokens(tx),
            timings: scope.timings,
            queued_at: Instant::now(),
        })?;
        Ok(rx)
    }

    /// [`generate`](Self::generate) and wait for every sequence: the generated tokens of
    /// sequence `r × num_return_sequences + k` at that index. Blocks: call it off the async
    /// runtime.
    pub fn generate_all(
        &self,
        prompts: Vec<Vec<u32>>,
        spec: GenerateSpec,
    ) -> Result<Vec<Vec<u32>>> {
        let total = prompts.len() * spec.params.num_return_sequences;
        let mut rx = self.generate(prompts, spec)?;
        let mut out: Vec<Option<Vec<u32>>> = vec![None; total];
        let mut left = total;
        while left > 0 {
            match rx.blocking_recv() {
                Some(Ok(GenEvent::Finished { sequence, tokens })) => {
                    if let Some(slot) = out.get_mut(sequence)
                        && slot.is_none()
                    {
                        *slot = Some(tokens);
                        left -= 1;
                    }
                }
                Some(Ok(GenEvent::Token { .. } | GenEvent::Logprobs { .. })) => {}
                Some(Err(err)) => return Err(err),
                None => {
                    return Err(self.stopped_cause().map_or(InferError::Cancelled, |cause| {
                        InferError::WorkerStopped { cause }
                    }));
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Whether the worker can serve: `/ping`'s health command.
    pub fn health(&self) -> Health {
        if let Some(cause) = self.stopped_cause() {
            return Health::Stopped { cause };
        }
        let shared = self.shared();
        let busy_since = *shared
            .busy_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match busy_since.map(|t| t.elapsed()) {
            Some(busy_for) if busy_for > shared.config.wedged_after => Health::Wedged { busy_for },
            _ => Health::Ready,
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        let s = self.shared();
        Stats {
            computed: s.computed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            forward_passes: s.forward_passes.load(Ordering::Relaxed),
        }
    }

    fn stopped_cause(&self) -> Option<String> {
        self.shared()
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests;

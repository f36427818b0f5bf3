//! The generation worker: a generation request is a stateful item of the same queue. The worker
//! owns the model and every running sequence's KV cache, and loops: admit the requests that
//! are waiting, pick one token for every running sequence with its own processors, stopping
//! rule and random generator, send it through the request's stream, then run one forward pass
//! for all running sequences of all requests together (rows of different lengths, each at its
//! own position: continuous batching) and, in the same pass, the prompts of the requests just
//! admitted (each prompt is run once, its cache cloned for the other sequences or beams), and
//! retire the finished. A request whose caller went away
//! (receiver dropped, cancellation flag) or whose deadline passed is dropped at the next step.
//! A panic or error in a model call fails the requests of that call; the worker goes on.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use crate::generate::logits::{LogitsProcessor, Rng, log_softmax, pick};
use crate::generate::{BeamSearch, GenerationParams, StopRule, StopStrings, TextStop};
use crate::metrics::Stage;
use crate::models::ModelError;
use crate::models::decoder::{CausalLm, KvCache, Step};
use crate::search::EncDecProcessors;

use super::worker::{fail, panic_message, unserved};
use super::{GenEvent, InferError, Outputs, Reply, Request, Shared};

/// A model that generates: starts a sequence from its prompt, then takes one token a row. The
/// worker knows nothing else of it: a decoder-only model ([`CausalLm`]) runs the prompt and
/// keeps its KV cache; an encoder-decoder model (`seq2seq.rs`) encodes the prompt into its
/// cache and starts the decoder (the ids then being the decoder's start).
pub trait Generator: Send + 'static {
    /// Everything one sequence needs between steps (cloned for beams and for the sequences of
    /// one prompt).
    type Cache: Clone + Send;
    /// Runs `prompt` as a new sequence: its cache, the ids the processors see for it (a
    /// decoder-only model: the prompt), and the next token's logits.
    /// `spec` is the request's (an encoder-decoder model reads its `decoder_start_token_id`).
    fn start(
        &mut self,
        prompt: &[u32],
        spec: &GenerateSpec,
    ) -> Result<Start<Self::Cache>, ModelError>;
    /// One new token for each row, after the row's cache; each row's next logits, in order.
    fn step(&mut self, rows: &mut [Next<'_, Self::Cache>]) -> Result<Vec<Vec<f32>>, ModelError>;

    /// Starts `prompts` and steps `rows` (either may be empty), in one forward pass where the
    /// model can: a decoder-only model runs the prompts' tokens and the rows' next tokens
    /// through each projection together, so new requests do not stall the running ones. By
    /// default each prompt with [`Self::start`], then the rows with [`Self::step`]. On an error
    /// the rows' caches are as they were (the worker then runs the prompts and rows apart, to
    /// fail only the request at fault).
    fn start_and_step(
        &mut self,
        prompts: &[(&[u32], &GenerateSpec)],
        rows: &mut [Next<'_, Self::Cache>],
    ) -> Result<Started<Self::Cache>, ModelError> {
        let starts = prompts
            .iter()
            .map(|(prompt, spec)| self.start(prompt, spec))
            .collect::<Result<Vec<_>, _>>()?;
        let logits = if rows.is_empty() {
            Vec::new()
        } else {
            self.step(rows)?
        };
        Ok((starts, logits))
    }
}

/// The starts of some prompts and the next logits of some rows, from one pass.
pub(crate) type Started<C> = (Vec<Start<C>>, Vec<Vec<f32>>);

/// One row of a decode step: the row's new token and its cache.
#[derive(Debug)]
pub struct Next<'a, C> {
    /// The token chosen last.
    pub token: u32,
    /// The row's cache, extended by the step.
    pub cache: &'a mut C,
}

/// A started sequence.
#[derive(Debug)]
pub struct Start<C> {
    /// Its cache.
    pub cache: C,
    /// The ids so far, as the processors and stopping rules see them.
    pub ids: Vec<u32>,
    /// The next token's logits.
    pub logits: Vec<f32>,
}

impl<C> Start<C> {
    /// A sequence started by one forward pass over `ids` whose last row of logits predicts
    /// the next token.
    pub fn from_pass(cache: C, ids: Vec<u32>, mut rows: Vec<Vec<f32>>) -> Result<Self, ModelError> {
        let logits = rows.pop().ok_or_else(|| ModelError::BadBatch {
            reason: "no logits".into(),
        })?;
        Ok(Self { cache, ids, logits })
    }
}

impl Generator for CausalLm {
    type Cache = KvCache;

    fn start(&mut self, prompt: &[u32], _: &GenerateSpec) -> Result<Start<KvCache>, ModelError> {
        let mut cache = KvCache::default();
        let rows = self.forward(&mut [Step {
            tokens: prompt,
            cache: &mut cache,
        }])?;
        Start::from_pass(cache, prompt.to_vec(), rows)
    }

    fn step(&mut self, rows: &mut [Next<'_, KvCache>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut steps: Vec<Step<'_>> = rows
            .iter_mut()
            .map(|r| Step {
                tokens: std::slice::from_ref(&r.token),
                cache: &mut *r.cache,
            })
            .collect();
        self.forward(&mut steps)
    }

    fn start_and_step(
        &mut self,
        prompts: &[(&[u32], &GenerateSpec)],
        rows: &mut [Next<'_, KvCache>],
    ) -> Result<Started<KvCache>, ModelError> {
        let mut fresh = vec![KvCache::default(); prompts.len()];
        let mut steps: Vec<Step<'_>> = fresh
            .iter_mut()
            .zip(prompts)
            .map(|(cache, (tokens, _))| Step { tokens, cache })
            .collect();
        steps.extend(rows.iter_mut().map(|r| Step {
            tokens: std::slice::from_ref(&r.token),
            cache: &mut *r.cache,
        }));
        let mut logits = self.forward(&mut steps)?;
        drop(steps);
        let stepped = logits.split_off(prompts.len());
        let starts = fresh
            .into_iter()
            .zip(prompts)
            .zip(logits)
            .map(|((cache, (prompt, _)), logits)| Start {
                cache,
                ids: prompt.to_vec(),
                logits,
            })
            .collect();
        Ok((starts, stepped))
    }
}

/// What a generation request asks for (with [`Outputs::Generate`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerateSpec {
    /// The resolved parameters.
    pub params: GenerationParams,
    /// Token sequences that also end a sequence.
    pub stop_sequences: Vec<Vec<u32>>,
    /// The encoder-decoder processors (`bad_words_ids`, forced BOS/EOS); empty for
    /// decoder-only models.
    pub extra: EncDecProcessors,
    /// Texts that end a sequence once its decoded new text contains one (greedy decoding and
    /// sampling; beam search ignores them).
    pub stop_strings: Option<StopStrings>,
    /// Send a [`GenEvent::Logprobs`] before each token, with this many alternatives.
    pub top_logprobs: Option<usize>,
}

/// One sequence of greedy decoding or sampling.
struct Seq<C> {
    index: usize,
    ids: Vec<u32>,
    prompt_len: usize,
    cache: Option<C>,
    logits: Vec<f32>,
    processor: LogitsProcessor,
    stop: StopRule,
    text_stop: Option<TextStop>,
    done: bool,
}

/// The beams of one prompt.
struct Beams<C> {
    first: usize,
    prompt_len: usize,
    count: usize,
    search: BeamSearch,
    caches: Vec<C>,
    logits: Vec<Vec<f32>>,
    processor: LogitsProcessor,
    stop: StopRule,
    done: bool,
}

/// A request being generated.
struct Job<C> {
    request: Request,
    /// What it asks for.
    spec: GenerateSpec,
    /// Admitted, its prompts not run yet (they run in the next forward pass).
    waiting: bool,
    seqs: Vec<Seq<C>>,
    beams: Vec<Beams<C>>,
    rng: Rng,
    /// The request's encoder-decoder processors.
    extra: EncDecProcessors,
    /// Alternatives to report with each token's log-probability, when asked.
    top_logprobs: Option<usize>,
    failed: bool,
    /// When its prompts started running: the clock of its tokens per second.
    started: Instant,
}

impl<C> Job<C> {
    /// Adds `took` of model time to the invocation's figures.
    fn add_inference(&self, took: std::time::Duration) {
        if let Some(t) = &self.request.timings {
            t.add(Stage::Inference, took);
        }
    }

    fn send(&self, event: GenEvent) {
        if let Reply::Tokens(tx) = &self.request.reply {
            let _ = tx.send(Ok(event));
        }
    }

    fn is_done(&self) -> bool {
        !self.waiting && self.seqs.iter().all(|s| s.done) && self.beams.iter().all(|b| b.done)
    }

    /// Ends the request with `err` (sent on its stream); it is dropped at retirement.
    fn fail(&mut self, err: InferError) {
        if !self.failed {
            self.failed = true;
            if let Reply::Tokens(tx) = &self.request.reply {
                let _ = tx.send(Err(err));
            }
        }
    }
}

/// Starts the generation worker thread.
pub(super) fn spawn<G: Generator>(
    model: G,
    shared: Arc<Shared>,
    name: &str,
) -> std::io::Result<()> {
    super::worker::spawn_thread(shared, name, "generation worker", move |shared| {
        serve(model, shared)
    })
}

/// The worker loop; returns the cause when the worker cannot go on, `None` when the last
/// handle is gone.
fn serve<G: Generator>(mut model: G, shared: &Shared) -> Option<String> {
    #[cfg(feature = "test-gate")]
    let gate = shared.config.gate_dir.clone().map(super::gate::Gate::new);
    let panic_next = Cell::new(false);
    let mut jobs: Vec<Job<G::Cache>> = Vec::new();
    loop {
        // Admit: wait when idle, otherwise take what is queued without waiting.
        let new = if jobs.is_empty() {
            super::worker::take_batch(shared)?
        } else {
            let mut queue = shared.lock_queue();
            let gone = queue.prune(Instant::now());
            let batch = queue.next_batch(shared.config.max_batch_rows, usize::MAX);
            drop(queue);
            unserved(shared, gone);
            batch
        };
        for request in new {
            if let Some(job) = admit(request) {
                jobs.push(job);
            }
        }
        // Drop the requests whose caller left or whose time is up.
        let now = Instant::now();
        let mut kept = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.request.is_cancelled() {
                let _enter = job.request.span.enter();
                tracing::info!("generation cancelled by its caller; stopped at this step");
                shared.dropped.fetch_add(1, Ordering::Relaxed);
            } else if job.request.deadline.is_some_and(|d| d <= now) {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                fail(job.request, &InferError::DeadlineExceeded);
            } else {
                kept.push(job);
            }
        }
        jobs = kept;
        // Pick the next token of every running sequence.
        for job in &mut jobs {
            select(job);
        }
        #[cfg(feature = "test-gate")]
        if let Some(gate) = &gate {
            match gate.before_round() {
                super::gate::Action::Go => {}
                super::gate::Action::Panic => panic_next.set(true),
                super::gate::Action::Stop => {
                    let cause = "stopped by the test gate".to_owned();
                    for job in jobs {
                        fail(
                            job.request,
                            &InferError::WorkerStopped {
                                cause: cause.clone(),
                            },
                        );
                    }
                    return Some(cause);
                }
            }
        }
        // One decode step for every running row of every request, with the new prompts.
        step_all(&mut model, shared, &panic_next, &mut jobs);
        // Retire.
        let mut kept = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.failed {
                continue;
            }
            if job.is_done() {
                shared.computed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            kept.push(job);
        }
        jobs = kept;
    }
}

/// Runs a model call under `catch_unwind`, marking the worker busy meanwhile.
/// `panic_next` (the test gate) makes this call panic.
fn guarded<T>(
    shared: &Shared,
    panic_next: &Cell<bool>,
    f: impl FnOnce() -> Result<T, ModelError>,
) -> Result<T, InferError> {
    *shared
        .busy_since
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    let panic_now = panic_next.replace(false);
    let result = catch_unwind(AssertUnwindSafe(|| {
        if panic_now {
            panic!("forced by the test gate");
        }
        f()
    }));
    *shared
        .busy_since
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = None;
    shared.forward_passes.fetch_add(1, Ordering::Relaxed);
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(err)) => {
            let err = InferError::Model(Arc::new(err));
            tracing::error!(error = %crate::telemetry::error_chain(&err), "generation step failed");
            Err(err)
        }
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(panic = %message, "generation step panicked; the worker goes on");
            Err(InferError::WorkerPanicked { message })
        }
    }
}

/// Takes a new request in; its prompts run in the next forward pass ([`step_all`]).
fn admit<C>(request: Request) -> Option<Job<C>> {
    let Outputs::Generate(spec) = &request.outputs else {
        fail(
            request,
            &InferError::BadRequest {
                reason: "this model only generates".into(),
            },
        );
        return None;
    };
    let spec = spec.as_ref().clone();
    let rng = spec.params.seed.map_or_else(Rng::unseeded, Rng::seeded);
    request.record_queue_wait(Instant::now());
    if let Some(t) = &request.timings {
        t.add_tokens(request.rows.iter().map(super::Row::len).sum());
    }
    {
        let _enter = request.span.enter();
        tracing::debug!(rows = request.rows.len(), "generation admitted");
    }
    Some(Job {
        seqs: Vec::new(),
        beams: Vec::new(),
        rng,
        extra: spec.extra.clone(),
        top_logprobs: spec.top_logprobs,
        spec,
        waiting: true,
        failed: false,
        request,
        started: Instant::now(),
    })
}

/// Sets up the sequences or beams of a job whose prompts have run (`starts`, one a prompt).
fn begin<C: Clone>(job: &mut Job<C>, starts: Vec<Start<C>>) {
    job.waiting = false;
    let spec = &job.spec;
    let params = &spec.params;
    let n = params.num_return_sequences;
    for (row, start) in starts.into_iter().enumerate() {
        let prompt_len = start.ids.len();
        let stop = StopRule {
            eos: params.eos_token_ids.clone(),
            max_len: params.max_total_len(prompt_len),
            sequences: spec.stop_sequences.clone(),
        };
        let processor = LogitsProcessor::new(params, prompt_len);
        if params.is_beam_search() {
            job.beams.push(Beams {
                first: row * n,
                prompt_len,
                count: n,
                search: BeamSearch::new(&start.ids, params, stop.max_len),
                caches: vec![start.cache; params.num_beams],
                logits: vec![start.logits; params.num_beams],
                processor,
                stop,
                done: false,
            });
        } else {
            for k in 0..n {
                job.seqs.push(Seq {
                    index: row * n + k,
                    ids: start.ids.clone(),
                    prompt_len,
                    cache: Some(start.cache.clone()),
                    logits: start.logits.clone(),
                    processor: processor.clone(),
                    stop: stop.clone(),
                    text_stop: spec
                        .stop_strings
                        .clone()
                        .map(|strings| TextStop::new(strings, &start.ids)),
                    done: false,
                });
            }
        }
    }
}

/// The prompts' starts and the rows' logits of one forward pass.
type PassResult<C> = (
    Vec<Result<Start<C>, InferError>>,
    Result<Vec<Vec<f32>>, InferError>,
);

/// Runs `prompts` and `rows` in one pass ([`Generator::start_and_step`]); when that fails with
/// a model error, runs each prompt alone and the rows apart, so that only the request at fault
/// fails.
fn run_pass<G: Generator>(
    model: &mut G,
    shared: &Shared,
    panic_next: &Cell<bool>,
    prompts: &[(&[u32], &GenerateSpec)],
    rows: &mut [Next<'_, G::Cache>],
) -> PassResult<G::Cache> {
    if prompts.is_empty() {
        return (Vec::new(), guarded(shared, panic_next, || model.step(rows)));
    }
    match guarded(shared, panic_next, || model.start_and_step(prompts, rows)) {
        Ok((starts, logits)) => (starts.into_iter().map(Ok).collect(), Ok(logits)),
        Err(InferError::Model(_)) => {
            let starts = prompts
                .iter()
                .map(|(prompt, spec)| guarded(shared, panic_next, || model.start(prompt, spec)))
                .collect();
            let logits = if rows.is_empty() {
                Ok(Vec::new())
            } else {
                guarded(shared, panic_next, || model.step(rows))
            };
            (starts, logits)
        }
        Err(err) => (prompts.iter().map(|_| Err(err.clone())).collect(), Err(err)),
    }
}

/// Records the decoding speed of a sequence that finished with `generated` new tokens, its job
/// having started at `started`.
fn observe_speed(generated: usize, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    if generated > 0 && secs > 0.0 {
        crate::metrics::get()
            .generation_tokens_per_second
            .observe(generated as f64 / secs);
    }
}

/// Chooses the next token of each running sequence of `job` and sends it.
fn select<C: Clone>(job: &mut Job<C>) {
    let mut events = Vec::new();
    for seq in job.seqs.iter_mut().filter(|s| !s.done) {
        let mut scores = std::mem::take(&mut seq.logits);
        seq.processor.process_distribution(&seq.ids, &mut scores);
        job.extra.apply(&seq.ids, &mut scores, seq.stop.max_len);
        let reported = job.top_logprobs.map(|k| (log_softmax(&scores), k));
        seq.processor.truncate(&mut scores);
        let token = pick(&scores, seq.processor.samples(), &mut job.rng);
        let logprob = log_softmax(&scores)
            .get(token as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        if let Some((distribution, k)) = reported {
            events.push(GenEvent::Logprobs {
                sequence: seq.index,
                logprob: distribution
                    .get(token as usize)
                    .copied()
                    .unwrap_or(f32::NEG_INFINITY),
                top: best(&distribution, k),
            });
        }
        seq.ids.push(token);
        crate::metrics::get().generated_tokens.inc();
        let by_text = seq.text_stop.as_mut().is_some_and(|t| t.push(token));
        let last = seq.stop.check(&seq.ids).is_some() || by_text;
        events.push(GenEvent::Token {
            sequence: seq.index,
            token,
            logprob,
            last,
        });
        if last {
            seq.done = true;
            seq.cache = None;
            observe_speed(seq.ids.len() - seq.prompt_len, job.started);
            events.push(GenEvent::Finished {
                sequence: seq.index,
                tokens: seq.ids[seq.prompt_len..].to_vec(),
            });
        }
    }
    for beams in job.beams.iter_mut().filter(|b| !b.done) {
        let running = beams.search.running().to_vec();
        let extra = &job.extra;
        let log_probs: Vec<Vec<f32>> = beams
            .logits
            .iter()
            .zip(&running)
            .map(|(logits, ids)| {
                let mut lp = log_softmax(logits);
                beams.processor.process(ids, &mut lp);
                extra.apply(ids, &mut lp, beams.stop.max_len);
                lp
            })
            .collect();
        let parents = beams.search.step(&log_probs, &beams.stop, &mut job.rng);
        crate::metrics::get()
            .generated_tokens
            .inc_by(beams.caches.len() as u64);
        if beams.search.is_done() {
            beams.done = true;
            beams.caches.clear();
            for (k, ids) in beams.search.best(beams.count).into_iter().enumerate() {
                observe_speed(ids.len().saturating_sub(beams.prompt_len), job.started);
                // Finished hypotheses hold the prompt too.
                events.push(GenEvent::Finished {
                    sequence: beams.first + k,
                    tokens: ids[beams.prompt_len.min(ids.len())..].to_vec(),
                });
            }
        } else {
            beams.caches = parents.iter().map(|&p| beams.caches[p].clone()).collect();
        }
    }
    for event in events {
        job.send(event);
    }
}

/// The `k` best entries of a log-probability row, best first.
fn best(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut order: Vec<usize> = (0..logprobs.len()).collect();
    let k = k.min(order.len());
    if k == 0 {
        return Vec::new();
    }
    order.select_nth_unstable_by(k - 1, |&a, &b| logprobs[b].total_cmp(&logprobs[a]));
    order.truncate(k);
    order.sort_by(|&a, &b| logprobs[b].total_cmp(&logprobs[a]).then(a.cmp(&b)));
    order.into_iter().map(|i| (i as u32, logprobs[i])).collect()
}

/// Runs one decode step for every running row of every job, `max_batch_rows` rows a pass, the
/// prompts of the jobs just admitted in the first pass.
fn step_all<G: Generator>(
    model: &mut G,
    shared: &Shared,
    panic_next: &Cell<bool>,
    jobs: &mut [Job<G::Cache>],
) {
    // (job index, the last token, the cache) of every running row, in a fixed order; the
    // prompts of the waiting jobs.
    let mut owners = Vec::new();
    let mut steps: Vec<Next<'_, G::Cache>> = Vec::new();
    let mut prompt_owners = Vec::new();
    let mut prompts: Vec<(&[u32], &GenerateSpec)> = Vec::new();
    for (j, job) in jobs.iter_mut().enumerate() {
        let Job {
            request,
            spec,
            waiting,
            seqs,
            beams,
            failed,
            ..
        } = job;
        if *failed {
            continue;
        }
        if *waiting {
            for row in &request.rows {
                prompt_owners.push(j);
                prompts.push((&row.ids, &*spec));
            }
        }
        for seq in seqs.iter_mut().filter(|s| !s.done) {
            let Seq { ids, cache, .. } = seq;
            if let (Some(&token), Some(cache)) = (ids.last(), cache.as_mut()) {
                owners.push(j);
                steps.push(Next { token, cache });
            }
        }
        for beams in beams.iter_mut().filter(|b| !b.done) {
            let Beams { search, caches, .. } = beams;
            for (ids, cache) in search.running().iter().zip(caches.iter_mut()) {
                if let Some(&token) = ids.last() {
                    owners.push(j);
                    steps.push(Next { token, cache });
                }
            }
        }
    }
    if steps.is_empty() && prompts.is_empty() {
        return;
    }
    let mut requests = owners.clone();
    requests.extend(&prompt_owners);
    requests.sort_unstable();
    requests.dedup();
    tracing::debug!(
        requests = requests.len(),
        rows = steps.len(),
        prompts = prompts.len(),
        "decode step"
    );
    let chunk = shared.config.max_batch_rows.max(1);
    let mut logits: Vec<Option<Vec<f32>>> = Vec::with_capacity(steps.len());
    let mut failures: Vec<(usize, InferError)> = Vec::new();
    let mut starts: Vec<Option<Start<G::Cache>>> = Vec::with_capacity(prompts.len());
    let mut offset = 0;
    let mut took = std::time::Duration::ZERO;
    let mut passes: Vec<&mut [Next<'_, G::Cache>]> = steps.chunks_mut(chunk).collect();
    if passes.is_empty() {
        passes.push(&mut []);
    }
    for (p, pass) in passes.into_iter().enumerate() {
        let len = pass.len();
        let new: &[(&[u32], &GenerateSpec)] = if p == 0 { &prompts } else { &[] };
        let t = Instant::now();
        let (started, stepped) = run_pass(model, shared, panic_next, new, pass);
        took += t.elapsed();
        for (&j, start) in prompt_owners.iter().zip(&started).filter(|_| p == 0) {
            if let Err(err) = start {
                failures.push((j, err.clone()));
            }
        }
        starts.extend(started.into_iter().map(Result::ok));
        match stepped {
            Ok(rows) if rows.len() == len => logits.extend(rows.into_iter().map(Some)),
            Ok(_) => {
                failures.extend(owners[offset..offset + len].iter().map(|&j| {
                    (
                        j,
                        InferError::BadRequest {
                            reason: "the model answered a different number of rows".into(),
                        },
                    )
                }));
                logits.extend(std::iter::repeat_n(None, len));
            }
            Err(err) => {
                failures.extend(
                    owners[offset..offset + len]
                        .iter()
                        .map(|&j| (j, err.clone())),
                );
                logits.extend(std::iter::repeat_n(None, len));
            }
        }
        offset += len;
    }
    drop(steps);
    drop(prompts);
    for &j in &requests {
        jobs[j].add_inference(took);
    }
    // Hand the logits back in the same order.
    let mut next = logits.into_iter();
    for job in jobs.iter_mut().filter(|j| !j.failed) {
        for seq in job.seqs.iter_mut().filter(|s| !s.done && s.cache.is_some()) {
            seq.logits = next.next().flatten().unwrap_or_default();
        }
        for beams in job.beams.iter_mut().filter(|b| !b.done) {
            for row in &mut beams.logits {
                *row = next.next().flatten().unwrap_or_default();
            }
        }
    }
    for (j, err) in failures {
        jobs[j].fail(err);
    }
    // Start the jobs whose prompts ran (all of a job's prompts, or it failed above).
    let mut starts = starts.into_iter();
    for (j, job) in jobs.iter_mut().enumerate() {
        if !job.waiting {
            continue;
        }
        let mine: Vec<Option<Start<G::Cache>>> = prompt_owners
            .iter()
            .filter(|&&o| o == j)
            .map(|_| starts.next().flatten())
            .collect();
        if job.failed {
            continue;
        }
        if let Some(all) = mine.into_iter().collect::<Option<Vec<_>>>() {
            begin(job, all);
        }
    }
}

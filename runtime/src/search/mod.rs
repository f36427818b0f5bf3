//! Generation over an encoder-decoder model with the shared, task-independent machinery of
//! `crate::generate` (parameters, logits processors and sampling, stopping rules, and
//! transformers 4.51.3's vectorised beam search): encode the source once, then step the decoder
//! one token per row with its KV cache — greedy decoding (or sampling) as transformers'
//! `_sample`, beam search with the beams as decoder rows and the cache reordered by the beams
//! each step continues. The encoder-decoder-only processors (`bad_words_ids`, forced BOS/EOS)
//! are in `processors`.
//!
//! A search runs one source at a time (no padding). `check` runs before every step: an error
//! (the request was cancelled, or its deadline passed) ends the search there.

pub mod processors;

use candle_core::Tensor;

use crate::generate::logits::{self, Rng};
use crate::generate::{BeamSearch, GenerationParams, LogitsProcessor, StopRule};
use crate::models::ModelError;
use crate::models::seq2seq::Seq2SeqModel;

pub use processors::EncDecProcessors;

/// The decoder "prompt": the start token.
const PROMPT_LEN: usize = 1;

/// The resolved settings of one search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// The shared generation parameters (lengths, beams, penalties, sampling, EOS).
    pub params: GenerationParams,
    /// The first decoder input.
    pub decoder_start_token_id: u32,
    /// The encoder-decoder processors.
    pub extra: EncDecProcessors,
}

impl SearchConfig {
    /// Most decoder ids, the start token included.
    pub fn max_length(&self) -> usize {
        self.params.max_total_len(PROMPT_LEN)
    }
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<candle_core::Error> for SearchError {
    fn from(e: candle_core::Error) -> Self {
        Self::Model(ModelError::Candle(e))
    }
}

/// Runs the search for one source sequence; returns `num_return_sequences` decoder id
/// sequences (start token first), best first. `check` is called before each decoder step; its
/// error ends the search there.
pub fn generate<E>(
    model: &dyn Seq2SeqModel,
    source: &[u32],
    config: &SearchConfig,
    check: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Result<Vec<Vec<u32>>, E>, SearchError> {
    let encoder = model.encode(source)?;
    let mut rng = config.params.seed.map_or_else(Rng::unseeded, Rng::seeded);
    if config.params.num_beams <= 1 {
        // Sampling returns `num_return_sequences` independent draws; greedy returns one.
        let mut out = Vec::with_capacity(config.params.num_return_sequences);
        for _ in 0..config.params.num_return_sequences {
            match greedy(model, &encoder, config, &mut rng, check)? {
                Ok(ids) => out.push(ids),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out))
    } else {
        beam(model, &encoder, config, &mut rng, check)
    }
}

fn rows(logits: &Tensor) -> Result<Vec<Vec<f32>>, SearchError> {
    Ok(logits.to_vec2::<f32>()?)
}

fn stop_rule(config: &SearchConfig) -> StopRule {
    StopRule {
        eos: config.params.eos_token_ids.clone(),
        max_len: config.max_length(),
        sequences: Vec::new(),
    }
}

/// transformers' `_sample`: processed logits, argmax (or a draw when sampling) each step.
fn greedy<E>(
    model: &dyn Seq2SeqModel,
    encoder: &Tensor,
    config: &SearchConfig,
    rng: &mut Rng,
    check: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Result<Vec<u32>, E>, SearchError> {
    let processors = LogitsProcessor::new(&config.params, PROMPT_LEN);
    let stop = stop_rule(config);
    let max_length = config.max_length();
    let mut ids = vec![config.decoder_start_token_id];
    let mut cache = model.new_cache();
    loop {
        if let Err(e) = check() {
            return Ok(Err(e));
        }
        let last = *ids.last().expect("never empty");
        let logits = model.decode_step(&[last], encoder, &mut cache)?;
        let mut scores = rows(&logits)?.swap_remove(0);
        processors.process(&ids, &mut scores);
        config.extra.apply(&ids, &mut scores, max_length);
        ids.push(logits::pick(&scores, processors.samples(), rng));
        if stop.check(&ids).is_some() {
            return Ok(Ok(ids));
        }
    }
}

/// transformers' `_beam_search` (`generate::BeamSearch`) on the decoder, the cache reordered
/// by the beams continued each step.
fn beam<E>(
    model: &dyn Seq2SeqModel,
    encoder: &Tensor,
    config: &SearchConfig,
    rng: &mut Rng,
    check: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Result<Vec<Vec<u32>>, E>, SearchError> {
    let params = &config.params;
    let nb = params.num_beams;
    let max_length = config.max_length();
    let processors = LogitsProcessor::new(params, PROMPT_LEN);
    let stop = stop_rule(config);
    let (_, s, d) = encoder.dims3()?;
    let encoder = encoder.broadcast_as((nb, s, d))?.contiguous()?;
    let mut search = BeamSearch::new(&[config.decoder_start_token_id], params, max_length);
    let mut cache = model.new_cache();
    while !search.is_done() {
        if let Err(e) = check() {
            return Ok(Err(e));
        }
        let running = search.running();
        let last: Vec<u32> = running
            .iter()
            .map(|r| *r.last().expect("never empty"))
            .collect();
        let logits = model.decode_step(&last, &encoder, &mut cache)?;
        let mut log_probs = Vec::with_capacity(nb);
        for (ids, row) in running.iter().zip(rows(&logits)?) {
            let mut row = logits::log_softmax(&row);
            processors.process(ids, &mut row);
            config.extra.apply(ids, &mut row, max_length);
            log_probs.push(row);
        }
        let parents: Vec<u32> = search
            .step(&log_probs, &stop, rng)
            .into_iter()
            .map(|p| p as u32)
            .collect();
        cache.reorder(&parents)?;
    }
    Ok(Ok(search.best(params.num_return_sequences)))
}

#[cfg(test)]
mod tests;

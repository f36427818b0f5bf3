//! Search over an encoder-decoder model: greedy decoding and beam search exactly as
//! transformers 4.51.3's `_sample` (without sampling) and its vectorised `_beam_search`: the
//! top `2 × num_beams` continuations of all beams each step, finished hypotheses scored by
//! `sum log p / generated_len ^ length_penalty` and kept in a `num_beams`-best list, the
//! `early_stopping` semantics (`true`: stop once `num_beams` hypotheses are finished; `false`:
//! stop when the best running beam, scored at the current length, cannot beat the worst finished
//! one; `"never"`: the same at the best reachable length), and the stop when every candidate hits
//! a stopping rule (EOS or `max_length`).
//!
//! A search runs one source at a time: its decoder rows are the beams (no padding). The model
//! is stepped one token per row; the KV cache is reordered by the chosen beams. `check` runs
//! before every step: an error (the request was cancelled, or its deadline passed) ends the
//! search there.

pub mod processors;

use candle_core::Tensor;

use crate::models::ModelError;
use crate::models::seq2seq::Seq2SeqModel;

pub use processors::Processors;

/// `early_stopping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// `true`.
    True,
    /// `false` (the default).
    False,
    /// `"never"`.
    Never,
}

/// The resolved settings of one search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// Most decoder ids, the start token included.
    pub max_length: usize,
    /// Beams (1: greedy).
    pub num_beams: usize,
    /// Exponent of the length in the score of a finished hypothesis.
    pub length_penalty: f32,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
    /// Hypotheses returned (≤ `num_beams`).
    pub num_return_sequences: usize,
    /// The first decoder input.
    pub decoder_start_token_id: u32,
    /// Tokens that end a hypothesis.
    pub eos: Vec<u32>,
    /// Score processors.
    pub processors: Processors,
}

/// Why a search stopped early, or failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The caller's check refused the next step (cancelled, deadline).
    #[error("generation stopped: {0}")]
    Stopped(String),
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
/// sequences (start token first), best first. `check` is called before each decoder step.
pub fn generate<E>(
    model: &dyn Seq2SeqModel,
    source: &[u32],
    config: &SearchConfig,
    check: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Result<Vec<Vec<u32>>, E>, SearchError> {
    let encoder = model.encode(source)?;
    if config.num_beams <= 1 {
        greedy(model, &encoder, config, check)
    } else {
        beam(model, &encoder, config, check)
    }
}

fn rows(logits: &Tensor) -> Result<Vec<Vec<f32>>, SearchError> {
    Ok(logits.to_vec2::<f32>()?)
}

fn greedy<E>(
    model: &dyn Seq2SeqModel,
    encoder: &Tensor,
    config: &SearchConfig,
    check: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Result<Vec<Vec<u32>>, E>, SearchError> {
    let mut ids = vec![config.decoder_start_token_id];
    let mut cache = model.new_cache();
    while ids.len() < config.max_length {
        if let Err(e) = check() {
            return Ok(Err(e));
        }
        let last = *ids.last().expect("never empty");
        let logits = model.decode_step(&[last], encoder, &mut cache)?;
        let mut scores = rows(&logits)?.swap_remove(0);
        config.processors.apply(&ids, &mut scores);
        let next = argmax(&scores);
        ids.push(next);
        if config.eos.contains(&next) {
            break;
        }
    }
    Ok(Ok(vec![ids]))
}

/// The first index of the largest value (torch.argmax).
fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] || (scores[best].is_nan() && !s.is_nan()) {
            best = i;
        }
    }
    best as u32
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let cmp = |a: &usize, b: &usize| {
        values[*b]
            .partial_cmp(&values[*a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

/// A finished-hypothesis slot.
#[derive(Debug, Clone)]
struct Finished {
    ids: Vec<u32>,
    score: f32,
    done: bool,
}

/// Large negative score that marks a slot unusable (transformers' `-1.0e9`).
const NEG: f32 = -1.0e9;

fn beam<E>(
    model: &dyn Seq2SeqModel,
    encoder: &Tensor,
    config: &SearchConfig,
    check: &mut dyn FnMut() -> Result<(), E>,
) -> Result<Result<Vec<Vec<u32>>, E>, SearchError> {
    let nb = config.num_beams;
    let prompt_len = 1usize;
    let keep = std::cmp::max(2, 1 + config.eos.len()) * nb;
    let (_, s, d) = encoder.dims3()?;
    let encoder = encoder.broadcast_as((nb, s, d))?.contiguous()?;
    let mut running: Vec<Vec<u32>> = vec![vec![config.decoder_start_token_id]; nb];
    let mut running_scores: Vec<f32> = (0..nb).map(|i| if i == 0 { 0.0 } else { NEG }).collect();
    let mut finished: Vec<Finished> = running
        .iter()
        .map(|ids| Finished {
            ids: ids.clone(),
            score: NEG,
            done: false,
        })
        .collect();
    let mut cache = model.new_cache();
    let mut cur_len = prompt_len;
    loop {
        if let Err(e) = check() {
            return Ok(Err(e));
        }
        let last: Vec<u32> = running.iter().map(|r| *r.last().expect("never empty")).collect();
        let logits = model.decode_step(&last, &encoder, &mut cache)?;
        let mut scores = rows(&logits)?;
        let vocab = scores[0].len();
        let mut flat = Vec::with_capacity(nb * vocab);
        for (i, row) in scores.iter_mut().enumerate() {
            processors::log_softmax(row);
            config.processors.apply(&running[i], row);
            flat.extend(row.iter().map(|&x| x + running_scores[i]));
        }
        // The top `keep` continuations over all beams.
        let top = top_k(&flat, keep);
        let cand: Vec<(usize, u32, f32)> = top
            .iter()
            .map(|&i| (i / vocab, (i % vocab) as u32, flat[i]))
            .collect();
        let hits: Vec<bool> = cand
            .iter()
            .map(|&(_, token, _)| config.eos.contains(&token) || cur_len + 1 >= config.max_length)
            .collect();
        // Running beams for the next step: the best candidates that did not stop.
        let running_logp: Vec<f32> = cand
            .iter()
            .zip(&hits)
            .map(|(&(_, _, lp), &hit)| if hit { lp + NEG } else { lp })
            .collect();
        let next = top_k(&running_logp, nb);
        // Finished hypotheses: merge the best `nb` candidates that just stopped.
        let denom = ((cur_len + 1 - prompt_len) as f64).powf(f64::from(config.length_penalty)) as f32;
        let all_done = finished.iter().all(|f| f.done) && config.early_stopping == EarlyStopping::True;
        let mut merged: Vec<Finished> = finished.clone();
        for (k, &(b, token, lp)) in cand.iter().enumerate() {
            let just_finished = hits[k] && k < nb;
            let mut score = lp / denom;
            if all_done {
                score += NEG;
            }
            if !just_finished {
                score += NEG;
            }
            let mut ids = running[b].clone();
            ids.push(token);
            merged.push(Finished {
                ids,
                score,
                done: just_finished,
            });
        }
        let merged_scores: Vec<f32> = merged.iter().map(|f| f.score).collect();
        finished = top_k(&merged_scores, nb)
            .into_iter()
            .map(|i| merged[i].clone())
            .collect();
        let sources: Vec<u32> = next.iter().map(|&k| cand[k].0 as u32).collect();
        running = next
            .iter()
            .map(|&k| {
                let mut ids = running[cand[k].0].clone();
                ids.push(cand[k].1);
                ids
            })
            .collect();
        running_scores = next.iter().map(|&k| running_logp[k]).collect();
        cache.reorder(&sources)?;
        cur_len += 1;
        // transformers' `_beam_search_has_unfinished_sequences`.
        let best_len = if config.early_stopping == EarlyStopping::Never && config.length_penalty > 0.0 {
            config.max_length - prompt_len
        } else {
            cur_len - prompt_len
        };
        let best_possible =
            running_scores[0] / (best_len as f64).powf(f64::from(config.length_penalty)) as f32;
        let worst_finished = finished
            .iter()
            .map(|f| f.score)
            .fold(f32::INFINITY, f32::min);
        let improvement_possible = finished
            .iter()
            .any(|f| best_possible > if f.done { worst_finished } else { NEG });
        let exists_open = !(finished.iter().all(|f| f.done)
            && config.early_stopping == EarlyStopping::True);
        let valid_continuations = !hits.iter().all(|&h| h);
        if !(improvement_possible && exists_open && valid_continuations) {
            break;
        }
    }
    Ok(Ok(finished
        .into_iter()
        .take(config.num_return_sequences)
        .map(|f| f.ids)
        .collect()))
}

#[cfg(test)]
mod tests;

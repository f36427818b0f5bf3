//! Beam search for one input, as transformers 4.51's vectorised `_beam_search` does it: every
//! step keeps the `max(2, 1 + #eos) × num_beams` best continuations of all running beams
//! (accumulated log-probabilities), continues the `num_beams` best that did not stop, and merges
//! the stopping ones that rank among the first `num_beams` into the finished hypotheses (score
//! = log-probability / generated length^`length_penalty`). `early_stopping` decides when no
//! running beam can improve on the finished ones. With `do_sample`, the continuations are drawn
//! (without replacement) instead of taken best first.
//!
//! Model-free: the caller runs the model on [`BeamSearch::running`], hands the processed
//! log-probabilities of each beam to [`BeamSearch::step`], and reorders its caches by the
//! parents it returns. Decoder-only and encoder-decoder models use it alike.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/generation/utils.py#L3751

use super::logits::{Rng, softmax};
use super::params::{EarlyStopping, GenerationParams};
use super::stop::StopRule;

/// The score transformers gives a beam that is not there.
const NONE: f32 = -1.0e9;

/// One finished-hypothesis slot.
#[derive(Debug, Clone)]
struct Slot {
    ids: Vec<u32>,
    score: f32,
    finished: bool,
}

/// The beam search state of one input.
#[derive(Debug, Clone)]
pub struct BeamSearch {
    num_beams: usize,
    beams_to_keep: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
    do_sample: bool,
    prompt_len: usize,
    max_len: usize,
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    slots: Vec<Slot>,
    done: bool,
}

impl BeamSearch {
    /// Starts from `prompt` (the decoder's sequence so far) with `params.num_beams` beams and
    /// a total length limit of `max_len`.
    pub fn new(prompt: &[u32], params: &GenerationParams, max_len: usize) -> Self {
        let n = params.num_beams.max(1);
        let mut running_scores = vec![NONE; n];
        running_scores[0] = 0.0;
        Self {
            num_beams: n,
            beams_to_keep: (1 + params.eos_token_ids.len()).max(2) * n,
            length_penalty: params.length_penalty,
            early_stopping: params.early_stopping,
            do_sample: params.do_sample,
            prompt_len: prompt.len(),
            max_len,
            running: vec![prompt.to_vec(); n],
            running_scores,
            slots: vec![
                Slot {
                    ids: Vec::new(),
                    score: NONE,
                    finished: false,
                };
                n
            ],
            done: false,
        }
    }

    /// The running beams' sequences (prompt included), whose next-token log-probabilities
    /// [`step`](Self::step) needs, in this order.
    pub fn running(&self) -> &[Vec<u32>] {
        &self.running
    }

    /// Whether the search is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Advances by one token. `log_probs[b]` are the processed log-probabilities of running
    /// beam `b`. Returns, for each new running beam, the index of the beam it continues
    /// (reorder the caches so) — its new token is the last of `running()[i]`.
    pub fn step(&mut self, log_probs: &[Vec<f32>], stop: &StopRule, rng: &mut Rng) -> Vec<usize> {
        let vocab = log_probs.first().map_or(0, Vec::len);
        let cur_len = self.running[0].len();
        let mut accumulated = Vec::with_capacity(self.num_beams * vocab);
        for (b, row) in log_probs.iter().enumerate() {
            accumulated.extend(row.iter().map(|&l| l + self.running_scores[b]));
        }
        let keep = self.beams_to_keep.min(accumulated.len());
        let top: Vec<usize> = if self.do_sample {
            let mut weights = softmax(&accumulated);
            (0..keep)
                .map(|_| {
                    let i = rng.sample(&weights);
                    weights[i] = 0.0;
                    i
                })
                .collect()
        } else {
            let mut order: Vec<usize> = (0..accumulated.len()).collect();
            let cmp = |a: &usize, b: &usize| accumulated[*b].total_cmp(&accumulated[*a]);
            if keep < order.len() {
                order.select_nth_unstable_by(keep, cmp);
                order.truncate(keep);
            }
            order.sort_by(cmp);
            order
        };
        // The candidates: parent beam, sequence, accumulated score, whether it stops.
        let candidates: Vec<(usize, Vec<u32>, f32, bool)> = top
            .iter()
            .map(|&i| {
                let (beam, token) = (i / vocab, (i % vocab) as u32);
                let mut ids = self.running[beam].clone();
                ids.push(token);
                let hits = stop.check(&ids).is_some();
                (beam, ids, accumulated[i], hits)
            })
            .collect();
        // Next running beams: the best that did not stop.
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        let running_score = |k: usize| candidates[k].2 + if candidates[k].3 { NONE } else { 0.0 };
        order.sort_by(|&a, &b| running_score(b).total_cmp(&running_score(a)));
        order.truncate(self.num_beams);
        let parents: Vec<usize> = order.iter().map(|&k| candidates[k].0).collect();
        self.running = order.iter().map(|&k| candidates[k].1.clone()).collect();
        self.running_scores = order.iter().map(|&k| running_score(k)).collect();
        // Finished hypotheses: the stopping ones among the first `num_beams` candidates.
        let generated = (cur_len + 1 - self.prompt_len) as f32;
        let full =
            self.slots.iter().all(|s| s.finished) && self.early_stopping == EarlyStopping::True;
        let mut merged = std::mem::take(&mut self.slots);
        for (k, (_, ids, score, hits)) in candidates.iter().enumerate() {
            let just_finished = *hits && k < self.num_beams;
            let mut s = score / generated.powf(self.length_penalty);
            if full {
                s += NONE;
            }
            if !just_finished {
                s += NONE;
            }
            merged.push(Slot {
                ids: ids.clone(),
                score: s,
                finished: just_finished,
            });
        }
        merged.sort_by(|a, b| b.score.total_cmp(&a.score));
        merged.truncate(self.num_beams);
        self.slots = merged;
        // Whether to go on.
        let cur_len = cur_len + 1;
        let best_len = if self.early_stopping == EarlyStopping::Never && self.length_penalty > 0.0 {
            self.max_len.saturating_sub(self.prompt_len)
        } else {
            cur_len - self.prompt_len
        } as f32;
        let best_running = self.running_scores[0] / best_len.powf(self.length_penalty);
        let min_slot = self
            .slots
            .iter()
            .map(|s| s.score)
            .fold(f32::INFINITY, f32::min);
        let improvement = self
            .slots
            .iter()
            .any(|s| best_running > if s.finished { min_slot } else { NONE });
        let all_finished = self.slots.iter().all(|s| s.finished);
        let open = !(all_finished && self.early_stopping == EarlyStopping::True);
        let valid = !candidates.iter().all(|c| c.3);
        self.done = !(improvement && open && valid);
        parents
    }

    /// The best `n` finished sequences (prompt included), best first.
    pub fn best(&self, n: usize) -> Vec<Vec<u32>> {
        self.slots.iter().take(n).map(|s| s.ids.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(num_beams: usize, eos: u32) -> GenerationParams {
        GenerationParams {
            num_beams,
            eos_token_ids: vec![eos],
            ..GenerationParams::default()
        }
    }

    fn ln(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn beams_follow_the_best_joint_probability_not_the_greedy_path() {
        // Vocabulary {0: eos, 1, 2}. Greedy takes 1 (0.5) then at best 0.45; beam search finds
        // 2 (0.4) then 2 (0.9): 0.36 > 0.225.
        let p = params(2, 0);
        let stop = StopRule {
            eos: vec![0],
            max_len: 3,
            sequences: vec![],
        };
        let mut search = BeamSearch::new(&[7], &p, 3);
        let mut rng = Rng::seeded(0);
        let first = ln(&[0.1, 0.5, 0.4]);
        let parents = search.step(&[first.clone(), first], &stop, &mut rng);
        assert_eq!(parents, [0, 0]);
        assert_eq!(search.running(), [vec![7, 1], vec![7, 2]]);
        assert!(!search.is_done());
        let after_1 = ln(&[0.2, 0.45, 0.35]);
        let after_2 = ln(&[0.05, 0.05, 0.9]);
        search.step(&[after_1, after_2], &stop, &mut rng);
        assert!(search.is_done(), "max length reached");
        assert_eq!(search.best(2), [vec![7, 2, 2], vec![7, 1, 1]]);
    }

    #[test]
    fn an_eos_among_the_best_finishes_a_hypothesis_with_a_length_penalty() {
        let mut p = params(2, 0);
        p.early_stopping = EarlyStopping::True;
        let stop = StopRule {
            eos: vec![0],
            max_len: 10,
            sequences: vec![],
        };
        let mut search = BeamSearch::new(&[7], &p, 10);
        let mut rng = Rng::seeded(0);
        // EOS is the best first token: a finished hypothesis of score ln(0.6)/1.
        let first = ln(&[0.6, 0.3, 0.1]);
        search.step(&[first.clone(), first], &stop, &mut rng);
        assert_eq!(search.running(), [vec![7, 1], vec![7, 2]]);
        assert!(!search.is_done());
        // Both running beams end now: two finished, early stopping ends the search.
        let row = ln(&[0.9, 0.05, 0.05]);
        search.step(&[row.clone(), row], &stop, &mut rng);
        assert!(search.is_done());
        // ln(0.6) = -0.51 beats ln(0.3 * 0.9) / 2 = -0.65.
        assert_eq!(search.best(2), [vec![7, 0], vec![7, 1, 0]]);
    }
}

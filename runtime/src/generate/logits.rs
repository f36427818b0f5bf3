//! Logits processors and warpers, in the order transformers 4.51 applies them
//! (`GenerationMixin._get_logits_processor`): repetition penalty, no-repeat n-gram, minimum
//! length (EOS suppressed), minimum new tokens, then, only when sampling, temperature, top-k,
//! top-p and typical-p. Each works on one row of scores and the token ids of that sequence so
//! far, so greedy, sampling and beam search (which feeds log-probabilities) share them.
//!
//! The OpenAI-compatible routes add `frequency_penalty` and `presence_penalty` (OpenAI's
//! semantics: counted over the generated tokens only, applied after the repetition penalty and
//! before the warpers). [`LogitsProcessor::process_distribution`] stops before the truncating
//! warpers (top-k, top-p, typical-p): its log-softmax is what `logprobs` report.
//!
//! Sampling draws from a seeded xoshiro256** generator: the same seed gives the same tokens
//! (not torch's generator: a seeded request is reproducible against sagebrush, not against
//! torch).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/generation/logits_process.py

use std::collections::HashMap;

use super::params::GenerationParams;

/// The processors of one sequence, built from its parameters and prompt length.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitsProcessor {
    repetition_penalty: f32,
    no_repeat_ngram_size: usize,
    min_length: usize,
    /// `(prompt length, min_new_tokens)`.
    min_new_tokens: Option<(usize, usize)>,
    eos: Vec<u32>,
    /// `(prompt length, frequency penalty, presence penalty)`, when either is not 0.
    openai_penalties: Option<(usize, f32, f32)>,
    warpers: Option<Warpers>,
}

/// The sampling-only warpers.
#[derive(Debug, Clone, PartialEq)]
struct Warpers {
    temperature: f32,
    top_k: usize,
    top_p: f32,
    typical_p: f32,
    min_keep: usize,
}

impl LogitsProcessor {
    /// The processors `params` turn on, for a sequence whose prompt has `prompt_len` tokens.
    pub fn new(params: &GenerationParams, prompt_len: usize) -> Self {
        // transformers: beam sampling keeps at least one more token than there are EOS ids.
        let min_keep = if params.num_beams > 1 {
            (params.eos_token_ids.len() + 1).max(2)
        } else {
            1
        };
        Self {
            repetition_penalty: params.repetition_penalty,
            no_repeat_ngram_size: params.no_repeat_ngram_size,
            min_length: params.min_length,
            min_new_tokens: params.min_new_tokens.map(|n| (prompt_len, n)),
            eos: params.eos_token_ids.clone(),
            openai_penalties: (params.frequency_penalty != 0.0 || params.presence_penalty != 0.0)
                .then_some((
                    prompt_len,
                    params.frequency_penalty,
                    params.presence_penalty,
                )),
            warpers: params.do_sample.then_some(Warpers {
                temperature: params.temperature,
                top_k: params.top_k,
                top_p: params.top_p,
                typical_p: params.typical_p,
                min_keep,
            }),
        }
    }

    /// Applies every processor to `scores` (logits, or log-probabilities in beam search) for
    /// the sequence `ids` (prompt included).
    pub fn process(&self, ids: &[u32], scores: &mut [f32]) {
        self.process_distribution(ids, scores);
        self.truncate(scores);
    }

    /// The processors that reshape the distribution: penalties, minimum lengths and the
    /// temperature (when sampling). What is left ([`truncate`](Self::truncate)) only removes
    /// tokens.
    pub fn process_distribution(&self, ids: &[u32], scores: &mut [f32]) {
        if self.repetition_penalty != 1.0 {
            repetition_penalty(ids, scores, self.repetition_penalty);
        }
        if let Some((prompt, frequency, presence)) = self.openai_penalties {
            frequency_presence_penalty(
                ids.get(prompt..).unwrap_or_default(),
                scores,
                frequency,
                presence,
            );
        }
        if self.no_repeat_ngram_size > 0 {
            no_repeat_ngram(ids, scores, self.no_repeat_ngram_size);
        }
        if self.min_length > 0 && ids.len() < self.min_length {
            suppress(scores, &self.eos);
        }
        if let Some((prompt, min_new)) = self.min_new_tokens
            && min_new > 0
            && ids.len().saturating_sub(prompt) < min_new
        {
            suppress(scores, &self.eos);
        }
        if let Some(w) = &self.warpers
            && w.temperature != 1.0
        {
            temperature(scores, w.temperature);
        }
    }

    /// The truncating warpers (top-k, top-p, typical-p), when sampling.
    pub fn truncate(&self, scores: &mut [f32]) {
        if let Some(w) = &self.warpers {
            if w.top_k != 0 {
                top_k(scores, w.top_k, w.min_keep);
            }
            if w.top_p < 1.0 {
                top_p(scores, w.top_p, w.min_keep);
            }
            if w.typical_p < 1.0 {
                typical_p(scores, w.typical_p, w.min_keep);
            }
        }
    }

    /// Whether the warpers (sampling) are on.
    pub fn samples(&self) -> bool {
        self.warpers.is_some()
    }
}

/// `RepetitionPenaltyLogitsProcessor`: each token already in the sequence has its score
/// divided by `penalty` when positive, multiplied when negative (once, however often it
/// occurs).
pub fn repetition_penalty(ids: &[u32], scores: &mut [f32], penalty: f32) {
    let mut seen = std::collections::HashSet::new();
    for &id in ids {
        let i = id as usize;
        if i < scores.len() && seen.insert(id) {
            let s = scores[i];
            scores[i] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// OpenAI's frequency and presence penalties: `logit[j] -= c[j] * frequency + (c[j] > 0) *
/// presence`, where `c[j]` counts token `j` in `generated` (the new tokens so far, the prompt
/// excluded).
// https://platform.openai.com/docs/advanced-usage/frequency-and-presence-penalties
pub fn frequency_presence_penalty(
    generated: &[u32],
    scores: &mut [f32],
    frequency: f32,
    presence: f32,
) {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for &id in generated {
        *counts.entry(id).or_default() += 1;
    }
    for (id, count) in counts {
        if let Some(s) = scores.get_mut(id as usize) {
            *s -= count as f32 * frequency + presence;
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: tokens that would complete an n-gram already in the
/// sequence get -inf.
pub fn no_repeat_ngram(ids: &[u32], scores: &mut [f32], n: usize) {
    let len = ids.len();
    if n == 0 || len + 1 < n {
        return;
    }
    let mut seen: HashMap<&[u32], Vec<u32>> = HashMap::new();
    for gram in ids.windows(n) {
        seen.entry(&gram[..n - 1]).or_default().push(gram[n - 1]);
    }
    let prefix = &ids[len + 1 - n..];
    if let Some(banned) = seen.get(prefix) {
        for &t in banned {
            if let Some(s) = scores.get_mut(t as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

/// Sets the scores of `tokens` to -inf (`MinLengthLogitsProcessor`,
/// `MinNewTokensLengthLogitsProcessor` suppress EOS this way).
pub fn suppress(scores: &mut [f32], tokens: &[u32]) {
    for &t in tokens {
        if let Some(s) = scores.get_mut(t as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// `TemperatureLogitsWarper`: scores / temperature.
pub fn temperature(scores: &mut [f32], t: f32) {
    for s in scores.iter_mut() {
        *s /= t;
    }
}

/// `TopKLogitsWarper`: scores below the k-th best get -inf (ties with it are kept).
pub fn top_k(scores: &mut [f32], k: usize, min_keep: usize) {
    let k = k.max(min_keep).min(scores.len());
    if k == 0 || k == scores.len() {
        return;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    for s in scores.iter_mut() {
        if *s < threshold {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Indices of `values` in ascending order of value.
fn ascending(values: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order
}

/// `TopPLogitsWarper`: in ascending order, tokens whose cumulative probability is <= 1 - p are
/// removed, keeping at least `min_keep` of the best.
pub fn top_p(scores: &mut [f32], p: f32, min_keep: usize) {
    let order = ascending(scores);
    let sorted: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
    let probs = softmax(&sorted);
    let keep_from = order.len().saturating_sub(min_keep);
    let mut cumulative = 0.0f32;
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[rank];
        if rank < keep_from && cumulative <= 1.0 - p {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// `TypicalLogitsWarper`: keeps the tokens whose information content is closest to the
/// distribution's entropy, up to mass `mass`.
pub fn typical_p(scores: &mut [f32], mass: f32, min_keep: usize) {
    let normalized = log_softmax(scores);
    let entropy: f32 = -normalized
        .iter()
        .map(|&l| {
            let v = l * l.exp();
            if v.is_nan() { 0.0 } else { v }
        })
        .sum::<f32>();
    let shifted: Vec<f32> = normalized.iter().map(|&l| (-l - entropy).abs()).collect();
    let order = ascending(&shifted);
    let sorted_logits: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
    let probs = softmax(&sorted_logits);
    let mut cumulative = 0.0f32;
    let mut last = 0usize;
    for p in &probs {
        cumulative += p;
        if cumulative < mass {
            last += 1;
        }
    }
    let last = last.min(order.len() - 1);
    let cutoff = shifted[order[last]];
    for (rank, &i) in order.iter().enumerate() {
        if rank >= min_keep && shifted[i] > cutoff {
            scores[i] = f32::NEG_INFINITY;
        }
    }
}

/// Softmax of a row (-inf entries are 0).
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Log-softmax of a row.
pub fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_sum = sum.ln() + max;
    scores.iter().map(|&s| s - log_sum).collect()
}

/// The index of the best score (the first of equal ones).
pub fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// A small seeded random generator (xoshiro256**), seeded through SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// The generator of `seed`.
    pub fn seeded(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// A generator seeded from the process's hash randomness (no `seed` given).
    pub fn unseeded() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Self::seeded(h.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Draws an index with probability proportional to `weights` (non-negative, not all 0).
    pub fn sample(&mut self, weights: &[f32]) -> usize {
        let total: f64 = weights.iter().map(|&w| f64::from(w.max(0.0))).sum();
        let target = self.next_f64() * total;
        let mut cumulative = 0.0f64;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                cumulative += f64::from(w);
                last = i;
                if cumulative > target {
                    return i;
                }
            }
        }
        last
    }
}

/// The next token of a row of processed scores: the best one, or a draw from their softmax
/// when `sample`.
pub fn pick(scores: &[f32], sample: bool, rng: &mut Rng) -> u32 {
    if sample {
        rng.sample(&softmax(scores)) as u32
    } else {
        argmax(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x == y) || (x - y).abs() < 1e-5, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_scores_once() {
        let mut s = vec![2.0, -1.0, 3.0, 0.5];
        repetition_penalty(&[0, 1, 1, 0], &mut s, 2.0);
        close(&s, &[1.0, -2.0, 3.0, 0.5]);
    }

    #[test]
    fn frequency_and_presence_penalties_follow_openai_over_the_generated_tokens() {
        // Generated: token 1 three times, token 3 once; tokens 0 and 2 never.
        // logit[j] - c[j] * 0.5 - (c[j] > 0) * 0.25:
        //   1: 2.0 - 1.5 - 0.25 = 0.25;  3: -1.0 - 0.5 - 0.25 = -1.75.
        let mut s = vec![1.0, 2.0, 0.5, -1.0];
        frequency_presence_penalty(&[1, 3, 1, 1], &mut s, 0.5, 0.25);
        close(&s, &[1.0, 0.25, 0.5, -1.75]);
        // Negative values raise the logits: 2.0 + 3 * 1.0 + 0.5 = 5.5.
        let mut s = vec![1.0, 2.0];
        frequency_presence_penalty(&[1, 1, 1], &mut s, -1.0, -0.5);
        close(&s, &[1.0, 5.5]);
        // Through the processor, the prompt's tokens do not count: prompt [1, 1], new [3].
        let params = GenerationParams {
            frequency_penalty: 1.0,
            presence_penalty: 0.5,
            ..GenerationParams::default()
        };
        let p = LogitsProcessor::new(&params, 2);
        let mut s = vec![0.0; 4];
        p.process(&[1, 1, 3], &mut s);
        close(&s, &[0.0, 0.0, 0.0, -1.5]);
    }

    #[test]
    fn the_distribution_stops_before_the_truncating_warpers() {
        let params = GenerationParams {
            do_sample: true,
            temperature: 0.5,
            top_k: 1,
            ..GenerationParams::default()
        };
        let p = LogitsProcessor::new(&params, 0);
        let mut s = vec![1.0, 2.0];
        p.process_distribution(&[], &mut s);
        close(&s, &[2.0, 4.0]);
        p.truncate(&mut s);
        close(&s, &[NEG, 4.0]);
    }

    #[test]
    fn no_repeat_ngram_bans_completions_of_seen_ngrams() {
        // Bigrams seen: (1,2), (2,3), (3,1); the sequence ends in 1, so 2 is banned.
        let mut s = vec![0.0; 5];
        no_repeat_ngram(&[1, 2, 3, 1], &mut s, 2);
        close(&s, &[0.0, 0.0, NEG, 0.0, 0.0]);
        // Trigrams: (1,2,3), (2,3,1); the sequence ends in (3,1): nothing seen after it.
        let mut s = vec![0.0; 5];
        no_repeat_ngram(&[1, 2, 3, 1], &mut s, 3);
        close(&s, &[0.0; 5]);
        // Too short to complete any n-gram.
        let mut s = vec![0.0; 3];
        no_repeat_ngram(&[1], &mut s, 3);
        close(&s, &[0.0; 3]);
    }

    #[test]
    fn temperature_divides() {
        let mut s = vec![1.0, -2.0];
        temperature(&mut s, 0.5);
        close(&s, &[2.0, -4.0]);
    }

    #[test]
    fn top_k_keeps_the_k_best_and_ties() {
        let mut s = vec![1.0, 4.0, 3.0, 3.0, 0.0];
        top_k(&mut s, 2, 1);
        close(&s, &[NEG, 4.0, 3.0, 3.0, NEG]);
        // min_keep raises k.
        let mut s = vec![1.0, 4.0, 2.0];
        top_k(&mut s, 1, 2);
        close(&s, &[NEG, 4.0, 2.0]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probs of ln([0.5, 0.3, 0.2]) = [0.5, 0.3, 0.2]; ascending cumsum 0.2, 0.5, 1.0.
        let base = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = base.to_vec();
        top_p(&mut s, 0.7, 1); // remove cum <= 0.3: only the 0.2 token
        close(&s, &[base[0], base[1], NEG]);
        let mut s = base.to_vec();
        top_p(&mut s, 0.4, 1); // remove cum <= 0.6: 0.2 and 0.3 tokens
        close(&s, &[base[0], NEG, NEG]);
        let mut s = base.to_vec();
        top_p(&mut s, 0.4, 2); // but keep two
        close(&s, &[base[0], base[1], NEG]);
    }

    #[test]
    fn typical_p_keeps_tokens_closest_to_the_entropy() {
        // p = [0.5, 0.3, 0.2]: entropy H = 1.0297; |-ln p - H| = [0.3365, 0.1743, 0.5797].
        // Ascending: token1 (0.3), token0 (0.5), token2 (0.2); cumsum 0.3, 0.8, 1.0.
        let base = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = base.to_vec();
        typical_p(&mut s, 0.5, 1); // cum < 0.5: one entry, last_ind 1 -> cutoff token0's
        close(&s, &[base[0], base[1], NEG]);
        let mut s = base.to_vec();
        typical_p(&mut s, 0.2, 1); // cum < 0.2: none, last_ind 0 -> only token1
        close(&s, &[NEG, base[1], NEG]);
    }

    #[test]
    fn min_lengths_suppress_eos_until_reached() {
        let params = GenerationParams {
            eos_token_ids: vec![2],
            min_length: 4,
            ..GenerationParams::default()
        };
        let p = LogitsProcessor::new(&params, 2);
        let mut s = vec![0.0; 3];
        p.process(&[5, 6, 7], &mut s);
        close(&s, &[0.0, 0.0, NEG]);
        let mut s = vec![0.0; 3];
        p.process(&[5, 6, 7, 8], &mut s);
        close(&s, &[0.0; 3]);
        let params = GenerationParams {
            eos_token_ids: vec![2],
            min_new_tokens: Some(2),
            ..GenerationParams::default()
        };
        let p = LogitsProcessor::new(&params, 3);
        let mut s = vec![0.0; 3];
        p.process(&[5, 6, 7, 8], &mut s); // one new token
        close(&s, &[0.0, 0.0, NEG]);
        let mut s = vec![0.0; 3];
        p.process(&[5, 6, 7, 8, 9], &mut s);
        close(&s, &[0.0; 3]);
    }

    #[test]
    fn warpers_only_apply_when_sampling_in_order() {
        let greedy = GenerationParams {
            temperature: 0.5,
            top_k: 1,
            ..GenerationParams::default()
        };
        let mut s = vec![1.0, 2.0];
        LogitsProcessor::new(&greedy, 0).process(&[], &mut s);
        close(&s, &[1.0, 2.0]);
        let sampling = GenerationParams {
            do_sample: true,
            ..greedy
        };
        let mut s = vec![1.0, 2.0];
        LogitsProcessor::new(&sampling, 0).process(&[], &mut s);
        close(&s, &[NEG, 4.0]);
    }

    #[test]
    fn softmax_and_log_softmax_agree() {
        let s = [1.0, 2.0, 3.0];
        let p = softmax(&s);
        close(&p, &[0.090_030_57, 0.244_728_48, 0.665_240_94]);
        let l = log_softmax(&s);
        close(&l, &p.iter().map(|x| x.ln()).collect::<Vec<_>>());
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let weights = [0.1, 0.2, 0.3, 0.4];
        let draw = |seed| {
            let mut rng = Rng::seeded(seed);
            (0..32).map(|_| rng.sample(&weights)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // Zero weights are never drawn; frequencies follow the weights.
        let mut rng = Rng::seeded(1);
        let mut counts = [0usize; 4];
        for _ in 0..10_000 {
            counts[rng.sample(&[0.0, 0.25, 0.0, 0.75])] += 1;
        }
        assert_eq!(counts[0] + counts[2], 0);
        assert!((7_000..8_000).contains(&counts[3]), "{counts:?}");
    }
}

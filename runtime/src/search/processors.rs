//! The logits processors encoder-decoder search applies, in the order transformers 4.51.3's
//! `_get_logits_processor` builds them: repetition penalty, no-repeat n-gram, bad words, minimum
//! length, forced BOS, forced EOS. Each works on one row of scores (raw logits for greedy,
//! log-probabilities for beam search) given that row's decoder ids so far.

/// transformers' processors for one generation, configured once.
#[derive(Debug, Clone, PartialEq)]
pub struct Processors {
    /// `repetition_penalty` (1.0: off).
    pub repetition_penalty: f32,
    /// `no_repeat_ngram_size` (0: off).
    pub no_repeat_ngram_size: usize,
    /// `bad_words_ids` with any EOS-only entry removed.
    pub bad_words_ids: Vec<Vec<u32>>,
    /// EOS is banned while the decoder ids are shorter than this.
    pub min_length: usize,
    /// The EOS ids.
    pub eos: Vec<u32>,
    /// Forced as the first generated token.
    pub forced_bos: Option<u32>,
    /// Forced as the last token before `max_length`.
    pub forced_eos: Option<u32>,
    /// The decoder length limit (forced EOS applies at `max_length - 1`).
    pub max_length: usize,
}

impl Processors {
    /// Applies every processor to `scores` (one row over the vocabulary) for the decoder ids
    /// `ids`.
    pub fn apply(&self, ids: &[u32], scores: &mut [f32]) {
        let cur_len = ids.len();
        if self.repetition_penalty != 1.0 {
            repetition_penalty(ids, scores, self.repetition_penalty);
        }
        if self.no_repeat_ngram_size > 0 {
            for token in banned_ngram_tokens(ids, self.no_repeat_ngram_size) {
                if let Some(s) = scores.get_mut(token as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        for bad in &self.bad_words_ids {
            let Some((&last, prefix)) = bad.split_last() else {
                continue;
            };
            if ids.ends_with(prefix) {
                if let Some(s) = scores.get_mut(last as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        if cur_len < self.min_length {
            for &e in &self.eos {
                if let Some(s) = scores.get_mut(e as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(bos) = self.forced_bos.filter(|_| cur_len == 1) {
            force(scores, bos);
        }
        if let Some(eos) = self
            .forced_eos
            .filter(|_| cur_len + 1 == self.max_length)
        {
            force(scores, eos);
        }
    }
}

/// Every score `-inf` but `token`'s, which is 0.
fn force(scores: &mut [f32], token: u32) {
    scores.fill(f32::NEG_INFINITY);
    if let Some(s) = scores.get_mut(token as usize) {
        *s = 0.0;
    }
}

/// `RepetitionPenaltyLogitsProcessor`: each token already in `ids` has its score multiplied by
/// `penalty` when negative, divided by it otherwise.
pub fn repetition_penalty(ids: &[u32], scores: &mut [f32], penalty: f32) {
    let mut seen = std::collections::HashSet::new();
    for &id in ids {
        if !seen.insert(id) {
            continue;
        }
        if let Some(s) = scores.get_mut(id as usize) {
            *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: the tokens that would repeat an n-gram of `ids`.
pub fn banned_ngram_tokens(ids: &[u32], n: usize) -> Vec<u32> {
    let cur_len = ids.len();
    if cur_len + 1 < n {
        return Vec::new();
    }
    let prefix = &ids[cur_len + 1 - n..];
    ids.windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect()
}

/// `log_softmax` over one row, in f32 as torch computes it.
pub fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let log_sum = sum.ln();
    for x in row.iter_mut() {
        *x = *x - max - log_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_scores() {
        let mut scores = vec![2.0, -1.0, 3.0, 4.0];
        repetition_penalty(&[0, 1, 1], &mut scores, 2.0);
        assert_eq!(scores, [1.0, -2.0, 3.0, 4.0]);
    }

    #[test]
    fn no_repeat_ngram_bans_the_continuations_of_the_last_n_minus_1_tokens() {
        // bigrams: (5,6), (6,5), (5,7); last token 5 → 6 and 7 banned.
        assert_eq!(banned_ngram_tokens(&[5, 6, 5, 7, 5], 2), [6, 7]);
        // trigram (1,2,3) seen; ends with (1,2) → 3 banned.
        assert_eq!(banned_ngram_tokens(&[1, 2, 3, 1, 2], 3), [3]);
        assert!(banned_ngram_tokens(&[1], 3).is_empty());
        // n = 1 bans every token seen.
        assert_eq!(banned_ngram_tokens(&[4, 9], 1), [4, 9]);
    }

    #[test]
    fn min_length_forced_tokens_and_bad_words() {
        let p = Processors {
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            bad_words_ids: vec![vec![3], vec![1, 2]],
            min_length: 3,
            eos: vec![0],
            forced_bos: Some(2),
            forced_eos: None,
            max_length: 10,
        };
        let mut s = vec![0.5; 4];
        p.apply(&[1, 1], &mut s);
        // EOS banned (length 2 < 3), 3 always banned, 2 banned after 1.
        assert_eq!(s, [f32::NEG_INFINITY, 0.5, f32::NEG_INFINITY, f32::NEG_INFINITY]);
        let mut s = vec![0.5; 4];
        p.apply(&[1], &mut s);
        assert_eq!(s, [f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]);
        let p = Processors {
            forced_bos: None,
            forced_eos: Some(0),
            min_length: 0,
            bad_words_ids: vec![],
            ..p
        };
        let mut s = vec![0.5; 4];
        p.apply(&[1; 9], &mut s);
        assert_eq!(s, [0.0, f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY]);
    }

    #[test]
    fn log_softmax_matches_hand_values() {
        let mut row = vec![0.0, (2f32).ln()];
        log_softmax(&mut row);
        assert!((row[0] - (1.0f32 / 3.0).ln()).abs() < 1e-6);
        assert!((row[1] - (2.0f32 / 3.0).ln()).abs() < 1e-6);
    }
}

//! The logits processors encoder-decoder generation adds to the shared ones
//! (`generate::LogitsProcessor`: repetition penalty, no-repeat n-gram, minimum lengths,
//! sampling warpers): `bad_words_ids` (`NoBadWordsLogitsProcessor`), `forced_bos_token_id`
//! (`ForcedBOSTokenLogitsProcessor`: BART forces `<s>` first) and `forced_eos_token_id`
//! (`ForcedEOSTokenLogitsProcessor`: EOS as the last token before `max_length`). transformers
//! 4.51.3 applies them after the shared ones' suppressions and before the sampling warpers; as
//! they only set scores to -inf (or force one token), applying them after the whole shared list
//! gives the same scores when not sampling.

/// The encoder-decoder processors of one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncDecProcessors {
    /// `bad_words_ids`, without entries that are a single EOS token (transformers drops them).
    pub bad_words_ids: Vec<Vec<u32>>,
    /// Forced as the first generated token.
    pub forced_bos: Option<u32>,
    /// Forced as the last token before the length limit.
    pub forced_eos: Option<u32>,
}

impl EncDecProcessors {
    /// Applies them to `scores` for the decoder ids `ids` (start token included) of a
    /// generation whose decoder length limit is `max_length`.
    pub fn apply(&self, ids: &[u32], scores: &mut [f32], max_length: usize) {
        for bad in &self.bad_words_ids {
            let Some((&last, prefix)) = bad.split_last() else {
                continue;
            };
            if ids.ends_with(prefix)
                && let Some(s) = scores.get_mut(last as usize)
            {
                *s = f32::NEG_INFINITY;
            }
        }
        let cur_len = ids.len();
        if let Some(bos) = self.forced_bos.filter(|_| cur_len == 1) {
            force(scores, bos);
        }
        if let Some(eos) = self.forced_eos.filter(|_| cur_len + 1 == max_length) {
            force(scores, eos);
        }
    }
}

/// Every score -inf but `token`'s, which is 0.
fn force(scores: &mut [f32], token: u32) {
    scores.fill(f32::NEG_INFINITY);
    if let Some(s) = scores.get_mut(token as usize) {
        *s = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    #[test]
    fn bad_words_are_banned_after_their_prefix_and_single_ones_always() {
        let p = EncDecProcessors {
            bad_words_ids: vec![vec![3], vec![1, 2]],
            ..EncDecProcessors::default()
        };
        let mut s = vec![0.5; 4];
        p.apply(&[0, 1], &mut s, 10);
        assert_eq!(s, [0.5, 0.5, NEG, NEG]);
        let mut s = vec![0.5; 4];
        p.apply(&[0, 2], &mut s, 10);
        assert_eq!(s, [0.5, 0.5, 0.5, NEG]);
    }

    #[test]
    fn forced_bos_applies_at_the_first_step_and_forced_eos_at_the_last() {
        let p = EncDecProcessors {
            forced_bos: Some(2),
            forced_eos: Some(0),
            ..EncDecProcessors::default()
        };
        let mut s = vec![0.5; 4];
        p.apply(&[9], &mut s, 5);
        assert_eq!(s, [NEG, NEG, 0.0, NEG]);
        let mut s = vec![0.5; 4];
        p.apply(&[9, 2, 1], &mut s, 5);
        assert_eq!(s, [0.5; 4]);
        // 4 ids, limit 5: the next token is the last one.
        p.apply(&[9, 2, 1, 1], &mut s, 5);
        assert_eq!(s, [0.0, NEG, NEG, NEG]);
    }
}

//! Stopping rules of one sequence (transformers' `StoppingCriteriaList`): the last token is an
//! EOS token (`EosTokenCriteria`), the sequence reached its maximum length
//! (`MaxLengthCriteria`), or it ends with one of the stop token sequences (a multi-token stop
//! sequence; the text-generation pipeline's `stop_sequence` is transformers' EOS replacement,
//! see `pipelines::text_generation`).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/generation/stopping_criteria.py

/// When a sequence is done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopRule {
    /// Tokens that end the sequence.
    pub eos: Vec<u32>,
    /// Total length (prompt included) at which the sequence ends.
    pub max_len: usize,
    /// Token sequences that end the sequence when it ends with one of them.
    pub sequences: Vec<Vec<u32>>,
}

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Its last token is an EOS token.
    Eos,
    /// It reached the maximum length.
    Length,
    /// It ends with a stop sequence.
    StopSequence,
}

impl StopRule {
    /// Whether `ids` (the whole sequence, the new token last) is done, and why.
    pub fn check(&self, ids: &[u32]) -> Option<Stopped> {
        let last = ids.last()?;
        if self.eos.contains(last) {
            return Some(Stopped::Eos);
        }
        if self
            .sequences
            .iter()
            .any(|s| !s.is_empty() && ids.ends_with(s))
        {
            return Some(Stopped::StopSequence);
        }
        if ids.len() >= self.max_len {
            return Some(Stopped::Length);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_length_and_stop_sequences_end_a_sequence() {
        let rule = StopRule {
            eos: vec![0, 9],
            max_len: 5,
            sequences: vec![vec![3, 4]],
        };
        assert_eq!(rule.check(&[5, 6]), None);
        assert_eq!(rule.check(&[5, 9]), Some(Stopped::Eos));
        assert_eq!(rule.check(&[5, 3, 4]), Some(Stopped::StopSequence));
        assert_eq!(rule.check(&[4, 3]), None);
        assert_eq!(rule.check(&[1, 2, 3, 5, 6]), Some(Stopped::Length));
        assert_eq!(rule.check(&[]), None);
    }
}

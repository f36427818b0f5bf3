//! Stopping rules of one sequence (transformers' `StoppingCriteriaList`): the last token is an
//! EOS token (`EosTokenCriteria`), the sequence reached its maximum length
//! (`MaxLengthCriteria`), or it ends with one of the stop token sequences (a multi-token stop
//! sequence; the text-generation pipeline's `stop_sequence` is transformers' EOS replacement,
//! see `pipelines::text_generation`).
//!
//! Stop *strings* (OpenAI's `stop`, TGI's `stop`, issue #12) are text, not tokens: [`TextStop`]
//! decodes a sequence's new tokens after each step and ends it once the text contains one of
//! them, so generation stops early instead of running to the limit and being cut afterwards.
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/generation/stopping_criteria.py

use std::sync::Arc;

use crate::tokenizer::TextTokenizer;

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

/// The stop strings of a request and the tokenizer that turns its tokens into text.
#[derive(Clone)]
pub struct StopStrings {
    /// The strings (none empty).
    pub strings: Vec<String>,
    /// Decodes the tokens.
    pub tokenizer: Arc<TextTokenizer>,
}

impl std::fmt::Debug for StopStrings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopStrings")
            .field("strings", &self.strings)
            .finish_non_exhaustive()
    }
}

impl PartialEq for StopStrings {
    fn eq(&self, other: &Self) -> bool {
        self.strings == other.strings && Arc::ptr_eq(&self.tokenizer, &other.tokenizer)
    }
}

/// Tokens of the prompt decoded before the new ones, so that the first new token's text is
/// what it is in context (SentencePiece drops a leading space at the start of a text).
const CONTEXT: usize = 4;

/// One sequence's stop-string check.
#[derive(Debug, Clone)]
pub struct TextStop {
    strings: StopStrings,
    /// The last prompt tokens, then the new ones.
    ids: Vec<u32>,
    /// The decoded context's length in bytes.
    context_len: usize,
}

impl TextStop {
    /// The check of a sequence whose prompt is `prompt`.
    pub fn new(strings: StopStrings, prompt: &[u32]) -> Self {
        let ids = prompt[prompt.len().saturating_sub(CONTEXT)..].to_vec();
        let mut stop = Self {
            strings,
            ids,
            context_len: 0,
        };
        stop.context_len = stop.decode().len();
        stop
    }

    fn decode(&self) -> String {
        self.strings
            .tokenizer
            .inner()
            .decode(&self.ids, true)
            .unwrap_or_default()
    }

    /// Adds the sequence's new token; whether its new text now contains a stop string.
    pub fn push(&mut self, token: u32) -> bool {
        self.ids.push(token);
        let text = self.decode();
        let new = text.get(self.context_len..).unwrap_or(&text);
        self.strings
            .strings
            .iter()
            .any(|s| new.contains(s.as_str()))
    }
}

/// Where `text` must be cut: before the first stop string it contains.
pub fn first_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Streams text that must never show a stop string: text that could be the start of one is
/// held back until the next text tells, and nothing is let through after one.
#[derive(Debug, Clone, Default)]
pub struct StopHold {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopHold {
    /// A hold for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// The text that can be shown now that `text` follows what came before.
    pub fn push(&mut self, text: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(text);
        if let Some(at) = first_stop(&self.held, &self.stops) {
            self.stopped = true;
            let out = self.held[..at].to_owned();
            self.held.clear();
            return out;
        }
        // The longest end of the held text that begins a stop string stays held.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep);
        std::mem::replace(&mut self.held, rest)
    }

    /// Whether a stop string was seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn held_text_never_shows_a_stop_string() {
        let mut hold = StopHold::new(&["END".to_owned(), "\n\n".to_owned()]);
        assert_eq!(hold.push("Hello E"), "Hello ");
        assert_eq!(hold.push("N"), "");
        // Not a stop after all: the held text comes out.
        assert_eq!(hold.push("Ox"), "ENOx");
        assert_eq!(hold.push(" a\n"), " a");
        assert_eq!(hold.push("\nmore"), "");
        assert!(hold.stopped());
        assert_eq!(hold.push("after"), "");
        let mut hold = StopHold::new(&["stop".to_owned()]);
        assert_eq!(hold.push("one stop two"), "one ");
        let mut hold = StopHold::new(&[]);
        assert_eq!(hold.push("é"), "é");
        assert_eq!(first_stop("a, b. c", &[".".into(), ",".into()]), Some(1));
        assert_eq!(first_stop("abc", &["".into()]), None);
    }

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

//! Tokenization for the encoder pipelines: text to `tokenizers::Encoding`s the way
//! transformers' fast tokenizers do it for the pipelines: character offsets (Python slices strings by characters), truncation that leaves
//! room for the special tokens, and overflowing windows with a stride (question answering,
//! token classification with `stride`), and the length check with truncation off. Owns no
//! model, no padding and no batching (that is `infer`); serves contract §4 ("long inputs are truncated to the model's maximum").
//!
//! Mirrors `PreTrainedTokenizerFast._batch_encode_plus` with `return_overflowing_tokens=True`:
//! the tokenizer's truncation params get `max_length`, `stride` and the strategy, the Rust
//! post-processor adds the special tokens, and the result is the encoding followed by its
//! overflowing windows. Here the truncation is applied per call (the shared tokenizer is not
//! mutated), so every function takes a [`plain`] tokenizer: one without truncation or padding.

use tokenizers::utils::truncation::{
    TruncationDirection, TruncationParams, TruncationStrategy, truncate_encodings,
};
use tokenizers::{Encoding, Tokenizer};

use super::{PipelineError, Result};

/// A copy of `tokenizer` without truncation or padding, for the functions of this module.
pub fn plain(tokenizer: &Tokenizer) -> Tokenizer {
    let mut plain = tokenizer.clone();
    // Clearing truncation cannot fail: the check only concerns a stride >= max_length.
    let _ = plain.with_truncation(None);
    plain.with_padding(None);
    plain
}

/// How to cut a text (or the pair) that is too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    /// Total length in tokens, special tokens included (transformers' `max_length`).
    pub max_length: usize,
    /// Tokens shared by two consecutive windows; 0 with no windows wanted.
    pub stride: usize,
    /// Which sequence is cut.
    pub strategy: TruncationStrategy,
}

impl Truncation {
    /// `longest_first` to `max_length`, no stride: the default truncation of a single text.
    pub fn longest_first(max_length: usize) -> Self {
        Self {
            max_length,
            stride: 0,
            strategy: TruncationStrategy::LongestFirst,
        }
    }
}

/// Encodes one text with special tokens. With `truncation`, returns the truncated encoding
/// followed by its overflowing windows (none when it fits or when `stride` is 0 and the caller
/// ignores them); without, exactly one encoding of any length.
pub fn encode_single(
    tokenizer: &Tokenizer,
    text: &str,
    truncation: Option<Truncation>,
) -> Result<Vec<Encoding>> {
    let encoding = sequence(tokenizer, text)?;
    let (encoding, _) = truncate(tokenizer, encoding, None, truncation)?;
    let encoding = tokenizer
        .post_process(encoding, None, true)
        .map_err(tokenizer_error)?;
    Ok(flatten(encoding))
}

/// Encodes a pair (`text`, `text_pair`) with special tokens, as `tokenizer(text, text_pair, ...)`.
/// Returns the encoding followed by its overflowing windows.
pub fn encode_pair(
    tokenizer: &Tokenizer,
    text: &str,
    text_pair: &str,
    truncation: Option<Truncation>,
) -> Result<Vec<Encoding>> {
    let first = sequence(tokenizer, text)?;
    let second = sequence(tokenizer, text_pair)?;
    let (first, second) = truncate(tokenizer, first, Some(second), truncation)?;
    let mut second = second.expect("truncate keeps the pair it was given");
    // A sequence encoded on its own has type id 0; transformers encodes the pair member with
    // type id 1. The post-processor resets the type ids of the main encodings but keeps those
    // of the overflowing windows, so set them here.
    set_type_ids(&mut second, 1);
    let encoding = tokenizer
        .post_process(first, Some(second), true)
        .map_err(tokenizer_error)?;
    let mut windows = flatten(encoding);
    same_pair_type_ids(&mut windows);
    Ok(windows)
}

/// Gives the second text's tokens of every window the type id the post-processor gave them in
/// the first window. BERT-style templates give 1 (unchanged); RoBERTa-style ones give 0, while
/// later windows would keep the 1 of their encoding — transformers never feeds those to a
/// RoBERTa-family model (`token_type_ids` is not in its tokenizer's `model_input_names`), and
/// our encoders read them, where 1 is out of range for `type_vocab_size` 1.
fn same_pair_type_ids(windows: &mut [Encoding]) {
    let Some(first) = windows.first() else { return };
    let ids = first.get_sequence_ids();
    let Some(pair_type) = ids
        .iter()
        .position(|s| *s == Some(1))
        .map(|i| first.get_type_ids()[i])
    else {
        return;
    };
    for window in windows.iter_mut().skip(1) {
        let types = window
            .get_sequence_ids()
            .iter()
            .zip(window.get_type_ids())
            .map(|(seq, t)| if *seq == Some(1) { pair_type } else { *t })
            .collect();
        window.set_type_ids(types);
    }
}

/// One text tokenized on its own, without special tokens: what the tokenizer's private
/// `encode_single_sequence` gives. `encode_char_offsets(text, false)` also runs the
/// post-processor, which records the text as sequence 0; that record would survive into a pair
/// and mark the pair's second text as sequence 0 too, so it is dropped here.
fn sequence(tokenizer: &Tokenizer, text: &str) -> Result<Encoding> {
    let e = tokenizer
        .encode_char_offsets(text, false)
        .map_err(tokenizer_error)?;
    Ok(Encoding::new(
        e.get_ids().to_vec(),
        e.get_type_ids().to_vec(),
        e.get_tokens().to_vec(),
        e.get_word_ids().to_vec(),
        e.get_offsets().to_vec(),
        e.get_special_tokens_mask().to_vec(),
        e.get_attention_mask().to_vec(),
        Vec::new(),
        Default::default(),
    ))
}

/// The number of special tokens the post-processor adds to a single text or a pair.
pub fn added_tokens(tokenizer: &Tokenizer, is_pair: bool) -> usize {
    use tokenizers::PostProcessor;
    tokenizer
        .get_post_processor()
        .map_or(0, |p| p.added_tokens(is_pair))
}

fn set_type_ids(encoding: &mut Encoding, type_id: u32) {
    encoding.set_type_ids(vec![type_id; encoding.len()]);
    for overflow in encoding.get_overflowing_mut() {
        set_type_ids(overflow, type_id);
    }
}

/// The encoding first, then its overflowing windows (`return_overflowing_tokens=True`).
fn flatten(mut encoding: Encoding) -> Vec<Encoding> {
    let overflowing = encoding.take_overflowing();
    let mut all = Vec::with_capacity(1 + overflowing.len());
    all.push(encoding);
    all.extend(overflowing);
    all
}

/// `truncate_encodings` with `max_length` reduced by the special tokens, after checking what
/// would make the Rust code panic (a stride not below the kept length) or fail.
fn truncate(
    tokenizer: &Tokenizer,
    first: Encoding,
    second: Option<Encoding>,
    truncation: Option<Truncation>,
) -> Result<(Encoding, Option<Encoding>)> {
    let Some(t) = truncation else {
        return Ok((first, second));
    };
    let added = added_tokens(tokenizer, second.is_some());
    let Some(max_length) = t.max_length.checked_sub(added).filter(|m| *m > 0) else {
        return Err(PipelineError::validation(format!(
            "the maximum length {} leaves no room for text next to the {added} special tokens",
            t.max_length
        )));
    };
    let n1 = first.len();
    let n2 = second.as_ref().map_or(0, Encoding::len);
    if n1 + n2 > max_length {
        let kept = kept_lengths(t.strategy, n1, n2, max_length, second.is_some())?;
        if let Some(k) = kept
            .into_iter()
            .flatten()
            .find(|k| *k > 0 && t.stride >= *k)
        {
            return Err(PipelineError::validation(format!(
                "the stride {} must be less than the {k} tokens kept in each window; \
                 lower the stride or raise the maximum length",
                t.stride
            )));
        }
    }
    let params = TruncationParams {
        direction: TruncationDirection::Right,
        max_length,
        strategy: t.strategy,
        stride: t.stride,
    };
    truncate_encodings(first, second, &params).map_err(tokenizer_error)
}

/// The lengths `truncate_encodings` will cut each sequence to (`None`: left alone), or the
/// error it would return. Only called when the total is over `max_length`.
fn kept_lengths(
    strategy: TruncationStrategy,
    n1: usize,
    n2: usize,
    max_length: usize,
    is_pair: bool,
) -> Result<[Option<usize>; 2]> {
    let to_remove = n1 + n2 - max_length;
    let too_short = |which: &str| {
        PipelineError::validation(format!(
            "the {which} text is too short to be truncated to fit {max_length} tokens \
             (the other text alone is too long)"
        ))
    };
    match strategy {
        TruncationStrategy::LongestFirst if !is_pair => Ok([Some(n1 - to_remove), None]),
        TruncationStrategy::LongestFirst => {
            let short = n1.min(n2);
            let mut a = short;
            let mut b = if short > max_length {
                short
            } else {
                short.max(max_length - short)
            };
            if a + b > max_length {
                a = max_length / 2;
                b = a + max_length % 2;
            }
            let (k1, k2) = if n1 > n2 { (b, a) } else { (a, b) };
            Ok([(k1 < n1).then_some(k1), (k2 < n2).then_some(k2)])
        }
        TruncationStrategy::OnlyFirst if n1 > to_remove => Ok([Some(n1 - to_remove), None]),
        TruncationStrategy::OnlyFirst => Err(too_short("first")),
        TruncationStrategy::OnlySecond if is_pair && n2 > to_remove => {
            Ok([None, Some(n2 - to_remove)])
        }
        TruncationStrategy::OnlySecond => Err(too_short("second")),
    }
}

/// Rejects an encoding longer than the model accepts (with `truncation` off), naming its length.
pub fn check_length(encoding: &Encoding, input: usize, max_length: usize) -> Result<()> {
    if encoding.len() > max_length {
        return Err(PipelineError::validation(format!(
            "input {input} is {} tokens long, more than the model maximum of {max_length}; \
             shorten it or leave `truncation` on",
            encoding.len()
        )));
    }
    Ok(())
}

/// The cut for a single text: `longest_first` to `max_length` with `truncation` on; nothing
/// with it off (the caller then checks the length with [`check_length`]).
pub fn single_truncation(truncation: bool, max_length: usize) -> Option<Truncation> {
    truncation.then(|| Truncation::longest_first(max_length))
}

/// Encodes each text with special tokens for a one-window-per-text task: truncated to
/// `max_length` with `truncation` on (overflow dropped), else refused when too long.
pub fn encode_texts(
    tokenizer: &Tokenizer,
    texts: &[String],
    truncation: bool,
    max_length: usize,
) -> Result<Vec<Encoding>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let first = encode_single(tokenizer, text, single_truncation(truncation, max_length))?
                .into_iter()
                .next()
                .expect("encode_single returns at least the main encoding");
            if !truncation {
                check_length(&first, i, max_length)?;
            }
            Ok(first)
        })
        .collect()
}

fn tokenizer_error(err: tokenizers::Error) -> PipelineError {
    PipelineError::Tokenizer { source: err }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fixture tokenizer (`tests/fixtures/conformance/models/<model>/tokenizer.json`).
    pub(crate) fn fixture_tokenizer(model: &str) -> Tokenizer {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/conformance/models")
            .join(model)
            .join("tokenizer.json");
        Tokenizer::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn same(a: &Encoding, b: &Encoding) {
        assert_eq!(a.get_ids(), b.get_ids());
        assert_eq!(a.get_type_ids(), b.get_type_ids());
        assert_eq!(a.get_offsets(), b.get_offsets());
        assert_eq!(a.get_word_ids(), b.get_word_ids());
        assert_eq!(a.get_special_tokens_mask(), b.get_special_tokens_mask());
        assert_eq!(a.get_sequence_ids(), b.get_sequence_ids());
    }

    const CONTEXT: &str = "The Eiffel Tower is located in Paris, the capital of France. It was built in \
        1889 by the engineer Gustave Eiffel and is about 330 metres tall.";

    /// The windows `Encoding::truncate` makes of `n` tokens: `[start, stop)` every `max - stride`.
    fn expected_windows(n: usize, max: usize, stride: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let stop = (start + max).min(n);
            out.push((start, stop));
            if stop == n {
                return out;
            }
            start += max - stride;
        }
    }

    // Not compared with the tokenizer's own truncation: since tokenizers 0.23 it stops
    // tokenizing once `max_length` is reached, so its overflowing windows miss most of the text
    // (transformers 4.51.3 runs tokenizers 0.21, which tokenizes everything first).
    #[test]
    fn pair_windows_slide_over_the_context_with_the_question_in_each() {
        let tok = plain(&fixture_tokenizer("bert-qa"));
        let (cls, sep) = (
            tok.token_to_id("[CLS]").unwrap(),
            tok.token_to_id("[SEP]").unwrap(),
        );
        let question = "Where is the tower?";
        let q = tok.encode_char_offsets(question, false).unwrap();
        let c = tok.encode_char_offsets(CONTEXT, false).unwrap();
        for (max_length, stride) in [(24, 4), (32, 8), (20, 0)] {
            let t = Truncation {
                max_length,
                stride,
                strategy: TruncationStrategy::OnlySecond,
            };
            let ours = encode_pair(&tok, question, CONTEXT, Some(t)).unwrap();
            let windows = expected_windows(c.len(), max_length - 3 - q.len(), stride);
            assert_eq!(ours.len(), windows.len(), "max_length {max_length}");
            for (enc, (start, stop)) in ours.iter().zip(windows) {
                let ids = [
                    &[cls],
                    q.get_ids(),
                    &[sep],
                    &c.get_ids()[start..stop],
                    &[sep],
                ]
                .concat();
                assert_eq!(enc.get_ids(), ids);
                let n_first = q.len() + 2;
                let types: Vec<u32> = (0..enc.len()).map(|i| u32::from(i >= n_first)).collect();
                assert_eq!(enc.get_type_ids(), types);
                assert_eq!(
                    &enc.get_offsets()[n_first..enc.len() - 1],
                    &c.get_offsets()[start..stop]
                );
                let seq = enc.get_sequence_ids();
                assert_eq!(seq[n_first], Some(1));
                assert_eq!(seq[1], Some(0));
            }
        }
        // When it fits, exactly the tokenizer's own pair encoding.
        let t = Truncation {
            max_length: 512,
            stride: 16,
            strategy: TruncationStrategy::OnlySecond,
        };
        let ours = encode_pair(&tok, question, CONTEXT, Some(t)).unwrap();
        assert_eq!(ours.len(), 1);
        same(
            &ours[0],
            &tok.encode_char_offsets((question, CONTEXT), true).unwrap(),
        );
    }

    #[test]
    fn roberta_style_pairs_keep_type_id_zero_in_every_window() {
        let tok = plain(&fixture_tokenizer("xlmr-qa"));
        let t = Truncation {
            max_length: 24,
            stride: 4,
            strategy: TruncationStrategy::OnlySecond,
        };
        let windows = encode_pair(&tok, "Where is the tower?", CONTEXT, Some(t)).unwrap();
        assert!(windows.len() > 2);
        for w in &windows {
            assert!(
                w.get_type_ids().iter().all(|t| *t == 0),
                "{:?}",
                w.get_type_ids()
            );
        }
    }

    #[test]
    fn single_truncation_keeps_the_head_and_windows_the_rest() {
        let tok = plain(&fixture_tokenizer("bert-tokcls"));
        let (cls, sep) = (
            tok.token_to_id("[CLS]").unwrap(),
            tok.token_to_id("[SEP]").unwrap(),
        );
        let text = CONTEXT.repeat(3);
        let full = tok.encode_char_offsets(text.as_str(), false).unwrap();
        for stride in [0, 4] {
            let t = Truncation {
                stride,
                ..Truncation::longest_first(16)
            };
            let ours = encode_single(&tok, &text, Some(t)).unwrap();
            let windows = expected_windows(full.len(), 14, stride);
            assert_eq!(ours.len(), windows.len());
            for (enc, (start, stop)) in ours.iter().zip(windows) {
                assert_eq!(
                    enc.get_ids(),
                    [&[cls], &full.get_ids()[start..stop], &[sep]].concat()
                );
                assert_eq!(
                    &enc.get_offsets()[1..enc.len() - 1],
                    &full.get_offsets()[start..stop]
                );
            }
        }
        let untruncated = encode_single(&tok, &text, None).unwrap();
        assert_eq!(untruncated.len(), 1);
        same(
            &untruncated[0],
            &tok.encode_char_offsets(text.as_str(), true).unwrap(),
        );
    }

    #[test]
    fn offsets_are_characters() {
        let tok = plain(&fixture_tokenizer("bert-tokcls"));
        let enc = &encode_single(&tok, "Kraków é x", None).unwrap()[0];
        // [CLS] krak ##ow e x [SEP] or similar: the last real token is "x" at char 9.
        let last = enc.get_offsets()[enc.len() - 2];
        assert_eq!(last, (9, 10));
    }

    #[test]
    fn a_stride_too_large_is_a_validation_error_not_a_panic() {
        let tok = plain(&fixture_tokenizer("bert-qa"));
        let t = Truncation {
            max_length: 16,
            stride: 12,
            strategy: TruncationStrategy::OnlySecond,
        };
        let err = encode_pair(&tok, "Where is the tower?", CONTEXT, Some(t)).unwrap_err();
        assert!(matches!(err, PipelineError::Validation { .. }), "{err:?}");
        let long_question = "what ".repeat(20);
        let t = Truncation {
            max_length: 16,
            stride: 0,
            strategy: TruncationStrategy::OnlySecond,
        };
        let err = encode_pair(&tok, &long_question, CONTEXT, Some(t)).unwrap_err();
        assert!(matches!(err, PipelineError::Validation { .. }), "{err:?}");
    }
}

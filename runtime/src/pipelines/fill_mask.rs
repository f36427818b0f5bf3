//! fill-mask (contract §4): the most likely tokens for each mask token of a text. A port of
//! transformers 4.51.3 `pipelines/fill_mask.py`
//! (<https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/fill_mask.py>):
//! softmax over the vocabulary at each mask, optionally restricted to `targets`, `top_k` best;
//! `sequence` is the input with that one mask replaced, padding removed, decoded without special
//! tokens when there is a single mask (with them when there are several, so the other masks show).
//!
//! Not here: tokenization (`encode`) and running the model (`infer`, asked for the vocabulary
//! logits at the mask positions only).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::answer::{one_alone, vector};
use super::encode::encode_texts;
use super::inputs::texts;
use super::params::{deserialize_truncation, params, truncation_default};
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task};
use crate::infer::{Outputs, Row};

/// Parameter names this task accepts (contract §4, plus `truncation`).
pub const ACCEPTED: &[&str] = &["top_k", "targets", "truncation"];

/// `targets`: one token or a list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Targets {
    /// A single target.
    One(String),
    /// Several targets.
    Many(Vec<String>),
}

impl Targets {
    fn as_slice(&self) -> &[String] {
        match self {
            Self::One(t) => std::slice::from_ref(t),
            Self::Many(ts) => ts,
        }
    }
}

/// The parameters of fill-mask; defaults in `Default`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Predictions per mask (5); capped at the number of targets.
    pub top_k: usize,
    /// Only score these tokens.
    pub targets: Option<Targets>,
    /// Truncate a long text to the model maximum (default); `false` makes it a 400.
    #[serde(deserialize_with = "deserialize_truncation")]
    pub truncation: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            top_k: 5,
            targets: None,
            truncation: truncation_default(),
        }
    }
}

impl Params {
    /// Checks `top_k`.
    pub fn validate(&self) -> Result<()> {
        if self.top_k < 1 {
            return Err(PipelineError::validation(format!(
                "`top_k` must be >= 1, got {}",
                self.top_k
            )));
        }
        Ok(())
    }
}

/// transformers' `get_target_ids`: a target in the vocabulary is its id; otherwise the first
/// token of its tokenization (a target that tokenizes to nothing is dropped). Duplicates removed.
pub fn target_ids(tokenizer: &Tokenizer, targets: &Targets) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for target in targets.as_slice() {
        let id = match tokenizer.token_to_id(target) {
            Some(id) => Some(id),
            None => tokenizer
                .encode(target.as_str(), false)
                .map_err(|source| PipelineError::Tokenizer { source })?
                .get_ids()
                .first()
                .copied(),
        };
        if let Some(id) = id.filter(|id| !ids.contains(id)) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(PipelineError::validation(
            "at least one target must be provided when `targets` is passed",
        ));
    }
    Ok(ids)
}

/// Positions of the mask token; an error naming the mask token when there is none.
pub fn mask_positions(ids: &[u32], mask_id: u32, mask_token: &str) -> Result<Vec<usize>> {
    let positions: Vec<usize> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| **id == mask_id)
        .map(|(i, _)| i)
        .collect();
    if positions.is_empty() {
        return Err(PipelineError::validation(format!(
            "No mask_token ({mask_token}) found on the input"
        )));
    }
    Ok(positions)
}

/// The `top_k` (token id, probability) of one mask: softmax over the whole vocabulary, then
/// restricted to `targets` if given; best first, ties by lower id.
pub fn top_candidates(logits: &[f32], top_k: usize, targets: Option<&[u32]>) -> Vec<(u32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let prob = |id: u32| {
        logits
            .get(id as usize)
            .map_or(0.0, |l| (l - max).exp() / sum)
    };
    let mut all: Vec<(u32, f32)> = match targets {
        Some(ids) => ids.iter().map(|id| (*id, prob(*id))).collect(),
        None => (0..logits.len() as u32).map(|id| (id, prob(id))).collect(),
    };
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = top_k.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    if all.len() > k {
        all.select_nth_unstable_by(k - 1, order);
        all.truncate(k);
    }
    all.sort_by(order);
    all
}

/// One proposal for a mask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Probability.
    pub score: f32,
    /// Token id.
    pub token: u32,
    /// The token decoded alone.
    pub token_str: String,
    /// The input with this token in place of the mask.
    pub sequence: String,
}

/// Decodes ids to text (`tokenizer.decode(ids, skip_special_tokens)` with its clean-up).
pub type Decode<'a> = dyn Fn(&[u32], bool) -> String + 'a;

/// transformers' `postprocess` of one input: per mask, the candidates, each with the sequence
/// it makes. `rows[m]` are the vocabulary logits at `masks[m]`.
pub fn postprocess(
    ids: &[u32],
    masks: &[usize],
    rows: &[&[f32]],
    params: &Params,
    targets: Option<&[u32]>,
    pad_id: Option<u32>,
    decode: &Decode<'_>,
) -> Vec<Vec<Candidate>> {
    let single_mask = masks.len() == 1;
    masks
        .iter()
        .zip(rows)
        .map(|(&position, row)| {
            top_candidates(row, params.top_k, targets)
                .into_iter()
                .map(|(token, score)| {
                    let mut filled = ids.to_vec();
                    filled[position] = token;
                    // Padding is filtered out, including a predicted padding token, as transformers does.
                    filled.retain(|id| Some(*id) != pad_id);
                    Candidate {
                        score,
                        token,
                        token_str: decode(&[token], false),
                        sequence: decode(&filled, single_mask),
                    }
                })
                .collect()
        })
        .collect()
}

/// The JSON of one input: the candidates of its mask, or a list per mask when there are several.
pub fn input_json(per_mask: &[Vec<Candidate>]) -> Value {
    let value = if per_mask.len() == 1 {
        serde_json::to_value(&per_mask[0])
    } else {
        serde_json::to_value(per_mask)
    };
    value.unwrap_or(Value::Null)
}

/// transformers' `clean_up_tokenization`, applied after decoding when the tokenizer config sets
/// `clean_up_tokenization_spaces`.
pub fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// The fill-mask pipeline.
pub struct FillMask {
    res: Resources,
}

impl FillMask {
    /// A pipeline over a masked-LM model.
    pub fn new(res: Resources) -> Self {
        Self { res }
    }

    /// `tokenizer.decode` with transformers' clean-up when the tokenizer config asks for it.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> String {
        let text = self
            .res
            .tokenizer
            .inner()
            .decode(ids, skip_special_tokens)
            .unwrap_or_default();
        if self.res.tokenizer.clean_up_tokenization_spaces() {
            clean_up_tokenization(&text)
        } else {
            text
        }
    }
}

impl Pipeline for FillMask {
    fn task(&self) -> Task {
        Task::FillMask
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let task = Task::FillMask;
        let params: Params = params(&task, ACCEPTED, request.parameters)?;
        params.validate()?;
        let tokenizer = self.res.tokenizer.inner();
        let (mask_token, mask_id) = self
            .res
            .tokenizer
            .mask_token()
            .and_then(|t| Some((t, tokenizer.token_to_id(t)?)))
            .ok_or_else(|| {
                PipelineError::validation("the tokenizer does not define a `mask_token`")
            })?;
        let targets = params
            .targets
            .as_ref()
            .map(|t| target_ids(tokenizer, t))
            .transpose()?;
        let (texts, _) = texts(&task, &request.inputs)?;
        let encodings = encode_texts(
            tokenizer,
            &texts,
            params.truncation,
            self.res.tokenizer.max_len(),
        )?;
        let masks = encodings
            .iter()
            .map(|e| mask_positions(e.get_ids(), mask_id, mask_token))
            .collect::<Result<Vec<_>>>()?;
        // Only the mask positions go through the vocabulary projection.
        let rows = encodings.iter().map(Row::from_encoding).collect();
        let outputs = self
            .res
            .infer
            .run(rows, Outputs::Positions(masks.clone()))?;
        let pad_id = Some(self.res.tokenizer.pad_id());
        let decode = |ids: &[u32], skip: bool| self.decode(ids, skip);
        let mut answers = Vec::with_capacity(texts.len());
        for ((encoding, masks), output) in encodings.iter().zip(&masks).zip(&outputs) {
            let rows = (0..masks.len())
                .map(|m| vector(&output.get(m).map_err(PipelineError::Output)?))
                .collect::<Result<Vec<_>>>()?;
            let rows: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            let per_mask = postprocess(
                encoding.get_ids(),
                masks,
                &rows,
                &params,
                targets.as_deref(),
                pad_id,
                &decode,
            );
            answers.push(input_json(&per_mask));
        }
        // transformers answers a list of one text like the text alone.
        Ok(one_alone(answers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::encode::{encode_single, plain, tests::fixture_tokenizer};

    #[test]
    fn top_candidates_softmax_sort_and_targets() {
        let logits = [0.0, 2.0, 1.0, 2.0, -1.0];
        let top = top_candidates(&logits, 3, None);
        assert_eq!(top.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 3, 2]);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((top[0].1 - 2f32.exp() / z).abs() < 1e-6);
        // Targets: probabilities stay those of the full softmax; top_k capped by the targets.
        let top = top_candidates(&logits, 5, Some(&[4, 0]));
        assert_eq!(top.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 4]);
        assert!((top[0].1 - 1.0 / z).abs() < 1e-6);
    }

    #[test]
    fn params_defaults_and_targets_shapes() {
        let p: Params = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(p.top_k, 5);
        let p: Params = serde_json::from_value(serde_json::json!({"targets": "value"})).unwrap();
        assert_eq!(p.targets, Some(Targets::One("value".into())));
        let p: Params =
            serde_json::from_value(serde_json::json!({"targets": ["a", "b"], "top_k": 1})).unwrap();
        assert_eq!(p.targets, Some(Targets::Many(vec!["a".into(), "b".into()])));
        assert!(serde_json::from_value::<Params>(serde_json::json!({"target": "a"})).is_err());
        assert!(
            Params {
                top_k: 0,
                ..Params::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn no_mask_is_a_validation_error_with_the_reference_message() {
        let err = mask_positions(&[2, 10, 3], 4, "[MASK]").unwrap_err();
        assert_eq!(err.to_string(), "No mask_token ([MASK]) found on the input");
        assert_eq!(
            mask_positions(&[2, 4, 9, 4, 3], 4, "[MASK]").unwrap(),
            [1, 3]
        );
    }

    #[test]
    fn sequences_decode_like_transformers() {
        let tok = plain(&fixture_tokenizer("bert-mlm"));
        let mask = tok.token_to_id("[MASK]").unwrap();
        let decode =
            |ids: &[u32], skip: bool| clean_up_tokenization(&tok.decode(ids, skip).unwrap());
        let enc = &encode_single(&tok, "The [MASK] of the [MASK].", None).unwrap()[0];
        let masks = mask_positions(enc.get_ids(), mask, "[MASK]").unwrap();
        assert_eq!(masks.len(), 2);
        let vocab = tok.get_vocab_size(true);
        let back = tok.token_to_id("##back").unwrap();
        let passed = tok.token_to_id("passed").unwrap();
        let mut first = vec![0.0f32; vocab];
        first[back as usize] = 5.0;
        let mut second = vec![0.0f32; vocab];
        second[passed as usize] = 5.0;
        let p = Params {
            top_k: 1,
            ..Params::default()
        };
        let out = postprocess(
            enc.get_ids(),
            &masks,
            &[&first, &second],
            &p,
            None,
            tok.token_to_id("[PAD]"),
            &decode,
        );
        // Two masks: special tokens kept so the other mask shows (values from the bert-mlm case).
        assert_eq!(out[0][0].sequence, "[CLS] theback of the [MASK]. [SEP]");
        assert_eq!(out[0][0].token_str, "##back");
        assert_eq!(out[1][0].sequence, "[CLS] the [MASK] of the passed. [SEP]");
        // One mask: special tokens skipped.
        let enc = &encode_single(&tok, "The capital of France is [MASK].", None).unwrap()[0];
        let masks = mask_positions(enc.get_ids(), mask, "[MASK]").unwrap();
        let out = postprocess(enc.get_ids(), &masks, &[&first], &p, None, None, &decode);
        assert_eq!(out[0][0].sequence, "the capital of france isback.");
        assert!(input_json(&out).is_array());
    }

    #[test]
    fn targets_resolve_through_vocab_then_tokenization() {
        let tok = plain(&fixture_tokenizer("bert-mlm"));
        let file = tok.token_to_id("file").unwrap();
        let ids = target_ids(
            &tok,
            &Targets::Many(vec!["file".into(), "File".into(), "list".into()]),
        )
        .unwrap();
        // "File" is not in the (lower-case) vocabulary: its first token is "file", a duplicate.
        assert_eq!(ids, [file, tok.token_to_id("list").unwrap()]);
        assert!(target_ids(&tok, &Targets::One(String::new())).is_err());
    }
}

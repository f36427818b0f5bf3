//! question-answering (contract §4): extractive answers from a context. A port of transformers
//! 4.51.3 `pipelines/question_answering.py`
//! (<https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/question_answering.py>)
//! for fast tokenizers: the question goes first and the context is cut into windows
//! (`only_second` truncation to `max_seq_len` with `doc_stride` overlap); each window's start and
//! end logits are masked to the context (and [CLS]), softmaxed, multiplied into span scores
//! limited to `max_answer_len` tokens (`select_starts_ends`, `decode_spans`); spans map back to
//! characters of the context, widened to whole words with `align_to_words`.
//!
//! `max_question_len` is accepted and, as in transformers' fast-tokenizer path, has no effect.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::utils::truncation::TruncationStrategy;
use tokenizers::{Encoding, Tokenizer};

use super::answer::{CharIndex, matrix, one_alone};
use super::encode::{Truncation, encode_pair};
use super::params::params;
use super::{
    Envelope, Pipeline, PipelineError, Resources, Result, Task, forward_encodings, json_kind,
};

/// Parameter names this task accepts (contract §4, plus transformers' `align_to_words`).
pub const ACCEPTED: &[&str] = &[
    "top_k",
    "doc_stride",
    "max_answer_len",
    "max_seq_len",
    "max_question_len",
    "handle_impossible_answer",
    "align_to_words",
];

/// The parameters of question-answering, with transformers' defaults (written once, in
/// `Default`; an absent parameter takes its value from there).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Answers to return (1); more than one makes the answer a list.
    pub top_k: usize,
    /// Overlap of context windows; `min(max_seq_len / 2, 128)` when absent.
    pub doc_stride: Option<usize>,
    /// Longest answer in tokens (15).
    pub max_answer_len: usize,
    /// Window length in tokens, special tokens included; `min(model maximum, 384)` when absent.
    pub max_seq_len: Option<usize>,
    /// Accepted for compatibility; unused with fast tokenizers, as in transformers (64).
    pub max_question_len: usize,
    /// Also offer the empty answer, scored by the [CLS] position (false).
    pub handle_impossible_answer: bool,
    /// Widen answers to whole words (true).
    pub align_to_words: bool,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            top_k: 1,
            doc_stride: None,
            max_answer_len: 15,
            max_seq_len: None,
            max_question_len: 64,
            handle_impossible_answer: false,
            align_to_words: true,
        }
    }
}

/// Window length and overlap after defaults and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    /// Tokens per window, special tokens included.
    pub max_seq_len: usize,
    /// Tokens shared by consecutive windows.
    pub doc_stride: usize,
}

impl Params {
    /// Checks the values and resolves `max_seq_len` and `doc_stride` against the model
    /// maximum, as transformers' `_sanitize_parameters` and `preprocess`.
    pub fn windowing(&self, model_max_length: usize) -> Result<Windowing> {
        if self.top_k < 1 {
            return Err(PipelineError::validation(format!(
                "`top_k` must be >= 1, got {}",
                self.top_k
            )));
        }
        if self.max_answer_len < 1 {
            return Err(PipelineError::validation(format!(
                "`max_answer_len` must be >= 1, got {}",
                self.max_answer_len
            )));
        }
        let max_seq_len = self.max_seq_len.unwrap_or(model_max_length.min(384));
        if max_seq_len > model_max_length {
            return Err(PipelineError::validation(format!(
                "`max_seq_len` must be at most the model maximum length {model_max_length}, got {max_seq_len}"
            )));
        }
        let doc_stride = self.doc_stride.unwrap_or((max_seq_len / 2).min(128));
        if doc_stride > max_seq_len {
            return Err(PipelineError::validation(format!(
                "`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})"
            )));
        }
        Ok(Windowing {
            max_seq_len,
            doc_stride,
        })
    }
}

/// One question with its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The question.
    pub question: String,
    /// The text the answer is taken from.
    pub context: String,
}

const EXPECTS: &str = "question-answering expects `inputs` as {\"question\": str, \"context\": str} or a list of them";

/// `inputs` as one `{"question","context"}` object or a list of them (contract §4). The answer is a
/// list when more than one example is given (a list of one answers like a single object, as
/// transformers does).
pub fn parse_inputs(inputs: &Value) -> Result<Vec<Example>> {
    match inputs {
        Value::Object(_) => Ok(vec![example(inputs)?]),
        Value::Array(items) if !items.is_empty() => items.iter().map(example).collect(),
        Value::Array(_) => Err(PipelineError::validation(format!(
            "{EXPECTS}, got an empty list"
        ))),
        other => Err(PipelineError::validation(format!(
            "{EXPECTS}, got {}",
            json_kind(other)
        ))),
    }
}

fn example(item: &Value) -> Result<Example> {
    let Value::Object(map) = item else {
        return Err(PipelineError::validation(format!(
            "{EXPECTS}, got a list item that is {}",
            json_kind(item)
        )));
    };
    if let Some(extra) = map.keys().find(|k| *k != "question" && *k != "context") {
        return Err(PipelineError::validation(format!(
            "{EXPECTS}; unexpected key `{extra}` (only `question` and `context` are accepted)"
        )));
    }
    let field = |name: &str| -> Result<String> {
        match map.get(name) {
            None => Err(PipelineError::validation(format!(
                "{EXPECTS}; `{name}` is missing"
            ))),
            Some(Value::Null) => Err(PipelineError::validation(format!(
                "`{name}` cannot be null"
            ))),
            Some(Value::String(s)) if s.is_empty() => Err(PipelineError::validation(format!(
                "`{name}` cannot be empty"
            ))),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(PipelineError::validation(format!(
                "`{name}` must be a string, got {}",
                json_kind(other)
            ))),
        }
    };
    Ok(Example {
        question: field("question")?,
        context: field("context")?,
    })
}

/// One window of an example: its encoding and which tokens may be part of an answer.
#[derive(Debug, Clone)]
pub struct Span {
    /// The (unpadded) encoding: [CLS] question [SEP] context window [SEP].
    pub encoding: Encoding,
    /// `p_mask` inverted: true for context tokens and [CLS], false for the rest.
    pub allowed: Vec<bool>,
}

/// transformers' fast-tokenizer `preprocess`: the windows of one example.
pub fn spans(
    tokenizer: &Tokenizer,
    example: &Example,
    w: Windowing,
    cls_id: Option<u32>,
) -> Result<Vec<Span>> {
    let truncation = Truncation {
        max_length: w.max_seq_len,
        stride: w.doc_stride,
        strategy: TruncationStrategy::OnlySecond,
    };
    let encodings = encode_pair(
        tokenizer,
        &example.question,
        &example.context,
        Some(truncation),
    )?;
    Ok(encodings
        .into_iter()
        .map(|encoding| {
            let allowed = encoding
                .get_sequence_ids()
                .iter()
                .zip(encoding.get_ids())
                // Context tokens, and [CLS] (some models point at it for "no answer").
                .map(|(seq, id)| *seq == Some(1) || Some(*id) == cls_id)
                .collect();
            Span { encoding, allowed }
        })
        .collect())
}

/// Softmax over the allowed positions: the others get logit -10000 first, as transformers.
fn masked_softmax(logits: &[f32], allowed: &[bool]) -> Vec<f32> {
    let masked: Vec<f32> = logits
        .iter()
        .zip(allowed)
        .map(|(l, ok)| if *ok { *l } else { -10000.0 })
        .collect();
    let max = masked.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = masked.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// transformers' `select_starts_ends`: the best `top_k` (start, end, score) token spans of one
/// window, and the running minimum of the null score ([CLS] start × [CLS] end).
pub fn select_starts_ends(
    start_logits: &[f32],
    end_logits: &[f32],
    allowed: &[bool],
    min_null_score: &mut f32,
    params: &Params,
) -> Vec<(usize, usize, f32)> {
    let mut start = masked_softmax(start_logits, allowed);
    let mut end = masked_softmax(end_logits, allowed);
    if start.is_empty() {
        return Vec::new();
    }
    if params.handle_impossible_answer {
        *min_null_score = min_null_score.min(start[0] * end[0]);
    }
    start[0] = 0.0;
    end[0] = 0.0;
    decode_spans(&start, &end, params.top_k, params.max_answer_len, allowed)
}

/// transformers' `decode_spans`: scores `start[i] * end[j]` for `i <= j < i + max_answer_len`,
/// the best `top_k` (ties: the earlier span first, as `argmax`), then only spans whose both ends
/// are allowed.
pub fn decode_spans(
    start: &[f32],
    end: &[f32],
    top_k: usize,
    max_answer_len: usize,
    allowed: &[bool],
) -> Vec<(usize, usize, f32)> {
    let n = start.len();
    let mut candidates: Vec<(usize, usize, f32)> = (0..n)
        .flat_map(|i| (i..n.min(i + max_answer_len)).map(move |j| (i, j, start[i] * end[j])))
        .collect();
    let order = |a: &(usize, usize, f32), b: &(usize, usize, f32)| {
        b.2.total_cmp(&a.2)
            .then_with(|| (a.0, a.1).cmp(&(b.0, b.1)))
    };
    if candidates.len() > top_k {
        candidates.select_nth_unstable_by(top_k - 1, order);
        candidates.truncate(top_k);
    }
    candidates.sort_by(order);
    candidates.retain(|(s, e, _)| allowed[*s] && allowed[*e]);
    candidates
}

/// transformers' `get_indices`: the character span of tokens `s..=e` in the context, widened to
/// the words they fall in when `align_to_words` (falling back to token offsets where a token has
/// no word).
pub fn get_indices(
    encoding: &Encoding,
    s: usize,
    e: usize,
    align_to_words: bool,
) -> (usize, usize) {
    let offsets = encoding.get_offsets();
    if align_to_words {
        let word = |t: usize| encoding.token_to_word(t).map(|(_, w)| w);
        let chars = word(s)
            .and_then(|w| encoding.word_to_chars(w, 1))
            .zip(word(e).and_then(|w| encoding.word_to_chars(w, 1)));
        if let Some((start, end)) = chars {
            return (start.0, end.1);
        }
    }
    (offsets[s].0, offsets[e].1)
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// Probability of the span.
    pub score: f32,
    /// Start character in the context.
    pub start: usize,
    /// End character (exclusive).
    pub end: usize,
    /// `context[start:end]`.
    pub answer: String,
}

/// Start and end logits of one window, one value per token of its encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanLogits {
    /// Start logits.
    pub start: Vec<f32>,
    /// End logits.
    pub end: Vec<f32>,
}

/// transformers' `postprocess` of one example: answers of every window, the empty answer when
/// `handle_impossible_answer`, best first (stable), `top_k` of them.
pub fn postprocess(
    example: &Example,
    spans: &[Span],
    logits: &[SpanLogits],
    params: &Params,
) -> Vec<Answer> {
    let context = CharIndex::new(&example.context);
    let mut min_null_score = 1_000_000f32;
    let mut answers = Vec::new();
    for (span, l) in spans.iter().zip(logits) {
        let n = span.encoding.len();
        let (start, end) = (
            &l.start[..n.min(l.start.len())],
            &l.end[..n.min(l.end.len())],
        );
        for (s, e, score) in
            select_starts_ends(start, end, &span.allowed, &mut min_null_score, params)
        {
            let (start, end) = get_indices(&span.encoding, s, e, params.align_to_words);
            answers.push(Answer {
                score,
                start,
                end,
                answer: context.slice(start, end).to_owned(),
            });
        }
    }
    if params.handle_impossible_answer {
        answers.push(Answer {
            score: min_null_score,
            start: 0,
            end: 0,
            answer: String::new(),
        });
    }
    answers.sort_by(|a, b| b.score.total_cmp(&a.score));
    answers.truncate(params.top_k);
    answers
}

/// The JSON of one example's answers: an object when there is exactly one, else a list.
pub fn answers_json(answers: &[Answer]) -> Value {
    match answers {
        [one] => serde_json::to_value(one),
        many => serde_json::to_value(many),
    }
    .unwrap_or(Value::Null)
}

/// The question-answering pipeline.
pub struct QuestionAnswering {
    res: Resources,
    cls_id: Option<u32>,
}

impl QuestionAnswering {
    /// A pipeline over a question-answering model.
    pub fn new(res: Resources) -> Self {
        let tokenizer = res.tokenizer.inner();
        let cls_id = res
            .tokenizer
            .special_token("cls_token")
            .and_then(|t| tokenizer.token_to_id(t));
        Self { res, cls_id }
    }
}

impl Pipeline for QuestionAnswering {
    fn task(&self) -> Task {
        Task::QuestionAnswering
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let params: Params = params(&Task::QuestionAnswering, ACCEPTED, request.parameters)?;
        let windowing = params.windowing(self.res.tokenizer.max_len())?;
        let examples = parse_inputs(&request.inputs)?;
        let tokenizer = self.res.tokenizer.inner();
        let spans: Vec<Vec<Span>> = examples
            .iter()
            .map(|example| spans(tokenizer, example, windowing, self.cls_id))
            .collect::<Result<_>>()?;
        // The windows of every example in padded batches.
        let encodings: Vec<Encoding> = spans.iter().flatten().map(|s| s.encoding.clone()).collect();
        let mut outputs = forward_encodings(&self.res, &encodings)?.into_iter();
        let mut answers = Vec::with_capacity(examples.len());
        for (example, spans) in examples.iter().zip(&spans) {
            let logits = spans
                .iter()
                .map(|span| {
                    let message =
                        "a question-answering head gives 2 logits per token, one row per window";
                    let shape = || PipelineError::Output(candle_core::Error::Msg(message.into()));
                    let output = outputs.next().ok_or_else(shape)?;
                    let rows = matrix(&output, span.encoding.len())?;
                    if rows.iter().any(|r| r.len() < 2) {
                        return Err(shape());
                    }
                    Ok(SpanLogits {
                        start: rows.iter().map(|r| r[0]).collect(),
                        end: rows.iter().map(|r| r[1]).collect(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            answers.push(answers_json(&postprocess(example, spans, &logits, &params)));
        }
        // transformers answers a list of one example like the example alone.
        Ok(one_alone(answers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::encode::{plain, tests::fixture_tokenizer};
    use serde_json::json;

    #[test]
    fn inputs_dict_list_and_errors() {
        let one = parse_inputs(&json!({"question": "q", "context": "c"})).unwrap();
        assert_eq!(
            one,
            [Example {
                question: "q".into(),
                context: "c".into()
            }]
        );
        let two = parse_inputs(
            &json!([{"question": "a", "context": "b"}, {"question": "c", "context": "d"}]),
        )
        .unwrap();
        assert_eq!(two.len(), 2);
        for bad in [
            json!("just a string"),
            json!({"question": "q"}),
            json!({"question": "", "context": "c"}),
            json!({"question": null, "context": "c"}),
            json!({"question": "q", "context": "c", "extra": 1}),
            json!([]),
            json!([{"question": "q", "context": 3}]),
        ] {
            assert!(
                matches!(parse_inputs(&bad), Err(PipelineError::Validation { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults_follow_the_model_maximum() {
        let p = Params::default();
        assert_eq!(
            p.windowing(128).unwrap(),
            Windowing {
                max_seq_len: 128,
                doc_stride: 64
            }
        );
        assert_eq!(
            p.windowing(512).unwrap(),
            Windowing {
                max_seq_len: 384,
                doc_stride: 128
            }
        );
        let p = Params {
            max_seq_len: Some(64),
            doc_stride: Some(32),
            ..Params::default()
        };
        assert_eq!(
            p.windowing(128).unwrap(),
            Windowing {
                max_seq_len: 64,
                doc_stride: 32
            }
        );
        for bad in [
            Params {
                top_k: 0,
                ..Params::default()
            },
            Params {
                max_answer_len: 0,
                ..Params::default()
            },
            Params {
                max_seq_len: Some(32),
                doc_stride: Some(33),
                ..Params::default()
            },
        ] {
            assert!(matches!(
                bad.windowing(128),
                Err(PipelineError::Validation { .. })
            ));
        }
        let p: Params =
            serde_json::from_value(json!({"top_k": 2, "align_to_words": false})).unwrap();
        assert_eq!(
            (p.top_k, p.align_to_words, p.max_answer_len),
            (2, false, 15)
        );
        assert!(serde_json::from_value::<Params>(json!({"topk": 2})).is_err());
    }

    #[test]
    fn decode_spans_keeps_the_band_and_the_allowed() {
        // 5 tokens; token 0 is [CLS] (allowed, but its probability is zeroed), 1 is a question
        // token (not allowed), 2..5 context.
        let start = [0.0, 0.5, 0.3, 0.1, 0.1];
        let end = [0.0, 0.1, 0.2, 0.5, 0.1];
        let allowed = [true, false, true, true, true];
        let pairs = |spans: Vec<(usize, usize, f32)>| {
            spans.iter().map(|(s, e, _)| (*s, *e)).collect::<Vec<_>>()
        };
        // Top 3 of the band of 2: (2,3) .15, (1,2) .1, (2,2) .06; (1,2) starts on a question token.
        let spans = decode_spans(&start, &end, 3, 2, &allowed);
        assert!((spans[0].2 - 0.15).abs() < 1e-6);
        assert_eq!(pairs(spans), [(2, 3), (2, 2)]);
        // Top 10 of the band of 3; equal scores keep the earlier span first; [CLS] spans score 0.
        let spans = decode_spans(&start, &end, 10, 3, &allowed);
        assert_eq!(
            pairs(spans),
            [(2, 3), (2, 2), (3, 3), (2, 4), (3, 4), (4, 4), (0, 0)]
        );
    }

    #[test]
    fn select_starts_ends_masks_softmaxes_and_tracks_the_null_score() {
        let start = [3.0, 9.0, 1.0, 2.0];
        let end = [3.0, 9.0, 2.0, 1.0];
        let allowed = [true, false, true, true];
        let mut null = 1_000_000f32;
        let p = Params {
            handle_impossible_answer: true,
            top_k: 1,
            ..Params::default()
        };
        let got = select_starts_ends(&start, &end, &allowed, &mut null, &p);
        // Softmax over {3, 1, 2} (position 1 masked): e^3 / (e^3 + e^1 + e^2).
        let z = 3f32.exp() + 1f32.exp() + 2f32.exp();
        assert!((null - (3f32.exp() / z).powi(2)).abs() < 1e-6);
        // Best span after [CLS] is zeroed: start 3 (e^2/z) with end 3 (e^1/z) vs start 2 (e^1) end 2 (e^2): equal; earlier first.
        assert_eq!((got[0].0, got[0].1), (2, 2));
        assert!((got[0].2 - 1f32.exp() * 2f32.exp() / (z * z)).abs() < 1e-6);
    }

    const CONTEXT: &str = "The Eiffel Tower is located in Paris, the capital of France. It was built in \
        1889 by the engineer Gustave Eiffel and is about 330 metres tall.";

    #[test]
    fn windows_cover_the_context_with_the_question_in_each() {
        let tok = plain(&fixture_tokenizer("bert-qa"));
        let cls = tok.token_to_id("[CLS]");
        let ex = Example {
            question: "Who built it?".into(),
            context: CONTEXT.repeat(3),
        };
        let w = Windowing {
            max_seq_len: 32,
            doc_stride: 8,
        };
        let spans = spans(&tok, &ex, w, cls).unwrap();
        assert!(spans.len() > 3);
        let q = tok.encode("Who built it?", false).unwrap();
        let mut covered_to = 0;
        for span in &spans {
            let enc = &span.encoding;
            assert!(enc.len() <= 32);
            assert_eq!(
                &enc.get_ids()[1..1 + q.len()],
                q.get_ids(),
                "question first in every window"
            );
            assert!(span.allowed[0], "[CLS] stays allowed");
            let context: Vec<usize> = (0..enc.len())
                .filter(|i| enc.get_sequence_ids()[*i] == Some(1))
                .collect();
            assert!(context.iter().all(|i| span.allowed[*i]));
            assert_eq!(
                span.allowed.iter().filter(|a| **a).count(),
                context.len() + 1
            );
            // Windows overlap: each starts at or before where the previous one ended.
            let first = enc.get_offsets()[context[0]].0;
            assert!(first <= covered_to, "gap before char {first}");
            covered_to = enc.get_offsets()[*context.last().unwrap()].1;
        }
        assert_eq!(covered_to, ex.context.len());
    }

    #[test]
    fn answers_align_to_words_or_not() {
        let tok = plain(&fixture_tokenizer("bert-qa"));
        let ex = Example {
            question: "Who?".into(),
            context: CONTEXT.into(),
        };
        let span = spans(
            &tok,
            &ex,
            Windowing {
                max_seq_len: 128,
                doc_stride: 64,
            },
            tok.token_to_id("[CLS]"),
        )
        .unwrap()
        .remove(0);
        let enc = &span.encoding;
        // Find a subword token ("##...") in the context: it belongs to a longer word.
        let sub = (0..enc.len())
            .find(|i| enc.get_tokens()[*i].starts_with("##") && span.allowed[*i])
            .unwrap();
        let (ws, we) = get_indices(enc, sub, sub, true);
        let (ts, te) = get_indices(enc, sub, sub, false);
        assert!(ws < ts && we >= te, "({ws}, {we}) vs ({ts}, {te})");
        assert_eq!((ts, te), enc.get_offsets()[sub]);
        let word = &CONTEXT[ws..we];
        assert!(!word.contains(' ') && word.len() > te - ts, "{word}");
        // Logits that pick exactly that token: the answer is the whole word.
        let n = enc.len();
        let mut start = vec![0.0; n];
        let mut end = vec![0.0; n];
        start[sub] = 20.0;
        end[sub] = 20.0;
        let out = postprocess(
            &ex,
            std::slice::from_ref(&span),
            &[SpanLogits { start, end }],
            &Params::default(),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].answer, word);
        assert_eq!((out[0].start, out[0].end), (ws, we));
    }

    #[test]
    fn impossible_answer_competes_and_top_k_sorts_across_windows() {
        let tok = plain(&fixture_tokenizer("bert-qa"));
        let ex = Example {
            question: "Who?".into(),
            context: CONTEXT.repeat(2),
        };
        let spans = spans(
            &tok,
            &ex,
            Windowing {
                max_seq_len: 40,
                doc_stride: 10,
            },
            tok.token_to_id("[CLS]"),
        )
        .unwrap();
        assert!(spans.len() >= 2);
        // Window 0 strongly prefers [CLS]; window 1 has a confident answer somewhere.
        let logits: Vec<SpanLogits> = spans
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let n = s.encoding.len();
                let mut start = vec![0.0; n];
                let mut end = vec![0.0; n];
                if k == 0 {
                    start[0] = 10.0;
                    end[0] = 10.0;
                } else {
                    let i = s.allowed.iter().rposition(|a| *a).unwrap() - 1;
                    start[i] = 10.0;
                    end[i + 1] = 10.0;
                }
                SpanLogits { start, end }
            })
            .collect();
        let p = Params {
            handle_impossible_answer: true,
            top_k: 3,
            ..Params::default()
        };
        let top3 = postprocess(&ex, &spans, &logits, &p);
        assert_eq!(top3.len(), 3);
        assert!(top3.iter().all(|a| a.score > 0.9), "{top3:?}");
        let p = Params {
            top_k: 100_000,
            ..p
        };
        let out = postprocess(&ex, &spans, &logits, &p);
        assert_eq!(&out[..3], &top3[..]);
        assert!(out.windows(2).all(|w| w[0].score >= w[1].score));
        let null = out.iter().find(|a| a.answer.is_empty()).unwrap();
        assert_eq!((null.start, null.end), (0, 0));
        // The null score is the minimum over windows, so the later windows' near-zero one.
        assert!(null.score < 0.01);
        assert!(out[0].score > 0.9 && !out[0].answer.is_empty());
        let json = answers_json(&out[..1]);
        assert!(json.is_object());
        assert!(answers_json(&out).is_array());
    }
}

//! The answers of the OpenAI-compatible and TGI routes (issue #12), whole or streamed, built
//! from a generation's events: `chat.completion` / `chat.completion.chunk`, `text_completion`,
//! and TGI's `{"generated_text"}` / token records. `id`, `created` and `model` are the
//! server's to add.
//!
//! A sequence's text is `decode(prompt + new)` minus the decoded prompt (as the
//! text-generation pipeline answers), cut before the first stop string. Streamed, each token's
//! text is decoded incrementally (`stream::Detokenizer`), special tokens are skipped, and text
//! that could begin a stop string is held back until the next token tells ([`StopHold`]); the
//! last chunk of a sequence adds whatever the whole text has beyond what was streamed, so the
//! streamed pieces join into exactly the unstreamed answer.
//!
//! Log-probabilities (`logprobs`) are those of the distribution the token was chosen from
//! after the penalties and the temperature, before top-k/top-p truncation (so alternatives a
//! truncation removed still have a finite value): `infer::GenEvent::Logprobs`.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::generate::StopHold;
use crate::generate::stop::first_stop;
use crate::infer::{GenEvent, InferError};
use crate::tokenizer::TextTokenizer;

use super::chat::Api;
use super::stream::{Detokenizer, StreamItem};

/// A whole answer, or a stream of records.
pub enum Completed {
    /// The whole answer.
    Whole(Value),
    /// Records, as the tokens come.
    Stream(ChunkStream),
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An EOS token.
    Eos,
    /// The token limit.
    Length,
    /// A stop string.
    Stop,
}

/// One token's reported log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprob {
    /// The token.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The best tokens, best first.
    pub top: Vec<(u32, f32)>,
}

/// What the answers of one request need to know.
pub struct Context {
    /// The API: the answer's shape.
    pub api: Api,
    /// The tokenizer.
    pub tokenizer: Arc<TextTokenizer>,
    /// Each prompt's tokens.
    pub rows: Vec<Vec<u32>>,
    /// Each prompt's text, put before the answer (`echo`, TGI `return_full_text`); empty when
    /// not asked.
    pub prefixes: Vec<String>,
    /// Sequences per prompt.
    pub n: usize,
    /// Stop strings.
    pub stops: Vec<String>,
    /// EOS tokens.
    pub eos: Vec<u32>,
    /// Each prompt's most new tokens.
    pub limits: Vec<usize>,
    /// Log-probabilities asked for.
    pub logprobs: bool,
    /// Streaming: end with a `usage` record.
    pub include_usage: bool,
    /// TGI: answer `details`.
    pub details: bool,
    /// The request's seed (TGI details).
    pub seed: Option<u64>,
}

/// A sequence's generated tokens and, when asked, their log-probabilities.
#[derive(Debug, Default)]
pub struct Generated {
    tokens: Vec<u32>,
    /// The processed log-probability of each token (TGI's).
    token_logprobs: Vec<f32>,
    logprobs: Vec<Logprob>,
}

/// A token's log-probability and its alternatives, waiting for the token they belong to.
type PendingLogprobs = (f32, Vec<(u32, f32)>);

/// Waits for every sequence of a generation. Blocks: call it off the async runtime.
pub fn collect(
    mut events: mpsc::UnboundedReceiver<crate::infer::Result<GenEvent>>,
    total: usize,
) -> crate::infer::Result<Vec<Generated>> {
    let mut out: Vec<Generated> = (0..total).map(|_| Generated::default()).collect();
    let mut left = total;
    let mut pending: Vec<Option<PendingLogprobs>> = vec![None; total];
    while left > 0 {
        match events.blocking_recv() {
            Some(Ok(GenEvent::Logprobs {
                sequence,
                logprob,
                top,
            })) => {
                if let Some(p) = pending.get_mut(sequence) {
                    *p = Some((logprob, top));
                }
            }
            Some(Ok(GenEvent::Token {
                sequence,
                token,
                logprob,
                ..
            })) => {
                if let Some(g) = out.get_mut(sequence) {
                    g.token_logprobs.push(logprob);
                    if let Some((logprob, top)) = pending[sequence].take() {
                        g.logprobs.push(Logprob {
                            token,
                            logprob,
                            top,
                        });
                    }
                }
            }
            Some(Ok(GenEvent::Finished { sequence, tokens })) => {
                if let Some(g) = out.get_mut(sequence) {
                    g.tokens = tokens;
                    left -= 1;
                }
            }
            Some(Err(err)) => return Err(err),
            None => return Err(InferError::Cancelled),
        }
    }
    Ok(out)
}

impl Context {
    fn row(&self, sequence: usize) -> usize {
        sequence / self.n.max(1)
    }

    fn prompt_tokens(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }

    fn decode(&self, ids: &[u32]) -> String {
        let text = self.tokenizer.inner().decode(ids, true).unwrap_or_default();
        super::fill_mask::clean_up_tokenization(&text)
    }

    /// A sequence's text (cut before a stop string) and why it ended.
    fn finish(&self, sequence: usize, tokens: &[u32]) -> (String, Reason) {
        let r = self.row(sequence);
        let row = self.rows.get(r).map_or(&[][..], Vec::as_slice);
        let prompt_chars = self.decode(row).chars().count();
        let mut all = row.to_vec();
        all.extend_from_slice(tokens);
        let text: String = self.decode(&all).chars().skip(prompt_chars).collect();
        if let Some(at) = first_stop(&text, &self.stops) {
            return (text[..at].to_owned(), Reason::Stop);
        }
        let limit = self.limits.get(r).copied().unwrap_or(usize::MAX);
        let reason = if tokens.last().is_some_and(|t| self.eos.contains(t)) {
            Reason::Eos
        } else if tokens.len() >= limit {
            Reason::Length
        } else {
            Reason::Stop
        };
        (text, reason)
    }

    fn finish_reason(&self, reason: Reason) -> &'static str {
        match (self.api, reason) {
            (Api::Generate { .. }, Reason::Eos) => "eos_token",
            (Api::Generate { .. }, Reason::Stop) => "stop_sequence",
            (_, Reason::Length) => "length",
            (_, _) => "stop",
        }
    }

    fn prefix(&self, sequence: usize) -> &str {
        self.prefixes
            .get(self.row(sequence))
            .map_or("", String::as_str)
    }

    fn object(&self) -> &'static str {
        match self.api {
            Api::Chat => "chat.completion",
            Api::Completion => "text_completion",
            Api::Generate { .. } => "",
        }
    }

    fn usage(&self, completion_tokens: usize) -> Value {
        let prompt_tokens = self.prompt_tokens();
        json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        })
    }

    fn token_text(&self, id: u32) -> String {
        self.tokenizer
            .inner()
            .decode(&[id], false)
            .unwrap_or_default()
    }

    /// A chat `logprobs.content` entry.
    fn chat_entry(&self, lp: &Logprob) -> Value {
        let entry = |id: u32, logprob: f32| {
            let text = self.token_text(id);
            json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()})
        };
        let mut e = entry(lp.token, lp.logprob);
        e["top_logprobs"] = lp.top.iter().map(|&(id, l)| entry(id, l)).collect();
        e
    }

    /// Completions' `logprobs` object of some tokens, the first starting at `offset` (chars).
    fn completion_logprobs(&self, lps: &[Logprob], texts: &[String], mut offset: usize) -> Value {
        let mut text_offset = Vec::with_capacity(lps.len());
        for t in texts {
            text_offset.push(offset);
            offset += t.chars().count();
        }
        json!({
            "tokens": lps.iter().map(|l| self.token_text(l.token)).collect::<Vec<_>>(),
            "token_logprobs": lps.iter().map(|l| l.logprob).collect::<Vec<_>>(),
            "top_logprobs": lps.iter().map(|l| {
                l.top.iter().map(|&(id, lp)| (self.token_text(id), json!(lp))).collect::<Map<_, _>>()
            }).collect::<Vec<_>>(),
            "text_offset": text_offset,
        })
    }

    /// The whole answer of generated sequences.
    pub fn whole(&self, generated: &[Generated]) -> Value {
        let completion_tokens: usize = generated.iter().map(|g| g.tokens.len()).sum();
        let mut choices = Vec::with_capacity(generated.len());
        for (index, g) in generated.iter().enumerate() {
            let (text, reason) = self.finish(index, &g.tokens);
            let finish_reason = self.finish_reason(reason);
            let choice = match self.api {
                Api::Chat => json!({
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish_reason,
                    "logprobs": self.logprobs.then(|| json!({
                        "content": g.logprobs.iter().map(|l| self.chat_entry(l)).collect::<Vec<_>>(),
                        "refusal": null,
                    })),
                }),
                Api::Completion => {
                    let prefix = self.prefix(index);
                    let logprobs = self.logprobs.then(|| {
                        let texts = self.token_texts(index, &g.tokens);
                        self.completion_logprobs(&g.logprobs, &texts, prefix.chars().count())
                    });
                    json!({
                        "index": index,
                        "text": format!("{prefix}{text}"),
                        "finish_reason": finish_reason,
                        "logprobs": logprobs,
                    })
                }
                Api::Generate { listed } => {
                    let mut record = json!({
                        "generated_text": format!("{}{text}", self.prefix(index)),
                    });
                    if self.details {
                        record["details"] = self.tgi_details(index, g, reason);
                    }
                    return if listed { json!([record]) } else { record };
                }
            };
            choices.push(choice);
        }
        json!({
            "object": self.object(),
            "choices": choices,
            "usage": self.usage(completion_tokens),
        })
    }

    /// Each token's text as the stream shows it.
    fn token_texts(&self, sequence: usize, tokens: &[u32]) -> Vec<String> {
        let row = self
            .rows
            .get(self.row(sequence))
            .cloned()
            .unwrap_or_default();
        let mut detok = Detokenizer::new(Arc::clone(&self.tokenizer), &row);
        tokens
            .iter()
            .map(|&t| {
                if detok.is_special(t) {
                    String::new()
                } else {
                    detok.push(t)
                }
            })
            .collect()
    }

    fn tgi_details(&self, sequence: usize, g: &Generated, reason: Reason) -> Value {
        let texts = self.token_texts(sequence, &g.tokens);
        let tokens: Vec<Value> = g
            .tokens
            .iter()
            .zip(&texts)
            .zip(&g.token_logprobs)
            .map(|((&id, text), &logprob)| {
                json!({"id": id, "text": text, "logprob": logprob,
                       "special": self.eos.contains(&id)})
            })
            .collect();
        json!({
            "finish_reason": self.finish_reason(reason),
            "generated_tokens": g.tokens.len(),
            "seed": self.seed,
            "prefill": [],
            "tokens": tokens,
            "top_tokens": null,
        })
    }
}

/// One sequence of a stream.
struct SeqStream {
    detok: Detokenizer,
    hold: StopHold,
    /// The text shown so far (without the echoed prompt).
    shown: String,
    pending: Option<Logprob>,
    /// TGI: tokens sent, and the last token's record, held for `generated_text`.
    count: usize,
    last: Option<Value>,
}

/// A streamed answer, read record by record. Dropping it drops the generation's receiver,
/// which stops the generation at its next step.
pub struct ChunkStream {
    events: mpsc::UnboundedReceiver<crate::infer::Result<GenEvent>>,
    ctx: Context,
    seqs: Vec<SeqStream>,
    out: VecDeque<Value>,
    completion_tokens: usize,
    left: usize,
    started: bool,
    done: bool,
}

impl ChunkStream {
    /// A stream over the events of a generation of `ctx.rows.len() × ctx.n` sequences.
    pub fn new(
        events: mpsc::UnboundedReceiver<crate::infer::Result<GenEvent>>,
        ctx: Context,
    ) -> Self {
        let total = ctx.rows.len() * ctx.n;
        let seqs = (0..total)
            .map(|s| SeqStream {
                detok: Detokenizer::new(Arc::clone(&ctx.tokenizer), &ctx.rows[ctx.row(s)]),
                hold: StopHold::new(&ctx.stops),
                shown: String::new(),
                pending: None,
                count: 0,
                last: None,
            })
            .collect();
        Self {
            events,
            ctx,
            seqs,
            out: VecDeque::new(),
            completion_tokens: 0,
            left: total,
            started: false,
            done: false,
        }
    }

    /// The next record, an error (after which the stream ends), or `None` at the end.
    pub async fn next(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(record) = self.out.pop_front() {
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            if !self.started {
                self.started = true;
                self.start();
                continue;
            }
            match self.events.recv().await {
                Some(Ok(event)) => self.on_event(event),
                Some(Err(err)) => {
                    self.done = true;
                    return Some(Err(err));
                }
                None => {
                    self.done = true;
                    return Some(Err(InferError::Cancelled));
                }
            }
        }
    }

    /// A chunk of one choice.
    fn chunk(&self, choice: &Value) -> Value {
        let object = match self.ctx.api {
            Api::Chat => "chat.completion.chunk",
            _ => "text_completion",
        };
        let mut record = json!({"object": object, "choices": [choice]});
        if self.ctx.include_usage {
            record["usage"] = Value::Null;
        }
        record
    }

    /// Chat: each choice's first chunk carries the role; completions with `echo`: the prompt.
    fn start(&mut self) {
        for s in 0..self.seqs.len() {
            let choice = match self.ctx.api {
                Api::Chat => json!({"index": s, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": null, "finish_reason": null}),
                Api::Completion if !self.ctx.prefix(s).is_empty() => {
                    json!({"index": s, "text": self.ctx.prefix(s), "logprobs": null,
                           "finish_reason": null})
                }
                _ => continue,
            };
            let record = self.chunk(&choice);
            self.out.push_back(record);
        }
    }

    fn text_choice(&self, s: usize, text: &str, logprob: Option<&Logprob>, at: usize) -> Value {
        match self.ctx.api {
            Api::Chat => json!({
                "index": s,
                "delta": {"content": text},
                "logprobs": logprob.map(|l| json!({"content": [self.ctx.chat_entry(l)], "refusal": null})),
                "finish_reason": null,
            }),
            _ => json!({
                "index": s,
                "text": text,
                "logprobs": logprob.map(|l| self.ctx.completion_logprobs(
                    std::slice::from_ref(l), &[text.to_owned()], at)),
                "finish_reason": null,
            }),
        }
    }

    fn on_event(&mut self, event: GenEvent) {
        match event {
            GenEvent::Logprobs {
                sequence,
                logprob,
                top,
            } => {
                if let Some(seq) = self.seqs.get_mut(sequence) {
                    seq.pending = Some(Logprob {
                        token: 0,
                        logprob,
                        top,
                    });
                }
            }
            GenEvent::Token {
                sequence,
                token,
                logprob,
                last,
            } => self.on_token(sequence, token, logprob, last),
            GenEvent::Finished { sequence, tokens } => self.on_finished(sequence, &tokens),
        }
    }

    fn on_token(&mut self, s: usize, token: u32, logprob: f32, last: bool) {
        let Some(seq) = self.seqs.get_mut(s) else {
            return;
        };
        let special = seq.detok.is_special(token);
        let text = if special {
            String::new()
        } else {
            seq.detok.push(token)
        };
        if let Api::Generate { .. } = self.ctx.api {
            let record = json!({
                "index": seq.count,
                "token": {"id": token, "text": text, "logprob": logprob, "special": special},
                "generated_text": null,
                "details": null,
                "top_tokens": null,
            });
            seq.count += 1;
            if last {
                seq.last = Some(record);
            } else {
                self.out.push_back(record);
            }
            return;
        }
        let shown = seq.hold.push(&text);
        let at = self.ctx.prefix(s).chars().count() + seq.shown.chars().count();
        seq.shown.push_str(&shown);
        let pending = seq.pending.take().map(|mut l| {
            l.token = token;
            l
        });
        if !shown.is_empty() || pending.is_some() {
            let choice = self.text_choice(s, &shown, pending.as_ref(), at);
            let record = self.chunk(&choice);
            self.out.push_back(record);
        }
    }

    fn on_finished(&mut self, s: usize, tokens: &[u32]) {
        if s >= self.seqs.len() {
            return;
        }
        let (text, reason) = self.ctx.finish(s, tokens);
        self.completion_tokens += tokens.len();
        self.left = self.left.saturating_sub(1);
        let finish_reason = self.ctx.finish_reason(reason);
        if let Api::Generate { .. } = self.ctx.api {
            let mut record = self.seqs[s].last.take().unwrap_or_else(|| {
                json!({"index": 0, "token": {"id": 0, "text": "", "logprob": 0.0, "special": true},
                       "details": null, "top_tokens": null})
            });
            record["generated_text"] = json!(format!("{}{text}", self.ctx.prefix(s)));
            if self.ctx.details {
                record["details"] = json!({
                    "finish_reason": finish_reason,
                    "generated_tokens": tokens.len(),
                    "seed": self.ctx.seed,
                });
            }
            self.out.push_back(record);
        } else {
            // What the whole text has beyond what was shown (held-back text, clean-up).
            let rest = text
                .strip_prefix(self.seqs[s].shown.as_str())
                .unwrap_or_default()
                .to_owned();
            if !rest.is_empty() {
                let at = self.ctx.prefix(s).chars().count() + self.seqs[s].shown.chars().count();
                self.seqs[s].shown.push_str(&rest);
                let mut choice = self.text_choice(s, &rest, None, at);
                choice["logprobs"] = Value::Null;
                let record = self.chunk(&choice);
                self.out.push_back(record);
            }
            let choice = match self.ctx.api {
                Api::Chat => json!({"index": s, "delta": {}, "logprobs": null,
                                    "finish_reason": finish_reason}),
                _ => json!({"index": s, "text": "", "logprobs": null,
                            "finish_reason": finish_reason}),
            };
            let record = self.chunk(&choice);
            self.out.push_back(record);
        }
        if self.left == 0 {
            if self.ctx.include_usage && !matches!(self.ctx.api, Api::Generate { .. }) {
                self.out.push_back(json!({
                    "object": match self.ctx.api { Api::Chat => "chat.completion.chunk", _ => "text_completion" },
                    "choices": [],
                    "usage": self.ctx.usage(self.completion_tokens),
                }));
            }
            self.done = true;
        }
    }
}

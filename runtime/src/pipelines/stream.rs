//! Token streaming for text-generation and the encoder-decoder generation tasks (issue #12): a started generation's events turned into
//! TGI's stream records (`{"token": {"id", "text", "logprob", "special"}, "generated_text",
//! "details"}`), one per token, as soon as the generation worker sends it.
//!
//! Each token's text is decoded incrementally as text-generation-inference does: the text of a
//! small window of ids before the new one is subtracted from the window's text with it, and a
//! text that ends in U+FFFD (a UTF-8 character cut between byte-level tokens) is held back until
//! the tokens that complete it arrive, so a record never holds half a character. The last
//! record carries `generated_text`: exactly what the non-streamed answer's `generated_text`
//! would be. Framing (SSE, JSON Lines) and HTTP belong to the server.
// https://github.com/huggingface/text-generation-inference/blob/v3.3.4/server/text_generation_server/models/model.py (decode_token)

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{PipelineError, Result};
use crate::generate::GenerationParams;
use crate::infer::{GenEvent, InferError};
use crate::tokenizer::TextTokenizer;

/// Refuses to stream what cannot go out token by token: a list of inputs (`one` names what one
/// input is, e.g. "prompt"), or several sequences or beams (beam search and several returned
/// sequences only know their answers at their end).
pub fn check_streamable(listed: bool, one: &str, params: &GenerationParams) -> Result<()> {
    if listed {
        return Err(PipelineError::validation(format!(
            "`stream` answers one {one} at a time, got a list of inputs"
        )));
    }
    if params.num_beams != 1 || params.num_return_sequences != 1 {
        return Err(PipelineError::validation(format!(
            "`stream` generates one sequence token by token, without beam search (several sequences or beams are only known at their end); got `num_beams` {} and `num_return_sequences` {} (use greedy decoding or sampling)",
            params.num_beams, params.num_return_sequences
        )));
    }
    Ok(())
}

/// Tokens of context decoded before a new token, as TGI does.
const WINDOW: usize = 5;

/// What incremental detokenizing needs of a tokenizer: text-generation's [`TextTokenizer`]
/// (raw decode), or an encoder-decoder model's tokenizer (`pipelines::text2text`).
pub trait TokenText: Send + Sync {
    /// The text of `ids`.
    fn text(&self, ids: &[u32]) -> String;
    /// Whether `id` is a special token.
    fn is_special(&self, id: u32) -> bool;
}

impl TokenText for TextTokenizer {
    fn text(&self, ids: &[u32]) -> String {
        self.inner().decode(ids, false).unwrap_or_default()
    }

    fn is_special(&self, id: u32) -> bool {
        self.inner()
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }
}

/// Turns token ids into text one at a time, never splitting a UTF-8 character.
pub struct Detokenizer {
    tokenizer: Arc<dyn TokenText>,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    /// Starts after `prompt` (its last tokens give the first new token its context, e.g. the
    /// leading space SentencePiece drops at the start of a text).
    pub fn new(tokenizer: Arc<TextTokenizer>, prompt: &[u32]) -> Self {
        Self::with_text(tokenizer, prompt)
    }

    /// [`new`](Self::new) over any [`TokenText`].
    pub fn with_text(tokenizer: Arc<dyn TokenText>, prompt: &[u32]) -> Self {
        let read = prompt.len();
        Self {
            tokenizer,
            ids: prompt.to_vec(),
            prefix: read.saturating_sub(WINDOW),
            read,
        }
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.text(ids)
    }

    /// The text `id` adds, or `""` while it ends inside a character (held for the next).
    pub fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix..self.read]);
        let after = self.decode(&self.ids[self.prefix..]);
        if after.len() > before.len()
            && !after.ends_with('\u{FFFD}')
            && let Some(new) = after.get(before.len()..)
        {
            let new = new.to_owned();
            self.prefix = self.read;
            self.read = self.ids.len();
            return new;
        }
        String::new()
    }

    /// Whether `id` is one of the tokenizer's special tokens.
    pub fn is_special(&self, id: u32) -> bool {
        self.tokenizer.is_special(id)
    }
}

/// Builds the final `generated_text` from the generated tokens.
pub type Finish = Box<dyn FnOnce(&[u32]) -> Value + Send>;

/// One item of a token stream: a record, or the error that ends it.
pub type StreamItem = Result<Value, InferError>;

/// A running generation, read record by record. Dropping it drops the generation's receiver,
/// which stops the generation at its next step.
pub struct TokenStream {
    events: mpsc::UnboundedReceiver<crate::infer::Result<GenEvent>>,
    detok: Detokenizer,
    finish: Option<Finish>,
    done: bool,
}

impl TokenStream {
    /// A stream over the events of a one-sequence generation.
    pub fn new(
        events: mpsc::UnboundedReceiver<crate::infer::Result<GenEvent>>,
        detok: Detokenizer,
        finish: Finish,
    ) -> Self {
        Self {
            events,
            detok,
            finish: Some(finish),
            done: false,
        }
    }

    /// The next record, an error (after which the stream ends), or `None` at the end.
    pub async fn next(&mut self) -> Option<StreamItem> {
        if self.done {
            return None;
        }
        let event = self.events.recv().await;
        let Some(Ok(GenEvent::Token {
            token,
            logprob,
            last,
            ..
        })) = event
        else {
            self.done = true;
            return match event {
                Some(Err(err)) => Some(Err(err)),
                // The worker went away, or the deadline passed, before the end.
                None => Some(Err(InferError::Cancelled)),
                // Nothing was generated (no token came before the end).
                _ => None,
            };
        };
        let text = self.detok.push(token);
        let mut generated = None;
        if last {
            // The sequence's end follows its last token at once.
            self.done = true;
            match self.events.recv().await {
                Some(Ok(GenEvent::Finished { tokens, .. })) => {
                    generated = self.finish.take().map(|f| f(&tokens));
                }
                Some(Err(err)) => return Some(Err(err)),
                _ => return Some(Err(InferError::Cancelled)),
            }
        }
        Some(Ok(record(
            token,
            &text,
            logprob,
            self.detok.is_special(token),
            generated.as_ref(),
        )))
    }
}

/// TGI's stream record.
fn record(id: u32, text: &str, logprob: f32, special: bool, generated: Option<&Value>) -> Value {
    json!({
        "token": {"id": id, "text": text, "logprob": logprob, "special": special},
        "generated_text": generated,
        "details": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_has_the_tgi_shape() {
        let r = record(7, "hi", -0.5, false, None);
        assert_eq!(
            r,
            json!({"token": {"id": 7, "text": "hi", "logprob": -0.5, "special": false},
                   "generated_text": null, "details": null})
        );
    }
}

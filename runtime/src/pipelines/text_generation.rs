//! text-generation (contract §4): a prompt, a list of prompts, a chat (`[{"role", "content"}]`)
//! or a list of chats, continued by a decoder-only model as transformers 4.51's
//! `TextGenerationPipeline` continues them.
//!
//! - Prompts are tokenized with the tokenizer's special tokens (Llama: BOS first); a chat is
//!   rendered with the model's `chat_template` (minijinja, with transformers' Jinja
//!   settings: `trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`) and answered as
//!   the conversation with the assistant's turn appended (or the last assistant turn continued).
//! - Parameters: the generation ones (`generate::params`), merged over `generation_config.json`;
//!   `stop_sequence` replaces the EOS tokens by its tokens as the pipeline does; `truncation`
//!   (default true): a prompt too long for the model keeps its last tokens (room is left for the
//!   new ones); `false` refuses it with a 400 naming the lengths.
//! - The answer is `decode(prompt + new, skip_special_tokens, clean_up_tokenization_spaces)`
//!   minus the decoded prompt's characters, after the original prompt text when
//!   `return_full_text` (default true).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/text_generation.py

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::generate::params::GENERATION_KEYS;
use crate::generate::{GenerationConfig, GenerationParams, ParamsError, StopStrings};
use crate::infer::GenerateSpec;

use super::chat::{Api, Job, JobInput};
use super::completion::{self, Completed, Context};
use super::fill_mask::clean_up_tokenization;
use super::inputs::json_kind;
use super::params::check_names;
use super::stream::{Detokenizer, TokenStream, check_streamable};
use super::{Envelope, Pipeline, PipelineError, Resources, Result, Task};
use crate::tokenizer::TextTokenizer;

/// Parameters the pipeline reads besides the generation ones.
const PIPELINE_KEYS: &[&str] = &["truncation"];

impl From<ParamsError> for PipelineError {
    fn from(err: ParamsError) -> Self {
        Self::validation(err.to_string())
    }
}

/// One prompt.
#[derive(Debug, Clone, PartialEq)]
enum Prompt {
    Text(String),
    Chat(Vec<Value>),
}

/// The model's chat template and the special tokens it may use.
#[derive(Debug, Clone)]
struct ChatTemplate {
    source: String,
    specials: Map<String, Value>,
}

/// The text-generation pipeline.
pub struct TextGeneration {
    res: Resources,
    defaults: GenerationConfig,
    chat: Option<ChatTemplate>,
    /// The longest sequence (prompt + new tokens) the model takes.
    max_len: usize,
}

impl TextGeneration {
    /// The pipeline over a generation worker, with the defaults of `dir`
    /// (`generation_config.json`, `tokenizer_config.json` `chat_template`).
    pub fn new(
        res: Resources,
        dir: &Path,
        max_positions: Option<usize>,
    ) -> Result<Self, ParamsError> {
        let defaults = GenerationConfig::from_dir(dir)?;
        let chat = read_chat_template(dir, &res);
        let max_len =
            max_positions.map_or(res.tokenizer.max_len(), |m| m.min(res.tokenizer.max_len()));
        Ok(Self {
            res,
            defaults,
            chat,
            max_len,
        })
    }

    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .res
            .tokenizer
            .inner()
            .encode(text, add_special_tokens)
            .map_err(|source| PipelineError::Tokenizer { source })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The prompt's token ids (before truncation).
    fn prompt_ids(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            // The tokenizer's default (special tokens added) for text; a rendered chat already
            // holds them (`apply_chat_template` tokenizes without adding any).
            Prompt::Text(text) => self.encode(text, true),
            Prompt::Chat(messages) => {
                let rendered = self.render(messages)?;
                self.encode(&rendered, false)
            }
        }
    }

    fn render(&self, messages: &[Value]) -> Result<String> {
        let Some(chat) = &self.chat else {
            return Err(PipelineError::validation(
                "chat input needs a `chat_template` in the model's tokenizer_config.json, and this model has none",
            ));
        };
        render_chat(chat, messages)
    }

    /// Leaves room for the new tokens: a prompt too long keeps its last tokens, or is refused
    /// when `truncation` is false.
    fn fit(&self, ids: Vec<u32>, params: &GenerationParams, truncation: bool) -> Result<Vec<u32>> {
        let new = params.max_new_for(ids.len());
        if ids.len() + new <= self.max_len {
            return Ok(ids);
        }
        if new >= self.max_len {
            return Err(PipelineError::validation(format!(
                "{new} new tokens do not fit the model's maximum length of {} tokens; lower `max_new_tokens`",
                self.max_len
            )));
        }
        if !truncation {
            return Err(PipelineError::validation(format!(
                "the prompt has {} tokens and {new} new tokens are asked: more than the model's maximum length of {} tokens (`truncation` is false; set it to true to keep the prompt's last {} tokens)",
                ids.len(),
                self.max_len,
                self.max_len - new
            )));
        }
        let keep = self.max_len - new;
        tracing::info!(
            prompt_tokens = ids.len(),
            kept = keep,
            "prompt truncated from the left to fit the model"
        );
        Ok(ids[ids.len() - keep..].to_vec())
    }
}

fn ends_with_assistant(messages: &[Value]) -> bool {
    messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("assistant")
}

/// Renders `messages` with the template as transformers' `apply_chat_template` does (Jinja with
/// `trim_blocks`, `lstrip_blocks`, loop controls and `raise_exception`; the generation prompt
/// added unless the chat ends with an assistant turn, which is then continued: everything the
/// template puts after its content is cut).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/tokenization_utils_base.py#L1700
fn render_chat(chat: &ChatTemplate, messages: &[Value]) -> Result<String> {
    let continue_final = ends_with_assistant(messages);
    let mut env = minijinja::Environment::new();
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    let template = env.template_from_str(&chat.source).map_err(|e| {
        PipelineError::validation(format!("the model's chat template does not parse: {e}"))
    })?;
    let mut ctx = chat.specials.clone();
    ctx.insert("messages".into(), Value::Array(messages.to_vec()));
    ctx.insert("add_generation_prompt".into(), Value::Bool(!continue_final));
    let mut rendered = template
        .render(minijinja::Value::from(minijinja::value::Serde(&ctx)))
        .map_err(|e| {
            PipelineError::validation(format!(
                "the chat cannot be rendered with the model's chat template: {e}"
            ))
        })?;
    if continue_final {
        let last = messages
            .last()
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let stripped = last.trim();
        let Some(at) = rendered.rfind(stripped) else {
            return Err(PipelineError::validation(
                "the final assistant message does not appear in the chat rendered by the model's template, so it cannot be continued",
            ));
        };
        let lstripped = last.trim_start().len();
        let end = if rendered.get(at..at + lstripped) == Some(last) {
            at + lstripped
        } else {
            at + stripped.len()
        };
        rendered.truncate(end);
    }
    Ok(rendered)
}

/// `tokenizer_config.json` `chat_template` (a string, or a list of named templates: the
/// `default` one), with the special tokens the templates use.
fn read_chat_template(dir: &Path, res: &Resources) -> Option<ChatTemplate> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let config: Value = serde_json::from_str(&text).ok()?;
    let source = match config.get("chat_template")? {
        Value::String(s) => s.clone(),
        Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)?
            .to_owned(),
        _ => return None,
    };
    let specials = [
        "bos_token",
        "eos_token",
        "unk_token",
        "pad_token",
        "sep_token",
        "cls_token",
        "mask_token",
    ]
    .into_iter()
    .filter_map(|k| {
        res.tokenizer
            .special_token(k)
            .map(|t| (k.to_owned(), Value::String(t.to_owned())))
    })
    .collect();
    Some(ChatTemplate { source, specials })
}

/// `inputs` as prompts, and whether a list of prompts (or chats) was given.
fn read_inputs(inputs: &Value) -> Result<(Vec<Prompt>, bool)> {
    let wrong = |what: &Value| {
        PipelineError::validation(format!(
            "text-generation expects `inputs` as a string, a list of strings, a chat (a list of {{\"role\", \"content\"}} objects) or a list of chats, got {}",
            json_kind(what)
        ))
    };
    let chat = |items: &[Value]| -> Result<Prompt> {
        for m in items {
            let ok = m.as_object().is_some_and(|o| {
                o.get("role").is_some_and(Value::is_string) && o.contains_key("content")
            });
            if !ok {
                return Err(PipelineError::validation(format!(
                    "a chat message must be an object with `role` (a string) and `content`, got {m}"
                )));
            }
        }
        if items.is_empty() {
            return Err(PipelineError::validation(
                "a chat needs at least one message",
            ));
        }
        Ok(Prompt::Chat(items.to_vec()))
    };
    match inputs {
        Value::String(s) => Ok((vec![Prompt::Text(s.clone())], false)),
        Value::Array(items) if items.is_empty() => Err(PipelineError::validation(
            "text-generation needs at least one input, got an empty list",
        )),
        Value::Array(items) => match &items[0] {
            Value::Object(_) => Ok((vec![chat(items)?], false)),
            Value::Array(_) => {
                let chats = items
                    .iter()
                    .map(|c| c.as_array().ok_or_else(|| wrong(c)).and_then(|c| chat(c)))
                    .collect::<Result<_>>()?;
                Ok((chats, true))
            }
            _ => {
                let texts = items
                    .iter()
                    .map(|t| {
                        t.as_str()
                            .map(|s| Prompt::Text(s.to_owned()))
                            .ok_or_else(|| wrong(t))
                    })
                    .collect::<Result<_>>()?;
                Ok((texts, true))
            }
        },
        other => Err(wrong(other)),
    }
}

impl Pipeline for TextGeneration {
    fn task(&self) -> Task {
        Task::TextGeneration
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let Prepared {
            prompts,
            is_list,
            rows,
            from_nothing,
            spec,
        } = self.prepare(&request)?;
        let n = spec.params.num_return_sequences;
        let return_full_text = spec.params.return_full_text.unwrap_or(true);
        let generated = self.res.infer.generate_all(rows.clone(), spec)?;
        let mut answers = Vec::with_capacity(prompts.len());
        for (r, prompt) in prompts.iter().enumerate() {
            let answer = Answer {
                tokenizer: &self.res.tokenizer,
                prompt,
                row: &rows[r],
                from_nothing: from_nothing[r],
                return_full_text,
            };
            let records: Vec<Value> = generated[r * n..(r + 1) * n]
                .iter()
                .map(|tokens| json!({ "generated_text": answer.generated_text(tokens) }))
                .collect();
            answers.push(Value::Array(records));
        }
        Ok(if is_list {
            Value::Array(answers)
        } else {
            answers.pop().unwrap_or(Value::Null)
        })
    }

    fn complete(&self, job: Job) -> Result<Completed> {
        self.complete_job(job)
    }

    fn stream(&self, request: Envelope) -> Result<TokenStream> {
        let Prepared {
            mut prompts,
            is_list,
            mut rows,
            from_nothing,
            spec,
        } = self.prepare(&request)?;
        check_streamable(is_list, "prompt (or one chat)", &spec.params)?;
        let (Some(prompt), Some(row)) = (prompts.pop(), rows.pop()) else {
            return Err(PipelineError::validation("`stream` needs one prompt"));
        };
        let return_full_text = spec.params.return_full_text.unwrap_or(true);
        let detok = Detokenizer::new(std::sync::Arc::clone(&self.res.tokenizer), &row);
        let events = self.res.infer.generate(vec![row.clone()], spec)?;
        let tokenizer = std::sync::Arc::clone(&self.res.tokenizer);
        let from_nothing = from_nothing.first().copied().unwrap_or(false);
        let finish = Box::new(move |tokens: &[u32]| {
            Answer {
                tokenizer: &tokenizer,
                prompt: &prompt,
                row: &row,
                from_nothing,
                return_full_text,
            }
            .generated_text(tokens)
        });
        Ok(TokenStream::new(events, detok, finish))
    }
}

impl TextGeneration {
    /// An OpenAI-compatible or TGI request (issue #12): the prompts (or the chat, rendered by
    /// the chat template) generated with the request's parameters, stop strings (which end a
    /// sequence early), penalties and log-probabilities, answered whole or streamed.
    fn complete_job(&self, job: Job) -> Result<Completed> {
        let inputs = match &job.input {
            JobInput::Chat(messages) => Value::Array(messages.clone()),
            JobInput::Texts(texts) if texts.len() == 1 => Value::String(texts[0].clone()),
            JobInput::Texts(texts) => json!(texts),
        };
        let envelope = Envelope {
            inputs,
            parameters: job.parameters.clone(),
        };
        let Prepared { rows, mut spec, .. } = self.prepare(&envelope)?;
        // No beam search here (a model default of several beams included): OpenAI and TGI
        // sample or decode greedily.
        spec.params.num_beams = 1;
        spec.params.frequency_penalty = job.frequency_penalty;
        spec.params.presence_penalty = job.presence_penalty;
        if !job.stops.is_empty() {
            spec.stop_strings = Some(StopStrings {
                strings: job.stops.clone(),
                tokenizer: std::sync::Arc::clone(&self.res.tokenizer),
            });
        }
        spec.top_logprobs = job.logprobs;
        let n = spec.params.num_return_sequences;
        let prefixes = match (&job.input, job.api) {
            (JobInput::Texts(texts), Api::Completion) if job.echo => texts.clone(),
            (JobInput::Texts(texts), Api::Generate { .. }) if job.return_full_text => texts.clone(),
            _ => Vec::new(),
        };
        let ctx = Context {
            api: job.api,
            tokenizer: std::sync::Arc::clone(&self.res.tokenizer),
            limits: rows
                .iter()
                .map(|r| spec.params.max_new_for(r.len()))
                .collect(),
            rows: rows.clone(),
            prefixes,
            n,
            stops: job.stops,
            eos: spec.params.eos_token_ids.clone(),
            logprobs: job.logprobs.is_some(),
            include_usage: job.include_usage,
            details: job.details,
            seed: spec.params.seed,
        };
        let total = rows.len() * n;
        let events = self.res.infer.generate(rows, spec)?;
        if job.stream {
            return Ok(Completed::Stream(completion::ChunkStream::new(events, ctx)));
        }
        let generated = completion::collect(events, total)?;
        Ok(Completed::Whole(ctx.whole(&generated)))
    }
}

/// A request checked and tokenized, ready for the generation worker.
struct Prepared {
    prompts: Vec<Prompt>,
    is_list: bool,
    rows: Vec<Vec<u32>>,
    from_nothing: Vec<bool>,
    spec: GenerateSpec,
}

impl TextGeneration {
    fn prepare(&self, request: &Envelope) -> Result<Prepared> {
        let task = Task::TextGeneration;
        let accepted: Vec<&str> = GENERATION_KEYS
            .iter()
            .chain(PIPELINE_KEYS)
            .copied()
            .collect();
        check_names(&task, &accepted, &request.parameters)?;
        let truncation = match request.parameters.get("truncation") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(PipelineError::validation(format!(
                    "`truncation` must be true or false, got {other}"
                )));
            }
        };
        let mut params = GenerationParams::resolve(&self.defaults, &request.parameters)?;
        if let Some(stop) = &params.stop_sequence {
            // transformers: `generate_kwargs["eos_token_id"] = tokenizer.encode(stop_sequence,
            // add_special_tokens=False)`: any of its tokens ends the sequence.
            params.eos_token_ids = self.encode(stop, false)?;
        }
        let (prompts, is_list) = read_inputs(&request.inputs)?;
        let mut rows = Vec::with_capacity(prompts.len());
        let mut from_nothing = Vec::with_capacity(prompts.len());
        for prompt in &prompts {
            let ids = self.prompt_ids(prompt)?;
            if ids.is_empty() {
                // transformers starts an empty prompt from the BOS token.
                let bos = params.bos_token_id.ok_or_else(|| {
                    PipelineError::validation(
                        "the prompt is empty and the model has no `bos_token_id` to start from",
                    )
                })?;
                rows.push(vec![bos]);
                from_nothing.push(true);
            } else {
                rows.push(self.fit(ids, &params, truncation)?);
                from_nothing.push(false);
            }
        }
        Ok(Prepared {
            prompts,
            is_list,
            rows,
            from_nothing,
            spec: GenerateSpec {
                params,
                ..GenerateSpec::default()
            },
        })
    }
}

/// What one generated sequence answers: `decode(prompt + new)` minus the decoded prompt, after
/// the prompt (or appended to the chat) when `return_full_text`.
struct Answer<'a> {
    tokenizer: &'a TextTokenizer,
    prompt: &'a Prompt,
    row: &'a [u32],
    from_nothing: bool,
    return_full_text: bool,
}

impl Answer<'_> {
    fn generated_text(&self, tokens: &[u32]) -> Value {
        let prompt_chars = if self.from_nothing {
            0
        } else {
            decode(self.tokenizer, self.row).chars().count()
        };
        let mut all = self.row.to_vec();
        all.extend_from_slice(tokens);
        let text: String = decode(self.tokenizer, &all)
            .chars()
            .skip(prompt_chars)
            .collect();
        match (self.prompt, self.return_full_text) {
            (_, false) => Value::String(text),
            (Prompt::Text(p), true) => Value::String(format!("{p}{text}")),
            (Prompt::Chat(messages), true) => {
                let mut messages = messages.clone();
                if ends_with_assistant(&messages) {
                    if let Some(last) = messages.last_mut().and_then(Value::as_object_mut) {
                        let content = last
                            .get("content")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let joined = format!("{content}{text}");
                        last.insert("content".into(), Value::String(joined));
                    }
                } else {
                    messages.push(json!({"role": "assistant", "content": text}));
                }
                Value::Array(messages)
            }
        }
    }
}

fn decode(tokenizer: &TextTokenizer, ids: &[u32]) -> String {
    let text = tokenizer.inner().decode(ids, true).unwrap_or_default();
    clean_up_tokenization(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_texts_chats_or_lists_of_either() {
        let (p, list) = read_inputs(&json!("hi")).unwrap();
        assert_eq!((p, list), (vec![Prompt::Text("hi".into())], false));
        let (p, list) = read_inputs(&json!(["a", "b"])).unwrap();
        assert_eq!(p.len(), 2);
        assert!(list);
        let chat = json!([{"role": "user", "content": "x"}]);
        let (p, list) = read_inputs(&chat).unwrap();
        assert!(matches!(&p[..], [Prompt::Chat(m)] if m.len() == 1) && !list);
        let (p, list) = read_inputs(&json!([chat, chat])).unwrap();
        assert_eq!(p.len(), 2);
        assert!(list);
        assert!(read_inputs(&json!([])).is_err());
        assert!(read_inputs(&json!([{"content": "no role"}])).is_err());
        assert!(read_inputs(&json!(["a", 3])).is_err());
        assert!(read_inputs(&json!(7)).is_err());
    }

    fn fixture_template() -> ChatTemplate {
        // The llama-gen fixture's template.
        let source = "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
        let specials = [("bos_token", "<s>"), ("eos_token", "</s>")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        ChatTemplate {
            source: source.to_owned(),
            specials,
        }
    }

    #[test]
    fn a_chat_is_rendered_with_the_generation_prompt_or_continued() {
        let chat = fixture_template();
        let rendered = render_chat(
            &chat,
            &[json!({"role": "user", "content": "Open the file."})],
        )
        .unwrap();
        assert_eq!(rendered, "<s><|user|>\nOpen the file.</s>\n<|assistant|>\n");
        let rendered = render_chat(
            &chat,
            &[
                json!({"role": "user", "content": "Open it."}),
                json!({"role": "assistant", "content": "Sure, "}),
            ],
        )
        .unwrap();
        // Continued: cut after the assistant's content, trailing space kept.
        assert_eq!(rendered, "<s><|user|>\nOpen it.</s>\n<|assistant|>\nSure, ");
    }

    #[test]
    fn a_template_that_raises_is_a_validation_error() {
        let chat = ChatTemplate {
            source: "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message comes first') }}{% endif %}".into(),
            specials: Map::new(),
        };
        let err = render_chat(&chat, &[json!({"role": "user", "content": "x"})]).unwrap_err();
        assert!(
            err.to_string().contains("a system message comes first"),
            "{err}"
        );
    }
}

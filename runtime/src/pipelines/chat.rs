//! The OpenAI-compatible and TGI-compatible requests (issue #12), read into one [`Job`] for the
//! text-generation pipeline: a chat completion (`{"messages": [...]}`), a text completion
//! (`{"prompt": ...}`) and TGI's generate (`{"inputs": "...", "parameters": {...}}` on `/`,
//! `/generate` and `/generate_stream`). The answers are built in `completion.rs`.
//!
//! Chat and completion fields: `max_tokens` (chat also `max_completion_tokens`, which wins),
//! `temperature` (0 → greedy; otherwise sampling), `top_p`, `seed`, `stop` (a string or a list:
//! generation stops once the text contains one, and the answer is cut before it), `n`,
//! `frequency_penalty` / `presence_penalty` (-2 to 2), `logprobs` / `top_logprobs` (chat: a
//! boolean and 0–20; completions: an integer 0–5), `stream`, `stream_options.include_usage`;
//! completions also `echo`. `null` is accepted for every optional field.
//!
//! Fields OpenAI clients send with default values are accepted when they ask for nothing this
//! server does not do: `model` (one model is served), `user`, `metadata`, `store`,
//! `service_tier`, `parallel_tool_calls`, `logit_bias` when empty, `response_format` of type
//! `text`, `tools` when empty, `tool_choice` `"none"`, `best_of` 1 (completions), `suffix` null.
//! Any other field, or one of these asking for more (tools, JSON output, a logit bias), is a
//! 400 naming it.
// https://platform.openai.com/docs/api-reference/chat/create
// https://platform.openai.com/docs/api-reference/completions/create
// https://huggingface.github.io/text-generation-inference/#/Text%20Generation%20Inference/generate

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{PipelineError, Result};

/// Which API a request came through: it decides the answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI chat completions (`chat.completion`, `chat.completion.chunk`).
    Chat,
    /// OpenAI completions (`text_completion`).
    Completion,
    /// TGI's generate: `{"generated_text"}` (a list of one on `/`), stream records with `token`.
    Generate {
        /// Whether the whole answer is a list of one record (TGI's `/` route).
        listed: bool,
    },
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq)]
pub enum JobInput {
    /// One conversation, rendered with the model's chat template.
    Chat(Vec<Value>),
    /// Prompts, each tokenized with the tokenizer's special tokens.
    Texts(Vec<String>),
}

/// A request of any of the three APIs, read and checked.
#[derive(Debug, Clone)]
pub struct Job {
    /// The API (the answer's shape).
    pub api: Api,
    /// The input.
    pub input: JobInput,
    /// text-generation `parameters` (`max_new_tokens`, `do_sample`, `temperature`, `top_p`,
    /// `top_k`, `seed`, `num_return_sequences`, ...).
    pub parameters: Map<String, Value>,
    /// Stop strings (none empty).
    pub stops: Vec<String>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: f32,
    /// OpenAI presence penalty.
    pub presence_penalty: f32,
    /// Report log-probabilities with this many alternatives.
    pub logprobs: Option<usize>,
    /// Stream the answer.
    pub stream: bool,
    /// Streaming: end with a record holding `usage`.
    pub include_usage: bool,
    /// Completions: the prompt comes before the answer's text.
    pub echo: bool,
    /// TGI: the prompt comes before `generated_text`.
    pub return_full_text: bool,
    /// TGI: answer `details` (finish reason, token count, tokens).
    pub details: bool,
}

impl Job {
    fn new(api: Api, input: JobInput) -> Self {
        Self {
            api,
            input,
            parameters: Map::new(),
            stops: Vec::new(),
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logprobs: None,
            stream: false,
            include_usage: false,
            echo: false,
            return_full_text: false,
            details: false,
        }
    }

    /// Reads a request body of `api`, naming an unknown or mistyped field in the 400.
    pub fn from_value(api: Api, body: Value) -> Result<Self> {
        match api {
            Api::Chat => ChatRequest::from_value(body)?.into_job(),
            Api::Completion => CompletionRequest::from_value(body)?.into_job(),
            Api::Generate { listed } => TgiRequest::from_value(body)?.into_job(listed),
        }
    }
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// End the stream with a record holding `usage` (and empty `choices`).
    pub include_usage: Option<bool>,
}

fn bad(message: impl Into<String>) -> PipelineError {
    PipelineError::validation(message)
}

fn stops_of(stop: Option<Stop>) -> Result<Vec<String>> {
    let stops: Vec<String> = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stops.len() > 4 {
        return Err(bad(format!(
            "`stop` takes at most 4 strings, got {}",
            stops.len()
        )));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

fn penalty(name: &str, value: Option<f32>) -> Result<f32> {
    match value {
        None => Ok(0.0),
        Some(v) if (-2.0..=2.0).contains(&v) => Ok(v),
        Some(v) => Err(bad(format!("`{name}` must be between -2 and 2, got {v}"))),
    }
}

/// The fields chat and completions share (sampling, stop strings, penalties, streaming, the
/// ignored ones), read into both requests by `#[serde(flatten)]`; `unknown` collects every
/// field neither the request nor this struct names (refused by [`read_request`]).
#[derive(Debug, Deserialize)]
pub struct Common {
    /// Most new tokens (chat: the older name; `max_completion_tokens` wins over it).
    pub max_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Answers to generate (per prompt, for completions).
    pub n: Option<usize>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Stream `chat.completion.chunk` or `text_completion` records.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// Ignored: one model is served.
    pub model: Option<Value>,
    /// Ignored.
    pub user: Option<Value>,
    /// Accepted when empty.
    pub logit_bias: Option<Value>,
    /// The fields no one names.
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

impl Common {
    /// The job that generates from `input` for `api` with these fields; the caller sets the
    /// fields of its own API (log-probabilities, echo).
    fn job(self, api: Api, input: JobInput) -> Result<Job> {
        let mut job = Job::new(api, input);
        job.parameters = self.parameters()?;
        job.stops = stops_of(self.stop)?;
        job.frequency_penalty = penalty("frequency_penalty", self.frequency_penalty)?;
        job.presence_penalty = penalty("presence_penalty", self.presence_penalty)?;
        job.stream = self.stream == Some(true);
        job.include_usage = self
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        Ok(job)
    }

    fn parameters(&self) -> Result<Map<String, Value>> {
        let mut p = Map::new();
        if let Some(max) = self.max_tokens {
            p.insert("max_new_tokens".into(), json!(max));
        }
        match self.temperature {
            Some(t) if !(0.0..=2.0).contains(&t) => {
                return Err(bad(format!(
                    "`temperature` must be between 0 and 2, got {t}"
                )));
            }
            Some(0.0) => {
                p.insert("do_sample".into(), json!(false));
            }
            Some(t) => {
                p.insert("do_sample".into(), json!(true));
                p.insert("temperature".into(), json!(t));
                // OpenAI samples from the whole vocabulary: no top-k unless asked.
                p.insert("top_k".into(), json!(0));
            }
            None => {}
        }
        if let Some(top_p) = self.top_p {
            p.insert("top_p".into(), json!(top_p));
        }
        if let Some(seed) = self.seed {
            p.insert("seed".into(), json!(seed));
        }
        match self.n {
            Some(0) => return Err(bad("`n` must be at least 1, got 0")),
            Some(n) => {
                p.insert("num_return_sequences".into(), json!(n));
                // Several answers of greedy decoding are one answer n times; OpenAI samples.
                if n > 1 && self.temperature.is_none() {
                    p.insert("do_sample".into(), json!(true));
                    p.insert("top_k".into(), json!(0));
                }
            }
            None => {}
        }
        p.insert("return_full_text".into(), json!(false));
        Ok(p)
    }
}

/// Fields accepted with a default value and ignored; `Some(reason)` when the value asks for
/// more than that.
fn refuse_non_default(name: &str, value: &Value) -> Option<String> {
    let ok = match name {
        "logit_bias" => value.as_object().is_some_and(Map::is_empty),
        "response_format" => value.get("type").and_then(Value::as_str) == Some("text"),
        "tools" | "functions" => value.as_array().is_some_and(Vec::is_empty),
        "tool_choice" | "function_call" => value.as_str() == Some("none"),
        "best_of" => value.as_u64() == Some(1),
        "suffix" => false,
        _ => true,
    };
    (!ok).then(|| format!("`{name}` is not supported by this server (got {value})"))
}

/// A request's fields that are accepted only with a default value, by name.
type Defaulted<'a> = Vec<(&'static str, &'a Option<Value>)>;

/// Reads a request body as `T` (`what`: the kind of request, for the message): a mistyped
/// field, or a field that neither `T` nor its [`Common`] names, is a 400. `parts` gives the
/// request's `Common` and its own fields that are accepted only with a default value (see the
/// module doc).
fn read_request<T: DeserializeOwned>(
    body: Value,
    what: &str,
    parts: fn(&T) -> (&Common, Defaulted<'_>),
) -> Result<T> {
    let request: T =
        serde_json::from_value(body).map_err(|e| bad(format!("invalid {what} request: {e}")))?;
    let (common, mut defaulted) = parts(&request);
    if let Some(name) = common.unknown.keys().next() {
        return Err(bad(format!(
            "invalid {what} request: unknown field `{name}`"
        )));
    }
    defaulted.push(("logit_bias", &common.logit_bias));
    check_defaults(&defaulted)?;
    Ok(request)
}

/// Checks the fields accepted with a default value (see the module doc).
fn check_defaults(fields: &[(&str, &Option<Value>)]) -> Result<()> {
    for (name, value) in fields {
        if let Some(v) = value
            && !v.is_null()
            && let Some(reason) = refuse_non_default(name, v)
        {
            return Err(bad(reason));
        }
    }
    Ok(())
}

/// A chat-completion request.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Value>,
    /// Most new tokens; wins over `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Report each token's log-probability.
    pub logprobs: Option<bool>,
    /// With `logprobs`: this many alternatives per token (0–20).
    pub top_logprobs: Option<usize>,
    /// Ignored.
    pub metadata: Option<Value>,
    /// Ignored.
    pub store: Option<Value>,
    /// Ignored.
    pub service_tier: Option<Value>,
    /// Ignored.
    pub parallel_tool_calls: Option<Value>,
    /// Accepted when of type `text`.
    pub response_format: Option<Value>,
    /// Accepted when empty.
    pub tools: Option<Value>,
    /// Accepted when `"none"`.
    pub tool_choice: Option<Value>,
    /// The fields shared with completions.
    #[serde(flatten)]
    pub common: Common,
}

impl ChatRequest {
    /// Reads a request body, naming an unknown or mistyped field in the 400.
    pub fn from_value(body: Value) -> Result<Self> {
        let request: Self = read_request(body, "chat-completion", |r: &Self| {
            let defaulted = vec![
                ("response_format", &r.response_format),
                ("tools", &r.tools),
                ("tool_choice", &r.tool_choice),
            ];
            (&r.common, defaulted)
        })?;
        if request.messages.is_empty() {
            return Err(bad("`messages` must not be empty"));
        }
        Ok(request)
    }

    fn into_job(self) -> Result<Job> {
        let logprobs = match (self.logprobs, self.top_logprobs) {
            (_, Some(k)) if k > 20 => {
                return Err(bad(format!(
                    "`top_logprobs` must be between 0 and 20, got {k}"
                )));
            }
            (Some(true), k) => Some(k.unwrap_or(0)),
            (_, Some(_)) => return Err(bad("`top_logprobs` needs `logprobs` set to true")),
            _ => None,
        };
        let mut common = self.common;
        common.max_tokens = self.max_completion_tokens.or(common.max_tokens);
        let mut job = common.job(Api::Chat, JobInput::Chat(self.messages))?;
        job.logprobs = logprobs;
        Ok(job)
    }
}

/// A text-completion request.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// A prompt or a list of prompts.
    pub prompt: Value,
    /// Report each token's log-probability and this many alternatives (0–5).
    pub logprobs: Option<usize>,
    /// Put the prompt before the answer.
    pub echo: Option<bool>,
    /// Accepted when 1.
    pub best_of: Option<Value>,
    /// Accepted when null.
    pub suffix: Option<Value>,
    /// The fields shared with chat.
    #[serde(flatten)]
    pub common: Common,
}

impl CompletionRequest {
    /// Reads a request body, naming an unknown or mistyped field in the 400.
    pub fn from_value(body: Value) -> Result<Self> {
        read_request(body, "completion", |r: &Self| {
            let defaulted = vec![("best_of", &r.best_of), ("suffix", &r.suffix)];
            (&r.common, defaulted)
        })
    }

    fn into_job(self) -> Result<Job> {
        let prompts = match self.prompt {
            Value::String(s) => vec![s],
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            other => {
                return Err(bad(format!(
                    "`prompt` must be a string or a non-empty list of strings (token ids are not accepted), got {}",
                    super::json_kind(&other)
                )));
            }
        };
        if let Some(k) = self.logprobs
            && k > 5
        {
            return Err(bad(format!("`logprobs` must be between 0 and 5, got {k}")));
        }
        let mut job = self.common.job(Api::Completion, JobInput::Texts(prompts))?;
        job.logprobs = self.logprobs;
        job.echo = self.echo == Some(true);
        Ok(job)
    }
}

/// A TGI generate request (what `huggingface_hub.InferenceClient.text_generation` posts).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TgiRequest {
    inputs: String,
    #[serde(default)]
    parameters: TgiParameters,
    stream: Option<bool>,
}

/// TGI's `parameters`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TgiParameters {
    max_new_tokens: Option<usize>,
    do_sample: Option<bool>,
    temperature: Option<f64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    typical_p: Option<f64>,
    repetition_penalty: Option<f64>,
    frequency_penalty: Option<f32>,
    seed: Option<u64>,
    return_full_text: Option<bool>,
    stop: Option<Vec<String>>,
    details: Option<bool>,
    decoder_input_details: Option<bool>,
    watermark: Option<bool>,
    truncate: Option<Value>,
    best_of: Option<Value>,
    top_n_tokens: Option<Value>,
    grammar: Option<Value>,
    adapter_id: Option<Value>,
}

impl TgiRequest {
    fn from_value(body: Value) -> Result<Self> {
        serde_json::from_value(body).map_err(|e| bad(format!("invalid generate request: {e}")))
    }

    fn into_job(self, listed: bool) -> Result<Job> {
        let p = self.parameters;
        for (name, asked) in [
            (
                "decoder_input_details",
                p.decoder_input_details == Some(true),
            ),
            ("watermark", p.watermark == Some(true)),
            ("truncate", p.truncate.is_some()),
            (
                "best_of",
                p.best_of.as_ref().is_some_and(|v| v.as_u64() != Some(1)),
            ),
            ("top_n_tokens", p.top_n_tokens.is_some()),
            ("grammar", p.grammar.is_some()),
            ("adapter_id", p.adapter_id.is_some()),
        ] {
            if asked {
                return Err(bad(format!(
                    "`{name}` is not supported by this server; leave it out"
                )));
            }
        }
        let mut parameters = Map::new();
        let mut put = |k: &str, v: Value| {
            parameters.insert(k.to_owned(), v);
        };
        if let Some(v) = p.max_new_tokens {
            put("max_new_tokens", json!(v));
        }
        // TGI samples when a sampling parameter is given.
        let samples = p.do_sample.unwrap_or(false)
            || p.temperature.is_some_and(|t| t != 1.0)
            || p.top_k.is_some()
            || p.top_p.is_some_and(|t| t < 1.0)
            || p.typical_p.is_some_and(|t| t < 1.0);
        put("do_sample", json!(samples));
        put("top_k", json!(p.top_k.unwrap_or(0)));
        for (k, v) in [
            ("temperature", p.temperature),
            ("top_p", p.top_p),
            ("typical_p", p.typical_p),
            ("repetition_penalty", p.repetition_penalty),
        ] {
            if let Some(v) = v {
                put(k, json!(v));
            }
        }
        if let Some(seed) = p.seed {
            put("seed", json!(seed));
        }
        put("return_full_text", json!(false));
        let mut job = Job::new(Api::Generate { listed }, JobInput::Texts(vec![self.inputs]));
        job.parameters = parameters;
        job.stops = stops_of(p.stop.map(Stop::Many))?;
        job.frequency_penalty = penalty("frequency_penalty", p.frequency_penalty)?;
        job.stream = self.stream == Some(true);
        job.return_full_text = p.return_full_text == Some(true);
        job.details = p.details == Some(true);
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(extra: &Value) -> Result<Job> {
        let mut body = json!({"messages": [{"role": "user", "content": "x"}]});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        Job::from_value(Api::Chat, body)
    }

    #[test]
    fn unknown_fields_are_refused_naming_them_and_nulls_accepted() {
        let err = chat(&json!({"bogus": 1})).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let ok = chat(
            &json!({"max_tokens": null, "temperature": null, "stop": null, "n": null,
            "model": "m", "user": "u", "logit_bias": {}, "response_format": {"type": "text"},
            "tools": [], "tool_choice": "none", "store": false, "metadata": null,
            "stream_options": null, "logprobs": null, "top_logprobs": null}),
        )
        .unwrap();
        assert_eq!(ok.parameters.get("return_full_text"), Some(&json!(false)));
        assert!(!ok.stream);
        for (field, value) in [
            ("logit_bias", json!({"50256": -100})),
            ("response_format", json!({"type": "json_object"})),
            ("tools", json!([{"type": "function"}])),
            ("tool_choice", json!("auto")),
        ] {
            let err = chat(&json!({ field: value })).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    /// Completions read the fields they share with chat through `Common`, and refuse what
    /// only chat accepts, what no one names, and what the shared or their own fields accept
    /// only at a default value.
    #[test]
    fn completions_refuse_unknown_and_chat_only_fields_and_read_the_shared_ones() {
        let completion = |extra: Value| {
            let mut body = json!({"prompt": "x"});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            Job::from_value(Api::Completion, body)
        };
        for field in [
            "bogus",
            "messages",
            "tools",
            "max_completion_tokens",
            "metadata",
        ] {
            let err = completion(json!({ field: 1 })).unwrap_err().to_string();
            assert!(
                err.contains(&format!("unknown field `{field}`")),
                "{field}: {err}"
            );
        }
        for (field, value) in [
            ("logit_bias", json!({"50256": -100})),
            ("best_of", json!(2)),
            ("suffix", json!("end")),
        ] {
            let err = completion(json!({ field: value })).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        let err = completion(json!({"temperature": "hot"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid completion request"), "{err}");
        let job = completion(
            json!({"max_tokens": 7, "temperature": 1, "n": 2, "stop": "\n",
            "stream": true, "stream_options": {"include_usage": true}, "presence_penalty": 0.5,
            "model": "m", "user": "u", "logit_bias": {}, "best_of": 1, "suffix": null,
            "echo": true, "logprobs": 3}),
        )
        .expect("a completion with every shared field");
        assert_eq!(job.parameters["max_new_tokens"], json!(7));
        assert_eq!(job.parameters["temperature"], json!(1.0));
        assert_eq!(job.parameters["num_return_sequences"], json!(2));
        assert_eq!(job.stops, ["\n"]);
        assert!(job.stream && job.include_usage && job.echo);
        assert_eq!(job.presence_penalty, 0.5);
        assert_eq!(job.logprobs, Some(3));
    }

    #[test]
    fn sampling_fields_map_to_generation_parameters() {
        let job = chat(
            &json!({"max_tokens": 3, "max_completion_tokens": 2, "temperature": 0.5,
            "top_p": 0.9, "seed": 4, "n": 2, "stop": "\n", "frequency_penalty": 0.5,
            "logprobs": true, "top_logprobs": 3, "stream": true,
            "stream_options": {"include_usage": true}}),
        )
        .unwrap();
        let p = &job.parameters;
        assert_eq!(p["max_new_tokens"], 2);
        assert_eq!(p["do_sample"], true);
        assert_eq!(p["temperature"], 0.5);
        assert_eq!(p["num_return_sequences"], 2);
        assert_eq!(job.stops, vec!["\n".to_owned()]);
        assert_eq!(job.logprobs, Some(3));
        assert!(job.stream && job.include_usage);
        assert_eq!(job.frequency_penalty, 0.5);
        assert!(chat(&json!({"presence_penalty": 3})).is_err());
        assert!(chat(&json!({"top_logprobs": 2})).is_err());
        assert!(chat(&json!({"logprobs": true, "top_logprobs": 21})).is_err());
        assert!(chat(&json!({"n": 0})).is_err());
        assert!(chat(&json!({"stop": ["a", "b", "c", "d", "e"]})).is_err());
    }

    #[test]
    fn completions_take_a_prompt_or_a_list_of_prompts() {
        let job = Job::from_value(
            Api::Completion,
            json!({"prompt": ["a", "b"], "echo": true, "logprobs": 2, "best_of": 1, "suffix": null}),
        )
        .unwrap();
        assert_eq!(job.input, JobInput::Texts(vec!["a".into(), "b".into()]));
        assert!(job.echo);
        assert_eq!(job.logprobs, Some(2));
        for bad_body in [
            json!({"prompt": [1, 2]}),
            json!({"prompt": []}),
            json!({"prompt": "a", "logprobs": 6}),
            json!({"prompt": "a", "suffix": "x"}),
            json!({"prompt": "a", "best_of": 3}),
            json!({"prompt": "a", "messages": []}),
        ] {
            assert!(
                Job::from_value(Api::Completion, bad_body.clone()).is_err(),
                "{bad_body}"
            );
        }
    }

    #[test]
    fn tgi_requests_take_what_huggingface_hub_sends() {
        let job = Job::from_value(
            Api::Generate { listed: true },
            json!({"inputs": "x", "stream": false, "parameters": {"details": false,
                "decoder_input_details": false, "do_sample": false, "max_new_tokens": 4,
                "return_full_text": false, "stop": ["."], "watermark": false}}),
        )
        .unwrap();
        assert_eq!(job.stops, vec![".".to_owned()]);
        assert_eq!(job.parameters["do_sample"], false);
        assert!(!job.details);
        let err = Job::from_value(
            Api::Generate { listed: false },
            json!({"inputs": "x", "parameters": {"watermark": true}}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("watermark"), "{err}");
    }
}

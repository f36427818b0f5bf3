//! The Messages API (issue #12): an OpenAI chat-completion request (`{"messages": [...]}`) read
//! into text-generation parameters, and the `chat.completion` answer built from the generated
//! sequences. The chat is rendered with the model's chat template by the text-generation
//! pipeline, which also generates.
//!
//! Fields: `messages`, `max_tokens` / `max_completion_tokens` (→ `max_new_tokens`),
//! `temperature` (0 → greedy; otherwise sampling), `top_p`, `seed`, `stop` (a string or a list:
//! the answer is cut before the first one and its `finish_reason` is `stop`), `n`. `null` is
//! accepted for every optional field. Accepted and ignored because OpenAI clients send them:
//! `model` (one model is served), `user`, `stream: false`. Any other field is a 400 naming it.
// https://platform.openai.com/docs/api-reference/chat/create

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{PipelineError, Result};

/// A chat-completion request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Value>,
    /// Ignored: one model is served.
    pub model: Option<String>,
    /// Most new tokens (the older name).
    pub max_tokens: Option<usize>,
    /// Most new tokens; wins over `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    /// Sampling temperature; 0 is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Answers to generate.
    pub n: Option<usize>,
    /// Streaming (not served for chat yet: `true` is refused).
    pub stream: Option<bool>,
    /// Ignored: an end-user id.
    pub user: Option<String>,
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

impl ChatRequest {
    /// Reads a request body, naming an unknown or mistyped field in the 400.
    pub fn from_value(body: Value) -> Result<Self> {
        let request: Self = serde_json::from_value(body).map_err(|e| {
            PipelineError::validation(format!("invalid chat-completion request: {e}"))
        })?;
        if request.stream == Some(true) {
            return Err(PipelineError::validation(
                "`stream` is not available for chat completions yet; stream with `{\"inputs\": messages, \"stream\": true}`",
            ));
        }
        if request.messages.is_empty() {
            return Err(PipelineError::validation("`messages` must not be empty"));
        }
        Ok(request)
    }

    /// The stop strings.
    pub fn stops(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }

    /// The text-generation `parameters` this request asks for.
    pub fn parameters(&self) -> Map<String, Value> {
        let mut p = Map::new();
        if let Some(max) = self.max_completion_tokens.or(self.max_tokens) {
            p.insert("max_new_tokens".into(), json!(max));
        }
        match self.temperature {
            Some(0.0) => {
                p.insert("do_sample".into(), json!(false));
            }
            Some(t) => {
                p.insert("do_sample".into(), json!(true));
                p.insert("temperature".into(), json!(t));
            }
            None => {}
        }
        if let Some(top_p) = self.top_p {
            p.insert("top_p".into(), json!(top_p));
        }
        if let Some(seed) = self.seed {
            p.insert("seed".into(), json!(seed));
        }
        if let Some(n) = self.n {
            p.insert("num_return_sequences".into(), json!(n));
        }
        p.insert("return_full_text".into(), json!(false));
        p
    }
}

/// One generated answer: its text, its token count, and whether it hit the length limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The text.
    pub text: String,
    /// New tokens.
    pub tokens: usize,
    /// Ended by the token limit (not by EOS).
    pub hit_length: bool,
}

/// Cuts `text` before the first stop string: the text and whether one was found.
pub fn cut_at_stop(text: &str, stops: &[String]) -> (String, bool) {
    match stops.iter().filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => (text[..at].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

/// The `chat.completion` answer (without `id`, `created`, `model`: the server adds them).
pub fn completion(choices: &[Choice], stops: &[String], prompt_tokens: usize) -> Value {
    let completion_tokens: usize = choices.iter().map(|c| c.tokens).sum();
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let (content, stopped) = cut_at_stop(&c.text, stops);
            let finish = if c.hit_length && !stopped {
                "length"
            } else {
                "stop"
            };
            json!({
                "index": index,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
                "logprobs": null,
            })
        })
        .collect();
    json!({
        "object": "chat.completion",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused_naming_them_and_nulls_accepted() {
        let err = ChatRequest::from_value(
            json!({"messages": [{"role": "user", "content": "x"}], "bogus": 1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let ok = ChatRequest::from_value(json!({"messages": [{"role": "user", "content": "x"}],
            "max_tokens": null, "temperature": null, "stop": null, "n": null, "model": "m"}))
        .unwrap();
        assert_eq!(ok.parameters().get("return_full_text"), Some(&json!(false)));
    }

    #[test]
    fn stop_strings_cut_the_answer_and_make_it_stop() {
        let stops = vec!["b".to_owned()];
        let c = Choice {
            text: "aabcc".into(),
            tokens: 5,
            hit_length: true,
        };
        let v = completion(&[c], &stops, 3);
        assert_eq!(v["choices"][0]["message"]["content"], "aa");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 8);
    }
}

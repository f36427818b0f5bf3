//! Generation parameters: the request's `parameters` merged over the model's defaults
//! (`generation_config.json`, or the generation keys of `config.json` when it has none) the way
//! transformers 4.51 merges them (`GenerationConfig.update(**kwargs)` over the model's config,
//! then `_prepare_generated_length` and `_prepare_special_tokens`), and the checks whose failure
//! is the caller's fault (400): each message names the parameter, the value given, and why.
//!
//! Length semantics (transformers `generate`): `max_new_tokens` wins over `max_length` (the total
//! length, prompt included, default 20); `min_new_tokens` and `min_length` both forbid EOS until
//! reached. For encoder-decoder models the "prompt" is the decoder's start (one token).
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/generation/configuration_utils.py
// https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/generation/utils.py#L1522

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// A bad generation parameter or an impossible mix of them (the caller's fault), or a defaults
/// file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// One parameter has a value that cannot be used.
    #[error("`{name}` {reason}")]
    Invalid {
        /// The parameter.
        name: String,
        /// What is wrong, with the value given.
        reason: String,
    },
    /// Parameters that cannot be used together.
    #[error("{reason}")]
    Conflict {
        /// Why, naming the parameters.
        reason: String,
    },
    /// `generation_config.json` cannot be read or parsed.
    #[error("cannot read `{}`: {reason}", path.display())]
    Defaults {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn invalid(name: &str, reason: impl Into<String>) -> ParamsError {
    ParamsError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// `early_stopping`: `true`, `false` or `"never"` (beam search's stopping heuristic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop when no running beam can beat the finished ones (with the current length).
    #[default]
    Heuristic,
    /// Stop as soon as `num_beams` hypotheses are finished.
    True,
    /// Only stop when no better hypothesis can exist at any length.
    Never,
}

/// The model's generation defaults: `generation_config.json`, or the same keys in `config.json`
/// (transformers `GenerationConfig.from_model_config`). Every field is optional; unset fields
/// take transformers' `GenerationConfig` defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// The keys read, as JSON.
    values: Map<String, Value>,
    /// `config.json` `max_position_embeddings` (or GPT-2's `n_positions`): caps the default
    /// length.
    max_positions: Option<usize>,
}

/// The parameter names [`GenerationParams::resolve`] reads from a request.
pub const GENERATION_KEYS: &[&str] = &[
    "max_new_tokens",
    "max_length",
    "min_new_tokens",
    "min_length",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "num_return_sequences",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "return_full_text",
    "stop_sequence",
    "seed",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "decoder_start_token_id",
];

/// Keys of [`GENERATION_KEYS`] only a request sets; a model's defaults may set all the others.
const REQUEST_ONLY_KEYS: &[&str] = &["return_full_text", "stop_sequence", "seed"];

impl GenerationConfig {
    /// `dir/generation_config.json`, else the generation keys of `dir/config.json`, else none.
    pub fn from_dir(dir: &Path) -> Result<Self, ParamsError> {
        let mut config = Self::read(dir)?;
        let model: Option<Value> = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        config.max_positions = model.as_ref().and_then(|m| {
            ["max_position_embeddings", "n_positions"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_u64))
                .map(|v| v as usize)
        });
        Ok(config)
    }

    fn read(dir: &Path) -> Result<Self, ParamsError> {
        for name in ["generation_config.json", "config.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let read = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
            return match read {
                Ok(value) => Ok(Self::from_value(&value)),
                Err(reason) => Err(ParamsError::Defaults { path, reason }),
            };
        }
        Ok(Self::default())
    }

    /// The generation keys of a `generation_config.json` / `config.json` value (null = unset).
    pub fn from_value(value: &Value) -> Self {
        let values = GENERATION_KEYS
            .iter()
            .filter(|k| !REQUEST_ONLY_KEYS.contains(k))
            .filter_map(|k| {
                value
                    .get(*k)
                    .filter(|v| !v.is_null())
                    .map(|v| ((*k).to_owned(), v.clone()))
            })
            .collect();
        Self {
            values,
            max_positions: None,
        }
    }

    /// Sets the model's position limit (see [`GenerationParams::max_total_len`]).
    pub fn with_max_positions(mut self, max_positions: Option<usize>) -> Self {
        self.max_positions = max_positions;
        self
    }

    /// Sets a default (e.g. from `task_specific_params`), as the pipeline's own defaults do.
    pub fn set(&mut self, key: &str, value: Value) {
        self.values.insert(key.to_owned(), value);
    }

    /// A default as JSON.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }
}

/// Resolved generation parameters of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// New tokens at most; wins over `max_length` when set.
    pub max_new_tokens: Option<usize>,
    /// Total length at most (prompt included), default 20.
    pub max_length: usize,
    /// New tokens before EOS may be produced.
    pub min_new_tokens: Option<usize>,
    /// Total length before EOS may be produced, default 0.
    pub min_length: usize,
    /// Sample instead of taking the best token.
    pub do_sample: bool,
    /// Sampling temperature, default 1.
    pub temperature: f32,
    /// Sampling: keep the `top_k` best tokens (0: all), default 50.
    pub top_k: usize,
    /// Sampling: nucleus mass, default 1 (off).
    pub top_p: f32,
    /// Sampling: typical mass, default 1 (off).
    pub typical_p: f32,
    /// Repetition penalty, default 1 (off).
    pub repetition_penalty: f32,
    /// Forbid repeating n-grams of this size (0: off).
    pub no_repeat_ngram_size: usize,
    /// Answers per input, default 1.
    pub num_return_sequences: usize,
    /// Beams (1: no beam search).
    pub num_beams: usize,
    /// Beam score = log-probability / length^`length_penalty`.
    pub length_penalty: f32,
    /// Beam search stopping rule.
    pub early_stopping: EarlyStopping,
    /// Pipeline: answer the prompt and the new text (text-generation default true).
    pub return_full_text: Option<bool>,
    /// Pipeline: text whose tokens end generation.
    pub stop_sequence: Option<String>,
    /// Sampling seed: the same seed gives the same text.
    pub seed: Option<u64>,
    /// OpenAI `frequency_penalty` (issue #12): each generated occurrence of a token lowers its
    /// logit by this much; 0 is off. Set by the OpenAI-compatible routes, not a pipeline key.
    pub frequency_penalty: f32,
    /// OpenAI `presence_penalty` (issue #12): a token generated at least once has its logit
    /// lowered by this much; 0 is off.
    pub presence_penalty: f32,
    /// Tokens that end a sequence.
    pub eos_token_ids: Vec<u32>,
    /// Padding token (defaults to the first EOS, as `_prepare_special_tokens` does).
    pub pad_token_id: Option<u32>,
    /// Beginning-of-sequence token.
    pub bos_token_id: Option<u32>,
    /// Encoder-decoder: the decoder's first token.
    pub decoder_start_token_id: Option<u32>,
    /// Whether the request left `max_length` to the defaults (transformers then generates 20
    /// new tokens when the default is 20).
    pub default_max_length: bool,
    /// The model's position limit, which caps that default.
    pub max_positions: Option<usize>,
}

impl Default for GenerationParams {
    /// transformers' `GenerationConfig()` defaults.
    fn default() -> Self {
        Self {
            max_new_tokens: None,
            max_length: 20,
            min_new_tokens: None,
            min_length: 0,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            typical_p: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            num_return_sequences: 1,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            return_full_text: None,
            stop_sequence: None,
            seed: None,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            bos_token_id: None,
            decoder_start_token_id: None,
            default_max_length: true,
            max_positions: None,
        }
    }
}

impl GenerationParams {
    /// The keys of [`GENERATION_KEYS`] in `parameters` (null: not given) over `defaults`, then
    /// checked ([`validate`](Self::validate)). Other keys are the caller's to read or refuse.
    pub fn resolve(
        defaults: &GenerationConfig,
        parameters: &Map<String, Value>,
    ) -> Result<Self, ParamsError> {
        let mut p = Self {
            max_positions: defaults.max_positions,
            default_max_length: parameters.get("max_length").is_none_or(Value::is_null),
            ..Self::default()
        };
        for (key, value) in &defaults.values {
            p.set(key, value)?;
        }
        for (key, value) in parameters {
            if GENERATION_KEYS.contains(&key.as_str()) && !value.is_null() {
                p.set(key, value)?;
            }
        }
        if p.pad_token_id.is_none() {
            p.pad_token_id = p.eos_token_ids.first().copied();
        }
        p.validate()?;
        Ok(p)
    }

    fn set(&mut self, key: &str, v: &Value) -> Result<(), ParamsError> {
        match key {
            "max_new_tokens" => self.max_new_tokens = Some(uint(key, v)?),
            "max_length" => self.max_length = uint(key, v)?,
            "min_new_tokens" => self.min_new_tokens = Some(uint(key, v)?),
            "min_length" => self.min_length = uint(key, v)?,
            "do_sample" => self.do_sample = boolean(key, v)?,
            "temperature" => self.temperature = float(key, v)?,
            "top_k" => self.top_k = uint(key, v)?,
            "top_p" => self.top_p = float(key, v)?,
            "typical_p" => self.typical_p = float(key, v)?,
            "repetition_penalty" => self.repetition_penalty = float(key, v)?,
            "no_repeat_ngram_size" => self.no_repeat_ngram_size = uint(key, v)?,
            "num_return_sequences" => self.num_return_sequences = uint(key, v)?,
            "num_beams" => self.num_beams = uint(key, v)?,
            "length_penalty" => self.length_penalty = float(key, v)?,
            "early_stopping" => {
                self.early_stopping = match v {
                    Value::Bool(true) => EarlyStopping::True,
                    Value::Bool(false) => EarlyStopping::Heuristic,
                    Value::String(s) if s == "never" => EarlyStopping::Never,
                    other => {
                        return Err(invalid(
                            key,
                            format!("must be true, false or \"never\", got {other}"),
                        ));
                    }
                }
            }
            "return_full_text" => self.return_full_text = Some(boolean(key, v)?),
            "stop_sequence" => match v {
                Value::String(s) if !s.is_empty() => self.stop_sequence = Some(s.clone()),
                other => {
                    return Err(invalid(
                        key,
                        format!("must be a non-empty string, got {other}"),
                    ));
                }
            },
            "seed" => {
                self.seed = Some(v.as_u64().ok_or_else(|| {
                    invalid(key, format!("must be a non-negative integer, got {v}"))
                })?)
            }
            "eos_token_id" => {
                self.eos_token_ids = match v {
                    Value::Array(items) => items
                        .iter()
                        .map(|i| token(key, i))
                        .collect::<Result<_, _>>()?,
                    one => vec![token(key, one)?],
                }
            }
            "pad_token_id" => self.pad_token_id = Some(token(key, v)?),
            "bos_token_id" => self.bos_token_id = Some(token(key, v)?),
            "decoder_start_token_id" => self.decoder_start_token_id = Some(token(key, v)?),
            _ => {}
        }
        Ok(())
    }

    /// The checks transformers makes (its `ValueError`s), and the impossible mixes.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.max_new_tokens == Some(0) {
            return Err(invalid("max_new_tokens", "must be greater than 0, got 0"));
        }
        if self.max_new_tokens.is_none() && self.max_length == 0 {
            return Err(invalid("max_length", "must be greater than 0, got 0"));
        }
        if self.num_beams == 0 {
            return Err(invalid("num_beams", "must be >= 1, got 0"));
        }
        if self.num_return_sequences == 0 {
            return Err(invalid("num_return_sequences", "must be >= 1, got 0"));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(invalid(
                "repetition_penalty",
                format!(
                    "must be a strictly positive number, got {}",
                    self.repetition_penalty
                ),
            ));
        }
        if !self.length_penalty.is_finite() {
            return Err(invalid("length_penalty", "must be a finite number"));
        }
        if self.do_sample {
            if !self.temperature.is_finite() || self.temperature <= 0.0 {
                return Err(ParamsError::Conflict {
                    reason: format!(
                        "`temperature` must be > 0 when `do_sample` is true, got {}; for greedy decoding set `do_sample` to false",
                        self.temperature
                    ),
                });
            }
            if !(0.0..=1.0).contains(&self.top_p) {
                return Err(invalid(
                    "top_p",
                    format!("must be between 0 and 1, got {}", self.top_p),
                ));
            }
            if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
                return Err(invalid(
                    "typical_p",
                    format!("must be > 0 and <= 1, got {}", self.typical_p),
                ));
            }
        }
        if self.num_beams == 1 && !self.do_sample && self.num_return_sequences > 1 {
            return Err(ParamsError::Conflict {
                reason: format!(
                    "`num_return_sequences` is {} but greedy decoding returns one sequence: set `do_sample` to true or `num_beams` >= `num_return_sequences`",
                    self.num_return_sequences
                ),
            });
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return Err(ParamsError::Conflict {
                reason: format!(
                    "`num_return_sequences` ({}) must be <= `num_beams` ({}) with beam search",
                    self.num_return_sequences, self.num_beams
                ),
            });
        }
        if let (Some(min), Some(max)) = (self.min_new_tokens, self.max_new_tokens)
            && min > max
        {
            return Err(ParamsError::Conflict {
                reason: format!(
                    "`min_new_tokens` ({min}) is greater than `max_new_tokens` ({max})"
                ),
            });
        }
        Ok(())
    }

    /// The total length (prompt included) at which generation stops, for a prompt of
    /// `prompt_len` tokens. transformers `_prepare_generated_length`: `max_new_tokens` wins;
    /// a `max_length` left at its default of 20 means 20 new tokens (capped by the model's
    /// positions).
    pub fn max_total_len(&self, prompt_len: usize) -> usize {
        match self.max_new_tokens {
            Some(n) => prompt_len + n,
            None if self.default_max_length && self.max_length == 20 => {
                let len = prompt_len + 20;
                self.max_positions.map_or(len, |m| len.min(m))
            }
            None => self.max_length,
        }
    }

    /// How many tokens at most are generated after a prompt of `prompt_len` tokens (at least
    /// one: transformers always makes one step).
    pub fn max_new_for(&self, prompt_len: usize) -> usize {
        self.max_total_len(prompt_len)
            .saturating_sub(prompt_len)
            .max(1)
    }

    /// Whether this is beam search.
    pub fn is_beam_search(&self) -> bool {
        self.num_beams > 1
    }
}

fn uint(name: &str, v: &Value) -> Result<usize, ParamsError> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| invalid(name, format!("must be a non-negative integer, got {v}")))
}

fn token(name: &str, v: &Value) -> Result<u32, ParamsError> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(name, format!("must be a token id, got {v}")))
}

fn float(name: &str, v: &Value) -> Result<f32, ParamsError> {
    match v.as_f64() {
        Some(f) if f.is_finite() => Ok(f as f32),
        _ => Err(invalid(name, format!("must be a number, got {v}"))),
    }
}

fn boolean(name: &str, v: &Value) -> Result<bool, ParamsError> {
    v.as_bool()
        .ok_or_else(|| invalid(name, format!("must be true or false, got {v}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resolve(defaults: Value, params: Value) -> Result<GenerationParams, ParamsError> {
        let Value::Object(map) = params else {
            panic!("object")
        };
        let defaults = GenerationConfig::from_value(&{ defaults });
        GenerationParams::resolve(&defaults, &map)
    }

    #[test]
    fn request_overrides_model_defaults_over_transformers_defaults() {
        let p = resolve(
            json!({"eos_token_id": 2, "bos_token_id": 1, "max_length": 30, "top_k": 10}),
            json!({"top_k": 5, "max_new_tokens": 4, "temperature": null}),
        )
        .unwrap();
        assert_eq!(p.top_k, 5);
        assert_eq!(p.max_length, 30);
        assert_eq!(p.max_new_tokens, Some(4));
        assert_eq!(p.temperature, 1.0);
        assert_eq!(p.eos_token_ids, [2]);
        // pad defaults to the first eos.
        assert_eq!(p.pad_token_id, Some(2));
        assert_eq!(p.max_total_len(3), 7);
        let p = resolve(json!({"eos_token_id": [5, 6]}), json!({})).unwrap();
        // The default max_length of 20 means 20 new tokens.
        assert_eq!((p.max_length, p.max_total_len(3), p.top_k), (20, 23, 50));
        assert_eq!(p.eos_token_ids, [5, 6]);
        // A max_length given in the request is the total length.
        let p = resolve(json!({}), json!({"max_length": 20})).unwrap();
        assert_eq!((p.max_total_len(3), p.max_new_for(25)), (20, 1));
        // So is one from the model's defaults other than 20.
        let p = resolve(json!({"max_length": 30}), json!({})).unwrap();
        assert_eq!(p.max_total_len(3), 30);
    }

    #[test]
    fn impossible_values_and_mixes_are_errors_naming_the_parameter() {
        let cases = [
            (json!({"max_new_tokens": 0}), "max_new_tokens"),
            (json!({"max_new_tokens": -1}), "max_new_tokens"),
            (json!({"top_k": "5"}), "top_k"),
            (json!({"do_sample": true, "temperature": 0}), "temperature"),
            (json!({"do_sample": true, "top_p": 1.5}), "top_p"),
            (json!({"do_sample": true, "typical_p": 0}), "typical_p"),
            (json!({"repetition_penalty": 0}), "repetition_penalty"),
            (json!({"num_return_sequences": 2}), "num_return_sequences"),
            (
                json!({"num_beams": 2, "num_return_sequences": 3}),
                "num_return_sequences",
            ),
            (json!({"early_stopping": "sometimes"}), "early_stopping"),
            (
                json!({"min_new_tokens": 5, "max_new_tokens": 2}),
                "min_new_tokens",
            ),
            (json!({"seed": -3}), "seed"),
        ];
        for (params, name) in cases {
            let err = resolve(json!({}), params.clone()).expect_err(&params.to_string());
            assert!(
                err.to_string().contains(&format!("`{name}`")),
                "{params}: {err}"
            );
        }
        // Temperature 0 is fine without sampling (transformers ignores it), as are sampling
        // with several sequences and beam search with as many sequences as beams.
        resolve(json!({}), json!({"temperature": 0})).unwrap();
        resolve(
            json!({}),
            json!({"do_sample": true, "num_return_sequences": 3}),
        )
        .unwrap();
        resolve(
            json!({}),
            json!({"num_beams": 3, "num_return_sequences": 3}),
        )
        .unwrap();
    }

    #[test]
    fn early_stopping_takes_booleans_and_never() {
        let p = resolve(json!({}), json!({"early_stopping": "never"})).unwrap();
        assert_eq!(p.early_stopping, EarlyStopping::Never);
        let p = resolve(json!({"early_stopping": true}), json!({})).unwrap();
        assert_eq!(p.early_stopping, EarlyStopping::True);
    }
}

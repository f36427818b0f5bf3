//! `text2text-generation` (`generated_text`), `summarization` (`summary_text`) and
//! `translation` / `translation_xx_to_yy` (`translation_text`) on encoder-decoder models (T5,
//! BART, Marian), as transformers 4.51.3's `Text2TextGenerationPipeline` and its subclasses
//! answer (contract §4):
//!
//! - the generation settings are `generation_config.json` (or, without it, the generation keys
//!   of `config.json`), updated with `config.json` `task_specific_params[<task>]` (T5: its
//!   `prefix` is put before every input), then with the request's `parameters`;
//! - `max_length` counts the decoder start token; `max_new_tokens` wins over it; an unchanged
//!   default `max_length` (20) means 20 new tokens, capped by `max_position_embeddings`;
//! - each input is generated alone (transformers' pipeline without `batch_size` does the same),
//!   greedy or beam search (`search`), and decoded with special tokens skipped and no
//!   clean-up of tokenization spaces;
//! - inputs longer than the model's position table (BART, Marian) are truncated to the
//!   tokenizer's `model_max_length` (transformers fails there: see `reference_quirks.jsonl`);
//!   `truncation: false` refuses them with a 400 naming the length instead; `truncation: true`
//!   always truncates to `model_max_length`, as transformers does. T5 (relative positions) is
//!   never truncated by default.
//!
//! A list input answers a list; with `num_return_sequences` > 1 each input's answer is a list.
//! `src_lang` / `tgt_lang` are accepted for translation and, as in transformers, change nothing
//! for tokenizers without language codes (T5, Marian).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::params::params;
use super::{Envelope, Pipeline, PipelineError, Result, Task};
use crate::infer::seq2seq::Seq2SeqWorker;
use crate::models::ModelConfig;
use crate::models::seq2seq::Seq2SeqIds;
use crate::search::{EarlyStopping, Processors, SearchConfig};
use crate::tokenizer::sentencepiece::MarianTokenizer;
use crate::tokenizer::{EncodeInput, TextTokenizer};

/// The tokenizer of an encoder-decoder model.
#[derive(Debug, Clone)]
pub enum Seq2SeqTokenizer {
    /// `tokenizer.json` (or rebuilt slow files).
    Fast(Arc<TextTokenizer>),
    /// Marian's `source.spm` + `vocab.json`.
    Marian(Arc<MarianTokenizer>),
}

impl Seq2SeqTokenizer {
    /// Marian's tokenizer when the folder has `source.spm` + `vocab.json` and no
    /// `tokenizer.json`; otherwise the fast tokenizer.
    pub fn from_dir(dir: &Path, config: &ModelConfig) -> crate::tokenizer::Result<Self> {
        if !dir.join("tokenizer.json").is_file() && MarianTokenizer::is_marian(dir) {
            return Ok(Self::Marian(Arc::new(MarianTokenizer::from_dir(dir)?)));
        }
        Ok(Self::Fast(Arc::new(TextTokenizer::from_dir(dir, config)?)))
    }

    /// Token ids with the special tokens, untruncated.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Self::Fast(t) => {
                let enc = t
                    .encode_batch(vec![EncodeInput::Single(text.to_owned())], false)
                    .map_err(tokenizer_error)?;
                Ok(enc.first().map(|e| e.get_ids().to_vec()).unwrap_or_default())
            }
            Self::Marian(t) => Ok(t.encode(text).map_err(tokenizer_error)?.0),
        }
    }

    /// Text of `ids`, special tokens skipped, no clean-up.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Self::Fast(t) => t
                .inner()
                .decode(ids, true)
                .map_err(|source| PipelineError::Tokenizer { source }),
            Self::Marian(t) => Ok(t.decode(ids)),
        }
    }

    /// `model_max_length`, when the tokenizer states one.
    fn max_len(&self) -> Option<usize> {
        match self {
            Self::Fast(t) => Some(t.max_len()),
            Self::Marian(t) => t.model_max_length(),
        }
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        match self {
            Self::Fast(t) => t.pad_id(),
            Self::Marian(t) => t.pad_id(),
        }
    }
}

fn tokenizer_error(e: crate::tokenizer::TokenizerError) -> PipelineError {
    match e {
        crate::tokenizer::TokenizerError::Encode { source }
        | crate::tokenizer::TokenizerError::Build { source, .. } => {
            PipelineError::Tokenizer { source }
        }
        other => PipelineError::Tokenizer {
            source: other.to_string().into(),
        },
    }
}

/// Generation settings as transformers' `GenerationConfig` holds them (`None`: not set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationSettings {
    max_length: Option<usize>,
    max_new_tokens: Option<usize>,
    min_length: Option<usize>,
    min_new_tokens: Option<usize>,
    num_beams: Option<usize>,
    length_penalty: Option<f32>,
    early_stopping: Option<EarlyStopping>,
    no_repeat_ngram_size: Option<usize>,
    num_return_sequences: Option<usize>,
    repetition_penalty: Option<f32>,
    do_sample: Option<bool>,
    bad_words_ids: Option<Vec<Vec<u32>>>,
    forced_bos_token_id: Option<u32>,
    forced_eos_token_id: Option<u32>,
    eos_token_id: Option<Vec<u32>>,
    decoder_start_token_id: Option<u32>,
}

/// The generation keys of a config file, read leniently (a value of the wrong type is
/// ignored, as transformers keeps unknown attributes).
fn overlay(s: &mut GenerationSettings, obj: &Map<String, Value>) {
    let uint = |k: &str| obj.get(k).and_then(Value::as_u64).map(|v| v as usize);
    let float = |k: &str| obj.get(k).and_then(Value::as_f64).map(|v| v as f32);
    let id = |k: &str| obj.get(k).and_then(Value::as_u64).map(|v| v as u32);
    macro_rules! set {
        ($field:ident, $v:expr) => {
            if let Some(v) = $v {
                s.$field = Some(v);
            }
        };
    }
    set!(max_length, uint("max_length"));
    set!(max_new_tokens, uint("max_new_tokens"));
    set!(min_length, uint("min_length"));
    set!(min_new_tokens, uint("min_new_tokens"));
    set!(num_beams, uint("num_beams"));
    set!(length_penalty, float("length_penalty"));
    set!(early_stopping, obj.get("early_stopping").and_then(early_stopping));
    set!(no_repeat_ngram_size, uint("no_repeat_ngram_size"));
    set!(num_return_sequences, uint("num_return_sequences"));
    set!(repetition_penalty, float("repetition_penalty"));
    set!(do_sample, obj.get("do_sample").and_then(Value::as_bool));
    set!(
        bad_words_ids,
        obj.get("bad_words_ids")
            .and_then(|v| serde_json::from_value::<Vec<Vec<u32>>>(v.clone()).ok())
    );
    set!(forced_bos_token_id, id("forced_bos_token_id"));
    set!(forced_eos_token_id, id("forced_eos_token_id"));
    set!(eos_token_id, obj.get("eos_token_id").and_then(id_list));
    set!(decoder_start_token_id, id("decoder_start_token_id"));
}

fn early_stopping(v: &Value) -> Option<EarlyStopping> {
    match v {
        Value::Bool(true) => Some(EarlyStopping::True),
        Value::Bool(false) => Some(EarlyStopping::False),
        Value::String(s) if s == "never" => Some(EarlyStopping::Never),
        _ => None,
    }
}

fn id_list(v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Number(n) => n.as_u64().map(|x| vec![x as u32]),
        Value::Array(items) => items
            .iter()
            .map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => None,
    }
}

/// The keys `config.json` contributes when there is no `generation_config.json`
/// (`GenerationConfig.from_model_config`).
const MODEL_CONFIG_GENERATION_KEYS: &[&str] = &[
    "max_length",
    "min_length",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "num_return_sequences",
    "repetition_penalty",
    "do_sample",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "eos_token_id",
    "decoder_start_token_id",
];

/// The request `parameters` of the generation tasks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    max_length: Option<usize>,
    max_new_tokens: Option<usize>,
    min_length: Option<usize>,
    min_new_tokens: Option<usize>,
    num_beams: Option<usize>,
    length_penalty: Option<f32>,
    #[serde(default, deserialize_with = "deserialize_early_stopping")]
    early_stopping: Option<EarlyStopping>,
    no_repeat_ngram_size: Option<usize>,
    num_return_sequences: Option<usize>,
    repetition_penalty: Option<f32>,
    do_sample: Option<bool>,
    bad_words_ids: Option<Vec<Vec<u32>>>,
    forced_bos_token_id: Option<u32>,
    forced_eos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "optional_truncation")]
    truncation: Option<bool>,
    #[allow(dead_code)]
    return_text: Option<bool>,
    return_tensors: Option<bool>,
    clean_up_tokenization_spaces: Option<bool>,
    // Accepted for translation; no effect with tokenizers without language codes.
    #[allow(dead_code)]
    src_lang: Option<String>,
    #[allow(dead_code)]
    tgt_lang: Option<String>,
    // Sampling settings: accepted, and like transformers ignored without `do_sample`.
    #[allow(dead_code)]
    temperature: Option<f32>,
    #[allow(dead_code)]
    top_k: Option<usize>,
    #[allow(dead_code)]
    top_p: Option<f32>,
    #[allow(dead_code)]
    typical_p: Option<f32>,
    #[allow(dead_code)]
    seed: Option<u64>,
}

fn optional_truncation<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    super::params::deserialize_truncation(d).map(Some)
}

fn deserialize_early_stopping<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<EarlyStopping>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    early_stopping(&v).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "`early_stopping` must be true, false or \"never\", got {v}"
        ))
    })
}

const ACCEPTED: &[&str] = &[
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "num_beams",
    "length_penalty",
    "early_stopping",
    "no_repeat_ngram_size",
    "num_return_sequences",
    "repetition_penalty",
    "do_sample",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "truncation",
    "return_text",
    "return_tensors",
    "clean_up_tokenization_spaces",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "seed",
];

const TRANSLATION_ONLY: &[&str] = &["src_lang", "tgt_lang"];

/// The generation pipeline of an encoder-decoder model.
pub struct Text2Text {
    task: Task,
    tokenizer: Seq2SeqTokenizer,
    worker: Seq2SeqWorker,
    ids: Seq2SeqIds,
    /// From `generation_config.json` / `config.json` and `task_specific_params`.
    base: GenerationSettings,
    prefix: String,
    max_position_embeddings: Option<usize>,
    model_eos: Vec<u32>,
}

impl Text2Text {
    /// Builds the pipeline: reads `generation_config.json` in `dir` and `task_specific_params`.
    pub fn new(
        task: Task,
        dir: &Path,
        config: &ModelConfig,
        tokenizer: Seq2SeqTokenizer,
        worker: Seq2SeqWorker,
        ids: Seq2SeqIds,
    ) -> std::result::Result<Self, crate::models::ModelError> {
        let mut base = GenerationSettings::default();
        let gen_path = dir.join("generation_config.json");
        if gen_path.is_file() {
            let text = std::fs::read_to_string(&gen_path).map_err(|source| {
                crate::models::ModelError::ConfigRead {
                    path: gen_path.clone(),
                    source,
                }
            })?;
            let v: Value = serde_json::from_str(&text).map_err(|source| {
                crate::models::ModelError::Config {
                    path: gen_path.clone(),
                    source,
                }
            })?;
            if let Some(obj) = v.as_object() {
                overlay(&mut base, obj);
            }
        } else if let Some(obj) = config.raw.as_object() {
            let picked: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| MODEL_CONFIG_GENERATION_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            overlay(&mut base, &picked);
        }
        let mut task = task;
        let mut prefix = String::new();
        if let Some(tsp) = config.task_specific_params.as_ref().and_then(Value::as_object) {
            // `pipeline("translation")` on a model with translation task params takes the
            // first one (transformers' `pipeline()` does this).
            if let Task::Translation {
                src: None,
                tgt: None,
            } = task
            {
                if let Some(key) = tsp.keys().find(|k| k.starts_with("translation")) {
                    if let Some(parsed) = Task::parse(key) {
                        task = parsed;
                    }
                }
            }
            if let Some(params) = tsp.get(&task.to_string()).and_then(Value::as_object) {
                if let Some(p) = params.get("prefix").and_then(Value::as_str) {
                    prefix = p.to_owned();
                }
                overlay(&mut base, params);
            }
        }
        let model_eos = config
            .raw
            .get("eos_token_id")
            .and_then(id_list)
            .unwrap_or_default();
        Ok(Self {
            task,
            tokenizer,
            worker,
            ids,
            base,
            prefix,
            max_position_embeddings: config.max_position_embeddings,
            model_eos,
        })
    }

    /// `generated`, `summary` or `translation`.
    fn return_name(&self) -> &'static str {
        match self.task {
            Task::Summarization => "summary",
            Task::Translation { .. } => "translation",
            _ => "generated",
        }
    }

    /// The search settings of one request.
    fn search_config(&self, p: &Params) -> Result<SearchConfig> {
        let mut s = self.base.clone();
        let request_max_length = p.max_length.is_some();
        let mut request = Map::new();
        macro_rules! put {
            ($($field:ident),*) => {
                $(if let Some(v) = &p.$field {
                    request.insert(stringify!($field).to_owned(), json!(v));
                })*
            };
        }
        put!(
            max_length,
            max_new_tokens,
            min_length,
            min_new_tokens,
            num_beams,
            length_penalty,
            no_repeat_ngram_size,
            num_return_sequences,
            repetition_penalty,
            do_sample,
            bad_words_ids,
            forced_bos_token_id,
            forced_eos_token_id
        );
        overlay(&mut s, &request);
        if let Some(e) = p.early_stopping {
            s.early_stopping = Some(e);
        }
        if s.do_sample == Some(true) {
            return Err(PipelineError::validation(
                "`do_sample=true` is not supported for encoder-decoder models yet; use greedy (`num_beams: 1`) or beam search",
            ));
        }
        let bad = |m: String| Err(PipelineError::validation(m));
        if s.max_new_tokens == Some(0) {
            return bad("`max_new_tokens` must be greater than 0".into());
        }
        let max_length = match (s.max_new_tokens, s.max_length) {
            (Some(n), _) => n + 1,
            (None, Some(m)) if request_max_length || m != 20 => m,
            (None, _) => {
                let m = 21;
                self.max_position_embeddings.map_or(m, |p| m.min(p))
            }
        };
        if max_length < 2 {
            return bad(format!(
                "`max_length` must be at least 2 (it counts the decoder start token), got {max_length}"
            ));
        }
        if let Some(limit) = self.ids.max_decoder_positions {
            if max_length > limit {
                return bad(format!(
                    "`max_length` {max_length} is more than the model's {limit} decoder positions"
                ));
            }
        }
        let min_length = match s.min_new_tokens {
            Some(n) => n + 1,
            None => s.min_length.unwrap_or(0),
        };
        let num_beams = s.num_beams.unwrap_or(1);
        if num_beams == 0 {
            return bad("`num_beams` must be at least 1, got 0".into());
        }
        let num_return_sequences = s.num_return_sequences.unwrap_or(1);
        if num_return_sequences == 0 {
            return bad("`num_return_sequences` must be at least 1, got 0".into());
        }
        if num_beams == 1 && num_return_sequences > 1 {
            return bad(format!(
                "greedy search (`num_beams` 1, no sampling) returns one sequence; `num_return_sequences` {num_return_sequences} needs `num_beams` >= {num_return_sequences}"
            ));
        }
        if num_return_sequences > num_beams {
            return bad(format!(
                "`num_return_sequences` ({num_return_sequences}) must be smaller than or equal to `num_beams` ({num_beams})"
            ));
        }
        let repetition_penalty = s.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty > 0.0 && repetition_penalty.is_finite()) {
            return bad(format!(
                "`repetition_penalty` must be a strictly positive number, got {repetition_penalty}"
            ));
        }
        let length_penalty = s.length_penalty.unwrap_or(1.0);
        if !length_penalty.is_finite() {
            return bad("`length_penalty` must be a finite number".into());
        }
        let eos = s.eos_token_id.clone().unwrap_or_else(|| self.model_eos.clone());
        let vocab = self.ids.vocab_size as u32;
        let check_id = |name: &str, id: Option<u32>| -> Result<()> {
            match id {
                Some(id) if id >= vocab => Err(PipelineError::validation(format!(
                    "`{name}` {id} is outside the vocabulary of {vocab} tokens"
                ))),
                _ => Ok(()),
            }
        };
        check_id("forced_bos_token_id", s.forced_bos_token_id)?;
        check_id("forced_eos_token_id", s.forced_eos_token_id)?;
        let bad_words_ids: Vec<Vec<u32>> = s
            .bad_words_ids
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|w| !(w.len() == 1 && eos.contains(&w[0])))
            .collect();
        if let Some(w) = bad_words_ids.iter().find(|w| w.is_empty() || w.iter().any(|&t| t >= vocab)) {
            return bad(format!(
                "`bad_words_ids` entry {w:?} is empty or outside the vocabulary of {vocab} tokens"
            ));
        }
        Ok(SearchConfig {
            max_length,
            num_beams,
            length_penalty,
            early_stopping: s.early_stopping.unwrap_or(EarlyStopping::False),
            num_return_sequences,
            decoder_start_token_id: s
                .decoder_start_token_id
                .unwrap_or(self.ids.decoder_start_token_id),
            eos: eos.clone(),
            processors: Processors {
                repetition_penalty,
                no_repeat_ngram_size: s.no_repeat_ngram_size.unwrap_or(0),
                bad_words_ids,
                min_length: if eos.is_empty() { 0 } else { min_length },
                eos,
                forced_bos: s.forced_bos_token_id,
                forced_eos: s.forced_eos_token_id,
                max_length,
            },
        })
    }

    /// The source ids of one input, truncated by the policy of the module docs.
    fn source(&self, text: &str, truncation: Option<bool>) -> Result<Vec<u32>> {
        let ids = self.tokenizer.encode(&format!("{}{text}", self.prefix))?;
        if ids.is_empty() {
            return Err(PipelineError::validation("the input has no tokens"));
        }
        let positions = self.ids.max_encoder_positions;
        let tokenizer_max = self.tokenizer.max_len();
        let limit = match truncation {
            Some(true) => tokenizer_max.or(positions),
            Some(false) => {
                if let Some(p) = positions.filter(|&p| ids.len() > p) {
                    return Err(PipelineError::validation(format!(
                        "the input is {} tokens, more than the model's {p} positions; shorten it or set `truncation: true`",
                        ids.len()
                    )));
                }
                None
            }
            None => positions
                .filter(|&p| ids.len() > p)
                .map(|p| tokenizer_max.map_or(p, |m| m.min(p))),
        };
        Ok(match limit {
            Some(limit) if ids.len() > limit && limit >= 1 => {
                // Keep the head and the closing special token, as the tokenizer's truncation
                // (content cut, special tokens kept) does for one sequence.
                let mut cut = ids[..limit - 1].to_vec();
                cut.push(*ids.last().expect("not empty"));
                cut
            }
            _ => ids,
        })
    }
}

impl Pipeline for Text2Text {
    fn task(&self) -> Task {
        self.task.clone()
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let mut accepted: Vec<&str> = ACCEPTED.to_vec();
        if matches!(self.task, Task::Translation { .. }) {
            accepted.extend_from_slice(TRANSLATION_ONLY);
        }
        let p: Params = params(&self.task, &accepted, request.parameters)?;
        let config = self.search_config(&p)?;
        let (texts, listed) = super::inputs::texts(&self.task, &request.inputs)?;
        let tensors = p.return_tensors == Some(true);
        let clean_up = p.clean_up_tokenization_spaces == Some(true);
        let name = self.return_name();
        let mut answers = Vec::with_capacity(texts.len());
        for input in &texts {
            let source = self.source(input, p.truncation)?;
            let hypotheses = self.worker.generate(source, config.clone())?;
            let mut records = Vec::with_capacity(hypotheses.len());
            for ids in hypotheses {
                let mut record = Map::new();
                // transformers: `return_tensors` gives the ids instead of the text.
                if tensors {
                    record.insert(format!("{name}_token_ids"), json!(ids));
                } else {
                    let mut text = self.tokenizer.decode(&ids)?;
                    if clean_up {
                        text = super::fill_mask::clean_up_tokenization(&text);
                    }
                    record.insert(format!("{name}_text"), json!(text));
                }
                records.push(Value::Object(record));
            }
            answers.push(records);
        }
        // transformers flattens a list input's answers when each has one record.
        if listed && answers.iter().all(|a| a.len() == 1) {
            return Ok(Value::Array(
                answers.into_iter().flatten().collect(),
            ));
        }
        if listed {
            return Ok(Value::Array(
                answers.into_iter().map(Value::Array).collect(),
            ));
        }
        Ok(Value::Array(answers.into_iter().next().unwrap_or_default()))
    }
}
